//! Webhook delivery: one worker task posts its queue's events one at a time, with retries.
//!
//! An attempt succeeds on any 2xx. Connect errors, timeouts, 5xx and 429 are retried after
//! `backoff × 2^n` (capped at `max_backoff`, the upper half of it picked at random so that many
//! calls failing together do not retry together), or after the response's `Retry-After` seconds
//! (also capped). Any other status is final. Redirects are not followed: a 3xx is final too.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{EventStats, Gate, SigningKey};
use crate::auth::jwt::{payload_hash, sign_hs256};

/// Response bytes read (and discarded) so that the connection can be reused.
const DRAIN_BYTES: usize = 64 * 1024;

/// What a worker is sent.
#[derive(Debug)]
pub(super) enum Job {
    /// Post `body` to `url`.
    Deliver {
        /// The call's event URL.
        url: String,
        /// The event's JSON bytes.
        body: Bytes,
    },
    /// Answer once every job before this one is finished.
    Mark(oneshot::Sender<()>),
}

/// Timeouts and retries.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) timeout: Duration,
    pub(super) retries: u32,
    pub(super) backoff: Duration,
    pub(super) max_backoff: Duration,
}

/// What every worker shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) client: reqwest::Client,
    pub(super) policy: Policy,
    pub(super) signing: Option<SigningKey>,
    pub(super) stats: Arc<EventStats>,
    /// Deliveries queued or in flight; a worker gives back a place per finished delivery.
    pub(super) gate: Arc<Gate>,
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq)]
enum Attempt {
    Delivered,
    /// Worth another try, after `after` if the server said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    Final {
        reason: String,
    },
}

/// The HTTP client: connection reuse, a connect timeout, no redirects, callpipe's user agent.
pub(super) fn client(connect_timeout: Duration) -> std::io::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("callpipe/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(std::io::Error::other)
}

/// A worker: runs until every sender is dropped and its queue is empty.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Deliver { url, body } => {
                shared.deliver(&url, &body).await;
                shared.gate.leave(1);
            }
            Job::Mark(done) => {
                // The caller may have stopped waiting; nothing to do then.
                let _ = done.send(());
            }
        }
    }
}

impl Shared {
    /// Posts until delivered, refused or out of retries; counts the outcome.
    async fn deliver(&self, url: &str, body: &Bytes) {
        let stats = &self.stats;
        let mut retried = 0;
        loop {
            let reason = match self.attempt(url, body).await {
                Attempt::Delivered => {
                    stats.webhooks_delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Attempt::Final { reason } => {
                    stats.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
                    stats.webhooks_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %redacted(url), %reason, "webhook refused, not retried");
                    return;
                }
                Attempt::Retry { after, reason } if retried < self.policy.retries => {
                    stats.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
                    let delay = match after {
                        Some(after) => after.min(self.policy.max_backoff),
                        None => backoff(&self.policy, retried, jitter()),
                    };
                    tracing::debug!(url = %redacted(url), %reason, ?delay, "webhook attempt failed, retrying");
                    tokio::time::sleep(delay).await;
                    retried += 1;
                    continue;
                }
                Attempt::Retry { reason, .. } => reason,
            };
            stats.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
            stats.webhooks_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %redacted(url), %reason, attempts = retried + 1, "webhook given up");
            return;
        }
    }

    /// One request, bounded by the policy's timeout from connecting to the response body.
    async fn attempt(&self, url: &str, body: &Bytes) -> Attempt {
        let mut request = self.client.post(url).header(CONTENT_TYPE, "application/json").body(body.clone());
        if let Some(key) = &self.signing {
            request = request.bearer_auth(token(key, body, SystemTime::now()));
        }
        let deadline = tokio::time::Instant::now() + self.policy.timeout;
        let mut response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Attempt::Retry { after: None, reason: "timed out".into() },
            // `without_url`: reqwest's message would otherwise repeat the whole URL, secrets in
            // its query or user info included.
            Ok(Err(error)) if error.is_builder() => return Attempt::Final { reason: error.without_url().to_string() },
            Ok(Err(error)) => return Attempt::Retry { after: None, reason: error.without_url().to_string() },
            Ok(Ok(response)) => response,
        };
        let outcome = judge(response.status(), response.headers());
        // The status decides; reading the rest only lets the connection be reused.
        let _ = tokio::time::timeout_at(deadline, async {
            let mut read = 0;
            while read < DRAIN_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
        })
        .await;
        outcome
    }
}

