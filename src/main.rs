//! The `callpipe` command line: a thin layer over the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use callpipe::config::Config;
use callpipe::processor::ProcessorRegistry;
use clap::{Parser, Subcommand};

/// A real-time media engine for telephony WebSocket audio.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve calls: accept the platform's WebSockets and run each route's processors.
    Serve {
        /// Listen address (overrides the configuration; default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Configuration file (default: the embedded callpipe.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Media threads (overrides the configuration; default one per core).
        #[arg(long)]
        media_threads: Option<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .init();
    match cli.command {
        Command::Serve { listen, config, media_threads } => {
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
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.server.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.server.listen))?;
                callpipe::server::run(listener, config, registry, shutdown_signal(), |_| {}).await?;
                anyhow::Ok(())
            })
        }
    }
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
