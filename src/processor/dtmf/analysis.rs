//! The signal analysis behind [`DtmfDetect`](super::DtmfDetect): eight Goertzel filters run on
//! 4 ms hops, combined into a 12 ms window that slides by one hop, and the per-window verdict
//! (which key, if any, and how much of the window it fills).
//!
//! Per sample the work is eight Goertzel updates, one square and one copy: nothing else. Once
//! per hop the eight filters' complex outputs are combined into the window's discrete-time
//! Fourier transform at the exact DTMF frequencies (non-integer bins), and the window is judged
//! (`verdict` holds the checks, cheapest first, with their ITU-T Q.24 figures).

mod verdict;

use std::f64::consts::TAU;

use super::complex::Complex;
use crate::protocol::{DtmfDigit, SampleRate};
use verdict::{Limits, MAX_DEVIATION};

/// The DTMF frequencies (ITU-T Q.23): the low group (rows) then the high group (columns).
pub(super) const FREQUENCIES_HZ: [f64; 8] = {
    let (r, c) = (DtmfDigit::ROW_HZ, DtmfDigit::COLUMN_HZ);
    [r[0], r[1], r[2], r[3], c[0], c[1], c[2], c[3]]
};

/// The hop: one Goertzel block, 4 ms (32, 64 or 96 samples; five per 20 ms frame).
pub(super) const HOP_MS: u32 = 4;

/// Hops per analysis window: 12 ms, whose 83 Hz main lobe keeps neighbouring rows apart.
pub(super) const WINDOW_HOPS: usize = 3;

/// The peak value of a 0 dBFS sine in 16-bit samples.
pub(super) const FULL_SCALE: f64 = 32_767.0;

/// A key seen in one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Candidate {
    /// The key.
    pub digit: DtmfDigit,
    /// The two tones' share of the window's energy: about 1 for a clean tone that fills the
    /// window, and the covered share of the window when the tone starts or stops inside it.
    pub fraction: f32,
    /// Whether both second harmonics are weak. Notes of voices and instruments fail this in
    /// every window; a key fails it only in windows where it starts or stops, whose partial
    /// tones spread.
    pub pure: bool,
}

/// What one completed hop says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Hop {
    /// The key seen in the window that ends with this hop, if any.
    pub candidate: Option<Candidate>,
}

/// The Goertzel bank and the window state of one call.
#[derive(Debug, Clone)]
pub(super) struct Analyzer {
    /// Samples per hop.
    hop: usize,
    /// Samples per window, as a float.
    len: f32,
    /// Each filter's frequency, in radians per sample.
    omega: [f64; 8],
    /// `2 cos ω`, the Goertzel feedback.
    coef: [f32; 8],
    /// `e^{-iω(M-1)}` and `e^{-iωM}` (M = hop): turn the filter state into the hop's DFT.
    end_phase: [Complex; 8],
    hop_phase: [Complex; 8],
    /// `e^{-2iωM}`.
    hop_phase2: [Complex; 8],
    /// Largest deviation accepted, in radians per hop, per filter.
    max_phase: [f32; 8],
    /// Largest power gain the frequency correction can apply (at the deviation limit).
    max_boost: [f32; 8],
    /// Leakage of a unit tone at filter `a` into the window DFT at filter `b`, over the window
    /// length: `cross[b][a]` for the tone, `image[b][a]` for its negative-frequency image.
    cross: [[Complex; 8]; 8],
    image: [[Complex; 8]; 8],
    limits: Limits,
    // Goertzel state of the hop in progress.
    s1: [f32; 8],
    s2: [f32; 8],
    energy: f32,
    filled: usize,
    /// The last three hops' DFTs and energies (a ring; `newest` indexes the latest).
    hops: [[Complex; 8]; WINDOW_HOPS],
    hop_energy: [f32; WINDOW_HOPS],
    newest: usize,
    /// The previous window's DFT, for the frequency measurement.
    previous: [Complex; 8],
    /// The samples of the last three hops, one hop per slot, in the slots of `hops`.
    history: [i16; WINDOW_HOPS * MAX_HOP],
}

/// The longest hop: 4 ms at 24 kHz.
const MAX_HOP: usize = 96;

