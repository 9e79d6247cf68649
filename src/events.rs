//! Call events: a JSON-lines log, signed webhooks, and a Redis stream.
//!
//! The server builds one JSON object per call event (`started`, `dtmf`, `recording`, `notify`,
//! `stream:done`, `error`, `ended`) and hands it to an [`EventBus`]. [`EventBus::publish`] never
//! blocks and never awaits: it serialises the event once and queues the same bytes for the log
//! writer and, when the call has an event URL, for a webhook worker.
//!
//! What the bus guarantees:
//!
//! * **Bounded memory.** At most [`EventsConfig::queue`] log lines and as many webhook deliveries
//!   (in flight included) wait at any time, whatever the number of calls. Beyond that a new event
//!   is dropped and counted ([`EventStats::log_dropped`], [`EventStats::webhooks_dropped`]).
//! * **The log never runs on the caller's thread.** A thread of its own writes one compact JSON
//!   object per line, in batches: whatever is waiting (up to 64 KiB) goes out in one write, so
//!   nothing sits in a buffer while the writer is idle. A failing write (a full disk) is counted
//!   and logged once per failing stretch; it never stops the webhooks.
//! * **One call's webhooks arrive in order.** Deliveries are sharded by the event's `call_id`
//!   over [`EventsConfig::workers`] tasks, each posting one request at a time; other calls
//!   proceed in parallel on the other workers. A slow endpoint delays the calls that share its
//!   worker by at most `(retries + 1) × timeout` plus the backoff per event.
//! * **Retries.** Connect errors, timeouts, 5xx and 429 are retried up to
//!   [`EventsConfig::retries`] times with exponential backoff and jitter (a `Retry-After` in
//!   seconds is honoured up to [`EventsConfig::max_backoff`]); any other status is final.
//! * **Signing.** With a [`SigningKey`], each request carries `Authorization: Bearer <JWT>`
//!   (HS256) whose `payload_hash` claim is the SHA-256 of the exact body, as in the platform's
//!   signed webhooks (signed with [`crate::auth::jwt`]).
//! * **A Redis stream** (`[events.redis]`), besides: every event `XADD`ed to one stream, kept
//!   through Redis outages within the queue (see [`stream`]).
//! * **Shutdown.** [`EventBus::flush`] waits until every event published before it is written
//!   to the log and every webhook is delivered or given up, within a deadline.

mod log;
pub mod stream;
mod webhook;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// Where the JSON lines go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogSink {
    /// No event log.
    #[default]
    Off,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, created if missing and appended to; its directory must exist.
    File(PathBuf),
}

/// The secret webhooks are signed with (HS256). Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// A key from the shared secret's bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> SigningKey {
        SigningKey(secret.into())
    }

    fn secret(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// How events are logged and delivered.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Where the JSON lines go.
    pub log: LogSink,
    /// Webhook deliveries waiting or in flight, over all calls; the log writer's queue holds as
    /// many lines. Beyond it new events are dropped and counted.
    pub queue: usize,
    /// The limit on one HTTP attempt, connecting included.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
    /// The delay before the first retry, doubled for each later one (with jitter).
    pub backoff: Duration,
    /// The longest delay between two attempts, a `Retry-After` included.
    pub max_backoff: Duration,
    /// Deliveries in flight at once (each worker posts one at a time).
    pub workers: usize,
    /// Sign each webhook with this key when set.
    pub signing: Option<SigningKey>,
    /// How long a server's shutdown waits in [`EventBus::flush`] for the queue to empty.
    pub flush_timeout: Duration,
    /// Every event also goes to this Redis stream, when set.
    pub redis: Option<stream::StreamConfig>,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            log: LogSink::Off,
            queue: 10_000,
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            workers: 4,
            signing: None,
            flush_timeout: Duration::from_secs(5),
            redis: None,
        }
    }
}

