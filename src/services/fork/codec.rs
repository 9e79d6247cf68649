//! What a fork's binary messages carry: L16, or Opus (the `opus` cargo feature).
//!
//! * **L16**: the frame's samples, 16-bit little-endian, interleaved when stereo.
//! * **Opus** (RFC 6716): exactly one raw Opus packet per message (no Ogg, no length prefix),
//!   encoding `frame_ms` of audio (10, 20, 40 and 60 ms are all Opus frame sizes) at the fork's
//!   `rate` (8, 16, 24 and 48 kHz are all Opus rates), mono or stereo as the fork sends,
//!   libopus's `VOIP` application at `bitrate`. A decoder at that rate gets exactly `frame_ms`
//!   of samples per packet; its output lags the input by the encoder's lookahead (6.5 ms at
//!   libopus's defaults). The encoder starts afresh on every connection, so each connection is
//!   a stream of its own.
//!
//! Encoding runs on the fork's task, on the fork runtime, never on the media thread: the media
//! thread hands over L16 samples only.

#[cfg(feature = "opus")]
use super::FRAME_MS;
use crate::services::recorder::OPUS_FEATURE_MISSING;

/// Why an encoder could not be started, or a frame not encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// `codec = "opus"` in a build without the `opus` feature.
    #[error("{}", OPUS_FEATURE_MISSING)]
    OpusMissing,
    /// Opus forks send mono or stereo.
    #[error("Opus forks send 1 or 2 channels, not {0}")]
    Channels(usize),
    /// Opus frames are 10, 20, 40 or 60 ms.
    #[error("Opus frames are 10, 20, 40 or 60 ms, not {0}")]
    FrameMs(u32),
    /// The bitrate does not fit libopus's integer.
    #[error("bitrate {0} is out of range")]
    Bitrate(u32),
    /// libopus refused the settings.
    #[cfg(feature = "opus")]
    #[error("cannot start the Opus encoder at {rate} Hz: {source}")]
    Start {
        /// The rate asked for.
        rate: u32,
        /// libopus's error.
        #[source]
        source: opus::Error,
    },
    /// libopus could not encode a frame.
    #[cfg(feature = "opus")]
    #[error("Opus encoding failed: {0}")]
    Encode(#[source] opus::Error),
}

/// The codec of a fork's binary messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkCodec {
    /// 16-bit little-endian linear PCM.
    #[default]
    L16,
    /// One raw Opus packet per message (needs the `opus` feature).
    Opus,
}

impl ForkCodec {
    /// Parses `"l16"` or `"opus"`.
    pub fn parse(text: &str) -> Option<ForkCodec> {
        match text {
            "l16" => Some(ForkCodec::L16),
            "opus" => Some(ForkCodec::Opus),
            _ => None,
        }
    }

    /// The name, as parsed and as the `{codec}` template variable gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            ForkCodec::L16 => "l16",
            ForkCodec::Opus => "opus",
        }
    }
}

/// The default Opus bitrate per channel, in bits per second.
pub const DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL: u32 = 24_000;

/// Turns each frame of samples into a binary message's payload, on the fork's task.
pub enum Encoder {
    /// Samples as little-endian bytes.
    L16,
    /// One Opus packet per frame.
    #[cfg(feature = "opus")]
    Opus(Box<ForkOpusEncoder>),
}

impl Encoder {
    /// An encoder for frames of `frame_ms` at `rate` Hz with `channels` (1 or 2).
    pub fn new(codec: ForkCodec, rate: u32, channels: usize, frame_ms: u32, bitrate: u32) -> Result<Encoder, CodecError> {
        let _ = (rate, channels, frame_ms, bitrate);
        match codec {
            ForkCodec::L16 => Ok(Encoder::L16),
            #[cfg(feature = "opus")]
            ForkCodec::Opus => Ok(Encoder::Opus(Box::new(ForkOpusEncoder::new(rate, channels, frame_ms, bitrate)?))),
            #[cfg(not(feature = "opus"))]
            ForkCodec::Opus => Err(CodecError::OpusMissing),
        }
    }

    /// The payload for one frame.
    pub(super) fn encode(&mut self, samples: &[i16]) -> Result<Vec<u8>, CodecError> {
        match self {
            Encoder::L16 => Ok(samples.iter().flat_map(|s| s.to_le_bytes()).collect()),
            #[cfg(feature = "opus")]
            Encoder::Opus(opus) => opus.encode(samples).map(<[u8]>::to_vec).map_err(CodecError::Encode),
        }
    }

