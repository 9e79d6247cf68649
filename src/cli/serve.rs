//! `callpipe serve`: the configuration (a file, or the embedded default) with the command line's
//! overrides, then the server until SIGINT or SIGTERM; it drains, and the recorder finishes its
//! files before the process exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use callpipe::config::Config;
use callpipe::media::MediaIo;
use callpipe::processor::ProcessorRegistry;
use clap::Args;

/// The options of `callpipe serve`.
#[derive(Debug, Args)]
pub struct ServeCommand {
    /// Listen address, IP:PORT (overrides the configuration; default 127.0.0.1:8080).
    #[arg(long, value_parser = socket_addr, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// Configuration file (default: the embedded callpipe.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Media threads (overrides the configuration; default one per core).
    #[arg(long)]
    media_threads: Option<usize>,
    /// How the media threads write their sockets: `epoll` (each visit writes) or `io_uring`
    /// (a batch of visits' writes in one submission) (overrides `[media] io`; default epoll).
    #[arg(long, value_parser = media_io, value_name = "epoll|io_uring")]
    media_io: Option<MediaIo>,
    /// Where the HTTP control API listens, or `off` (overrides `[control] listen`; default
    /// 127.0.0.1:8081). A non-loopback address needs `control.token` in the configuration.
    #[arg(long, value_name = "ADDR|off")]
    control: Option<String>,
}

impl ServeCommand {
    /// Serves calls until a signal, then drains.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let ServeCommand { listen, config, media_threads, media_io, control } = self;
        let registry = ProcessorRegistry::with_builtins();
        let mut config = match &config {
            Some(path) => Config::load(path, &registry)?,
            None => Config::embedded(&registry)?,
        };
        if let Some(listen) = listen {
            config.server.listen = listen;
        }
        if let Some(threads) = media_threads {
            config.media.threads = threads;
        }
        if let Some(io) = media_io {
            config.media.io = io;
        }
        match control.as_deref() {
            None => {}
            Some("off") => config.control.listen = None,
            Some(addr) => {
                let addr: SocketAddr =
                    addr.parse().with_context(|| format!("--control {addr:?}: an address like 127.0.0.1:8081, or off"))?;
                if !addr.ip().is_loopback() && config.control.token.is_none() {
                    bail!("--control {addr} is not a loopback address: set control.token in the configuration first");
                }
                config.control.listen = Some(addr);
            }
        }
        limit_malloc_arenas();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.listen))?;
            // Returns once every call has ended and the services have finalized the last
            // recordings and closed the forks.
            callpipe::server::run(listener, config, registry, shutdown_signal(), |_| {}).await?;
            anyhow::Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// A `--listen` value that is not an IP address and a port; shows an example with the port
/// given (or 8080).
#[derive(Debug, thiserror::Error)]
#[error("expected IP:PORT, e.g. 127.0.0.1:{port} (a host name is not resolved; [::1]:{port} for IPv6)")]
struct ListenError {
    port: u16,
}

/// `--listen`: an IP address and a port, with an example when it is not one.
fn socket_addr(text: &str) -> Result<SocketAddr, ListenError> {
    text.parse().map_err(|_| ListenError { port: text.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8080) })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn media_io(s: &str) -> Result<MediaIo, String> {
    match s {
        "epoll" => Ok(MediaIo::Epoll),
        "io_uring" => Ok(MediaIo::IoUring),
        _ => Err(format!("{s:?}: epoll or io_uring")),
    }
}

/// Malloc arenas glibc may make, unless `MALLOC_ARENA_MAX` says otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas before any thread starts. By default glibc gives threads up to
/// eight arenas per core, and a call's buffers are made on the runtime's threads and the
/// blocking pool's (admission) while they are freed on others: memory freed in one arena is not
/// reused by another, which cost about 8 KiB of resident memory per call at 500 calls
/// (BENCHMARKS.md). The media threads do not allocate in their steady state, so the arenas'
/// locks are not contended there. `MALLOC_ARENA_MAX` (or `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES`) in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tuned {
        // SAFETY: mallopt only sets a tunable of the allocator; it is called before the
        // runtime's threads exist (glibc reads it when a thread first allocates).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
