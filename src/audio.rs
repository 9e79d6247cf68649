//! Audio files and signals shared by the emulator and the processors: prompts from WAV files,
//! tones, DTMF and call recordings.
//!
//! The `play` processor loads its file here; the emulator, which plays a telephony platform
//! against a bot, produces and keeps the audio a platform would carry: caller prompts loaded from arbitrary WAV files and converted to the
//! call's L16 rate ([`load_wav`]), continuous test tones ([`Tone`]), DTMF keys per ITU-T Q.23
//! ([`DtmfTone`]), and a two-track recording of the call ([`StereoRecorder`]). Decoded audio is
//! played into calls frame by frame with [`Playback`], by the `play` processor and by the session
//! for the control API's streams and DTMF.
//!
//! # Guarantees
//!
//! - Nothing here panics on bad input. Malformed, truncated or unsupported WAV data and
//!   out-of-range tone parameters come back as [`AudioError`]s; [`load_wav_bytes`] is safe to
//!   fuzz and never pre-allocates more than [`MAX_PREALLOCATED_SAMPLES`] from a header's claim.
//! - [`load_wav`] reads mono or multi-channel WAV with 16-, 24- or 32-bit integer or 32-bit float
//!   samples at [`MIN_WAV_RATE_HZ`] to [`MAX_WAV_RATE_HZ`], mixes channels down to mono by
//!   averaging, resamples to the call rate and converts to `i16` with rounding and saturation.
//!   A 16-bit mono file already at the call rate comes back sample for sample.
//! - [`resample`] is band-limited (Kaiser-windowed sinc, [`RESAMPLER_ZERO_CROSSINGS`] zero
//!   crossings per side, cutoff at [`RESAMPLER_CUTOFF`] of the lower Nyquist frequency) and has
//!   zero delay: output sample `k` is the input signal at time `k / to_hz`. A 1 kHz sine comes
//!   through 44.1→8, 8→16, 16→24 and 48→16 kHz with a SINAD above 60 dB.
//! - [`Tone`] and [`DtmfTone`] keep their phase across `fill` calls, so consecutive frames join
//!   without clicks: filling 160 samples twice equals filling 320 once.
//! - [`StereoRecorder`] rewrites the WAV header at least once per second of audio, so a recording
//!   cut off by a crash still opens and holds everything up to the last whole second.

mod playback;