/// Counters of what happened to published events, updated as it happens.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Lines written to the log.
    pub logged: AtomicU64,
    /// Lines lost to a failed write.
    pub log_errors: AtomicU64,
    /// Lines dropped because the log writer's queue was full.
    pub log_dropped: AtomicU64,
    /// Webhooks answered with a 2xx.
    pub webhooks_delivered: AtomicU64,
    /// Attempts that failed (retried or not).
    pub webhook_attempts_failed: AtomicU64,
    /// Webhooks given up: retries exhausted or a status that is not retried.
    pub webhooks_failed: AtomicU64,
    /// Webhooks dropped because the delivery queue was full.
    pub webhooks_dropped: AtomicU64,
    /// Events appended to the Redis stream.
    pub stream_written: AtomicU64,
    /// Events dropped because the stream writer's queue was full (Redis away too long).
    pub stream_dropped: AtomicU64,
    /// Stream batches that failed and were retried.
    pub stream_attempts_failed: AtomicU64,
}

/// Takes call events and delivers them; cheap to clone (all clones share one set of queues).
///
/// The log thread and webhook tasks end by themselves once every clone is dropped and their
/// queues are empty.
#[derive(Clone, Debug)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stats: Arc<EventStats>,
    log: Option<log::LogQueue>,
    stream: Option<stream::StreamQueue>,
    workers: Vec<mpsc::UnboundedSender<webhook::Job>>,
    /// Deliveries queued or in flight over all workers.
    deliveries: Arc<Gate>,
}

