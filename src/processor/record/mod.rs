//! The `record` processor: writes the call to a 16-bit PCM WAV file at the call's rate, or, in
//! builds with the `opus` cargo feature, to an Ogg/Opus file (see `services/recorder/ogg_opus.rs`).
//!
//! The media thread only copies each frame into a fixed-capacity ring (sized in
//! [`Processor::prepare`] for [`RING_SECONDS`](crate::services::recorder::RING_SECONDS) of audio). The file itself belongs to the
//! server's recorder service ([`crate::services::recorder`]): `prepare` asks it to create the
//! file, and its writer thread, which owns every open file, pops each recording's ring and
//! writes every [`POLL_INTERVAL`](crate::services::recorder::POLL_INTERVAL). When a ring is full the frame is dropped and counted, never
//! waited for.
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
//! The processor emits typed [`Event::Recording`] events ([`RecordingEvent`]; the server
//! publishes them as the call's `recording` events with [`RecordingEvent::to_json`]):
//!
//! * at the first pass, `Started` (`{"state": "started", "path": ..., "format": ...,
//!   "channels": ...}`), or `Failed` (`{"state": "error", "path": ..., "error": ...}`) when the
//!   file could not be opened (both built in `prepare`);
//! * once, at the pass after the writer thread first fails (a full disk), `Failed`; the
//!   recording stops there, the call does not;
//! * at the end of the call, `Finished` (`{"state": "finished", "path": ..., "duration_ms": ...,
//!   "samples": ..., "dropped": ...}` plus `"error"` when writing failed): `samples` (per
//!   channel) is what the media thread handed to the writer. It carries the channel on which the
//!   writer reports the finalized file ([`RecordingEnd::take_final`]), unless
//!   [`Record::outcomes`] took it: the server publishes the event once the file is final, so a
//!   webhook that fetches it gets it whole.
//!
//! The last two are built when they happen, the only allocations after `prepare`, once per
//! recording. The writer thread finalizes the file after `finish` and then logs one
//! `tracing::info!` line (path, duration_ms, samples, dropped, error) and sends a
//! [`RecordingOutcome`] with the samples it wrote.
//!
//! # Metrics
//!
//! The recorder service counts every byte written to its files
//! ([`crate::services::Recorder::bytes_written`]): headers (written in `prepare`), audio and
//! header rewrites (on the writer thread); never on the media thread.

mod config;

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::SystemTime;

pub use config::{RecordChannels, RecordConfig};

use super::template::{self, Piece};
use super::{CallInfo, Context, Event, Processor, ProcessorError, Setup};
use crate::call::{RecordingEnd, RecordingEvent};
#[cfg(feature = "opus")]
pub use crate::services::recorder::OpusFileError;
pub use crate::services::recorder::{
    DEFAULT_OPUS_BITRATE_PER_CHANNEL, OPUS_BITRATES, OPUS_FEATURE_MISSING, RecordError, RecordFormat, RecordingOutcome, SinkError,
};
use crate::services::recorder::{FileSpec, Recording};

/// Records the call to a WAV or Ogg/Opus file through a ring into the recorder service. See the
/// module documentation in `src/processor/record/mod.rs`.
pub struct Record {
    config: RecordConfig,
    template: Vec<Piece>,
    recording: Option<Recording>,
    scratch: Vec<i16>,
    announce: Option<Event>,
    outcome_tx: Option<mpsc::Sender<RecordingOutcome>>,
    outcome_rx: Option<mpsc::Receiver<RecordingOutcome>>,
    stopped: bool,
    rate: u32,
    /// Whether the writer's error has been emitted.
    error_reported: bool,
}

