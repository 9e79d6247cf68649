//! `callpipe call`: one emulated call against a bot, its report printed as text or JSON; the exit
//! status is 1 when the call failed, broke the protocol or ended with a close code not accepted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use callpipe::client::engine::{self, Progress, RunConfig, Target};
use callpipe::client::report::call_summary;
use clap::Args;

use super::call_args::CallArgs;

/// The options of `callpipe call`.
#[derive(Debug, Args)]
pub struct CallCommand {
    /// The bot's WebSocket URL (ws://host:port/path?query).
    url: String,
    #[command(flatten)]
    pub(super) call: CallArgs,
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
}

impl CallCommand {
    /// Runs the call and reports it.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let CallCommand { url, call, record, json, tag, accept_close } = self;
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
}
