//! One connection: upgrade, metadata, routing, then a thin loop that moves bytes between the
//! socket and the call's rings.
//!
//! The loop is a single `poll_fn` future woken by the socket and by the media thread (through
//! the relay). Per wake-up it writes everything the pacer released (one flush, so one send for
//! however many frames), then reads everything the socket has. It never waits on a ring.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ringbuf::traits::{Consumer, Observer, Producer};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use super::calls::{COMMAND_QUEUE, CallCommand, CallStatus, CallView, LiveCall};
use super::edge::{CallEdge, EdgeLimits, Limit, Text};
use super::tls::{self, ServerStream};
use super::{HANDSHAKE_TIMEOUT, LATE_THRESHOLD_US, Shared};
use crate::auth::Denied;
use crate::config::ReadMode;
use crate::media::{ConnEnd, Hangup, NewCall, OutItem, RingSizes, call_rings};
use crate::processor::{CallInfo, ConferenceJoinError, ConferenceState, DtmfSource, Event, Membership};
use crate::protocol::{AppAction, MAX_FRAME_BYTES, Metadata, NOTIFY_MARKER_KEY};
use crate::session::{CloseCode, Control, FirstMessage, InboundEvent, Rejection, Session, SharedAudio, admit_first_message, call_id_from};

/// The WebSocket read buffer. tungstenite's default of 128 KiB is zero-filled before every read
/// and costs 135 KB per connection; two 24 kHz frames' worth is enough (a burst takes more
/// reads, not more memory).
const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Caller frames the ring to the media thread holds. The media thread takes them within a
/// millisecond, and a full ring makes the connection stop reading (the rest waits in the
/// socket), so a few frames are enough.
const AUDIO_RING_FRAMES: usize = 4;

/// How long a closing call waits for its media thread to finish the session.
const MEDIA_FINISH_WAIT: Duration = Duration::from_secs(1);

/// How long a call's `recording` events wait for the writer thread to finalize the files.
const FINALIZE_WAIT: Duration = Duration::from_secs(2);

/// How long sending a close frame may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long, after sending a close frame, the peer's input is read and discarded while its
/// own close frame is awaited (RFC 6455 section 7.1.1): closing a socket with unread input makes
/// the kernel send a reset, which destroys the close frame still in flight.
const LINGER: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<ServerStream>;

