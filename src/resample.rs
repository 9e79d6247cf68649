//! Real-time sample-rate conversion between 8, 16, 24 and 48 kHz, one 20 ms frame at a time.
//!
//! A [`Resampler`] turns each 20 ms frame at one rate into exactly one 20 ms frame at another,
//! keeping the filter's state across frames: a tone crosses frame boundaries without a click, and
//! a gap in the caller's audio is just silence going through the same filter, never a reset. It
//! allocates at construction only, so it runs on a media thread.
//!
//! Every ratio between these rates is a small fraction `L / M` (2, 3, 6, 3/2 and their
//! inverses), and a 20 ms frame holds a whole number of cycles of it, so the converter is an
//! exact polyphase FIR filter: a Kaiser-windowed sinc designed once at construction, split into
//! `L` phases, each output sample one short dot product over the input history. Output never
//! waits for future input, so the only delay is the filter's own group delay.
//!
//! Why not rubato, the usual Rust choice: its FFT resampler delays 2:1 audio by about 10 ms, and
//! its sinc resampler offers Blackman, Blackman-Harris and Hann windows only, whose transition
//! bands are too wide: the best of them reached 69 dB of stopband with 2.9 dB of passband droop
//! at 2.25 ms of delay (`cargo test --release --lib resample -- --ignored --nocapture
//! rubato_sweep` reproduces the search). A Kaiser window trades passband flatness the telephone
//! band does not need for a sharp transition.
//!
//! # Figures
//!
//! Telephone audio has no use for a brick wall at Nyquist, but every millisecond counts on a
//! real-time path, so the filter is tuned for short delay with a transition band that straddles
//! the lower rate's Nyquist frequency (as speex's resampler, used by FreeSWITCH and Asterisk,
//! does). With `F` the lower rate's Nyquist frequency (4 kHz for 8 ↔ 16 kHz):
//!
//! * passband: flat within ±0.5 dB from 0 to 0.85 F;
//! * stopband: from 1.15 F up, everything that would image or alias into the passband is
//!   attenuated by at least 70 dB;
//! * a 1 kHz tone comes out with a SINAD of at least 80 dB (16-bit samples in and out);
//! * the delay is at most 2 ms, whole frames included, and [`Resampler::delay`] reports it.
//!
//! `cargo test --release --lib resample -- --ignored --nocapture quality_table` measures all four
//! for every pair of rates; BENCHMARKS.md has the table.

#[cfg(test)]
mod quality;

use std::f64::consts::PI;
use std::time::Duration;

use crate::protocol::FRAMES_PER_SECOND;

/// Each phase is padded with zero taps to a multiple of this, so dot products need no tail.
const LANES: usize = 8;

/// Every rate a [`Resampler`] converts between.
pub const RATES: [u32; 4] = [8000, 16000, 24000, 48000];

/// Why a [`Resampler`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// A rate is not one of [`RATES`].
    #[error("cannot resample from {from} Hz to {to} Hz: rates must be 8000, 16000, 24000 or 48000")]
    Unsupported {
        /// The input rate.
        from: u32,
        /// The output rate.
        to: u32,
    },
}

/// The filter design. See the [module docs](self) for what it achieves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tuning {
    /// The filter's length in sample periods of the lower rate (its span in time).
    pub(crate) span: usize,
    /// The Kaiser window's shape parameter.
    pub(crate) beta: f64,
    /// The cutoff (the -6 dB point), relative to the lower rate's Nyquist frequency.
    pub(crate) cutoff: f64,
}

impl Tuning {
    /// The tuning callpipe uses.
    pub(crate) const DEFAULT: Tuning = Tuning { span: 30, beta: 8.5, cutoff: 0.96 };
}

/// A stateful one-channel converter from 20 ms frames at one rate to 20 ms frames at another.
#[derive(Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Upsampling factor: the filter runs at `from * up`.
    up: usize,
    /// Taps per phase.
    taps: usize,
    /// `taps` rounded up to a multiple of [`LANES`].
    stride: usize,
    /// `up` phases of `stride` coefficients each, phase `p` at `p * stride`, each reversed (so
    /// that an output is a forward dot product over the input history) and padded with zeros.
    phases: Vec<f32>,
    /// The last `taps - 1` input samples, then the current frame, then `stride - taps` zeros
    /// that the padding taps read.
    history: Vec<f32>,
    /// For each output sample of a frame (the pattern repeats every frame): where its phase's
    /// coefficients start in `phases`, and where its input window starts in `history`.
    plan: Vec<(u32, u32)>,
    in_len: usize,
    out_len: usize,
    /// The filter's group delay in periods of its own rate.
    delay_num: usize,
}

