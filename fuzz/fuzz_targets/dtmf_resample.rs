//! `processor::DtmfDetect` (through its `Processor` API, one `Context` per 20 ms pass) and the
//! real-time `resample::Resampler`, both fed the same arbitrary sample blocks.
//!
//! Input layout: byte 0 picks the detector's rate (`SampleRate::ALL[b % 3]`) and whether it mutes
//! (bit 7); byte 1 picks the resampler's pair (`RATES[b % 4]` to `RATES[(b / 4) % 4]`); byte 2
//! picks `min_duration_ms` and `merge_window_ms`. The rest is a list of ops `[op, arg, ...]`:
//! `op % 4` = 0: an audio block of `arg` little-endian samples (any length: the detector gets it
//! cut or padded to one frame, the resampler as is); 1: the same, after a platform `dtmf` report
//! of `DtmfDigit::ALL[op >> 4]`; 2: `arg % 16` frames of silence; 3: `arg % 16` frames of the
//! key `DtmfDigit::ALL[op >> 4]` made by `audio::DtmfTone` at a level from the next byte (so
//! detections are reachable without the fuzzer finding a sine). After at most 500 passes the
//! call ends (`finish`).
//!
//! Asserts, detector: never panics; every event is a `Dtmf` of a key in `DtmfDigit::ALL`, from
//! `Inband` or `Both` (platform reports are never repeated alone), with a start and a duration,
//! the tone ending no later than the end of the pass that emits it (`start <= now`); no more
//! `Both` events than platform reports; without `mute` the caller's frame comes back untouched,
//! with `mute` it is either untouched or all zero.
//! Resampler: never panics; `input_frame_len() * 50 == from`, `output_frame_len() * 50 == to`;
//! `process` writes only the first `output_frame_len()` samples of a longer buffer; equal rates
//! pass samples through exactly; and after the last block, silence flushes it: every output
//! sample from `tail_len()` on is exactly 0.
#![no_main]

use std::time::Instant;

use callpipe::audio::DtmfTone;
use callpipe::processor::{CallInfo, Context, DtmfDetect, DtmfDetectConfig, DtmfSource, Event, Processor, Requests, Setup};
use callpipe::protocol::{DtmfDigit, MAX_FRAME_SAMPLES, Metadata, SampleRate};
use callpipe::resample::{RATES, Resampler};
use libfuzzer_sys::fuzz_target;

/// Samples past the output frame that must stay as they were.
const GUARD: usize = 16;
const SENTINEL: i16 = 0x5a5a;
/// Passes per input (10 s of audio), to keep each run short.
const MAX_PASSES: usize = 500;

/// The detector under test with the bookkeeping the assertions need.
struct Detector {
    detect: DtmfDetect,
    rate: SampleRate,
    mute: bool,
    requests: Requests,
    position: u64,
    platform_reports: u64,
    both_events: u64,
}

impl Detector {
    /// One pass over `block`, cut or padded to one frame; `platform` is delivered first.
    fn pass(&mut self, block: &[i16], platform: Option<DtmfDigit>) {
        let n = self.rate.frame_samples();
        let mut input = [0i16; MAX_FRAME_SAMPLES];
        let input = &mut input[..n];
        let take = block.len().min(n);
        input[..take].copy_from_slice(&block[..take]);
        let mut original = [0i16; MAX_FRAME_SAMPLES];
        let original = &mut original[..n];
        original.copy_from_slice(input);
        let mut output = [0i16; MAX_FRAME_SAMPLES];
        self.requests.reset(n);
        let mut cx = Context::new(Instant::now(), self.position, self.rate, input, true, &mut output[..n], &mut self.requests);
        if let Some(digit) = platform {
            self.platform_reports += 1;
            let event = Event::Dtmf { digit, start_ms: None, duration_ms: Some(100), source: DtmfSource::Platform };
            self.detect.handle_event(&event, &mut cx);
        }
        self.detect.process(&mut cx);
        if !self.mute {
            assert_eq!(input, original, "the frame changed without mute");
        } else {
            assert!(input == original || input.iter().all(|&s| s == 0), "mute left a partial frame");
        }
        self.check_events((self.position + 1) * 20);
        self.position += 1;
    }

    fn finish(&mut self) {
        let n = self.rate.frame_samples();
        let (mut input, mut output) = ([0i16; MAX_FRAME_SAMPLES], [0i16; MAX_FRAME_SAMPLES]);
        self.requests.reset(n);
        let mut cx = Context::new(Instant::now(), self.position, self.rate, &mut input[..n], false, &mut output[..n], &mut self.requests);
        self.detect.finish(&mut cx);
        self.check_events(self.position * 20);
    }

