//! The `callpipe` command line: a thin layer over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use callpipe::auth::{PlatformJwt, Secret};
use callpipe::client::engine::{self, Progress, RunConfig, Target};
use callpipe::client::platform::{CallPlan, DtmfMode, Source};
use callpipe::client::report::{LoadReport, Thresholds, call_summary};
use callpipe::client::{audio, plot};
use callpipe::config::Config;
use callpipe::processor::ProcessorRegistry;
use callpipe::protocol::{DtmfDigit, SampleRate};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--dtmf-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DtmfModeArg {
    Event,
    Inband,
    Both,
}

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
        /// Listen address, IP:PORT (overrides the configuration; default 127.0.0.1:8080).
        #[arg(long, value_parser = socket_addr, value_name = "IP:PORT")]
        listen: Option<SocketAddr>,
        /// Configuration file (default: the embedded callpipe.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Media threads (overrides the configuration; default one per core).
        #[arg(long)]
        media_threads: Option<usize>,
        /// Where the HTTP control API listens, or `off` (overrides `[control] listen`; default
        /// 127.0.0.1:8081). A non-loopback address needs `control.token` in the configuration.
        #[arg(long, value_name = "ADDR|off")]
        control: Option<String>,
    },
    /// Play the platform's side of one call against a bot, and report what it did.
    Call {
        /// The bot's WebSocket URL (ws://host:port/path?query).
        url: String,
        #[command(flatten)]
        call: CallArgs,
        /// Record a stereo WAV: left what the emulator sent, right what the bot played.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Tag each frame with its sequence number and send time in its first 16 bytes, to
        /// measure an echo's round trip and loss (the tag is audible as a click per frame).
        #[arg(long)]
        tag: bool,
        /// Close codes that count as a good ending (comma-separated); any other makes the exit
        /// status 1.
        #[arg(long, value_delimiter = ',', default_value = "1000", value_name = "CODES")]
        accept_close: Vec<u16>,
    },
    /// Run many emulated calls at once and measure latency, jitter and loss.
    Load {
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
    },
}

/// Options shared by `call` and `load`.
#[derive(Debug, Args)]
struct CallArgs {
    /// Sample rate: 8000, 16000 or 24000.
    #[arg(long, default_value_t = 16000)]
    rate: u32,
    /// A metadata header, flattened into the first message (repeatable). JSON values are
    /// kept as JSON: `--header n=5` sends a number.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// The Authorization header of the upgrade, e.g. "Bearer eyJ...".
    #[arg(long)]
    authorization: Option<String>,
    /// Send each call a fresh "Bearer <JWT>" signed HS256 with this secret, as the platform does
    /// for {"type":"vonage"}. "env:NAME" reads it from the environment (safer than the command line).
    #[arg(long, value_name = "SECRET", conflicts_with = "authorization")]
    jwt_secret: Option<String>,
    /// The application_id claim of --jwt-secret's tokens.
    #[arg(long, value_name = "ID", requires = "jwt_secret")]
    application_id: Option<String>,
    /// Play this WAV file (any rate, mono or stereo, 16/24/32-bit or float), resampled.
    #[arg(long, conflicts_with = "tone")]
    play: Option<PathBuf>,
    /// Play a sine at this frequency in Hz.
    #[arg(long)]
    tone: Option<f64>,
    /// Seconds of audio to stream.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keys to press: "12#" (one a second from --dtmf-start), or "1@0.5,2@1.2,#@3" with times.
    #[arg(long)]
    dtmf: Option<String>,
    /// When the first of a plain --dtmf sequence is pressed, in s.
    #[arg(long, default_value_t = 1.0)]
    dtmf_start: f64,
    /// How the keys reach the bot: `event` (the platform's `websocket:dtmf`), `inband`
    /// (tones in the audio only), or `both`.
    #[arg(long, value_enum, default_value_t = DtmfModeArg::Event)]
    dtmf_mode: DtmfModeArg,
    /// The same as --dtmf-mode both (kept for existing scripts).
    #[arg(long, conflicts_with = "dtmf_mode")]
    dtmf_inband: bool,
    /// Hang up this many seconds after the start, even mid-stream.
    #[arg(long)]
    hangup_after: Option<f64>,
    /// Frames the playout buffer holds (the platform's limit).
    #[arg(long, default_value_t = 3072)]
    playout_limit: usize,
    /// Close the call on a frame of the wrong size, as the platform does.
    #[arg(long)]
    strict: bool,
    /// Network jitter on the platform's sending side: each message leaves 0..J ms late (order
    /// kept, nothing lost, as TCP over a bad route delivers).
    #[arg(long, value_name = "J", default_value_t = 0)]
    jitter_ms: u64,
    /// A network stall every S seconds (with --stall-ms): what is sent meanwhile arrives
    /// together when it ends.
    #[arg(long, value_name = "S", requires = "stall_ms")]
    stall_every: Option<f64>,
    /// How long each stall of --stall-every lasts, in ms.
    #[arg(long, value_name = "M", requires = "stall_every")]
    stall_ms: Option<u64>,
    /// The platform pauses its sending at S seconds into the call (with --pause-ms): no frames
    /// for that long, then the caller's audio resumes where it stopped, at real-time pace.
    #[arg(long, value_name = "S", requires = "pause_ms")]
    pause_at: Option<f64>,
    /// How long the pause of --pause-at lasts, in ms.
    #[arg(long, value_name = "M", requires = "pause_at")]
    pause_ms: Option<u64>,
}

