//! The call's vocabulary, shared by the layers above it: who the call is ([`CallInfo`]), what
//! happens in it ([`Event`], [`DtmfSource`], [`StreamEnd`], and the voice events in `voice.rs`:
//! [`Speech`], [`Collected`], [`BargeIn`], [`TalkEnd`]). The processors emit and receive
//! these, the session carries them, the server reports them; this module depends on the
//! protocol types only, so that neither the processors nor the session depend on each other
//! for them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use crate::protocol::{DtmfDigit, Metadata};

mod upload;
mod voice;

pub use upload::UploadTarget;
pub use voice::{BargeCause, BargeIn, BargeInMode, Collected, Interrupted, MAX_INPUT_DIGITS, Speech, TalkEnd};

/// A call's id: from the URI query or a metadata header, or generated. It reads as the string
/// it is (it derefs to `str`, prints and serializes as the bare string), and is a type of its
/// own so that it is never confused with the other strings a call carries.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    /// The id `text`.
    pub fn new(text: impl Into<String>) -> CallId {
        CallId(text.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for CallId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for CallId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<String> for CallId {
    fn from(text: String) -> CallId {
        CallId(text)
    }
}

impl From<&str> for CallId {
    fn from(text: &str) -> CallId {
        CallId(text.to_owned())
    }
}

impl PartialEq<str> for CallId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CallId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A call's identity and metadata, as processors see them at preparation.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The call id.
    pub id: CallId,
    /// The URL path the platform connected to.
    pub path: String,
    /// The parsed metadata frame.
    pub metadata: Metadata,
}

/// A `notify` marker: it goes to the platform inside the notify's payload, comes back when
/// everything sent before it has played, and says whose notify it was. Three owners share the
/// number space: the control API ([`Marker::api`], bit 52 set), forks ([`Marker::FORK_BASE`]
/// and up, a range of 2²⁴ per fork), and processors, which choose their own below
/// [`Marker::FORK_BASE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Marker(pub u64);

impl Marker {
    /// Markers of the control API's notifies have this bit set.
    pub const API_BIT: u64 = 1 << 52;

    /// Fork markers start here.
    pub const FORK_BASE: u64 = 1 << 51;

    /// Markers in one fork's range.
    pub const FORK_RANGE: u64 = 1 << 24;

    /// The control API's `n`th marker.
    pub fn api(n: u64) -> Marker {
        Marker(Marker::API_BIT | n)
    }

    /// Whether the control API made this marker.
    pub fn is_api(self) -> bool {
        self.0 & Marker::API_BIT != 0
    }

    /// The first marker of the `n`th fork's range (fork numbers wrap after 2²⁶).
    pub fn fork_base(n: u64) -> Marker {
        Marker(Marker::FORK_BASE + (n % (1 << 26)) * Marker::FORK_RANGE)
    }

    /// Whether this marker is in the range that starts at `base`.
    pub fn in_range_of(self, base: Marker) -> bool {
        (base.0..base.0 + Marker::FORK_RANGE).contains(&self.0)
    }

    /// The marker after this one.
    pub fn next(self) -> Marker {
        Marker(self.0 + 1)
    }
}

impl From<u64> for Marker {
    fn from(value: u64) -> Marker {
        Marker(value)
    }
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a DTMF event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    /// Reported by the platform as `websocket:dtmf`.
    Platform,
    /// Detected in the caller's audio.
    Inband,
    /// Both, merged into one event.
    Both,
}

/// An event that processors receive and emit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A keypress.
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// When it started, in ms of call time since the call started (the pass position × 20),
        /// when known: detected in-band, to the sample; the platform's reports carry no time.
        start_ms: Option<u64>,
        /// How long it was held, when known.
        duration_ms: Option<u32>,
        /// Who detected it.
        source: DtmfSource,
    },
    /// The platform has played everything sent before the `notify` with this marker.
    NotifyPlayed {
        /// The marker the processor passed to
        /// [`Context::notify`](crate::processor::Context::notify).
        marker: Marker,
    },
    /// The platform acknowledged a `clear`.
    Cleared,
    /// A stream the control API started has ended.
    StreamDone {
        /// The stream's id, as the API returned it.
        id: u64,
        /// Why.
        reason: StreamEnd,
    },
    /// A recorder's file started, failed or ended.
    Recording(RecordingEvent),
    /// The caller started or stopped speaking (the `vad` processor).
    Speech(Speech),
    /// An `input` ended: the keys it collected.
    Input(Collected),
    /// The caller interrupted audio callpipe was playing.
    BargeIn(BargeIn),
    /// A `talk` the control API started has ended.
    TalkDone {
        /// Its `talk_id`, as the API returned it.
        id: u64,
        /// Why.
        reason: TalkEnd,
    },
    /// A processor's own event. Making its data allocates (see [`Event::custom`]); cloning the
    /// event only counts a reference, so the session passes it on without allocating.
    Custom {
        /// The event name, e.g. `"vad:speech"`.
        name: &'static str,
        /// Its data, shared.
        data: std::sync::Arc<serde_json::Value>,
    },
}

