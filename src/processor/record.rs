//! The `record` processor: writes the call to a 16-bit PCM WAV file at the call's rate, or, in
//! builds with the `opus` cargo feature, to an Ogg/Opus file (see `record/ogg_opus.rs`).
//!
//! The media thread only copies each frame into a fixed-capacity ring (sized in
//! [`Processor::prepare`] for [`RING_SECONDS`] of audio). One writer thread per process, named
//! `callpipe-recorder` and started with the first recording, owns every open file: every
//! [`POLL_INTERVAL`] it pops each recording's ring and writes. When a ring is full the frame is
//! dropped and counted, never waited for.
//!
//! # What is recorded
//!
//! * `caller`: the caller's frame as this processor hears it (after the processors before it).
//! * `outbound`: the outbound frame as written by the processors *before* this one. Place
//!   `record` last in a route to capture everything callpipe sends. Audio queued with
//!   `enqueue_output` is released by the session after the pass and is not seen here.
//! * `stereo` (the default): left the caller, right the outbound frame, interleaved in the ring.
//! * `mixed`: one channel, the saturating sum of the two.
//!
//! One pass is one frame of call time, so the file's duration is the call's duration in passes;
//! passes in which the caller sent nothing record silence.
//!
//! # Formats
//!
//! * [`RecordFormat::Wav`] (the default): 16-bit PCM at the call's rate.
//! * [`RecordFormat::Opus`]: Ogg/Opus (RFC 7845) encoded at the call's rate (8, 16 and 24 kHz are
//!   all Opus rates) in 20 ms packets, one per pass, at [`RecordConfig::bitrate`] (by default
//!   24 kb/s per channel). Needs the `opus` cargo feature (libopus is built from source, which
//!   needs `cmake`); without it [`Record::new`] refuses the format. The encoder runs on the
//!   writer thread, never on the media thread: 45-110 µs per 20 ms packet (libopus 1.6,
//!   complexity 9), so the one writer thread keeps up with about 200 stereo Opus recordings at
//!   once (100 stereo 16 kHz calls kept it 43 % busy); past that the rings fill and frames are
//!   dropped and counted, as for a slow disk.
//!
//! The file name template must end in the format's extension (`.wav` or `.opus`).
//!
//! # Guarantees
//!
//! * `process`, `finish` and `Drop` never allocate, lock, block or touch files: `finish` (and
//!   `Drop`, when `finish` never ran) only set a flag; the writer then drains the ring and
//!   finalizes the file within one poll interval.
//! * The writer rewrites the WAV header at least once per second of audio, so a file cut off by a
//!   crash or `kill -9` still opens in ordinary tools, missing at most the last second. An Opus
//!   file gets its page ended and flushed on the same schedule, so it plays up to its last whole
//!   page; a finalized one ends with an end-of-stream page whose granule position trims the
//!   stream to exactly the audio recorded.
//! * Recording errors never end the call. A directory that cannot be created or a file that
//!   cannot be opened in `prepare` disables the recorder (one `tracing::warn!`, and a
//!   `recording` event with `"state": "error"` at the first pass); a write error (a full disk)
//!   makes the writer log one warning, emit a `recording` error event and drop the rest of the
//!   audio, counted; the file keeps its last header (`tests/record_disk_full.rs`).
//!
//! # Events
//!
//! The processor emits [`Event::Custom`] events named `"recording"`:
//!
//! * at the first pass, `{"state": "started", "path": ..., "format": ..., "channels": ...}`, or
//!   `{"state": "error", "error": ...}` when the file could not be opened (both built in
//!   `prepare`);
//! * once, at the pass after the writer thread first fails (a full disk),
//!   `{"state": "error", "path": ..., "error": ...}`; the recording stops there, the call does not;
//! * at the end of the call, `{"state": "finished", "path": ..., "duration_ms": ..., "samples":
//!   ..., "dropped": ...}` plus `"error"` when writing failed: `samples` (per channel) is what the
//!   media thread handed to the writer.
//!
//! The last two are built when they happen, the only allocations after `prepare`, once per
//! recording. The writer thread finalizes the file after `finish` and then logs one
//! `tracing::info!` line (path, duration_ms, samples, dropped, error) and sends a
//! [`RecordingOutcome`] on the channel from [`Record::outcomes`], with the samples it wrote.
//!
//! # Metrics
//!
//! [`recording_bytes`] counts every byte written to recording files by this process: headers
//! (written in `prepare`), audio and header rewrites (on the writer thread); never on the media
//! thread.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringbuf::{HeapCons, HeapProd, HeapRb, traits::*};

