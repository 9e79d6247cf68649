//! The verdict on one analysis window of [`Analyzer`]: which key, if any, and how much of the
//! window it fills.
//!
//! The checks run from cheapest to dearest, and only a window that already looks like a key pays
//! for the frequency measurement (two `atan2`), the level correction and the harmonic check (two
//! 12 ms Goertzel runs over the stored samples):
//!
//! 1. energy floor: the window holds at least the energy of two tones at the level floor;
//! 2. dominance: the strongest row and column filters beat the other three of their group by
//!    [`DOMINANCE_DB`];
//! 3. a cheap upper bound of the tone fraction (check 7) must pass;
//! 4. the two tones' complex amplitudes are separated from each other's leakage (the window's
//!    sidelobes let a strong low tone add up to 20 % to a weak high one, which would make the
//!    twist limits inexact);
//! 5. frequency: each tone's phase advance between this window and the previous one (one hop
//!    apart) measures its frequency to a fraction of a hertz; deviations over
//!    [`MAX_DEVIATION`] fail (Q.24: accept ±1.5 %, reject ±3.5 %);
//! 6. level and twist: each tone's amplitude, corrected for the window's loss at the measured
//!    frequency, must be above the floor, and the high tone at most [`NORMAL_TWIST_DB`] weaker
//!    or [`REVERSE_TWIST_DB`] stronger than the low one (Q.24: accept 8 dB / 4 dB);
//! 7. tone fraction: the two tones, with their beat, hold at least [`MIN_FRACTION`] of the
//!    window's energy. This rejects speech and noise, and it also measures how much of the
//!    window the tone covers, which is what makes durations exact to a millisecond or two;
//! 8. second harmonics: a window that passed is marked [`Candidate::pure`] when each tone's
//!    second harmonic (measured on the window's stored samples at twice the tone's measured
//!    frequency) is at least [`SECOND_HARMONIC_DB`] below it. Sung or played notes carry
//!    harmonics, keys do not; the tracker wants several pure windows per key.
//!
//! The figures are those of ITU-T Q.24 (frequencies of ITU-T Q.23): the frequency and twist
//! limits sit halfway between what Q.24 says must be accepted and what must be rejected.

use super::{Analyzer, Candidate, WINDOW_HOPS, kernel, window_gain};
use crate::processor::dtmf::complex::Complex;
use crate::protocol::DtmfDigit;

/// How much the strongest tone of each group must beat the others of its group, in dB.
pub(super) const DOMINANCE_DB: f64 = 6.0;

/// The largest relative frequency deviation accepted: halfway between Q.24's 1.5 % (accept)
/// and 3.5 % (reject).
pub(super) const MAX_DEVIATION: f64 = 0.025;

/// Normal twist (high tone weaker) accepted, in dB: between Q.24's 8 (accept) and 10 (reject).
pub(super) const NORMAL_TWIST_DB: f64 = 9.0;

/// Reverse twist (high tone stronger) accepted, in dB: between 4 (accept) and 6 (reject).
pub(super) const REVERSE_TWIST_DB: f64 = 5.0;

/// How far below each tone its second harmonic must be, in dB. A DTMF generator's harmonics
/// are 20 dB or more down; notes of voices and instruments have theirs within a few dB.
pub(super) const SECOND_HARMONIC_DB: f64 = 15.0;

/// The least share of the window's energy the two tones must hold.
pub(super) const MIN_FRACTION: f32 = 0.75;

/// The acceptance limits, in the units the checks use.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Window energy below which nothing is examined.
    min_energy: f32,
    /// Least tone amplitude (peak, 16-bit units).
    min_amplitude: f32,
    /// Power ratio of the strongest filter of a group to each other one of that group.
    dominance: f32,
    /// Largest amplitude ratio low/high (normal twist) and high/low (reverse twist).
    normal_twist: f32,
    reverse_twist: f32,
    /// Largest second-harmonic to tone amplitude ratio.
    harmonic: f32,
}

