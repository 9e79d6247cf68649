//! Conference callers for end-to-end tests: a caller that sends a tone on a 20 ms clock and
//! keeps what it hears, and a tone's level in what was heard.

use std::f64::consts::TAU;
use std::time::Duration;

use callpipe::audio::Tone;
use callpipe::protocol::SampleRate;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{Client, TestServer};

fn rate_of(hz: u32) -> SampleRate {
    SampleRate::from_hz(hz).unwrap()
}

/// Opens a call to `path` with `call_id` at `rate`, naming `room` in its metadata.
pub async fn join(server: &TestServer, path: &str, id: &str, rate: u32, room: &str) -> Client {
    let mut ws = server.connect(&format!("{path}?call_id={id}")).await;
    let metadata = json!({ "event": "websocket:connected", "content-type": format!("audio/l16;rate={rate}"), "room": room });
    ws.send(Message::text(metadata.to_string())).await.unwrap();
    ws
}

/// A caller that sends a tone on a 20 ms clock and keeps everything it hears, until told to
/// stop; then closes.
pub struct Caller {
    stop: mpsc::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    /// Samples heard so far (shared with the task).
    progress: std::sync::Arc<std::sync::Mutex<Vec<i16>>>,
}

impl Caller {
    pub fn start(ws: Client, rate: u32, tone_hz: f64) -> Caller {
        let (stop, mut stopped) = mpsc::channel(1);
        let progress = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = progress.clone();
        let task = tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let reader = tokio::spawn(async move {
                while let Some(Ok(message)) = rx.next().await {
                    if let Message::Binary(b) = message {
                        shared.lock().unwrap().extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
                    }
                }
            });
            let mut tone = Tone::new(tone_hz, -16.0, rate_of(rate)).unwrap();
            let mut frame = vec![0i16; rate as usize / 50];
            let start = tokio::time::Instant::now();
            for n in 0u64.. {
                tokio::select! {
                    _ = stopped.recv() => break,
                    _ = tokio::time::sleep_until(start + Duration::from_millis(20 * n)) => {}
                }
                tone.fill(&mut frame);
                let bytes: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
                if tx.send(Message::binary(bytes)).await.is_err() {
                    break;
                }
            }
            let _ = tx.send(Message::Close(None)).await;
            let _ = tokio::time::timeout(Duration::from_secs(3), reader).await;
        });
        Caller { stop, task, progress }
    }

    /// The last `seconds` of what it heard.
    pub fn last(&self, rate: u32, seconds: f64) -> Vec<i16> {
        let heard = self.progress.lock().unwrap();
        let n = (rate as f64 * seconds) as usize;
        heard[heard.len().saturating_sub(n)..].to_vec()
    }

    pub async fn hang_up(self) {
        let _ = self.stop.send(()).await;
        let _ = self.task.await;
    }
}

/// The level of `hz` in `samples`, in dB relative to a full-scale sine (Goertzel).
pub fn level_db(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let w = TAU * hz / f64::from(rate);
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s = f64::from(*x) / 32768.0 + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let amplitude = 2.0 * power.sqrt() / samples.len() as f64;
    20.0 * amplitude.max(1e-9).log10()
}