use super::{CallInfo, Context, Event, Processor, ProcessorError, Setup};

#[cfg(feature = "opus")]
mod ogg_opus;
#[cfg(feature = "opus")]
pub use ogg_opus::OpusFileError;

/// Seconds of audio the ring between the media thread and the writer holds.
pub const RING_SECONDS: usize = 2;

/// How often the writer thread empties the ring.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The default file name template for WAV.
pub const DEFAULT_TEMPLATE: &str = "{call_id}-{start}.wav";

/// The default file name template for Opus.
pub const DEFAULT_OPUS_TEMPLATE: &str = "{call_id}-{start}.opus";

/// The default Opus bitrate per channel, in bits per second: speech at any of the call rates
/// (24 kb/s mono, 48 kb/s stereo).
pub const DEFAULT_OPUS_BITRATE_PER_CHANNEL: u32 = 24_000;

/// The Opus bitrates accepted, in bits per second for the whole stream.
pub const OPUS_BITRATES: std::ops::RangeInclusive<u32> = 6_000..=256_000;

/// The error for an Opus recording in a build without the `opus` feature.
pub const OPUS_FEATURE_MISSING: &str = "callpipe was built without the `opus` feature; rebuild with --features opus";

type Wav = hound::WavWriter<BufWriter<CountedFile>>;

/// Bytes written to recording files by this process.
static RECORDING_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes this process has written to recording files so far: headers, audio, and header
/// rewrites (a WAV header is rewritten once per second, so the total exceeds the files' sizes
/// by a few bytes per second of audio). Relaxed: a counter for metrics.
pub fn recording_bytes() -> u64 {
    RECORDING_BYTES.load(Ordering::Relaxed)
}

/// A recording file that adds the bytes written to it to [`RECORDING_BYTES`].
#[derive(Debug)]
struct CountedFile(File);

impl Write for CountedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        RECORDING_BYTES.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Seek for CountedFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

/// Which audio goes into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordChannels {
    /// Mono: the caller's audio.
    Caller,
    /// Mono: what callpipe sends (as written by earlier processors).
    Outbound,
    /// Two channels: left the caller, right what callpipe sends.
    Stereo,
    /// Mono: the saturating sum of the caller and what callpipe sends.
    Mixed,
}

impl RecordChannels {
    /// Parses `"caller"`, `"outbound"`, `"stereo"` or `"mixed"`.
    pub fn parse(text: &str) -> Option<RecordChannels> {
        match text {
            "caller" => Some(RecordChannels::Caller),
            "outbound" => Some(RecordChannels::Outbound),
            "stereo" => Some(RecordChannels::Stereo),
            "mixed" => Some(RecordChannels::Mixed),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordChannels::Caller => "caller",
            RecordChannels::Outbound => "outbound",
            RecordChannels::Stereo => "stereo",
            RecordChannels::Mixed => "mixed",
        }
    }

    /// Channels in the file.
    pub fn count(self) -> u16 {
        if self == RecordChannels::Stereo { 2 } else { 1 }
    }
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// 16-bit PCM WAV at the call's rate.
    #[default]
    Wav,
    /// Ogg/Opus at the call's rate (builds with the `opus` feature only).
    Opus,
}

impl RecordFormat {
    /// Parses `"wav"` or `"opus"`.
    pub fn parse(text: &str) -> Option<RecordFormat> {
        match text {
            "wav" => Some(RecordFormat::Wav),
            "opus" => Some(RecordFormat::Opus),
            _ => None,
        }
    }

    /// The configuration name, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Wav => "wav",
            RecordFormat::Opus => "opus",
        }
    }

    /// The format a file name template's extension names: `.opus` is Opus, anything else WAV.
    pub fn from_template(template: &str) -> RecordFormat {
        if template.ends_with(".opus") { RecordFormat::Opus } else { RecordFormat::Wav }
    }

    /// The default file name template.
    pub fn default_template(self) -> &'static str {
        match self {
            RecordFormat::Wav => DEFAULT_TEMPLATE,
            RecordFormat::Opus => DEFAULT_OPUS_TEMPLATE,
        }
    }

    /// Whether this build can write the format (Opus needs the `opus` feature).
    pub fn is_available(self) -> bool {
        self == RecordFormat::Wav || cfg!(feature = "opus")
    }
}

