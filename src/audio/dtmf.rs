//! DTMF keys per ITU-T Q.23: a key's two sines summed at a call's rate.
//!
//! A [`DtmfTone`] keeps its phases across `fill` calls, so consecutive frames join without
//! clicks: filling 160 samples twice equals filling 320 once.

use super::to_i16;
use super::tone::{Oscillator, validate_level};
use crate::protocol::{DtmfDigit, SampleRate};

/// The default level of each of the two DTMF sines, in dBFS: the pair peaks at about -4 dBFS.
pub const DTMF_LEVEL_DBFS: f64 = -10.0;

/// The (low, high) frequency pair of a DTMF key per ITU-T Q.23, for `0`-`9`, `*`, `#` and `A`-`D`
/// (letters in either case); `None` for anything else.
pub fn dtmf_frequencies(digit: char) -> Option<(f64, f64)> {
    DtmfDigit::from_char(digit).map(DtmfDigit::frequencies)
}

/// A DTMF key's two sines summed at a call's rate, generated frame by frame without clicks.
#[derive(Debug, Clone)]
pub struct DtmfTone {
    digit: char,
    low: Oscillator,
    high: Oscillator,
}

impl DtmfTone {
    /// The tone for `digit` with each sine at `level_dbfs_per_tone` ([`DTMF_LEVEL_DBFS`] is the
    /// usual choice; above about -6 dBFS the pair's peaks saturate).
    ///
    /// `None` if `digit` is not a DTMF key (see [`dtmf_frequencies`]) or the level is not a
    /// finite value at most 0 dBFS.
    pub fn new(digit: char, rate: SampleRate, level_dbfs_per_tone: f64) -> Option<DtmfTone> {
        let (low_hz, high_hz) = dtmf_frequencies(digit)?;
        let level = validate_level(level_dbfs_per_tone).ok()?;
        Some(DtmfTone {
            digit: digit.to_ascii_uppercase(),
            low: Oscillator::new(low_hz, rate, level),
            high: Oscillator::new(high_hz, rate, level),
        })
    }

    /// The key this tone signals (letters in upper case).
    pub fn digit(&self) -> char {
        self.digit
    }

    /// Writes the next `out.len()` samples, continuing both phases from the previous call.
    pub fn fill(&mut self, out: &mut [i16]) {
        for sample in out {
            *sample = to_i16(self.low.next_sample() + self.high.next_sample());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    /// Power of `hz` in `samples` by the Goertzel algorithm.
    fn goertzel(samples: &[i16], hz: f64, rate_hz: u32) -> f64 {
        let coeff = 2.0 * (TAU * hz / f64::from(rate_hz)).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    #[test]
    fn dtmf_frequencies_follow_q23() {
        assert_eq!(dtmf_frequencies('1'), Some((697.0, 1209.0)));
        assert_eq!(dtmf_frequencies('5'), Some((770.0, 1336.0)));
        assert_eq!(dtmf_frequencies('9'), Some((852.0, 1477.0)));
        assert_eq!(dtmf_frequencies('0'), Some((941.0, 1336.0)));
        assert_eq!(dtmf_frequencies('*'), Some((941.0, 1209.0)));
        assert_eq!(dtmf_frequencies('#'), Some((941.0, 1477.0)));
        assert_eq!(dtmf_frequencies('D'), Some((941.0, 1633.0)));
        assert_eq!(dtmf_frequencies('b'), Some((770.0, 1633.0)));
        assert_eq!(dtmf_frequencies('E'), None);
        assert_eq!(dtmf_frequencies(' '), None);
        assert!(DtmfTone::new('x', SampleRate::Hz8000, DTMF_LEVEL_DBFS).is_none());
        assert!(DtmfTone::new('1', SampleRate::Hz8000, f64::INFINITY).is_none());
    }

    #[test]
    fn each_dtmf_digit_is_its_two_frequencies() {
        let all_hz: Vec<f64> = DtmfDigit::ROW_HZ.iter().chain(&DtmfDigit::COLUMN_HZ).copied().collect();
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            for digit in "0123456789*#ABCD".chars() {
                let (low, high) = dtmf_frequencies(digit).unwrap();
                let mut tone = DtmfTone::new(digit, rate, DTMF_LEVEL_DBFS).unwrap();
                let mut out = vec![0; rate.hz() as usize / 10];
                tone.fill(&mut out);
                assert!(out.iter().all(|s| s.unsigned_abs() < 21_000), "{digit} clips");
                let power = |hz| goertzel(&out, hz, rate.hz());
                let weakest_wanted = power(low).min(power(high));
                let strongest_other = all_hz.iter().filter(|&&hz| hz != low && hz != high).map(|&hz| power(hz)).fold(0.0, f64::max);
                assert!(weakest_wanted > 100.0 * strongest_other, "{digit} at {rate:?}: {weakest_wanted} vs {strongest_other}");
                assert!((power(low) / power(high)).log10().abs() < 0.1, "{digit}: unequal tone levels");
            }
        }
    }

    #[test]
    fn dtmf_phase_continues_across_fills() {
        let mut framed = DtmfTone::new('7', SampleRate::Hz8000, DTMF_LEVEL_DBFS).unwrap();
        let mut whole = framed.clone();
        let mut a = [0; 320];
        let (first, second) = a.split_at_mut(160);
        framed.fill(first);
        framed.fill(second);
        let mut b = [0; 320];
        whole.fill(&mut b);
        assert_eq!(a, b);
        assert_eq!(whole.digit(), '7');
    }
}
