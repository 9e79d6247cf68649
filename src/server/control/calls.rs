//! `/calls`: live and ended calls listed and looked up, and the commands a live call takes
//! (hang up, mute, earmuff, DTMF, clear, notify), handed to the call's task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;

use super::{Problem, body_object, percent_encode};
use crate::server::Shared;
use crate::server::calls::{CallCommand, CallStatus, CallView, LiveCall, MAX_PENDING_NOTIFIES};
use crate::session::Control;

/// The most calls one page of `GET /calls` holds.
const MAX_PAGE_SIZE: usize = 100;

/// The most calls a node lists for another node's `GET /calls` (the calls before the page asked
/// for, and the page).
const MAX_PEER_PAGE: usize = 1_000_000;

/// DTMF sent by the API: each key's tone and the silence after it, in ms.
const DTMF_TONE_MS: u32 = 100;
const DTMF_GAP_MS: u32 = 100;

pub(super) async fn list_calls(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    // Another node listing the cluster's calls asks for as many as its page needs.
    let peer = super::cluster::forwarded(&headers);
    let number =
        |name: &str, default: usize, range: std::ops::RangeInclusive<usize>| -> Result<usize, Problem> {
            match query.get(name) {
                None => Ok(default),
                Some(v) => v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                    Problem::bad_request(format!("{name} must be a whole number from {} to {}", range.start(), range.end()))
                }),
            }
        };
    let page_size = number("page_size", 10, 1..=if peer { MAX_PEER_PAGE } else { MAX_PAGE_SIZE })?;
    let record_index = number("record_index", 0, 0..=usize::MAX)?;
    let status = match query.get("status") {
        None => None,
        Some(s) => Some(CallStatus::parse(s).ok_or_else(|| Problem::bad_request(format!("status {s:?}: use live or ended")))?),
    };
    let status_name = status.map(|s| if s == CallStatus::Live { "live" } else { "ended" });
    let node = shared.cluster.as_ref().map(|c| c.node_id());
    let mut calls = shared.calls.list(status);
    let mut unreachable = Vec::new();
    let (count, page): (usize, Vec<Value>) = match &shared.cluster {
        None => (calls.len(), calls.iter().skip(record_index).take(page_size).map(|c| with_link(c, node)).collect()),
        Some(cluster) => {
            // The cluster's calls in one order on every node: live ones first, newest first.
            calls.sort_by(|a, b| (a.status, &b.start_time).cmp(&(b.status, &a.start_time)));
            let wanted = record_index.saturating_add(page_size);
            let mut all: Vec<Value> = calls.iter().take(wanted).map(|c| with_link(c, node)).collect();
            let mut count = calls.len();
            if !peer {
                let filter = status_name.map(|s| format!("&status={s}")).unwrap_or_default();
                let query = format!("/calls?page_size={}&record_index=0{filter}", wanted.max(1));
                let others = super::cluster::other_nodes(&shared, cluster, &query, "calls").await;
                count += others.count;
                all.extend(others.items);
                unreachable = others.unreachable;
                let key = |c: &Value| (c["status"] != "live", c["start_time"].as_str().unwrap_or("").to_owned());
                all.sort_by(|a, b| {
                    let (a, b) = (key(a), key(b));
                    a.0.cmp(&b.0).then(b.1.cmp(&a.1))
                });
            }
            (count, all.into_iter().skip(record_index).take(page_size).collect())
        }
    };
    let filter = status_name.map(|s| format!("&status={s}")).unwrap_or_default();
    let href = |index: usize| json!({ "href": format!("/calls?page_size={page_size}&record_index={index}{filter}") });
    let mut links = json!({ "self": href(record_index) });
    if record_index.saturating_add(page_size) < count {
        links["next"] = href(record_index + page_size);
    }
    if record_index > 0 {
        links["prev"] = href(record_index.saturating_sub(page_size));
    }
    let mut body = json!({
        "count": count,
        "page_size": page_size,
        "record_index": record_index,
        "_links": links,
        "_embedded": { "calls": page },
    });
    if !unreachable.is_empty() {
        // The list is partial: say which nodes are missing from it.
        body["unreachable_nodes"] = json!(unreachable);
    }
    Ok(axum::Json(body).into_response())
}

