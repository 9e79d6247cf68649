//! `callpipe load`: many emulated calls at once; the run's summary, optionally its JSON report and
//! SVG plot, and an exit status of 1 when a threshold is not met. A progress line goes to
//! standard error every second.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use callpipe::client::engine::{self, Progress, RunConfig, Target};
use callpipe::client::plot;
use callpipe::client::report::{LoadReport, Thresholds};
use clap::Args;

use super::call_args::CallArgs;

/// The options of `callpipe load`.
#[derive(Debug, Args)]
pub struct LoadCommand {
    /// The server's WebSocket URL.
    url: String,
    #[command(flatten)]
    call: CallArgs,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Seconds over which the calls start.
    #[arg(long, default_value_t = 5.0)]
    ramp: f64,
    /// Driver threads (default: one per 1,000 calls, at most one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Draw latency and jitter over time, and histograms, as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Fail if the p99 inter-arrival deviation from 20 ms is over this many ms.
    #[arg(long)]
    max_p99_jitter_ms: Option<f64>,
    /// Fail if the p99 echo round trip is over this many ms.
    #[arg(long)]
    max_p99_rtt_ms: Option<f64>,
    /// Fail if more than this fraction of frames is lost (e.g. 0.001).
    #[arg(long)]
    max_loss: Option<f64>,
}

impl LoadCommand {
    /// Runs the calls and reports the run.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let LoadCommand { url, call, calls, ramp, threads, report, plot: plot_path, max_p99_jitter_ms, max_p99_rtt_ms, max_loss } = self;
        let target = Target::parse(&url)?;
        let plan = Arc::new(call.plan(true, None)?);
        if calls == 0 || calls > 100_000 {
            bail!("--calls must be between 1 and 100000");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = threads.unwrap_or_else(|| calls.div_ceil(1000).clamp(1, cores));
        let config = RunConfig {
            calls,
            ramp: Duration::from_secs_f64(ramp.clamp(0.0, 3600.0)),
            threads,
            connect_timeout: Duration::from_secs(10),
            max_message: 1 << 20,
        };
        let progress = Arc::new(Progress::default());
        let ticker = spawn_progress(progress.clone(), calls);
        let result = engine::run(&target, plan, &config, progress.clone());
        ticker.store(true, Ordering::Relaxed);
        let result = result?;
        let thresholds = Thresholds { max_p99_jitter_ms, max_p99_rtt_ms, max_loss };
        let load = LoadReport::new(&url, call.rate, &result, &thresholds);
        print!("{}", load.summary());
        if let Some(path) = report {
            std::fs::write(&path, serde_json::to_string_pretty(&load)?).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = plot_path {
            plot::write_svg(&load, &path)?;
        }
        Ok(if load.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }
}

/// Prints a progress line to stderr every second until the returned flag is set.
fn spawn_progress(progress: Arc<Progress>, calls: usize) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut last = (0, 0);
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let r = Ordering::Relaxed;
            let (sent, received) = (progress.sent.load(r), progress.received.load(r));
            let connected = progress.connected.load(r);
            let ended = progress.ended.load(r);
            eprintln!(
                "[{:>5.0}s] calls {}/{} live {} failed {} | frames/s sent {} received {}",
                start.elapsed().as_secs_f64(),
                connected,
                calls,
                connected.saturating_sub(ended),
                progress.failed.load(r),
                sent - last.0,
                received - last.1
            );
            last = (sent, received);
        }
    });
    stop
}