    /// Checks the events of the pass that ends at `now_ms` of call time.
    fn check_events(&mut self, now_ms: u64) {
        for (_, event) in self.requests.events() {
            let Event::Dtmf { digit, start_ms, duration_ms, source } = event else {
                panic!("dtmf_detect emitted {event:?}");
            };
            assert!(DtmfDigit::ALL.contains(digit), "invalid key {digit:?}");
            assert_ne!(*source, DtmfSource::Platform, "a platform report was repeated: {event:?}");
            if *source == DtmfSource::Both {
                self.both_events += 1;
            }
            let (Some(start), Some(duration)) = (start_ms, duration_ms) else {
                panic!("an in-band key without start or duration: {event:?}");
            };
            assert!(*start <= now_ms, "key starts at {start} ms, after now ({now_ms} ms)");
            assert!(start + u64::from(*duration) <= now_ms, "key ends after now ({now_ms} ms): {event:?}");
        }
        assert!(self.both_events <= self.platform_reports, "more merged keys than platform reports");
    }
}

/// The resampler under test with the bookkeeping the assertions need.
struct Converter {
    resampler: Resampler,
    output: Vec<i16>,
}

impl Converter {
    fn process(&mut self, block: &[i16]) {
        let out_len = self.resampler.output_frame_len();
        self.output.fill(SENTINEL);
        self.resampler.process(block, &mut self.output);
        assert!(self.output[out_len..].iter().all(|&s| s == SENTINEL), "wrote past the output frame");
        if self.resampler.from_hz() == self.resampler.to_hz() {
            let expected = block.iter().copied().chain(std::iter::repeat(0)).take(out_len);
            assert!(self.output[..out_len].iter().copied().eq(expected), "equal rates changed the samples");
        }
    }

    /// Feeds silence and checks that everything from `tail_len()` on is exactly 0.
    fn flush(&mut self) {
        let out_len = self.resampler.output_frame_len();
        let tail = self.resampler.tail_len();
        let frames = tail / out_len + 1;
        for frame in 0..frames {
            self.process(&[]);
            for (i, &s) in self.output[..out_len].iter().enumerate() {
                assert!(
                    frame * out_len + i < tail || s == 0,
                    "sample {} after the input ended is {s} (tail_len {tail})",
                    frame * out_len + i
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [rate_byte, pair, config_byte, ref ops @ ..] = *data else {
        return;
    };
    let rate = SampleRate::ALL[usize::from(rate_byte % 3)];
    let mute = rate_byte & 0x80 != 0;
    let config = DtmfDetectConfig {
        min_duration_ms: 25 + u32::from(config_byte & 0x0f) * 20,
        merge_window_ms: u32::from(config_byte >> 4) * 100,
        mute,
        ..DtmfDetectConfig::default()
    };
    let Ok(mut detect) = DtmfDetect::new(config) else {
        return;
    };
    let call = CallInfo { id: "fuzz".into(), path: "/dtmf".into(), metadata: Metadata::new(rate) };
    if detect.prepare(&Setup { rate, call: &call, services: &callpipe::services::Services::new() }).is_err() {
        return;
    }
    let (from, to) = (RATES[usize::from(pair % 4)], RATES[usize::from((pair / 4) % 4)]);
    let Ok(resampler) = Resampler::new(from, to) else {
        panic!("Resampler::new({from}, {to}) failed");
    };
    assert_eq!(resampler.input_frame_len() * 50, from as usize);
    assert_eq!(resampler.output_frame_len() * 50, to as usize);
    let output = vec![0; resampler.output_frame_len() + GUARD];
    let mut converter = Converter { resampler, output };
    let mut detector =
        Detector { detect, rate, mute, requests: Requests::new(rate.frame_samples()), position: 0, platform_reports: 0, both_events: 0 };

    let mut rest = ops;
    let mut block = Vec::with_capacity(256);
    let mut passes = 0usize;
    while let [op, arg, ref tail @ ..] = *rest {
        rest = tail;
        let digit = DtmfDigit::ALL[usize::from(op >> 4)];
        block.clear();
        match op % 4 {
            0 | 1 => {
                let n = (usize::from(arg) * 2).min(rest.len());
                let (bytes, tail) = rest.split_at(n);
                rest = tail;
                block.extend(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
                converter.process(&block);
                detector.pass(&block, (op % 4 == 1).then_some(digit));
                passes += 1;
            }
            2 => {
                for _ in 0..arg % 16 {
                    converter.process(&[]);
                    detector.pass(&[], None);
                    passes += 1;
                }
            }
            _ => {
                let Some((&level, tail)) = rest.split_first() else { break };
                rest = tail;
                let dbfs = -f64::from(level % 60);
                let Some(mut tone) = DtmfTone::new(digit.as_char(), rate, dbfs) else {
                    panic!("DtmfTone::new({digit}, {rate:?}, {dbfs}) failed");
                };
                block.resize(rate.frame_samples(), 0);
                for _ in 0..arg % 16 {
                    tone.fill(&mut block);
                    converter.process(&block);
                    detector.pass(&block, None);
                    passes += 1;
                }
            }
        }
        if passes > MAX_PASSES {
            break;
        }
    }
    detector.finish();
    converter.flush();
});
