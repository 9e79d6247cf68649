//! Audio format arithmetic: sample rates, 20 ms frames and the little-endian L16 codec.
//!
//! docs/protocol.md section 3: every frame, in both directions, is 20 ms of 16-bit signed
//! little-endian mono PCM: 320 bytes at 8 kHz, 640 at 16 kHz, 960 at 24 kHz.

use std::fmt;
use std::time::Duration;

/// The duration of one frame on the wire: always 20 ms (docs/protocol.md section 3).
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// Frames per second at the fixed 20 ms frame duration.
pub const FRAMES_PER_SECOND: u32 = 50;

/// Bytes per sample of L16 audio.
pub const BYTES_PER_SAMPLE: usize = 2;

/// The largest frame any supported rate produces, in samples (24 kHz).
pub const MAX_FRAME_SAMPLES: usize = 480;

/// The largest frame any supported rate produces, in bytes (24 kHz).
pub const MAX_FRAME_BYTES: usize = MAX_FRAME_SAMPLES * BYTES_PER_SAMPLE;

/// A sample rate the platform can negotiate in `audio/l16;rate=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleRate {
    /// 8 kHz narrowband.
    Hz8000,
    /// 16 kHz wideband.
    Hz16000,
    /// 24 kHz (added to the platform SDKs in 2026).
    Hz24000,
}

impl SampleRate {
    /// Every supported rate, lowest first.
    pub const ALL: [SampleRate; 3] = [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000];

    /// Maps a rate in Hz to a supported rate, if it is one.
    pub fn from_hz(hz: u32) -> Option<SampleRate> {
        match hz {
            8000 => Some(SampleRate::Hz8000),
            16000 => Some(SampleRate::Hz16000),
            24000 => Some(SampleRate::Hz24000),
            _ => None,
        }
    }

    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        match self {
            SampleRate::Hz8000 => 8000,
            SampleRate::Hz16000 => 16000,
            SampleRate::Hz24000 => 24000,
        }
    }

    /// Samples in one 20 ms frame: 160, 320 or 480.
    pub const fn frame_samples(self) -> usize {
        (self.hz() / FRAMES_PER_SECOND) as usize
    }

    /// Bytes in one 20 ms frame on the wire: 320, 640 or 960.
    pub const fn frame_bytes(self) -> usize {
        self.frame_samples() * BYTES_PER_SAMPLE
    }

    /// The content type callpipe writes for this rate: `audio/l16;rate=N`.
    pub fn content_type(self) -> &'static str {
        match self {
            SampleRate::Hz8000 => "audio/l16;rate=8000",
            SampleRate::Hz16000 => "audio/l16;rate=16000",
            SampleRate::Hz24000 => "audio/l16;rate=24000",
        }
    }

    /// The duration of `samples` samples at this rate.
    pub fn duration_of(self, samples: u64) -> Duration {
        Duration::from_nanos(samples.saturating_mul(1_000_000_000) / u64::from(self.hz()))
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.hz())
    }
}

/// Decodes little-endian L16 bytes into samples. Decodes `min(bytes.len() / 2, out.len())`
/// samples and returns that count; a trailing odd byte is ignored.
pub fn decode_l16(bytes: &[u8], out: &mut [i16]) -> usize {
    let n = (bytes.len() / BYTES_PER_SAMPLE).min(out.len());
    for (sample, pair) in out[..n].iter_mut().zip(bytes.chunks_exact(BYTES_PER_SAMPLE)) {
        *sample = i16::from_le_bytes([pair[0], pair[1]]);
    }
    n
}

/// Encodes samples as little-endian L16 bytes. Encodes `min(samples.len(), out.len() / 2)`
/// samples and returns the number of bytes written.
pub fn encode_l16(samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len() / BYTES_PER_SAMPLE);
    for (pair, sample) in out.chunks_exact_mut(BYTES_PER_SAMPLE).zip(&samples[..n]) {
        pair.copy_from_slice(&sample.to_le_bytes());
    }
    n * BYTES_PER_SAMPLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_match_the_protocol() {
        assert_eq!(SampleRate::Hz8000.frame_bytes(), 320);
        assert_eq!(SampleRate::Hz16000.frame_bytes(), 640);
        assert_eq!(SampleRate::Hz24000.frame_bytes(), 960);
        assert_eq!(SampleRate::Hz24000.frame_samples(), MAX_FRAME_SAMPLES);
        for rate in SampleRate::ALL {
            assert_eq!(rate.duration_of(rate.frame_samples() as u64), FRAME_DURATION);
            assert_eq!(SampleRate::from_hz(rate.hz()), Some(rate));
        }
        assert_eq!(SampleRate::from_hz(44100), None);
    }

    #[test]
    fn l16_is_little_endian() {
        let bytes = [0x01, 0x00, 0xff, 0x7f, 0x00, 0x80, 0xff, 0xff, 0xaa];
        let mut samples = [0i16; 8];
        assert_eq!(decode_l16(&bytes, &mut samples), 4);
        assert_eq!(&samples[..4], &[1, i16::MAX, i16::MIN, -1]);
        let mut back = [0u8; 8];
        assert_eq!(encode_l16(&samples[..4], &mut back), 8);
        assert_eq!(&back, &bytes[..8]);
    }
}
