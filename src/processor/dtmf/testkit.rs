//! Test signals (DTMF tones, white noise, speech-like and music-like audio) and a harness that
//! runs one processor frame by frame as the session would. Tests only.

use std::f64::consts::{PI, TAU};

use super::analysis::FULL_SCALE;
pub(crate) use crate::processor::testkit::Harness;
use crate::processor::{DtmfSource, Event, Processor};
use crate::protocol::{DtmfDigit, SampleRate};

/// A small deterministic generator: xorshift64*.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }
}

/// A key's (low, high) frequencies, ITU-T Q.23.
pub(crate) fn key_hz(digit: DtmfDigit) -> (f64, f64) {
    let i = DtmfDigit::ALL.iter().position(|d| *d == digit).unwrap_or(0);
    (super::analysis::FREQUENCIES_HZ[i / 4], super::analysis::FREQUENCIES_HZ[4 + i % 4])
}

/// The peak amplitude of a sine at `dbfs`.
pub(crate) fn amplitude(dbfs: f64) -> f64 {
    FULL_SCALE * 10f64.powf(dbfs / 20.0)
}

/// `ms` of sines (frequency in Hz, level in dBFS each) at `rate`, starting at random phases.
pub(crate) fn tones(rate: SampleRate, sines: &[(f64, f64)], ms: f64, rng: &mut Rng) -> Vec<f64> {
    let n = (ms * f64::from(rate.hz()) / 1000.0).round() as usize;
    let phases: Vec<f64> = sines.iter().map(|_| rng.range(0.0, TAU)).collect();
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate.hz());
            sines.iter().zip(&phases).map(|((hz, dbfs), p)| amplitude(*dbfs) * (TAU * hz * t + p).sin()).sum()
        })
        .collect()
}

/// A key at `dbfs` per tone, with its frequencies scaled by (1 + `low_dev`) and (1 + `high_dev`),
/// and the high tone `twist_db` louder (negative: quieter).
pub(crate) fn key(rate: SampleRate, digit: DtmfDigit, ms: f64, dbfs: f64, rng: &mut Rng) -> Vec<f64> {
    key_with(rate, digit, ms, dbfs, (0.0, 0.0), 0.0, rng)
}

/// See [`key`].
pub(crate) fn key_with(
    rate: SampleRate,
    digit: DtmfDigit,
    ms: f64,
    dbfs: f64,
    (low_dev, high_dev): (f64, f64),
    twist_db: f64,
    rng: &mut Rng,
) -> Vec<f64> {
    let (low, high) = key_hz(digit);
    tones(rate, &[(low * (1.0 + low_dev), dbfs), (high * (1.0 + high_dev), dbfs + twist_db)], ms, rng)
}

/// `ms` of silence.
pub(crate) fn silence(rate: SampleRate, ms: f64) -> Vec<f64> {
    vec![0.0; (ms * f64::from(rate.hz()) / 1000.0).round() as usize]
}

/// White Gaussian noise of RMS `rms` (16-bit units) added to `signal`.
pub(crate) fn add_noise(signal: &mut [f64], rms: f64, rng: &mut Rng) {
    for s in signal {
        *s += rms * rng.gaussian();
    }
}

