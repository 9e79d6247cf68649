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
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ringbuf::traits::{Consumer, Observer, Producer};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use super::{HANDSHAKE_TIMEOUT, LATE_THRESHOLD_US, Shared};
use crate::config::{FramePolicy, ReadMode};
use crate::media::{ConnEnd, NewCall, OutItem, RingSizes, call_rings};
use crate::processor::{CallInfo, Event};
use crate::protocol::{AppAction, MAX_FRAME_BYTES, Metadata, NOTIFY_MARKER_KEY, PlatformEvent, SampleRate};
use crate::session::{CloseCode, FirstMessage, InboundEvent, Rejection, Session, admit_first_message, call_id_from};

/// The WebSocket read buffer. tungstenite's default of 128 KiB is zero-filled before every read
/// and costs 135 KB per connection; a few frames' worth is enough.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// How long a closing call waits for its media thread to finish the session.
const MEDIA_FINISH_WAIT: Duration = Duration::from_secs(1);

/// How long a close handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<TcpStream>;

/// Why the call's I/O loop ended.
#[derive(Debug)]
enum Ending {
    /// The peer sent a close frame (with its code) or ended the stream.
    PeerClosed(Option<u16>),
    /// The socket failed (reset, broken pipe).
    PeerLost(String),
    /// callpipe closes the call because of the peer's input.
    Reject(Rejection),
    /// callpipe hangs up (server shutdown).
    Hangup(CloseCode),
}

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    if let Some(bytes) = shared.config.server.send_buffer_bytes {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
    }
    let permit = shared.permits.clone().try_acquire_owned().ok();
    let draining = shared.draining.load(Ordering::Acquire);
    let mut target = None;
    // The error type is tungstenite's own callback contract; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let path = request.uri().path();
        target = Some((path.to_owned(), request.uri().query().map(str::to_owned)));
        if permit.is_none() || draining {
            return Err(error_response(StatusCode::SERVICE_UNAVAILABLE, "callpipe is at capacity or shutting down"));
        }
        if !shared.config.serves_path(path) {
            return Err(error_response(StatusCode::NOT_FOUND, "no route for this path"));
        }
        Ok(response)
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(shared.config.server.max_message_bytes))
        .max_frame_size(Some(shared.config.server.max_message_bytes));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config));
    let mut ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let (path, _) = target.unwrap_or_default();
            if permit.is_none() || draining {
                shared.stats.rejected_unavailable.fetch_add(1, Ordering::Relaxed);
                info!(%peer, path, "upgrade refused: 503 at capacity or draining");
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
    let Some(route) = shared.config.route(&path, &metadata) else {
        shared.stats.count_close(CloseCode::Policy);
        info!(%peer, id, path, close = 1008, "call refused: no route matches its metadata");
        close(&mut ws, CloseCode::Policy, "no route matches the metadata").await;
        return;
    };
    let rate = metadata.rate;
    let call = CallInfo { id: id.clone(), path: path.clone(), metadata };
    // Preparing processors may touch files (a recorder opens its file, a player loads and
    // resamples one): keep it off the runtime's worker threads.
    let prepared = {
        let (shared, specs) = (shared.clone(), route.processors.clone());
        tokio::task::spawn_blocking(move || {
            shared.registry.build_pipeline(&specs).and_then(|pipeline| Session::new(rate, &call, pipeline, shared.config.session))
        })
        .await
    };
    let session = match prepared {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            shared.stats.count_close(CloseCode::Internal);
            warn!(id, path, error = %e, "pipeline failed to prepare");
            close(&mut ws, CloseCode::Internal, "pipeline failed to prepare").await;
            return;
        }
        Err(e) => {
            shared.stats.count_close(CloseCode::Internal);
            warn!(id, path, error = %e, "pipeline preparation panicked");
            close(&mut ws, CloseCode::Internal, "pipeline failed to prepare").await;
            return;
        }
    };
    let sizes = RingSizes::for_frames(
        rate.frame_bytes(),
        shared.config.session.inbound_buffer_frames,
        shared.config.session.lookahead_frames as usize,
    );
    let (mut end, media_end) = call_rings(sizes);
    if shared.media.add(NewCall { session, end: media_end }).is_err() {
        shared.stats.count_close(CloseCode::Internal);
        warn!(id, "no media thread is running");
        close(&mut ws, CloseCode::Internal, "media threads unavailable").await;
        return;
    }
    shared.calls.lock().map(|mut calls| calls.insert(serial, end.link.clone())).ok();
    shared.stats.calls_total.fetch_add(1, Ordering::Relaxed);
    shared.stats.calls_active.fetch_add(1, Ordering::AcqRel);
    let started = Instant::now();
    info!(id, path, rate = rate.hz(), processors = route.processors.len(), "call started");

    let mut io = CallIo::new(&shared, &id, rate);
    let ending = poll_fn(|cx| io.poll(cx, &mut ws, &mut end)).await;
    let close_code = match &ending {
        Ending::PeerClosed(code) => {
            end.link.peer_closed.store(true, Ordering::Release);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
            code.map(i32::from).unwrap_or(1005)
        }
        Ending::PeerLost(error) => {
            end.link.peer_closed.store(true, Ordering::Release);
            debug!(id, error, "connection lost");
            1006
        }
        Ending::Reject(rejection) => {
            end.link.peer_closed.store(true, Ordering::Release);
            shared.stats.count_close(rejection.code);
            info!(id, close = rejection.code.code(), reason = %rejection.reason, "closing call");
            close(&mut ws, rejection.code, &rejection.reason).await;
            i32::from(rejection.code.code())
        }
        Ending::Hangup(code) => {
            // The media thread has finished and flushed: send what it released, then close.
            let flushed = poll_fn(|cx| match io.write(cx, &mut ws, &mut end) {
                Ok(()) if !io.written_all(&end) => Poll::Pending,
                _ => Poll::Ready(()),
            });
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, flushed).await;
            close(&mut ws, *code, "callpipe is shutting down").await;
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
    shared.calls.lock().map(|mut calls| calls.remove(&serial)).ok();
    let s = end.link.stats.session();
    info!(
        id,
        path,
        rate = rate.hz(),
        close = close_code,
        duration_s = format!("{:.2}", started.elapsed().as_secs_f64()),
        frames_in = io.frames_in,
        frames_out = io.frames_out,
        late = io.late_frames,
        dropped_in = s.dropped_in + end.link.stats.ring_overrun_in_bytes.load(Ordering::Relaxed).div_ceil(rate.frame_bytes() as u64),
        dropped_out = s.dropped_out + end.link.stats.ring_overrun_out.load(Ordering::Relaxed),
        wrong_size = io.wrong_size,
        catchups = s.catchups,
        "call ended"
    );
    if shared.stats.calls_active.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.idle.notify_waiters();
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

async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame { code: WsCloseCode::from(code.code()), reason: reason.into() };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
}

