//! The offline resampler: a whole signal converted from one rate to another at once (prompts
//! loaded from files; the real-time, frame-by-frame converter is `crate::resample`).
//!
//! [`resample`] is band-limited (Kaiser-windowed sinc, [`RESAMPLER_ZERO_CROSSINGS`] zero
//! crossings per side, cutoff at [`RESAMPLER_CUTOFF`] of the lower Nyquist frequency) and has
//! zero delay: output sample `k` is the input signal at time `k / to_hz`. A 1 kHz sine comes
//! through 44.1→8, 8→16, 16→24 and 48→16 kHz with a SINAD above 60 dB.

use std::f64::consts::PI;
use std::sync::OnceLock;

/// Zero crossings of the resampling kernel on each side of its centre.
pub const RESAMPLER_ZERO_CROSSINGS: usize = 32;

/// The resampler's cutoff as a fraction of the lower of the two Nyquist frequencies.
pub const RESAMPLER_CUTOFF: f64 = 0.95;

/// Kernel table entries per zero crossing; the resampler interpolates linearly between them.
const TABLE_STEPS_PER_CROSSING: usize = 512;

/// The Kaiser window's shape parameter: about 90 dB of side-lobe attenuation.
const KAISER_BETA: f64 = 9.0;

/// Resamples a whole signal from `from_hz` to `to_hz` with a band-limited windowed-sinc filter.
///
/// The output has `round(input.len() * to_hz / from_hz)` samples and zero delay: output sample
/// `k` is the band-limited input evaluated at time `k / to_hz`, treating the signal as silent
/// outside its ends. The kernel is a sinc with its cutoff at [`RESAMPLER_CUTOFF`] of the lower
/// Nyquist frequency under a Kaiser window spanning [`RESAMPLER_ZERO_CROSSINGS`] zero crossings
/// per side. Equal rates return the input unchanged; a zero rate gives an empty output.
///
/// When the reduced ratio `to_hz / from_hz` has a small denominator (every pair of common audio
/// rates does) the filter is precomputed for each output phase; otherwise each weight is
/// interpolated from a fine kernel table. Either way a sample costs about
/// `2 * RESAMPLER_ZERO_CROSSINGS * max(1, from_hz / to_hz) / RESAMPLER_CUTOFF` multiply-adds.
/// The output must fit in memory.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    if from_hz == to_hz {
        return input.to_vec();
    }
    let len = resampled_len(input.len(), from_hz, to_hz);
    if len == 0 || input.is_empty() {
        return vec![0.0; len];
    }
    let filter = SincFilter::new(from_hz, to_hz);
    let mut clock = OutputClock::new(from_hz, to_hz);
    let mut output = Vec::with_capacity(len);
    match PhaseBank::new(&filter, clock.denominator) {
        Some(bank) => {
            let padded = bank.pad(input);
            for _ in 0..len {
                output.push(bank.sample_at(&padded, clock.whole, clock.remainder));
                clock.advance();
            }
        }
        None => {
            for _ in 0..len {
                output.push(filter.sample_at(input, clock.whole, clock.fraction()));
                clock.advance();
            }
        }
    }
    output
}

