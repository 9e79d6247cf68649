//! The recorder service: one writer thread that owns every recording file of a server.
//!
//! A recorder on a media thread (the `record` processor, a conference's mix and its members'
//! tracks) asks [`Recorder::open`], off the media thread, for a [`Recording`]: the file is
//! created and its header written there, and the recording's other end (a ring of
//! [`RING_SECONDS`] of audio) goes to the writer thread, started with the first recording and
//! named `callpipe-recorder`. On the media thread, [`Recording::push`] only copies samples into
//! the ring; a full ring drops and counts them and never waits, but for the frames of a burst
//! (a stall's backlog caught up back to back), which go into a spill of their own, up to
//! [`SPILL_SECONDS`]. [`Recording::stop`] sets a flag (and hands the writer what a spill still
//! holds). Every [`POLL_INTERVAL`] the writer drains each ring into its file (WAV, or
//! Ogg/Opus with the `opus` feature: `ogg_opus.rs`), rewrites the WAV header (or ends the Ogg
//! page) once per second of audio, so a file cut off by a crash stays readable, and finalizes
//! the recordings that were stopped, reporting each on its [`RecordingOutcome`] channel.
//!
//! The recorder keeps a ledger of the files not yet final ([`Recorder::in_progress`],
//! [`Recorder::wait`]) and counts the bytes written ([`Recorder::bytes_written`]). Everything
//! is per [`Recorder`]: two servers in one process (or two tests) share nothing.

mod format;
mod sink;
mod writer;

#[cfg(feature = "opus")]
mod ogg_opus;
#[cfg(feature = "opus")]
pub use ogg_opus::OpusFileError;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::Duration;

use ringbuf::{HeapProd, HeapRb, traits::*};

pub use crate::call::RecordingOutcome;
pub use format::{
    DEFAULT_OPUS_BITRATE_PER_CHANNEL, DEFAULT_OPUS_TEMPLATE, DEFAULT_TEMPLATE, OPUS_BITRATES, OPUS_FEATURE_MISSING, RecordFormat,
};
use sink::Sink;
use writer::Writer;

/// Seconds of audio each recording's ring holds.
pub const RING_SECONDS: usize = 2;

/// Seconds of audio a recording keeps on the media thread, beyond its ring, when a burst fills
/// the ring faster than the writer drains it: the backlog of a network stall is caught up in
/// one go (every frame of it, back to back), and a stall longer than the ring's 2 s would
/// otherwise lose the recording's frames beyond them. The spill starts only in a burst (never
/// in the steady state, where a full ring means a writer that cannot keep up), is handed to the
/// ring before anything newer, gives its memory back once empty, and past this bound drops and
/// counts as a full ring does.
pub const SPILL_SECONDS: usize = 30;

/// How often the writer thread drains the rings.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The file to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The file; its directory is created if missing.
    pub path: PathBuf,
    /// The format.
    pub format: RecordFormat,
    /// Interleaved channels: 1 or 2.
    pub channels: u16,
    /// Samples per second per channel.
    pub rate: u32,
    /// The Opus bitrate for the whole stream, in bits per second (ignored for WAV).
    pub opus_bitrate: u32,
}

/// Why a recording could not be started, or stopped early. The server reports it in the
/// `recording` event's `error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The file or its directory could not be created, or the file's header not written.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// Writing, flushing or completing the file failed.
    #[error("{action} failed: {source}")]
    Write {
        /// `write`, `flush` or `finalize`.
        action: &'static str,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// `format = "opus"` in a build without the `opus` feature.
    #[error("{}", OPUS_FEATURE_MISSING)]
    OpusMissing,
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    WriterStart(String),
    /// The writer thread has stopped.
    #[error("the writer thread has stopped")]
    WriterStopped,
}

/// What the file layer reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The file system.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The WAV writer.
    #[error(transparent)]
    Wav(#[from] hound::Error),
    /// The Ogg/Opus writer.
    #[cfg(feature = "opus")]
    #[error(transparent)]
    Opus(#[from] ogg_opus::OpusFileError),
}

/// State shared by a recording's two ends.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    dropped: AtomicU64,
    /// The writer's first error, set once; the media thread reads it without a lock.
    failed: OnceLock<String>,
    /// What the recording's spill still held when it stopped, for the writer to write after
    /// the ring. Locked once by each side, at the recording's end.
    tail: Mutex<VecDeque<i16>>,
}

