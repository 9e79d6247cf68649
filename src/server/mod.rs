//! The tokio side: the accept loop, admission, routing and graceful drain; and the socket
//! endpoint the media threads drive.
//!
//! [`run`] takes its listener and its shutdown signal as arguments. Each connection is admitted in
//! its own task (`admission`: the TLS handshake when `[server.tls]` is set (`tls`), the upgrade
//! (`upgrade`), the metadata, the route, the pipeline); an admitted call's socket then goes to a
//! media thread as a `SocketEndpoint` (`endpoint`, over a `transport`), and a small task
//! (`call_task`) keeps the call's commands, events (`call_events`) and report. A connection's
//! errors end that connection only. Media work happens on the media threads, never on the runtime.

mod admission;
mod call_events;
mod call_task;
mod calls;
mod control;
mod edge;
mod endpoint;
mod link;
mod metrics;
mod stats;
mod tls;
mod transport;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tracing::{error, info, warn};

pub use calls::{CallStatus, CallView};
pub use control::{OPENAPI, ROUTES};
pub use stats::{LATE_THRESHOLD_US, RouteStats, ServerStats};

use crate::cluster::{Cluster, NodeGauges};
use crate::config::Config;
use crate::events::EventBus;
use crate::media::{Hangup, MediaPool, MediaStats};
use crate::processor::{Conferences, ProcessorRegistry};
use crate::services::Services;
use calls::Calls;

/// How long the TLS handshake (with `[server.tls]`) and the upgrade request may take together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams the control API loads at once.
const STREAM_LOADS: usize = 4;

/// After the grace period, how long connections get to end: a call's last frames and close
/// handshake (2 s each at most), the media thread's last pass (1 s), with a margin.
const CLOSE_WAIT: Duration = Duration::from_secs(6);

/// How long a stopping server waits for its last recordings to be finalized and its forks to
/// close (each fork closes within its stop timeout of 2 s).
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// State shared by the accept loop and every connection and call task.
pub(crate) struct Shared {
    pub config: Config,
    pub registry: ProcessorRegistry,
    pub media: MediaPool,
    pub stats: Arc<ServerStats>,
    pub calls: Calls,
    pub next_call: AtomicU64,
    pub draining: AtomicBool,
    pub idle: Notify,
    pub permits: Arc<Semaphore>,
    pub events: EventBus,
    /// Streams the control API is loading at once (each may hold `max_stream_bytes`).
    pub stream_loads: Semaphore,
    /// Connection tasks alive (from accept to the end of the call), for the drain.
    pub connections: AtomicU64,
    /// Fetches `http(s)://` streams for the control API.
    pub http: reqwest::Client,
    /// The conferences of this server.
    pub conferences: Conferences,
    /// The recorder's writer and the fork connections, handed to processors when prepared.
    pub services: Services,
    /// This node's cluster membership, with `[cluster]`.
    pub cluster: Option<Cluster>,
    /// Requests to the other nodes' control APIs (never through a proxy).
    pub peers: reqwest::Client,
}

