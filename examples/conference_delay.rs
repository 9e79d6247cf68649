//! How long a conference takes to carry one member's voice to another: member A sends a 100 ms
//! tone burst every second, member B listens, and the time from each burst's first frame leaving
//! A to the first loud frame reaching B is the delay (both members in this process, on one
//! clock). Run it with both members on one node, then with them on two nodes of a cluster: the
//! difference is what the node-to-node link adds (benches/cluster.sh does both).
//!
//! ```text
//! cargo run --release --example conference_delay -- ws://127.0.0.1:7010/conf ws://127.0.0.1:7020/conf room-1 [bursts]
//! ```
//! Prints one line of JSON: the delays in ms (median, min, max) and how many bursts were heard.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const RATE: u32 = 16000;
const FRAME: usize = 320;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, a_url, b_url, room, rest @ ..] = args.as_slice() else {
        return Err("usage: conference_delay A_URL B_URL ROOM [BURSTS]".into());
    };
    let bursts: usize = rest.first().map(|b| b.parse()).transpose()?.unwrap_or(10);
    let metadata = |id: &str| {
        serde_json::json!({ "event": "websocket:connected", "content-type": format!("audio/l16;rate={RATE}"), "room": room, "call_id": id })
            .to_string()
    };
    let (mut a, _) = tokio_tungstenite::connect_async(a_url.as_str()).await?;
    a.send(Message::text(metadata("delay-a"))).await?;
    // A first: its node is the conference's home.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (b, _) = tokio_tungstenite::connect_async(b_url.as_str()).await?;
    let (mut b_tx, mut b_rx) = b.split();
    b_tx.send(Message::text(metadata("delay-b"))).await?;
    // B sends silence, as a caller does.
    let silence = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for n in 1u64.. {
            tokio::time::sleep_until(start + Duration::from_millis(20 * n)).await;
            if b_tx.send(Message::binary(vec![0u8; FRAME * 2])).await.is_err() {
                break;
            }
        }
    });
    // B's loud frames' arrival times.
    let loud = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let heard_into = loud.clone();
    let heard = tokio::spawn(async move {
        while let Some(Ok(message)) = b_rx.next().await {
            if let Message::Binary(bytes) = message {
                let energy: f64 = bytes.chunks_exact(2).map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])).powi(2)).sum();
                let rms = (energy / (bytes.len() / 2).max(1) as f64).sqrt();
                if rms > 1000.0 {
                    heard_into.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
                }
            }
        }
    });
    // A: a second of settling, then a burst at the start of every second.
    let start = tokio::time::Instant::now();
    let mut sent = Vec::new();
    let frames = (bursts + 2) * 50;
    for n in 0..frames {
        tokio::time::sleep_until(start + Duration::from_millis(20 * n as u64)).await;
        let in_burst = n >= 50 && n % 50 < 5 && n / 50 <= bursts;
        let mut frame = vec![0u8; FRAME * 2];
        if in_burst {
            if n % 50 == 0 {
                sent.push(Instant::now());
            }
            for (i, sample) in frame.chunks_exact_mut(2).enumerate() {
                let t = (n * FRAME + i) as f64 / f64::from(RATE);
                let v = ((t * 1000.0 * std::f64::consts::TAU).sin() * 12000.0) as i16;
                sample.copy_from_slice(&v.to_le_bytes());
            }
        }
        a.send(Message::binary(frame)).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.close(None).await?;
    silence.abort();
    heard.abort();
    let loud = loud.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut delays: Vec<f64> = sent
        .iter()
        .filter_map(|at| loud.iter().find(|t| **t >= *at && t.duration_since(*at) < Duration::from_millis(900)))
        .zip(&sent)
        .map(|(heard, at)| heard.duration_since(*at).as_secs_f64() * 1000.0)
        .collect();
    delays.sort_by(f64::total_cmp);
    let median = delays.get(delays.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::json!({
            "bursts": sent.len(),
            "heard": delays.len(),
            "median_ms": (median * 10.0).round() / 10.0,
            "min_ms": delays.first().map(|d| (d * 10.0).round() / 10.0),
            "max_ms": delays.last().map(|d| (d * 10.0).round() / 10.0),
        })
    );
    Ok(())
}