impl Shared {
    fn tail(&self) -> MutexGuard<'_, VecDeque<i16>> {
        self.tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The files handed to the writer thread and not yet final. Locked when a recording is opened,
/// when it is finalized (on the writer thread) and when someone asks; never on a media thread.
#[derive(Debug, Default)]
struct Ledger {
    paths: Mutex<Vec<PathBuf>>,
}

impl Ledger {
    fn paths(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.paths.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self, path: &Path) {
        self.paths().push(path.to_owned());
    }

    fn close(&self, path: &Path) {
        let mut paths = self.paths();
        if let Some(i) = paths.iter().position(|p| p == path) {
            paths.swap_remove(i);
        }
    }
}

/// A server's recording files and the thread that writes them. Cloning is cheap and shares
/// them; the writer thread ends once every clone is gone and the last file is final.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    writer: OnceLock<Result<mpsc::Sender<Writer>, String>>,
    ledger: Arc<Ledger>,
    bytes: Arc<AtomicU64>,
}

impl Recorder {
    /// A recorder with no files; its writer thread starts with the first [`Recorder::open`].
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Creates `spec`'s file (and its directory) and writes its header, then hands the file to
    /// the writer thread. The writer reports the finalized file on `outcomes`. Call it off the
    /// media thread: it touches the file system, locks and allocates.
    pub fn open(&self, spec: FileSpec, outcomes: mpsc::Sender<RecordingOutcome>) -> Result<Recording, RecordError> {
        self.open_with(spec, outcomes, |p| std::fs::File::create(p))
    }

    /// [`Recorder::open`] with the file opened by `open`.
    fn open_with(
        &self,
        spec: FileSpec,
        outcomes: mpsc::Sender<RecordingOutcome>,
        open: impl FnOnce(&Path) -> std::io::Result<std::fs::File>,
    ) -> Result<Recording, RecordError> {
        if let Some(dir) = spec.path.parent()
            && !dir.as_os_str().is_empty()
            && let Err(err) = std::fs::create_dir_all(dir)
        {
            return Err(RecordError::Create { path: dir.to_owned(), source: err.into() });
        }
        let sink = Sink::create_with(&spec, &self.inner.bytes, open)?;
        let per_second = spec.rate as usize * usize::from(spec.channels);
        let (producer, consumer) = HeapRb::<i16>::new(per_second * RING_SECONDS).split();
        let shared = Arc::<Shared>::default();
        let path = spec.path;
        self.hand_over(Writer {
            sink: Some(sink),
            path: path.clone(),
            channels: spec.channels,
            rate: spec.rate,
            consumer,
            shared: shared.clone(),
            outcomes,
        })?;
        let spill_max = per_second * SPILL_SECONDS;
        Ok(Recording {
            path,
            producer,
            shared,
            channels: usize::from(spec.channels),
            pushed: 0,
            stopped: false,
            spill: VecDeque::new(),
            spill_max,
        })
    }

    /// Hands a recording to the writer thread, starting it on first use.
    fn hand_over(&self, writer: Writer) -> Result<(), RecordError> {
        let sender = self.inner.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let ledger = self.inner.ledger.clone();
            std::thread::Builder::new()
                .name("callpipe-recorder".into())
                .spawn(move || writer::write_recordings(rx, ledger))
                .map(|_| tx)
                .map_err(|err| err.to_string())
        });
        let sender = match sender {
            Ok(sender) => sender,
            Err(err) => return Err(RecordError::WriterStart(err.clone())),
        };
        let path = writer.path.clone();
        self.inner.ledger.add(&path);
        sender.send(writer).map_err(|_| {
            self.inner.ledger.close(&path);
            RecordError::WriterStopped
        })
    }

    /// Whether the recording to `path` is still being written: its call may have ended (and its
    /// `recording` `finished` event gone out) a poll interval or two before the writer thread
    /// finalizes the file. A webhook that points at the file waits for this to turn false.
    pub fn in_progress(&self, path: &Path) -> bool {
        self.inner.ledger.paths().iter().any(|p| p == path)
    }

    /// Waits up to `timeout` for the writer thread to finalize every recording that was
    /// stopped (it does so within a poll interval or two). A process that exits right after
    /// its calls end, as `callpipe serve` does after a graceful shutdown, calls this first, or
    /// the last files could lose their final header update (WAV) or end-of-stream page
    /// (Ogg/Opus). Returns whether none was left open; recordings still running keep it
    /// waiting.
    pub fn wait(&self, timeout: Duration) -> bool {
        super::poll_until(timeout, POLL_INTERVAL / 4, || self.inner.ledger.paths().is_empty())
    }

    /// Bytes written to this recorder's files so far: headers, audio, and header rewrites (a
    /// WAV header is rewritten once per second, so the total exceeds the files' sizes by a few
    /// bytes per second of audio). Relaxed: a counter for metrics.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }
}