impl Analyzer {
    /// An analyser for `rate` that ignores tones below `level_floor_dbfs` (per tone).
    pub fn new(rate: SampleRate, level_floor_dbfs: f64) -> Analyzer {
        let hz = f64::from(rate.hz());
        let hop = (rate.hz() * HOP_MS / 1000) as usize;
        let len = hop * WINDOW_HOPS;
        let omega = FREQUENCIES_HZ.map(|f| TAU * f / hz);
        let m = hop as f64;
        let n = len as f64;
        let min_amplitude = FULL_SCALE * 10f64.powf(level_floor_dbfs / 20.0);
        let leak = |theta: f64| Complex::from_f64(kernel(theta, len)).scale(1.0 / n as f32);
        let mut cross = [[Complex::ZERO; 8]; 8];
        let mut image = [[Complex::ZERO; 8]; 8];
        for b in 0..8 {
            for a in 0..8 {
                cross[b][a] = if a == b { Complex::ZERO } else { leak(omega[a] - omega[b]) };
                image[b][a] = leak(-omega[a] - omega[b]);
            }
        }
        Analyzer {
            hop,
            len: len as f32,
            omega,
            coef: omega.map(|w| (2.0 * w.cos()) as f32),
            end_phase: omega.map(|w| Complex::unit(-w * (m - 1.0))),
            hop_phase: omega.map(|w| Complex::unit(-w * m)),
            hop_phase2: omega.map(|w| Complex::unit(-2.0 * w * m)),
            max_phase: omega.map(|w| (w * MAX_DEVIATION * m) as f32),
            max_boost: omega.map(|w| (1.0 / window_gain(w * MAX_DEVIATION, n).powi(2)) as f32),
            cross,
            image,
            limits: Limits::new(n, min_amplitude),
            s1: [0.0; 8],
            s2: [0.0; 8],
            energy: 0.0,
            filled: 0,
            hops: [[Complex::ZERO; 8]; WINDOW_HOPS],
            hop_energy: [0.0; WINDOW_HOPS],
            newest: 0,
            previous: [Complex::ZERO; 8],
            history: [0; WINDOW_HOPS * MAX_HOP],
        }
    }

    /// Samples per window.
    pub fn window_samples(&self) -> usize {
        self.hop * WINDOW_HOPS
    }

    /// Feeds samples up to the end of the hop in progress. Returns how many were used and, when
    /// the hop completed, the verdict on the window that ends with it. `established` is a key
    /// already heard with weak harmonics in enough windows: its windows are not checked again.
    pub fn feed(&mut self, samples: &[i16], established: Option<DtmfDigit>) -> (usize, Option<Hop>) {
        let take = samples.len().min(self.hop - self.filled);
        let samples = &samples[..take];
        let (coef, mut s1, mut s2, mut energy) = (self.coef, self.s1, self.s2, self.energy);
        for &x in samples {
            let x = f32::from(x);
            energy += x * x;
            for k in 0..8 {
                let s0 = x - s2[k] + coef[k] * s1[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
        // Kept for the harmonic check; copied after the loop, which stays in registers.
        let slot = ((self.newest + 1) % WINDOW_HOPS) * self.hop + self.filled;
        if let Some(kept) = self.history.get_mut(slot..slot + take) {
            kept.copy_from_slice(samples);
        }
        self.filled += take;
        if self.filled < self.hop {
            (self.s1, self.s2, self.energy) = (s1, s2, energy);
            return (take, None);
        }
        // The hop's DFT at each frequency, relative to the hop's first sample.
        let newest = (self.newest + 1) % WINDOW_HOPS;
        for k in 0..8 {
            self.hops[newest][k] = self.end_phase[k].scale(s1[k]) - self.hop_phase[k].scale(s2[k]);
        }
        self.hop_energy[newest] = energy;
        self.newest = newest;
        (self.s1, self.s2, self.energy, self.filled) = ([0.0; 8], [0.0; 8], 0.0, 0);
        (take, Some(Hop { candidate: self.judge_window(established) }))
    }

    /// Builds the window DFT from the last three hops and judges it.
    fn judge_window(&mut self, established: Option<DtmfDigit>) -> Option<Candidate> {
        let [oldest, middle, newest] = [(self.newest + 1) % 3, (self.newest + 2) % 3, self.newest];
        let mut x = [Complex::ZERO; 8];
        let mut power = [0.0f32; 8];
        for k in 0..8 {
            x[k] = self.hops[oldest][k] + self.hop_phase[k] * self.hops[middle][k] + self.hop_phase2[k] * self.hops[newest][k];
            power[k] = x[k].norm_sqr();
        }
        let previous = std::mem::replace(&mut self.previous, x);
        let energy: f32 = self.hop_energy.iter().sum();
        self.judge(&x, &previous, &power, energy, established)
    }
}

/// `Σ_{n<N} e^{iθn}`, as (re, im).
fn kernel(theta: f64, n: usize) -> (f64, f64) {
    let n = n as f64;
    let half = (theta / 2.0).sin();
    if half.abs() < 1e-12 {
        return (n, 0.0);
    }
    let magnitude = (theta * n / 2.0).sin() / half;
    let phase = theta * (n - 1.0) / 2.0;
    (magnitude * phase.cos(), magnitude * phase.sin())
}

/// The gain of an `n`-sample rectangular window's DFT for a tone `delta` radians per sample off
/// the analysed frequency: `|sin(δn/2) / (n sin(δ/2))|`.
fn window_gain(delta: f64, n: f64) -> f64 {
    let half = (delta / 2.0).sin();
    if half.abs() < 1e-9 { 1.0 } else { ((delta * n / 2.0).sin() / (n * half)).abs() }
}