impl Limits {
    /// The limits for an `n`-sample window and tones of at least `min_amplitude` (peak).
    pub(super) fn new(n: f64, min_amplitude: f64) -> Limits {
        Limits {
            min_energy: (0.5 * n * min_amplitude * min_amplitude) as f32,
            min_amplitude: min_amplitude as f32,
            dominance: 10f64.powf(DOMINANCE_DB / 10.0) as f32,
            normal_twist: 10f64.powf(NORMAL_TWIST_DB / 20.0) as f32,
            reverse_twist: 10f64.powf(REVERSE_TWIST_DB / 20.0) as f32,
            harmonic: 10f64.powf(-SECOND_HARMONIC_DB / 20.0) as f32,
        }
    }
}

/// One of a window's two tones, as measured.
#[derive(Debug, Clone, Copy)]
struct Tone {
    /// Its frequency, in radians per sample.
    omega: f64,
    /// Its peak amplitude.
    amplitude: f32,
    /// Its complex half-amplitude at the window's first sample: the tone is
    /// `start e^{iωn} + conj(start) e^{-iωn}`.
    start: Complex,
}

impl Analyzer {
    /// Judges a window from its DFT `x`, the previous window's, their powers and the window's
    /// energy, with the checks above in order.
    pub(super) fn judge(
        &self,
        x: &[Complex; 8],
        previous: &[Complex; 8],
        power: &[f32; 8],
        energy: f32,
        established: Option<DtmfDigit>,
    ) -> Option<Candidate> {
        let limits = &self.limits;
        if energy < limits.min_energy {
            return None;
        }
        let row = strongest(&power[..4], limits.dominance)?;
        let col = 4 + strongest(&power[4..], limits.dominance)?;
        // Tone energy over the window is 2|X|²/N per tone; the corrections below can raise it by
        // at most `max_boost` (frequency) and about a third (leakage).
        let bound = 2.0 * (power[row] * self.max_boost[row] + power[col] * self.max_boost[col]) / self.len;
        if 1.4 * bound < MIN_FRACTION * energy {
            return None;
        }
        let (row_now, col_now) = self.separate(row, col, x);
        let (row_before, col_before) = self.separate(row, col, previous);
        let low = self.tone(row, row_now, row_before)?;
        let high = self.tone(col, col_now, col_before)?;
        let (row_amp, col_amp) = (low.amplitude, high.amplitude);
        if row_amp < limits.min_amplitude || col_amp < limits.min_amplitude {
            return None;
        }
        if row_amp > col_amp * limits.normal_twist || col_amp > row_amp * limits.reverse_twist {
            return None;
        }
        let tones = (row_amp * row_amp + col_amp * col_amp) * self.len / 2.0 + self.beat_energy(row, col, row_now, col_now);
        let fraction = tones / energy;
        if fraction < MIN_FRACTION {
            return None;
        }
        let digit = DtmfDigit::ALL[row * 4 + col - 4];
        let pure = established == Some(digit) || self.harmonics_weak(&[low, high]);
        Some(Candidate { digit, fraction, pure })
    }

    /// The complex amplitudes (halved, per sample) of the tones at filters `a` and `b`, each
    /// freed of the other's leakage and of its own image: two fixed-point steps of the 4×4
    /// linear system, whose off-diagonal terms are below 0.1, so the error is below 1 %.
    fn separate(&self, a: usize, b: usize, x: &[Complex; 8]) -> (Complex, Complex) {
        let scale = 1.0 / self.len;
        let (xa, xb) = (x[a].scale(scale), x[b].scale(scale));
        let (mut ua, mut ub) = (xa, xb);
        for _ in 0..2 {
            let na = xa - self.image[a][a] * ua.conj() - self.cross[a][b] * ub - self.image[a][b] * ub.conj();
            let nb = xb - self.image[b][b] * ub.conj() - self.cross[b][a] * ua - self.image[b][a] * ua.conj();
            (ua, ub) = (na, nb);
        }
        (ua, ub)
    }

