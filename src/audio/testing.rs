//! Signals and scratch files for the audio module's tests.

use std::f64::consts::TAU;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `len` samples of a sine of `hz` at `rate_hz`, peaking at `amplitude`, from phase zero.
pub(super) fn sine(hz: f64, rate_hz: u32, len: usize, amplitude: f64) -> Vec<f32> {
    (0..len).map(|n| (amplitude * (TAU * hz * n as f64 / f64::from(rate_hz)).sin()) as f32).collect()
}

/// A fresh path in the temporary directory for a test's WAV file.
pub(super) fn temp_wav(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("callpipe-audio-{}-{n}-{name}.wav", std::process::id()))
}
