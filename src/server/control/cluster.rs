//! The control API across a cluster: a request about a call another node serves is carried out
//! by that node (forwarded over its control API with the control token), `GET /calls` lists
//! every node's calls, and `GET /cluster/nodes` shows the nodes.
//!
//! A forwarded request carries [`FORWARDED_BY`]; a node that receives one answers from its own
//! calls only, so a request crosses at most one hop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::Problem;
use crate::cluster::{Cluster, NodeInfo};
use crate::server::Shared;

/// The header of a request one node hands another, naming the sender.
pub(crate) const FORWARDED_BY: &str = "x-callpipe-forwarded-by";

/// The header of an answer that another node gave, naming it.
pub(crate) const ANSWERED_BY: &str = "x-callpipe-node";

/// How long a forwarded request may take (a stream's audio may be fetched from a URL first).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node may take to list its calls for another.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `headers` mark a request forwarded by another node.
pub(super) fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_BY)
}

/// Middleware of the per-call routes: a call this node does not know is looked up in the
/// registry, and the request handed to the node that serves it.
pub(super) async fn route_to_owner(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(cluster) = &shared.cluster else { return next.run(request).await };
    if forwarded(request.headers()) {
        return next.run(request).await;
    }
    if let Some(name) = params.get("name") {
        return to_conference_home(&shared, cluster, name, request, next).await;
    }
    let Some(id) = params.get("id") else { return next.run(request).await };
    if !shared.calls.find_live(id).is_empty() {
        return next.run(request).await;
    }
    // A call that ended here may be live on another node now (a platform that reconnects a
    // dropped call keeps its id): the live one is asked first.
    let ended_here = shared.calls.find_ended(id).is_some();
    match cluster.owners(id).await {
        Ok(owners) => match owners.as_slice() {
            [owner] => forward(&shared, cluster, owner, request).await,
            [] if ended_here => next.run(request).await,
            [] if request.method() == Method::GET => ask_everyone(&shared, cluster, request, next).await,
            [] => next.run(request).await,
            _ => Problem::ambiguous_call(id).into_response(),
        },
        Err(_) if ended_here => next.run(request).await,
        Err(e) => {
            // The node answers for its own calls; it says why it could not look further.
            let mut response = next.run(request).await;
            if response.status() == StatusCode::NOT_FOUND {
                response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "registry-unavailable",
                    "Registry Unavailable",
                    format!("no call with id {id:?} on this node, and the other nodes could not be asked: {e}"),
                )
                .into_response();
            }
            response
        }
    }
}

/// A request about a conference: answered here when it lives here, else by its home node.
async fn to_conference_home(shared: &Shared, cluster: &Cluster, name: &str, request: Request, next: Next) -> Response {
    if shared.conferences.get(name).is_some() {
        return next.run(request).await;
    }
    match cluster.conference_node(name).await {
        Ok(Some(home)) => forward(shared, cluster, &home, request).await,
        Ok(None) => next.run(request).await,
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry-unavailable",
            "Registry Unavailable",
            format!("no live conference named {name:?} on this node, and the other nodes could not be asked: {e}"),
        )
        .into_response(),
    }
}

/// A `GET` for a call no node serves now: it may have ended on another node, which keeps it
/// in its history. Each other node is asked; the first that knows the call answers.
async fn ask_everyone(shared: &Shared, cluster: &Cluster, request: Request, next: Next) -> Response {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let others: Vec<NodeInfo> = cluster.nodes().into_iter().filter(|n| n.id != cluster.node_id()).collect();
    let asks = others.iter().map(|node| {
        let request = peer_request(shared, cluster, Method::GET, &format!("{}{path}", node.control)).timeout(LIST_TIMEOUT);
        async move { (node, request.send().await) }
    });
    // The first node that knows the call answers; a node that does not answer delays nothing.
    let mut asks: futures_util::stream::FuturesUnordered<_> = asks.collect();
    while let Some((node, answer)) = asks.next().await {
        if let Ok(answer) = answer
            && answer.status() == reqwest::StatusCode::OK
        {
            return relay(node, answer).await;
        }
    }
    drop(asks);
    next.run(request).await
}