impl Resampler {
    /// A converter from `from_hz` to `to_hz`, both one of [`RATES`]. Equal rates give a
    /// pass-through with no delay.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Resampler, ResampleError> {
        Resampler::with_tuning(from_hz, to_hz, Tuning::DEFAULT)
    }

    pub(crate) fn with_tuning(from: u32, to: u32, tuning: Tuning) -> Result<Resampler, ResampleError> {
        if !RATES.contains(&from) || !RATES.contains(&to) {
            return Err(ResampleError::Unsupported { from, to });
        }
        let g = gcd(from, to);
        let (up, down) = ((to / g) as usize, (from / g) as usize);
        let in_len = (from / FRAMES_PER_SECOND) as usize;
        let out_len = (to / FRAMES_PER_SECOND) as usize;
        let filter_rate = f64::from(from) * up as f64;
        let lower = f64::from(from.min(to));
        // The span in periods of the lower rate, as a whole number of taps per phase.
        let taps = if from == to { 1 } else { ((tuning.span as f64 * filter_rate / lower / up as f64).round() as usize).max(1) };
        let len = taps * up;
        let mut prototype = vec![0.0f64; len];
        if from == to {
            prototype[0] = 1.0;
        } else {
            // A windowed sinc at the filter's rate, cutoff at `cutoff` times the lower Nyquist.
            let fc = tuning.cutoff * lower / 2.0 / filter_rate;
            let centre = (len - 1) as f64 / 2.0;
            let i0_beta = bessel_i0(tuning.beta);
            for (n, h) in prototype.iter_mut().enumerate() {
                let x = n as f64 - centre;
                let sinc = if x == 0.0 { 2.0 * fc } else { (2.0 * PI * fc * x).sin() / (PI * x) };
                let r = x / centre;
                let window = bessel_i0(tuning.beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
                *h = sinc * window;
            }
        }
        // Each phase alone must pass DC at unity gain, or the phases' mismatch becomes an image.
        let stride = taps.next_multiple_of(LANES);
        let mut phases = vec![0.0f32; up * stride];
        for p in 0..up {
            let sum: f64 = (0..taps).map(|k| prototype[p + k * up]).sum();
            for k in 0..taps {
                phases[p * stride + (taps - 1 - k)] = (prototype[p + k * up] / sum) as f32;
            }
        }
        Ok(Resampler {
            from,
            to,
            up,
            taps,
            stride,
            phases,
            history: vec![0.0; taps - 1 + in_len + (stride - taps)],
            plan: (0..out_len)
                .map(|m| {
                    // Output m sits at m * down periods of the filter's rate, input i at i * up.
                    let t = m * down;
                    (((t % up) * stride) as u32, (t / up) as u32)
                })
                .collect(),
            in_len,
            out_len,
            delay_num: len - 1,
        })
    }

    /// The input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from
    }

    /// The output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to
    }

    /// Samples in one input frame.
    pub fn input_frame_len(&self) -> usize {
        self.in_len
    }

    /// Samples in one output frame.
    pub fn output_frame_len(&self) -> usize {
        self.out_len
    }

    /// The delay between a sound going in and the same sound coming out: the filter's group
    /// delay (it is linear-phase, so every frequency is delayed alike).
    pub fn delay(&self) -> Duration {
        let filter_rate = u64::from(self.from) * self.up as u64;
        Duration::from_nanos(self.delay_num as u64 * 500_000_000 / filter_rate)
    }

    /// Output samples that still carry the last input after it stops: how long the filter
    /// rings on. Converting silence for this long flushes it.
    pub fn tail_len(&self) -> usize {
        ((self.taps - 1) * self.to as usize).div_ceil(self.from as usize)
    }

    /// Forgets the audio heard so far, as if the converter were new.
    pub fn reset(&mut self) {
        self.history.fill(0.0);
    }

    /// Converts one frame. `input` holds one input frame and `output` one output frame (see the
    /// `*_frame_len` methods); shorter input is padded with silence, extra input is ignored, and
    /// `output` is filled up to one frame. Never allocates.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) {
        let keep = self.taps - 1;
        self.history.copy_within(self.in_len..self.in_len + keep, 0);
        let fresh = &mut self.history[keep..keep + self.in_len];
        for (slot, s) in fresh.iter_mut().zip(input.iter().copied().chain(std::iter::repeat(0))) {
            *slot = f32::from(s);
        }
        for (out, &(phase, index)) in output.iter_mut().zip(&self.plan) {
            let (phase, index) = (phase as usize, index as usize);
            let coefficients = &self.phases[phase..phase + self.stride];
            let y = dot(coefficients, &self.history[index..index + self.stride]);
            *out = round_to_i16(y);
        }
    }
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("taps_per_phase", &self.taps)
            .field("delay", &self.delay())
            .finish()
    }
}

