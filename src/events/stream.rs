//! The Redis Streams sink: every call event appended to one stream with `XADD`, capped with
//! `MAXLEN ~`, so that consumers read them durably, with consumer groups, in order per call.
//!
//! One task writes, in batches of whatever is waiting (a pipeline of up to [`BATCH`] `XADD`s).
//! A batch that fails is retried, whole and before anything after it, with exponential backoff
//! up to the events' `max_backoff`, for as long as Redis is away: nothing is lost while the
//! queue (`events.queue` entries) has room; beyond it new events are dropped and counted.
//! Delivery is at least once: a batch whose answer was lost is written again, so a consumer
//! that must not see an event twice keeps the last `seq` it saw for each `node` and `run` (the
//! writer's start, which tells a restarted node's counter from its previous one).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::EventStats;
use crate::auth::Secret;

/// Events written in one pipeline at most.
const BATCH: usize = 256;

/// How long one batch may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The first delay after a failed batch (doubled up to the events' `max_backoff`).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// `[events.redis]`: where the stream is.
#[derive(Clone)]
pub struct StreamConfig {
    /// Redis's URL (may hold a password).
    pub url: Secret,
    /// The stream's key.
    pub stream: String,
    /// The stream's approximate cap (`XADD … MAXLEN ~ max_len`).
    pub max_len: usize,
    /// The node id written with each event (`[cluster]`'s, or the host name and pid).
    pub node: String,
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("url", &"<redacted>")
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("node", &self.node)
            .finish()
    }
}

impl PartialEq for StreamConfig {
    fn eq(&self, other: &StreamConfig) -> bool {
        self.url.expose() == other.url.expose() && (&self.stream, self.max_len, &self.node) == (&other.stream, other.max_len, &other.node)
    }
}

impl StreamConfig {
    /// The Redis client (nothing connected yet).
    pub fn client(&self) -> Result<redis::Client, String> {
        redis_client(&self.url, "events.redis.url")
    }
}

/// A Redis client for the URL of the configuration key `key` (nothing connected yet). The error
/// names the problem and the key, never the URL, which may hold a password.
pub(crate) fn redis_client(url: &Secret, key: &str) -> Result<redis::Client, String> {
    let url = std::str::from_utf8(url.expose()).map_err(|_| format!("{key} is not UTF-8"))?;
    redis::Client::open(url).map_err(|e| format!("{key} is not a usable Redis URL: {e}"))
}

/// One event for the stream.
pub(super) struct Entry {
    pub call_id: String,
    pub kind: String,
    pub body: Bytes,
}

pub(super) enum Job {
    Event(Entry),
    /// Answered once every event queued before it is written.
    Mark(oneshot::Sender<()>),
}

/// The sink's end of the queue: bounded by a count shared with the task.
#[derive(Debug)]
pub(super) struct StreamQueue {
    tx: mpsc::UnboundedSender<Job>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl StreamQueue {
    /// Queues an event; false (and nothing queued) when the queue is full or the task is gone.
    pub fn push(&self, entry: Entry) -> bool {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if self.tx.send(Job::Event(entry)).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn mark(&self, done: oneshot::Sender<()>) -> bool {
        self.tx.send(Job::Mark(done)).is_ok()
    }
}

/// Starts the writer task on `runtime`.
pub(super) fn start(
    config: &StreamConfig,
    capacity: usize,
    max_backoff: Duration,
    stats: Arc<EventStats>,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<StreamQueue> {
    let client = config.client().map_err(std::io::Error::other)?;
    let manager = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(WRITE_TIMEOUT))
        .set_response_timeout(Some(WRITE_TIMEOUT))
        .set_number_of_retries(1);
    // Connecting happens in the runtime's context (the manager spawns its own task).
    let connection = {
        let _entered = runtime.enter();
        ConnectionManager::new_lazy_with_config(client, manager).map_err(std::io::Error::other)?
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let writer =
        Writer { connection, stream: config.stream.clone(), max_len: config.max_len, node: config.node.clone(), run, seq: 0, stats };
    runtime.spawn(writer.run(rx, waiting.clone(), max_backoff));
    Ok(StreamQueue { tx, waiting, capacity })
}

struct Writer {
    connection: ConnectionManager,
    stream: String,
    max_len: usize,
    node: String,
    /// When this writer started (ms since the Unix epoch): `seq` counts from 1 again in each run.
    run: u64,
    /// The writer's event counter: with `node` and `run`, it names an event once (for consumers
    /// that drop the duplicates a retried batch may leave).
    seq: u64,
    stats: Arc<EventStats>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>, waiting: Arc<AtomicUsize>, max_backoff: Duration) {
        let mut batch: Vec<(u64, Entry)> = Vec::with_capacity(BATCH);
        let mut marks: Vec<oneshot::Sender<()>> = Vec::new();
        while let Some(job) = rx.recv().await {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                match job {
                    Job::Event(entry) => {
                        self.seq += 1;
                        batch.push((self.seq, entry));
                    }
                    // Answered once the events before it are written, below.
                    Job::Mark(done) => marks.push(done),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let mut backoff = FIRST_BACKOFF;
            while !batch.is_empty() {
                match self.write(&batch).await {
                    Ok(()) => {
                        self.stats.stream_written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        waiting.fetch_sub(batch.len(), Ordering::AcqRel);
                        batch.clear();
                    }
                    Err(e) => {
                        self.stats.stream_attempts_failed.fetch_add(1, Ordering::Relaxed);
                        // Said once per failing stretch.
                        if backoff == FIRST_BACKOFF {
                            tracing::warn!(error = %e, stream = self.stream, waiting = waiting.load(Ordering::Relaxed), "the event stream (Redis) refused a batch; retrying it");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max_backoff.max(FIRST_BACKOFF));
                    }
                }
            }
            for done in marks.drain(..) {
                let _ = done.send(());
            }
        }
    }

    async fn write(&mut self, batch: &[(u64, Entry)]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for (seq, entry) in batch {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg("call_id")
                .arg(&entry.call_id)
                .arg("event")
                .arg(&entry.kind)
                .arg("node")
                .arg(&self.node)
                .arg("run")
                .arg(self.run)
                .arg("seq")
                .arg(*seq)
                .arg("data")
                .arg(entry.body.as_ref())
                .ignore();
        }
        match tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<()>(&mut self.connection)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
        }
    }
}
