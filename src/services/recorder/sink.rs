//! One recording file as the writer thread holds it: a WAV (through `hound`) or, with the `opus`
//! feature, an Ogg/Opus stream (`ogg_opus.rs`), over a file that counts the bytes written.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "opus")]
use super::ogg_opus;
use super::{FileSpec, RecordError, RecordFormat, SinkError};

type Wav = hound::WavWriter<BufWriter<CountedFile>>;

/// A recording file that adds the bytes written to it to its recorder's byte counter.
#[derive(Debug)]
pub(super) struct CountedFile {
    file: File,
    bytes: Arc<AtomicU64>,
}

impl Write for CountedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for CountedFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// An open recording file.
pub(super) enum Sink {
    Wav(Wav),
    #[cfg(feature = "opus")]
    Opus(Box<ogg_opus::OggOpusWriter<BufWriter<CountedFile>>>),
}

impl Sink {
    /// Creates `spec`'s file with `open` and writes its headers (on the preparing thread, where
    /// file I/O is allowed), counting the bytes in `bytes`. A file that was created but whose headers
    /// could not be written (a full disk) is removed again: it would be empty or cut inside the
    /// header, which no player opens, and the error event already says what happened.
    pub(super) fn create_with(
        spec: &FileSpec,
        bytes: &Arc<AtomicU64>,
        open: impl FnOnce(&Path) -> std::io::Result<File>,
    ) -> Result<Sink, RecordError> {
        let path = spec.path.as_path();
        let cannot = |source: SinkError| RecordError::Create { path: path.to_owned(), source };
        if !spec.format.is_available() {
            return Err(RecordError::OpusMissing);
        }
        let file = open(path).map_err(|e| cannot(e.into()))?;
        let file = BufWriter::new(CountedFile { file, bytes: bytes.clone() });
        let started = match spec.format {
            RecordFormat::Wav => {
                let wav = hound::WavSpec {
                    channels: spec.channels,
                    sample_rate: spec.rate,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                };
                hound::WavWriter::new(file, wav).and_then(|mut w| w.flush().map(|()| Sink::Wav(w))).map_err(|e| cannot(e.into()))
            }
            #[cfg(feature = "opus")]
            RecordFormat::Opus => ogg_opus::OggOpusWriter::new(file, spec.rate, spec.channels, spec.opus_bitrate, stream_serial(path))
                .map(|w| Sink::Opus(Box::new(w)))
                .map_err(|e| cannot(e.into())),
            #[cfg(not(feature = "opus"))]
            RecordFormat::Opus => Err(RecordError::OpusMissing),
        };
        if started.is_err() {
            discard(path);
        }
        started
    }

    /// Writes interleaved samples (whole frames of channels).
    pub(super) fn write(&mut self, samples: &[i16]) -> Result<(), SinkError> {
        match self {
            Sink::Wav(wav) => Ok(write_all(wav, samples)?),
            #[cfg(feature = "opus")]
            Sink::Opus(opus) => Ok(opus.write(samples)?),
        }
    }

    /// Makes what was written so far readable: rewrites the WAV header, or ends the Ogg page;
    /// then flushes the file.
    pub(super) fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Wav(wav) => Ok(wav.flush()?),
            #[cfg(feature = "opus")]
            Sink::Opus(opus) => Ok(opus.flush()?),
        }
    }

    /// Completes the file: the final WAV header, or the Ogg end-of-stream page.
    pub(super) fn finalize(self) -> Result<(), SinkError> {
        match self {
            Sink::Wav(wav) => Ok(wav.finalize()?),
            #[cfg(feature = "opus")]
            Sink::Opus(opus) => Ok(opus.finalize().map(drop)?),
        }
    }
}

/// Writes `samples` (whole interleaved frames) to `wav`.
fn write_all(wav: &mut Wav, samples: &[i16]) -> Result<(), hound::Error> {
    let mut writer = wav.get_i16_writer(samples.len() as u32);
    for s in samples {
        writer.write_sample(*s);
    }
    writer.flush()
}

/// Removes a recording file that could not be started. Only a regular file: a symbolic link or a
/// device at the path stays as it was.
fn discard(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// A serial number for a new Ogg stream: random (std's hasher keys are), mixed with the path.
#[cfg(feature = "opus")]
fn stream_serial(path: &Path) -> u32 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    path.hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    hasher.finish() as u32
}
