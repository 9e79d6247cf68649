//! The fork service: the network side of every `fork` processor of a server.
//!
//! A [`ForkNet`] owns a tokio runtime of its own, with two worker threads named
//! `callpipe-fork`, started with the first fork: neither a media thread nor the server's
//! runtime. A fork's stage, when prepared, describes its target ([`Target`]) and gets back the
//! media thread's end of four rings ([`MediaEnd`], see `link.rs`); the other end goes to one
//! task on the runtime (`task.rs`) that connects, sends the audio, relays the replies and
//! reconnects. The media thread never wakes the task: the task polls its rings every
//! [`POLL_INTERVAL`], which bounds the added latency to one interval plus one frame.
//!
//! The service also keeps the counters per fork name ([`ForkNet::totals`], `metrics.rs`) and
//! hands out notify marker ranges. Dropping the last handle shuts the runtime down without
//! waiting: call [`ForkNet::wait`] first for the forks of ended calls to close cleanly.

mod codec;
mod command;
mod link;
mod metrics;
mod target;
mod task;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[cfg(feature = "opus")]
pub use codec::ForkOpusEncoder;
pub use codec::{CodecError, DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL, Encoder, ForkCodec};
pub use command::{Command, CommandError, parse_command};
pub use link::{MediaEnd, Note, Reply};
pub use metrics::{ForkCounters, ForkTotals};
pub use target::{Security, TrustError, tls_config};

use tokio_tungstenite::tungstenite::handshake::client::Request;

use crate::protocol::SampleRate;
use crate::resample::Resampler;

/// How often a fork's task sends the audio ring's frames and checks its flags.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The most a fork's task takes to finish after the call ends.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound on one connection attempt (TCP, TLS and the upgrade).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Seconds of the target's audio kept when it sends faster than real time.
pub const MAX_BACKLOG_SECONDS: usize = 60;

/// The first reconnect delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// The longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The frame sizes a fork may send, in ms.
pub const FRAME_MS: [u32; 4] = [10, 20, 40, 60];

/// What a fork's task needs to know about its target, built when the fork is prepared.
pub struct Target {
    /// The fork's name, for events, logs and counters.
    pub name: String,
    /// The upgrade request: the URL and headers, rendered for the call.
    pub request: Request,
    /// `ws://` or `wss://` with its trust roots.
    pub security: Security,
    /// The first text message on every connection, rendered for the call.
    pub first_message: Option<String>,
    /// Interleaved samples per binary message.
    pub chunk: usize,
    /// The codec of the binary messages.
    pub encoder: Encoder,
    /// Whether text replies may be commands (`replies = "commands"`).
    pub commands: bool,
    /// The call's rate, at which reply audio reaches the media thread.
    pub call_rate: SampleRate,
    /// From the target's reply rate to the call's, when they differ.
    pub reply_resampler: Option<Resampler>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).field("url", &self.request.uri()).finish_non_exhaustive()
    }
}

/// Why a fork could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForkError {
    /// The runtime's threads could not be started.
    #[error("cannot start the fork runtime: {0}")]
    Runtime(String),
}

/// A server's fork connections. Cloning is cheap and shares them.
#[derive(Debug, Clone, Default)]
pub struct ForkNet {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
    counters: metrics::Registry,
    /// Tasks not yet ended.
    live: Arc<AtomicUsize>,
    next_fork: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks yield, which may not happen on an async
        // thread; the tasks of ended calls were given `wait`'s time already.
        if let Some(Ok(runtime)) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Counts a live task; the count drops when the task (and this) does.
#[derive(Debug)]
struct LiveTask(Arc<AtomicUsize>);

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ForkNet {
    /// A fork service with no connections; its runtime starts with the first fork.
    pub fn new() -> ForkNet {
        ForkNet::default()
    }

    /// Starts a fork to `target`: rings with room for `audio` samples toward the target and
    /// `reply_audio` samples back, and one task on the runtime. Returns the media thread's end.
    /// Call it when preparing a fork: it locks and allocates.
    pub fn start(&self, target: Target, audio: usize, reply_audio: usize) -> Result<MediaEnd, ForkError> {
        let runtime = self.runtime()?;
        let marker_base = crate::call::Marker::fork_base(self.inner.next_fork.fetch_add(1, Ordering::Relaxed));
        let (media, end) = link::rings(audio, reply_audio, marker_base);
        let counters = self.inner.counters.counters(&target.name);
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        let live = LiveTask(self.inner.live.clone());
        runtime.spawn(task::Task::new(target, end, counters, marker_base, live).run());
        Ok(media)
    }

    /// Every fork name started on this service, with its counters' values, by name.
    pub fn totals(&self) -> Vec<(String, ForkTotals)> {
        self.inner.counters.totals()
    }

    /// Forks whose task has not ended yet.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for every fork task to end (each ends within [`STOP_TIMEOUT`] of
    /// its call's end). Returns whether none was left.
    pub fn wait(&self, timeout: Duration) -> bool {
        super::poll_until(timeout, POLL_INTERVAL, || self.live() == 0)
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, ForkError> {
        self.inner
            .runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("callpipe-fork")
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| ForkError::Runtime(e.clone()))
    }
}