/// Rounds to 16 bits, saturating.
pub(crate) fn to_i16(signal: &[f64]) -> Vec<i16> {
    signal.iter().map(|s| s.round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// Vowel formants (F1, F2, F3 in Hz): /a/ /i/ /u/ /e/ /o/ /æ/ /ɜ/ /ʊ/ /ʌ/.
const VOWELS: [(f64, f64, f64); 9] = [
    (730.0, 1090.0, 2440.0),
    (270.0, 2290.0, 3010.0),
    (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0),
    (570.0, 840.0, 2410.0),
    (660.0, 1720.0, 2410.0),
    (490.0, 1350.0, 1690.0),
    (440.0, 1020.0, 2240.0),
    (640.0, 1190.0, 2390.0),
];

/// A two-pole resonator at `hz` with bandwidth `bw`, unit gain at its peak (about).
struct Resonator {
    a1: f64,
    a2: f64,
    gain: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn new(rate: SampleRate, hz: f64, bw: f64) -> Resonator {
        let fs = f64::from(rate.hz());
        let r = (-PI * bw / fs).exp();
        Resonator { a1: 2.0 * r * (TAU * hz / fs).cos(), a2: -r * r, gain: 1.0 - r, y1: 0.0, y2: 0.0 }
    }

    fn step(&mut self, x: f64) -> f64 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Scales `segment` to RMS `rms` with 10 ms raised-cosine edges, and appends it.
fn append_scaled(out: &mut Vec<f64>, rate: SampleRate, mut segment: Vec<f64>, rms: f64) {
    let power = segment.iter().map(|s| s * s).sum::<f64>() / segment.len().max(1) as f64;
    let k = if power > 0.0 { rms / power.sqrt() } else { 0.0 };
    let edge = (rate.hz() / 100) as usize;
    let n = segment.len();
    for (i, s) in segment.iter_mut().enumerate() {
        let d = i.min(n - 1 - i);
        let ramp = if d < edge { 0.5 - 0.5 * (PI * d as f64 / edge as f64).cos() } else { 1.0 };
        *s *= k * ramp;
    }
    out.extend(segment);
}

/// One voiced segment: a jittered glottal pulse train (gliding pitch between 100 and 220 Hz),
/// a −12 dB/octave source tilt, and three formant resonators.
fn vowel(rate: SampleRate, ms: f64, rng: &mut Rng) -> Vec<f64> {
    let fs = f64::from(rate.hz());
    let n = (ms * fs / 1000.0) as usize;
    let (f1, f2, f3) = VOWELS[(rng.next_u64() % VOWELS.len() as u64) as usize];
    let wobble = |rng: &mut Rng, f: f64| f * rng.range(0.93, 1.07);
    let mut formants = [
        Resonator::new(rate, wobble(rng, f1), rng.range(60.0, 120.0)),
        Resonator::new(rate, wobble(rng, f2), rng.range(80.0, 150.0)),
        Resonator::new(rate, wobble(rng, f3), rng.range(100.0, 200.0)),
    ];
    let (f0_start, f0_end) = (rng.range(100.0, 220.0), rng.range(100.0, 220.0));
    let (mut tilt1, mut tilt2) = (0.0, 0.0);
    let mut next_pulse = 0.0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut x = 0.0;
        if i as f64 >= next_pulse {
            x = 1.0;
            let f0 = f0_start + (f0_end - f0_start) * i as f64 / n as f64;
            next_pulse += fs / f0 * rng.range(0.98, 1.02);
        }
        tilt1 = 0.96 * tilt1 + x;
        tilt2 = 0.96 * tilt2 + tilt1;
        let source = tilt2;
        out.push(formants.iter_mut().map(|r| r.step(source)).sum());
    }
    out
}

/// A chord of two to four harmonic notes (110-880 Hz, six harmonics at 1/n).
fn chord(rate: SampleRate, ms: f64, rng: &mut Rng) -> Vec<f64> {
    let fs = f64::from(rate.hz());
    let n = (ms * fs / 1000.0) as usize;
    let notes: Vec<f64> = (0..2 + rng.next_u64() % 3).map(|_| 440.0 * 2f64.powf((rng.next_u64() % 37) as f64 / 12.0 - 2.0)).collect();
    let phases: Vec<f64> = (0..notes.len() * 6).map(|_| rng.range(0.0, TAU)).collect();
    let decay = rng.range(1.0, 6.0);
    (0..n)
        .map(|i| {
            let t = i as f64 / fs;
            let mut s = 0.0;
            for (j, f) in notes.iter().enumerate() {
                for h in 1..=6 {
                    let hz = f * h as f64;
                    if hz < fs / 2.0 {
                        s += (TAU * hz * t + phases[j * 6 + h - 1]).sin() / h as f64;
                    }
                }
            }
            s * (-decay * t).exp()
        })
        .collect()
}

/// Speech-like and music-like audio: vowels of 100-200 ms, fricatives, pauses and chords of
/// 200-800 ms, at −35 to −10 dBFS RMS.
pub(crate) fn speech_and_music(rate: SampleRate, seconds: f64, rng: &mut Rng) -> Vec<f64> {
    let total = (seconds * f64::from(rate.hz())) as usize;
    let mut out = Vec::with_capacity(total + rate.hz() as usize);
    while out.len() < total {
        let rms = amplitude(rng.range(-35.0, -10.0)) / 2f64.sqrt();
        let kind = rng.uniform();
        if kind < 0.6 {
            let segment = vowel(rate, rng.range(100.0, 200.0), rng);
            append_scaled(&mut out, rate, segment, rms);
        } else if kind < 0.7 {
            let n = (rng.range(50.0, 150.0) * f64::from(rate.hz()) / 1000.0) as usize;
            let mut last = 0.0;
            let hiss: Vec<f64> = (0..n)
                .map(|_| {
                    let g = rng.gaussian();
                    let s = g - last;
                    last = g;
                    s
                })
                .collect();
            append_scaled(&mut out, rate, hiss, rms / 3.0);
        } else if kind < 0.8 {
            let n = (rng.range(50.0, 300.0) * f64::from(rate.hz()) / 1000.0) as usize;
            out.extend((0..n).map(|_| 3.0 * rng.gaussian()));
        } else {
            let segment = chord(rate, rng.range(200.0, 800.0), rng);
            append_scaled(&mut out, rate, segment, rms);
        }
    }
    out.truncate(total);
    out
}

/// DTMF helpers on the processor test kit's harness (see [`crate::processor::testkit`]).
impl<P: Processor> Harness<P> {
    /// Runs `audio` given as floats (see [`to_i16`]).
    pub fn run_f64(&mut self, audio: &[f64]) {
        self.run(&to_i16(audio));
    }

    /// The keys reported, in order.
    pub fn keys(&self) -> String {
        self.dtmf().map(|(digit, _, _)| digit.as_char()).collect()
    }

    /// The DTMF events' start times, in ms since the call started.
    pub fn starts(&self) -> Vec<Option<u64>> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Dtmf { start_ms, .. } => Some(*start_ms),
                _ => None,
            })
            .collect()
    }

    /// The DTMF events: key, duration and source.
    pub fn dtmf(&self) -> impl Iterator<Item = (DtmfDigit, Option<u32>, DtmfSource)> + '_ {
        self.events.iter().filter_map(|(_, e)| match e {
            Event::Dtmf { digit, duration_ms, source, .. } => Some((*digit, *duration_ms, *source)),
            _ => None,
        })
    }
}
