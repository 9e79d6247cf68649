//! `audio::load_wav_bytes` on arbitrary bytes, at each call rate.
//!
//! Input layout: the whole input is the WAV data.
//!
//! Asserts: never panics. For each rate, success is a non-empty `Vec` and failure an
//! `AudioError`; an error other than `Empty` is the same at every rate, and a rate that succeeds
//! implies every higher rate succeeds. The output is never absurd for the input: at most
//! `12 * len + 1` samples (the densest source is 2 bytes a frame at 1 kHz, the fastest call rate
//! 24 kHz), and the lengths at two rates `a`, `b` agree: `|len_a * b - len_b * a| <= (a + b) / 2`
//! (both are the same frame count, rounded). When hound itself reads every sample of a format
//! the loader supports, the length is exactly `round(frames * rate / wav_rate)`, and a 16-bit
//! mono file already at the call rate comes back sample for sample.
#![no_main]

use std::io::Cursor;

use callpipe::audio::{AudioError, MAX_WAV_RATE_HZ, MIN_WAV_RATE_HZ, load_wav_bytes};
use callpipe::protocol::SampleRate;
use libfuzzer_sys::fuzz_target;

/// What hound alone makes of `data`: the spec and every sample, if it reads them all and the
/// loader supports the format.
fn reference(data: &[u8]) -> Option<(hound::WavSpec, Vec<i32>)> {
    let mut reader = hound::WavReader::new(Cursor::new(data)).ok()?;
    let spec = reader.spec();
    if spec.channels == 0 || !(MIN_WAV_RATE_HZ..=MAX_WAV_RATE_HZ).contains(&spec.sample_rate) {
        return None;
    }
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16 | 24 | 32) => reader.samples::<i32>().collect::<Result<Vec<_>, _>>().ok().map(|s| (spec, s)),
        (hound::SampleFormat::Float, 32) => {
            reader.samples::<f32>().collect::<Result<Vec<_>, _>>().ok().map(|s| (spec, s.into_iter().map(|x| x.to_bits() as i32).collect()))
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let results: Vec<(SampleRate, Result<Vec<i16>, AudioError>)> =
        SampleRate::ALL.iter().map(|&rate| (rate, load_wav_bytes(data, rate))).collect();
    let limit = data.len() * 12 + 1;
    for (rate, result) in &results {
        match result {
            Ok(samples) => {
                assert!(!samples.is_empty(), "{rate:?}: Ok but empty");
                assert!(samples.len() <= limit, "{rate:?}: {} samples from {} bytes", samples.len(), data.len());
            }
            Err(AudioError::Empty) => {}
            Err(err) => {
                let first = results.iter().find_map(|(_, r)| r.as_ref().err().filter(|e| !matches!(e, AudioError::Empty)));
                assert_eq!(first.map(ToString::to_string), Some(err.to_string()), "errors differ between rates");
            }
        }
    }
    // SampleRate::ALL is in increasing order.
    for pair in results.windows(2) {
        let ((low, low_result), (high, high_result)) = (&pair[0], &pair[1]);
        assert!(low.hz() < high.hz());
        if low_result.is_ok() {
            assert!(high_result.is_ok(), "Ok at {low:?} but {high_result:?} at {high:?}");
        }
    }
    let oks: Vec<(u64, u64)> =
        results.iter().filter_map(|(rate, r)| r.as_ref().ok().map(|s| (u64::from(rate.hz()), s.len() as u64))).collect();
    for &(a, len_a) in &oks {
        for &(b, len_b) in &oks {
            assert!((len_a * b).abs_diff(len_b * a) <= (a + b) / 2, "lengths {len_a} at {a} Hz and {len_b} at {b} Hz disagree");
        }
    }

    let Some((spec, samples)) = reference(data) else {
        return;
    };
    let frames = (samples.len() / usize::from(spec.channels)) as u64;
    for (rate, result) in &results {
        let to = u64::from(rate.hz());
        let from = u64::from(spec.sample_rate);
        let expected = (frames * to + from / 2) / from;
        match result {
            Ok(out) => assert_eq!(out.len() as u64, expected, "{rate:?}: {frames} frames at {from} Hz"),
            Err(AudioError::Empty) => assert_eq!(expected, 0, "{rate:?}: Empty but {frames} frames at {from} Hz"),
            Err(err) => panic!("{rate:?}: hound reads all {} samples but the loader fails: {err}", samples.len()),
        }
        let plain = spec.channels == 1 && spec.bits_per_sample == 16 && spec.sample_format == hound::SampleFormat::Int;
        if plain
            && from == to
            && let Ok(out) = result
        {
            assert!(out.iter().map(|&s| i32::from(s)).eq(samples.iter().copied()), "16-bit mono at the call rate changed");
        }
    }
});