    /// Starts a new stream (a new connection).
    pub(super) fn reset(&mut self) {
        match self {
            Encoder::L16 => {}
            #[cfg(feature = "opus")]
            Encoder::Opus(opus) => opus.reset(),
        }
    }
}

/// The largest Opus packet the encoder may write (libopus's recommended bound).
#[cfg(feature = "opus")]
const MAX_PACKET: usize = 4000;

/// A fork's Opus encoder: one raw packet per frame of `frame_ms`. Public for the benchmarks.
#[cfg(feature = "opus")]
pub struct ForkOpusEncoder {
    encoder: opus::Encoder,
    /// Interleaved samples per frame.
    frame: usize,
    packet: Vec<u8>,
}

#[cfg(feature = "opus")]
impl ForkOpusEncoder {
    /// An encoder at `rate` Hz (8000, 16000, 24000 or 48000) with `channels` (1 or 2), for frames
    /// of `frame_ms` (10, 20, 40 or 60), at `bitrate` bits per second in all.
    pub fn new(rate: u32, channels: usize, frame_ms: u32, bitrate: u32) -> Result<ForkOpusEncoder, CodecError> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => return Err(CodecError::Channels(n)),
        };
        if !FRAME_MS.contains(&frame_ms) {
            return Err(CodecError::FrameMs(frame_ms));
        }
        let error = |source: opus::Error| CodecError::Start { rate, source };
        let mut encoder = opus::Encoder::new(rate, layout, opus::Application::Voip).map_err(error)?;
        let bits = i32::try_from(bitrate).map_err(|_| CodecError::Bitrate(bitrate))?;
        encoder.set_bitrate(opus::Bitrate::Bits(bits)).map_err(error)?;
        let frame = (rate * frame_ms / 1000) as usize * channels;
        Ok(ForkOpusEncoder { encoder, frame, packet: vec![0; MAX_PACKET] })
    }

    /// Interleaved samples per frame.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Encodes one frame of [`frame_len`](Self::frame_len) interleaved samples into a packet.
    pub fn encode(&mut self, samples: &[i16]) -> Result<&[u8], opus::Error> {
        let n = self.encoder.encode(samples, &mut self.packet)?;
        Ok(&self.packet[..n])
    }

    /// Forgets the stream so far: the next packet starts a new stream.
    pub fn reset(&mut self) {
        // Resetting an encoder that was created fine cannot fail in libopus; should it, the
        // next packets continue the old stream, which decoders accept.
        let _ = self.encoder.reset_state();
    }
}

#[cfg(feature = "opus")]
impl std::fmt::Debug for ForkOpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkOpusEncoder").field("frame", &self.frame).finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "opus"))]
mod tests {
    use super::*;

    #[test]
    fn every_rate_and_frame_size_makes_packets_that_decode_to_one_frame() {
        for rate in [8000, 16000, 24000, 48000] {
            for frame_ms in FRAME_MS {
                for channels in [1, 2] {
                    let mut encoder = ForkOpusEncoder::new(rate, channels, frame_ms, 24_000 * channels as u32).unwrap();
                    let layout = if channels == 2 { opus::Channels::Stereo } else { opus::Channels::Mono };
                    let mut decoder = opus::Decoder::new(rate, layout).unwrap();
                    let samples: Vec<i16> = (0..encoder.frame_len()).map(|i| ((i * 37) % 2000) as i16 - 1000).collect();
                    let mut out = vec![0i16; 5760 * 2];
                    for _ in 0..3 {
                        let packet = encoder.encode(&samples).unwrap().to_vec();
                        let decoded = decoder.decode(&packet, &mut out, false).unwrap();
                        assert_eq!(decoded, (rate * frame_ms / 1000) as usize, "{rate} Hz {frame_ms} ms {channels} ch");
                    }
                }
            }
        }
        assert!(ForkOpusEncoder::new(8000, 3, 20, 24_000).is_err());
        assert!(ForkOpusEncoder::new(8000, 1, 30, 24_000).is_err());
        assert!(ForkOpusEncoder::new(11_025, 1, 20, 24_000).is_err());
    }
}
