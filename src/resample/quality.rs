//! Measures a [`Resampler`] the way the module docs state its figures: passband ripple,
//! stopband rejection, SINAD of a 1 kHz tone and delay, each on synthesized tones pushed through
//! the frame API, 16-bit samples in and out.
//!
//! Every tone is a whole number of cycles in the 100 ms analysis window at both rates (its
//! frequency is a multiple of 10 Hz), so a single DFT bin measures it exactly and neighbouring
//! components do not leak into each other.

use std::f64::consts::PI;

use super::{Resampler, Tuning};

/// Something that converts one 20 ms frame at a time: a [`Resampler`], or a candidate design.
pub(crate) trait Convert {
    /// Converts one frame.
    fn convert(&mut self, input: &[i16], output: &mut [i16]);
}

impl Convert for Resampler {
    fn convert(&mut self, input: &[i16], output: &mut [i16]) {
        self.process(input, output);
    }
}

/// Makes a fresh converter for one measurement.
pub(crate) type Make<'a> = &'a dyn Fn() -> Box<dyn Convert>;

/// Analysis window: 100 ms.
const WINDOW_S: f64 = 0.1;
/// Audio pushed through before the window starts, so the filter has settled: 100 ms.
const SETTLE_FRAMES: usize = 5;
/// Tone amplitude: -1 dBFS.
const AMPLITUDE: f64 = 0.891 * 32767.0;

/// The four figures for one pair of rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quality {
    /// Largest deviation from unity gain over the passband, in dB (absolute value).
    pub(crate) ripple_db: f64,
    /// Smallest attenuation of an image or alias that lands in the passband, in dB.
    pub(crate) stopband_db: f64,
    /// Signal to noise and distortion of a -1 dBFS 1 kHz tone, in dB.
    pub(crate) sinad_db: f64,
    /// The measured delay (phase delay at 100 Hz), in ms.
    pub(crate) delay_ms: f64,
    /// The delay [`Resampler::delay`] reports, in ms.
    pub(crate) reported_delay_ms: f64,
}

/// The lower rate's Nyquist frequency.
fn nyquist(from: u32, to: u32) -> f64 {
    f64::from(from.min(to)) / 2.0
}

/// Frequencies from `lo` to `hi` Hz (inclusive, both multiples of 10) in steps of about `step`.
fn grid(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let lo = (lo / 10.0).ceil() * 10.0;
    let hi = (hi / 10.0).floor() * 10.0;
    let mut out = Vec::new();
    let mut f = lo;
    while f < hi {
        out.push(f);
        f += step;
    }
    out.push(hi);
    out
}

/// Runs a -1 dBFS tone at `freq` through a fresh resampler and returns the analysis window of
/// the output.
fn run_tone(make: Make<'_>, from: u32, to: u32, freq: f64) -> Vec<f64> {
    let mut resampler = make();
    let in_len = (from / 50) as usize;
    let out_len = (to / 50) as usize;
    let frames = SETTLE_FRAMES + (WINDOW_S * 50.0) as usize;
    let mut input = vec![0i16; in_len];
    let mut output = vec![0i16; out_len];
    let mut window = Vec::with_capacity(frames * out_len);
    for frame in 0..frames {
        for (i, s) in input.iter_mut().enumerate() {
            let n = (frame * in_len + i) as f64;
            *s = (AMPLITUDE * (2.0 * PI * freq * n / f64::from(from)).cos()).round() as i16;
        }
        resampler.convert(&input, &mut output);
        if frame >= SETTLE_FRAMES {
            window.extend(output.iter().map(|&s| f64::from(s)));
        }
    }
    window
}

/// The complex DFT coefficient of `signal` (sampled at `rate`) at `freq`, scaled so that a cosine
/// of amplitude A gives magnitude A. Its phase is relative to the window's first sample.
fn bin(signal: &[f64], rate: u32, freq: f64) -> (f64, f64) {
    let (mut re, mut im) = (0.0, 0.0);
    for (n, x) in signal.iter().enumerate() {
        let w = 2.0 * PI * freq * n as f64 / f64::from(rate);
        re += x * w.cos();
        im -= x * w.sin();
    }
    let scale = if freq == 0.0 { 1.0 } else { 2.0 } / signal.len() as f64;
    (re * scale, im * scale)
}

fn magnitude(signal: &[f64], rate: u32, freq: f64) -> f64 {
    let (re, im) = bin(signal, rate, freq);
    re.hypot(im)
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.max(1e-12).log10()
}

/// Where a tone at `freq` lands after sampling at `rate`: folded into 0 ..= rate / 2.
fn fold(freq: f64, rate: u32) -> f64 {
    let rate = f64::from(rate);
    let f = freq.rem_euclid(rate);
    if f > rate / 2.0 { rate - f } else { f }
}