/// The outcome a response status means.
fn judge(status: StatusCode, headers: &HeaderMap) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        let after =
            headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
        Attempt::Retry { after, reason: status.to_string() }
    } else {
        Attempt::Final { reason: status.to_string() }
    }
}

/// The delay before retry number `retried` (0 for the first): `backoff × 2^retried` capped at
/// `max_backoff`, then scaled into its upper half by `jitter` in `[0, 1)`.
fn backoff(policy: &Policy, retried: u32, jitter: f64) -> Duration {
    let full = policy.backoff.saturating_mul(1u32 << retried.min(31)).min(policy.max_backoff);
    full / 2 + (full / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

/// A uniformly random number in `[0, 1)`.
fn jitter() -> f64 {
    (random() >> 11) as f64 / (1u64 << 53) as f64
}

/// A random 64-bit number: std's randomly keyed hasher over a counter (keys differ per call).
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The `Authorization` bearer token for a body: HS256 over `iat`, a unique `jti`, `iss` and the
/// body's SHA-256, like the platform's signed webhooks.
fn token(key: &SigningKey, body: &[u8], now: SystemTime) -> String {
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({
        "iat": iat,
        "jti": format!("{:016x}{:016x}", random(), random()),
        "iss": "callpipe",
        "payload_hash": payload_hash(body),
    });
    sign_hs256(&claims, key.secret())
}

/// The URL for log lines: no credentials, query or fragment (they may hold secrets).
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<invalid URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> Policy {
        Policy { timeout: Duration::from_secs(1), retries: 3, backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(10) }
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        let p = policy();
        for retried in 0..40 {
            let full = p.backoff.saturating_mul(2u32.saturating_pow(retried)).min(p.max_backoff);
            let low = backoff(&p, retried, 0.0);
            let high = backoff(&p, retried, 0.999_999);
            assert_eq!(low, full / 2, "retry {retried}");
            assert!(high <= full && high > full * 9 / 10, "retry {retried}: {high:?} of {full:?}");
        }
        assert_eq!(backoff(&p, 0, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(&p, 30, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let values: Vec<f64> = (0..1000).map(|_| jitter()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }

    #[test]
    fn statuses_are_judged() {
        let none = HeaderMap::new();
        assert_eq!(judge(StatusCode::OK, &none), Attempt::Delivered);
        assert_eq!(judge(StatusCode::NO_CONTENT, &none), Attempt::Delivered);
        for status in [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND, StatusCode::MOVED_PERMANENTLY] {
            assert!(matches!(judge(status, &none), Attempt::Final { .. }), "{status}");
        }
        for status in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE, StatusCode::TOO_MANY_REQUESTS] {
            assert!(matches!(judge(status, &none), Attempt::Retry { after: None, .. }), "{status}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert!(
            matches!(judge(StatusCode::TOO_MANY_REQUESTS, &headers), Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert!(matches!(judge(StatusCode::SERVICE_UNAVAILABLE, &headers), Attempt::Retry { after: None, .. }));
    }

    #[test]
    fn log_lines_hide_url_secrets() {
        let shown = redacted("https://user:pw@example.com/events?token=s3cret#x");
        assert_eq!(shown, "https://example.com/events");
        assert_eq!(redacted("not a url"), "<invalid URL>");
    }

    #[test]
    fn tokens_are_unique() {
        let key = SigningKey::new("k");
        let now = SystemTime::now();
        assert_ne!(token(&key, b"{}", now), token(&key, b"{}", now));
    }
}