/// A request to another node's control API, marked forwarded, with the control token.
fn peer_request(shared: &Shared, cluster: &Cluster, method: Method, url: &str) -> reqwest::RequestBuilder {
    let mut request = shared.peers.request(method, url).header(FORWARDED_BY, cluster.node_id());
    if let Some(token) = &shared.config.control.token {
        request = request.bearer_auth(String::from_utf8_lossy(token.expose()));
    }
    request
}

/// Hands the request to `owner` and relays its answer.
async fn forward(shared: &Shared, cluster: &Cluster, owner: &NodeInfo, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = shared.config.control.max_stream_bytes.saturating_add(1 << 20);
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(e) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Payload Too Large",
                format!("the request body could not be read whole (at most {limit} bytes are forwarded): {e}"),
            )
            .into_response();
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", owner.control);
    let mut request = peer_request(shared, cluster, parts.method, &url).timeout(FORWARD_TIMEOUT).body(body);
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    cluster.stats().forwarded.fetch_add(1, Ordering::Relaxed);
    match request.send().await {
        Ok(answer) => relay(owner, answer).await,
        Err(e) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "node-unreachable",
            "Node Unreachable",
            format!("the request is for node {:?} at {}, which did not answer: {e}", owner.id, owner.control),
        )
        .into_response(),
    }
}

/// Another node's answer, as this node's, naming the node.
async fn relay(node: &NodeInfo, answer: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_GATEWAY,
                "node-unreachable",
                "Node Unreachable",
                format!("node {:?} at {} broke off its answer: {e}", node.id, node.control),
            )
            .into_response();
        }
    };
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    if let Ok(id) = HeaderValue::from_str(&node.id) {
        response.headers_mut().insert(ANSWERED_BY, id);
    }
    response
}

/// What the other nodes answered to a listing (`GET /calls`, `GET /conferences`): their
/// counts added up, their items, and the nodes that did not answer.
pub(super) struct OtherNodes {
    pub count: usize,
    pub items: Vec<Value>,
    pub unreachable: Vec<String>,
}

/// Asks every other node for its own listing at `path_and_query` (marked forwarded, so that
/// each answers for itself) and gathers the items under `_embedded.<key>`.
pub(super) async fn other_nodes(shared: &Shared, cluster: &Cluster, path_and_query: &str, key: &str) -> OtherNodes {
    let nodes = match cluster.refresh_nodes().await {
        Ok(nodes) => nodes,
        Err(_) => cluster.nodes(),
    };
    let asks = nodes.iter().filter(|n| n.id != cluster.node_id()).map(|node| {
        let request = peer_request(shared, cluster, Method::GET, &format!("{}{path_and_query}", node.control)).timeout(LIST_TIMEOUT);
        let id = node.id.clone();
        async move {
            let answer = async {
                let answer = request.send().await.ok().filter(|a| a.status() == reqwest::StatusCode::OK)?;
                let page: Value = serde_json::from_slice(&answer.bytes().await.ok()?).ok()?;
                Some((page["count"].as_u64().unwrap_or(0) as usize, page["_embedded"][key].as_array().cloned().unwrap_or_default()))
            };
            (id, answer.await)
        }
    });
    let mut others = OtherNodes { count: 0, items: Vec::new(), unreachable: Vec::new() };
    for (node, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Some((count, items)) => {
                others.count += count;
                others.items.extend(items);
            }
            None => others.unreachable.push(node),
        }
    }
    others
}

/// `GET /cluster/nodes`: the nodes of the cluster as the registry has them now.
pub(super) async fn list_nodes(State(shared): State<Arc<Shared>>) -> Response {
    let Some(cluster) = &shared.cluster else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-clustered",
            "Not Clustered",
            "this node is not part of a cluster: its configuration has no [cluster] table".into(),
        )
        .into_response();
    };
    match cluster.refresh_nodes().await {
        Ok(nodes) => axum::Json(json!({
            "node": cluster.node_id(),
            "registry": "up",
            "count": nodes.len(),
            "_embedded": { "nodes": nodes },
        }))
        .into_response(),
        Err(e) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "registry-unavailable", "Registry Unavailable", e.to_string()).into_response()
        }
    }
}