impl Record {
    /// A recorder with `config`, checked here (the directory and the file are only created in
    /// `prepare`).
    pub fn new(config: RecordConfig) -> Result<Record, ProcessorError> {
        if config.dir.as_os_str().is_empty() {
            return Err(config_error("`dir` must not be empty".into()));
        }
        let template = template::parse_file_name(&config.template).map_err(|e| ProcessorError::invalid("record", "", e))?;
        config.check_format(&template)?;
        let (tx, rx) = mpsc::channel();
        Ok(Record {
            config,
            template,
            recording: None,
            scratch: Vec::new(),
            announce: None,
            outcome_tx: Some(tx),
            outcome_rx: Some(rx),
            stopped: false,
            rate: 0,
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
        self.recording.as_ref().map_or(0, Recording::dropped)
    }

    /// The file name for `call` at `rate`, starting at `start`.
    fn file_name(&self, call: &CallInfo, rate: u32, start: SystemTime) -> String {
        template::render_file_name(&self.template, call, rate, start)
    }

    /// Disables recording for this call: logs and prepares the error event.
    fn disable(&mut self, path: &Path, error: String) {
        tracing::warn!(path = %path.display(), %error, "recording disabled for this call");
        self.announce = Some(Event::Recording(RecordingEvent::Failed { path: path.to_owned(), error }));
    }

    /// Tells the writer to drain and finalize (once).
    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            if let Some(recording) = self.recording.as_mut() {
                recording.stop();
            }
        }
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("config", &self.config)
            .field("recording", &self.recording.is_some())
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
        let Some(outcomes) = self.outcome_tx.take() else {
            return Err(config_error("a record processor can only be prepared once".into()));
        };
        let spec = FileSpec {
            path: path.clone(),
            format: self.config.format,
            channels: channels.count(),
            rate,
            opus_bitrate: self.config.opus_bitrate(),
        };
        let recording = match setup.services.recorder.open(spec, outcomes) {
            Ok(recording) => recording,
            Err(err) => {
                self.disable(&path, err.to_string());
                return Ok(());
            }
        };
        self.recording = Some(recording);
        self.rate = rate;
        self.scratch = vec![0; setup.frame_samples() * usize::from(channels.count())];
        self.announce =
            Some(Event::Recording(RecordingEvent::Started { path, format: self.config.format.as_str(), channels: channels.as_str() }));
        Ok(())
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if let Some(event) = self.announce.take() {
            cx.emit(event);
        }
        if self.stopped {
            return;
        }
        let Some(recording) = self.recording.as_mut() else { return };
        if !self.error_reported
            && let Some(error) = recording.failed()
        {
            // Once per recording, on a failure: the event's allocation is the rare kind.
            self.error_reported = true;
            let failed = RecordingEvent::Failed { path: recording.path().to_owned(), error: error.to_owned() };
            cx.emit(Event::Recording(failed));
        }
        // Which passes make a frame of the file (see `timeline`): the caller's channel follows
        // the caller's timeline exactly; outbound audio is kept from every pass that wrote some,
        // and the outbound channel alone also keeps the wall clock's silence.
        let pass = cx.pass();
        let (input, output) = (cx.input(), cx.output());
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
        recording.push(samples, pass.burst);
    }

    fn timeline(&self) -> super::Timeline {
        match self.config.channels {
            RecordChannels::Caller => super::Timeline::Caller,
            RecordChannels::Outbound | RecordChannels::Stereo | RecordChannels::Mixed => super::Timeline::Both,
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        let was_recording = !self.stopped && self.recording.is_some();
        self.stop();
        if let (true, Some(recording)) = (was_recording, self.recording.as_ref()) {
            let samples = recording.pushed();
            let end = RecordingEnd::new(
                recording.path().to_owned(),
                samples * 1000 / u64::from(self.rate.max(1)),
                samples,
                recording.dropped(),
                recording.failed().map(str::to_owned),
                self.outcome_rx.take(),
            )
            .uploading_to(self.config.upload.clone());
            cx.emit(Event::Recording(RecordingEvent::Finished(Arc::new(end))));
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_error(message: String) -> ProcessorError {
    ProcessorError::Config { processor: "record".into(), message }
}

#[cfg(test)]
mod tests;
