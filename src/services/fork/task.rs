//! A fork's network side: one task on the fork runtime per fork. It connects (`ws://`, or
//! `wss://`: `target.rs`), sends `first_message`, then every [`POLL_INTERVAL`] sends the audio
//! ring's whole frames of `frame_ms` as binary messages (L16, or one Opus packet each, encoded
//! here: `codec.rs`), and reads the target's replies: binary audio (resampled to the call's
//! rate, kept in a backlog of up to [`MAX_BACKLOG_SECONDS`] and fed to the reply ring), text
//! (events, or commands: `command.rs`). It reconnects with backoff and jitter, reports overruns
//! of the audio ring, and at the end of the call sends what is left and closes with 1000 within
//! [`STOP_TIMEOUT`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringbuf::{HeapCons, HeapProd, traits::*};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};

use super::codec::{CodecError, Encoder};
use super::link::{Note, Reply, Shared, TaskEnd};
use super::metrics::{Disconnect, ForkCounters};
use super::target::{self, Security, Ws};
use super::{CONNECT_TIMEOUT, LiveTask, MAX_BACKLOG_SECONDS, MAX_BACKOFF, MIN_BACKOFF, POLL_INTERVAL, STOP_TIMEOUT, Target};
use crate::call::{Event, Marker};
use crate::protocol::SampleRate;
use crate::resample::Resampler;

mod replies;

/// How long one binary message may take to send before the rest waits for the next poll.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// How long without drops ends an overrun.
const OVERRUN_QUIET: Duration = Duration::from_millis(100);

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The connection failed.
    #[error(transparent)]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The peer did not take the message in time.
    #[error("send timed out")]
    Timeout,
    /// The frame could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Overrun tracking on the task's side of the audio ring.
#[derive(Debug, Default)]
struct Overrun {
    /// The drop count last seen, and when it last grew.
    seen: u64,
    last_drop: Option<tokio::time::Instant>,
    /// The drop count when the current overrun started.
    started_at: Option<u64>,
}

/// Why a connection ended.
enum Ended {
    /// The call ended.
    Stop,
    /// The target closed with 1000: no reconnect.
    Clean,
    /// Anything else: reconnect.
    Lost(String),
}

/// A fork's network side.
pub(super) struct Task {
    name: String,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    security: Security,
    first_message: Option<String>,
    /// Samples per binary message at the fork's rate (interleaved, with `send = "both"`).
    chunk: usize,
    /// One message's samples, taken from the audio ring.
    frame: Vec<i16>,
    encoder: Encoder,
    counters: Arc<ForkCounters>,
    /// The ring's drop count already added to `counters`.
    counted_drops: u64,
    /// Whether text replies may be commands.
    commands: bool,
    call_rate: SampleRate,
    reply_resampler: Option<Resampler>,
    /// Binary reply samples waiting for a whole 20 ms frame at `reply_rate`.
    reply_pending: Vec<i16>,
    /// Reply audio at the call's rate not yet in the reply ring.
    backlog: VecDeque<i16>,
    backlog_cap: usize,
    /// Reply samples pushed into the reply ring so far.
    pushed: u64,
    audio: HeapCons<i16>,
    reply_audio: HeapProd<i16>,
    replies: HeapProd<Reply>,
    notes: HeapCons<Note>,
    shared: Arc<Shared>,
    /// Counts this server's live fork tasks; dropped when the task ends.
    _live: LiveTask,
    notify_payloads: HashMap<Marker, Value>,
    next_marker: Marker,
    overrun: Overrun,
}

impl Task {
    /// The task for `target`, with the task's end of the rings.
    pub(super) fn new(target: Target, end: TaskEnd, counters: Arc<ForkCounters>, marker_base: Marker, live: LiveTask) -> Task {
        let chunk = target.chunk;
        let TaskEnd { audio, reply_audio, replies, notes, shared } = end;
        Task {
            name: target.name,
            request: target.request,
            security: target.security,
            first_message: target.first_message,
            chunk,
            frame: vec![0; chunk],
            encoder: target.encoder,
            counters,
            counted_drops: 0,
            commands: target.commands,
            call_rate: target.call_rate,
            reply_resampler: target.reply_resampler,
            reply_pending: Vec::new(),
            backlog: VecDeque::new(),
            backlog_cap: MAX_BACKLOG_SECONDS * target.call_rate.hz() as usize,
            pushed: 0,
            audio,
            reply_audio,
            replies,
            notes,
            shared,
            _live: live,
            notify_payloads: HashMap::new(),
            next_marker: marker_base,
            overrun: Overrun::default(),
        }
    }

