//! The HTTP control plane: a REST API over live calls shaped like the Voice API's, metrics and
//! health, served on a listener of its own (`[control] listen`, `--control`).
//!
//! Handlers never touch a media thread: a command goes to the call's task over a
//! bounded channel (full: 503), which forwards it through the call's control ring. Audio to
//! stream is fetched, decoded and resampled here, on blocking threads, before the call sees it.
//! Errors are RFC 7807 problem details with a stable `type`.

mod access;
mod calls;
mod cluster;
mod conferences;
mod problem;
mod stream;
mod voice;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::Shared;
use access::{loopback_host, require_token};
use calls::{get_call, list_calls, put_call, put_clear, put_dtmf, put_notify};
use conferences::{get_conference, list_conferences, put_member};
use problem::Problem;
use stream::{delete_stream, put_stream};

/// The OpenAPI description of this API, also served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Every route the API serves, as (method, path): the OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/calls"),
    ("get", "/calls/{id}"),
    ("put", "/calls/{id}"),
    ("put", "/calls/{id}/stream"),
    ("delete", "/calls/{id}/stream"),
    ("put", "/calls/{id}/talk"),
    ("delete", "/calls/{id}/talk"),
    ("put", "/calls/{id}/input"),
    ("put", "/calls/{id}/dtmf"),
    ("put", "/calls/{id}/clear"),
    ("put", "/calls/{id}/notify"),
    ("get", "/cluster/nodes"),
    ("get", "/conferences"),
    ("get", "/conferences/{name}"),
    ("put", "/conferences/{name}/members/{call_id}"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

/// The API's router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let calls = Router::new()
        .route("/calls/{id}", get(get_call).put(put_call))
        .route("/calls/{id}/stream", axum::routing::put(put_stream).delete(delete_stream))
        .route("/calls/{id}/talk", axum::routing::put(voice::put_talk).delete(voice::delete_talk))
        .route("/calls/{id}/input", axum::routing::put(voice::put_input))
        .route("/calls/{id}/dtmf", axum::routing::put(put_dtmf))
        .route("/calls/{id}/clear", axum::routing::put(put_clear))
        .route("/calls/{id}/notify", axum::routing::put(put_notify))
        .route("/conferences/{name}", get(get_conference))
        .route("/conferences/{name}/members/{call_id}", axum::routing::put(put_member))
        // Requests about a call or conference another node serves go to that node (after the
        // token).
        .route_layer(middleware::from_fn_with_state(shared.clone(), cluster::route_to_owner))
        .route("/calls", get(list_calls))
        .route("/cluster/nodes", get(cluster::list_nodes))
        .route("/conferences", get(list_conferences))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new()
        // The Voice API's base path too: `/v1/calls/{id}/talk` is `/calls/{id}/talk`.
        .nest("/v1", calls.clone())
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

/// Ready unless draining. A node of a cluster says whether it reaches the registry, but stays
/// ready without it: it serves its own calls either way, and a Redis outage must not take every
/// node out of the load balancer at once.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let mut body = json!({ "status": if shared.draining.load(Ordering::Acquire) { "draining" } else { "ready" } });
    if let Some(cluster) = &shared.cluster {
        body["node"] = json!(cluster.node_id());
        body["registry"] = json!(if cluster.registry_up() { "up" } else { "unreachable" });
    }
    let status = if shared.draining.load(Ordering::Acquire) { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], super::metrics::render_server(&shared)).into_response()
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
    fn path_segments_are_percent_encoded() {
        assert_eq!(percent_encode("abc-1_2.3~"), "abc-1_2.3~");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
