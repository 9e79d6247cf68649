//! DTMF keys per ITU-T Q.23: the one generator of a key's tone, used by the `dtmf_send`
//! processor (and so by the control API's "send DTMF") and by the emulator's in-band keys.
//!
//! A [`DtmfTone`] is a key's two Q.23 frequencies, each at the same level (peak convention:
//! 0 dBFS is a full-scale sine), summed and rounded to 16 bits with saturation.
//!
//! # Guarantees
//!
//! * Sample-exact and phase-continuous: the tone is a function of the sample index, whichever
//!   `fill` calls write it, so filling 160 samples twice equals filling 320 once. The sines are
//!   two-term recurrences in `f64` (`s[k+1] = 2 cos ω · s[k] − s[k−1]`, one multiply-add per
//!   sine and sample), started at phase zero; [`DtmfTone::seek`] restarts them at any sample.
//! * Edges against clicks and splatter: the tone rises over its first [`DTMF_EDGE_MS`] with a
//!   raised cosine and, when it has a length, falls over its last, both inside that length. A
//!   tone of `n` ms is at full level for `n − 2` ms and at or above half level for `n − 1` ms.
//! * No allocation: a tone is a plain value; making, seeking and filling it allocate nothing.
//! * Levels are checked when a tone is made: finite and at most 0 dBFS per sine (above about
//!   −6 dBFS the pair's peaks saturate).

use std::f64::consts::{PI, TAU};

use super::tone::{FULL_SCALE_PEAK, dbfs_to_gain, validate_level};
use super::{AudioError, to_i16};
use crate::protocol::{DtmfDigit, SampleRate};

/// The default level of each of the two DTMF sines, in dBFS: the pair peaks at about -4 dBFS.
pub const DTMF_LEVEL_DBFS: f64 = -10.0;

/// The length of a tone's rising and falling edges, in ms.
pub const DTMF_EDGE_MS: u32 = 1;

/// The (low, high) frequency pair of a DTMF key per ITU-T Q.23, for `0`-`9`, `*`, `#` and `A`-`D`
/// (letters in either case); `None` for anything else.
pub fn dtmf_frequencies(digit: char) -> Option<(f64, f64)> {
    DtmfDigit::from_char(digit).map(DtmfDigit::frequencies)
}

/// A DTMF key's two sines summed at a call's rate, rendered sample-exactly and frame by frame
/// without clicks, with raised-cosine edges.
///
/// A tone made by [`new`](Self::new) or [`for_key`](Self::for_key) lasts as long as it is
/// filled; [`with_length`](Self::with_length) gives it an end, and a falling edge before it.
#[derive(Debug, Clone)]
pub struct DtmfTone {
    key: DtmfDigit,
    /// Per sine, the recurrence coefficient `2 cos ω` and `ω`, in radians per sample.
    sines: [(f64, f64); 2],
    /// The peak of each sine, in 16-bit units.
    amplitude: f64,
    /// Samples per edge.
    edge: u64,
    /// The tone's length in samples, if it has one.
    length: Option<u64>,
    /// The sample the recurrences are set for.
    position: u64,
    /// Per sine, `(sin ωk, sin ω(k−1))` for the next sample `k`.
    state: [(f64, f64); 2],
}

impl DtmfTone {
    /// The tone for `digit` with each sine at `level_dbfs_per_tone` ([`DTMF_LEVEL_DBFS`] is the
    /// usual choice; above about -6 dBFS the pair's peaks saturate), without an end.
    ///
    /// `None` if `digit` is not a DTMF key (see [`dtmf_frequencies`]) or the level is not a
    /// finite value at most 0 dBFS.
    pub fn new(digit: char, rate: SampleRate, level_dbfs_per_tone: f64) -> Option<DtmfTone> {
        DtmfTone::for_key(DtmfDigit::from_char(digit)?, rate, level_dbfs_per_tone).ok()
    }

