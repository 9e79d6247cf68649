//! The platform emulator end to end: against `callpipe serve`, and against deliberately bad
//! servers written here, whose faults the report must name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callpipe::client::engine::{self, Progress, RunConfig, RunResult, Target};
use callpipe::client::platform::{CallPlan, CallReport, DtmfMode};
use callpipe::client::report::{LoadReport, Thresholds};
use callpipe::protocol::{DtmfDigit, SampleRate};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn run_calls(url: String, plan: CallPlan, calls: usize) -> RunResult {
    tokio::task::spawn_blocking(move || {
        let target = Target::parse(&url).unwrap();
        let config = RunConfig {
            calls,
            ramp: Duration::from_millis(200),
            threads: 2,
            connect_timeout: Duration::from_secs(5),
            max_message: 1 << 20,
        };
        engine::run(&target, Arc::new(plan), &config, Arc::new(Progress::default())).unwrap()
    })
    .await
    .unwrap()
}

async fn one_call(url: String, plan: CallPlan) -> CallReport {
    run_calls(url, plan, 1).await.reports.remove(0)
}

fn plan(rate: SampleRate, millis: u64) -> CallPlan {
    CallPlan { tag_frames: true, linger: Duration::from_millis(300), ..CallPlan::new(rate, Duration::from_millis(millis)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_and_a_load_against_callpipe_echo_are_clean() {
    let server = TestServer::start(ECHO_CONFIG).await;
    let report = one_call(server.url("/echo?call_id=emu"), plan(SampleRate::Hz8000, 2000)).await;
    assert_eq!(report.frames_sent, 100);
    assert_eq!((report.echoed, report.lost, report.wrong_size, report.violation_count()), (100, 0, 0, 0), "{report:?}");
    assert_eq!(report.close_code, Some(1000));
    assert!(report.error.is_none(), "{report:?}");

    let result = run_calls(server.url("/echo"), plan(SampleRate::Hz16000, 2000), 20).await;
    let load = LoadReport::new("ws://test/echo", 16000, &result, &Thresholds { max_loss: Some(0.0), ..Thresholds::default() });
    assert!(load.failures.is_empty(), "{}", load.summary());
    assert_eq!(load.totals.frames_sent, 2000);
    assert_eq!(load.rtt.count, 2000, "every frame's round trip measured");
    assert!(load.rtt.p50 > 0.0 && load.rtt.p50 < 30.0, "{}", load.summary());
    assert!(!load.windows.is_empty());
    server.stop().await;
}

/// One media thread with more calls than it serves one frame at a time: it collects the sockets
/// that become readable after a visit (docs/media.md), and still echoes every frame, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_thread_that_collects_its_sockets_echoes_every_frame() {
    let server = TestServer::start(&ECHO_CONFIG.replace("threads = 2", "threads = 1")).await;
    let result = run_calls(server.url("/echo"), plan(SampleRate::Hz8000, 2000), 160).await;
    let load = LoadReport::new("ws://test/echo", 8000, &result, &Thresholds { max_loss: Some(0.0), ..Thresholds::default() });
    assert!(load.failures.is_empty(), "{}", load.summary());
    assert_eq!(load.totals.frames_sent, 160 * 100);
    assert_eq!(load.rtt.count, 160 * 100, "every frame's round trip measured: {}", load.summary());
    for report in &result.reports {
        assert_eq!((report.echoed, report.lost, report.wrong_size, report.violation_count()), (100, 0, 0, 0), "{report:?}");
    }
    server.stop().await;
}

/// A bot that misbehaves in one way, on 127.0.0.1:0.
async fn bad_server(
    behaviour: fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> futures_util::future::BoxFuture<'static, ()>,
    small_buffers: bool,
) -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if small_buffers {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
                if let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await {
                    // Wait for the metadata, as a bot would.
                    let _ = ws.next().await;
                    behaviour(ws).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_sending_wrong_sizes_is_named() {
    let addr = bad_server(
        |mut ws| {
            Box::pin(async move {
                while let Some(Ok(Message::Binary(_))) = ws.next().await {
                    let _ = ws.send(Message::binary(vec![0u8; 300])).await;
                }
            })
        },
        false,
    )
    .await;
    let report = one_call(format!("ws://{addr}/bot"), plan(SampleRate::Hz8000, 500)).await;
    assert!(report.wrong_size >= 20, "{report:?}");
    assert_eq!(report.violations[0], "frame of 300 bytes, expected 320");
    assert!(report.violation_count() > 0);

    let strict = one_call(format!("ws://{addr}/bot"), CallPlan { strict: true, ..plan(SampleRate::Hz8000, 500) }).await;
    assert!(strict.closed_for_violation);
    assert_eq!((strict.close_code, strict.wrong_size), (Some(1007), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_bursting_ten_seconds_at_once_fills_the_playout_buffer() {
    let addr = bad_server(
        |mut ws| {
            Box::pin(async move {
                for _ in 0..500 {
                    let _ = ws.feed(Message::binary(vec![1u8; 320])).await;
                }
                let _ = ws.flush().await;
                while ws.next().await.is_some() {}
            })
        },
        false,
    )
    .await;
    let report = one_call(format!("ws://{addr}/bot"), CallPlan { tag_frames: false, ..plan(SampleRate::Hz8000, 1000) }).await;
    assert_eq!(report.frames_received, 500);
    assert!(report.playout_high_water >= 440, "{report:?}");
    assert!((55..=70).contains(&report.frames_played), "played in real time, not at once: {report:?}");
    assert_eq!(report.playout_overflow, 0);
    let limited =
        one_call(format!("ws://{addr}/bot"), CallPlan { playout_limit: 100, tag_frames: false, ..plan(SampleRate::Hz8000, 1000) }).await;
    assert!(limited.playout_overflow >= 390, "{limited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_never_reads_is_named_and_memory_stays_bounded() {
    let addr = bad_server(
        |ws| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(ws);
            })
        },
        true,
    )
    .await;
    let report = one_call(
        format!("ws://{addr}/bot"),
        CallPlan { tag_frames: false, hangup_after: Some(Duration::from_secs(6)), ..plan(SampleRate::Hz24000, 6000) },
    )
    .await;
    assert!(report.unsent_frames > 0, "{report:?}");
    assert!(report.violations.iter().any(|v| v.contains("stopped reading")), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_closes_mid_frame_is_named() {
    let addr = bad_server(
        |mut ws| {
            Box::pin(async move {
                let _ = ws.send(Message::binary(vec![1u8; 320])).await;
                // Half a frame, then the TCP connection goes away.
                let stream = ws.get_mut();
                let _ = stream.write_all(&[0x82, 0x7E, 0x01, 0x40]).await;
                let _ = stream.write_all(&[0u8; 100]).await;
                let _ = stream.shutdown().await;
                // Keep reading until the emulator hangs up: a socket closed with the emulator's
                // frames unread would answer them with a reset, and the emulator could see that
                // reset before the end of the stream this test is about. The FIN then arrives with
                // the last bytes, which the emulator once missed (it stopped at a short read).
                let mut sink = [0u8; 4096];
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await {
                    if n == 0 {
                        break;
                    }
                }
            })
        },
        false,
    )
    .await;
    let report = one_call(format!("ws://{addr}/bot"), plan(SampleRate::Hz8000, 2000)).await;
    assert_eq!(report.close_code, Some(1006), "{report:?}");
    assert_eq!(report.frames_received, 1);
    assert!(report.error.as_deref().unwrap_or_default().contains("without a close frame"), "{report:?}");
}

#[tokio::test]
async fn refused_upgrades_are_reported() {
    let server = TestServer::start(ECHO_CONFIG).await;
    let report = one_call(server.url("/nowhere"), plan(SampleRate::Hz8000, 500)).await;
    assert!(report.error.as_deref().unwrap_or_default().contains("HTTP 404"), "{report:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_keys_are_detected_by_callpipe() {
    let log = std::env::temp_dir().join(format!("callpipe-emulator-inband-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let config = format!(
        r#"
[server]
stats_interval_ms = 0
[events]
log = "{}"
[[route]]
path = "/dtmf"
processors = [{{ type = "dtmf_detect" }}]
"#,
        log.display()
    );
    let server = TestServer::start(&config).await;
    for rate in SampleRate::ALL {
        let keys = [(200, DtmfDigit::Digit(1)), (500, DtmfDigit::Digit(5)), (800, DtmfDigit::Pound), (1100, DtmfDigit::Letter(b'D'))];
        let plan = CallPlan {
            dtmf: keys.iter().map(|&(ms, digit)| (Duration::from_millis(ms), digit)).collect(),
            dtmf_mode: DtmfMode::Inband,
            ..plan(rate, 1500)
        };
        let report = one_call(server.url(&format!("/dtmf?call_id=inband-{}", rate.hz())), plan).await;
        assert_eq!((report.dtmf_sent, report.close_code), (4, Some(1000)), "{report:?}");
    }
    server.stop().await;
    let mut detected = std::collections::BTreeMap::<String, String>::new();
    for _ in 0..50 {
        detected.clear();
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            if event["event"] == "dtmf" {
                assert_eq!(event["source"], "inband", "{event}");
                let call = event["call_id"].as_str().unwrap().to_owned();
                detected.entry(call).or_default().push_str(event["digit"].as_str().unwrap());
            }
        }
        if detected.len() == SampleRate::ALL.len() && detected.values().all(|keys| keys.len() >= 4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&log);
    for rate in SampleRate::ALL {
        assert_eq!(detected.get(&format!("inband-{}", rate.hz())).map(String::as_str), Some("15#D"), "{detected:?}");
    }
}