/// Why the call's I/O loop ended.
#[derive(Debug)]
enum Ending {
    /// The peer sent a close frame (with its code) or ended the stream.
    PeerClosed(Option<u16>),
    /// The socket failed (reset, broken pipe).
    PeerLost(String),
    /// callpipe closes the call because of the peer's input.
    Reject(Rejection),
    /// callpipe hangs up (the media thread has finished the call; the link says why).
    Hangup,
}

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _connection = Connection::new(&shared);
    let _ = stream.set_nodelay(true);
    if let Some(bytes) = shared.config.server.send_buffer_bytes {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
    }
    // The TLS handshake (if any) and the upgrade share one deadline.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let Some(stream) = tls::accept(stream, peer, &shared, deadline).await else { return };
    let permit = shared.permits.clone().try_acquire_owned().ok();
    let mut draining = false;
    let mut target = None;
    let mut denied: Option<Denied> = None;
    // The error type is tungstenite's own callback contract; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let path = request.uri().path();
        target = Some((path.to_owned(), request.uri().query().map(str::to_owned)));
        // Read when the request has arrived, not when the socket was accepted.
        draining = shared.draining.load(Ordering::Acquire);
        if permit.is_none() || draining {
            return Err(error_response(StatusCode::SERVICE_UNAVAILABLE, "callpipe is at capacity or shutting down"));
        }
        if !shared.config.serves_path(path) {
            return Err(error_response(StatusCode::NOT_FOUND, "no route for this path"));
        }
        let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Err(refusal) = shared.config.admission(path).check(authorization, SystemTime::now()) {
            let mut response = error_response(StatusCode::UNAUTHORIZED, &refusal.message);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            denied = Some(refusal);
            return Err(response);
        }
        Ok(response)
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(shared.config.server.max_message_bytes))
        .max_frame_size(Some(shared.config.server.max_message_bytes));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config));
    let mut ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let (path, _) = target.unwrap_or_default();
            if permit.is_none() || draining {
                shared.stats.rejected_unavailable.fetch_add(1, Ordering::Relaxed);
                info!(%peer, path, "upgrade refused: 503 at capacity or draining");
            } else if let Some(refusal) = denied {
                shared.stats.count_unauthorized(refusal.reason);
                info!(%peer, path, reason = refusal.reason, detail = %refusal.message, "upgrade refused: 401");
            } else if !shared.config.serves_path(&path) && !path.is_empty() {
                shared.stats.rejected_not_found.fetch_add(1, Ordering::Relaxed);
                info!(%peer, path, "upgrade refused: 404 no route");
            } else {
                shared.stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, error = %e, "handshake failed");
            }
            return;
        }
        Err(_) => {
            shared.stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            info!(%peer, "handshake timed out");
            return;
        }
    };
    let (path, query) = target.unwrap_or_default();

    let metadata = match first_message(&mut ws, &shared).await {
        Ok(Some(_)) if shared.draining.load(Ordering::Acquire) => {
            info!(%peer, path, close = 1001, "call refused: draining");
            close(&mut ws, CloseCode::Away, "callpipe is shutting down").await;
            return;
        }
        Ok(Some(metadata)) => metadata,
        Ok(None) => return,
        Err(rejection) => {
            shared.stats.count_close(rejection.code);
            info!(%peer, path, close = rejection.code.code(), reason = %rejection.reason, "call refused");
            close(&mut ws, rejection.code, &rejection.reason).await;
            return;
        }
    };
    let serial = shared.next_call.fetch_add(1, Ordering::Relaxed);
    let id = call_id_from(query.as_deref(), &metadata).unwrap_or_else(|| format!("cp-{:x}-{serial}", std::process::id()));
    let Some(route_index) = shared.config.route_index(&path, &metadata) else {
        shared.stats.count_close(CloseCode::Policy);
        info!(%peer, id, path, close = 1008, "call refused: no route matches its metadata");
        close(&mut ws, CloseCode::Policy, "no route matches the metadata").await;
        return;
    };
    let route = &shared.config.routes[route_index];
    let rate = metadata.rate;
    let headers = metadata.headers.clone();
    let call = CallInfo { id: id.clone(), path: path.clone(), metadata };
    let mut events = CallEvents {
        shared: shared.clone(),
        id: id.clone(),
        path: path.clone(),
        url: route.event_url.clone(),
        seq: 0,
        recordings: Vec::new(),
    };
    // Preparing processors may touch files (a recorder opens its file, a player loads and
    // resamples one): keep it off the runtime's worker threads.
    let prepared = {
        let (shared, specs, event_url) = (shared.clone(), route.processors.clone(), route.event_url.clone());
        tokio::task::spawn_blocking(move || {
            let mut session =
                shared.registry.build_pipeline(&specs).and_then(|pipeline| Session::new(rate, &call, pipeline, shared.config.session))?;
            // A conference member is admitted here too: starting a conference opens its files.
            let admitted = match session.take_conference_joins().pop() {
                Some(join) => Some(shared.conferences.admit(join, event_url.as_deref()).map_err(PrepareError::Conference)?),
                None => None,
            };
            Ok::<_, PrepareError>((session, admitted))
        })
        .await
    };
    let (session, admitted) = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(PrepareError::Conference(e))) => {
            let code = if matches!(e, ConferenceJoinError::Full { .. }) { CloseCode::Policy } else { CloseCode::Internal };
            shared.stats.count_close(code);
            warn!(id, path, error = %e, "call refused by its conference");
            events.publish("error", json!({ "error": e.to_string(), "close_code": code.code() }));
            let reason = if code == CloseCode::Policy { "conference full" } else { "cannot join the conference" };
            close(&mut ws, code, reason).await;
            return;
        }
        Ok(Err(PrepareError::Pipeline(e))) => {
            shared.stats.count_close(CloseCode::Internal);
            warn!(id, path, error = %e, "pipeline failed to prepare");
            events.publish("error", json!({ "error": format!("pipeline failed to prepare: {e}"), "close_code": 1011 }));
            close(&mut ws, CloseCode::Internal, "pipeline failed to prepare").await;
            return;
        }
        Err(e) => {
            shared.stats.count_close(CloseCode::Internal);
            warn!(id, path, error = %e, "pipeline preparation panicked");
            events.publish("error", json!({ "error": "pipeline preparation panicked", "close_code": 1011 }));
            close(&mut ws, CloseCode::Internal, "pipeline failed to prepare").await;
            return;
        }
    };
    let sizes = RingSizes::for_frames(rate.frame_bytes(), AUDIO_RING_FRAMES, shared.config.session.lookahead_frames as usize);
    let (mut end, media_end) = call_rings(sizes);
    let (conference, mut membership) = match admitted {
        Some((admitted, membership)) => (Some(admitted), Some(membership)),
        None => (None, None),
    };
    let track = membership.as_mut().and_then(|m| m.track.take());
    if let Some(m) = membership.as_ref().filter(|m| m.started) {
        publish_conference(
            &shared,
            &m.conference,
            "conference:started",
            json!({ "rate": m.conference.settings().rate, "recording": m.conference.mixed_path() }),
        );
    }
    if shared.media.add(NewCall { session, end: media_end, conference }).is_err() {
        if let Some(m) = &membership {
            leave_conference(&shared, m);
        }
        shared.stats.count_close(CloseCode::Internal);
        warn!(id, "no media thread is running");
        events.publish("error", json!({ "error": "no media thread is running", "close_code": 1011 }));
        close(&mut ws, CloseCode::Internal, "media threads unavailable").await;
        return;
    }
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let live = Arc::new(LiveCall::new(serial, id.clone(), path.clone(), rate, headers.clone(), end.link.clone(), commands));
    shared.calls.insert(live.clone());
    shared.stats.calls_total.fetch_add(1, Ordering::Relaxed);
    shared.stats.calls_active.fetch_add(1, Ordering::AcqRel);
    if let Some(r) = shared.stats.routes.get(route_index) {
        r.calls_total.fetch_add(1, Ordering::Relaxed);
        r.calls_active.fetch_add(1, Ordering::Relaxed);
    }
    info!(id, path, rate = rate.hz(), processors = route.processors.len(), "call started");
    events.publish("started", json!({ "rate": rate.hz(), "metadata": headers, "start_time": crate::events::timestamp(live.started_at) }));

    let mut io = CallIo::new(&shared, live.clone(), command_rx, events);
    let ending = poll_fn(|cx| io.poll(cx, &mut ws, &mut end)).await;
    let close_code = match &ending {
        Ending::PeerClosed(code) => {
            end.link.peer_closed.store(true, Ordering::Release);
            end.link.notify_media();
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
            code.map(i32::from).unwrap_or(1005)
        }
        Ending::PeerLost(error) => {
            end.link.peer_closed.store(true, Ordering::Release);
            end.link.notify_media();
            debug!(id, error, "connection lost");
            1006
        }
        Ending::Reject(rejection) => {
            end.link.peer_closed.store(true, Ordering::Release);
            end.link.notify_media();
            shared.stats.count_close(rejection.code);
            info!(id, close = rejection.code.code(), reason = %rejection.reason, "closing call");
            send_close(&mut ws, rejection.code, &rejection.reason).await;
            i32::from(rejection.code.code())
        }
        Ending::Hangup => {
            // The media thread has finished and flushed: send what it released, then close.
            let flushed = poll_fn(|cx| match io.write(cx, &mut ws, &mut end) {
                Ok(()) if !io.written_all(&end) => Poll::Pending,
                _ => Poll::Ready(()),
            });
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, flushed).await;
            let (code, reason) = match end.link.hangup_reason() {
                Hangup::Shutdown => (CloseCode::Away, "callpipe is shutting down"),
                Hangup::Api => (CloseCode::Normal, "hung up through the control API"),
                Hangup::MaxDuration => (CloseCode::Normal, "maximum call duration reached"),
                Hangup::Processor => (CloseCode::Normal, "hung up by a processor"),
            };
            send_close(&mut ws, code, reason).await;
            i32::from(code.code())
        }
    };
    // Let the media thread finish the session so that its final counters (and, for recorders,
    // the finished files) are in before the end is reported.
    let _ = tokio::time::timeout(
        MEDIA_FINISH_WAIT,
        poll_fn(|cx| {
            end.link.waker.register(cx.waker());
            if end.link.is_media_done() { Poll::Ready(()) } else { Poll::Pending }
        }),
    )
    .await;
    io.drain_events(&mut end);
    let s = end.link.stats.session();
    let mut view = live.view();
    view.status = CallStatus::Ended;
    view.end_time = Some(crate::events::timestamp(SystemTime::now()));
    view.close_code = Some(close_code);
    view.players_active = 0;
    info!(
        id,
        path,
        rate = rate.hz(),
        close = close_code,
        duration_s = format!("{:.2}", view.duration_s),
        frames_in = view.frames_in,
        frames_out = view.frames_out,
        late = view.late_frames,
        dropped_in = view.dropped_in,
        dropped_out = view.dropped_out,
        wrong_size = view.wrong_size,
        catchups = s.catchups,
        "call ended"
    );
    if let Some(m) = &membership {
        let conference = m.conference.clone();
        if let Some((file, offset, outcomes)) = track {
            io.events.publish_track(&file, offset, outcomes, &conference).await;
        }
    }
    if let Some(m) = &membership {
        leave_conference(&shared, m);
    }
    io.events.publish_recordings().await;
    io.events.publish("ended", ended_event(&view));
    // The call's ring counters move into the server's totals in the same step that takes it off
    // the live list, so that /metrics (which adds both) never counts it twice or not at all.
    shared.calls.end(serial, view, || {
        let r = Ordering::Relaxed;
        shared.stats.ring_overrun_in_bytes.fetch_add(end.link.stats.ring_overrun_in_bytes.load(r), r);
        shared.stats.ring_overrun_out.fetch_add(end.link.stats.ring_overrun_out.load(r), r);
        shared.stats.input_missing.fetch_add(s.input_missing, r);
    });
    if let Some(r) = shared.stats.routes.get(route_index) {
        r.calls_active.fetch_sub(1, Ordering::Relaxed);
    }
    // The media thread has let go of every buffer the API handed it.
    drop(io);
    if shared.stats.calls_active.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.idle.notify_waiters();
    }
    if matches!(ending, Ending::Reject(_) | Ending::Hangup) {
        // The call is over and reported; the socket stays until the peer has our close frame.
        linger(&mut ws).await;
    }
}

