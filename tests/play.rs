//! The `play` processor end to end: a real call over WebSockets on 127.0.0.1 to a route that
//! plays a WAV file receives exactly the file's samples in exact 20 ms frames; a configuration
//! whose file is missing does not load, and a file removed after loading closes the call with
//! 1011.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

const RATE: u32 = 16_000;
const FRAME_SAMPLES: usize = RATE as usize / 50;

/// 0.5 s and 123 samples of a deterministic, audio-like signal with no zeros, at the call's
/// rate (so no resampling, and the comparison is exact), written as a 16-bit mono WAV file.
fn prompt(name: &str) -> (PathBuf, Vec<i16>) {
    let samples: Vec<i16> = (0..8_123).map(|i: i32| ((i * 7_919 % 20_000) - 10_000) as i16 | 1).collect();
    let path = std::env::temp_dir().join(format!("callpipe-e2e-play-{}-{name}.wav", std::process::id()));
    let spec = hound::WavSpec { channels: 1, sample_rate: RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for s in &samples {
        writer.write_sample(*s).unwrap();
    }
    writer.finalize().unwrap();
    (path, samples)
}

async fn server(file: &std::path::Path) -> TestServer {
    let config = format!(
        "[server]\nstats_interval_ms = 0\nshutdown_grace_ms = 300\n[media]\nthreads = 2\n[[route]]\npath = \"/play\"\nprocessors = [{{ type = \"play\", file = \"{}\" }}]\n\
         [[route]]\npath = \"/missing\"\nprocessors = [{{ type = \"play\", file = \"{}.gone\" }}]\n",
        file.display(),
        file.display()
    );
    // The second route's file exists when the configuration loads, and is removed after.
    std::fs::copy(file, format!("{}.gone", file.display())).unwrap();
    TestServer::start(&config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_hears_the_file_sample_exact_in_20_ms_frames() {
    let (path, samples) = prompt("exact");
    let server = server(&path).await;
    let mut ws = server.call("/play", RATE).await;
    let frames = samples.len().div_ceil(FRAME_SAMPLES);
    let mut heard: Vec<i16> = Vec::new();
    let mut received = 0;
    // Wait for every frame of the file, then check that nothing follows for 300 ms.
    loop {
        let wait = if received < frames { Duration::from_secs(2) } else { Duration::from_millis(300) };
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Binary(frame)))) => {
                assert_eq!(frame.len(), FRAME_SAMPLES * 2, "frame {received} is not 20 ms");
                heard.extend(frame.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
                received += 1;
            }
            Ok(Some(Ok(_))) => {}
            Err(_) if received >= frames => break,
            other => panic!("playback stalled after {received} of {frames} frames: {other:?}"),
        }
    }
    assert_eq!(received, frames, "one frame per 20 ms of the file, and nothing after it");
    assert_eq!(heard[..samples.len()], samples[..], "the file's samples, in order");
    assert!(heard[samples.len()..].iter().all(|s| *s == 0), "the last frame is padded with silence");
    server.stop().await;
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(format!("{}.gone", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_after_loading_closes_the_call_with_1011() {
    let (path, _) = prompt("missing");
    let server = server(&path).await;
    std::fs::remove_file(format!("{}.gone", path.display())).unwrap();
    let mut ws = server.call("/missing", RATE).await;
    assert_eq!(close_code(&mut ws).await, Some(1011));
    server.stop().await;
    let _ = std::fs::remove_file(&path);
}