/// Passband ripple: the largest |gain| in dB for tones from 50 Hz to 0.85 F.
pub(crate) fn ripple_db(make: Make<'_>, from: u32, to: u32, step: f64) -> f64 {
    grid(50.0, 0.85 * nyquist(from, to), step)
        .into_iter()
        .map(|f| db(magnitude(&run_tone(make, from, to, f), to, f) / AMPLITUDE).abs())
        .fold(0.0, f64::max)
}

/// Stopband rejection: upsampling, the images of passband tones (at k·from ± f below to / 2)
/// relative to the tone; downsampling, tones from 1.15 F to the input's Nyquist frequency
/// relative to their aliases. Returns the worst case in dB.
pub(crate) fn stopband_db(make: Make<'_>, from: u32, to: u32, step: f64) -> f64 {
    let nyq = nyquist(from, to);
    let mut worst = f64::INFINITY;
    if from < to {
        for f in grid(50.0, 0.85 * nyq, step) {
            let out = run_tone(make, from, to, f);
            let wanted = magnitude(&out, to, f);
            let mut k = 1.0;
            while k * f64::from(from) - f < f64::from(to) / 2.0 {
                for image in [k * f64::from(from) - f, k * f64::from(from) + f] {
                    if image < f64::from(to) / 2.0 {
                        worst = worst.min(db(wanted / magnitude(&out, to, image)));
                    }
                }
                k += 1.0;
            }
        }
    } else {
        for g in grid(1.15 * nyq, f64::from(from) / 2.0 - 10.0, step) {
            let out = run_tone(make, from, to, g);
            worst = worst.min(db(AMPLITUDE / magnitude(&out, to, fold(g, to))));
        }
    }
    worst
}

/// SINAD of a -1 dBFS 1 kHz tone: the tone's power over everything else in the output.
pub(crate) fn sinad_db(make: Make<'_>, from: u32, to: u32) -> f64 {
    let out = run_tone(make, from, to, 1000.0);
    let (re, im) = bin(&out, to, 1000.0);
    let n = out.len() as f64;
    let total: f64 = out.iter().map(|x| x * x).sum::<f64>() / n;
    let tone = (re * re + im * im) / 2.0;
    10.0 * (tone / (total - tone).max(1e-12)).log10()
}

/// The delay in ms: the phase delay of a 100 Hz tone (its 10 ms period is longer than any delay
/// the filter could have), checked against a 1 kHz tone.
pub(crate) fn delay_ms(make: Make<'_>, from: u32, to: u32) -> f64 {
    let phase_delay = |freq: f64| {
        let out = run_tone(make, from, to, freq);
        // The window starts SETTLE_FRAMES frames in; the input's phase there is a whole number of
        // cycles (frequencies are multiples of 10 Hz), so a cosine with no delay has phase 0.
        let (re, im) = bin(&out, to, freq);
        let phase = -im.atan2(re);
        phase.rem_euclid(2.0 * PI) / (2.0 * PI * freq) * 1000.0
    };
    let coarse = phase_delay(100.0);
    let fine = phase_delay(1000.0);
    // The 1 kHz figure is exact modulo 1 ms; pick the period the 100 Hz figure points at.
    let periods = ((coarse - fine) / 1.0).round();
    fine + periods
}

/// All four figures, for a converter that reports `reported_delay_ms`.
pub(crate) fn measure(make: Make<'_>, from: u32, to: u32, step: f64, reported_delay_ms: f64) -> Quality {
    Quality {
        ripple_db: ripple_db(make, from, to, step),
        stopband_db: stopband_db(make, from, to, step),
        sinad_db: sinad_db(make, from, to),
        delay_ms: delay_ms(make, from, to),
        reported_delay_ms,
    }
}

/// All four figures for callpipe's [`Resampler`] with `tuning`.
pub(crate) fn measure_tuning(from: u32, to: u32, tuning: Tuning, step: f64) -> Quality {
    let make = move || -> Box<dyn Convert> { Box::new(Resampler::with_tuning(from, to, tuning).unwrap_or_else(|e| panic!("{e}"))) };
    let reported = Resampler::with_tuning(from, to, tuning).map_or(f64::NAN, |r| r.delay().as_secs_f64() * 1000.0);
    measure(&make, from, to, step, reported)
}

/// Every ordered pair of different rates.
pub(crate) fn pairs() -> impl Iterator<Item = (u32, u32)> {
    super::RATES.into_iter().flat_map(|a| super::RATES.into_iter().filter(move |&b| b != a).map(move |b| (a, b)))
}

#[cfg(test)]
mod tests;
