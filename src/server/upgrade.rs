//! The HTTP upgrade to WebSocket, read and answered by callpipe itself.
//!
//! callpipe frames WebSocket messages itself once the call is on its media thread, so it reads
//! the upgrade request itself too: whatever the client sends after the request is the first
//! WebSocket data, and must reach the parser (a library's handshake would keep it in its own
//! buffer). The request is parsed and validated by tungstenite's handshake types
//! (`Request::try_parse`, `create_response`); the answer is a `101 Switching Protocols`, or a
//! status with a plain-text reason: 400 for a request that is not a WebSocket upgrade, 401 for
//! missing or wrong credentials, 404 for a path with no route, 408 when the request does not
//! arrive in time, 503 at capacity or while draining.

use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response, write_response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use super::Shared;
use super::tls::ServerStream;
use crate::auth::Denied;

/// The longest upgrade request read.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// An accepted upgrade.
#[derive(Debug)]
pub(super) struct Upgraded {
    /// The request's path.
    pub path: String,
    /// Its query string.
    pub query: Option<String>,
    /// Bytes the client sent after the request: the start of the WebSocket stream.
    pub leftover: Vec<u8>,
}

/// Why an upgrade was not accepted.
#[derive(Debug)]
pub(super) enum Refused {
    /// At capacity or draining: 503.
    Unavailable,
    /// No route serves the path: 404.
    NotFound(String),
    /// The credentials were refused: 401.
    Unauthorized(String, Denied),
    /// Not a WebSocket upgrade, or malformed: 400.
    BadRequest(String),
    /// The request did not arrive by the deadline: 408.
    Timeout,
    /// The client left or the socket failed: nothing to answer.
    Gone(String),
}

/// Reads the upgrade request from `stream` by `deadline` and answers it: `101` when the call
/// may proceed (`admit` says whether the server has room for it), an error status otherwise.
pub(super) async fn accept(stream: &mut ServerStream, shared: &Shared, has_room: bool, deadline: Instant) -> Result<Upgraded, Refused> {
    let (request, leftover) = match tokio::time::timeout_at(deadline, read_request(stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(refused)) => {
            if let Refused::BadRequest(why) = &refused {
                respond(stream, StatusCode::BAD_REQUEST, why, false).await;
            }
            return Err(refused);
        }
        Err(_) => {
            respond(stream, StatusCode::REQUEST_TIMEOUT, "the upgrade request did not arrive in time", false).await;
            return Err(Refused::Timeout);
        }
    };
    let path = request.uri().path().to_owned();
    // Read when the request has arrived, not when the socket was accepted.
    let draining = shared.draining.load(std::sync::atomic::Ordering::Acquire);
    // A draining home still takes links to its live conferences.
    let link = path == crate::cluster::LINK_PATH && shared.cluster.is_some();
    if !has_room || (draining && !link) {
        respond(stream, StatusCode::SERVICE_UNAVAILABLE, "callpipe is at capacity or shutting down", false).await;
        return Err(Refused::Unavailable);
    }
    let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    if link {
        // Another node linking a conference member: the cluster's control token admits it.
        if let Err(denied) = check_link_token(shared, authorization) {
            respond(stream, StatusCode::UNAUTHORIZED, &denied.message, true).await;
            return Err(Refused::Unauthorized(path, denied));
        }
    } else {
        if !shared.config.serves_path(&path) {
            respond(stream, StatusCode::NOT_FOUND, "no route for this path", false).await;
            return Err(Refused::NotFound(path));
        }
        if let Err(denied) = shared.config.admission(&path).check(authorization, SystemTime::now()) {
            respond(stream, StatusCode::UNAUTHORIZED, &denied.message, true).await;
            return Err(Refused::Unauthorized(path, denied));
        }
    }
    let response = match create_response(&request) {
        Ok(response) => response,
        Err(e) => {
            let why = format!("not a WebSocket upgrade: {e}");
            respond(stream, StatusCode::BAD_REQUEST, &why, false).await;
            return Err(Refused::BadRequest(why));
        }
    };
    let mut head = Vec::with_capacity(256);
    write_response(&mut head, &response).map_err(|e| Refused::Gone(e.to_string()))?;
    match tokio::time::timeout_at(deadline, async { stream.write_all(&head).await.and(stream.flush().await) }).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Refused::Gone(e.to_string())),
        Err(_) => return Err(Refused::Timeout),
    }
    let query = request.uri().query().map(str::to_owned);
    Ok(Upgraded { path, query, leftover })
}

/// A conference link's credentials: `Bearer <control.token>`.
fn check_link_token(shared: &Shared, authorization: Option<&str>) -> Result<(), Denied> {
    let token = shared.config.control.token.as_ref().map(|t| t.expose()).unwrap_or_default();
    let given = authorization.unwrap_or("").trim();
    let bearer = given.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
    match bearer {
        Some(t) if !token.is_empty() && crate::auth::constant_time_eq(t.as_bytes(), token) => Ok(()),
        _ => Err(Denied { reason: "bad_token", message: "a conference link needs the cluster's control token".into() }),
    }
}

/// Reads until the request's head is complete; returns it and what followed it.
async fn read_request(stream: &mut ServerStream) -> Result<(Request, Vec<u8>), Refused> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| Refused::Gone(e.to_string()))?;
        if n == 0 {
            return Err(Refused::Gone("closed before the upgrade request was complete".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        match Request::try_parse(&buf) {
            Ok(Some((size, request))) => return Ok((request, buf.split_off(size))),
            Ok(None) if buf.len() > MAX_REQUEST_BYTES => {
                return Err(Refused::BadRequest(format!("upgrade request over {MAX_REQUEST_BYTES} bytes")));
            }
            Ok(None) => {}
            Err(e) => return Err(Refused::BadRequest(format!("malformed upgrade request: {e}"))),
        }
    }
}

/// Answers with `status` and `reason` as a plain-text body, then closes our side.
async fn respond(stream: &mut ServerStream, status: StatusCode, reason: &str, bearer: bool) {
    let challenge = if bearer { "WWW-Authenticate: Bearer\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{challenge}\r\n{reason}",
        reason.len()
    );
    let send = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send).await;
}
