//! Admission: from an accepted socket to a call on a media thread.
//!
//! Each accepted connection gets a task on the runtime that runs, under deadlines: the TLS
//! handshake (`tls`), the upgrade (`upgrade`: capacity, drain, route path, credentials), the
//! metadata frame, the route match and the pipeline's preparation (off the runtime's workers,
//! since it may touch files). Every refusal after the upgrade goes through [`refuse`]: counted,
//! logged with its reason, answered with a close frame the peer gets to read. An admitted call's
//! socket then leaves the runtime: it is handed, with the session and what the parser already
//! holds, to a media thread as a [`SocketEndpoint`], and the task goes on as the call's task
//! (`call_task`) for the control API and the call's events (`call_events`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::call_events::CallEvents;
use super::call_task::CallTask;
use super::calls::{COMMAND_QUEUE, LiveCall};
use super::endpoint::{LINGER, SocketEndpoint, rejection_for};
use super::tls::{self, ServerStream};
use super::transport::Transport;
use super::upgrade::{self, Refused};
use super::{ConnectionGuard, HANDSHAKE_TIMEOUT, Shared, link};
use crate::call::CallId;
use crate::media::{NewCall, call_rings};
use crate::processor::{CallInfo, ConferenceJoinError};
use crate::protocol::Metadata;
use crate::protocol::ws::{self, Message, Opcode, Parser, Role};
use crate::session::{CloseCode, FirstMessage, Rejection, Session, admit_first_message, call_id_from};

/// The parser's buffer before the call's rate is known: a metadata frame fits; a larger one
/// grows it, up to the message limit.
const ADMISSION_BUFFER: usize = 2048;

/// Why a call's media could not be prepared.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error(transparent)]
    Pipeline(#[from] crate::processor::ProcessorError),
    #[error(transparent)]
    Conference(ConferenceJoinError),
}