    /// Runs the fork until the call ends (or the target closes cleanly and the call ends).
    pub(super) async fn run(mut self) {
        self.connect_and_send().await;
        self.count_drops();
    }

    /// Connects, sends and reconnects until the call ends or the target closes cleanly.
    async fn connect_and_send(&mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u32;
        loop {
            if self.stopping() {
                return;
            }
            let connecting = tokio::time::timeout(CONNECT_TIMEOUT, target::connect(self.request.clone(), self.security.clone()));
            tokio::pin!(connecting);
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            let attempt = loop {
                tokio::select! {
                    r = &mut connecting => break r,
                    _ = tick.tick() => {
                        if self.stopping() {
                            return;
                        }
                        self.housekeeping();
                    }
                }
            };
            let ended = match attempt {
                Ok(Ok(ws)) => {
                    failures = 0;
                    backoff = MIN_BACKOFF;
                    self.counters.connected();
                    self.event("fork:connected", json!({ "fork": self.name, "url": self.request.uri().to_string() }));
                    let ended = self.session(ws).await;
                    self.counters.disconnected(match ended {
                        Ended::Stop => Disconnect::CallEnded,
                        Ended::Clean => Disconnect::TargetClosed,
                        Ended::Lost(_) => Disconnect::Error,
                    });
                    ended
                }
                Ok(Err(error)) => {
                    self.counters.connect_failed();
                    Ended::Lost(format!("connect failed: {error}"))
                }
                Err(_) => {
                    self.counters.connect_failed();
                    Ended::Lost("connect timed out".into())
                }
            };
            match ended {
                Ended::Stop => return,
                Ended::Clean => {
                    self.shared.done.store(true, Ordering::Release);
                    self.event(
                        "fork:disconnected",
                        json!({ "fork": self.name, "reason": "closed by the target (1000)", "reconnect": false }),
                    );
                    // Nothing more to send; audio the target sent before it closed still plays.
                    while !self.stopping() {
                        self.housekeeping();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return;
                }
                Ended::Lost(reason) => {
                    // Every lost connection is reported; of a run of failed attempts, the first.
                    if failures == 0 {
                        tracing::info!(fork = self.name, reason, "fork target lost; reconnecting");
                        self.event("fork:disconnected", json!({ "fork": self.name, "reason": reason, "reconnect": true }));
                    }
                    failures += 1;
                }
            }
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let deadline = tokio::time::Instant::now() + delay;
            while tokio::time::Instant::now() < deadline {
                if self.stopping() {
                    return;
                }
                self.housekeeping();
                tokio::time::sleep(POLL_INTERVAL.max(Duration::from_millis(20))).await;
            }
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Sends a ready-made event to the media thread (dropped when its ring is full).
    fn event(&mut self, name: &'static str, data: Value) {
        if self.replies.try_push(Reply::Event(Event::custom(name, data))).is_err() {
            tracing::debug!(fork = self.name, name, "fork event dropped: ring full");
        }
    }

    /// One connection, until it ends.
    async fn session(&mut self, mut ws: Ws) -> Ended {
        // Each connection is a stream of its own.
        self.encoder.reset();
        if let Some(text) = self.first_message.clone()
            && let Err(e) = send_timeout(&mut ws, Message::text(text)).await
        {
            return Ended::Lost(e.to_string());
        }
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled = false;
        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(message)) => {
                        if let Some(ended) = self.handle_message(message) {
                            return ended;
                        }
                    }
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("connection closed without a close frame".into()),
                },
                _ = tick.tick() => {
                    if self.stopping() {
                        self.close(ws).await;
                        return Ended::Stop;
                    }
                    self.housekeeping();
                    if stalled {
                        match tokio::time::timeout(SEND_TIMEOUT, ws.flush()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Ended::Lost(e.to_string()),
                            Err(_) => continue,
                        }
                    }
                    if let Err(e) = self.send_notes(&mut ws).await {
                        return Ended::Lost(e.to_string());
                    }
                    match self.send_audio(&mut ws).await {
                        Ok(done) => stalled = !done,
                        Err(e) => return Ended::Lost(e.to_string()),
                    }
                }
            }
        }
    }

    /// Sends the ring's whole frames. `Ok(false)` when a send took too long (the frame is in
    /// the socket's buffer; the rest waits in the ring).
    async fn send_audio(&mut self, ws: &mut Ws) -> Result<bool, SendError> {
        while self.audio.occupied_len() >= self.chunk {
            self.audio.pop_slice(&mut self.frame);
            let payload = self.encoder.encode(&self.frame)?;
            let bytes = payload.len();
            match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::binary(payload))).await {
                Ok(Ok(())) => self.counters.sent(bytes),
                Ok(Err(e)) => return Err(SendError::Ws(e)),
                Err(_) => {
                    self.counters.sent(bytes);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Sends the caller's DTMF, speech events and played notifies as text.
    async fn send_notes(&mut self, ws: &mut Ws) -> Result<(), SendError> {
        while let Some(note) = self.notes.try_pop() {
            let text = match note {
                Note::Dtmf(digit) => json!({ "event": "dtmf", "digit": digit.to_string() }),
                Note::Speech(speech) => {
                    let mut event = speech.to_json();
                    event["event"] = json!(speech.name());
                    event
                }
                Note::BargeIn(cause) => {
                    // What the task holds of the reply is stale, and so is what it fed the ring
                    // since the media thread emptied it.
                    self.backlog.clear();
                    self.reply_pending.clear();
                    let _ = self.replies.try_push(Reply::Drop { upto: self.pushed });
                    if !self.commands {
                        continue;
                    }
                    json!({ "event": "barge_in", "cause": cause.as_str() })
                }
                Note::Played(marker) => {
                    let payload = self.notify_payloads.remove(&marker).unwrap_or(Value::Null);
                    json!({ "event": "notify", "payload": payload })
                }
            };
            send_timeout(ws, Message::text(text.to_string())).await?;
        }
        Ok(())
    }

    /// At the end of the call: the whole frames left, then a clean close, within the bound.
    async fn close(&mut self, mut ws: Ws) {
        let _ = tokio::time::timeout(STOP_TIMEOUT, async {
            let _ = self.send_audio(&mut ws).await;
            let frame = CloseFrame { code: CloseCode::Normal, reason: "call ended".into() };
            let _ = ws.close(Some(frame)).await;
            // Wait for the target's close frame, briefly.
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }

    /// Adds the frames the media thread dropped since the last look to the counters.
    fn count_drops(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.counted_drops {
            self.counters.dropped(dropped - self.counted_drops);
            self.counted_drops = dropped;
        }
    }

    /// Overrun events and counts, and the reply ring's feed from the backlog.
    fn housekeeping(&mut self) {
        self.count_drops();
        let now = tokio::time::Instant::now();
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.overrun.seen {
            self.overrun.seen = dropped;
            self.overrun.last_drop = Some(now);
            if self.overrun.started_at.is_none() {
                self.overrun.started_at = Some(dropped - 1);
                tracing::debug!(fork = self.name, "fork overrun started");
                self.event("fork:overrun", json!({ "fork": self.name, "state": "started" }));
            }
        } else if let (Some(start), Some(last)) = (self.overrun.started_at, self.overrun.last_drop)
            && now.duration_since(last) >= OVERRUN_QUIET
        {
            self.overrun.started_at = None;
            self.event("fork:overrun", json!({ "fork": self.name, "state": "stopped", "dropped_frames": dropped - start }));
        }
        while !self.backlog.is_empty() && self.reply_audio.vacant_len() > 0 {
            let (a, _) = self.backlog.as_slices();
            let n = self.reply_audio.push_slice(a);
            self.backlog.drain(..n);
            self.pushed += n as u64;
        }
    }
}

/// Sends one message, waiting at most ten times the audio's send timeout.
async fn send_timeout(ws: &mut Ws, message: Message) -> Result<(), SendError> {
    match tokio::time::timeout(SEND_TIMEOUT * 10, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SendError::Ws(e)),
        Err(_) => Err(SendError::Timeout),
    }
}

/// `delay` ± 20 %, from the clock's low bits (no RNG needed for spreading reconnects).
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let factor = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    delay.mul_f64(factor)
}