use std::f64::consts::{PI, TAU};
use std::fs::File;
use std::io::{BufWriter, Cursor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use playback::{Blend, Playback, Played};

use crate::protocol::{DtmfDigit, SampleRate};

/// The most samples [`load_wav_bytes`] reserves up front, whatever the WAV header claims (64 Mi).
///
/// A corrupt header can claim billions of samples; longer data is still read, growing as it goes.
pub const MAX_PREALLOCATED_SAMPLES: usize = 64 * 1024 * 1024;

/// The lowest WAV sample rate [`load_wav`] accepts, in Hz.
pub const MIN_WAV_RATE_HZ: u32 = 1_000;

/// The highest WAV sample rate [`load_wav`] accepts, in Hz.
pub const MAX_WAV_RATE_HZ: u32 = 768_000;

/// Zero crossings of the resampling kernel on each side of its centre.
pub const RESAMPLER_ZERO_CROSSINGS: usize = 32;

/// The resampler's cutoff as a fraction of the lower of the two Nyquist frequencies.
pub const RESAMPLER_CUTOFF: f64 = 0.95;

/// The default level of each of the two DTMF sines, in dBFS: the pair peaks at about -4 dBFS.
pub const DTMF_LEVEL_DBFS: f64 = -10.0;

/// Kernel table entries per zero crossing; the resampler interpolates linearly between them.
const TABLE_STEPS_PER_CROSSING: usize = 512;

/// The Kaiser window's shape parameter: about 90 dB of side-lobe attenuation.
const KAISER_BETA: f64 = 9.0;

/// The scale between normalised samples (-1.0..1.0) and 16-bit samples when loading audio.
const I16_SCALE: f64 = 32_768.0;

/// The peak of a 0 dBFS synthesised sine, in 16-bit units.
const FULL_SCALE_PEAK: f64 = 32_767.0;

/// Bytes per stereo frame in a recording: two 16-bit samples.
const RECORDING_FRAME_BYTES: u64 = 4;

/// The most frames a recording may hold: a WAV data chunk is limited to 4 GiB (minus the header).
const MAX_RECORDING_FRAMES: u64 = (u32::MAX as u64 - 1024) / RECORDING_FRAME_BYTES;

/// Everything that can go wrong loading, synthesising or recording audio.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// WAV data could not be opened, parsed or read.
    #[error("cannot read WAV {}: {source}", origin_label(.path.as_deref()))]
    WavRead {
        /// The file, or `None` for in-memory data ([`load_wav_bytes`]).
        path: Option<PathBuf>,
        /// What hound reported.
        #[source]
        source: hound::Error,
    },
    /// The WAV data's sample format is not one the loader converts.
    #[error("unsupported WAV sample format: {bits}-bit {} (supported: 16/24/32-bit integer, 32-bit float)", format_label(*.format))]
    UnsupportedFormat {
        /// Integer or floating point.
        format: hound::SampleFormat,
        /// Bits per sample.
        bits: u16,
    },
    /// The WAV data's sample rate is outside [`MIN_WAV_RATE_HZ`]..=[`MAX_WAV_RATE_HZ`].
    #[error("unsupported WAV sample rate {hz} Hz (supported: {MIN_WAV_RATE_HZ} to {MAX_WAV_RATE_HZ} Hz)")]
    UnsupportedRate {
        /// The rate the header declares.
        hz: u32,
    },
    /// The WAV data holds no audio (or too little to make one sample at the call rate).
    #[error("WAV data holds no audio")]
    Empty,
    /// A synthesis parameter is out of range.
    #[error("invalid {parameter}: {value} (expected {expected})")]
    InvalidParameter {
        /// Which parameter.
        parameter: &'static str,
        /// The rejected value.
        value: f64,
        /// The accepted range, in words.
        expected: String,
    },
    /// A recording could not be created, written or finalised.
    #[error("cannot write WAV recording {}: {source}", .path.display())]
    WavWrite {
        /// The recording's file.
        path: PathBuf,
        /// What hound reported.
        #[source]
        source: hound::Error,
    },
    /// A recording reached the 4 GiB limit of the WAV format.
    #[error("WAV recording {} is full ({max_frames} frames)", .path.display())]
    RecordingFull {
        /// The recording's file.
        path: PathBuf,
        /// The most frames a recording holds.
        max_frames: u64,
    },
}

impl AudioError {
    /// Names `path` as the origin of a read error that came from in-memory data.
    fn at_path(self, path: &Path) -> AudioError {
        match self {
            AudioError::WavRead { path: None, source } => AudioError::WavRead { path: Some(path.to_path_buf()), source },
            other => other,
        }
    }
}

fn origin_label(path: Option<&Path>) -> String {
    path.map_or_else(|| "<in-memory data>".to_owned(), |p| p.display().to_string())
}

fn format_label(format: hound::SampleFormat) -> &'static str {
    match format {
        hound::SampleFormat::Int => "integer",
        hound::SampleFormat::Float => "float",
    }
}

fn read_error(source: hound::Error) -> AudioError {
    AudioError::WavRead { path: None, source }
}

// ---------------------------------------------------------------------------------------------
// WAV loading
// ---------------------------------------------------------------------------------------------

/// Checks that `path` is a WAV file [`load_wav`] can read (its header: the format and the
/// rate), without reading the audio.
pub fn check_wav(path: &Path) -> Result<(), AudioError> {
    let reader = hound::WavReader::open(path).map_err(|source| AudioError::WavRead { path: Some(path.to_owned()), source })?;
    WavLayout::from_spec(reader.spec()).map(drop)
}

/// Loads a WAV file as mono 16-bit samples at `rate`.
///
/// Reads the whole file into memory, then decodes it as [`load_wav_bytes`] does; read errors
/// name `path`.
pub fn load_wav(path: &Path, rate: SampleRate) -> Result<Vec<i16>, AudioError> {
    let bytes =
        std::fs::read(path).map_err(|e| AudioError::WavRead { path: Some(path.to_path_buf()), source: hound::Error::IoError(e) })?;
    load_wav_bytes(&bytes, rate).map_err(|e| e.at_path(path))
}