/// The per-call socket loop and its counters.
struct CallIo<'a> {
    shared: &'a Shared,
    id: String,
    rate: SampleRate,
    frame_bytes: usize,
    frames_in: u64,
    frames_out: u64,
    late_frames: u64,
    wrong_size: u64,
    needs_flush: bool,
    /// Since when the socket has refused our writes (the peer is not reading).
    blocked_since: Option<Instant>,
    frame: [u8; MAX_FRAME_BYTES],
}

impl<'a> CallIo<'a> {
    fn new(shared: &'a Shared, id: &str, rate: SampleRate) -> CallIo<'a> {
        CallIo {
            shared,
            id: id.to_owned(),
            rate,
            frame_bytes: rate.frame_bytes(),
            frames_in: 0,
            frames_out: 0,
            late_frames: 0,
            wrong_size: 0,
            needs_flush: false,
            blocked_since: None,
            frame: [0; MAX_FRAME_BYTES],
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, ws: &mut Ws, end: &mut ConnEnd) -> Poll<Ending> {
        end.link.waker.register(cx.waker());
        // In tick mode the socket never wakes this task: the media thread does, every 20 ms.
        let noop = Context::from_waker(Waker::noop());
        let mut socket_cx = match self.shared.config.server.read_mode {
            ReadMode::Readiness => Context::from_waker(cx.waker()),
            ReadMode::Tick => noop,
        };
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
            return Poll::Ready(Ending::Hangup(CloseCode::Away));
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
                        self.late_frames += 1;
                        self.shared.stats.late_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    self.frames_out += 1;
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

    /// Reads everything the socket has into the rings.
    fn poll_read(&mut self, cx: &mut Context<'_>, ws: &mut Ws, end: &mut ConnEnd) -> Poll<Ending> {
        loop {
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
                    if self.frames_in == 0 {
                        end.link.mark_first_audio(Instant::now());
                    }
                    self.frames_in += 1;
                    self.shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    if bytes.len() != self.frame_bytes {
                        self.wrong_size += 1;
                        self.shared.stats.wrong_size.fetch_add(1, Ordering::Relaxed);
                        if self.shared.config.server.frame_policy == FramePolicy::Strict {
                            let reason = format!("frame of {} bytes, expected {} at {}", bytes.len(), self.frame_bytes, self.rate);
                            return Poll::Ready(Ending::Reject(Rejection::new(CloseCode::Invalid, reason)));
                        }
                    }
                    let pushed = end.audio_in.push_slice(&bytes);
                    if pushed < bytes.len() {
                        end.link.stats.ring_overrun_in_bytes.fetch_add((bytes.len() - pushed) as u64, Ordering::Relaxed);
                    }
                }
                Message::Text(text) => self.handle_text(text.as_str(), end),
                Message::Close(frame) => return Poll::Ready(Ending::PeerClosed(frame.map(|f| u16::from(f.code)))),
                Message::Ping(_) => self.needs_flush = true,
                Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    fn handle_text(&mut self, text: &str, end: &mut ConnEnd) {
        let event = match PlatformEvent::parse(text) {
            Ok(event) => event,
            Err(e) => {
                self.shared.stats.bad_text.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "ignoring a text message");
                return;
            }
        };
        let inbound = match event {
            PlatformEvent::Dtmf { digit, duration_ms } => InboundEvent::Dtmf { digit, duration_ms },
            PlatformEvent::Cleared => InboundEvent::Cleared,
            PlatformEvent::Notify { payload } => match payload.get(NOTIFY_MARKER_KEY).and_then(serde_json::Value::as_u64) {
                Some(marker) => InboundEvent::NotifyPlayed { marker },
                None => {
                    debug!(%payload, "notify acknowledgement for a payload callpipe did not send");
                    return;
                }
            },
            PlatformEvent::Unknown { event } => {
                debug!(event, "ignoring an unknown event");
                return;
            }
        };
        if end.events_in.try_push(inbound).is_err() {
            end.link.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs the events processors emitted (webhooks and the control API come later).
    fn drain_events(&mut self, end: &mut ConnEnd) {
        while let Some(event) = end.events_out.try_pop() {
            log_event(&self.id, &event);
        }
    }
}

fn log_event(id: &str, event: &Event) {
    info!(id, event = ?event, "event");
}
