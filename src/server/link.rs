//! Conferences across nodes: a member whose call reaches another node than its conference's
//! home is linked to the home node.
//!
//! On the member's node, the route's `conference` stage is replaced by a `fork` to the home's
//! calls listener at [`LINK_PATH`] (with the control token), in `live` mode: the caller's audio
//! goes to the home, and the conference's mix for this member comes back and is played as it
//! arrives. The route's other stages run where the call is, as usual.
//!
//! On the home node, a link is a call like any other, with a pipeline of the route's
//! `conference` stage alone (the route named in the link's metadata; every node has the same
//! routes), joined under the member's call id. Its events stay in the home's log (the member's
//! node reports the call); it is not registered or listed as a call of the cluster.

use serde_json::{Map, Value, json};

use super::Shared;
use crate::call::CallInfo;
use crate::cluster::{Home, LINK_PATH, NodeInfo};
use crate::config::Route;
use crate::processor::ProcessorSpec;
use crate::processor::template::{Escape, parse, render};

/// The metadata key of a link's own fields.
const LINK_KEY: &str = "callpipe_link";

/// A link arriving at the home node.
#[derive(Debug)]
pub(super) struct Incoming {
    /// The route path the member called on its node.
    pub route: String,
    /// The conference's name, as rendered there.
    pub conference: String,
    /// The member's node.
    pub node: String,
}

/// The link's fields, when `path` is the link path; an error names what is wrong.
pub(super) fn incoming(path: &str, headers: &Map<String, Value>) -> Result<Option<Incoming>, String> {
    if path != LINK_PATH {
        return Ok(None);
    }
    let link = headers.get(LINK_KEY).and_then(Value::as_object).ok_or_else(|| format!("a conference link needs `{LINK_KEY}`"))?;
    let field = |name: &str| -> Result<String, String> {
        link.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("`{LINK_KEY}.{name}` is missing"))
    };
    let incoming = Incoming { route: field("route")?, conference: field("conference")?, node: field("node")? };
    crate::processor::check_conference_name(&incoming.conference).map_err(|e| e.to_string())?;
    Ok(Some(incoming))
}

/// The route's `conference` stage, by index, if it has one.
fn conference_stage(route: &Route) -> Option<(usize, &ProcessorSpec)> {
    route.processors.iter().enumerate().find(|(_, spec)| spec.kind == "conference")
}

/// The home's pipeline for a link: the route's conference stage alone, under the name the
/// member's node rendered.
pub(super) fn home_pipeline(route: &Route, incoming: &Incoming) -> Result<Vec<ProcessorSpec>, String> {
    let (_, spec) = conference_stage(route).ok_or_else(|| format!("route {} has no conference here", incoming.route))?;
    let mut spec = spec.clone();
    spec.params.insert("name".into(), toml::Value::String(incoming.conference.clone()));
    Ok(vec![spec])
}

/// The route's stages for a call on this node: as configured, but with the conference stage
/// replaced by a link when the conference lives on another node. When the registry cannot be
/// asked, the conference is joined here (the call is not held up).
pub(super) async fn outgoing(shared: &Shared, route: &Route, call: &CallInfo) -> (Vec<ProcessorSpec>, Option<String>) {
    let mut specs = route.processors.clone();
    let (Some(cluster), Some((index, spec))) = (&shared.cluster, conference_stage(route)) else { return (specs, None) };
    let Some(template) = spec.params.get("name").and_then(toml::Value::as_str) else { return (specs, None) };
    let name = render(&parse(template), call, Escape::Header);
    if crate::processor::check_conference_name(&name).is_err() {
        // The conference stage refuses it, with its own message.
        return (specs, None);
    }
    match cluster.conference_home(&name).await {
        Ok(Home::Here) => (specs, None),
        Ok(Home::Node(home)) => {
            tracing::info!(
                id = call.id.as_str(),
                conference = name,
                home = home.id,
                "conference lives on another node: linking the member to it"
            );
            specs[index] = link_spec(shared, &home, &name, route, call);
            (specs, Some(home.id))
        }
        Err(e) => {
            tracing::warn!(id = call.id.as_str(), conference = name, error = %e, "the conference's home could not be looked up: joining it on this node");
            (specs, None)
        }
    }
}

/// A `fork` to the home's link path: the call's metadata with the link's fields, the caller's
/// audio at the call's rate, the mix back as live audio.
fn link_spec(shared: &Shared, home: &NodeInfo, name: &str, route: &Route, call: &CallInfo) -> ProcessorSpec {
    let cluster = shared.cluster.as_ref().map_or("", |c| c.node_id());
    let mut first = Map::new();
    first.insert("event".into(), json!("websocket:connected"));
    first.insert("content-type".into(), json!("{content_type}"));
    for (key, value) in &call.metadata.headers {
        first.entry(key.clone()).or_insert_with(|| value.clone());
    }
    first.insert(LINK_KEY.into(), json!({ "route": route.path, "conference": name, "node": cluster }));
    let token = shared.config.control.token.as_ref().map(|t| String::from_utf8_lossy(t.expose()).into_owned()).unwrap_or_default();
    let mut headers = toml::Table::new();
    headers.insert("authorization".into(), toml::Value::String(format!("Bearer {token}")));
    let mut params = toml::Table::new();
    params.insert("url".into(), toml::Value::String(format!("{}{LINK_PATH}?call_id={{call_id}}", home.media)));
    params.insert("first_message".into(), toml::Value::String(Value::Object(first).to_string()));
    params.insert("headers".into(), toml::Value::Table(headers));
    params.insert("name".into(), toml::Value::String(format!("conference-link:{}", home.id)));
    params.insert("live".into(), toml::Value::Boolean(true));
    params.insert("buffer_ms".into(), toml::Value::Integer(1000));
    ProcessorSpec { kind: "fork".into(), params }
}
