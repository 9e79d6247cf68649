//! The registry of live and recently ended calls that the control API reads and steers.
//!
//! Only call tasks and HTTP handlers touch it (a short `Mutex` on the control side); the
//! media threads never do. Each live call has a command channel to its call task, which
//! forwards media commands to the media thread through the call's control ring.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::call::CallId;
use crate::call::Marker;
use crate::media::{CallLink, Hangup};
use crate::protocol::SampleRate;
use crate::session::Control;

/// Commands waiting for a call's task; beyond this the API answers 503.
pub(crate) const COMMAND_QUEUE: usize = 16;

/// `notify` payloads waiting for the platform's acknowledgement, per call.
pub(crate) const MAX_PENDING_NOTIFIES: usize = 64;

/// What the control API asks of a call's task.
#[derive(Debug)]
pub(crate) enum CallCommand {
    /// Close the call with 1000 after the media thread has finished it.
    Hangup,
    /// A media command for the session. Boxed: the call's channel holds room for a block of
    /// commands from the start, which should not cost a command's full size each.
    Media(Box<Control>),
}

impl CallCommand {
    /// A media command for the session.
    pub(crate) fn media(control: Control) -> CallCommand {
        CallCommand::Media(Box::new(control))
    }
}

/// A live call as the control plane sees it.
pub(crate) struct LiveCall {
    pub serial: u64,
    pub id: CallId,
    pub path: String,
    pub rate: SampleRate,
    pub metadata: Map<String, Value>,
    pub started_at: SystemTime,
    pub started: Instant,
    pub link: Arc<CallLink>,
    pub commands: mpsc::Sender<CallCommand>,
    pub muted: AtomicBool,
    pub earmuffed: AtomicBool,
    /// API notifies waiting for the platform's acknowledgement: marker → payload.
    pub notifies: Mutex<HashMap<Marker, Value>>,
    next_marker: AtomicU64,
    next_stream: AtomicU64,
    /// Whether the call's route has a `vad` (so that speech can barge in).
    pub detects_speech: bool,
    /// Whether the call is another node's conference link (not a call of the cluster: it is not
    /// registered, and `GET /calls` leaves it out).
    pub conference_link: bool,
}

impl LiveCall {
    /// The call, saying whether it is another node's conference link.
    pub fn linking(mut self, link: bool) -> LiveCall {
        self.conference_link = link;
        self
    }

    /// The call, saying whether its route detects speech.
    pub fn detecting_speech(mut self, detects_speech: bool) -> LiveCall {
        self.detects_speech = detects_speech;
        self
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        serial: u64,
        id: CallId,
        path: String,
        rate: SampleRate,
        metadata: Map<String, Value>,
        link: Arc<CallLink>,
        commands: mpsc::Sender<CallCommand>,
    ) -> LiveCall {
        LiveCall {
            serial,
            id,
            path,
            rate,
            metadata,
            started_at: SystemTime::now(),
            started: Instant::now(),
            link,
            commands,
            muted: AtomicBool::new(false),
            earmuffed: AtomicBool::new(false),
            notifies: Mutex::new(HashMap::new()),
            next_marker: AtomicU64::new(1),
            next_stream: AtomicU64::new(1),
            detects_speech: false,
            conference_link: false,
        }
    }

    /// A fresh marker for an API notify.
    pub fn notify_marker(&self) -> Marker {
        Marker::api(self.next_marker.fetch_add(1, Ordering::Relaxed))
    }

    /// A fresh stream id.
    pub fn stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// The pending notifies (a poisoned lock still holds a usable map).
    pub fn pending_notifies(&self) -> MutexGuard<'_, HashMap<Marker, Value>> {
        self.notifies.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether callpipe has begun hanging up.
    pub fn hanging_up(&self) -> bool {
        self.link.hangup.load(Ordering::Acquire)
    }

    /// The call as the API shows it now.
    pub fn view(&self) -> CallView {
        let link = &self.link.stats;
        let s = link.session();
        let r = Ordering::Relaxed;
        let frame_bytes = self.rate.frame_bytes() as u64;
        CallView {
            id: self.id.clone(),
            status: CallStatus::Live,
            path: self.path.clone(),
            rate: self.rate.hz(),
            metadata: self.metadata.clone(),
            start_time: crate::events::timestamp(self.started_at),
            end_time: None,
            duration_s: round_ms(self.started.elapsed().as_secs_f64()),
            frames_in: link.frames_in.load(r),
            frames_out: link.frames_out.load(r),
            late_frames: link.late_frames.load(r),
            dropped_in: s.dropped_in + link.ring_overrun_in_bytes.load(r).div_ceil(frame_bytes),
            dropped_out: s.dropped_out + link.ring_overrun_out.load(r),
            wrong_size: link.wrong_size.load(r),
            players_active: s.players_active,
            muted: self.muted.load(r),
            earmuffed: self.earmuffed.load(r),
            close_code: None,
            hangup: self.hanging_up().then(|| hangup_name(self.link.hangup_reason())),
        }
    }
}

