//! Continuous test tones: a sine at a call's rate, generated frame by frame without clicks.
//!
//! A [`Tone`] keeps its phase across `fill` calls, so consecutive frames join without clicks:
//! filling 160 samples twice equals filling 320 once. Levels are in dBFS, peak convention: 0 dBFS
//! is a sine whose peak reaches full scale (32767).

use std::f64::consts::TAU;

use super::{AudioError, to_i16};
use crate::protocol::SampleRate;

/// The peak of a 0 dBFS synthesised sine, in 16-bit units.
pub(super) const FULL_SCALE_PEAK: f64 = 32_767.0;

/// A sine oscillator whose phase carries over between calls, kept in `0..TAU` as f64.
#[derive(Debug, Clone)]
struct Oscillator {
    phase: f64,
    increment: f64,
    amplitude: f64,
}

impl Oscillator {
    fn new(hz: f64, rate: SampleRate, level_dbfs: f64) -> Oscillator {
        Oscillator { phase: 0.0, increment: TAU * hz / f64::from(rate.hz()), amplitude: FULL_SCALE_PEAK * dbfs_to_gain(level_dbfs) }
    }

    /// The current sample in 16-bit units, then one step on.
    fn next_sample(&mut self) -> f64 {
        let value = self.amplitude * self.phase.sin();
        self.phase += self.increment;
        if self.phase >= TAU {
            self.phase -= TAU;
        }
        value
    }
}

pub(super) fn dbfs_to_gain(level_dbfs: f64) -> f64 {
    10_f64.powf(level_dbfs / 20.0)
}

/// Checks that a level is finite and at most 0 dBFS.
pub(super) fn validate_level(level_dbfs: f64) -> Result<f64, AudioError> {
    if level_dbfs.is_finite() && level_dbfs <= 0.0 {
        Ok(level_dbfs)
    } else {
        Err(AudioError::InvalidParameter {
            parameter: "level (dBFS)",
            value: level_dbfs,
            expected: "a finite level at most 0 dBFS".to_owned(),
        })
    }
}

/// A continuous sine tone at a call's rate, generated frame by frame without clicks.
///
/// 0 dBFS is a sine whose peak reaches full scale (32767).
#[derive(Debug, Clone)]
pub struct Tone {
    oscillator: Oscillator,
}

impl Tone {
    /// A tone of `hz` (at least 1 Hz and below the Nyquist frequency of `rate`) at `level_dbfs`
    /// (finite, at most 0 dBFS), starting at phase zero.
    pub fn new(hz: f64, level_dbfs: f64, rate: SampleRate) -> Result<Tone, AudioError> {
        let nyquist = f64::from(rate.hz()) / 2.0;
        if !(hz >= 1.0 && hz < nyquist) {
            return Err(AudioError::InvalidParameter {
                parameter: "tone frequency (Hz)",
                value: hz,
                expected: format!("at least 1 Hz and below {nyquist} Hz"),
            });
        }
        let level_dbfs = validate_level(level_dbfs)?;
        Ok(Tone { oscillator: Oscillator::new(hz, rate, level_dbfs) })
    }

    /// Writes the next `out.len()` samples, continuing the phase from the previous call.
    pub fn fill(&mut self, out: &mut [i16]) {
        for sample in out {
            *sample = to_i16(self.oscillator.next_sample());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn tone_phase_continues_across_fills() {
        for rate in SampleRate::ALL {
            let mut framed = Tone::new(1004.0, -3.0, rate).unwrap();
            let mut whole = framed.clone();
            let mut a = vec![0; 2 * rate.frame_samples()];
            let (first, second) = a.split_at_mut(rate.frame_samples());
            framed.fill(first);
            framed.fill(second);
            let mut b = vec![0; 2 * rate.frame_samples()];
            whole.fill(&mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn tone_has_requested_level_and_frequency() {
        let mut tone = Tone::new(1000.0, -6.0, SampleRate::Hz8000).unwrap();
        let mut out = vec![0; 8000];
        tone.fill(&mut out);
        let expected_peak = FULL_SCALE_PEAK * dbfs_to_gain(-6.0);
        let peak = f64::from(out.iter().map(|s| s.unsigned_abs()).max().unwrap());
        assert!((peak - expected_peak).abs() <= 1.0, "peak {peak}, expected {expected_peak}");
        // 1 kHz at 8 kHz repeats every 8 samples.
        assert!(out.iter().zip(&out[8..]).all(|(a, b)| (a - b).abs() <= 1));
    }

    #[test]
    fn tone_rejects_bad_parameters() {
        for (hz, level) in [(0.0, -10.0), (0.5, -10.0), (4000.0, -10.0), (f64::NAN, -10.0), (1000.0, 1.0), (1000.0, f64::NAN)] {
            assert!(matches!(Tone::new(hz, level, SampleRate::Hz8000), Err(AudioError::InvalidParameter { .. })), "{hz} Hz, {level} dBFS");
        }
        assert!(Tone::new(7999.0, 0.0, SampleRate::Hz16000).is_ok());
    }
}