/// Decodes WAV data held in memory as mono 16-bit samples at `rate`.
///
/// Channels are averaged to mono; 16-, 24- and 32-bit integer and 32-bit float samples are
/// accepted (non-finite float samples read as silence); the audio is resampled with [`resample`]
/// and converted with rounding and saturation. Never panics, whatever the bytes: truncated or
/// corrupt data gives the first error hound reports.
pub fn load_wav_bytes(bytes: &[u8], rate: SampleRate) -> Result<Vec<i16>, AudioError> {
    let mut reader = hound::WavReader::new(Cursor::new(bytes)).map_err(read_error)?;
    let layout = WavLayout::from_spec(reader.spec())?;
    let capacity = usize::try_from(reader.duration()).unwrap_or(usize::MAX).min(MAX_PREALLOCATED_SAMPLES);
    let mono = match layout.encoding {
        WavEncoding::Int { scale } => {
            mix_down(reader.samples::<i32>().map(|s| s.map(|v| (f64::from(v) * scale) as f32)), layout.channels, capacity)
        }
        WavEncoding::Float => mix_down(reader.samples::<f32>(), layout.channels, capacity),
    }
    .map_err(read_error)?;
    let converted: Vec<i16> = resample(&mono, layout.rate_hz, rate.hz()).iter().map(|&x| to_i16(f64::from(x) * I16_SCALE)).collect();
    if converted.is_empty() { Err(AudioError::Empty) } else { Ok(converted) }
}

/// How the samples of a supported WAV stream are laid out.
#[derive(Debug, Clone, Copy)]
struct WavLayout {
    channels: u16,
    rate_hz: u32,
    encoding: WavEncoding,
}

/// The sample encoding of a supported WAV stream.
#[derive(Debug, Clone, Copy)]
enum WavEncoding {
    /// Signed integers; `scale` maps them onto -1.0..1.0.
    Int { scale: f64 },
    /// 32-bit IEEE float, already normalised.
    Float,
}

impl WavLayout {
    /// Checks that the loader supports `spec`.
    fn from_spec(spec: hound::WavSpec) -> Result<WavLayout, AudioError> {
        let encoding = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, bits @ (16 | 24 | 32)) => WavEncoding::Int { scale: 1.0 / f64::from(1_u32 << (bits - 1)) },
            (hound::SampleFormat::Float, 32) => WavEncoding::Float,
            (format, bits) => return Err(AudioError::UnsupportedFormat { format, bits }),
        };
        if !(MIN_WAV_RATE_HZ..=MAX_WAV_RATE_HZ).contains(&spec.sample_rate) {
            return Err(AudioError::UnsupportedRate { hz: spec.sample_rate });
        }
        if spec.channels == 0 {
            return Err(read_error(hound::Error::FormatError("file contains zero channels")));
        }
        Ok(WavLayout { channels: spec.channels, rate_hz: spec.sample_rate, encoding })
    }
}

/// Averages interleaved frames of `channels` samples into mono, stopping at the first error.
///
/// Non-finite samples count as silence; a trailing partial frame is dropped.
fn mix_down<I>(samples: I, channels: u16, capacity: usize) -> Result<Vec<f32>, hound::Error>
where
    I: Iterator<Item = Result<f32, hound::Error>>,
{
    let mut mono = Vec::with_capacity(capacity);
    let mut frame_sum = 0.0_f64;
    let mut in_frame = 0_u16;
    for sample in samples {
        let value = sample?;
        frame_sum += if value.is_finite() { f64::from(value) } else { 0.0 };
        in_frame += 1;
        if in_frame == channels {
            mono.push((frame_sum / f64::from(channels)) as f32);
            frame_sum = 0.0;
            in_frame = 0;
        }
    }
    Ok(mono)
}

