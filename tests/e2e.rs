//! End to end over real WebSockets on 127.0.0.1: echo at every rate, routing, close codes,
//! protocol behaviours and graceful drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use callpipe::processor::{Context, Event, Processor, ProcessorRegistry};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Sends `frames` frames to `/echo` on a 20 ms clock; returns (sent, received).
async fn echo_call(server: &TestServer, rate: u32, frames: u32) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    echo_over(server.call("/echo", rate).await, rate, frames).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_call_echoes_byte_exact_at_every_rate() {
    let server = TestServer::start(ECHO_CONFIG).await;
    let calls = [8000, 16000, 24000].map(|rate| {
        let server = &server;
        async move { (rate, echo_call(server, rate, 500).await) }
    });
    for (rate, (sent, received)) in futures_util::future::join_all(calls).await {
        let size = rate as usize / 50 * 2;
        assert!(received.iter().all(|f| f.len() == size), "every frame is exactly {size} bytes at {rate} Hz");
        assert_eq!(received.len(), sent.len(), "{rate} Hz");
        assert!(received == sent, "{rate} Hz: echo must be byte-exact and in order");
    }
    let stats = &server.handle.stats;
    assert_eq!(stats.frames_out.load(std::sync::atomic::Ordering::Relaxed), 1500);
    assert_eq!(stats.wrong_size.load(std::sync::atomic::Ordering::Relaxed), 0);
    server.stop().await;
}

/// A media thread does not wake every 1 ms slot for calls that have nothing due: frames are
/// served as they arrive, and the slots it runs are the calls' deadlines. A call handed to the
/// thread while it waits for a slot far ahead rings it awake, and is answered like the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_thread_wakes_for_deadlines_not_every_slot() {
    let server = TestServer::start(&ECHO_CONFIG.replace("threads = 2", "threads = 1")).await;
    let slots = || server.handle.media.slots.load(std::sync::atomic::Ordering::Relaxed);
    let first = echo_call(&server, 16000, 100);
    let second = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        echo_call(&server, 8000, 50).await
    };
    let (before, start) = (slots(), Instant::now());
    let ((sent, received), (sent2, received2)) = tokio::join!(first, second);
    let (ran, elapsed) = (slots() - before, start.elapsed());
    assert!(received == sent && received.len() == 100, "the first call's echo is byte-exact and whole");
    assert!(received2 == sent2 && received2.len() == 50, "so is the second's, handed to a waiting thread");
    // One a slot would be 1,000 a second.
    let per_second = ran as f64 / elapsed.as_secs_f64();
    assert!(per_second < 250.0, "{ran} slots in {elapsed:?}: {per_second:.0} a second");
}

#[tokio::test]
async fn wrong_sizes_are_reframed_in_lenient_mode() {
    let server = TestServer::start(ECHO_CONFIG).await;
    let mut ws = server.call("/echo", 8000).await;
    let stream: Vec<u8> = (0..10).flat_map(|n| test_frame(n, 320)).collect();
    for chunk in stream.chunks(333) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut back = Vec::new();
    while back.len() < stream.len() {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                assert_eq!(b.len(), 320, "output is always exact");
                back.extend_from_slice(&b);
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("stalled after {} bytes: {other:?}", back.len()),
        }
    }
    assert_eq!(back, stream);
    assert_eq!(server.handle.stats.wrong_size.load(std::sync::atomic::Ordering::Relaxed), 10);
    server.stop().await;
}

