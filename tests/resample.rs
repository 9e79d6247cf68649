//! The `resample` wrapper end to end: an 8 kHz call over WebSockets on 127.0.0.1 to a route
//! whose echo runs at 16 kHz gets its tone back at the same level, clean, on the 20 ms grid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::f64::consts::PI;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[server]
stats_interval_ms = 0
shutdown_grace_ms = 300
[media]
threads = 2
[[route]]
path = "/wideband-echo"
processors = [{ type = "resample", rate = 16000, processors = [{ type = "echo" }] }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_khz_caller_hears_its_tone_back_through_a_16_khz_echo() {
    let server = TestServer::start(CONFIG).await;
    let ws = server.call("/wideband-echo", 8000).await;
    let (mut tx, mut rx) = ws.split();
    const FRAMES: usize = 50;
    let amplitude = 12_000.0;
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for frame in 0..FRAMES {
            tokio::time::sleep_until(start + Duration::from_millis(20 * frame as u64)).await;
            let bytes: Vec<u8> = (0..160)
                .flat_map(|i| {
                    let n = (frame * 160 + i) as f64;
                    ((amplitude * (2.0 * PI * 1000.0 * n / 8000.0).sin()).round() as i16).to_le_bytes()
                })
                .collect();
            tx.send(Message::binary(bytes)).await.unwrap();
        }
        tx
    });
    let mut heard: Vec<f64> = Vec::new();
    while heard.len() < FRAMES * 160 {
        match tokio::time::timeout(Duration::from_secs(2), rx.next()).await {
            Ok(Some(Ok(Message::Binary(frame)))) => {
                assert_eq!(frame.len(), 320, "exact 20 ms frames at the call's rate");
                heard.extend(frame.chunks_exact(2).map(|b| f64::from(i16::from_le_bytes([b[0], b[1]]))));
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("echo stalled after {} samples: {other:?}", heard.len()),
        }
    }
    let mut tx = sender.await.unwrap();
    tx.send(Message::Close(None)).await.unwrap();
    // A 400 ms window inside the tone: its 1 kHz component, and everything else. A frame the
    // sender (a tokio task on a loaded machine) delivers too late becomes pause silence, as it
    // should; of the windows that start on a frame, the one with the most tone is measured.
    let measure = |window: &[f64]| {
        let (mut re, mut im) = (0.0, 0.0);
        for (n, x) in window.iter().enumerate() {
            let w = 2.0 * PI * 1000.0 * n as f64 / 8000.0;
            re += x * w.cos();
            im -= x * w.sin();
        }
        let level = 2.0 * re.hypot(im) / window.len() as f64;
        let total: f64 = window.iter().map(|x| x * x).sum::<f64>() / window.len() as f64;
        (level, total)
    };
    let (level, total) = (1_000..heard.len() - 3_200)
        .step_by(160)
        .map(|start| measure(&heard[start..start + 3_200]))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    let tone = level * level / 2.0;
    let sinad = 10.0 * (tone / (total - tone)).log10();
    let gain_db = 20.0 * (level / amplitude).log10();
    assert!(gain_db.abs() < 0.5, "same level after two conversions: {gain_db:.2} dB");
    assert!(sinad > 60.0, "clean: SINAD {sinad:.1} dB");
    server.stop().await;
}