/// Why a call's media could not be prepared.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error(transparent)]
    Pipeline(#[from] crate::processor::ProcessorError),
    #[error(transparent)]
    Conference(ConferenceJoinError),
}

/// Publishes a conference's own event (no call: `conference` instead of `call_id`), to the log
/// and to the `event_url` of the route of the member that started it.
fn publish_conference(shared: &Shared, conference: &ConferenceState, kind: &str, fields: Value) {
    let mut event = json!({
        "event": kind,
        "conference": conference.name(),
        "timestamp": crate::events::timestamp(SystemTime::now()),
    });
    if let (Value::Object(event), Value::Object(fields)) = (&mut event, fields) {
        for (key, value) in fields {
            event.entry(key).or_insert(value);
        }
    }
    shared.events.publish(event, conference.event_url());
}

/// Takes a member out of its conference; after the last one, publishes `conference:ended` once
/// the mixed recording (if any) is final.
fn leave_conference(shared: &Arc<Shared>, membership: &Membership) {
    let Some(conference) = shared.conferences.leave(membership) else { return };
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        // The mixer notices within a cycle; the writer finalizes within a poll interval or two.
        let recording = conference
            .wait_for_mixed(FINALIZE_WAIT)
            .map(|o| json!({ "file": o.path, "duration_ms": o.duration_ms, "samples": o.samples, "dropped": o.dropped, "error": o.error }));
        let duration_ms = conference.started().elapsed().map_or(0, |d| d.as_millis() as u64);
        let fields = json!({ "duration_ms": duration_ms, "members_total": conference.joined_total(), "recording": recording });
        publish_conference(&shared, &conference, "conference:ended", fields);
    });
}