    /// The tone for `key` with each sine at `level_dbfs_per_tone`, without an end, at its first
    /// sample; [`AudioError::InvalidParameter`] if the level is not finite or above 0 dBFS.
    pub fn for_key(key: DtmfDigit, rate: SampleRate, level_dbfs_per_tone: f64) -> Result<DtmfTone, AudioError> {
        let level = validate_level(level_dbfs_per_tone)?;
        let hz = f64::from(rate.hz());
        let (low, high) = key.frequencies();
        let mut tone = DtmfTone {
            key,
            sines: [low, high].map(|f| {
                let omega = TAU * f / hz;
                (2.0 * omega.cos(), omega)
            }),
            amplitude: FULL_SCALE_PEAK * dbfs_to_gain(level),
            edge: u64::from(DTMF_EDGE_MS * rate.hz() / 1000),
            length: None,
            position: 0,
            state: [(0.0, 0.0); 2],
        };
        tone.restart(0);
        Ok(tone)
    }

    /// The same tone ending after `samples` samples, its last [`DTMF_EDGE_MS`] falling.
    pub fn with_length(self, samples: u64) -> DtmfTone {
        DtmfTone { length: Some(samples), ..self }
    }

    /// The key this tone signals (letters in upper case).
    pub fn digit(&self) -> char {
        self.key.as_char()
    }

    /// The key this tone signals.
    pub fn key(&self) -> DtmfDigit {
        self.key
    }

    /// The tone's length in samples, if it has one.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The next sample `fill` writes, counted from the tone's start.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether a tone with a length has been filled to its end.
    pub fn is_finished(&self) -> bool {
        self.length.is_some_and(|length| self.position >= length)
    }

    /// Moves to sample `position` of the tone, so that the next `fill` starts there; nothing
    /// changes when the tone is already there (the phase carries on exactly).
    pub fn seek(&mut self, position: u64) {
        if position != self.position {
            self.restart(position);
        }
    }

    /// Writes the next samples of the tone into `out`, continuing both phases from the previous
    /// call, up to the tone's end; returns how many it wrote (all of `out` for a tone without
    /// an end). Samples past the end are left as they were.
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let left = self.length.map_or(u64::MAX, |length| length.saturating_sub(self.position));
        let count = usize::try_from(left).map_or(out.len(), |left| left.min(out.len()));
        let [(c_low, _), (c_high, _)] = self.sines;
        let [(mut low, mut low_prev), (mut high, mut high_prev)] = self.state;
        for (at, sample) in (self.position..).zip(out.iter_mut().take(count)) {
            *sample = to_i16(self.amplitude * self.gain(at) * (low + high));
            (low, low_prev) = (c_low * low - low_prev, low);
            (high, high_prev) = (c_high * high - high_prev, high);
        }
        self.state = [(low, low_prev), (high, high_prev)];
        self.position += count as u64;
        count
    }

    /// Sets both recurrences to sample `position`.
    fn restart(&mut self, position: u64) {
        let k = position as f64;
        for (state, (_, omega)) in self.state.iter_mut().zip(self.sines) {
            *state = ((omega * k).sin(), (omega * (k - 1.0)).sin());
        }
        self.position = position;
    }

    /// The envelope at sample `at` (inside the tone): a raised cosine over each edge, 1 between.
    fn gain(&self, at: u64) -> f64 {
        let from_end = self.length.map_or(u64::MAX, |length| length.saturating_sub(at + 1));
        let into_edge = at.min(from_end);
        if into_edge < self.edge { 0.5 - 0.5 * (PI * (into_edge as f64 + 0.5) / self.edge as f64).cos() } else { 1.0 }
    }
}

/// The most keys one sequence plays (`dtmf_send`, the control API's keys, a fork's `dtmf`
/// command).
pub const MAX_KEYS: usize = 64;

