//! A recording that runs out of space mid-call: the call goes on, the file stays readable up to
//! its last header update, and the recorder says so with a `recording` error event, a
//! `recording` end event and its outcome.
//!
//! "Out of space" is the process's file-size limit (`RLIMIT_FSIZE`), which makes writes past it
//! fail with `EFBIG` exactly as a full disk fails them with `ENOSPC`, without needing a small
//! file system. The limit is per process, so this file holds one test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use callpipe::processor::{Record, RecordChannels, RecordConfig};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bytes any file this process writes may reach.
const LIMIT: u64 = 100_000;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-disk-full-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The recorder driven pass by pass at 8 kHz stereo (32 kB/s): the limit is hit after about 3 s.
fn recorder_reports_the_error_and_keeps_the_file_readable() {
    let dir = temp_dir("direct");
    let mut record =
        Record::new(RecordConfig { template: "call.wav".into(), channels: RecordChannels::Stereo, ..RecordConfig::new(dir.clone()) })
            .unwrap();
    let outcomes = record.outcomes().unwrap();
    // Six seconds of call time.
    let states = record_until_full(&mut record, &callpipe::services::Services::new(), 300, |n| {
        (0..160).map(|i| ((n * 160 + i) % 2000) as i16 - 1000).collect()
    });
    let names: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["started", "error", "finished"], "{states:?}");
    assert!(states[1].1["error"].as_str().unwrap().contains("write failed"), "{states:?}");
    let end = &states[2].1;
    assert_eq!(end["path"], dir.join("call.wav").display().to_string());
    assert!(end["error"].as_str().unwrap().contains("write failed"), "{end}");

    let outcome = outcomes.recv_timeout(Duration::from_secs(2)).unwrap();
    assert!(outcome.error.as_deref().unwrap().contains("write failed"), "{outcome:?}");
    // The limit holds 25,000 stereo frames (3.1 s); the header is rewritten every second of audio,
    // so the file opens with at least the 2 s before the last rewrite, in whole frames.
    let reader = hound::WavReader::open(&outcome.path).unwrap();
    let frames = reader.duration();
    assert!((16_000..=25_000).contains(&frames), "{frames} frames readable");
    assert_eq!(reader.spec().channels, 2);
    assert!(std::fs::metadata(&outcome.path).unwrap().len() <= LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real call through `[echo, record]` at 16 kHz stereo (64 kB/s): the limit is hit after about
/// 1.5 s, and the caller still hears every frame of a 4 s call, which ends normally.
async fn the_call_goes_on() {
    let dir = temp_dir("call");
    let config = format!(
        "[server]\nstats_interval_ms = 0\n[media]\nthreads = 2\n[[route]]\npath = \"/rec\"\nprocessors = [{{ type = \"echo\" }}, {{ type = \"record\", dir = \"{}\" }}]\n",
        dir.display()
    );
    let server = TestServer::start(&config).await;
    let mut ws = server.call("/rec", 16_000).await;
    let start = tokio::time::Instant::now();
    for n in 0..200u32 {
        tokio::time::sleep_until(start + Duration::from_millis(20 * u64::from(n))).await;
        ws.send(Message::binary(test_frame(n, 640))).await.unwrap();
    }
    let mut echoed = 0;
    while echoed < 200 {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Binary(frame)))) => {
                assert_eq!(frame.to_vec(), test_frame(echoed, 640), "frame {echoed} echoed intact");
                echoed += 1;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the call stopped after {echoed} frames: {other:?}"),
        }
    }
    let normal = CloseFrame { code: CloseCode::Normal, reason: "done".into() };
    ws.send(Message::Close(Some(normal))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1000), "the call ends normally");
    server.stop().await;
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let reader = hound::WavReader::open(&file).unwrap();
    assert!(reader.duration() >= 16_000, "at least a second readable: {}", reader.duration());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_ends_the_recording_not_the_call() {
    let _limit = FileSizeLimit::set(LIMIT);
    recorder_reports_the_error_and_keeps_the_file_readable();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(the_call_goes_on());
}
