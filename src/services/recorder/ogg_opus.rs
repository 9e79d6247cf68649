//! Ogg/Opus files for the recorder (the `opus` feature): Opus (RFC 6716) in Ogg (RFC 3533) as
//! RFC 7845 lays it out, written on the recorder's writer thread.
//!
//! * The encoder runs at the call's rate (8, 16 or 24 kHz, all Opus rates), one 20 ms packet
//!   per 20 ms of call audio, with libopus's `VOIP` application.
//! * `OpusHead` carries the channel count, the call's rate as the input sample rate and the
//!   pre-skip, the encoder's lookahead converted to 48 kHz. Granule positions count 48 kHz
//!   samples from the start of the decoded stream, pre-skip included (RFC 7845 §4).
//! * The two header packets each end their page, and [`OggOpusWriter::flush`] ends the current
//!   audio page and flushes the file: a file cut off after a flush holds whole pages with
//!   correct granule positions, which players read up to the last one.
//! * [`OggOpusWriter::finalize`] encodes enough silence to push the encoder's lookahead out,
//!   and sets the end-of-stream flag on the last page, whose granule position trims the
//!   decoded stream to exactly the audio written (end trimming, RFC 7845 §4.5).
//!
//! The last packet encoded is held back until the next one (or a flush) so that a page can be
//! ended on it: the `ogg` crate ends a page only with a packet.

use std::io::Write;

use ogg::{PacketWriteEndInfo, PacketWriter};

/// Granule positions count samples at 48 kHz (RFC 7845 §4).
const GRANULE_RATE: u64 = 48_000;

/// Frames per second: Opus packets are 20 ms, as the call's frames are.
const FRAMES_PER_SECOND: u32 = 50;

/// 48 kHz samples in one packet.
const FRAME_GRANULES: u64 = GRANULE_RATE / FRAMES_PER_SECOND as u64;

/// An upper bound for one encoded packet (the figure libopus's documentation recommends).
const MAX_PACKET: usize = 4000;

