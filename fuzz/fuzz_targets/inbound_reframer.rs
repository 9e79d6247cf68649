//! `InboundBuffer` (the inbound re-framer and caller timeline) fed an arbitrary byte stream in
//! arbitrary chunks at arbitrary times.
//!
//! Input layout: byte 0 picks the rate (`SampleRate::ALL[b % 3]`); the rest is a sequence of
//! `[gap, len, len bytes of audio]` chunks (the last chunk may be short): each chunk arrives
//! `gap` ms after the one before. The buffer is `InboundBuffer::new(rate, 64, default rules)`;
//! after every `push` it is polled at the arrival instant (and again 10 ms later, past the burst
//! window) until it waits; at the end, `take_remaining` drains it.
//!
//! Asserts, while `overflow_bytes()` stays 0 (it must: the buffer is drained as it fills):
//! every frame taken is the little-endian decoding of exactly the next `frame_bytes` bytes of the
//! concatenated stream, and frames dropped for lateness skip exactly their bytes, in order (no
//! byte invented, lost or reordered); pause frames are silence; after the final drain fewer than
//! `frame_bytes` bytes are left, and exactly the ones not consumed.
#![no_main]

use std::time::{Duration, Instant};

use callpipe::protocol::{MAX_FRAME_SAMPLES, SampleRate};
use callpipe::session::{InboundBuffer, Next, TimelineConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let rate = SampleRate::ALL[usize::from(selector) % 3];
    let frame_bytes = rate.frame_bytes();
    let frame_samples = rate.frame_samples();
    let mut buffer = InboundBuffer::new(rate, 64, TimelineConfig::default());
    // Our own copy of everything pushed, and how much of it has come out as frames.
    let mut stream: Vec<u8> = Vec::with_capacity(data.len());
    let mut consumed = 0usize;
    let mut dropped = 0u64;
    let mut out = [0i16; MAX_FRAME_SAMPLES];
    let out = &mut out[..frame_samples];
    let mut now = Instant::now();

    let check = |buffer: &mut InboundBuffer, next: Next, out: &[i16], stream: &[u8], consumed: &mut usize, dropped: &mut u64| {
        // Frames dropped since the last look skipped their bytes.
        let newly = buffer.dropped_frames() - *dropped;
        *dropped = buffer.dropped_frames();
        *consumed += newly as usize * frame_bytes;
        match next {
            Next::Frame => {
                assert!(*consumed + frame_bytes <= stream.len(), "a frame came out of bytes never pushed");
                let expected = &stream[*consumed..*consumed + frame_bytes];
                for (i, (sample, pair)) in out.iter().zip(expected.chunks_exact(2)).enumerate() {
                    assert_eq!(*sample, i16::from_le_bytes([pair[0], pair[1]]), "sample {i} of the frame at stream byte {consumed}");
                }
                *consumed += frame_bytes;
            }
            Next::Pause => assert!(out.iter().all(|s| *s == 0), "pause frames are silence"),
            Next::Wait => {}
        }
    };

    while let Some((&gap, tail)) = rest.split_first() {
        let Some((&len, tail)) = tail.split_first() else { break };
        let n = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_millis(u64::from(gap));
        buffer.push(chunk, now);
        stream.extend_from_slice(chunk);
        assert_eq!(buffer.overflow_bytes(), 0, "the buffer overflowed although drained");
        for at in [now, now + Duration::from_millis(10)] {
            loop {
                let next = buffer.poll(at, out);
                check(&mut buffer, next, out, &stream, &mut consumed, &mut dropped);
                if next == Next::Wait {
                    break;
                }
            }
        }
        assert_eq!(buffer.len_bytes(), stream.len() - consumed, "bytes waiting != bytes pushed - bytes consumed");
    }
    while buffer.take_remaining(out) {
        check(&mut buffer, Next::Frame, out, &stream, &mut consumed, &mut dropped);
    }
    assert!(buffer.len_bytes() < frame_bytes, "a whole frame left after draining: {} bytes", buffer.len_bytes());
    assert_eq!(buffer.len_bytes(), stream.len() - consumed);
});