fn hangup_name(reason: Hangup) -> &'static str {
    match reason {
        Hangup::Shutdown => "shutdown",
        Hangup::Api => "api",
        Hangup::MaxDuration => "max_duration",
        Hangup::Processor => "processor",
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Whether a call is live or has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// Connected now.
    Live,
    /// Ended recently.
    Ended,
}

impl CallStatus {
    /// Parses a `status` filter: `live` (or the platform's `answered`), `ended` (or `completed`).
    pub fn parse(value: &str) -> Option<CallStatus> {
        match value.to_ascii_lowercase().as_str() {
            "live" | "answered" | "started" => Some(CallStatus::Live),
            "ended" | "completed" => Some(CallStatus::Ended),
            _ => None,
        }
    }
}

/// One call in the API's answers.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    /// The call id: from the URI query (`call_id`), a metadata header, or generated.
    pub id: CallId,
    /// `live` or `ended`.
    pub status: CallStatus,
    /// The path the platform connected to.
    pub path: String,
    /// Sample rate in Hz.
    pub rate: u32,
    /// The metadata headers of the first message.
    pub metadata: Map<String, Value>,
    /// When the call was accepted (RFC 3339, UTC).
    pub start_time: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Seconds since it started, or its length once ended.
    pub duration_s: f64,
    /// Audio frames received.
    pub frames_in: u64,
    /// Audio frames sent.
    pub frames_out: u64,
    /// Frames sent more than 1 ms after their playout deadline.
    pub late_frames: u64,
    /// Caller frames dropped (stale or overflowing).
    pub dropped_in: u64,
    /// Outbound frames dropped.
    pub dropped_out: u64,
    /// Caller frames of the wrong size.
    pub wrong_size: u64,
    /// Players playing now (processors' and the API's stream).
    pub players_active: u64,
    /// Whether the API muted the call.
    pub muted: bool,
    /// Whether the API earmuffed the call.
    pub earmuffed: bool,
    /// The WebSocket close code, once ended (1005: none given, 1006: connection lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_code: Option<i32>,
    /// Why callpipe hung up, when it did: `api`, `max_duration` or `shutdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hangup: Option<&'static str>,
}

/// Live calls and a bounded history of ended ones.
pub(crate) struct Calls {
    live: Mutex<HashMap<u64, Arc<LiveCall>>>,
    ended: Mutex<VecDeque<CallView>>,
    keep_ended: usize,
}

impl Calls {
    pub fn new(keep_ended: usize) -> Calls {
        Calls { live: Mutex::new(HashMap::new()), ended: Mutex::new(VecDeque::new()), keep_ended }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, Arc<LiveCall>>> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ended(&self) -> MutexGuard<'_, VecDeque<CallView>> {
        self.ended.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert(&self, call: Arc<LiveCall>) {
        self.live().insert(call.serial, call);
    }

    /// Moves a call to the history with its final view; `before` runs while the live list is
    /// locked, just before the call leaves it.
    pub fn end(&self, serial: u64, view: CallView, before: impl FnOnce()) {
        let link = {
            let mut live = self.live();
            before();
            live.remove(&serial).is_some_and(|c| c.conference_link)
        };
        if self.keep_ended == 0 || link {
            return;
        }
        let mut ended = self.ended();
        while ended.len() >= self.keep_ended {
            ended.pop_front();
        }
        ended.push_back(view);
    }

    /// Runs `f` over the live calls with the list locked (briefly: for sums).
    pub fn with_live<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &Arc<LiveCall>>) -> R) -> R {
        let live = self.live();
        f(&mut live.values())
    }

    /// Every live call.
    pub fn live_calls(&self) -> Vec<Arc<LiveCall>> {
        self.live().values().cloned().collect()
    }

    /// The live calls with this id (normally one; call ids come from the caller), conference
    /// links left out.
    pub fn find_live(&self, id: &str) -> Vec<Arc<LiveCall>> {
        // A conference link bears its member's id, but the call is the member's node's.
        self.live().values().filter(|c| c.id == id && !c.conference_link).cloned().collect()
    }

    /// The most recent ended call with this id.
    pub fn find_ended(&self, id: &str) -> Option<CallView> {
        self.ended().iter().rev().find(|c| c.id == id).cloned()
    }

    /// Calls, newest first, optionally of one status.
    pub fn list(&self, status: Option<CallStatus>) -> Vec<CallView> {
        let mut calls = Vec::new();
        if status != Some(CallStatus::Ended) {
            let mut live = self.live_calls();
            live.retain(|c| !c.conference_link);
            live.sort_by_key(|c| std::cmp::Reverse(c.serial));
            calls.extend(live.iter().map(|c| c.view()));
        }
        if status != Some(CallStatus::Live) {
            calls.extend(self.ended().iter().rev().cloned());
        }
        calls
    }
}
