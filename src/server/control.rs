//! The HTTP control plane: a REST API over live calls shaped like the Voice API's, metrics and
//! health, served on a listener of its own (`[control] listen`, `--control`).
//!
//! Handlers never touch a media thread: a command goes to the call's task over a
//! bounded channel (full: 503), which forwards it through the call's control ring. Audio to
//! stream is fetched, decoded and resampled here, on blocking threads, before the call sees it.
//! Errors are RFC 7807 problem details with a stable `type`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;

use super::Shared;
use super::calls::{CallCommand, CallStatus, LiveCall, MAX_PENDING_NOTIFIES};
use crate::auth::constant_time_eq;
use crate::processor::{ConferenceRole, ConferenceState};
use crate::protocol::SampleRate;
use crate::session::Control;

/// The OpenAPI description of this API, also served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Every route the API serves, as (method, path): the OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/calls"),
    ("get", "/calls/{id}"),
    ("put", "/calls/{id}"),
    ("put", "/calls/{id}/stream"),
    ("delete", "/calls/{id}/stream"),
    ("put", "/calls/{id}/dtmf"),
    ("put", "/calls/{id}/clear"),
    ("put", "/calls/{id}/notify"),
    ("get", "/conferences"),
    ("get", "/conferences/{name}"),
    ("put", "/conferences/{name}/members/{call_id}"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

/// The most calls one page of `GET /calls` holds.
const MAX_PAGE_SIZE: usize = 100;

/// DTMF sent by the API: each key's tone and the silence after it, in ms.
const DTMF_TONE_MS: u32 = 100;
const DTMF_GAP_MS: u32 = 100;

/// The API's router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let calls = Router::new()
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(get_call).put(put_call))
        .route("/calls/{id}/stream", axum::routing::put(put_stream).delete(delete_stream))
        .route("/calls/{id}/dtmf", axum::routing::put(put_dtmf))
        .route("/calls/{id}/clear", axum::routing::put(put_clear))
        .route("/calls/{id}/notify", axum::routing::put(put_notify))
        .route("/conferences", get(list_conferences))
        .route("/conferences/{name}", get(get_conference))
        .route("/conferences/{name}/members/{call_id}", axum::routing::put(put_member))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new()
        .merge(calls)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "Not Found", "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method Not Allowed",
                "this endpoint does not take that method".into(),
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), loopback_host))
        .with_state(shared)
}

/// An RFC 7807 problem: `{"type", "title", "status", "detail"}` as `application/problem+json`.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Problem {
        Problem { status, kind, title, detail }
    }

    fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Bad Request", detail.into())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("urn:callpipe:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Without a token the API listens on loopback only; a browser page could still reach it by
/// DNS rebinding (a name of its own that resolves to 127.0.0.1), so requests must then name a
/// loopback host.
async fn loopback_host(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if shared.config.control.token.is_none() {
        let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_loopback_host(host) {
            let detail = format!(
                "Host {host:?} is not a loopback name; without control.token the API answers only to 127.0.0.1, [::1] and localhost"
            );
            return Problem::new(StatusCode::FORBIDDEN, "forbidden-host", "Forbidden", detail).into_response();
        }
    }
    next.run(request).await
}

/// Whether a `Host` header names this machine's loopback: `localhost`, `127.x.x.x` or `[::1]`,
/// with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `/calls` requires `Authorization: Bearer <control.token>` when a token is configured.
async fn require_token(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.config.control.token {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let bearer = given.trim().split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
        if !bearer.is_some_and(|t| constant_time_eq(t.as_bytes(), token.expose())) {
            shared.stats.control_unauthorized.fetch_add(1, Ordering::Relaxed);
            let detail = if given.is_empty() { "an Authorization: Bearer token is required" } else { "the bearer token is not valid" };
            return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail.into()).into_response();
        }
    }
    next.run(request).await
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "draining" }))).into_response()
    } else {
        axum::Json(json!({ "status": "ready" })).into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], super::metrics::render_server(&shared)).into_response()
}