/// Rounds to the nearest 16-bit sample, saturating at the limits (NaN becomes 0).
fn to_i16(value: f64) -> i16 {
    value.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

// ---------------------------------------------------------------------------------------------
// Resampling
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Tones and DTMF
// ---------------------------------------------------------------------------------------------

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

fn dbfs_to_gain(level_dbfs: f64) -> f64 {
    10_f64.powf(level_dbfs / 20.0)
}

/// Checks that a level is finite and at most 0 dBFS.
fn validate_level(level_dbfs: f64) -> Result<f64, AudioError> {
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

// ---------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------

/// Records a call as a 16-bit stereo WAV at the call rate (left and right are the caller's
/// choice, e.g. what the emulator sent and what the bot sent).
///
/// The header is rewritten at least once per second of audio, so a file cut off by a crash is
/// still a valid WAV holding everything up to the last whole second.
pub struct StereoRecorder {
    writer: hound::WavWriter<BufWriter<File>>,
    path: PathBuf,
    frames_written: u64,
    frames_since_flush: u64,
    flush_interval: u64,
}

impl std::fmt::Debug for StereoRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoRecorder").field("path", &self.path).field("frames_written", &self.frames_written).finish_non_exhaustive()
    }
}

impl StereoRecorder {
    /// Creates (or truncates) `path` and writes a valid, empty stereo WAV header at `rate`.
    pub fn create(path: &Path, rate: SampleRate) -> Result<StereoRecorder, AudioError> {
        let spec = hound::WavSpec { channels: 2, sample_rate: rate.hz(), bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let write_error = |source| AudioError::WavWrite { path: path.to_path_buf(), source };
        let mut writer = hound::WavWriter::create(path, spec).map_err(write_error)?;
        writer.flush().map_err(write_error)?;
        Ok(StereoRecorder {
            writer,
            path: path.to_path_buf(),
            frames_written: 0,
            frames_since_flush: 0,
            flush_interval: u64::from(rate.hz()),
        })
    }

    /// Appends `max(left.len(), right.len())` frames, interleaving the two tracks; the shorter
    /// track is padded with silence. Fails without writing if the WAV size limit would be passed.
    pub fn write(&mut self, left: &[i16], right: &[i16]) -> Result<(), AudioError> {
        let frames = left.len().max(right.len());
        if self.frames_written.saturating_add(frames as u64) > MAX_RECORDING_FRAMES {
            return Err(AudioError::RecordingFull { path: self.path.clone(), max_frames: MAX_RECORDING_FRAMES });
        }
        for i in 0..frames {
            let l = left.get(i).copied().unwrap_or(0);
            let r = right.get(i).copied().unwrap_or(0);
            self.writer.write_sample(l).and_then(|()| self.writer.write_sample(r)).map_err(|e| self.write_error(e))?;
            self.frames_written += 1;
            self.frames_since_flush += 1;
            if self.frames_since_flush >= self.flush_interval {
                self.writer.flush().map_err(|e| self.write_error(e))?;
                self.frames_since_flush = 0;
            }
        }
        Ok(())
    }

    /// Frames (sample pairs) written so far.
    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    /// Finalises the header and closes the file; returns the frames (sample pairs) written.
    pub fn finish(self) -> Result<u64, AudioError> {
        let StereoRecorder { writer, path, frames_written, .. } = self;
        writer.finalize().map_err(|source| AudioError::WavWrite { path, source })?;
        Ok(frames_written)
    }

    fn write_error(&self, source: hound::Error) -> AudioError {
        AudioError::WavWrite { path: self.path.clone(), source }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // --- helpers -------------------------------------------------------------------------------

    fn sine(hz: f64, rate_hz: u32, len: usize, amplitude: f64) -> Vec<f32> {
        (0..len).map(|n| (amplitude * (TAU * hz * n as f64 / f64::from(rate_hz)).sin()) as f32).collect()
    }

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

    fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
    }

    fn temp_wav(name: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("callpipe-audio-{}-{n}-{name}.wav", std::process::id()))
    }