impl Event {
    /// The key this event brings, when it is a new key from the caller: a platform report or
    /// an in-band detection, not `dtmf_detect`'s merged twin of a report already delivered.
    pub fn new_key(&self) -> Option<DtmfDigit> {
        match self {
            Event::Dtmf { source: DtmfSource::Both, .. } => None,
            Event::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        }
    }

    /// The event's name, as `on_event` parameters and the call's events use it: `dtmf`,
    /// `speech:started`, `input`, `talk:done`, or a processor's own name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Dtmf { .. } => "dtmf",
            Event::NotifyPlayed { .. } => "notify",
            Event::Cleared => "cleared",
            Event::StreamDone { .. } => "stream:done",
            Event::Recording(_) => "recording",
            Event::Speech(speech) => speech.name(),
            Event::Input(_) => "input",
            Event::BargeIn(_) => "barge_in",
            Event::TalkDone { .. } => "talk:done",
            Event::Custom { name, .. } => name,
        }
    }

    /// A [`Event::Custom`] named `name` with `data`. Allocates: call it off the media thread or
    /// on rare occasions.
    pub fn custom(name: &'static str, data: impl Into<serde_json::Value>) -> Event {
        Event::Custom { name, data: std::sync::Arc::new(data.into()) }
    }
}

/// Why a stream the API started has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// It played its loops to the end.
    Finished,
    /// `DELETE /calls/{id}/stream`.
    Stopped,
    /// Another stream replaced it.
    Replaced,
    /// The call ended first.
    Hangup,
    /// The caller interrupted it (the stream's `barge_in`).
    BargeIn,
}

impl StreamEnd {
    /// A stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Finished => "finished",
            StreamEnd::Stopped => "stopped",
            StreamEnd::Replaced => "replaced",
            StreamEnd::Hangup => "hangup",
            StreamEnd::BargeIn => "barge_in",
        }
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

/// What a recorder reports about its file, as an [`Event::Recording`]. Each is made once per
/// recording (when the file is opened, when writing fails, when the call ends), never per frame.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordingEvent {
    /// The file is open and recording.
    Started {
        /// The file.
        path: PathBuf,
        /// `wav` or `opus`.
        format: &'static str,
        /// `caller`, `outbound`, `stereo` or `mixed`.
        channels: &'static str,
    },
    /// The file could not be opened, or writing it failed: the recording stops there, the call
    /// goes on.
    Failed {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
    /// The call ended: the recorder let go of the file, which its writer finalizes shortly
    /// after ([`RecordingEnd::take_final`] says when).
    Finished(Arc<RecordingEnd>),
}

impl RecordingEvent {
    /// The event as JSON, as the call's `recording` events carry it: `state` (`started`,
    /// `error`, `finished`), `path`, and the state's own fields.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            RecordingEvent::Started { path, format, channels } => {
                json!({ "state": "started", "path": path.display().to_string(), "format": format, "channels": channels })
            }
            RecordingEvent::Failed { path, error } => json!({ "state": "error", "path": path.display().to_string(), "error": error }),
            RecordingEvent::Finished(end) => {
                let mut data = json!({
                    "state": "finished",
                    "path": end.path.display().to_string(),
                    "duration_ms": end.duration_ms,
                    "samples": end.samples,
                    "dropped": end.dropped,
                });
                if let Some(error) = &end.error {
                    data["error"] = json!(error);
                }
                data
            }
        }
    }
}

/// A recording at the end of its call, as the media thread saw it.
#[derive(Debug)]
pub struct RecordingEnd {
    /// The file.
    pub path: PathBuf,
    /// Its duration in ms.
    pub duration_ms: u64,
    /// Samples per channel handed to the writer.
    pub samples: u64,
    /// Samples per channel dropped (ring full, or after a write error).
    pub dropped: u64,
    /// The writer's error, if it failed.
    pub error: Option<String>,
    /// Where the writer reports the final file, when nobody took it before.
    outcome: Mutex<Option<mpsc::Receiver<RecordingOutcome>>>,
    /// Where the finished file is uploaded, if anywhere.
    pub upload: Option<UploadTarget>,
}

impl RecordingEnd {
    /// The end of a recording whose writer reports the final file on `outcome` (if given).
    pub fn new(
        path: PathBuf,
        duration_ms: u64,
        samples: u64,
        dropped: u64,
        error: Option<String>,
        outcome: Option<mpsc::Receiver<RecordingOutcome>>,
    ) -> RecordingEnd {
        RecordingEnd { path, duration_ms, samples, dropped, error, outcome: Mutex::new(outcome), upload: None }
    }

    /// The same end, whose file is to be uploaded to `target`.
    pub fn uploading_to(mut self, target: Option<UploadTarget>) -> RecordingEnd {
        self.upload = target;
        self
    }

    /// The channel on which the writer reports the finalized file, once: whoever publishes the
    /// recording waits on it, so that a webhook that fetches the file gets it complete.
    pub fn take_final(&self) -> Option<mpsc::Receiver<RecordingOutcome>> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl PartialEq for RecordingEnd {
    fn eq(&self, other: &RecordingEnd) -> bool {
        (&self.path, self.duration_ms, self.samples, self.dropped, &self.error)
            == (&other.path, other.duration_ms, other.samples, other.dropped, &other.error)
    }
}