/// Why an Ogg/Opus stream could not be started or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpusFileError {
    /// Only mono and stereo are written.
    #[error("Opus recordings have 1 or 2 channels, not {0}")]
    Channels(u16),
    /// libopus refused the encoder's settings.
    #[error("cannot start the Opus encoder at {rate} Hz: {source}")]
    Encoder {
        /// The input rate.
        rate: u32,
        /// What libopus said.
        #[source]
        source: opus::Error,
    },
    /// The bitrate does not fit libopus's type.
    #[error("bitrate {0} is out of range")]
    Bitrate(u32),
    /// The encoder's lookahead does not make a pre-skip.
    #[error("the Opus encoder reports an odd lookahead ({0})")]
    Lookahead(i32),
    /// Encoding a frame failed.
    #[error("Opus encoding failed: {0}")]
    Encode(#[source] opus::Error),
    /// Writing the pages failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An Ogg/Opus stream being written to `W` (a file, in the recorder).
pub(super) struct OggOpusWriter<W: Write> {
    ogg: PacketWriter<'static, W>,
    encoder: opus::Encoder,
    serial: u32,
    rate: u32,
    channels: usize,
    pre_skip: u16,
    /// One 20 ms frame of interleaved samples, filled up to `filled`.
    frame: Vec<i16>,
    filled: usize,
    /// Scratch space for the encoder's output.
    packet: Vec<u8>,
    /// The last packet encoded and its granule position, not yet handed to the Ogg writer.
    held: Option<(Vec<u8>, u64)>,
    /// Packets encoded (each 20 ms).
    packets: u64,
    /// Samples per channel of call audio taken in.
    samples: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// Starts a stream at `rate` Hz with `channels` (1 or 2) at `bitrate` bits per second:
    /// creates the encoder, writes the two header pages to `out` and flushes it.
    pub(super) fn new(out: W, rate: u32, channels: u16, bitrate: u32, serial: u32) -> Result<OggOpusWriter<W>, OpusFileError> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => return Err(OpusFileError::Channels(n)),
        };
        let encoder_error = |source: opus::Error| OpusFileError::Encoder { rate, source };
        let mut encoder = opus::Encoder::new(rate, layout, opus::Application::Voip).map_err(encoder_error)?;
        let bits = i32::try_from(bitrate).map_err(|_| OpusFileError::Bitrate(bitrate))?;
        encoder.set_bitrate(opus::Bitrate::Bits(bits)).map_err(encoder_error)?;
        let lookahead = encoder.get_lookahead().map_err(encoder_error)?;
        let pre_skip = u64::try_from(lookahead).ok().map(|l| l * GRANULE_RATE / u64::from(rate)).and_then(|p| u16::try_from(p).ok());
        let pre_skip = pre_skip.ok_or(OpusFileError::Lookahead(lookahead))?;
        let frame_len = (rate / FRAMES_PER_SECOND) as usize * usize::from(channels);
        let mut writer = OggOpusWriter {
            ogg: PacketWriter::new(out),
            encoder,
            serial,
            rate,
            channels: usize::from(channels),
            pre_skip,
            frame: vec![0; frame_len],
            filled: 0,
            packet: vec![0; MAX_PACKET],
            held: None,
            packets: 0,
            samples: 0,
        };
        let head = opus_head(channels, pre_skip, rate);
        let tags = opus_tags(opus::version(), &[&format!("ENCODER=callpipe {}", env!("CARGO_PKG_VERSION"))]);
        // Each header packet alone on its page (RFC 7845 §3), both at granule position 0.
        writer.ogg.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        writer.ogg.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        writer.ogg.inner_mut().flush()?;
        Ok(writer)
    }

    /// The pre-skip written to `OpusHead`, in 48 kHz samples.
    #[cfg(test)]
    pub(super) fn pre_skip(&self) -> u16 {
        self.pre_skip
    }

    /// Takes interleaved samples (any count; whole sample pairs for stereo) and encodes every
    /// 20 ms frame completed.
    pub(super) fn write(&mut self, mut samples: &[i16]) -> Result<(), OpusFileError> {
        while !samples.is_empty() {
            let n = samples.len().min(self.frame.len() - self.filled);
            self.frame[self.filled..self.filled + n].copy_from_slice(&samples[..n]);
            self.filled += n;
            self.samples += (n / self.channels) as u64;
            samples = &samples[n..];
            if self.filled == self.frame.len() {
                self.encode_frame()?;
            }
        }
        Ok(())
    }

    /// Ends the current page (when it holds a packet) and flushes the output.
    pub(super) fn flush(&mut self) -> Result<(), OpusFileError> {
        if let Some((packet, granule)) = self.held.take() {
            self.ogg.write_packet(packet, self.serial, PacketWriteEndInfo::EndPage, granule)?;
        }
        Ok(self.ogg.inner_mut().flush()?)
    }

    /// Ends the stream: encodes the last partial frame (padded with silence) and enough silence
    /// to cover the encoder's lookahead, writes the last page with the end-of-stream flag and
    /// a granule position that trims the decoded stream to the audio taken in, and flushes.
    /// Returns the output.
    pub(super) fn finalize(mut self) -> Result<W, OpusFileError> {
        let end = u64::from(self.pre_skip) + self.samples * GRANULE_RATE / u64::from(self.rate);
        while self.filled > 0 || self.packets * FRAME_GRANULES < end {
            self.frame[self.filled..].fill(0);
            self.filled = self.frame.len();
            self.encode_frame()?;
        }
        if let Some((packet, _)) = self.held.take() {
            self.ogg.write_packet(packet, self.serial, PacketWriteEndInfo::EndStream, end)?;
        }
        let mut out = self.ogg.into_inner();
        out.flush()?;
        Ok(out)
    }

    /// Encodes the full frame, writes the packet held back so far and holds this one.
    fn encode_frame(&mut self) -> Result<(), OpusFileError> {
        let len = self.encoder.encode(&self.frame, &mut self.packet).map_err(OpusFileError::Encode)?;
        self.filled = 0;
        self.packets += 1;
        let granule = self.packets * FRAME_GRANULES;
        if let Some((packet, granule)) = self.held.replace((self.packet[..len].to_vec(), granule)) {
            self.ogg.write_packet(packet, self.serial, PacketWriteEndInfo::NormalPacket, granule)?;
        }
        Ok(())
    }
}