    fn spec(channels: u16, rate: u32, bits: u16, format: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: bits, sample_format: format }
    }

    fn wav_bytes_i16(spec: hound::WavSpec, samples: &[i16]) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

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

    // --- resampler -----------------------------------------------------------------------------

    #[test]
    fn audio_error_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<AudioError>();
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

    // --- WAV loading ---------------------------------------------------------------------------

    #[test]
    fn mono_16_bit_at_call_rate_loads_identically() {
        let samples: Vec<i16> = (0..1600).map(|n| ((n * 7919) % 65_536 - 32_768) as i16).chain([i16::MIN, i16::MAX, 0, -1, 1]).collect();
        let path = temp_wav("mono16");
        let mut writer = hound::WavWriter::create(&path, spec(1, 8_000, 16, hound::SampleFormat::Int)).unwrap();
        for &s in &samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        let loaded = load_wav(&path, SampleRate::Hz8000).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(loaded, samples);
    }

    #[test]
    fn stereo_float_44k1_mixes_down_and_resamples() {
        let path = temp_wav("stereo-float");
        let mut writer = hound::WavWriter::create(&path, spec(2, 44_100, 32, hound::SampleFormat::Float)).unwrap();
        let (left, right) = (sine(1000.0, 44_100, 44_100, 0.6), sine(1000.0, 44_100, 44_100, 0.2));
        for (&l, &r) in left.iter().zip(&right) {
            writer.write_sample(l).unwrap();
            writer.write_sample(r).unwrap();
        }
        writer.finalize().unwrap();
        let loaded = load_wav(&path, SampleRate::Hz16000).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(loaded.len(), 16_000);
        let expected_rms = 0.4 / 2_f64.sqrt() * I16_SCALE;
        let error_db = 20.0 * (rms(&loaded) / expected_rms).log10();
        assert!(error_db.abs() < 1.0, "RMS off by {error_db:.2} dB");
    }

    #[test]
    fn twenty_four_bit_loads_with_rounding_and_saturation() {
        let path = temp_wav("mono24");
        let mut writer = hound::WavWriter::create(&path, spec(1, 16_000, 24, hound::SampleFormat::Int)).unwrap();
        let samples: [i32; 6] = [0, 256 * 1000, -256 * 32_768, 8_388_607, 383, -385];
        for &s in &samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        let loaded = load_wav(&path, SampleRate::Hz16000).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(loaded, [0, 1000, -32_768, 32_767, 1, -2]);
    }

    #[test]
    fn thirty_two_bit_integer_loads() {
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec(1, 8_000, 32, hound::SampleFormat::Int)).unwrap();
        for s in [i32::MIN, 65_536 * 1234, i32::MAX] {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        assert_eq!(load_wav_bytes(cursor.get_ref(), SampleRate::Hz8000).unwrap(), [-32_768, 1234, 32_767]);
    }

    #[test]
    fn eight_bit_is_unsupported() {
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec(1, 8_000, 8, hound::SampleFormat::Int)).unwrap();
        writer.write_sample(5_i8).unwrap();
        writer.finalize().unwrap();
        let err = load_wav_bytes(cursor.get_ref(), SampleRate::Hz8000).unwrap_err();
        assert!(matches!(err, AudioError::UnsupportedFormat { bits: 8, .. }), "{err}");
    }

    #[test]
    fn empty_data_and_absurd_rates_are_errors() {
        let empty = wav_bytes_i16(spec(1, 8_000, 16, hound::SampleFormat::Int), &[]);
        assert!(matches!(load_wav_bytes(&empty, SampleRate::Hz8000), Err(AudioError::Empty)));
        let slow = wav_bytes_i16(spec(1, 10, 16, hound::SampleFormat::Int), &[1, 2, 3]);
        assert!(matches!(load_wav_bytes(&slow, SampleRate::Hz8000), Err(AudioError::UnsupportedRate { hz: 10 })));
    }

    #[test]
    fn missing_file_names_the_path() {
        let path = temp_wav("does-not-exist");
        let err = load_wav(&path, SampleRate::Hz8000).unwrap_err();
        assert!(matches!(&err, AudioError::WavRead { path: Some(p), .. } if *p == path));
        assert!(err.to_string().contains("does-not-exist"), "{err}");
    }

    #[test]
    fn garbage_bytes_are_errors() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(load_wav_bytes(&garbage, SampleRate::Hz8000).is_err());
        let mut riff = b"RIFF\xff\xff\xff\xffWAVE".to_vec();
        riff.extend_from_slice(&garbage);
        assert!(load_wav_bytes(&riff, SampleRate::Hz8000).is_err());
        assert!(load_wav_bytes(&[], SampleRate::Hz8000).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let valid = wav_bytes_i16(spec(2, 8_000, 16, hound::SampleFormat::Int), &[100, -100, 200, -200, 300, -300]);
        assert!(load_wav_bytes(&valid, SampleRate::Hz8000).is_ok());
        for cut in 0..valid.len() {
            assert!(load_wav_bytes(&valid[..cut], SampleRate::Hz8000).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn huge_length_claim_is_an_error_without_huge_allocation() {
        let mut bytes = wav_bytes_i16(spec(1, 8_000, 16, hound::SampleFormat::Int), &[1, 2, 3, 4]);
        let data = bytes.windows(4).position(|w| w == b"data").unwrap();
        bytes[data + 4..data + 8].copy_from_slice(&0xffff_fffe_u32.to_le_bytes());
        let err = load_wav_bytes(&bytes, SampleRate::Hz8000).unwrap_err();
        assert!(matches!(err, AudioError::WavRead { path: None, .. }), "{err}");
    }

    #[test]
    fn mutated_headers_never_panic() {
        let valid = wav_bytes_i16(spec(2, 16_000, 16, hound::SampleFormat::Int), &[7; 64]);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % 48) as usize;
                bytes[at] = next() as u8;
            }
            let _ = load_wav_bytes(&bytes, SampleRate::Hz8000);
        }
    }

    // --- tones ---------------------------------------------------------------------------------

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

    // --- recording -----------------------------------------------------------------------------

    #[test]
    fn recording_round_trips_and_pads_the_shorter_track() {
        let path = temp_wav("recording");
        let rate = SampleRate::Hz16000;
        let mut recorder = StereoRecorder::create(&path, rate).unwrap();
        let left: Vec<i16> = (0..320).map(|n| n * 3).collect();
        let right: Vec<i16> = (0..200).map(|n| -n).collect();
        recorder.write(&left, &right).unwrap();
        recorder.write(&[i16::MIN], &[i16::MAX, 42]).unwrap();
        assert_eq!(recorder.finish().unwrap(), 322);

        let mut reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        std::fs::remove_file(&path).ok();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 16_000, 16));
        let mut expected = Vec::new();
        for (i, &l) in left.iter().enumerate() {
            expected.extend([l, right.get(i).copied().unwrap_or(0)]);
        }
        expected.extend([i16::MIN, i16::MAX, 0, 42]);
        assert_eq!(samples, expected);
    }

    #[test]
    fn recording_cut_off_without_finish_is_still_readable() {
        let path = temp_wav("crash");
        let rate = SampleRate::Hz8000;
        let mut recorder = StereoRecorder::create(&path, rate).unwrap();
        let mut tone = Tone::new(440.0, -12.0, rate).unwrap();
        let mut frame = vec![0; rate.frame_samples()];
        for _ in 0..125 {
            tone.fill(&mut frame);
            recorder.write(&frame, &[]).unwrap();
        }
        assert_eq!(recorder.frames_written(), 20_000);
        // A crash: neither finish() nor hound's finalising Drop runs.
        std::mem::forget(recorder);

        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().channels, 2);
        let frames = reader.duration();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        std::fs::remove_file(&path).ok();
        assert!(frames >= 2 * rate.hz(), "only {frames} frames readable");
        let mut replay = Tone::new(440.0, -12.0, rate).unwrap();
        let mut expected = vec![0; frames as usize];
        replay.fill(&mut expected);
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        assert_eq!(left, expected);
        assert!(samples.iter().skip(1).step_by(2).all(|&s| s == 0));
    }

    #[test]
    fn recording_into_a_missing_directory_is_an_error() {
        let path = std::env::temp_dir().join("callpipe-audio-no-such-dir").join("x.wav");
        let err = StereoRecorder::create(&path, SampleRate::Hz8000).unwrap_err();
        assert!(matches!(err, AudioError::WavWrite { .. }), "{err}");
    }
}
