//! The `callpipe` binary itself: `call` with a WAV file and a recording, and its exit status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn callpipe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_callpipe")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("callpipe-cli-{}-{name}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_plays_a_wav_and_records_the_echo_sample_exact() {
    let server = TestServer::start(ECHO_CONFIG).await;
    // One second of a 44.1 kHz stereo ramp: callpipe call resamples it to 8 kHz.
    let input = temp("in.wav");
    let spec = hound::WavSpec { channels: 2, sample_rate: 44100, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(&input, spec).unwrap();
    for i in 0..44100 {
        let s = ((i as f64 * 2.0 * std::f64::consts::PI * 300.0 / 44100.0).sin() * 8000.0) as i16;
        writer.write_sample(s).unwrap();
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
    let record = temp("rec.wav");
    let url = server.url("/echo?call_id=cli");
    let (input_s, record_s) = (input.to_str().unwrap().to_owned(), record.to_str().unwrap().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        callpipe(&["call", &url, "--rate", "8000", "--play", &input_s, "--duration", "1.5", "--record", &record_s, "--json"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["frames_sent"], 75);
    assert_eq!(report["frames_received"], 75);
    assert_eq!(report["wrong_size"], 0);
    let mut reader = hound::WavReader::open(&record).unwrap();
    assert_eq!((reader.spec().channels, reader.spec().sample_rate), (2, 8000));
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let (left, right): (Vec<i16>, Vec<i16>) = samples.chunks(2).map(|p| (p[0], p[1])).unzip();
    assert!(left[800..4000].iter().any(|s| s.unsigned_abs() > 7000), "the file was played");
    // The echo comes back and plays one tick later: right = left delayed by 20 ms, exactly.
    assert_eq!(&right[160 + 800..160 + 4000], &left[800..4000]);
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(record);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_fails_the_exit_status_on_a_protocol_violation() {
    let url = scripted_bot(|mut ws| async move {
        let _ = ws.next().await;
        let _ = ws.send(Message::binary(vec![0u8; 100])).await;
        let _ = ws.send(Message::text(r#"{"action":"dance"}"#)).await;
        while ws.next().await.is_some() {}
    })
    .await;
    let out = tokio::task::spawn_blocking(move || callpipe(&["call", &url, "--duration", "0.5"])).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("violation: frame of 100 bytes, expected 640"), "{text}");
    assert!(text.contains("violation: text message refused"), "{text}");

    let out = callpipe(&["call", "ws://127.0.0.1:9/none", "--rate", "11025"]);
    assert_eq!(out.status.code(), Some(2), "bad arguments are a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate 11025"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_writes_its_report_and_plot_and_checks_thresholds() {
    let server = TestServer::start(ECHO_CONFIG).await;
    let (report, plot) = (temp("load.json"), temp("load.svg"));
    let url = server.url("/echo");
    let (r, p) = (report.to_str().unwrap().to_owned(), plot.to_str().unwrap().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        callpipe(&["load", &url, "--calls", "10", "--ramp", "0.5", "--duration", "2", "--report", &r, "--plot", &p, "--max-loss", "0"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["totals"]["frames_sent"], 1000);
    assert_eq!(json["rtt"]["count"], 1000);
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    // An impossible threshold fails the run.
    let url = server.url("/echo");
    let out = tokio::task::spawn_blocking(move || {
        callpipe(&["load", &url, "--calls", "2", "--duration", "1", "--ramp", "0", "--max-p99-rtt-ms", "0.001"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL: p99 round trip"));
    let _ = std::fs::remove_file(report);
    let _ = std::fs::remove_file(plot);
    server.stop().await;
}
