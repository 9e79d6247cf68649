//! `InboundBuffer` (the inbound re-framer) fed an arbitrary byte stream in arbitrary chunks.
//!
//! Input layout: byte 0 picks the rate (`SampleRate::ALL[b % 3]`); the rest is a sequence of
//! `[len, len bytes of audio]` chunks (the last chunk may be short). The buffer is
//! `InboundBuffer::new(rate, 64, 60)`; after every `push` it is drained with `pop_frame` into a
//! one-frame buffer until that returns false (no `plan_tick`, so the jitter policy never drops).
//!
//! Asserts, while `overflow_bytes()` and `dropped_frames()` stay 0 (they must, since at most 255
//! bytes are ever waiting): every decoded frame is the little-endian decoding of exactly the next
//! `frame_bytes` bytes of the concatenated stream (no byte invented, lost or reordered); after
//! draining, `len_bytes() < frame_bytes` and equals the bytes not yet consumed.
#![no_main]

use callpipe::protocol::{MAX_FRAME_SAMPLES, SampleRate};
use callpipe::session::InboundBuffer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let rate = SampleRate::ALL[usize::from(selector) % 3];
    let frame_bytes = rate.frame_bytes();
    let frame_samples = rate.frame_samples();
    let mut buffer = InboundBuffer::new(rate, 64, 60);
    // Our own copy of everything pushed, and how much of it has come out as frames.
    let mut stream: Vec<u8> = Vec::with_capacity(data.len());
    let mut consumed = 0usize;
    let mut out = [0i16; MAX_FRAME_SAMPLES];
    let out = &mut out[..frame_samples];

    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        buffer.push(chunk);
        stream.extend_from_slice(chunk);
        if buffer.overflow_bytes() != 0 || buffer.dropped_frames() != 0 {
            // Cannot happen with at most 255 bytes waiting; if it does, byte accounting is void.
            return;
        }
        while buffer.pop_frame(out) {
            assert!(
                consumed + frame_bytes <= stream.len(),
                "a frame came out of {} bytes never pushed",
                consumed + frame_bytes - stream.len()
            );
            let expected = &stream[consumed..consumed + frame_bytes];
            for (i, (sample, pair)) in out.iter().zip(expected.chunks_exact(2)).enumerate() {
                assert_eq!(*sample, i16::from_le_bytes([pair[0], pair[1]]), "sample {i} of the frame starting at stream byte {consumed}");
            }
            consumed += frame_bytes;
        }
        assert!(buffer.len_bytes() < frame_bytes, "a whole frame left after draining: {} bytes", buffer.len_bytes());
        assert_eq!(buffer.len_bytes(), stream.len() - consumed, "bytes waiting != bytes pushed - bytes popped");
        assert_eq!(buffer.dropped_frames(), 0);
        assert_eq!(buffer.overflow_bytes(), 0);
    }
});
