//! A small, self-contained load driver for measuring the server's CPU per call: N concurrent
//! calls, each sending 20 ms frames on an absolute clock and counting what comes back.
//!
//! It is the measurement harness behind `benches/echo_cpu.sh`; `callpipe load` is the full
//! emulator with latency and jitter reports.
//!
//! ```sh
//! cargo run --release --example echo_load -- ws://127.0.0.1:8080/echo 500 60 16000 5
//! #                                          URL                     calls secs rate ramp-secs
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Default)]
struct Totals {
    connected: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    wrong_size: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "ws://127.0.0.1:8080/echo".into());
    let calls: u32 = args.get(2).map_or(Ok(100), |a| a.parse())?;
    let seconds: u64 = args.get(3).map_or(Ok(30), |a| a.parse())?;
    let rate: u32 = args.get(4).map_or(Ok(16000), |a| a.parse())?;
    let ramp: f64 = args.get(5).map_or(Ok(5.0), |a| a.parse())?;
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..calls {
        let (url, totals) = (url.clone(), totals.clone());
        let begin = start + Duration::from_secs_f64(ramp * f64::from(i) / f64::from(calls.max(1)));
        let end = start + Duration::from_secs_f64(ramp) + Duration::from_secs(seconds);
        tasks.push(tokio::spawn(async move {
            sleep_until(begin).await;
            if one_call(&url, rate, end, &totals).await.is_err() {
                totals.failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let r = Ordering::Relaxed;
    println!(
        "calls={} connected={} failed={} sent={} received={} wrong_size={}",
        calls,
        totals.connected.load(r),
        totals.failed.load(r),
        totals.sent.load(r),
        totals.received.load(r),
        totals.wrong_size.load(r)
    );
    Ok(())
}

async fn one_call(url: &str, rate: u32, end: Instant, totals: &Totals) -> anyhow::Result<()> {
    let config = WebSocketConfig::default().read_buffer_size(8192).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    totals.connected.fetch_add(1, Ordering::Relaxed);
    ws.send(Message::text(format!(r#"{{"event":"websocket:connected","content-type":"audio/l16;rate={rate}"}}"#))).await?;
    let frame_bytes = rate as usize / 50 * 2;
    let frame = bytes::Bytes::from((0..frame_bytes).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = sleep_until(next) => {
                if next >= end {
                    break;
                }
                ws.send(Message::Binary(frame.clone())).await?;
                totals.sent.fetch_add(1, Ordering::Relaxed);
                next += Duration::from_millis(20);
            }
            message = ws.next() => match message {
                Some(Ok(Message::Binary(b))) => {
                    totals.received.fetch_add(1, Ordering::Relaxed);
                    if b.len() != frame_bytes {
                        totals.wrong_size.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
    ws.close(None).await?;
    Ok(())
}
