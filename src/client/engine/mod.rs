//! The emulator's I/O: a few driver threads, each serving many calls from one poller, on the
//! same 1 ms slot wheel as callpipe's media threads.
//!
//! A driver sleeps in `epoll` until the next slot's absolute instant (the `polling` crate
//! programs a timerfd, so the wake-up is sub-millisecond), handling readable sockets as they
//! come with their arrival time, then sends the frames of every call in the due slot. Sockets
//! are non-blocking and edge-triggered; frames are encoded by [`wire`](super::wire) into a
//! per-call buffer and written with one `write` each. Connections are opened by a few
//! connector threads, so that a slow upgrade never delays another call's frames.
//!
//! [`run`] starts the drivers and the connectors and collects the reports; `target` parses the
//! URL, `connect` opens a connection and upgrades it, `driver` serves the calls.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use polling::Poller;

use super::ClientError;
use super::metrics::Metrics;
use super::platform::{CallPlan, CallReport};

mod connect;
mod driver;
mod target;

use connect::connect;
use driver::Driver;
pub use target::Target;

/// How many calls, how fast, on how many threads.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Concurrent calls.
    pub calls: usize,
    /// Calls start evenly spread over this time.
    pub ramp: Duration,
    /// Driver threads.
    pub threads: usize,
    /// Limit for a TCP connect plus upgrade.
    pub connect_timeout: Duration,
    /// Largest message accepted from the server.
    pub max_message: usize,
}

/// Live counters, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Calls whose upgrade completed.
    pub connected: AtomicU64,
    /// Calls that could not connect.
    pub failed: AtomicU64,
    /// Calls that have ended.
    pub ended: AtomicU64,
    /// Frames sent.
    pub sent: AtomicU64,
    /// Binary messages received.
    pub received: AtomicU64,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// One report per call, in call order.
    pub reports: Vec<CallReport>,
    /// All histograms, merged.
    pub metrics: Metrics,
    /// The run's start (tag timestamps and windows count from it).
    pub epoch: Instant,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs `config.calls` calls of `plan` against `target`, blocking until all have ended.
pub fn run(target: &Target, plan: Arc<CallPlan>, config: &RunConfig, progress: Arc<Progress>) -> Result<RunResult, ClientError> {
    let epoch = Instant::now();
    let threads = config.threads.clamp(1, config.calls.max(1));
    let mut drivers = Vec::with_capacity(threads);
    let mut senders = Vec::with_capacity(threads);
    let mut pollers = Vec::with_capacity(threads);
    for t in 0..threads {
        let (tx, rx) = channel();
        let poller = Arc::new(Poller::new().map_err(ClientError::Io)?);
        let expected = (0..config.calls).filter(|i| i % threads == t).count();
        let driver = Driver::new(poller.clone(), rx, plan.clone(), epoch, expected, config.max_message, progress.clone());
        drivers
            .push(std::thread::Builder::new().name(format!("callpipe-driver-{t}")).spawn(move || driver.run()).map_err(ClientError::Io)?);
        senders.push(tx);
        pollers.push(poller);
    }
    let connectors = config.calls.clamp(1, 8);
    let stop = Arc::new(AtomicBool::new(false));
    let mut connector_threads = Vec::new();
    for c in 0..connectors {
        let (target, plan, config, senders, pollers, progress, stop) =
            (target.clone(), plan.clone(), config.clone(), senders.clone(), pollers.clone(), progress.clone(), stop.clone());
        connector_threads.push(std::thread::spawn(move || {
            for index in (c..config.calls).step_by(connectors) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let at = epoch + config.ramp.mul_f64(index as f64 / config.calls.max(1) as f64);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let driver = index % senders.len();
                let started = Instant::now();
                let item = match connect(&target, &plan, config.connect_timeout) {
                    Ok((stream, leftover)) => {
                        progress.connected.fetch_add(1, Ordering::Relaxed);
                        NewCall::Connected { index, stream, leftover, connect_time: started.elapsed() }
                    }
                    Err(e) => {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        NewCall::Failed { index, error: e.to_string() }
                    }
                };
                let _ = senders[driver].send(item);
                let _ = pollers[driver].notify();
            }
        }));
    }
    for c in connector_threads {
        let _ = c.join();
    }
    let mut reports: Vec<Option<CallReport>> = vec![None; config.calls];
    let mut metrics = Metrics::new();
    for d in drivers {
        let (driver_reports, driver_metrics) = d.join().map_err(|_| ClientError::Io(io::Error::other("a driver thread panicked")))?;
        for (index, report) in driver_reports {
            if let Some(slot) = reports.get_mut(index) {
                *slot = Some(report);
            }
        }
        metrics.merge(&driver_metrics);
    }
    stop.store(true, Ordering::Relaxed);
    let reports =
        reports.into_iter().map(|r| r.unwrap_or_else(|| CallReport { error: Some("never ran".into()), ..CallReport::default() })).collect();
    Ok(RunResult { reports, metrics, epoch, elapsed: epoch.elapsed() })
}

/// A connection a connector hands to a driver.
enum NewCall {
    Connected { index: usize, stream: TcpStream, leftover: Vec<u8>, connect_time: Duration },
    Failed { index: usize, error: String },
}

/// A seed for keys and masks: std's per-process random hasher keys, mixed with the time.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}