impl CallArgs {
    fn plan(&self, tag_frames: bool, record: Option<PathBuf>) -> anyhow::Result<CallPlan> {
        let rate = SampleRate::from_hz(self.rate).with_context(|| format!("--rate {} is not 8000, 16000 or 24000", self.rate))?;
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            bail!("--duration must be between 0 and 86400 seconds");
        }
        let mut plan = CallPlan::new(rate, Duration::from_secs_f64(self.duration));
        for header in &self.headers {
            let (key, value) = header.split_once('=').with_context(|| format!("--header {header}: expected KEY=VALUE"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            plan.headers.insert(key.to_owned(), value);
        }
        if let Some(auth) = &self.authorization {
            plan.upgrade_headers.push(("Authorization".into(), auth.clone()));
        }
        if let Some(secret) = &self.jwt_secret {
            let secret = Secret::parse(secret).map_err(|e| anyhow::anyhow!("--jwt-secret: {e}"))?;
            plan.jwt = Some(PlatformJwt::new(secret, self.application_id.clone()));
        }
        plan.source = match (&self.play, self.tone) {
            (Some(path), _) => Source::Samples(audio::load_wav(path, rate)?.into()),
            (None, Some(hz)) => Source::Tone(hz),
            (None, None) => Source::Silence,
        };
        if let Some(keys) = &self.dtmf {
            plan.dtmf = parse_dtmf(keys, self.dtmf_start)?;
        }
        plan.dtmf_mode = match (self.dtmf_inband, self.dtmf_mode) {
            (true, _) | (false, DtmfModeArg::Both) => DtmfMode::Both,
            (false, DtmfModeArg::Event) => DtmfMode::Event,
            (false, DtmfModeArg::Inband) => DtmfMode::Inband,
        };
        plan.hangup_after = self.hangup_after.map(Duration::from_secs_f64);
        plan.playout_limit = self.playout_limit.max(1);
        plan.strict = self.strict;
        if self.jitter_ms > 60_000 {
            bail!("--jitter-ms {} is over a minute", self.jitter_ms);
        }
        plan.network.jitter = Duration::from_millis(self.jitter_ms);
        if let (Some(every), Some(ms)) = (self.stall_every, self.stall_ms) {
            if !(0.1..=86_400.0).contains(&every) {
                bail!("--stall-every must be between 0.1 and 86400 seconds, not {every}");
            }
            if Duration::from_millis(ms) >= Duration::from_secs_f64(every) {
                bail!("--stall-ms {ms} must be shorter than --stall-every ({every} s)");
            }
            plan.network.stall_every = Some(Duration::from_secs_f64(every));
            plan.network.stall = Duration::from_millis(ms);
        }
        if let (Some(at), Some(ms)) = (self.pause_at, self.pause_ms) {
            if !(at.is_finite() && at >= 0.0 && at < self.duration) {
                bail!("--pause-at must be within the call's --duration ({} s), not {at}", self.duration);
            }
            if ms > 3_600_000 {
                bail!("--pause-ms {ms} is over an hour");
            }
            plan.pause = Some((Duration::from_secs_f64(at), Duration::from_millis(ms)));
        }
        plan.tag_frames = tag_frames;
        plan.record = record;
        Ok(plan)
    }
}

/// `"12#"` → one key a second from `start`; `"1@0.5,2@1.2"` → keys at those seconds.
fn parse_dtmf(keys: &str, start: f64) -> anyhow::Result<Vec<(Duration, DtmfDigit)>> {
    let digit = |c: char| DtmfDigit::from_char(c).with_context(|| format!("{c:?} is not a DTMF key"));
    if keys.contains('@') {
        let mut out = Vec::new();
        for item in keys.split(',') {
            let (k, at) = item.trim().split_once('@').with_context(|| format!("{item:?}: expected KEY@SECONDS"))?;
            let mut chars = k.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else { bail!("{item:?}: one key per entry") };
            let at: f64 = at.parse().with_context(|| format!("{item:?}: bad time"))?;
            if !(at.is_finite() && at >= 0.0) {
                bail!("{item:?}: bad time");
            }
            out.push((Duration::from_secs_f64(at), digit(c)?));
        }
        out.sort_by_key(|(at, _)| *at);
        Ok(out)
    } else {
        keys.chars().enumerate().map(|(i, c)| Ok((Duration::from_secs_f64(start.max(0.0) + i as f64), digit(c)?))).collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes, each said once: the library's errors name their cause in their own
/// message as well as behind `source()`, so a cause already said is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(text.trim()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `--listen`: an IP address and a port, with an example when it is not one.
fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        let port = text.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8080);
        format!("expected IP:PORT, e.g. 127.0.0.1:{port} (a host name is not resolved; [::1]:{port} for IPv6)")
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { listen, config, media_threads, control } => serve(listen, config, media_threads, control),
        Command::Call { url, call, record, json, tag, accept_close } => {
            let target = Target::parse(&url)?;
            let plan = Arc::new(call.plan(tag, record)?);
            let config =
                RunConfig { calls: 1, ramp: Duration::ZERO, threads: 1, connect_timeout: Duration::from_secs(5), max_message: 1 << 20 };
            let result = engine::run(&target, plan, &config, Arc::new(Progress::default()))?;
            let report = result.reports.first().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if !report.connected {
                // Nothing to report but why.
                eprintln!("error: {}", report.error.as_deref().unwrap_or("the call did not connect"));
                return Ok(ExitCode::FAILURE);
            } else {
                print!("{}", call_summary(&url, &report, &result));
            }
            let bad_close = report.close_code.filter(|code| !accept_close.contains(code));
            if let Some(code) = bad_close
                && !json
            {
                eprintln!("error: the call ended with close code {code} (accepted: {accept_close:?}; see --accept-close)");
            }
            let failed = !report.connected || report.error.is_some() || report.violation_count() > 0 || bad_close.is_some();
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Load { url, call, calls, ramp, threads, report, plot: plot_path, max_p99_jitter_ms, max_p99_rtt_ms, max_loss } => {
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
}

/// Prints a progress line to stderr every second until the returned flag is set.
fn spawn_progress(progress: Arc<Progress>, calls: usize) -> Arc<std::sync::atomic::AtomicBool> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
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

fn serve(
    listen: Option<SocketAddr>,
    config: Option<PathBuf>,
    media_threads: Option<usize>,
    control: Option<String>,
) -> anyhow::Result<ExitCode> {
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
    match control.as_deref() {
        None => {}
        Some("off") => config.control.listen = None,
        Some(addr) => {
            let addr: SocketAddr = addr.parse().with_context(|| format!("--control {addr:?}: an address like 127.0.0.1:8081, or off"))?;
            if !addr.ip().is_loopback() && config.control.token.is_none() {
                bail!("--control {addr} is not a loopback address: set control.token in the configuration first");
            }
            config.control.listen = Some(addr);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        callpipe::server::run(listener, config, registry, shutdown_signal(), |_| {}).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call_args(args: &[&str]) -> Result<CallArgs, clap::Error> {
        let cli = Cli::try_parse_from(["callpipe", "call", "ws://127.0.0.1:1/bot"].iter().chain(args))?;
        match cli.command {
            Command::Call { call, .. } => Ok(call),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn jwt_secret_signs_a_header_the_verifier_accepts() {
        use callpipe::auth::{Admission, Validation};
        use std::time::SystemTime;
        let plan = call_args(&["--jwt-secret", "cli-secret", "--application-id", "app-7"]).unwrap().plan(false, None).unwrap();
        assert!(plan.upgrade_headers.is_empty());
        let header = plan.jwt.as_ref().unwrap().authorization(SystemTime::now());
        let validation = Validation { application_id: Some("app-7".into()), ..Validation::default() };
        let admission = Admission::Jwt { secret: Secret::parse("cli-secret").unwrap(), validation };
        assert_eq!(admission.check(Some(&header), SystemTime::now()), Ok(()));
        let other = Admission::Jwt { secret: Secret::parse("not-the-cli-secret").unwrap(), validation: Validation::default() };
        assert_eq!(other.check(Some(&header), SystemTime::now()).unwrap_err().reason, "bad_signature");
    }

    #[test]
    fn jwt_secret_conflicts_with_authorization() {
        let err = call_args(&["--jwt-secret", "s", "--authorization", "Bearer x"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = call_args(&["--application-id", "app"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let plan = call_args(&["--authorization", "Bearer x"]).unwrap().plan(false, None).unwrap();
        assert!(plan.jwt.is_none());
        assert_eq!(plan.upgrade_headers, [("Authorization".to_owned(), "Bearer x".to_owned())]);
        assert!(call_args(&["--jwt-secret", ""]).unwrap().plan(false, None).is_err());
    }

    #[test]
    fn dtmf_schedules() {
        let plain = parse_dtmf("12#", 1.0).unwrap();
        assert_eq!(plain.len(), 3);
        assert_eq!(plain[2], (Duration::from_secs(3), DtmfDigit::Pound));
        let timed = parse_dtmf("2@1.5, 1@0.5", 0.0).unwrap();
        assert_eq!(timed[0], (Duration::from_millis(500), DtmfDigit::Digit(1)));
        assert!(parse_dtmf("x", 0.0).is_err());
        assert!(parse_dtmf("12@1", 0.0).is_err());
    }
}