/// The media thread's end of one recording: a ring into the writer thread. [`Recording::push`]
/// only copies (into the ring, or its spill); dropping the recording (or [`Recording::stop`])
/// lets the writer finalize.
pub struct Recording {
    path: PathBuf,
    producer: HeapProd<i16>,
    shared: Arc<Shared>,
    channels: usize,
    pushed: u64,
    stopped: bool,
    /// Samples the ring had no room for, oldest first (see [`SPILL_SECONDS`]).
    spill: VecDeque<i16>,
    /// The most samples `spill` holds.
    spill_max: usize,
}

impl Recording {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands `samples` (whole interleaved frames) to the writer, in order: into the ring when it
    /// has room, else, when they came in a `burst` (a stall's backlog caught up back to back, see
    /// [`Pass::burst`](crate::processor::Pass::burst)), into the spill (up to [`SPILL_SECONDS`]);
    /// frames that came after a burst follow its spill while it waits, as far as the spill's
    /// memory goes without growing; else they are dropped and counted. A full ring outside a
    /// burst means the writer cannot keep up (a slow disk): waiting would not help, and the
    /// media thread never grows anything for it. Allocation-free but for the spill's growth
    /// during a burst.
    pub fn push(&mut self, samples: &[i16], burst: bool) {
        if self.stopped {
            return;
        }
        self.unspill();
        let frames = (samples.len() / self.channels) as u64;
        let spilling = !self.spill.is_empty();
        let fits = if burst { self.spill_max } else { self.spill.capacity().min(self.spill_max) };
        if !spilling && self.producer.vacant_len() >= samples.len() {
            self.producer.push_slice(samples);
            self.pushed += frames;
            if !burst && self.spill.capacity() > 0 {
                // The burst is through: its memory goes back (a call keeps no more than its ring).
                self.spill = VecDeque::new();
            }
        } else if (spilling || burst) && self.spill.len() + samples.len() <= fits {
            self.spill.extend(samples);
            self.pushed += frames;
        } else {
            self.shared.dropped.fetch_add(frames, Ordering::Relaxed);
        }
    }

    /// Moves what the spill holds into the ring, as far as it has room, oldest first, in whole
    /// interleaved frames.
    fn unspill(&mut self) {
        if self.spill.is_empty() {
            return;
        }
        let vacant = self.producer.vacant_len();
        let n = self.spill.len().min(vacant - vacant % self.channels);
        let (front, back) = self.spill.as_slices();
        let from_front = n.min(front.len());
        self.producer.push_slice(&front[..from_front]);
        self.producer.push_slice(&back[..n - from_front]);
        self.spill.drain(..n);
    }

    /// Samples per channel waiting in the spill for room in the ring.
    pub fn spilled(&self) -> u64 {
        (self.spill.len() / self.channels) as u64
    }

    /// Samples per channel handed to the writer so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Samples per channel dropped so far: the ring was full, or the writer had failed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The writer's first error, once it has failed (a full disk). Lock-free.
    pub fn failed(&self) -> Option<&str> {
        self.shared.failed.get().map(String::as_str)
    }

    /// Tells the writer to drain and finalize (once): a flag, nothing else, unless a stall's
    /// catch-up left samples in the spill: they go into the ring as far as it has room, and the
    /// rest to the writer, which writes them after the ring (the one lock, at the end).
    pub fn stop(&mut self) {
        if !self.stopped {
            self.unspill();
            if !self.spill.is_empty() {
                *self.shared.tail() = std::mem::take(&mut self.spill);
            }
            self.stopped = true;
            self.shared.stop.store(true, Ordering::Release);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("path", &self.path).field("pushed", &self.pushed).field("stopped", &self.stopped).finish()
    }
}

#[cfg(test)]
mod tests;