async fn list_calls(State(shared): State<Arc<Shared>>, Query(query): Query<HashMap<String, String>>) -> Result<Response, Problem> {
    let number =
        |name: &str, default: usize, range: std::ops::RangeInclusive<usize>| -> Result<usize, Problem> {
            match query.get(name) {
                None => Ok(default),
                Some(v) => v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                    Problem::bad_request(format!("{name} must be a whole number from {} to {}", range.start(), range.end()))
                }),
            }
        };
    let page_size = number("page_size", 10, 1..=MAX_PAGE_SIZE)?;
    let record_index = number("record_index", 0, 0..=usize::MAX)?;
    let status = match query.get("status") {
        None => None,
        Some(s) => Some(CallStatus::parse(s).ok_or_else(|| Problem::bad_request(format!("status {s:?}: use live or ended")))?),
    };
    let calls = shared.calls.list(status);
    let count = calls.len();
    let page: Vec<Value> = calls.into_iter().skip(record_index).take(page_size).map(|c| with_link(&c)).collect();
    let filter = status.map(|s| format!("&status={}", if s == CallStatus::Live { "live" } else { "ended" })).unwrap_or_default();
    let href = |index: usize| json!({ "href": format!("/calls?page_size={page_size}&record_index={index}{filter}") });
    let mut links = json!({ "self": href(record_index) });
    if record_index.saturating_add(page_size) < count {
        links["next"] = href(record_index + page_size);
    }
    if record_index > 0 {
        links["prev"] = href(record_index.saturating_sub(page_size));
    }
    Ok(axum::Json(json!({
        "count": count,
        "page_size": page_size,
        "record_index": record_index,
        "_links": links,
        "_embedded": { "calls": page },
    }))
    .into_response())
}

fn with_link(call: &super::calls::CallView) -> Value {
    let mut value = serde_json::to_value(call).unwrap_or(Value::Null);
    value["_links"] = json!({ "self": { "href": format!("/calls/{}", percent_encode(&call.id)) } });
    value
}

/// Percent-encodes a path segment.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn get_call(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    match shared.calls.find_live(&id).as_slice() {
        [call] => return Ok(axum::Json(with_link(&call.view())).into_response()),
        [] => {}
        _ => return Err(ambiguous(&id)),
    }
    match shared.calls.find_ended(&id) {
        Some(view) => Ok(axum::Json(with_link(&view)).into_response()),
        None => Err(not_found(&id)),
    }
}

fn not_found(id: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "call-not-found", "Call Not Found", format!("no call with id {id:?}"))
}

fn ambiguous(id: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "ambiguous-call-id",
        "Ambiguous Call Id",
        format!("more than one live call has id {id:?}; give each call a unique call_id"),
    )
}

/// The one live call with `id`.
fn live_call(shared: &Shared, id: &str) -> Result<Arc<LiveCall>, Problem> {
    match shared.calls.find_live(id).as_slice() {
        [call] => Ok(call.clone()),
        [] if shared.calls.find_ended(id).is_some() => Err(call_ended(id)),
        [] => Err(not_found(id)),
        _ => Err(ambiguous(id)),
    }
}

fn call_ended(id: &str) -> Problem {
    Problem::new(StatusCode::CONFLICT, "call-ended", "Call Ended", format!("call {id:?} has ended"))
}

/// Hands a command to the call's task.
fn send(call: &LiveCall, command: CallCommand) -> Result<(), Problem> {
    if call.hanging_up() {
        return Err(call_ended(&call.id));
    }
    call.commands.try_send(command).map_err(|e| match e {
        TrySendError::Full(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "call-busy",
            "Call Busy",
            format!("call {:?} has too many commands waiting; retry shortly", call.id),
        ),
        TrySendError::Closed(_) => call_ended(&call.id),
    })
}