impl EventBus {
    /// Opens the log and starts the log thread and the webhook workers.
    ///
    /// Must be called inside a tokio runtime; the workers run on it. Fails if there is no
    /// runtime, if `queue` or `workers` is zero, or if the log file cannot be opened.
    pub fn start(config: EventsConfig) -> io::Result<EventBus> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| io::Error::other("the event bus must be started inside a tokio runtime"))?;
        if config.queue == 0 || config.workers == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the event queue and the webhook workers must be at least 1"));
        }
        let stats = Arc::new(EventStats::default());
        let deliveries = Arc::new(Gate::new(config.queue));
        let shared = Arc::new(webhook::Shared {
            client: webhook::client(config.timeout)?,
            policy: webhook::Policy {
                timeout: config.timeout,
                retries: config.retries,
                backoff: config.backoff,
                max_backoff: config.max_backoff,
            },
            signing: config.signing,
            stats: Arc::clone(&stats),
            gate: Arc::clone(&deliveries),
        });
        let log = log::start(&config.log, config.queue, Arc::clone(&stats))?;
        let stream = config
            .redis
            .as_ref()
            .map(|redis| stream::start(redis, config.queue, config.max_backoff, Arc::clone(&stats), &runtime))
            .transpose()?;
        let workers = (0..config.workers)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                runtime.spawn(webhook::run(Arc::clone(&shared), rx));
                tx
            })
            .collect();
        Ok(EventBus { inner: Arc::new(Inner { stats, log, stream, workers, deliveries }) })
    }

    /// Queues an event for the log and, with an `event_url`, for a webhook `POST`.
    ///
    /// Never blocks and never awaits: a full queue drops the event (for that destination) and
    /// counts it. Webhooks of one `call_id` are delivered in the order they were published.
    pub fn publish(&self, event: Value, event_url: Option<&str>) {
        let inner = &*self.inner;
        let body = match serde_json::to_vec(&event) {
            Ok(body) => Bytes::from(body),
            Err(error) => {
                // A `Value` always serialises; should that change, the event is lost, not the call.
                tracing::warn!(%error, "event not serialisable, dropped");
                return;
            }
        };
        if let Some(log) = &inner.log
            && !log.push(body.clone())
        {
            inner.stats.log_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(stream) = &inner.stream {
            let text = |key: &str| match event.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            if !stream.push(stream::Entry { call_id: text("call_id"), kind: text("event"), body: body.clone() }) {
                inner.stats.stream_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Some(url) = event_url else { return };
        if !inner.deliveries.try_enter() {
            inner.stats.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let worker = &inner.workers[shard(&event, url, inner.workers.len())];
        if worker.send(webhook::Job::Deliver { url: url.to_owned(), body }).is_err() {
            // The worker is gone only when the runtime is shutting down.
            inner.deliveries.leave(1);
            inner.stats.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &EventStats {
        &self.inner.stats
    }

    /// Waits until every event published before this call is written to the log and every
    /// webhook is delivered or given up, or until `within` has passed. Returns true if
    /// everything was done in time.
    ///
    /// The bus keeps taking events meanwhile; those are not waited for.
    pub async fn flush(&self, within: Duration) -> bool {
        let mut done = Vec::with_capacity(self.inner.workers.len() + 1);
        if let Some(log) = &self.inner.log {
            let (tx, rx) = oneshot::channel();
            if !log.mark(tx) {
                return false;
            }
            done.push(rx);
        }
        if let Some(stream) = &self.inner.stream {
            let (tx, rx) = oneshot::channel();
            if !stream.mark(tx) {
                return false;
            }
            done.push(rx);
        }
        for worker in &self.inner.workers {
            let (tx, rx) = oneshot::channel();
            if worker.send(webhook::Job::Mark(tx)).is_err() {
                return false;
            }
            done.push(rx);
        }
        let all = async {
            for rx in done {
                if rx.await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(within, all).await.unwrap_or(false)
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds (`2026-11-21T10:00:00.123Z`), the one
/// format of event timestamps. Times outside 1970..=9999 are clamped to that range.
pub fn timestamp(now: SystemTime) -> String {
    // The last millisecond the formatter can print (the end of year 9999).
    let last = UNIX_EPOCH + Duration::new(253_402_300_799, 999_000_000);
    let now = now.clamp(UNIX_EPOCH, last);
    humantime::format_rfc3339_millis(now).to_string()
}

/// The worker for an event: by `call_id` so that a call's events stay in order, else by URL.
fn shard(event: &Value, url: &str, workers: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    match event.get("call_id") {
        Some(Value::String(id)) => id.hash(&mut hasher),
        Some(other) => other.to_string().hash(&mut hasher),
        None => url.hash(&mut hasher),
    }
    // The remainder is below `workers`, a usize.
    (hasher.finish() % workers.max(1) as u64) as usize
}

/// A lock-free count of queued items with a cap.
#[derive(Debug)]
struct Gate {
    held: AtomicUsize,
    cap: usize,
}

impl Gate {
    fn new(cap: usize) -> Gate {
        Gate { held: AtomicUsize::new(0), cap }
    }

    /// Takes a place if one is free.
    fn try_enter(&self) -> bool {
        self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| (held < self.cap).then_some(held + 1)).is_ok()
    }

    /// Gives back `n` places.
    fn leave(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_255_200_123);
        assert_eq!(timestamp(t), "2026-11-21T10:00:00.123Z");
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(400_000_000_000)), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_call_always_maps_to_one_worker() {
        let a = json!({"event": "dtmf", "call_id": "abc", "seq": 1});
        let b = json!({"event": "ended", "call_id": "abc", "seq": 9});
        for workers in 1..8 {
            assert_eq!(shard(&a, "http://x/1", workers), shard(&b, "http://x/2", workers));
            assert!(shard(&a, "http://x/1", workers) < workers);
        }
        let spread: std::collections::HashSet<usize> =
            (0..64).map(|i| shard(&json!({"call_id": format!("call-{i}")}), "http://x", 4)).collect();
        assert_eq!(spread.len(), 4, "64 calls use every worker");
    }

    #[test]
    fn the_gate_caps_and_gives_back() {
        let gate = Gate::new(2);
        assert!(gate.try_enter());
        assert!(gate.try_enter());
        assert!(!gate.try_enter());
        gate.leave(1);
        assert!(gate.try_enter());
        assert!(!gate.try_enter());
    }

    #[test]
    fn the_signing_key_is_not_printed() {
        let shown = format!("{:?}", EventsConfig { signing: Some(SigningKey::new("hunter2")), ..EventsConfig::default() });
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn start_needs_a_runtime_and_sane_limits() {
        assert!(EventBus::start(EventsConfig::default()).is_err());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            assert!(EventBus::start(EventsConfig { workers: 0, ..EventsConfig::default() }).is_err());
            assert!(EventBus::start(EventsConfig { queue: 0, ..EventsConfig::default() }).is_err());
            assert!(EventBus::start(EventsConfig::default()).is_ok());
        });
    }
}