/// The `record` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    /// The directory for recordings, created if missing.
    pub dir: PathBuf,
    /// The file name: literal `[A-Za-z0-9._-]` and the placeholders `{call_id}`, `{path}`,
    /// `{start}` (UTC, `YYYYMMDDTHHMMSSZ`), `{rate}` and `{header:NAME}`. Each placeholder's value
    /// is sanitized to `[A-Za-z0-9._-]` (anything else becomes `_`).
    pub template: String,
    /// Which audio to record.
    pub channels: RecordChannels,
    /// The file format; the template must end in its extension.
    pub format: RecordFormat,
    /// The Opus bitrate in bits per second, from 6,000 to 256,000; `None` for 24,000 per channel
    /// (48,000 for stereo). Only for [`RecordFormat::Opus`].
    pub bitrate: Option<u32>,
}

impl RecordConfig {
    /// A WAV recorder's configuration writing into `dir`, with the defaults: the template
    /// `"{call_id}-{start}.wav"`, stereo.
    pub fn new(dir: impl Into<PathBuf>) -> RecordConfig {
        RecordConfig {
            dir: dir.into(),
            template: DEFAULT_TEMPLATE.into(),
            channels: RecordChannels::Stereo,
            format: RecordFormat::Wav,
            bitrate: None,
        }
    }

    /// The Opus bitrate in use: the configured one or the default for the channel count.
    pub fn opus_bitrate(&self) -> u32 {
        self.bitrate.unwrap_or(DEFAULT_OPUS_BITRATE_PER_CHANNEL * u32::from(self.channels.count()))
    }
}

/// How a recording ended, sent by the writer thread when the file is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingOutcome {
    /// The file.
    pub path: PathBuf,
    /// Its duration in ms.
    pub duration_ms: u64,
    /// Samples per channel written.
    pub samples: u64,
    /// Samples per channel dropped (ring full, or after a write error).
    pub dropped: u64,
    /// The first error, if any.
    pub error: Option<String>,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    CallId,
    Path,
    Start,
    Rate,
    Header(String),
}

/// State shared with the writer thread.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    dropped: AtomicU64,
    /// The writer's first error, set once; the media thread reads it without a lock.
    failed: OnceLock<String>,
}

/// Records the call to a WAV or Ogg/Opus file through a ring and a writer thread. See the module documentation in `src/processor/record.rs`.
pub struct Record {
    config: RecordConfig,
    template: Vec<Piece>,
    shared: Arc<Shared>,
    producer: Option<HeapProd<i16>>,
    scratch: Vec<i16>,
    announce: Option<Event>,
    outcome_tx: Option<mpsc::Sender<RecordingOutcome>>,
    outcome_rx: Option<mpsc::Receiver<RecordingOutcome>>,
    stopped: bool,
    /// The file, once `prepare` has opened it.
    path: Option<PathBuf>,
    rate: u32,
    /// Samples per channel handed to the writer.
    pushed: u64,
    /// Whether the writer's error has been emitted.
    error_reported: bool,
}