/// Counts a connection task while it lives, so that a drain can wait for every one of them.
struct Connection<'a>(&'a Shared);

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared) -> Connection<'a> {
        shared.connections.fetch_add(1, Ordering::AcqRel);
        Connection(shared)
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

fn ended_event(view: &CallView) -> Value {
    json!({
        "duration_s": view.duration_s,
        "close_code": view.close_code,
        "hangup": view.hangup,
        "frames_in": view.frames_in,
        "frames_out": view.frames_out,
        "late_frames": view.late_frames,
        "dropped_in": view.dropped_in,
        "dropped_out": view.dropped_out,
        "wrong_size": view.wrong_size,
        "end_time": view.end_time,
    })
}

/// Builds a call's events and hands them to the event bus, numbered in order.
struct CallEvents {
    shared: Arc<Shared>,
    id: String,
    path: String,
    url: Option<String>,
    seq: u64,
    /// Finished recordings whose files may still be being finalized.
    recordings: Vec<Value>,
}

impl CallEvents {
    /// Publishes `{"event": kind, "call_id", "path", "seq", "timestamp", ...fields}`; a field
    /// with one of the first five names is ignored.
    fn publish(&mut self, kind: &str, fields: Value) {
        let mut event = json!({
            "event": kind,
            "call_id": self.id,
            "path": self.path,
            "seq": self.seq,
            "timestamp": crate::events::timestamp(SystemTime::now()),
        });
        if let (Value::Object(event), Value::Object(fields)) = (&mut event, fields) {
            for (key, value) in fields {
                event.entry(key).or_insert(value);
            }
        }
        self.seq += 1;
        self.shared.events.publish(event, self.url.as_deref());
    }

