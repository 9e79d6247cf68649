//! The `callpipe` command line: a thin layer over the library.
//!
//! This file parses the command line and dispatches; each subcommand's options and body are in
//! `cli/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use cli::{CallCommand, LoadCommand, ServeCommand};

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
    Serve(ServeCommand),
    /// Play the platform's side of one call against a bot, and report what it did.
    Call(CallCommand),
    /// Run many emulated calls at once and measure latency, jitter and loss.
    Load(LoadCommand),
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(serve) => serve.run(),
        Command::Call(call) => call.run(),
        Command::Load(load) => load.run(),
    }
}
