//! `/conferences`: live conferences with their members, and a member muted, unmuted, made a
//! listener or a speaker again.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Problem, body_object, percent_encode};
use crate::processor::{ConferenceRole, ConferenceState};
use crate::server::Shared;

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

/// The live conferences; in a cluster, every node's (each with its `node`), by name.
pub(super) async fn list_conferences(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let node = shared.cluster.as_ref().map(|c| c.node_id());
    let mut all: Vec<Value> = shared.conferences.list().iter().map(|c| with_node(conference_json(c), node)).collect();
    let mut unreachable = Vec::new();
    if let Some(cluster) = shared.cluster.as_ref().filter(|_| !super::cluster::forwarded(&headers)) {
        let others = super::cluster::other_nodes(&shared, cluster, "/conferences", "conferences").await;
        all.extend(others.items);
        unreachable = others.unreachable;
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    let mut body = json!({ "count": all.len(), "_embedded": { "conferences": all } });
    if !unreachable.is_empty() {
        body["unreachable_nodes"] = json!(unreachable);
    }
    axum::Json(body).into_response()
}

/// A conference's JSON with the node it lives on, in a cluster.
fn with_node(mut conference: Value, node: Option<&str>) -> Value {
    if let Some(node) = node {
        conference["node"] = json!(node);
    }
    conference
}

fn conference(shared: &Shared, name: &str) -> Result<Arc<ConferenceState>, Problem> {
    shared.conferences.get(name).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "conference-not-found", "Conference Not Found", format!("no live conference named {name:?}"))
    })
}

pub(super) async fn get_conference(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Result<Response, Problem> {
    let conference = conference(&shared, &name)?;
    Ok(axum::Json(with_node(conference_json(&conference), shared.cluster.as_ref().map(|c| c.node_id()))).into_response())
}

/// Mutes or unmutes a member, or makes it listen-only or a speaker again: flags the member's
/// media thread reads at its next pass.
pub(super) async fn put_member(
    State(shared): State<Arc<Shared>>,
    Path((name, call_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let conference = conference(&shared, &name)?;
    let action = body.get("action").and_then(Value::as_str).ok_or_else(|| Problem::bad_request("`action` is required"))?;
    let members: Vec<_> = conference.members().into_iter().filter(|m| *m.call_id == *call_id).collect();
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
        _ => return Err(Problem::ambiguous_call(&call_id)),
    };
    match action {
        "mute" | "unmute" => member.set_muted(action == "mute"),
        "listen" => member.set_role(ConferenceRole::Listener),
        "speak" => member.set_role(ConferenceRole::Speaker),
        other => return Err(Problem::bad_request(format!("unknown action {other:?}: use mute, unmute, listen or speak"))),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