    /// Publishes the `recording` events of the call's finished recordings once their files are
    /// finalized (a poll interval or two after the call ends; at most `FINALIZE_WAIT`), so that
    /// a webhook can fetch a complete file.
    async fn publish_recordings(&mut self) {
        let deadline = tokio::time::Instant::now() + FINALIZE_WAIT;
        for fields in std::mem::take(&mut self.recordings) {
            let file = fields.get("file").and_then(Value::as_str).map(std::path::PathBuf::from);
            while let Some(file) = &file
                && crate::processor::recording_in_progress(file)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.publish("recording", fields);
        }
    }

    /// Publishes the `recording` event of the call's conference track once its file is final
    /// (the mixer lets go of it within a cycle of the call's end).
    async fn publish_track(
        &mut self,
        file: &std::path::Path,
        offset: Duration,
        outcomes: std::sync::mpsc::Receiver<crate::processor::RecordingOutcome>,
        conference: &ConferenceState,
    ) {
        let deadline = tokio::time::Instant::now() + FINALIZE_WAIT;
        let outcome = loop {
            match outcomes.try_recv() {
                Ok(outcome) => break Some(outcome),
                Err(_) if tokio::time::Instant::now() >= deadline => break None,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let mut fields = json!({
            "state": "finished",
            "file": file,
            "conference": conference.name(),
            "conference_offset_ms": offset.as_millis() as u64,
        });
        if let Some(o) = outcome {
            fields["duration_ms"] = json!(o.duration_ms);
            fields["samples"] = json!(o.samples);
            fields["dropped"] = json!(o.dropped);
            if let Some(error) = o.error {
                fields["error"] = json!(error);
            }
        }
        self.publish("recording", fields);
    }

    /// Publishes a processor's or the session's event.
    fn processor_event(&mut self, event: &Event) {
        match event {
            // A key the platform reported went out as it arrived; `dtmf_detect`'s merged twin of
            // it would repeat it.
            Event::Dtmf { source: DtmfSource::Both, .. } => {}
            Event::Dtmf { digit, start_ms, duration_ms, source } => {
                let source = if *source == DtmfSource::Platform { "platform" } else { "inband" };
                self.publish(
                    "dtmf",
                    json!({ "digit": digit.as_char().to_string(), "source": source, "start_ms": start_ms, "duration_ms": duration_ms }),
                );
            }
            Event::StreamDone { id, reason } => {
                self.publish("stream:done", json!({ "source": "api", "stream_id": id, "reason": reason.as_str() }))
            }
            Event::Custom { name: "recording", data } => match data.get("state").and_then(Value::as_str) {
                Some("finished") => {
                    // The recording's file goes in `file`: `path` is the call's. The event waits
                    // for the writer thread to finalize the file (see `publish_recordings`).
                    let mut fields = Value::clone(data);
                    if let Some(map) = fields.as_object_mut()
                        && let Some(file) = map.remove("path")
                    {
                        map.insert("file".into(), file);
                    }
                    self.recordings.push(fields);
                }
                Some("error") => {
                    self.publish("error", json!({ "source": "recording", "error": data.get("error"), "file": data.get("path") }))
                }
                _ => debug!(id = self.id, %data, "recording"),
            },
            Event::Custom { name: "stream:done", data } => {
                let mut fields = Value::clone(data);
                fields["source"] = json!("play");
                self.publish("stream:done", fields);
            }
            Event::Custom { name, data } => self.publish(name, Value::clone(data)),
            Event::NotifyPlayed { .. } | Event::Cleared => {}
        }
    }
}

/// Waits for the metadata frame. `Ok(None)`: the peer left before sending anything.
async fn first_message(ws: &mut Ws, shared: &Shared) -> Result<Option<Metadata>, Rejection> {
    let deadline = tokio::time::Instant::now() + shared.config.server.metadata_timeout;
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return admit_first_message(FirstMessage::Timeout).map(Some),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return rejection_for(&e).map_or(Ok(None), Err),
            Ok(Some(Ok(message))) => message,
        };
        return match message {
            Message::Text(text) => admit_first_message(FirstMessage::Text(text.as_str())).map(Some),
            Message::Binary(bytes) => admit_first_message(FirstMessage::Binary(&bytes)).map(Some),
            Message::Close(_) => Ok(None),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
    }
}

/// The close that answers a WebSocket error, if the peer is still there to hear it.
fn rejection_for(error: &WsError) -> Option<Rejection> {
    match error {
        WsError::Capacity(e) => Some(Rejection::new(CloseCode::TooBig, e.to_string())),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(e) => Some(Rejection::new(CloseCode::Invalid, e.to_string())),
        WsError::Utf8(_) => Some(Rejection::new(CloseCode::Invalid, "text frame is not UTF-8")),
        _ => None,
    }
}

fn error_response(status: StatusCode, body: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body.to_owned()));
    *response.status_mut() = status;
    response
}