impl Record {
    /// A recorder with `config`, checked here (the directory is only created in `prepare`).
    pub fn new(config: RecordConfig) -> Result<Record, ProcessorError> {
        if config.dir.as_os_str().is_empty() {
            return Err(config_error("`dir` must not be empty".into()));
        }
        let template = parse_template(&config.template).map_err(config_error)?;
        check_format(&config, &template).map_err(config_error)?;
        let (tx, rx) = mpsc::channel();
        Ok(Record {
            config,
            template,
            shared: Arc::default(),
            producer: None,
            scratch: Vec::new(),
            announce: None,
            outcome_tx: Some(tx),
            outcome_rx: Some(rx),
            stopped: false,
            path: None,
            rate: 0,
            pushed: 0,
            error_reported: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RecordConfig {
        &self.config
    }

    /// The channel on which the writer thread reports how the recording ended (once per
    /// call). Can be taken once; take it before boxing the processor into a pipeline.
    pub fn outcomes(&mut self) -> Option<mpsc::Receiver<RecordingOutcome>> {
        self.outcome_rx.take()
    }

    /// Samples per channel dropped so far because the ring was full or the writer had failed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The file name for `call` at `rate`, starting at `start`.
    fn file_name(&self, call: &CallInfo, rate: u32, start: SystemTime) -> String {
        render(&self.template, call, rate, start)
    }

    /// Disables recording for this call: logs and prepares the error event.
    fn disable(&mut self, path: &Path, error: String) {
        tracing::warn!(path = %path.display(), %error, "recording disabled for this call");
        self.announce =
            Some(Event::custom("recording", serde_json::json!({ "state": "error", "path": path.display().to_string(), "error": error })));
    }

    /// Tells the writer to drain and finalize (once).
    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.shared.stop.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("config", &self.config)
            .field("recording", &self.producer.is_some())
            .field("dropped", &self.dropped())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Processor for Record {
    fn name(&self) -> &'static str {
        "record"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let rate = setup.rate.hz();
        let path = self.config.dir.join(self.file_name(setup.call, rate, SystemTime::now()));
        let channels = self.config.channels;
        if let Err(err) = std::fs::create_dir_all(&self.config.dir) {
            self.disable(&path, RecordError::Create { path: self.config.dir.clone(), source: err.into() }.to_string());
            return Ok(());
        }
        let sink = match Sink::create(&path, &self.config, rate) {
            Ok(sink) => sink,
            Err(err) => {
                self.disable(&path, err.to_string());
                return Ok(());
            }
        };
        let per_second = rate as usize * usize::from(channels.count());
        let (producer, consumer) = HeapRb::<i16>::new(per_second * RING_SECONDS).split();
        let Some(outcomes) = self.outcome_tx.take() else {
            return Err(config_error("a record processor can only be prepared once".into()));
        };
        let writer = Writer {
            sink: Some(sink),
            path: path.clone(),
            channels: channels.count(),
            rate,
            consumer,
            shared: self.shared.clone(),
            outcomes,
        };
        if let Err(err) = hand_to_writer_thread(writer) {
            self.disable(&path, err.to_string());
            return Ok(());
        }
        self.path = Some(path.clone());
        self.rate = rate;
        self.producer = Some(producer);
        self.scratch = vec![0; setup.frame_samples() * usize::from(channels.count())];
        self.announce = Some(Event::custom(
            "recording",
            serde_json::json!({
                "state": "started",
                "path": path.display().to_string(),
                "format": self.config.format.as_str(),
                "channels": channels.as_str(),
            }),
        ));
        Ok(())
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if let Some(event) = self.announce.take() {
            cx.emit(event);
        }
        if self.stopped {
            return;
        }
        if !self.error_reported
            && let Some(error) = self.shared.failed.get()
        {
            // Once per recording, on a failure: the event's allocation is the rare kind.
            self.error_reported = true;
            let path = self.path.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
            cx.emit(Event::custom("recording", serde_json::json!({ "state": "error", "path": path, "error": error })));
        }
        let Some(producer) = self.producer.as_mut() else { return };
        // Which passes make a frame of the file (see `timeline`): the caller's channel follows
        // the caller's timeline exactly; outbound audio is kept from every pass that wrote some,
        // and the outbound channel alone also keeps the wall clock's silence.
        let pass = cx.pass();
        let (input, output) = (cx.input(), cx.output());
        let n = input.len();
        let samples: &[i16] = match self.config.channels {
            RecordChannels::Caller => input,
            RecordChannels::Outbound if pass.wall || cx.output_written() => output,
            RecordChannels::Outbound => return,
            _ if !pass.caller && !cx.output_written() => return,
            RecordChannels::Stereo => {
                for (i, (pair, r)) in self.scratch.chunks_exact_mut(2).zip(output).enumerate() {
                    pair[0] = if pass.caller { input[i] } else { 0 };
                    pair[1] = *r;
                }
                &self.scratch
            }
            RecordChannels::Mixed => {
                for (i, (m, r)) in self.scratch.iter_mut().zip(output).enumerate() {
                    *m = if pass.caller { input[i] } else { 0 }.saturating_add(*r);
                }
                &self.scratch
            }
        };
        // Whole frames only, so the interleaving in the ring never slips.
        if producer.vacant_len() >= samples.len() {
            producer.push_slice(samples);
            self.pushed += n as u64;
        } else {
            self.shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn timeline(&self) -> super::Timeline {
        match self.config.channels {
            RecordChannels::Caller => super::Timeline::Caller,
            RecordChannels::Outbound | RecordChannels::Stereo | RecordChannels::Mixed => super::Timeline::Both,
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        let was_recording = !self.stopped && self.producer.is_some();
        self.stop();
        if let (true, Some(path)) = (was_recording, self.path.as_deref()) {
            let samples = self.pushed;
            let mut data = serde_json::json!({
                "state": "finished",
                "path": path.display().to_string(),
                "duration_ms": samples * 1000 / u64::from(self.rate.max(1)),
                "samples": samples,
                "dropped": self.dropped(),
            });
            if let Some(error) = self.shared.failed.get() {
                data["error"] = serde_json::Value::from(error.as_str());
            }
            cx.emit(Event::custom("recording", data));
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A mono recording fed from a media thread, for recorders other than [`Record`] (a conference's
/// mixed file and its members' tracks): a ring of [`RING_SECONDS`] into the process's writer
/// thread, like a `record` processor's. Opening creates the file (do it off the media thread);
/// [`Track::push`] only copies; dropping the track (or [`Track::stop`]) lets the writer finalize.
pub(crate) struct Track {
    path: PathBuf,
    producer: HeapProd<i16>,
    shared: Arc<Shared>,
    outcomes: Option<mpsc::Receiver<RecordingOutcome>>,
    pushed: u64,
    stopped: bool,
}

impl Track {
    /// Creates `path` (its directory too) as a mono file of `format` at `rate` and hands it to the
    /// writer thread.
    pub(crate) fn open(path: PathBuf, rate: u32, format: RecordFormat) -> Result<Track, RecordError> {
        if let Some(dir) = path.parent()
            && let Err(err) = std::fs::create_dir_all(dir)
        {
            return Err(RecordError::Create { path: dir.to_owned(), source: err.into() });
        }
        let config = RecordConfig { channels: RecordChannels::Caller, format, ..RecordConfig::new("") };
        let sink = Sink::create(&path, &config, rate)?;
        let (producer, consumer) = HeapRb::<i16>::new(rate as usize * RING_SECONDS).split();
        let shared = Arc::<Shared>::default();
        let (tx, rx) = mpsc::channel();
        hand_to_writer_thread(Writer {
            sink: Some(sink),
            path: path.clone(),
            channels: 1,
            rate,
            consumer,
            shared: shared.clone(),
            outcomes: tx,
        })?;
        Ok(Track { path, producer, shared, outcomes: Some(rx), pushed: 0, stopped: false })
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Hands `samples` to the writer whole, or drops and counts them when the ring is full.
    /// Allocation-free.
    pub(crate) fn push(&mut self, samples: &[i16]) {
        if self.stopped {
            return;
        }
        if self.producer.vacant_len() >= samples.len() {
            self.producer.push_slice(samples);
            self.pushed += samples.len() as u64;
        } else {
            self.shared.dropped.fetch_add(samples.len() as u64, Ordering::Relaxed);
        }
    }

    /// The channel on which the writer reports the finalized file (once). Take it before the
    /// track goes to a media thread.
    pub(crate) fn outcomes(&mut self) -> Option<mpsc::Receiver<RecordingOutcome>> {
        self.outcomes.take()
    }

    /// Tells the writer to drain and finalize (once): a flag, nothing else.
    pub(crate) fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.shared.stop.store(true, Ordering::Release);
        }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Track {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Track").field("path", &self.path).field("pushed", &self.pushed).field("stopped", &self.stopped).finish()
    }
}

/// An open recording file, as the writer thread holds it.
enum Sink {
    Wav(Wav),
    #[cfg(feature = "opus")]
    Opus(Box<ogg_opus::OggOpusWriter<BufWriter<CountedFile>>>),
}

impl Sink {
    /// Creates the file for `config`'s format at `rate` and writes its headers (on the preparing
    /// thread, where file I/O is allowed).
    fn create(path: &Path, config: &RecordConfig, rate: u32) -> Result<Sink, RecordError> {
        Sink::create_with(path, config, rate, |p| File::create(p))
    }

    /// [`Sink::create`] with the file opened by `open`. A file that was created but whose headers
    /// could not be written (a full disk) is removed again: it would be empty or cut inside the
    /// header, which no player opens, and the error event already says what happened.
    fn create_with(
        path: &Path,
        config: &RecordConfig,
        rate: u32,
        open: impl FnOnce(&Path) -> std::io::Result<File>,
    ) -> Result<Sink, RecordError> {
        let channels = config.channels.count();
        let cannot = |source: SinkError| RecordError::Create { path: path.to_owned(), source };
        #[cfg(not(feature = "opus"))]
        if config.format == RecordFormat::Opus {
            return Err(RecordError::OpusMissing);
        }
        let file = BufWriter::new(open(path).map(CountedFile).map_err(|e| cannot(e.into()))?);
        let started = match config.format {
            RecordFormat::Wav => {
                let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
                hound::WavWriter::new(file, spec).and_then(|mut w| w.flush().map(|()| Sink::Wav(w))).map_err(|e| cannot(e.into()))
            }
            #[cfg(feature = "opus")]
            RecordFormat::Opus => ogg_opus::OggOpusWriter::new(file, rate, channels, config.opus_bitrate(), stream_serial(path))
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
    fn write(&mut self, samples: &[i16]) -> Result<(), SinkError> {
        match self {
            Sink::Wav(wav) => Ok(write_all(wav, samples)?),
            #[cfg(feature = "opus")]
            Sink::Opus(opus) => Ok(opus.write(samples)?),
        }
    }

    /// Makes what was written so far readable: rewrites the WAV header, or ends the Ogg page;
    /// then flushes the file.
    fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Wav(wav) => Ok(wav.flush()?),
            #[cfg(feature = "opus")]
            Sink::Opus(opus) => Ok(opus.flush()?),
        }
    }

    /// Completes the file: the final WAV header, or the Ogg end-of-stream page.
    fn finalize(self) -> Result<(), SinkError> {
        match self {
            Sink::Wav(wav) => Ok(wav.finalize()?),
            #[cfg(feature = "opus")]
            Sink::Opus(opus) => Ok(opus.finalize().map(drop)?),
        }
    }
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
    SystemTime::now().hash(&mut hasher);
    hasher.finish() as u32
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

/// One recording, as the writer thread holds it.
struct Writer {
    sink: Option<Sink>,
    path: PathBuf,
    channels: u16,
    rate: u32,
    consumer: HeapCons<i16>,
    shared: Arc<Shared>,
    outcomes: mpsc::Sender<RecordingOutcome>,
}

/// A recording being written, with its progress.
struct Job {
    writer: Writer,
    written: u64,
    since_flush: u64,
    error: Option<String>,
}

/// Samples the writer thread pops at a time.
const WRITE_CHUNK: usize = 8192;

/// Recordings handed to the writer thread and not yet finalized.
static OPEN_RECORDINGS: AtomicUsize = AtomicUsize::new(0);

/// The files of those recordings. Locked when a recording is handed over (in `prepare`) and when
/// it is finalized (on the writer thread), never on a media thread.
static OPEN_PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn open_paths() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    OPEN_PATHS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the recording to `path` is still being written: its call may have ended (and its
/// `recording` `finished` event gone out) a poll interval or two before the writer thread
/// finalizes the file. A webhook that points at the file waits for this to turn false.
pub fn recording_in_progress(path: &Path) -> bool {
    open_paths().iter().any(|p| p == path)
}

/// Waits up to `timeout` for the writer thread to finalize every recording whose call has ended
/// (it does so within a poll interval or two of `finish`). A process that exits right after its
/// calls end, as `callpipe serve` does after a graceful shutdown, calls this first, or the last
/// files could lose their final header update (WAV) or end-of-stream page (Ogg/Opus). Returns
/// whether none was left open; recordings of calls still running keep it waiting.
pub fn wait_for_recordings(timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while OPEN_RECORDINGS.load(Ordering::Acquire) > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL / 4);
    }
    true
}

/// Hands a recording to the process's writer thread, starting it on first use.
fn hand_to_writer_thread(writer: Writer) -> Result<(), RecordError> {
    static WRITER: OnceLock<Result<mpsc::Sender<Writer>, String>> = OnceLock::new();
    let sender = WRITER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("callpipe-recorder".into())
            .spawn(move || write_recordings(rx))
            .map(|_| tx)
            .map_err(|err| err.to_string())
    });
    match sender {
        Ok(sender) => {
            let path = writer.path.clone();
            OPEN_RECORDINGS.fetch_add(1, Ordering::AcqRel);
            open_paths().push(path.clone());
            sender.send(writer).map_err(|_| {
                OPEN_RECORDINGS.fetch_sub(1, Ordering::AcqRel);
                open_paths().retain(|p| *p != path);
                RecordError::WriterStopped
            })
        }
        Err(err) => Err(RecordError::WriterStart(err.clone())),
    }
}

/// The writer thread: every poll interval, drains every recording's ring into its file;
/// finalizes and forgets the recordings whose calls have ended; sleeps when there are none.
fn write_recordings(incoming: mpsc::Receiver<Writer>) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut buffer = vec![0i16; WRITE_CHUNK];
    loop {
        if jobs.is_empty() {
            match incoming.recv() {
                Ok(writer) => jobs.push(Job::new(writer)),
                Err(_) => return,
            }
        }
        while let Ok(writer) = incoming.try_recv() {
            jobs.push(Job::new(writer));
        }
        let mut i = 0;
        while i < jobs.len() {
            if jobs[i].poll(&mut buffer) {
                let job = jobs.swap_remove(i);
                job.finish();
                OPEN_RECORDINGS.fetch_sub(1, Ordering::AcqRel);
            } else {
                i += 1;
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

impl Job {
    fn new(writer: Writer) -> Job {
        Job { writer, written: 0, since_flush: 0, error: None }
    }

    /// Drains the ring into the file and makes the file readable (WAV header, Ogg page) once per
    /// second of audio.
    /// Returns true once the call has ended and everything it pushed is written.
    fn poll(&mut self, buffer: &mut [i16]) -> bool {
        let channels = u64::from(self.writer.channels);
        // Read the flag before draining: everything pushed before it was set is drained.
        let stopping = self.writer.shared.stop.load(Ordering::Acquire);
        // Whole interleaved frames per chunk, so a write never splits a sample pair.
        let chunk = buffer.len() - buffer.len() % usize::from(self.writer.channels);
        loop {
            let n = self.writer.consumer.pop_slice(&mut buffer[..chunk]);
            if n == 0 {
                break;
            }
            match self.writer.sink.as_mut() {
                Some(sink) => match sink.write(&buffer[..n]) {
                    Ok(()) => {
                        self.written += n as u64;
                        self.since_flush += n as u64;
                    }
                    Err(source) => {
                        let error = RecordError::Write { action: "write", source };
                        self.writer.fail(&mut self.error, error.to_string(), n as u64 / channels);
                    }
                },
                None => {
                    self.writer.shared.dropped.fetch_add(n as u64 / channels, Ordering::Relaxed);
                }
            }
        }
        if self.since_flush >= u64::from(self.writer.rate) * channels && self.written.is_multiple_of(channels) {
            self.since_flush = 0;
            if let Some(Err(source)) = self.writer.sink.as_mut().map(Sink::flush) {
                self.writer.fail(&mut self.error, RecordError::Write { action: "flush", source }.to_string(), 0);
            }
        }
        stopping
    }

    /// Finalizes the file and reports how the recording ended.
    fn finish(mut self) {
        let channels = u64::from(self.writer.channels);
        if let Some(Err(source)) = self.writer.sink.take().map(Sink::finalize) {
            self.error.get_or_insert(RecordError::Write { action: "finalize", source }.to_string());
        }
        {
            let mut open = open_paths();
            if let Some(i) = open.iter().position(|p| *p == self.writer.path) {
                open.swap_remove(i);
            }
        }
        let samples = self.written / channels;
        let outcome = RecordingOutcome {
            path: self.writer.path,
            duration_ms: samples * 1000 / u64::from(self.writer.rate),
            samples,
            dropped: self.writer.shared.dropped.load(Ordering::Relaxed),
            error: self.error,
        };
        tracing::info!(
            path = %outcome.path.display(),
            duration_ms = outcome.duration_ms,
            samples = outcome.samples,
            dropped = outcome.dropped,
            error = outcome.error.as_deref().unwrap_or(""),
            "recording finished"
        );
        let _ = self.writer.outcomes.send(outcome);
    }
}

impl Writer {
    /// Stops writing after an error: logs it once, closes the file as far as it got.
    fn fail(&mut self, error: &mut Option<String>, message: String, lost: u64) {
        tracing::warn!(path = %self.path.display(), error = %message, "recording stopped; the call goes on");
        let _ = self.shared.failed.set(message.clone());
        self.shared.dropped.fetch_add(lost, Ordering::Relaxed);
        // Dropping a hound writer tries to finalize, an Ogg/Opus one flushes what it has; errors
        // there are already reported.
        self.sink = None;
        error.get_or_insert(message);
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

/// Checks that the format is available in this build, that the template ends in its
/// extension, and the bitrate.
fn check_format(config: &RecordConfig, template: &[Piece]) -> Result<(), String> {
    let format = config.format;
    if !format.is_available() {
        return Err(OPUS_FEATURE_MISSING.into());
    }
    let extension = format!(".{}", format.as_str());
    if !matches!(template.last(), Some(Piece::Literal(end)) if end.ends_with(&extension)) {
        return Err(format!(
            "template {:?} must end in `{extension}` for format = \"{}\" (e.g. {:?})",
            config.template,
            format.as_str(),
            format.default_template()
        ));
    }
    match (format, config.bitrate) {
        (RecordFormat::Wav, Some(_)) => Err("`bitrate` applies to format = \"opus\" only".into()),
        (RecordFormat::Opus, Some(bits)) if !OPUS_BITRATES.contains(&bits) => {
            Err(format!("`bitrate` must be between {} and {} bits per second, not {bits}", OPUS_BITRATES.start(), OPUS_BITRATES.end()))
        }
        _ => Ok(()),
    }
}

fn config_error(message: String) -> ProcessorError {
    ProcessorError::Config { processor: "record".into(), message }
}

/// Whether `c` may appear in a file name as is.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Appends `value` to `out` with every character outside `[A-Za-z0-9._-]` replaced by `_`.
fn push_sanitized(out: &mut String, value: &str) {
    out.extend(value.chars().map(|c| if is_safe(c) { c } else { '_' }));
}

/// Parses a file name template; literal text must already be safe.
fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            pieces.push(Piece::Literal(rest.to_owned()));
            break;
        };
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or_else(|| format!("template {template:?} has an unclosed `{{`"))? + open;
        let piece = match &rest[open + 1..close] {
            "call_id" => Piece::CallId,
            "path" => Piece::Path,
            "start" => Piece::Start,
            "rate" => Piece::Rate,
            other => match other.strip_prefix("header:") {
                Some(name) if !name.is_empty() => Piece::Header(name.to_owned()),
                _ => {
                    return Err(format!(
                        "template {template:?}: unknown placeholder `{{{other}}}` (known: call_id, path, start, rate, header:NAME)"
                    ));
                }
            },
        };
        pieces.push(piece);
        rest = &rest[close + 1..];
    }
    for piece in &pieces {
        if let Piece::Literal(text) = piece
            && let Some(c) = text.chars().find(|c| !is_safe(*c))
        {
            return Err(format!("template {template:?}: {c:?} is not allowed in a file name (use A-Z a-z 0-9 . _ -)"));
        }
    }
    if pieces.is_empty() {
        return Err("`template` must not be empty".into());
    }
    Ok(pieces)
}

/// Renders a parsed template. Never empty, never a hidden or parent name.
fn render(pieces: &[Piece], call: &CallInfo, rate: u32, start: SystemTime) -> String {
    let mut name = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => name.push_str(text),
            Piece::CallId => push_sanitized(&mut name, &call.id),
            Piece::Path => push_sanitized(&mut name, &call.path),
            Piece::Start => name.push_str(&utc_stamp(start)),
            Piece::Rate => name.push_str(&rate.to_string()),
            Piece::Header(key) => push_sanitized(&mut name, call.metadata.header_str(key).as_deref().unwrap_or("none")),
        }
    }
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name
}

/// `time` in UTC as `YYYYMMDDTHHMMSSZ` (times before 1970 render as 1970).
pub(crate) fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