/// The identification header (RFC 7845 §5.1), channel mapping family 0.
fn opus_head(channels: u16, pre_skip: u16, rate: u32) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(channels as u8); // 1 or 2, checked by the caller
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&rate.to_le_bytes()); // the input sample rate, for information
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // mapping family 0: mono, or stereo left then right
    head
}

/// The comment header (RFC 7845 §5.2).
fn opus_tags(vendor: &str, comments: &[&str]) -> Vec<u8> {
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor.as_bytes());
    tags.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for comment in comments {
        tags.extend_from_slice(&(comment.len() as u32).to_le_bytes());
        tags.extend_from_slice(comment.as_bytes());
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts `room` bytes, then fails every write.
    struct Full {
        room: usize,
        taken: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_headers_follow_rfc_7845() {
        let head = opus_head(2, 312, 16_000);
        assert_eq!(head, [b"OpusHead".as_slice(), &[1, 2, 0x38, 0x01, 0x80, 0x3e, 0, 0, 0, 0, 0]].concat());
        let tags = opus_tags("v", &["A=b"]);
        assert_eq!(tags, [b"OpusTags".as_slice(), &[1, 0, 0, 0, b'v', 1, 0, 0, 0, 3, 0, 0, 0, b'A', b'=', b'b']].concat());
    }

    #[test]
    fn a_full_output_is_an_error_not_a_panic() {
        // Room for the headers, not for the first second of audio.
        let mut writer = OggOpusWriter::new(Full { room: 200, taken: Vec::new() }, 8000, 1, 24_000, 7).unwrap();
        let second = vec![1000i16; 8000];
        let result = writer.write(&second).and_then(|()| writer.flush());
        assert!(result.unwrap_err().to_string().contains("no space left"));
        // Finalizing after the error reports an error as well.
        let mut writer = OggOpusWriter::new(Full { room: 200, taken: Vec::new() }, 8000, 1, 24_000, 7).unwrap();
        writer.write(&second).unwrap();
        assert!(writer.finalize().is_err());
        assert!(OggOpusWriter::new(Full { room: 10, taken: Vec::new() }, 8000, 1, 24_000, 7).is_err(), "headers do not fit");
    }

    #[test]
    fn an_empty_stream_is_a_whole_file() {
        // A call that ended before its first frame: headers, then one page with the end of the
        // stream, trimmed to nothing (granule position = pre-skip).
        let writer = OggOpusWriter::new(Vec::new(), 16_000, 2, 48_000, 9).unwrap();
        let bytes = writer.finalize().unwrap();
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes));
        assert!(reader.read_packet_expected().unwrap().data.starts_with(b"OpusHead"));
        assert!(reader.read_packet_expected().unwrap().data.starts_with(b"OpusTags"));
        let last = reader.read_packet_expected().unwrap();
        assert!(last.last_in_stream() && last.stream_serial() == 9);
        assert_eq!(last.absgp_page(), 312);
        assert!(reader.read_packet().unwrap().is_none());
    }

    #[test]
    fn bad_parameters_are_errors() {
        let out = || Full { room: usize::MAX, taken: Vec::new() };
        assert!(OggOpusWriter::new(out(), 8000, 3, 24_000, 1).is_err());
        assert!(OggOpusWriter::new(out(), 44_100, 1, 24_000, 1).is_err());
        assert!(OggOpusWriter::new(out(), 8000, 1, u32::MAX, 1).is_err());
        let writer = OggOpusWriter::new(out(), 24_000, 1, 24_000, 1).unwrap();
        assert_eq!(writer.pre_skip(), 312, "libopus's 6.5 ms lookahead at 48 kHz");
        assert!(writer.finalize().unwrap().taken.starts_with(b"OggS"));
    }
}