/// `keys` one after the other at `rate`: each key's tone for `tone_ms` (each sine at
/// [`DTMF_LEVEL_DBFS`], its edges inside), then `gap_ms` of silence.
pub fn render_keys(keys: &[DtmfDigit], rate: SampleRate, tone_ms: u32, gap_ms: u32) -> Vec<i16> {
    let per_ms = rate.hz() as usize / 1000;
    let (tone, period) = (tone_ms as usize * per_ms, (tone_ms + gap_ms) as usize * per_ms);
    let mut out = vec![0i16; period * keys.len()];
    for (key, slot) in keys.iter().zip(out.chunks_exact_mut(period)) {
        // The level is a valid constant: making the tone cannot fail.
        if let Ok(sound) = DtmfTone::for_key(*key, rate, DTMF_LEVEL_DBFS) {
            sound.with_length(tone as u64).fill(&mut slot[..tone]);
        }
    }
    out
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

    #[test]
    fn a_tone_with_a_length_has_edges_and_ends_there() {
        for rate in SampleRate::ALL {
            let per_ms = u64::from(rate.hz() / 1000);
            let length = 50 * per_ms;
            let mut tone = DtmfTone::for_key(DtmfDigit::Digit(5), rate, DTMF_LEVEL_DBFS).unwrap().with_length(length);
            let mut out = vec![i16::MAX; 3 * rate.frame_samples()];
            let written: usize = out.chunks_mut(rate.frame_samples()).map(|frame| tone.fill(frame)).sum();
            assert_eq!(written as u64, length, "{rate}");
            assert!(tone.is_finished() && tone.fill(&mut [0; 8]) == 0, "{rate}");
            let (tone_part, after) = out.split_at(written);
            assert!(after.iter().all(|&s| s == i16::MAX), "{rate}: samples past the end are left alone");
            let peak = 2.0 * FULL_SCALE_PEAK * dbfs_to_gain(DTMF_LEVEL_DBFS);
            let edge = usize::try_from(per_ms).unwrap();
            for j in 0..edge {
                let gain = 0.5 - 0.5 * (PI * (j as f64 + 0.5) / edge as f64).cos();
                for s in [tone_part[j], tone_part[tone_part.len() - 1 - j]] {
                    assert!(f64::from(s.unsigned_abs()) <= peak * gain + 1.0, "{rate}: sample {j} of an edge is {s}");
                }
            }
            let loudest = tone_part[edge..tone_part.len() - edge].iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(f64::from(loudest) > 0.9 * peak, "{rate}: full level between the edges ({loudest} of {peak:.0})");
        }
    }

    #[test]
    fn seeking_gives_the_samples_filling_would_have() {
        let rate = SampleRate::Hz16000;
        let mut whole = DtmfTone::for_key(DtmfDigit::Pound, rate, -7.0).unwrap().with_length(16_000);
        let mut reference = vec![0; 16_000];
        whole.fill(&mut reference);
        let mut sought = DtmfTone::for_key(DtmfDigit::Pound, rate, -7.0).unwrap().with_length(16_000);
        for start in [15_990, 7, 12_345, 0, 320] {
            sought.seek(start);
            let mut part = [0; 10];
            assert_eq!(sought.fill(&mut part), 10);
            let expected = &reference[start as usize..start as usize + 10];
            assert!(part.iter().zip(expected).all(|(a, b)| a.abs_diff(*b) <= 1), "from {start}: {part:?} vs {expected:?}");
            assert_eq!(sought.position(), start + 10);
        }
    }

    #[test]
    fn levels_are_checked() {
        for level in [0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let made = DtmfTone::for_key(DtmfDigit::Star, SampleRate::Hz8000, level);
            assert!(matches!(made, Err(AudioError::InvalidParameter { .. })), "{level}");
        }
        let tone = DtmfTone::for_key(DtmfDigit::Letter(b'B'), SampleRate::Hz8000, 0.0).unwrap();
        assert_eq!((tone.digit(), tone.key(), tone.length()), ('B', DtmfDigit::Letter(b'B'), None));
    }
}