/// Admits one connection and, once it is a call, runs the call's task until the call ends.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let task_guard = ConnectionGuard::new(&shared);
    let _ = stream.set_nodelay(true);
    if let Some(bytes) = shared.config.server.send_buffer_bytes {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
    }
    // The TLS handshake (if any) and the upgrade share one deadline.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let Some(mut stream) = tls::accept(stream, peer, &shared, deadline).await else { return };
    let permit = shared.permits.clone().try_acquire_owned().ok();
    let upgraded = match upgrade::accept(&mut stream, &shared, permit.is_some(), deadline).await {
        Ok(upgraded) => upgraded,
        Err(refused) => return count_refused(&shared, peer, refused),
    };
    let (path, query) = (upgraded.path, upgraded.query);
    let max_message = shared.config.server.max_message_bytes;
    let mut parser = Parser::new(Role::Server, ADMISSION_BUFFER, max_message);
    parser.push(&upgraded.leftover);

    let metadata = match first_message(&mut stream, &mut parser, &shared).await {
        // A conference link still joins a draining home's live conference.
        Ok(Some(_)) if shared.draining.load(Ordering::Acquire) && path != crate::cluster::LINK_PATH => {
            return refuse(&mut stream, &mut parser, &shared, &path, Rejection::new(CloseCode::Away, "callpipe is shutting down")).await;
        }
        Ok(Some(metadata)) => metadata,
        Ok(None) => return,
        Err(rejection) => return refuse(&mut stream, &mut parser, &shared, &path, rejection).await,
    };
    let serial = shared.next_call.fetch_add(1, Ordering::Relaxed);
    let id = CallId::new(call_id_from(query.as_deref(), &metadata).unwrap_or_else(|| format!("cp-{:x}-{serial}", std::process::id())));
    // A link from another node names the route its member called there.
    let incoming = match link::incoming(&path, &metadata.headers) {
        Ok(incoming) => incoming,
        Err(why) => {
            warn!(id = id.as_str(), path, why, "conference link refused");
            return refuse(&mut stream, &mut parser, &shared, &path, Rejection::new(CloseCode::Policy, "invalid conference link")).await;
        }
    };
    // A draining home takes links to its live conferences only: a new one would be cut short.
    if let Some(link) = &incoming
        && shared.draining.load(Ordering::Acquire)
        && shared.conferences.get(&link.conference).is_none()
    {
        return refuse(&mut stream, &mut parser, &shared, &path, Rejection::new(CloseCode::Away, "callpipe is shutting down")).await;
    }
    let path = incoming.as_ref().map_or(path, |link| link.route.clone());
    let Some(route_index) = shared.config.route_index(&path, &metadata) else {
        let rejection = Rejection::new(CloseCode::Policy, "no route matches the metadata");
        return refuse(&mut stream, &mut parser, &shared, &path, rejection).await;
    };
    let route = &shared.config.routes[route_index];
    let rate = metadata.rate;
    let headers = metadata.headers.clone();
    let call = CallInfo { id: id.clone(), path: path.clone(), metadata };
    let (specs, event_url) = match &incoming {
        Some(link) => match link::home_pipeline(route, link) {
            // The member's node reports the call's events.
            Ok(specs) => (specs, None),
            Err(why) => {
                warn!(id = id.as_str(), path, why, node = link.node, "conference link refused");
                return refuse(&mut stream, &mut parser, &shared, &path, Rejection::new(CloseCode::Policy, "no conference for this link"))
                    .await;
            }
        },
        None => (link::outgoing(&shared, route, &call).await.0, route.event_url.clone()),
    };
    let mut events = CallEvents::new(shared.clone(), id.clone(), path.clone(), event_url.clone());
    let (session, admitted) = match prepare(&shared, specs, event_url, call).await {
        Ok(prepared) => prepared,
        Err((error, code, reason)) => {
            warn!(id = id.as_str(), path, error, "call refused: its media could not be prepared");
            events.publish("error", json!({ "error": error, "close_code": code.code() }));
            return refuse(&mut stream, &mut parser, &shared, &path, Rejection::new(code, reason)).await;
        }
    };

    // The call is admitted: its socket goes to a media thread, with what the parser holds.
    let (conn_end, media_end) = call_rings();
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let detects_speech = shared.config.routes[route_index].detects_speech();
    let live = Arc::new(
        LiveCall::new(serial, id.clone(), path.clone(), rate, headers.clone(), conn_end.link.clone(), commands)
            .detecting_speech(detects_speech)
            .linking(incoming.is_some()),
    );
    parser.shrink_to(rate.frame_bytes() + ws::MAX_HEADER);
    let transport = match into_transport(stream) {
        Ok(transport) => transport,
        Err(e) => {
            debug!(id = id.as_str(), error = %e, "the socket could not leave the runtime");
            return;
        }
    };
    let endpoint = SocketEndpoint::new(transport, parser, shared.clone(), live.clone(), ConnectionGuard::new(&shared));
    let (conference, membership) = match admitted {
        Some((admitted, membership)) => (Some(admitted), Some(membership)),
        None => (None, None),
    };
    let task = CallTask::new(shared.clone(), live, conn_end, command_rx, events, route_index, membership);
    if let Err(back) = shared.media.add(NewCall { session, end: media_end, endpoint: Box::new(endpoint), conference }) {
        // No media thread is running (the server is stopping): the endpoint closes the socket.
        drop(back);
        task.fail("no media thread is running").await;
        return;
    }
    // The call's task runs on its own: the admission's larger state is freed now.
    tokio::spawn(task.run(permit, task_guard));
}

/// Counts and logs an upgrade that was not accepted (the status is already sent).
fn count_refused(shared: &Shared, peer: SocketAddr, refused: Refused) {
    let stats = &shared.stats;
    match refused {
        Refused::Unavailable => {
            stats.rejected_unavailable.fetch_add(1, Ordering::Relaxed);
            info!(%peer, "upgrade refused: 503 at capacity or draining");
        }
        Refused::NotFound(path) => {
            stats.rejected_not_found.fetch_add(1, Ordering::Relaxed);
            info!(%peer, path, "upgrade refused: 404 no route");
        }
        Refused::Unauthorized(path, denied) => {
            stats.count_unauthorized(denied.reason);
            info!(%peer, path, reason = denied.reason, detail = %denied.message, "upgrade refused: 401");
        }
        Refused::BadRequest(why) => {
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            info!(%peer, why, "upgrade refused: 400");
        }
        Refused::Timeout => {
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            info!(%peer, "handshake timed out");
        }
        Refused::Gone(error) => {
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, error, "handshake failed");
        }
    }
}

