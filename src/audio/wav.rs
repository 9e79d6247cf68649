//! WAV reading: a prompt from any common WAV file, as mono 16-bit samples at a call's rate.
//!
//! [`load_wav`] reads mono or multi-channel WAV with 16-, 24- or 32-bit integer or 32-bit float
//! samples at [`MIN_WAV_RATE_HZ`] to [`MAX_WAV_RATE_HZ`], mixes channels down to mono by
//! averaging, resamples to the call rate ([`resample`]) and converts to `i16` with rounding and
//! saturation; a 16-bit mono file already at the call rate comes back sample for sample.
//! Malformed, truncated or unsupported data is an [`AudioError`], never a panic:
//! [`load_wav_bytes`] is safe to fuzz and never pre-allocates more than
//! [`MAX_PREALLOCATED_SAMPLES`] from a header's claim.

use std::io::Cursor;
use std::path::Path;

use super::{AudioError, resample, to_i16};
use crate::protocol::SampleRate;

/// The most samples [`load_wav_bytes`] reserves up front, whatever the WAV header claims (64 Mi).
///
/// A corrupt header can claim billions of samples; longer data is still read, growing as it goes.
pub const MAX_PREALLOCATED_SAMPLES: usize = 64 * 1024 * 1024;

/// The lowest WAV sample rate [`load_wav`] accepts, in Hz.
pub const MIN_WAV_RATE_HZ: u32 = 1_000;

/// The highest WAV sample rate [`load_wav`] accepts, in Hz.
pub const MAX_WAV_RATE_HZ: u32 = 768_000;

/// The scale between normalised samples (-1.0..1.0) and 16-bit samples when loading audio.
const I16_SCALE: f64 = 32_768.0;

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

fn read_error(source: hound::Error) -> AudioError {
    AudioError::WavRead { path: None, source }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audio::testing::{sine, temp_wav};

    fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
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
}