#[tokio::test]
async fn faults_get_their_close_codes() {
    let strict = ECHO_CONFIG.replace("[server]", "[server]\nframe_policy = \"strict\"\nmax_message_bytes = 4096");
    let server = TestServer::start(&strict).await;

    let mut ws = server.connect("/echo").await;
    ws.send(Message::binary(vec![0u8; 320])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1008), "binary before metadata");

    let mut ws = server.connect("/echo").await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007), "unparsable metadata");

    let mut ws = server.connect("/echo").await;
    ws.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=44100"}"#)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1003), "unsupported rate");

    let mut ws = server.connect("/echo").await;
    let started = Instant::now();
    assert_eq!(close_code(&mut ws).await, Some(1008), "no metadata in time");
    assert!(started.elapsed() >= Duration::from_millis(450));

    let mut ws = server.call("/echo", 16000).await;
    ws.send(Message::binary(vec![0u8; 641])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007), "wrong frame size in strict mode");

    let mut ws = server.call("/echo", 16000).await;
    ws.send(Message::binary(vec![0u8; 5000])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009), "message over the limit");

    let err = tokio_tungstenite::connect_async(server.url("/nowhere")).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 404),
        other => panic!("expected HTTP 404, got {other:?}"),
    }

    // The server still serves well-behaved calls.
    let mut ws = server.call("/echo", 8000).await;
    ws.send(Message::binary(test_frame(1, 320))).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::binary(test_frame(1, 320)));
    let stats = &server.handle.stats;
    let r = std::sync::atomic::Ordering::Relaxed;
    assert_eq!((stats.closed_1003.load(r), stats.closed_1007.load(r), stats.closed_1008.load(r), stats.closed_1009.load(r)), (1, 2, 2, 1));
    assert_eq!(stats.rejected_not_found.load(r), 1);
    server.stop().await;
}

/// Plays a prompt, asks for a notify after it, and barges in (clear) on any DTMF.
struct Prompt {
    started: bool,
}