/// Builds the route's pipeline and session, and admits a conference member, off the runtime's
/// workers. The error names what failed, with the close code and reason for the peer.
async fn prepare(
    shared: &Arc<Shared>,
    specs: Vec<crate::processor::ProcessorSpec>,
    event_url: Option<String>,
    call: CallInfo,
) -> Result<(Session, Option<(crate::processor::Admitted, crate::processor::Membership)>), (String, CloseCode, &'static str)> {
    let shared2 = shared.clone();
    let rate = call.metadata.rate;
    let prepared = tokio::task::spawn_blocking(move || {
        let mut session = shared2
            .registry
            .build_pipeline(&specs)
            .and_then(|pipeline| Session::new(rate, &call, pipeline, shared2.config.session, &shared2.services))?;
        // A conference member is admitted here too: starting a conference opens its files.
        let admitted = match session.take_conference_joins().pop() {
            Some(join) => Some(
                shared2.conferences.admit(join, event_url.as_deref(), std::time::SystemTime::now()).map_err(PrepareError::Conference)?,
            ),
            None => None,
        };
        Ok::<_, PrepareError>((session, admitted))
    })
    .await;
    match prepared {
        Ok(Ok(prepared)) => Ok(prepared),
        Ok(Err(PrepareError::Conference(e))) => {
            let full = matches!(e, ConferenceJoinError::Full { .. });
            let (code, reason) =
                if full { (CloseCode::Policy, "conference full") } else { (CloseCode::Internal, "cannot join the conference") };
            Err((e.to_string(), code, reason))
        }
        Ok(Err(PrepareError::Pipeline(e))) => {
            Err((format!("pipeline failed to prepare: {e}"), CloseCode::Internal, "pipeline failed to prepare"))
        }
        Err(_) => Err(("pipeline preparation panicked".into(), CloseCode::Internal, "pipeline failed to prepare")),
    }
}

/// The socket, off the runtime, for a media thread.
fn into_transport(stream: ServerStream) -> std::io::Result<Transport> {
    Ok(match stream {
        ServerStream::Plain(socket) => Transport::Plain(socket.into_std()?),
        ServerStream::Tls(tls) => {
            let (socket, session) = tls.into_inner();
            Transport::Tls(socket.into_std()?, Box::new(session))
        }
    })
}

/// Waits for the metadata frame. `Ok(None)`: the peer left before sending anything.
async fn first_message(stream: &mut ServerStream, parser: &mut Parser, shared: &Shared) -> Result<Option<Metadata>, Rejection> {
    let deadline = tokio::time::Instant::now() + shared.config.server.metadata_timeout;
    let mut pong = Vec::new();
    loop {
        loop {
            pong.clear();
            match parser.next() {
                Ok(Some(Message::Text(text))) => return admit_first_message(FirstMessage::Text(text)).map(Some),
                Ok(Some(Message::Binary(bytes))) => return admit_first_message(FirstMessage::Binary(bytes)).map(Some),
                Ok(Some(Message::Close(_))) => return Ok(None),
                Ok(Some(Message::Ping(payload))) => ws::encode(Opcode::Pong, payload, None, &mut pong),
                Ok(Some(Message::Pong)) => {}
                Ok(None) => break,
                Err(e) => return Err(rejection_for(&e)),
            }
            if !pong.is_empty() && stream.write_all(&pong).await.is_err() {
                return Ok(None);
            }
        }
        let space = parser.buffer_mut();
        match tokio::time::timeout_at(deadline, stream.read(space)).await {
            Err(_) => return admit_first_message(FirstMessage::Timeout).map(Some),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => parser.filled(n),
        }
    }
}

/// Refuses a call after the upgrade, the one way: counts the close, logs why, sends the close
/// frame, then reads and discards the peer's input until its close frame, the end of its
/// stream or [`LINGER`], so that the peer reads the code (a closed socket with unread input
/// would answer with a reset).
async fn refuse(stream: &mut ServerStream, parser: &mut Parser, shared: &Shared, path: &str, rejection: Rejection) {
    shared.stats.count_close(rejection.code);
    info!(path, close = rejection.code.code(), reason = %rejection.reason, "call refused");
    let mut frame = Vec::with_capacity(128);
    ws::encode_close(rejection.code.code(), &rejection.reason, None, &mut frame);
    let linger = async {
        stream.write_all(&frame).await?;
        stream.flush().await?;
        let mut raw = false;
        let mut sink = [0u8; 4096];
        loop {
            if !raw {
                loop {
                    match parser.next() {
                        Ok(Some(Message::Close(_))) => return Ok(()),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            raw = true;
                            break;
                        }
                    }
                }
            }
            let n = if raw { stream.read(&mut sink).await? } else { stream.read(parser.buffer_mut()).await? };
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if !raw {
                parser.filled(n);
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.shutdown()).await;
}