/// Counts a connection as open, from accept until its socket closes (the drain waits for it).
pub(crate) struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    pub fn new(shared: &Arc<Shared>) -> ConnectionGuard {
        shared.connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(shared.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running server's counters, for tests and reports.
#[derive(Clone)]
pub struct Handle {
    /// Server-wide counters.
    pub stats: Arc<ServerStats>,
    /// Media thread counters.
    pub media: Arc<MediaStats>,
    /// Where the control API listens, when it does.
    pub control: Option<SocketAddr>,
    /// The server's services (its recordings, its forks' counters).
    pub services: Services,
}

/// Serves calls on `listener` until `shutdown` completes, then drains: new upgrades get 503
/// while live calls get the configured grace period to end; the rest are closed with 1001, and
/// the listener is closed.
///
/// `on_start` receives the server's counters once the media threads run.
pub async fn run(
    listener: TcpListener,
    config: Config,
    registry: ProcessorRegistry,
    shutdown: impl Future<Output = ()>,
    on_start: impl FnOnce(Handle),
) -> std::io::Result<()> {
    let control_listener = match config.control.listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|e| std::io::Error::new(e.kind(), format!("control API on {addr}: {e}")))?)
        }
        None => None,
    };
    let control_addr = control_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let events = EventBus::start(config.events.clone())?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("callpipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(std::io::Error::other)?;
    let peers = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("callpipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(std::io::Error::other)?;
    let (media, relays) = MediaPool::start(config.media)?;
    let relays: Vec<_> = relays.into_iter().map(tokio::spawn).collect();
    let stats = Arc::new(ServerStats::new(config.routes.iter().map(|r| r.path.clone())));
    let media_stats = media.stats().clone();
    let services = Services { uploads: crate::services::Uploads::new(config.storage.clone()), ..Services::new() };
    // The cluster's heartbeat reads the server's conferences, once the server's state exists.
    let state: Arc<std::sync::OnceLock<std::sync::Weak<Shared>>> = Arc::default();
    let cluster = match &config.cluster {
        Some(cluster) => {
            let control = match (&cluster.advertise_control, control_addr) {
                (Some(url), Some(_)) => url.clone(),
                (None, Some(addr)) => format!("http://{addr}"),
                (_, None) => {
                    return Err(std::io::Error::other(
                        "[cluster] needs the control API: the other nodes forward requests to it (drop --control off)",
                    ));
                }
            };
            let bound = listener.local_addr()?;
            let media_url = match &cluster.advertise_media {
                Some(url) => url.clone(),
                None if bound.ip().is_unspecified() => {
                    return Err(std::io::Error::other(format!(
                        "the calls listener {bound} is every address: set cluster.advertise_media to the URL other nodes reach it at"
                    )));
                }
                None => format!("{}://{bound}", if config.server.tls.is_some() { "wss" } else { "ws" }),
            };
            let calls = stats.clone();
            let server = state.clone();
            let gauges = NodeGauges {
                calls: Box::new(move || calls.calls_active.load(Ordering::Relaxed)),
                media_threads: media.threads(),
                conferences: Box::new(move || {
                    let shared = server.get().and_then(std::sync::Weak::upgrade);
                    shared.map(|s| s.conferences.list().iter().map(|c| c.name().to_owned()).collect()).unwrap_or_default()
                }),
            };
            let (cluster, task) = Cluster::start(cluster.clone(), control.clone(), media_url, gauges).map_err(std::io::Error::other)?;
            info!(node = cluster.node_id(), control, "joining the cluster");
            Some((cluster, task))
        }
        None => None,
    };
    on_start(Handle { stats: stats.clone(), media: media_stats.clone(), control: control_addr, services: services.clone() });
    let shared = Arc::new(Shared {
        permits: Arc::new(Semaphore::new(config.server.max_calls)),
        calls: Calls::new(config.control.ended_calls),
        config,
        registry,
        media,
        stats: stats.clone(),
        next_call: AtomicU64::new(1),
        draining: AtomicBool::new(false),
        idle: Notify::new(),
        events,
        connections: AtomicU64::new(0),
        stream_loads: Semaphore::new(STREAM_LOADS),
        http,
        conferences: Conferences::with_recorder(services.recorder.clone()),
        services: services.clone(),
        cluster: cluster.as_ref().map(|(c, _)| c.clone()),
        peers,
    });
    let _ = state.set(Arc::downgrade(&shared));
    let tls = shared.config.server.tls.is_some();
    let scheme = if tls { "wss" } else { "ws" };
    info!(listen = %format_args!("{scheme}://{}", listener.local_addr()?), tls, media_threads = shared.media.threads(), routes = shared.config.routes.len(), "callpipe serving");
    let (control_stop, control_task) = match control_listener {
        Some(listener) => {
            if shared.config.control.token.is_none() {
                warn!(listen = %control_addr.map(|a| a.to_string()).unwrap_or_default(), "the control API has no token: anyone who can reach this loopback address can steer calls (set control.token)");
            } else {
                info!(listen = %control_addr.map(|a| a.to_string()).unwrap_or_default(), "control API serving");
            }
            let stop = Arc::new(Notify::new());
            let router = control::router(shared.clone());
            let stopped = stop.clone();
            let task = tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move { stopped.notified().await });
                if let Err(e) = serve.await {
                    error!(error = %e, "control API failed");
                }
            });
            (Some(stop), Some(task))
        }
        None => (None, None),
    };
    let mut warned: Vec<&str> = Vec::new();
    for route in &shared.config.routes {
        if let crate::auth::Admission::Jwt { validation, .. } = &route.auth
            && validation.application_id.is_none()
            && !warned.contains(&route.path.as_str())
        {
            warned.push(&route.path);
            warn!(path = route.path, "this route admits any JWT signed with its secret, whatever the application: set auth.application_id");
        }
    }
    let reporter = shared.config.server.stats_interval.map(|every| {
        let (stats, media_stats) = (stats.clone(), media_stats.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.tick().await;
            let mut last_frames = 0;
            loop {
                interval.tick().await;
                // Quiet while idle: log when calls are live or something moved since last time.
                let frames = stats.frames_in.load(Ordering::Relaxed) + stats.calls_total.load(Ordering::Relaxed);
                if stats.calls_active.load(Ordering::Relaxed) > 0 || frames != last_frames {
                    info!("{}", stats.summary(&media_stats));
                }
                last_frames = frames;
            }
        })
    });

    {
        let accept = accept_loop(&listener, &shared);
        tokio::pin!(accept);
        tokio::select! {
            () = &mut accept => {}
            () = shutdown => {}
        }
        // Keep accepting while draining, so that new upgrades get a clear 503 instead of a
        // refused connection; then stop listening.
        tokio::select! {
            () = &mut accept => {}
            () = drain(&shared) => {}
        }
    }
    drop(listener);
    if let Some((cluster, mut task)) = cluster {
        cluster.leave();
        if tokio::time::timeout(Duration::from_secs(3), &mut task).await.is_err() {
            task.abort();
        }
    }
    if !shared.events.flush(shared.config.events.flush_timeout).await {
        warn!("some call events were still undelivered when shutdown's flush timed out");
    }
    if let Some(stop) = control_stop {
        stop.notify_one();
    }
    if let Some(mut task) = control_task
        && tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err()
    {
        task.abort();
    }
    info!("{}", stats.summary(&media_stats));
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    // Connection tasks that have just ended may still be dropping their handle.
    let mut shared = shared;
    for _ in 0..100 {
        match Arc::try_unwrap(shared) {
            Ok(mut owned) => {
                owned.media.shutdown();
                for relay in relays {
                    relay.abort();
                }
                settle(services).await;
                return Ok(());
            }
            Err(still_shared) => shared = still_shared,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match Arc::try_unwrap(shared) {
        Ok(mut shared) => shared.media.shutdown(),
        Err(_) => warn!("connections still hold the server state; media threads stop when they end"),
    }
    for relay in relays {
        relay.abort();
    }
    settle(services).await;
    Ok(())
}

/// Lets the services finish what the ended calls left (the last recordings finalized, the
/// forks' connections closed), for at most [`SETTLE_WAIT`].
async fn settle(services: Services) {
    match tokio::task::spawn_blocking(move || services.settle(SETTLE_WAIT)).await {
        Ok(true) => {}
        _ => warn!("some recordings or fork connections were still open at shutdown"),
    }
}

async fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let shared = shared.clone();
                tokio::spawn(async move { admission::serve(stream, peer, shared).await });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                error!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn drain(shared: &Arc<Shared>) {
    shared.draining.store(true, Ordering::Release);
    if let Some(cluster) = &shared.cluster {
        cluster.set_draining();
    }
    let active = || shared.stats.calls_active.load(Ordering::Acquire);
    if active() > 0 {
        info!(calls = active(), grace_ms = shared.config.server.shutdown_grace.as_millis() as u64, "draining");
        let _ = tokio::time::timeout(shared.config.server.shutdown_grace, wait_idle(shared)).await;
    }
    if active() > 0 {
        info!(calls = active(), "grace period over: closing calls with 1001");
    }
    // Hang up every live call, again and again: a call still being set up when the drain began
    // registers late. Every connection gets to finish (the media thread's last pass, its close
    // handshake there, its `ended` event) before the event queue is flushed.
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    while shared.connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        for call in shared.calls.live_calls() {
            call.link.hang_up(Hangup::Shutdown);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = shared.connections.load(Ordering::Acquire);
    if left > 0 {
        warn!(connections = left, "connections still open after the drain");
    }
}

async fn wait_idle(shared: &Shared) {
    loop {
        let idle = shared.idle.notified();
        if shared.stats.calls_active.load(Ordering::Acquire) == 0 {
            return;
        }
        idle.await;
    }
}
