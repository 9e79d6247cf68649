//! Who may call the API: without `control.token`, only requests that name a loopback host
//! (against DNS rebinding); with one, `/calls` and `/conferences` need it as a bearer token.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Problem;
use crate::auth::constant_time_eq;
use crate::server::Shared;

/// Without a token the API listens on loopback only; a browser page could still reach it by
/// DNS rebinding (a name of its own that resolves to 127.0.0.1), so requests must then name a
/// loopback host.
pub(super) async fn loopback_host(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
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
pub(super) async fn require_token(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "LOCALHOST:8081", "127.0.0.1", "127.0.0.1:8081", "127.1.2.3:80", "[::1]", "[::1]:8081"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["", "evil.example", "evil.example:8081", "10.0.0.1:8081", "[::2]:1", "localhost.evil.example", "127.0.0.1.nip.io"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