    /// The part of two tones' energy over the window that does not grow with its length: the
    /// beat between them and each one's double-frequency term. A window of a clean key holds
    /// `N(a² + b²)/2` plus this, which is up to 5 % either way.
    ///
    /// With `z[n] = u e^{iω_a n} + v e^{iω_b n}` the signal is `z + z*`, so its energy is
    /// `2Σ|z|² + 2 Re Σz²`; the terms of those sums that are not `N|u|²` and `N|v|²` are below.
    fn beat_energy(&self, a: usize, b: usize, u: Complex, v: Complex) -> f32 {
        let beat = 4.0 * (u * v.conj() * self.cross[b][a]).re;
        let doubled = u * u * self.image[a][a].conj() + v * v * self.image[b][b].conj() + (u * v * self.image[b][a].conj()).scale(2.0);
        (beat + 2.0 * doubled.re) * self.len
    }

    /// The tone at filter `k`, or `None` when its frequency is off by more than
    /// [`MAX_DEVIATION`]. `now` and `before` are its complex amplitudes (at the filter's
    /// frequency) one hop apart: their phase difference, less the nominal `ωM`, is the
    /// deviation `δM`. The window sees a tone `δ` off with gain `K(δ)/N`, which is undone.
    fn tone(&self, k: usize, now: Complex, before: Complex) -> Option<Tone> {
        let turn = now * before.conj() * self.hop_phase[k];
        let phase = turn.im.atan2(turn.re);
        if phase.abs() > self.max_phase[k] {
            return None;
        }
        let n = f64::from(self.len);
        let delta = f64::from(phase) / self.hop as f64;
        let gain = window_gain(delta, n) as f32;
        let start = (now * Complex::unit(-delta * (n - 1.0) / 2.0)).scale(1.0 / gain);
        let omega = self.omega[k] + delta;
        Some(Tone { omega, amplitude: 2.0 * start.norm_sqr().sqrt(), start })
    }

    /// Whether each tone's second harmonic is at least [`SECOND_HARMONIC_DB`] below it. The
    /// harmonic is measured over the window's samples at twice the tone's measured frequency,
    /// less what the two tones themselves leak there: the high tone is only 58 to 71 Hz from the
    /// low tone's harmonic for the keys 2, 6 and C.
    fn harmonics_weak(&self, tones: &[Tone; 2]) -> bool {
        let n = self.window_samples();
        tones.iter().all(|tone| {
            let omega = 2.0 * tone.omega;
            let coef = (2.0 * omega.cos()) as f32;
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for slot in 1..=WINDOW_HOPS {
                let at = ((self.newest + slot) % WINDOW_HOPS) * self.hop;
                for &x in &self.history[at..at + self.hop] {
                    let s0 = f32::from(x) - s2 + coef * s1;
                    (s2, s1) = (s1, s0);
                }
            }
            let dft = Complex::unit(-omega * (n as f64 - 1.0)) * (Complex { re: s1, im: 0.0 } - Complex::unit(-omega).scale(s2));
            let leak = tones.iter().fold(Complex::ZERO, |sum, t| {
                sum + t.start * Complex::from_f64(kernel(t.omega - omega, n))
                    + t.start.conj() * Complex::from_f64(kernel(-t.omega - omega, n))
            });
            let harmonic = 2.0 * (dft - leak).norm_sqr().sqrt() / self.len;
            harmonic <= tone.amplitude * self.limits.harmonic
        })
    }
}

/// The strongest of a group's powers, if it beats each other one by `dominance`.
fn strongest(power: &[f32], dominance: f32) -> Option<usize> {
    let mut best = 0;
    for k in 1..power.len() {
        if power[k] > power[best] {
            best = k;
        }
    }
    let beaten = power.iter().enumerate().all(|(k, p)| k == best || *p * dominance <= power[best]);
    beaten.then_some(best)
}
