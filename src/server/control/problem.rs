//! RFC 7807 problem details: every error of the control API is one, with a stable `type`
//! (`urn:callpipe:problem:<kind>`), sent as `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An RFC 7807 problem: `{"type", "title", "status", "detail"}` as `application/problem+json`.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
}

impl Problem {
    pub(super) fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Problem {
        Problem { status, kind, title, detail }
    }

    pub(super) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Bad Request", detail.into())
    }

    /// More than one live call has this id.
    pub(super) fn ambiguous_call(id: &str) -> Problem {
        Problem::new(
            StatusCode::CONFLICT,
            "ambiguous-call-id",
            "Ambiguous Call Id",
            format!("more than one live call has id {id:?}; give each call a unique call_id"),
        )
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