/// Sends a close frame, then lingers until the peer has it (see [`linger`]).
async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    send_close(ws, code, reason).await;
    linger(ws).await;
}

async fn send_close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame { code: WsCloseCode::from(code.code()), reason: reason.into() };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
}

/// After our close frame: reads and discards the peer's input until its close frame, the end
/// of the stream, an error or [`LINGER`], so that the socket is never closed with unread input
/// (the kernel would answer with a reset and the peer might never read our close code, a
/// flooding peer least of all).
async fn linger(ws: &mut Ws) {
    use tokio::io::AsyncReadExt;
    let drain = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => {}
                Some(Err(_)) => break,
            }
        }
        // The stream cannot be parsed any more (an oversized or malformed message): read the
        // raw bytes instead, until the peer stops sending for a moment.
        let mut sink = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), ws.get_mut().read(&mut sink)).await {
            if n == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The per-call socket loop: its counters, limits and control commands.
struct CallIo {
    shared: Arc<Shared>,
    call: Arc<LiveCall>,
    frame_bytes: usize,
    /// The call's protocol rules: frame sizes, the text rate, idle and maximum duration.
    edge: CallEdge,
    needs_flush: bool,
    /// Since when the socket has refused our writes (the peer is not reading).
    blocked_since: Option<Instant>,
    frame: [u8; MAX_FRAME_BYTES],
    commands: mpsc::Receiver<CallCommand>,
    /// A command waiting for room in the control ring.
    pending: Option<Control>,
    /// Caller audio waiting for room in the audio ring: the socket is not read meanwhile, so
    /// a burst waits in the kernel instead of being dropped.
    pending_audio: Option<(Bytes, usize)>,
    /// Audio the API handed to the media thread: dropped here once the session has let go.
    retained: Vec<SharedAudio>,
    events: CallEvents,
    /// Wakes the task at the earliest instant a limit (idle, maximum duration) could be
    /// reached: nothing else may wake a call that receives and sends nothing.
    limit_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl CallIo {
    fn new(shared: &Arc<Shared>, call: Arc<LiveCall>, commands: mpsc::Receiver<CallCommand>, events: CallEvents) -> CallIo {
        let rate = call.rate;
        let config = &shared.config.server;
        let limits = EdgeLimits {
            frame_policy: config.frame_policy,
            max_text_per_second: config.max_text_per_second,
            idle_timeout: config.idle_timeout,
            max_duration: config.max_duration,
        };
        CallIo {
            shared: shared.clone(),
            frame_bytes: rate.frame_bytes(),
            edge: CallEdge::new(rate, limits, call.started),
            needs_flush: false,
            blocked_since: None,
            frame: [0; MAX_FRAME_BYTES],
            commands,
            pending: None,
            pending_audio: None,
            retained: Vec::new(),
            call,
            events,
            limit_timer: None,
        }
    }

    /// Keeps the limit timer armed: polled (and re-armed once it fires) so that the limits are
    /// checked when they fall due. Activity does not re-arm it; it is checked when it fires.
    fn poll_limit_timer(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(at) = self.edge.next_deadline() else {
                self.limit_timer = None;
                return;
            };
            let deadline = tokio::time::Instant::from_std(at);
            let timer = self.limit_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            if deadline <= tokio::time::Instant::now() {
                // Due: `check_limits` acts on it at this poll.
                return;
            }
            timer.as_mut().reset(deadline);
        }
    }

    /// Takes the control API's commands: hang-ups here, media commands into the control ring.
    fn poll_commands(&mut self, cx: &mut Context<'_>, end: &mut ConnEnd) {
        self.retained.retain(|audio| Arc::strong_count(audio) > 1);
        loop {
            if let Some(command) = self.pending.take() {
                if let Err(command) = end.control_in.try_push(command) {
                    // The ring is full: wait for the media thread, and leave the channel full so
                    // that the API answers 503 meanwhile.
                    self.pending = Some(command);
                    return;
                }
                end.link.notify_media();
            }
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(CallCommand::Hangup)) => {
                    self.shared.stats.hangups_api.fetch_add(1, Ordering::Relaxed);
                    info!(id = self.call.id, "hanging up: control API");
                    end.link.hang_up(Hangup::Api);
                }
                Poll::Ready(Some(CallCommand::Media(command))) => {
                    if let Control::Stream { audio, .. } | Control::Dtmf { audio } = &command {
                        self.retained.push(audio.clone());
                    }
                    self.pending = Some(command);
                }
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    /// The call's limits: idle timeout (no message of any kind) and maximum duration.
    fn check_limits(&mut self, end: &ConnEnd) -> Option<Ending> {
        if end.link.hangup.load(Ordering::Acquire) {
            self.edge.handle_hangup();
        }
        match self.edge.poll_limit(Instant::now())? {
            Limit::Idle(rejection) => {
                self.shared.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                Some(Ending::Reject(rejection))
            }
            Limit::MaxDuration => {
                self.shared.stats.hangups_max_duration.fetch_add(1, Ordering::Relaxed);
                let max_s = self.shared.config.server.max_duration.unwrap_or_default().as_secs();
                info!(id = self.call.id, max_s, "hanging up: maximum call duration");
                end.link.hang_up(Hangup::MaxDuration);
                None
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, ws: &mut Ws, end: &mut ConnEnd) -> Poll<Ending> {
        end.link.waker.register(cx.waker());
        self.poll_commands(cx, end);
        if let Some(ending) = self.check_limits(end) {
            return Poll::Ready(ending);
        }
        self.poll_limit_timer(cx);
        let ReadMode::Readiness = self.shared.config.server.read_mode;
        let mut socket_cx = Context::from_waker(cx.waker());
        if let Err(ending) = self.write(&mut socket_cx, ws, end) {
            return Poll::Ready(ending);
        }
        if let Poll::Ready(ending) = self.poll_read(&mut socket_cx, ws, end) {
            return Poll::Ready(ending);
        }
        self.drain_events(end);
        if let Some(since) = self.blocked_since
            && since.elapsed() >= self.shared.config.server.write_timeout
        {
            let reason = format!("peer left our frames unread for {} ms", self.shared.config.server.write_timeout.as_millis());
            return Poll::Ready(Ending::Reject(Rejection::new(CloseCode::Policy, reason)));
        }
        if end.link.is_media_done() {
            return Poll::Ready(Ending::Hangup);
        }
        Poll::Pending
    }

    /// Whether everything released has been written and flushed.
    fn written_all(&self, end: &ConnEnd) -> bool {
        end.items_out.is_empty() && !self.needs_flush
    }

    /// Writes every released item, then flushes once. Errors end the call.
    fn write(&mut self, cx: &mut Context<'_>, ws: &mut Ws, end: &mut ConnEnd) -> Result<(), Ending> {
        loop {
            match ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(Ending::PeerLost(e.to_string())),
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return Ok(());
                }
            }
            let Some(item) = end.items_out.try_pop() else { break };
            let message = match item {
                OutItem::Audio { released, deadline } => {
                    let frame = &mut self.frame[..self.frame_bytes];
                    let n = end.audio_out.pop_slice(frame);
                    debug_assert_eq!(n, frame.len(), "the media thread pushes whole frames");
                    let now = Instant::now();
                    self.shared.stats.send_lateness.record(now.saturating_duration_since(released));
                    if now.saturating_duration_since(deadline).as_micros() > u128::from(LATE_THRESHOLD_US) {
                        end.link.stats.late_frames.fetch_add(1, Ordering::Relaxed);
                        self.shared.stats.late_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    end.link.stats.frames_out.fetch_add(1, Ordering::Relaxed);
                    self.shared.stats.frames_out.fetch_add(1, Ordering::Relaxed);
                    Message::Binary(Bytes::copy_from_slice(frame))
                }
                OutItem::Clear => Message::text(AppAction::Clear.to_json()),
                OutItem::Notify(marker) => {
                    Message::text(AppAction::Notify { payload: serde_json::json!({ NOTIFY_MARKER_KEY: marker }) }.to_json())
                }
            };
            if let Err(e) = ws.start_send_unpin(message) {
                return Err(Ending::PeerLost(e.to_string()));
            }
            self.needs_flush = true;
        }
        if self.needs_flush {
            match ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    self.blocked_since = None;
                }
                Poll::Ready(Err(e)) => return Err(Ending::PeerLost(e.to_string())),
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                }
            }
        }
        Ok(())
    }

    /// Pushes held caller audio into the ring. Returns false while some still waits (the media
    /// thread wakes the task once it has made room).
    fn push_pending_audio(&mut self, end: &mut ConnEnd) -> bool {
        let Some((bytes, mut done)) = self.pending_audio.take() else { return true };
        done += end.audio_in.push_slice(&bytes[done..]);
        end.link.notify_media();
        if done == bytes.len() {
            return true;
        }
        end.link.inbound_waiting.store(true, Ordering::Release);
        // The media thread may have made room before it could see the flag: look once more.
        done += end.audio_in.push_slice(&bytes[done..]);
        if done == bytes.len() {
            end.link.inbound_waiting.store(false, Ordering::Release);
            return true;
        }
        self.pending_audio = Some((bytes, done));
        false
    }

    /// Reads everything the socket has into the rings, as long as the audio ring has room.
    fn poll_read(&mut self, cx: &mut Context<'_>, ws: &mut Ws, end: &mut ConnEnd) -> Poll<Ending> {
        loop {
            if !self.push_pending_audio(end) {
                return Poll::Pending;
            }
            let message = match ws.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ending::PeerClosed(None)),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(match rejection_for(&e) {
                        Some(rejection) => Ending::Reject(rejection),
                        None => Ending::PeerLost(e.to_string()),
                    });
                }
                Poll::Ready(Some(Ok(message))) => message,
            };
            match message {
                Message::Binary(bytes) => {
                    let now = Instant::now();
                    end.link.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    self.shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    let audio = match self.edge.handle_binary(now, bytes.len()) {
                        Ok(audio) => audio,
                        Err(rejection) => {
                            self.count_wrong_size(end);
                            return Poll::Ready(Ending::Reject(rejection));
                        }
                    };
                    if audio.wrong_size {
                        self.count_wrong_size(end);
                    }
                    self.pending_audio = Some((bytes, 0));
                }
                Message::Text(text) => match self.edge.handle_text(Instant::now(), text.as_str()) {
                    Ok(text) => self.handle_text(text, end),
                    Err(rejection) => {
                        self.shared.stats.closed_text_flood.fetch_add(1, Ordering::Relaxed);
                        return Poll::Ready(Ending::Reject(rejection));
                    }
                },
                Message::Close(frame) => return Poll::Ready(Ending::PeerClosed(frame.map(|f| u16::from(f.code)))),
                Message::Ping(_) => {
                    self.edge.handle_ping(Instant::now());
                    self.needs_flush = true;
                }
                Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    fn count_wrong_size(&self, end: &ConnEnd) {
        end.link.stats.wrong_size.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.wrong_size.fetch_add(1, Ordering::Relaxed);
    }

    /// Acts on a platform text message as the edge read it.
    fn handle_text(&mut self, text: Text, end: &mut ConnEnd) {
        let inbound = match text {
            Text::Event(event) => event,
            Text::ApiNotifyPlayed(marker) => {
                if let Some(payload) = self.call.pending_notifies().remove(&marker) {
                    self.events.publish("notify", json!({ "source": "api", "payload": payload }));
                }
                InboundEvent::NotifyPlayed { marker }
            }
            Text::ProcessorNotifyPlayed(marker) => {
                self.events.publish("notify", json!({ "source": "processor", "marker": marker }));
                InboundEvent::NotifyPlayed { marker }
            }
            Text::Ignored { bad, why } => {
                if bad {
                    self.shared.stats.bad_text.fetch_add(1, Ordering::Relaxed);
                }
                debug!(why, "ignoring a text message");
                return;
            }
        };
        if end.events_in.try_push(inbound).is_err() {
            end.link.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        end.link.notify_media();
    }

    /// Publishes the events the session and its processors emitted.
    fn drain_events(&mut self, end: &mut ConnEnd) {
        while let Some(event) = end.events_out.try_pop() {
            self.events.processor_event(&event);
        }
    }
}