/// `y` rounded to the nearest integer (ties to even) and clamped to 16 bits. Adding and taking
/// away 1.5 * 2^23 leaves no fraction bits, so the hardware's rounding does the work: a libm
/// `roundf` call per sample cost a third of a microsecond per 20 ms frame at 16 kHz.
fn round_to_i16(y: f32) -> i16 {
    const SHIFT: f32 = 12_582_912.0;
    let clamped = y.clamp(-32768.0, 32767.0);
    ((clamped + SHIFT) - SHIFT) as i16
}

/// A dot product of two slices of equal length, a multiple of [`LANES`], written so that the
/// compiler vectorizes it: independent partial sums over fixed-size chunks.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a, _) = a.as_chunks::<LANES>();
    let (b, _) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.iter().zip(b) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The modified Bessel function of the first kind, order 0, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-16 {
        term *= (x / 2.0 / k).powi(2);
        sum += term;
        k += 1.0;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(len: usize, offset: usize, rate: u32) -> Vec<i16> {
        (offset..offset + len).map(|n| (10000.0 * (2.0 * PI * 1000.0 * n as f64 / f64::from(rate)).sin()).round() as i16).collect()
    }

    #[test]
    fn refuses_rates_it_does_not_know_and_passes_equal_rates_through() {
        assert_eq!(Resampler::new(8000, 44100).unwrap_err(), ResampleError::Unsupported { from: 8000, to: 44100 });
        assert!(Resampler::new(11025, 8000).is_err());
        let mut same = Resampler::new(16000, 16000).unwrap();
        assert_eq!(same.delay(), Duration::ZERO);
        let input = tone(320, 0, 16000);
        let mut output = vec![0; 320];
        same.process(&input, &mut output);
        assert_eq!(output, input);
    }

    #[test]
    fn a_gap_is_silence_through_the_same_filter_not_a_reset() {
        let mut r = Resampler::new(8000, 16000).unwrap();
        let mut output = vec![0; 320];
        for frame in 0..5 {
            r.process(&tone(160, frame * 160, 8000), &mut output);
        }
        // The caller's frame is missing: silence goes in, and the tone's last ~1.9 ms rings out
        // of the filter instead of being cut off.
        r.process(&[0; 160], &mut output);
        let tail = r.tail_len();
        assert!(output[..tail / 2].iter().any(|&s| s.abs() > 1000), "the filter still held the tone");
        assert!(output[tail..].iter().all(|&s| s == 0), "then silence");
        // A short input frame is padded with silence, too.
        r.process(&tone(100, 0, 8000), &mut output);
        r.process(&[], &mut output);
        assert!(output[tail..].iter().all(|&s| s == 0));
    }

    #[test]
    fn reports_the_group_delay_of_its_filter() {
        // Measured against the true delay for every pair in `quality`; here the arithmetic.
        let r = Resampler::new(8000, 16000).unwrap();
        let d = r.delay().as_secs_f64() * 1000.0;
        assert!((1.8..=2.0).contains(&d), "{d}");
        let r = Resampler::new(24000, 48000).unwrap();
        assert!(r.delay() < Duration::from_millis(1));
        assert!(format!("{r:?}").contains("taps_per_phase"));
    }
}
