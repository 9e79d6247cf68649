//! A voice bot that talks over the `connect` websocket: callpipe forks the caller's audio to the
//! bot at 16 kHz, plays the bot's 16 kHz replies to the caller, and carries out its commands
//! (`replies = "commands"`).
//!
//! The bot in this file greets the caller (a chime, then a `notify` to learn when it has played),
//! stops talking as soon as the caller speaks over it (barge-in: `{"action":"clear"}`), answers
//! when the caller stops speaking (a short beep), answers a key with a prompt played from a WAV
//! file (`{"action":"play"}`), and hangs up once that prompt has played (`{"action":"hangup"}`).
//! "Speech" here is energy: anything louder than -40 dBFS for 60 ms.
//!
//! The example places one call itself: the caller stays silent, speaks over the greeting, waits
//! for the answer, presses 5, and is hung up on. It prints what each side saw and the call's
//! events, then exits.
//!
//! ```sh
//! cargo run --example voice_bot
//! ```

use std::time::Duration;

use callpipe::config::Config;
use callpipe::processor::ProcessorRegistry;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BOT_RATE: u32 = 16_000;

/// `ms` of a two-tone chime at 16 kHz (or one tone when `low` is 0), as L16 bytes.
fn chime(ms: u32, low: f64, high: f64) -> Vec<u8> {
    let n = (BOT_RATE * ms / 1000) as usize;
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / f64::from(BOT_RATE);
            let s = 6000.0 * ((std::f64::consts::TAU * low * t).sin() + (std::f64::consts::TAU * high * t).sin());
            (s as i16).to_le_bytes()
        })
        .collect()
}

/// One bot conversation.
async fn converse(stream: tokio::net::TcpStream, prompt: String) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let say = |ws_audio: Vec<u8>, what: &str| {
        [Message::binary(ws_audio), Message::text(json!({ "action": "notify", "payload": { "said": what } }).to_string())]
    };
    let mut talking = true;
    for m in say(chime(1500, 660.0, 880.0), "greeting") {
        let _ = ws.send(m).await;
    }
    let (mut loud_ms, mut quiet_ms, mut speaking) = (0u32, 0u32, false);
    while let Some(Ok(message)) = ws.next().await {
        let mut out = Vec::new();
        match message {
            Message::Binary(audio) => {
                // 20 ms of 16 kHz audio per message (the default frame).
                let energy: f64 = audio.chunks_exact(2).map(|p| f64::from(i16::from_le_bytes([p[0], p[1]])).powi(2)).sum();
                let loud = (energy / (audio.len() / 2).max(1) as f64).sqrt() > 327.0;
                (loud_ms, quiet_ms) = if loud { (loud_ms + 20, 0) } else { (0, quiet_ms + 20) };
                if !speaking && loud_ms >= 60 {
                    speaking = true;
                    eprintln!("bot: the caller speaks{}", if talking { ": barge-in, clear" } else { "" });
                    if talking {
                        talking = false;
                        out.push(Message::text(r#"{"action":"clear"}"#));
                    }
                }
                if speaking && quiet_ms >= 400 {
                    speaking = false;
                    eprintln!("bot: the caller stopped: answering");
                    talking = true;
                    out.extend(say(chime(300, 0.0, 1200.0), "answer"));
                }
            }
            Message::Text(text) => {
                let event: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                match (event["event"].as_str(), event["payload"]["said"].as_str()) {
                    (Some("dtmf"), _) => {
                        eprintln!("bot: key {}: playing the prompt", event["digit"]);
                        talking = true;
                        out.push(Message::text(json!({ "action": "play", "url": format!("file://{prompt}") }).to_string()));
                        out.push(Message::text(r#"{"action":"notify","payload":{"said":"prompt"}}"#));
                    }
                    (Some("notify"), Some("prompt")) => {
                        eprintln!("bot: the prompt has played: hanging up");
                        out.push(Message::text(r#"{"action":"hangup"}"#));
                    }
                    (Some("notify"), Some(what)) => {
                        eprintln!("bot: the {what} has played");
                        talking = false;
                    }
                    _ => {}
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
        for m in out {
            if ws.send(m).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The prompt the bot plays on a key: half a second of 440 Hz at 8 kHz.
    let prompt = std::env::temp_dir().join(format!("callpipe-voice-bot-{}.wav", std::process::id()));
    let spec = hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut wav = hound::WavWriter::create(&prompt, spec)?;
    for i in 0..4000 {
        wav.write_sample((8000.0 * (std::f64::consts::TAU * 440.0 * f64::from(i) / 8000.0).sin()) as i16)?;
    }
    wav.finalize()?;

    let bot = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bot_addr = bot.local_addr()?;
    let prompt_path = prompt.display().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = bot.accept().await {
            tokio::spawn(converse(stream, prompt_path.clone()));
        }
    });

    let config = format!(
        r#"
[server]
stats_interval_ms = 0
[events]
log = "stdout"
[[route]]
path = "/bot"
processors = [{{ type = "fork", url = "ws://{bot_addr}/bot/{{call_id}}", rate = {BOT_RATE}, replies = "commands", name = "bot" }}]
"#
    );
    let registry = ProcessorRegistry::with_builtins();
    let config = Config::parse(&config, &registry)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
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

    // The caller, at 8 kHz: silent, then speaking over the greeting from 0.6 s to 1.2 s, then
    // silent; presses 5 at 2.4 s; stays until hung up on (at most 10 s).
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/bot?call_id=bot-1")).await?;
    ws.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}"#)).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut frame, mut heard_ms, mut clears, mut close) = (0usize, 0usize, 0, None);
    while frame < 500 {
        tokio::select! {
            _ = tick.tick() => {
                let speaking = (30..60).contains(&frame);
                let pcm: Vec<u8> = (0..160)
                    .flat_map(|i| {
                        let t = (frame * 160 + i) as f64 / 8000.0;
                        let s = if speaking { 3000.0 * (std::f64::consts::TAU * 300.0 * t).sin() } else { 0.0 };
                        (s as i16).to_le_bytes()
                    })
                    .collect();
                ws.send(Message::binary(pcm)).await?;
                if frame == 120 {
                    ws.send(Message::text(r#"{"event":"websocket:dtmf","digit":"5","duration":100}"#)).await?;
                }
                frame += 1;
            }
            message = ws.next() => match message {
                Some(Ok(Message::Binary(b))) => heard_ms += b.len() / 16,
                Some(Ok(Message::Text(t))) => {
                    // Answer as the platform does: `clear` is acknowledged, and a `notify` is
                    // echoed once what came before it has played (here: as it arrives, in time).
                    let action: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    match action["action"].as_str() {
                        Some("clear") => {
                            clears += 1;
                            ws.send(Message::text(r#"{"event":"websocket:cleared"}"#)).await?;
                        }
                        Some("notify") => {
                            let echo = json!({ "event": "websocket:notify", "payload": action["payload"] });
                            ws.send(Message::text(echo.to_string())).await?;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    close = c.map(|c| u16::from(c.code));
                    break;
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    eprintln!("caller: heard {heard_ms} ms of the bot, {clears} clear(s), hung up with close code {close:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(());
    server.await??;
    let _ = std::fs::remove_file(&prompt);
    Ok(())
}
