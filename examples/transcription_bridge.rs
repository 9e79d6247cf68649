//! A transcription bridge: callpipe forks each call's audio at 16 kHz to a speech service, whose
//! transcripts come back as call events (`fork:message`, printed on standard output here, and
//! posted to a route's `event_url` when it has one).
//!
//! The speech service is a fake one in this file: for each second of audio it receives it sends
//! one text message, `{"transcript": "...", "second": N, "level_dbfs": L}`, naming how loud that
//! second was. The example then places one call itself, a caller saying "aaah" (a 440 Hz tone at
//! rising levels) for three seconds, prints the call's events and exits.
//!
//! ```sh
//! cargo run --example transcription_bridge
//! ```
//!
//! With `--serve`, it keeps callpipe (on 127.0.0.1:8090, route `/transcribe`) and the fake
//! service running for calls of your own, e.g. `callpipe call ws://127.0.0.1:8090/transcribe`.

use std::time::Duration;

use callpipe::config::Config;
use callpipe::processor::ProcessorRegistry;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The fake speech service: one transcript per second of 16 kHz audio.
async fn speech_service(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            let (mut samples, mut second, mut energy) = (0usize, 0u32, 0f64);
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    Message::Text(start) => eprintln!("speech service: call starts: {start}"),
                    Message::Binary(audio) => {
                        for pair in audio.chunks_exact(2) {
                            let s = f64::from(i16::from_le_bytes([pair[0], pair[1]]));
                            energy += s * s;
                        }
                        samples += audio.len() / 2;
                        if samples >= 16_000 {
                            second += 1;
                            let rms = (energy / samples as f64).sqrt().max(1.0);
                            let level = (20.0 * (rms / 32768.0).log10() * 10.0).round() / 10.0;
                            let transcript = if level > -50.0 { "aaah" } else { "(silence)" };
                            let reply = json!({ "transcript": transcript, "second": second, "level_dbfs": level });
                            if ws.send(Message::text(reply.to_string())).await.is_err() {
                                return;
                            }
                            (samples, energy) = (0, 0.0);
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service_addr = service.local_addr()?;
    tokio::spawn(speech_service(service));

    let config = format!(
        r#"
[server]
stats_interval_ms = 0
[events]
log = "stdout"
[[route]]
path = "/transcribe"
processors = [
  {{ type = "fork", url = "ws://{service_addr}/stt/{{call_id}}", rate = 16000, name = "stt", first_message = '{{"event":"start","call_id":"{{call_id}}"}}' }},
]
"#
    );
    let registry = ProcessorRegistry::with_builtins();
    let config = Config::parse(&config, &registry)?;
    let listener = tokio::net::TcpListener::bind(if serve { "127.0.0.1:8090" } else { "127.0.0.1:0" }).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(callpipe::server::run(
        listener,
        config,
        registry,
        async move {
            let _ = stop_rx.await;
        },
        |_| {},
    ));
    if serve {
        eprintln!("callpipe on ws://{addr}/transcribe, forking to the fake speech service on {service_addr}; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    } else {
        // One call: three seconds of a 440 Hz tone at 8 kHz, louder each second.
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/transcribe?call_id=demo-1")).await?;
        ws.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}"#)).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for frame in 0..160usize {
            tick.tick().await;
            let amplitude = [0.0, 1000.0, 4000.0, 16000.0][frame / 50];
            let pcm: Vec<u8> = (0..160)
                .flat_map(|i| {
                    let t = (frame * 160 + i) as f64 / 8000.0;
                    ((amplitude * (std::f64::consts::TAU * 440.0 * t).sin()) as i16).to_le_bytes()
                })
                .collect();
            ws.send(Message::binary(pcm)).await?;
        }
        ws.send(Message::Close(None)).await?;
        while let Some(Ok(_)) = ws.next().await {}
    }
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
