//! The I/O the processors need, kept below them: the fork's network side
//! ([`fork::ForkNet`]: a runtime of its own, the target connections, the fork counters) and the
//! recorder's writer ([`recorder::Recorder`]: a thread that owns every recording file); and
//! the processors' time histograms ([`Timings`]); text to speech ([`tts::Tts`]); and uploads
//! of finished recordings to object storage ([`uploads::Uploads`], used by the call's task).
//!
//! A server builds one [`Services`] in [`crate::server::run`] and hands it to every call's
//! processors when they are prepared ([`crate::processor::Setup::services`]); the processors
//! keep only their ends of lock-free rings. Two servers in one process, or two tests, share no
//! threads, files or counters; the one thing shared is an immutable cache of the forks' TLS
//! client configurations, keyed by `ca_file` ([`fork::tls_config`]). Threads start on first
//! use, so a server that never records or forks runs none.

pub mod fork;
pub mod recorder;
mod timings;
pub mod tts;
pub mod uploads;

use std::time::{Duration, Instant};

pub use fork::ForkNet;
pub use recorder::{Recorder, Recording};
pub use timings::Timings;
pub use tts::Tts;
pub use uploads::Uploads;

/// A server's services. Cloning is cheap and shares them.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The fork targets' connections.
    pub fork: ForkNet,
    /// The recording files.
    pub recorder: Recorder,
    /// How long each processor type's passes take.
    pub timings: std::sync::Arc<Timings>,
    /// Text to speech (one synthesis thread per process: see [`tts`]).
    pub tts: Tts,
    /// Recordings to object storage.
    pub uploads: Uploads,
}

/// Checks `done` every `step` until it holds or `timeout` has passed; returns whether it held.
/// Blocks the thread: for shutdown paths, off the async runtime.
fn poll_until(timeout: Duration, step: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
    true
}

impl Services {
    /// Services with nothing running yet.
    pub fn new() -> Services {
        Services::default()
    }

    /// Waits up to `timeout` for what the ended calls left: every stopped recording finalized
    /// and every fork connection closed. Returns whether all were done in time.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let recordings = self.recorder.wait(timeout);
        let forks = self.fork.wait(deadline.saturating_duration_since(Instant::now()));
        recordings && forks
    }
}
