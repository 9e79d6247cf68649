//! Embedding callpipe with a processor of your own: a half-volume echo that barges in (sends
//! `clear`) when the caller presses a key, served on `/half` next to the built-in `/echo`.
//!
//! ```sh
//! cargo run --release --example custom_processor            # listens on 127.0.0.1:8080
//! cargo run --release --example echo_load -- ws://127.0.0.1:8080/half 1 5
//! ```

use callpipe::config::{Config, DEFAULT_CONFIG};
use callpipe::processor::{Context, Event, Processor, ProcessorRegistry};

/// Sends the caller's audio back at half volume, and barges in on any keypress.
struct HalfEcho;

impl Processor for HalfEcho {
    fn name(&self) -> &'static str {
        "half-echo"
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if !cx.input_present() {
            return; // the platform may pause in silence
        }
        let (input, output) = cx.input_and_output_mut();
        for (out, s) in output.iter_mut().zip(input) {
            *out = out.saturating_add(*s / 2);
        }
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        if let Event::Dtmf { .. } = event {
            cx.clear(); // drop pending audio, then send {"action":"clear"}
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs to stderr (stdout carries the JSON events), coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut registry = ProcessorRegistry::with_builtins();
    registry.register("half-echo", |_params| Ok(Box::new(HalfEcho)));
    let routes = "\n[[route]]\npath = \"/half\"\nprocessors = [{ type = \"half-echo\" }]\n";
    let config = Config::parse(&format!("{DEFAULT_CONFIG}{routes}"), &registry)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    callpipe::server::run(listener, config, registry, shutdown, |_| {}).await?;
    Ok(())
}