/// The request body as a JSON object. Any content type is accepted; an empty body is `{}`.
fn body_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::bad_request("the body must be a JSON object")),
        Err(e) => Err(Problem::bad_request(format!("the body is not valid JSON: {e}"))),
    }
}

fn message(call: &LiveCall, text: &str) -> Response {
    axum::Json(json!({ "message": text, "uuid": call.id })).into_response()
}

async fn put_call(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    let action = body.get("action").and_then(Value::as_str).ok_or_else(|| Problem::bad_request("`action` is required"))?;
    let command = match action {
        "hangup" => CallCommand::Hangup,
        "mute" | "unmute" => CallCommand::Media(Control::Mute(action == "mute")),
        "earmuff" | "unearmuff" => CallCommand::Media(Control::Earmuff(action == "earmuff")),
        other => {
            return Err(Problem::bad_request(format!("unknown action {other:?}: use hangup, mute, unmute, earmuff or unearmuff")));
        }
    };
    send(&call, command)?;
    match action {
        "mute" | "unmute" => call.muted.store(action == "mute", Ordering::Relaxed),
        "earmuff" | "unearmuff" => call.earmuffed.store(action == "earmuff", Ordering::Relaxed),
        _ => {}
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A conference as JSON, with its members and a link.
fn conference_json(c: &ConferenceState) -> Value {
    let s = c.summary();
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "call_id": m.call_id,
                "rate": m.rate,
                "role": m.role.as_str(),
                "muted": m.muted,
                "joined": crate::events::timestamp(m.joined),
                "dropped_frames": m.dropped_up,
                "missing_frames": m.missing_down,
                "skipped_frames": m.skipped,
            })
        })
        .collect();
    json!({
        "name": s.name,
        "rate": s.rate,
        "agc": s.agc,
        "record": s.record,
        "recording": s.recording,
        "started": crate::events::timestamp(s.started),
        "members_total": s.joined_total,
        "members": members,
        "_links": { "self": { "href": format!("/conferences/{}", percent_encode(&s.name)) } },
    })
}

async fn list_conferences(State(shared): State<Arc<Shared>>) -> Response {
    let all: Vec<Value> = shared.conferences.list().iter().map(|c| conference_json(c)).collect();
    axum::Json(json!({ "count": all.len(), "_embedded": { "conferences": all } })).into_response()
}

fn conference(shared: &Shared, name: &str) -> Result<Arc<ConferenceState>, Problem> {
    shared.conferences.get(name).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "conference-not-found", "Conference Not Found", format!("no live conference named {name:?}"))
    })
}