/// `round(len * to_hz / from_hz)`, or 0 when `from_hz` is 0.
fn resampled_len(len: usize, from_hz: u32, to_hz: u32) -> usize {
    if from_hz == 0 {
        return 0;
    }
    let from = u128::from(from_hz);
    let scaled = (len as u128 * u128::from(to_hz) + from / 2) / from;
    usize::try_from(scaled).unwrap_or(usize::MAX)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The position of the next output sample on the input's time axis, kept exactly as
/// `whole + remainder / denominator` input samples (the ratio reduced to lowest terms), so that
/// it never drifts and `remainder` is the output phase.
#[derive(Debug)]
struct OutputClock {
    whole: usize,
    remainder: u64,
    step_whole: usize,
    step_remainder: u64,
    denominator: u64,
}

impl OutputClock {
    /// The clock for nonzero rates, at time zero.
    fn new(from_hz: u32, to_hz: u32) -> OutputClock {
        let common = gcd(u64::from(from_hz), u64::from(to_hz)).max(1);
        let (from, to) = (u64::from(from_hz) / common, u64::from(to_hz) / common);
        OutputClock { whole: 0, remainder: 0, step_whole: (from / to) as usize, step_remainder: from % to, denominator: to }
    }

    fn fraction(&self) -> f64 {
        self.remainder as f64 / self.denominator as f64
    }

    fn advance(&mut self) {
        self.whole = self.whole.saturating_add(self.step_whole);
        self.remainder += self.step_remainder;
        if self.remainder >= self.denominator {
            self.remainder -= self.denominator;
            self.whole = self.whole.saturating_add(1);
        }
    }
}

/// The resampling kernel scaled for one pair of rates.
#[derive(Debug)]
struct SincFilter {
    table: &'static KernelTable,
    /// Zero crossings of the kernel per input sample: twice the cutoff in cycles per input sample.
    crossings_per_sample: f64,
    /// Half the kernel's support, in input samples.
    half_width: f64,
}

impl SincFilter {
    fn new(from_hz: u32, to_hz: u32) -> SincFilter {
        let crossings_per_sample = RESAMPLER_CUTOFF * f64::from(from_hz.min(to_hz)) / f64::from(from_hz);
        SincFilter {
            table: KernelTable::shared(),
            crossings_per_sample,
            half_width: RESAMPLER_ZERO_CROSSINGS as f64 / crossings_per_sample,
        }
    }

    /// The weight of an input sample `offset` input samples before the output instant.
    fn weight(&self, offset: f64) -> f64 {
        self.crossings_per_sample * self.table.at((offset * self.crossings_per_sample).abs())
    }

    /// The band-limited input at time `whole + fraction` (in input samples), weighing each input
    /// sample directly from the kernel table.
    fn sample_at(&self, input: &[f32], whole: usize, fraction: f64) -> f32 {
        let time = whole as f64 + fraction;
        let first = (time - self.half_width).ceil().max(0.0) as usize;
        let end = ((time + self.half_width).floor() as usize).saturating_add(1).min(input.len());
        let Some(window) = input.get(first..end) else {
            return 0.0;
        };
        let sum: f64 = window.iter().zip(first..).map(|(&x, n)| f64::from(x) * self.weight(time - n as f64)).sum();
        sum as f32
    }
}

/// The most coefficients (phases × taps) a [`PhaseBank`] may hold: 4 MiB of `f32`.
const MAX_BANK_COEFFICIENTS: usize = 1 << 20;

/// The filter precomputed for each of the `denominator` output phases of a rational ratio.
#[derive(Debug)]
struct PhaseBank {
    /// Input samples on each side of the output instant that can carry weight.
    reach: usize,
    /// Coefficients per phase: `2 * reach + 1`.
    taps: usize,
    /// Phase `p` (output instant `whole + p / phases`) at `p * taps..`; tap `i` weighs input
    /// sample `whole - reach + i`.
    coefficients: Vec<f32>,
}

impl PhaseBank {
    /// The bank for `phases` phases, or `None` when it would be too large.
    fn new(filter: &SincFilter, phases: u64) -> Option<PhaseBank> {
        let reach = filter.half_width.ceil() as usize;
        let taps = reach.checked_mul(2)?.checked_add(1)?;
        let phases = usize::try_from(phases).ok()?;
        if phases.checked_mul(taps)? > MAX_BANK_COEFFICIENTS {
            return None;
        }
        let coefficients = (0..phases)
            .flat_map(|p| {
                let fraction = p as f64 / phases as f64;
                (0..taps).map(move |i| filter.weight(fraction + reach as f64 - i as f64) as f32)
            })
            .collect();
        Some(PhaseBank { reach, taps, coefficients })
    }

    /// The input with `reach` zeros before and `reach + 1` after, so every window is whole.
    fn pad(&self, input: &[f32]) -> Vec<f32> {
        let mut padded = Vec::with_capacity(input.len() + 2 * self.reach + 1);
        padded.resize(self.reach, 0.0);
        padded.extend_from_slice(input);
        padded.resize(padded.len() + self.reach + 1, 0.0);
        padded
    }

    /// The band-limited input at time `whole + phase / phases`, from the padded input.
    fn sample_at(&self, padded: &[f32], whole: usize, phase: u64) -> f32 {
        let start = usize::try_from(phase).unwrap_or(usize::MAX).saturating_mul(self.taps);
        let coefficients = self.coefficients.get(start..start.saturating_add(self.taps));
        let window = padded.get(whole..whole.saturating_add(self.taps));
        match (coefficients, window) {
            (Some(coefficients), Some(window)) => dot(coefficients, window),
            _ => 0.0,
        }
    }
}

/// The dot product of two equal-length slices, in eight independent lanes so it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_blocks, b_blocks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_blocks.remainder().iter().zip(b_blocks.remainder()).map(|(x, y)| x * y).sum();
    let mut lanes = [0.0_f32; 8];
    for (a_block, b_block) in a_blocks.zip(b_blocks) {
        for ((lane, x), y) in lanes.iter_mut().zip(a_block).zip(b_block) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The unit windowed sinc `k(x) = sinc(x) * kaiser(x / Z)` for `x` in zero crossings, tabulated at
/// [`TABLE_STEPS_PER_CROSSING`] points per crossing from 0 to `Z`, each entry with the slope to
/// the next for linear interpolation.
#[derive(Debug)]
struct KernelTable {
    values: Vec<[f32; 2]>,
}

impl KernelTable {
    /// The index of the entry at `x = Z`, the kernel's edge (value and slope zero).
    const EDGE: usize = RESAMPLER_ZERO_CROSSINGS * TABLE_STEPS_PER_CROSSING;

    fn shared() -> &'static KernelTable {
        static TABLE: OnceLock<KernelTable> = OnceLock::new();
        TABLE.get_or_init(KernelTable::build)
    }

    fn build() -> KernelTable {
        let zero_crossings = RESAMPLER_ZERO_CROSSINGS as f64;
        let window_norm = bessel_i0(KAISER_BETA);
        let kernel = |i: usize| {
            let x = i as f64 / TABLE_STEPS_PER_CROSSING as f64;
            if x >= zero_crossings {
                return 0.0;
            }
            let r = x / zero_crossings;
            sinc(x) * bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / window_norm
        };
        let values = (0..=KernelTable::EDGE)
            .map(|i| {
                let (here, next) = (kernel(i), kernel(i + 1));
                [here as f32, (next - here) as f32]
            })
            .collect();
        KernelTable { values }
    }

    /// The kernel at `x` zero crossings from its centre (`x >= 0`), interpolated linearly; zero
    /// at and beyond the edge.
    fn at(&self, x: f64) -> f64 {
        let position = x * TABLE_STEPS_PER_CROSSING as f64;
        let index = (position as usize).min(KernelTable::EDGE);
        let weight = position - index as f64;
        match self.values.get(index) {
            Some(&[value, slope]) => f64::from(value) + f64::from(slope) * weight,
            None => 0.0,
        }
    }
}

/// `sin(pi x) / (pi x)`, with `sinc(0) = 1`.
fn sinc(x: f64) -> f64 {
    if x == 0.0 { 1.0 } else { (PI * x).sin() / (PI * x) }
}

/// The modified Bessel function of the first kind, order zero, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let quarter_x_squared = x * x / 4.0;
    let mut term = 1.0_f64;
    let mut sum = 1.0_f64;
    for k in 1..200 {
        term *= quarter_x_squared / f64::from(k * k);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// [`resample`] for a signal that arrives in pieces (a synthesizer's output): each piece gives
/// the output samples whose filter window it completes, and [`finish`](StreamResampler::finish)
/// the rest. The output is exactly [`resample`]'s for the whole signal, whatever the pieces.
///
/// It holds the input since the oldest window still open (the filter's reach, about 2 ms of
/// history), so its memory does not grow with the signal.
#[derive(Debug)]
pub struct StreamResampler {
    bank: PhaseBank,
    clock: OutputClock,
    /// The padded input from padded sample number `base` on (`reach` zeros, then the input).
    buffer: Vec<f32>,
    base: usize,
    /// Input samples pushed, and output samples produced.
    pushed: usize,
    produced: usize,
    from_hz: u32,
    to_hz: u32,
}

impl StreamResampler {
    /// A converter from `from_hz` to `to_hz` (nonzero, different, with a ratio whose reduced
    /// denominator keeps the filter bank under 4 MiB, as every pair of audio rates does), or
    /// `None`.
    pub fn new(from_hz: u32, to_hz: u32) -> Option<StreamResampler> {
        if from_hz == 0 || to_hz == 0 || from_hz == to_hz {
            return None;
        }
        let filter = SincFilter::new(from_hz, to_hz);
        let clock = OutputClock::new(from_hz, to_hz);
        let bank = PhaseBank::new(&filter, clock.denominator)?;
        let buffer = vec![0.0; bank.reach];
        Some(StreamResampler { bank, clock, buffer, base: 0, pushed: 0, produced: 0, from_hz, to_hz })
    }

    /// Adds `input` and appends to `out` every output sample it completes.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.buffer.extend_from_slice(input);
        self.pushed += input.len();
        self.drain(out, usize::MAX);
    }

    /// Ends the signal (silence after it) and appends the remaining output samples to `out`.
    pub fn finish(mut self, out: &mut Vec<f32>) {
        self.buffer.resize(self.buffer.len() + self.bank.reach + 1, 0.0);
        let total = resampled_len(self.pushed, self.from_hz, self.to_hz);
        self.drain(out, total);
    }

    /// Produces outputs while their windows are in the buffer, up to `limit` in all, then drops
    /// the input no window needs any more.
    fn drain(&mut self, out: &mut Vec<f32>, limit: usize) {
        let taps = self.bank.taps;
        while self.produced < limit && self.clock.whole - self.base + taps <= self.buffer.len() {
            let start = self.clock.whole - self.base;
            out.push(self.bank.sample_at(&self.buffer[start..], 0, self.clock.remainder));
            self.clock.advance();
            self.produced += 1;
        }
        let done = (self.clock.whole - self.base).min(self.buffer.len());
        self.buffer.drain(..done);
        self.base += done;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audio::testing::sine;
    use std::f64::consts::TAU;

    /// SINAD of `output` against `amplitude * sin(2 pi hz k / rate_hz)` over the middle 80%.
    fn sinad_db(output: &[f32], hz: f64, rate_hz: u32, amplitude: f64) -> f64 {
        let skip = output.len() / 10;
        let (mut signal, mut error) = (0.0, 0.0);
        for (k, &y) in output.iter().enumerate().take(output.len() - skip).skip(skip) {
            let ideal = amplitude * (TAU * hz * k as f64 / f64::from(rate_hz)).sin();
            signal += ideal * ideal;
            error += (f64::from(y) - ideal).powi(2);
        }
        10.0 * (signal / error).log10()
    }

    #[test]
    fn a_stream_in_pieces_gives_exactly_the_whole_signal_resampled() {
        for (from, to) in [(22_050, 8_000), (22_050, 16_000), (22_050, 24_000), (8_000, 16_000), (48_000, 16_000)] {
            let input = sine(440.0, from, from as usize / 3 + 17, 0.4);
            let whole = resample(&input, from, to);
            let mut streamed = Vec::new();
            let mut stream = StreamResampler::new(from, to).unwrap();
            let mut rest = &input[..];
            let mut piece = 1;
            while !rest.is_empty() {
                let n = piece.min(rest.len());
                stream.push(&rest[..n], &mut streamed);
                rest = &rest[n..];
                piece = piece * 3 + 5;
            }
            stream.finish(&mut streamed);
            assert_eq!(streamed.len(), whole.len(), "{from} -> {to}");
            assert!(streamed.iter().zip(&whole).all(|(a, b)| a == b), "{from} -> {to}: the same samples");
        }
        assert!(StreamResampler::new(8_000, 8_000).is_none());
    }

    #[test]
    fn resampled_sine_has_sinad_above_60_db() {
        for (from, to) in [(44_100, 8_000), (8_000, 16_000), (16_000, 24_000), (48_000, 16_000)] {
            let input = sine(1000.0, from, from as usize, 0.5);
            let output = resample(&input, from, to);
            let sinad = sinad_db(&output, 1000.0, to, 0.5);
            println!("SINAD 1 kHz {from} -> {to} Hz: {sinad:.1} dB");
            assert!(sinad >= 60.0, "{from} -> {to}: SINAD {sinad:.1} dB");
        }
    }

    #[test]
    fn resampled_sine_at_odd_ratio_and_near_cutoff_is_clean() {
        // 44.1 -> 8.001 kHz has no small rational ratio; 3.4 kHz is at the edge of the phone band.
        for (hz, from, to) in [(1000.0, 44_100, 8_001), (3400.0, 44_100, 8_000), (3400.0, 8_000, 24_000)] {
            let output = resample(&sine(hz, from, from as usize, 0.5), from, to);
            let sinad = sinad_db(&output, hz, to, 0.5);
            println!("SINAD {hz} Hz {from} -> {to} Hz: {sinad:.1} dB");
            assert!(sinad >= 60.0, "{hz} Hz {from} -> {to}: SINAD {sinad:.1} dB");
        }
    }

    #[test]
    fn content_above_the_new_nyquist_is_rejected() {
        // 4.4 kHz at 44.1 kHz would alias to 3.6 kHz at 8 kHz.
        let output = resample(&sine(4400.0, 44_100, 44_100, 0.5), 44_100, 8_000);
        let middle = &output[800..7200];
        let rms = (middle.iter().map(|&y| f64::from(y).powi(2)).sum::<f64>() / middle.len() as f64).sqrt();
        let rejection = 20.0 * (0.5 / 2_f64.sqrt() / rms).log10();
        println!("alias rejection 4.4 kHz 44.1 -> 8 kHz: {rejection:.1} dB");
        assert!(rejection >= 60.0, "rejection {rejection:.1} dB");
    }

    #[test]
    fn phase_bank_matches_direct_evaluation() {
        let input: Vec<f32> = (0..2000).map(|n| ((n * 7919 % 2001) as f32 / 1000.0) - 1.0).collect();
        for (from, to) in [(44_100, 16_000), (8_000, 24_000), (16_000, 24_000)] {
            let banked = resample(&input, from, to);
            let filter = SincFilter::new(from, to);
            let mut clock = OutputClock::new(from, to);
            for (k, &y) in banked.iter().enumerate() {
                let direct = filter.sample_at(&input, clock.whole, clock.fraction());
                assert!((y - direct).abs() < 1e-5, "{from} -> {to}, sample {k}: {y} vs {direct}");
                clock.advance();
            }
        }
    }

    #[test]
    fn resampled_length_is_rounded_ratio() {
        assert_eq!(resample(&[0.0; 441], 44_100, 8_000).len(), 80);
        assert_eq!(resample(&[0.0; 100], 44_100, 16_000).len(), 36); // 36.28
        assert_eq!(resample(&[0.0; 7], 16_000, 24_000).len(), 11); // 10.5 rounds up
        assert_eq!(resample(&[0.0; 3], 48_000, 16_000).len(), 1);
        assert_eq!(resample(&[0.0; 1], 48_000, 8_000).len(), 0); // 0.17
        assert_eq!(resample(&[], 8_000, 16_000).len(), 0);
        assert_eq!(resample(&[1.0; 10], 0, 8_000).len(), 0);
        assert_eq!(resample(&[1.0; 10], 8_000, 0).len(), 0);
    }

    #[test]
    fn equal_rates_return_input_unchanged() {
        let input = [0.25, -1.0, 0.999, f32::MIN_POSITIVE, 0.0];
        assert_eq!(resample(&input, 16_000, 16_000), input.to_vec());
    }

    #[test]
    fn resampling_preserves_dc() {
        let output = resample(&[0.5; 4000], 8_000, 24_000);
        assert!(output[3000..9000].iter().all(|&y| (y - 0.5).abs() < 1e-4));
    }

    #[test]
    #[ignore = "timing; run with --release -- --ignored --nocapture"]
    fn resampling_a_minute_of_cd_audio_is_fast() {
        let input = sine(1000.0, 44_100, 60 * 44_100, 0.5);
        let start = std::time::Instant::now();
        let output = resample(&input, 44_100, 16_000);
        let elapsed = start.elapsed();
        println!("60 s 44.1 -> 16 kHz: {elapsed:?}");
        assert_eq!(output.len(), 60 * 16_000);
        assert!(elapsed < std::time::Duration::from_secs(2));
    }
}
