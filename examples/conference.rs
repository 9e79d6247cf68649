//! A conference: three callers at 8, 16 and 24 kHz in one room, each saying a tone of its own
//! (500, 1100 and 1700 Hz). Every half second the example prints which tones each caller
//! hears, in dBFS: each hears the two others and never itself. After two seconds it mutes the
//! 16 kHz caller through the control API, after three it unmutes it, and at four the calls end.
//!
//! ```sh
//! cargo run --example conference
//! ```
//!
//! With `--serve`, it keeps callpipe running (calls on 127.0.0.1:8091, route `/conference`, the
//! room named by the metadata header `room`; control API on 127.0.0.1:8092) for calls of your
//! own, e.g. two terminals of
//! `callpipe call ws://127.0.0.1:8091/conference --header room=demo --tone 440 --duration 30`.

use std::f64::consts::TAU;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callpipe::config::Config;
use callpipe::processor::ProcessorRegistry;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const CALLERS: [(&str, u32, f64); 3] = [("alice-8k", 8000, 500.0), ("bob-16k", 16000, 1100.0), ("carol-24k", 24000, 1700.0)];

/// The level of `hz` in `samples`, in dBFS (a Goertzel filter).
fn level_dbfs(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let w = TAU * hz / f64::from(rate);
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s = f64::from(*x) / 32768.0 + 2.0 * w.cos() * s1 - s2;
        (s2, s1) = (s1, s);
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    20.0 * (2.0 * power.max(0.0).sqrt() / samples.len().max(1) as f64).max(1e-6).log10()
}

/// One caller: sends its tone on a 20 ms clock for `seconds`, keeps what it hears in `heard`.
async fn caller(url: String, rate: u32, hz: f64, seconds: u64, heard: Arc<Mutex<Vec<i16>>>) -> anyhow::Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await?;
    let (mut tx, mut rx) = ws.split();
    let metadata = json!({ "event": "websocket:connected", "content-type": format!("audio/l16;rate={rate}"), "room": "demo" });
    tx.send(Message::text(metadata.to_string())).await?;
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = rx.next().await {
            if let Message::Binary(b) = message {
                heard.lock().unwrap_or_else(|p| p.into_inner()).extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let samples = rate as usize / 50;
    for frame in 0..seconds * 50 {
        tick.tick().await;
        let pcm: Vec<u8> = (0..samples)
            .flat_map(|i| {
                let t = (frame as usize * samples + i) as f64 / f64::from(rate);
                ((5000.0 * (TAU * hz * t).sin()) as i16).to_le_bytes()
            })
            .collect();
        tx.send(Message::binary(pcm)).await?;
    }
    tx.send(Message::Close(None)).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    let control = if serve { "127.0.0.1:8092" } else { "127.0.0.1:0" };
    let config = format!(
        r#"
[server]
stats_interval_ms = 0
[control]
listen = "{control}"
[events]
log = "off"
[[route]]
path = "/conference"
processors = [{{ type = "conference", name = "{{header:room}}", rate = 16000, agc = true }}]
"#
    );
    let registry = ProcessorRegistry::with_builtins();
    let config = Config::parse(&config, &registry)?;
    let listener = tokio::net::TcpListener::bind(if serve { "127.0.0.1:8091" } else { "127.0.0.1:0" }).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(callpipe::server::run(
        listener,
        config,
        registry,
        async move {
            let _ = stop_rx.await;
        },
        move |handle| {
            let _ = handle_tx.send(handle);
        },
    ));
    let control = handle_rx.await?.control.ok_or_else(|| anyhow::anyhow!("the control API is off"))?;
    if serve {
        eprintln!("callpipe on ws://{addr}/conference (room from the `room` header); control API on http://{control}; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    } else {
        let mut calls = Vec::new();
        let mut heard = Vec::new();
        for (id, rate, hz) in CALLERS {
            let samples = Arc::new(Mutex::new(Vec::new()));
            heard.push(samples.clone());
            calls.push(tokio::spawn(caller(format!("ws://{addr}/conference?call_id={id}"), rate, hz, 4, samples)));
        }
        let http = reqwest::Client::builder().no_proxy().build()?;
        let member = |id: &str| format!("http://{control}/conferences/demo/members/{id}");
        println!(
            "{:>6}  {:<10} {:>8} {:>8} {:>8}   (dBFS of each tone in the last 0.5 s)",
            "time", "caller", "500 Hz", "1100 Hz", "1700 Hz"
        );
        for half_second in 1..=7u32 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for ((id, rate, _), samples) in CALLERS.iter().zip(&heard) {
                let samples = samples.lock().unwrap_or_else(|p| p.into_inner());
                let window = &samples[samples.len().saturating_sub(*rate as usize / 2)..];
                let levels: Vec<String> = CALLERS.iter().map(|(_, _, hz)| format!("{:>8.1}", level_dbfs(window, *rate, *hz))).collect();
                println!("{:>5.1}s  {:<10} {}", f64::from(half_second) / 2.0, id, levels.join(" "));
            }
            if half_second == 4 {
                http.put(member("bob-16k")).body(r#"{"action":"mute"}"#).send().await?.error_for_status()?;
                println!("        -- bob-16k muted --");
            }
            if half_second == 6 {
                http.put(member("bob-16k")).body(r#"{"action":"unmute"}"#).send().await?.error_for_status()?;
                println!("        -- bob-16k unmuted --");
            }
        }
        for call in calls {
            call.await??;
        }
    }
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