impl Processor for Prompt {
    fn name(&self) -> &'static str {
        "prompt"
    }

    fn timeline(&self) -> callpipe::processor::Timeline {
        // It plays a prompt whether or not the caller speaks: the wall clock's.
        callpipe::processor::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if !self.started {
            self.started = true;
            let frame = vec![1000i16; cx.rate().frame_samples()];
            for _ in 0..10 {
                cx.enqueue_output(&frame);
            }
            cx.notify(7);
        }
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        match event {
            Event::Dtmf { .. } => {
                cx.clear();
                let frame = vec![-1000i16; cx.rate().frame_samples()];
                cx.enqueue_output(&frame);
            }
            Event::NotifyPlayed { marker } => cx.emit(Event::custom("played", marker.0)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn notify_follows_its_audio_and_dtmf_barge_in_clears() {
    let mut registry = ProcessorRegistry::with_builtins();
    registry.register("prompt", |_| Ok(Box::new(Prompt { started: false })));
    let config = "[server]\nstats_interval_ms = 0\n[[route]]\npath = \"/bot\"\nprocessors = [{ type = \"prompt\" }]\n";
    let server = TestServer::start_with(config, registry).await;
    let mut ws = server.call("/bot", 8000).await;
    let mut frames = 0;
    let started = Instant::now();
    // Ten frames, then the notify: never before the tenth frame.
    loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Binary(b) => {
                assert_eq!(b.len(), 320);
                frames += 1;
            }
            Message::Text(t) => {
                assert_eq!(t.as_str(), r#"{"action":"notify","payload":{"callpipe_marker":7}}"#);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(frames, 10);
    // Paced: ten frames with three ahead take at least 7 ticks.
    assert!(started.elapsed() >= Duration::from_millis(130), "{:?}", started.elapsed());
    ws.send(Message::text(r#"{"event":"websocket:notify","payload":{"callpipe_marker":7}}"#)).await.unwrap();
    ws.send(Message::text(r#" {"event":"websocket:dtmf","digit":"5","duration":120}"#)).await.unwrap();
    ws.send(Message::text(r#"{"event":"something:new"}"#)).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), r#"{"action":"clear"}"#),
        other => panic!("expected clear, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap() {
        Message::Binary(b) => assert_eq!(i16::from_le_bytes([b[0], b[1]]), -1000, "the new prompt follows the clear"),
        other => panic!("expected audio, got {other:?}"),
    }
    ws.send(Message::Close(None)).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_live_calls_with_1001_after_the_grace_period() {
    let server = TestServer::start(ECHO_CONFIG).await;
    let mut ws = server.call("/echo", 16000).await;
    ws.send(Message::binary(test_frame(0, 640))).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap();
    let url = server.url("/echo");
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While draining, new upgrades are refused with 503.
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503 while draining, got {other:?}"),
    }
    assert_eq!(close_code(&mut ws).await, Some(1001));
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_and_others_are_unharmed() {
    never_reading_peer(ECHO_CONFIG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_io_uring_sends_a_peer_that_never_reads_is_closed_and_others_are_unharmed() {
    never_reading_peer(&io_uring(ECHO_CONFIG)).await;
}

/// `config` with the media threads' sends through io_uring.
fn io_uring(config: &str) -> String {
    config.replace("[media]", "[media]\nio = \"io_uring\"")
}

/// A caller that never reads its echo fills its socket, stays blocked past the write timeout and
/// is closed with 1008; a call beside it keeps its echo whole.
async fn never_reading_peer(config: &str) {
    let config = config.replace("[server]", "[server]\nwrite_timeout_ms = 1000\nsend_buffer_bytes = 16384");
    let server = TestServer::start(&config).await;
    // A client with a tiny receive window that sends 24 kHz audio and never reads the echo.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut deaf, _) = tokio_tungstenite::client_async(server.url("/echo"), stream).await.unwrap();
    deaf.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=24000"}"#)).await.unwrap();
    let healthy = tokio::spawn({
        let url = server.url("/echo");
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}"#)).await.unwrap();
            // A platform's pace: a frame every 20 ms, the echo read in between (and for a
            // moment after the last frame).
            let mut back = 0;
            let start = tokio::time::Instant::now();
            for n in 0..=150u32 {
                let next = start + Duration::from_millis(20 * u64::from(n + 1) + if n == 150 { 200 } else { 0 });
                if n < 150 {
                    ws.send(Message::binary(test_frame(n, 320))).await.unwrap();
                }
                while let Ok(Some(Ok(m))) = tokio::time::timeout_at(next, ws.next()).await {
                    if let Message::Binary(b) = m {
                        assert_eq!(b.to_vec(), test_frame(back, 320));
                        back += 1;
                    }
                }
            }
            back
        }
    });
    let closed = &server.handle.stats.closed_1008;
    let started = Instant::now();
    let mut n = 0;
    while closed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the deaf peer was never closed");
        let _ = tokio::time::timeout(Duration::from_millis(50), deaf.send(Message::binary(test_frame(n, 960)))).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = healthy.await.unwrap();
    assert!(back >= 145, "the well-behaved call kept echoing: {back} of 150 frames back");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_io_uring_sends_every_echo_comes_back_whole_and_in_order() {
    if io_uring::IoUring::new(2).is_err() {
        eprintln!("io_uring is not available on this kernel: skipped");
        return;
    }
    let server = TestServer::start(&io_uring(ECHO_CONFIG)).await;
    // 40 calls at 16 kHz for 2 s, at a platform's pace: each echo is the frame sent, in order.
    let calls: Vec<_> = (0..40u32)
        .map(|c| {
            let url = server.url("/echo");
            tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                ws.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}"#)).await.unwrap();
                let mut back = 0u32;
                let start = tokio::time::Instant::now();
                for n in 0..=100u32 {
                    let next = start + Duration::from_millis(20 * u64::from(n + 1) + if n == 100 { 300 } else { 0 });
                    if n < 100 {
                        ws.send(Message::binary(test_frame(c * 1000 + n, 640))).await.unwrap();
                    }
                    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(next, ws.next()).await {
                        if let Message::Binary(b) = m {
                            assert_eq!(b.to_vec(), test_frame(c * 1000 + back, 640), "call {c}, echo {back}");
                            back += 1;
                        }
                    }
                }
                back
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 100);
    }
    let media = &server.handle.media;
    let sends = media.batched_sends.load(std::sync::atomic::Ordering::Relaxed);
    let submits = media.batch_submits.load(std::sync::atomic::Ordering::Relaxed);
    // A send carries what a visit framed: one echo, or two when two frames came together.
    assert!(sends >= 2_000, "the echoes went out through io_uring: {sends} sends for 4,000 echoes");
    assert!(submits < sends, "several sends per submission: {sends} sends in {submits}");
    server.stop().await;
}