async fn get_conference(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Result<Response, Problem> {
    let conference = conference(&shared, &name)?;
    Ok(axum::Json(conference_json(&conference)).into_response())
}

/// Mutes or unmutes a member, or makes it listen-only or a speaker again: flags the member's
/// media thread reads at its next pass.
async fn put_member(
    State(shared): State<Arc<Shared>>,
    Path((name, call_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let conference = conference(&shared, &name)?;
    let action = body.get("action").and_then(Value::as_str).ok_or_else(|| Problem::bad_request("`action` is required"))?;
    let members: Vec<_> = conference.members().into_iter().filter(|m| m.call_id == call_id).collect();
    let member = match members.as_slice() {
        [member] => member.clone(),
        [] => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "member-not-found",
                "Member Not Found",
                format!("conference {name:?} has no member with call id {call_id:?}"),
            ));
        }
        _ => return Err(ambiguous(&call_id)),
    };
    match action {
        "mute" | "unmute" => member.set_muted(action == "mute"),
        "listen" => member.set_role(ConferenceRole::Listener),
        "speak" => member.set_role(ConferenceRole::Speaker),
        other => return Err(Problem::bad_request(format!("unknown action {other:?}: use mute, unmute, listen or speak"))),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn put_stream(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    let url = match body.get("stream_url") {
        Some(Value::String(url)) => url.clone(),
        Some(Value::Array(urls)) if urls.len() == 1 && urls[0].is_string() => urls[0].as_str().unwrap_or_default().to_owned(),
        _ => return Err(Problem::bad_request("`stream_url` must be an array of one URL (file:// or http(s)://)")),
    };
    let loops = match body.get("loop") {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Problem::bad_request("`loop` must be 0 (forever) or a positive whole number"))?,
    };
    let level = match body.get("level") {
        None => 0.0,
        Some(v) => {
            v.as_f64().filter(|l| (-1.0..=1.0).contains(l)).ok_or_else(|| Problem::bad_request("`level` must be a number from -1 to 1"))?
        }
    };
    let audio = {
        let _loading = shared.stream_loads.acquire().await.map_err(|_| call_ended(&call.id))?;
        load_stream(&shared, &url, call.rate).await?
    };
    let stream_id = call.stream_id();
    let command = Control::Stream { id: stream_id, audio: audio.into(), loops, gain: (1.0 + level) as f32 };
    send(&call, CallCommand::Media(command))?;
    Ok(axum::Json(json!({ "message": "Stream started", "uuid": call.id, "stream_id": stream_id })).into_response())
}

async fn delete_stream(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let call = live_call(&shared, &id)?;
    send(&call, CallCommand::Media(Control::StopStream))?;
    Ok(message(&call, "Stream stopped"))
}

async fn put_dtmf(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    let digits = body.get("digits").and_then(Value::as_str).ok_or_else(|| Problem::bad_request("`digits` is required, e.g. \"1234#\""))?;
    let valid = |c: char| c.is_ascii_digit() || "*#ABCDabcd".contains(c);
    if digits.is_empty() || digits.chars().count() > crate::processor::MAX_DIGITS || !digits.chars().all(valid) {
        return Err(Problem::bad_request(format!(
            "`digits` {digits:?} must hold 1 to {} keys: 0-9, *, #, A-D",
            crate::processor::MAX_DIGITS
        )));
    }
    let tones =
        crate::processor::render_dtmf(digits, call.rate, DTMF_TONE_MS, DTMF_GAP_MS).map_err(|e| Problem::bad_request(e.to_string()))?;
    send(&call, CallCommand::Media(Control::Dtmf { audio: tones.into() }))?;
    Ok(message(&call, "DTMF sent"))
}

async fn put_clear(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let call = live_call(&shared, &id)?;
    send(&call, CallCommand::Media(Control::Clear))?;
    Ok(message(&call, "Clear sent"))
}

async fn put_notify(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    let payload = body.get("payload").cloned().unwrap_or_else(|| json!({}));
    let marker = call.notify_marker();
    {
        let mut pending = call.pending_notifies();
        // A platform that never acknowledges must not block later notifies: the oldest
        // payload is forgotten (its acknowledgement, if it ever comes, raises no event).
        if pending.len() >= MAX_PENDING_NOTIFIES
            && let Some(oldest) = pending.keys().min().copied()
        {
            pending.remove(&oldest);
        }
        pending.insert(marker, payload);
    }
    if let Err(problem) = send(&call, CallCommand::Media(Control::Notify { marker })) {
        call.pending_notifies().remove(&marker);
        return Err(problem);
    }
    Ok(message(&call, "Notify sent"))
}

/// Fetches and decodes a stream's audio at the call's rate.
async fn load_stream(shared: &Shared, url: &str, rate: SampleRate) -> Result<Vec<i16>, Problem> {
    let invalid = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid-stream", "Invalid Stream", detail);
    let parsed = url::Url::parse(url).map_err(|e| invalid(format!("stream_url {url:?}: {e}")))?;
    let limit = shared.config.control.max_stream_bytes;
    let bytes = match parsed.scheme() {
        "file" => {
            let path: PathBuf = parsed.to_file_path().map_err(|()| invalid(format!("{url:?} is not a local file path")))?;
            let root = shared.config.control.stream_root.clone();
            let read = tokio::task::spawn_blocking(move || read_file(&path, root.as_deref(), limit));
            match tokio::time::timeout(shared.config.control.fetch_timeout, read).await {
                Ok(read) => read.map_err(|e| invalid(e.to_string()))?.map_err(invalid)?,
                Err(_) => return Err(invalid(format!("{url}: reading took longer than the fetch timeout"))),
            }
        }
        "http" | "https" => fetch(shared, parsed, limit).await?,
        other => return Err(invalid(format!("stream_url scheme {other:?}: use file:// or http(s)://"))),
    };
    let decode = tokio::task::spawn_blocking(move || crate::audio::load_wav_bytes(&bytes, rate));
    decode.await.map_err(|e| invalid(e.to_string()))?.map_err(|e| invalid(format!("{url} is not a usable WAV file ({e})")))
}

/// Reads a regular file of at most `limit` bytes, inside `root` when one is set. Devices, FIFOs
/// and files that grow past the limit while read are refused.
fn read_file(path: &std::path::Path, root: Option<&std::path::Path>, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    if let Some(root) = root {
        let real = path.canonicalize().map_err(unreadable)?;
        let root = root.canonicalize().map_err(|e| format!("control.stream_root {}: {e}", root.display()))?;
        if !real.starts_with(&root) {
            return Err(format!("{} is outside control.stream_root", path.display()));
        }
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() > limit {
        return Err(format!("{} is over the {limit}-byte limit (control.max_stream_bytes)", path.display()));
    }
    Ok(bytes)
}

async fn fetch(shared: &Shared, url: url::Url, limit: usize) -> Result<Vec<u8>, Problem> {
    let failed = |detail: String| Problem::new(StatusCode::BAD_GATEWAY, "stream-fetch-failed", "Stream Fetch Failed", detail);
    let shown = url.to_string();
    let mut response =
        shared.http.get(url).timeout(shared.config.control.fetch_timeout).send().await.map_err(|e| failed(format!("{shown}: {e}")))?;
    if !response.status().is_success() {
        return Err(failed(format!("{shown}: HTTP {}", response.status())));
    }
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(failed(format!("{shown} is over the {limit}-byte limit")));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(format!("{shown}: {e}")))? {
        if bytes.len() + chunk.len() > limit {
            return Err(failed(format!("{shown} is over the {limit}-byte limit")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "LOCALHOST:8081", "127.0.0.1", "127.0.0.1:8081", "127.1.2.3:80", "[::1]", "[::1]:8081"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["", "evil.example", "evil.example:8081", "10.0.0.1:8081", "[::2]:1", "localhost.evil.example", "127.0.0.1.nip.io"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn stream_files_are_regular_bounded_and_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("callpipe-read-file-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("inner")).unwrap();
        let file = dir.join("inner/a.wav");
        std::fs::write(&file, [7u8; 100]).unwrap();
        assert_eq!(read_file(&file, None, 100).unwrap().len(), 100);
        assert!(read_file(&file, None, 99).unwrap_err().contains("limit"));
        assert!(read_file(std::path::Path::new("/dev/zero"), None, 1000).unwrap_err().contains("not a regular file"));
        assert!(read_file(&dir, None, 1000).is_err(), "a directory");
        assert!(read_file(&file, Some(&dir.join("inner")), 100).is_ok());
        let outside = dir.join("b.wav");
        std::fs::write(&outside, [1u8; 10]).unwrap();
        assert!(read_file(&outside, Some(&dir.join("inner")), 100).unwrap_err().contains("outside"));
        let sneaky = dir.join("inner/../b.wav");
        assert!(read_file(&sneaky, Some(&dir.join("inner")), 100).unwrap_err().contains("outside"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(percent_encode("abc-1_2.3~"), "abc-1_2.3~");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
