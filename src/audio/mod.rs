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
//! `wav` reads WAV data, `resampler` converts a whole signal's rate, `tone` and `dtmf` synthesise
//! (`dtmf` is the one DTMF generator: the `dtmf_send` processor's and the emulator's), `playback`
//! plays decoded audio into frames, `recorder` writes the two-track recording. Every error is an
//! [`AudioError`].
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
//!   without clicks: filling 160 samples twice equals filling 320 once. A [`DtmfTone`] is
//!   sample-exact (a function of the sample index, which [`DtmfTone::seek`] can set) and has
//!   1 ms raised-cosine edges; it allocates nothing.
//! - [`StereoRecorder`] rewrites the WAV header at least once per second of audio, so a recording
//!   cut off by a crash still opens and holds everything up to the last whole second.

use std::path::{Path, PathBuf};

mod dtmf;
mod playback;
mod recorder;
mod resampler;
mod tone;
mod wav;

pub use dtmf::{DTMF_EDGE_MS, DTMF_LEVEL_DBFS, DtmfTone, MAX_KEYS, dtmf_frequencies, render_keys};
pub use playback::{Blend, Playback, Played};
pub use recorder::StereoRecorder;
pub use resampler::{RESAMPLER_CUTOFF, RESAMPLER_ZERO_CROSSINGS, StreamResampler, resample};
pub use tone::Tone;
pub use wav::{MAX_PREALLOCATED_SAMPLES, MAX_WAV_RATE_HZ, MIN_WAV_RATE_HZ, check_wav, load_wav, load_wav_bytes};

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

/// Rounds to the nearest 16-bit sample, saturating at the limits (NaN becomes 0).
fn to_i16(value: f64) -> i16 {
    value.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_error_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<AudioError>();
    }
}