/// A call as JSON, with its link, and the node that serves it when the node is in a cluster.
fn with_link(call: &CallView, node: Option<&str>) -> Value {
    let mut value = serde_json::to_value(call).unwrap_or(Value::Null);
    if let Some(node) = node {
        value["node"] = json!(node);
    }
    value["_links"] = json!({ "self": { "href": format!("/calls/{}", percent_encode(&call.id)) } });
    value
}

pub(super) async fn get_call(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let node = shared.cluster.as_ref().map(|c| c.node_id());
    match shared.calls.find_live(&id).as_slice() {
        [call] => return Ok(axum::Json(with_link(&call.view(), node)).into_response()),
        [] => {}
        _ => return Err(Problem::ambiguous_call(&id)),
    }
    match shared.calls.find_ended(&id) {
        Some(view) => Ok(axum::Json(with_link(&view, node)).into_response()),
        None => Err(not_found(&id)),
    }
}

pub(super) fn not_found(id: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "call-not-found", "Call Not Found", format!("no call with id {id:?}"))
}

/// The one live call with `id`.
pub(super) fn live_call(shared: &Shared, id: &str) -> Result<Arc<LiveCall>, Problem> {
    match shared.calls.find_live(id).as_slice() {
        [call] => Ok(call.clone()),
        [] if shared.calls.find_ended(id).is_some() => Err(call_ended(id)),
        [] => Err(not_found(id)),
        _ => Err(Problem::ambiguous_call(id)),
    }
}

pub(super) fn call_ended(id: &str) -> Problem {
    Problem::new(StatusCode::CONFLICT, "call-ended", "Call Ended", format!("call {id:?} has ended"))
}

/// Refuses speech barge-in on a call whose route does not detect speech.
pub(super) fn check_barge_in(call: &LiveCall, barge_in: crate::call::BargeInMode) -> Result<(), Problem> {
    if barge_in.on_speech() && !call.detects_speech {
        return Err(Problem::bad_request(format!(
            "`barge_in` {:?} needs speech detection, and the route of call {:?} ({}) has no {{ type = \"vad\" }}",
            barge_in.as_str(),
            call.id.as_str(),
            call.path
        )));
    }
    Ok(())
}

/// Hands a command to the call's task.
pub(super) fn send(call: &LiveCall, command: CallCommand) -> Result<(), Problem> {
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

pub(super) fn message(call: &LiveCall, text: &str) -> Response {
    axum::Json(json!({ "message": text, "uuid": call.id })).into_response()
}

pub(super) async fn put_call(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    let action = body.get("action").and_then(Value::as_str).ok_or_else(|| Problem::bad_request("`action` is required"))?;
    let command = match action {
        "hangup" => CallCommand::Hangup,
        "mute" | "unmute" => CallCommand::media(Control::Mute(action == "mute")),
        "earmuff" | "unearmuff" => CallCommand::media(Control::Earmuff(action == "earmuff")),
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

pub(super) async fn put_dtmf(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
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
    send(&call, CallCommand::media(Control::Dtmf { audio: tones.into() }))?;
    Ok(message(&call, "DTMF sent"))
}

pub(super) async fn put_clear(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let call = live_call(&shared, &id)?;
    send(&call, CallCommand::media(Control::Clear))?;
    Ok(message(&call, "Clear sent"))
}

pub(super) async fn put_notify(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
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
    if let Err(problem) = send(&call, CallCommand::media(Control::Notify { marker })) {
        call.pending_notifies().remove(&marker);
        return Err(problem);
    }
    Ok(message(&call, "Notify sent"))
}
