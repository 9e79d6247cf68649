//! Hostile input, one test per fault: each asserts the exact close code (or that the connection
//! is dropped), that a well-behaved call running at the same time kept echoing every frame in
//! order and on time, and that nothing on the server's threads panicked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use common::{Client, ECHO_CONFIG, TestServer, close_code, test_frame};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Panics on the server's threads (media threads, the runtime's workers), counted by a hook.
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            if name.starts_with("callpipe") || name.starts_with("tokio-runtime-worker") {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

const METADATA_8K: &str = r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}"#;

/// A well-behaved 8 kHz caller on `/echo` for the length of a fault: a frame every 20 ms, each
/// echo checked byte for byte and in order, and its round trip kept.
struct Witness {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u32, Vec<Duration>)>,
}

impl Witness {
    async fn start(server: &TestServer) -> Witness {
        let mut ws = server.connect("/echo").await;
        ws.send(Message::text(METADATA_8K)).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let sent_at = Arc::new(Mutex::new(Vec::<Instant>::new()));
            let times = sent_at.clone();
            let sender = tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let mut n = 0u32;
                while !stopping.load(Ordering::SeqCst) {
                    tokio::time::sleep_until(start + Duration::from_millis(20 * u64::from(n))).await;
                    times.lock().unwrap().push(Instant::now());
                    tx.send(Message::binary(test_frame(n, 320))).await.unwrap();
                    n += 1;
                }
                tx.send(Message::Close(None)).await.unwrap();
                n
            });
            let mut rtts = Vec::new();
            while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(3), rx.next()).await {
                if let Message::Binary(b) = message {
                    let n = rtts.len() as u32;
                    assert_eq!(b.to_vec(), test_frame(n, 320), "the witness's echo {n} came back changed or out of order");
                    rtts.push(sent_at.lock().unwrap()[n as usize].elapsed());
                }
            }
            (sender.await.unwrap(), rtts)
        });
        // Let it settle before the fault.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Witness { stop, task }
    }

    /// Stops the witness and checks it: nearly every frame back, none late by much.
    async fn check(self) {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, mut rtts) = self.task.await.unwrap();
        assert!(rtts.len() as u32 + 5 >= sent, "the witness got {} of {sent} frames back", rtts.len());
        rtts.sort();
        let p99 = rtts[rtts.len() * 99 / 100];
        // Loopback echo takes 10-30 ms; the bound only catches a call held up by another's fault.
        assert!(p99 < Duration::from_millis(250), "the witness's p99 round trip was {p99:?}");
        assert_eq!(SERVER_PANICS.load(Ordering::SeqCst), 0, "a server thread panicked");
    }
}

async fn server_with(extra: &str) -> TestServer {
    watch_panics();
    TestServer::start(&ECHO_CONFIG.replace("[server]", &format!("[server]\n{extra}"))).await
}

/// A WebSocket upgrade request for `path`.
fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// An upgraded call that has sent its 8 kHz metadata, spoken to in raw WebSocket frames.
async fn raw_call(server: &TestServer, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(upgrade_request(path).as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream.write_all(&raw_frame(true, 1, METADATA_8K.as_bytes())).await.unwrap();
    stream
}

/// One client frame (masked, as RFC 6455 requires of clients).
fn raw_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames until a close frame; its code (None if the connection just ends).
async fn raw_close_code(stream: &mut TcpStream) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut head = [0u8; 2];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut head)).await.expect("no close within 5 s").ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                stream.read_exact(&mut b).await.ok()?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                stream.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).await.ok()?;
        if head[0] & 0x0f == 8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_before_metadata_closes_1008() {
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    let mut ws = server.connect("/echo").await;
    ws.send(Message::binary(vec![0u8; 320])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1008));
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_closes_with_its_code() {
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    let deep =
        format!(r#"{{"event":"websocket:connected","content-type":"audio/l16;rate=8000","x":{}1{}}}"#, "[".repeat(64), "]".repeat(64));
    let long = format!(r#"{{"event":"websocket:connected","content-type":"audio/l16;rate=8000","x":"{}"}}"#, "a".repeat(1 << 20));
    for (text, code, what) in [
        ("{not json".to_owned(), 1007, "invalid JSON"),
        (deep, 1007, "nested 64 deep"),
        (long, 1009, "1 MiB long"),
        (r#"{"event":"websocket:connected","content-type":"audio/l16;rate=44100"}"#.to_owned(), 1003, "an unsupported rate"),
    ] {
        let mut ws = server.connect("/echo").await;
        let _ = ws.send(Message::text(text)).await;
        assert_eq!(close_code(&mut ws).await, Some(code), "{what}");
    }
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_odd_frames_are_reframed_and_a_mebibyte_frame_closes_1009() {
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    // 25 frames' worth of audio in pieces of 1, 161 and 158 bytes (samples split across
    // messages), paced as 20 ms frames; then a frame with a stray byte after it (dropped) and
    // one more frame.
    let mut ws: Client = server.connect("/echo").await;
    ws.send(Message::text(METADATA_8K)).await.unwrap();
    let frames: Vec<Vec<u8>> = (0..25).map(|n| test_frame(1000 + n, 320)).collect();
    let stream: Vec<u8> = frames.concat();
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for (n, chunk) in stream.chunks(320).enumerate() {
            tokio::time::sleep(Duration::from_millis(if n == 0 { 0 } else { 20 })).await;
            let (one, rest) = chunk.split_at(1);
            let (middle, last) = rest.split_at(161);
            for piece in [one, middle, last] {
                tx.send(Message::binary(piece.to_vec())).await.unwrap();
            }
        }
        let mut odd = test_frame(2000, 320);
        odd.push(0x55);
        for frame in [odd, test_frame(2001, 320)] {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(Message::binary(frame)).await.unwrap();
        }
        tx
    });
    let mut back = Vec::new();
    while back.len() < 27 {
        match tokio::time::timeout(Duration::from_secs(2), rx.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => back.push(b.to_vec()),
            Ok(Some(Ok(_))) => {}
            other => panic!("the re-framed call stalled after {} frames: {other:?}", back.len()),
        }
    }
    assert_eq!(back[..25], frames[..], "every piece re-framed into the same frames");
    assert_eq!(back[25], test_frame(2000, 320), "the frame without its stray byte");
    assert_eq!(back[26], test_frame(2001, 320), "the frame after it still aligned");
    let mut tx = sender.await.unwrap();
    tx.send(Message::binary(vec![0u8; 1 << 20])).await.unwrap();
    let mut ws = tx.reunite(rx).unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009), "a 1 MiB frame");
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_text_messages_a_second_close_1008() {
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    let mut ws = server.connect("/echo").await;
    ws.send(Message::text(METADATA_8K)).await.unwrap();
    let started = Instant::now();
    for _ in 0..10_000 {
        if ws.send(Message::text(r#"{"event":"websocket:dtmf","digit":"1"}"#)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert!(started.elapsed() < Duration::from_secs(5));
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_that_never_stops_to_read_still_gets_its_1008_close_frame() {
    // 20,000 text messages written as fast as the socket takes them, without reading: callpipe
    // closes with 1008 early on, and must keep reading (and discarding) the rest until the
    // peer's close frame, or the kernel resets the connection and the close frame is lost.
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    let mut stream = raw_call(&server, "/echo").await;
    let flood: Vec<u8> = (0..20_000).flat_map(|_| raw_frame(true, 1, br#"{"event":"websocket:dtmf","digit":"1"}"#)).collect();
    stream.write_all(&flood).await.expect("every message written: callpipe read them all, no reset");
    assert_eq!(raw_close_code(&mut stream).await, Some(1008), "the close frame arrives after the flood");
    stream.write_all(&raw_frame(true, 8, &1008u16.to_be_bytes())).await.unwrap();
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_its_pongs_is_closed_1008() {
    // Pings share the text messages' rate limit, and a peer that reads nothing gets no more
    // pongs than the call's output buffer holds: the close frame still comes, after them.
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    let mut stream = raw_call(&server, "/echo").await;
    let flood: Vec<u8> = (0..20_000).flat_map(|_| raw_frame(true, 9, b"are you there?")).collect();
    stream.write_all(&flood).await.expect("every ping written: callpipe read them all, no reset");
    assert_eq!(raw_close_code(&mut stream).await, Some(1008), "the close frame arrives after the pongs");
    stream.write_all(&raw_frame(true, 8, &1008u16.to_be_bytes())).await.unwrap();
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_is_closed_1007_and_a_close_frame_is_answered_in_kind() {
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    // RFC 6455 section 5.1: a client masks every frame.
    let mut stream = raw_call(&server, "/echo").await;
    let mut unmasked = vec![0x82, 126, 0x01, 0x40];
    unmasked.extend_from_slice(&[0u8; 320]);
    stream.write_all(&unmasked).await.unwrap();
    assert_eq!(raw_close_code(&mut stream).await, Some(1007), "an unmasked frame");
    // A close frame without a code is answered with one without a code; one with a code that
    // may not be sent (1005) with 1002; one with 1000 with 1000.
    for (sent, answer) in [
        (&[][..], vec![0x88u8, 0x00]),
        (&1005u16.to_be_bytes()[..], vec![0x88, 0x14, 0x03, 0xea]),
        (&1000u16.to_be_bytes()[..], vec![0x88, 0x02, 0x03, 0xe8]),
    ] {
        let mut stream = raw_call(&server, "/echo").await;
        stream.write_all(&raw_frame(true, 8, sent)).await.unwrap();
        let mut head = vec![0u8; answer.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await.expect("an answer").unwrap();
        assert_eq!(head, answer, "the answer to a close frame with {sent:?}");
    }
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_frame_abuse_is_closed() {
    let server = server_with("max_message_bytes = 65536").await;
    let witness = Witness::start(&server).await;
    // A binary message that never ends: a first fragment, then 1 KiB continuations past the
    // message size limit.
    let mut stream = raw_call(&server, "/echo").await;
    stream.write_all(&raw_frame(false, 2, &[0u8; 1024])).await.unwrap();
    for _ in 0..100 {
        if stream.write_all(&raw_frame(false, 0, &[0u8; 1024])).await.is_err() {
            break;
        }
    }
    assert_eq!(raw_close_code(&mut stream).await, Some(1009), "an endless fragmented message");
    // A continuation with nothing to continue, and a new message inside an unfinished one: both
    // break RFC 6455 (section 5.4); callpipe answers framing violations with 1007 (invalid
    // payload), among the codes docs/protocol.md lists.
    let mut stream = raw_call(&server, "/echo").await;
    stream.write_all(&raw_frame(true, 0, &[0u8; 320])).await.unwrap();
    assert_eq!(raw_close_code(&mut stream).await, Some(1007), "a lone continuation");
    let mut stream = raw_call(&server, "/echo").await;
    stream.write_all(&raw_frame(false, 2, &[0u8; 100])).await.unwrap();
    stream.write_all(&raw_frame(true, 2, &[0u8; 320])).await.unwrap();
    assert_eq!(raw_close_code(&mut stream).await, Some(1007), "a new message inside a fragmented one");
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_opened_and_dropped_at_once_leave_the_server_serving() {
    let server = server_with("max_calls = 2000").await;
    let witness = Witness::start(&server).await;
    let mut opened = Vec::new();
    for i in 0..1000 {
        let addr = server.addr;
        opened.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            // A third say nothing, a third start an upgrade, a third finish it and send metadata.
            match i % 3 {
                0 => {}
                1 => stream.write_all(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.ok()?,
                _ => {
                    stream.write_all(upgrade_request("/echo").as_bytes()).await.ok()?;
                    stream.write_all(&raw_frame(true, 1, METADATA_8K.as_bytes())).await.ok()?;
                }
            }
            Some(stream)
        }));
    }
    let mut streams = Vec::new();
    for task in opened {
        streams.extend(task.await.unwrap());
    }
    assert!(streams.len() >= 990, "{} connections opened", streams.len());
    drop(streams);
    // Every dropped connection's task ends: the live calls go back to the witness alone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.handle.stats.calls_active.load(Ordering::Relaxed) > 1 {
        assert!(Instant::now() < deadline, "calls still active: {}", server.handle.stats.calls_active.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And a new call is served as before.
    let (sent, back) = common::echo_over(server.connect("/echo").await.tap_metadata().await, 8000, 25).await;
    assert_eq!(back, sent);
    witness.check().await;
    server.stop().await;
}

/// Sends the 8 kHz metadata on a fresh client.
trait TapMetadata {
    async fn tap_metadata(self) -> Self;
}

impl TapMetadata for Client {
    async fn tap_metadata(mut self) -> Client {
        self.send(Message::text(METADATA_8K)).await.unwrap();
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_trickled_a_byte_at_a_time_is_dropped_by_the_handshake_timeout() {
    let server = server_with("").await;
    let witness = Witness::start(&server).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let started = Instant::now();
    let mut dropped = None;
    for byte in request.iter().cycle() {
        // The server closing shows as a failed write, or as the end of the stream.
        let mut probe = [0u8; 64];
        if stream.write_all(&[*byte]).await.is_err() {
            dropped = Some(started.elapsed());
            break;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut probe)).await {
            dropped = Some(started.elapsed());
            assert!(n == 0 || probe.starts_with(b"HTTP/1.1 408") || probe.starts_with(b"HTTP/1.1 400"), "{:?}", &probe[..n]);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still connected after 20 s");
    }
    let dropped = dropped.unwrap();
    assert!(dropped >= callpipe::server::HANDSHAKE_TIMEOUT - Duration::from_secs(1), "dropped after {dropped:?}");
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_reset_mid_frame_still_finalizes_a_readable_recording() {
    let dir = std::env::temp_dir().join(format!("callpipe-hostile-reset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = format!(
        "{ECHO_CONFIG}\n[[route]]\npath = \"/rec\"\nprocessors = [{{ type = \"record\", dir = \"{}\", template = \"reset.wav\", channels = \"caller\" }}]\n",
        dir.display()
    );
    watch_panics();
    let server = TestServer::start(&config).await;
    let witness = Witness::start(&server).await;
    let mut stream = raw_call(&server, "/rec").await;
    for n in 0..50 {
        stream.write_all(&raw_frame(true, 2, &test_frame(n, 320))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Half of a frame, then a reset (SO_LINGER 0 makes close send RST).
    let frame = raw_frame(true, 2, &test_frame(50, 320));
    stream.write_all(&frame[..frame.len() / 2]).await.unwrap();
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
    let file = dir.join("reset.wav");
    let deadline = Instant::now() + Duration::from_secs(5);
    let samples = loop {
        if !server.handle.services.recorder.in_progress(&file)
            && let Ok(reader) = hound::WavReader::open(&file)
        {
            break reader.into_samples::<i16>().collect::<Result<Vec<_>, _>>().unwrap();
        }
        assert!(Instant::now() < deadline, "the recording was never finalized");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every whole frame sent is in the file, in order; one pass per 20 ms may add silence.
    let sent: Vec<i16> =
        (0..50).flat_map(|n| test_frame(n, 320).chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>()).collect();
    let start = samples.iter().position(|s| *s == sent[0]).expect("the audio is in the file");
    let heard: Vec<i16> = samples[start..].iter().copied().filter(|s| *s != 0).collect();
    let expected: Vec<i16> = sent.iter().copied().filter(|s| *s != 0).collect();
    assert!(heard.starts_with(&expected[..expected.len() - 160 * 5]), "the recording holds the frames in order");
    witness.check().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_target_that_hangs_leaves_the_media_alone() {
    // A target that accepts and reads, and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", hanging.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = hanging.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
            held.push(stream);
        }
    });
    watch_panics();
    let config = ECHO_CONFIG.replace("path = \"/echo\"", &format!("path = \"/echo\"\nevent_url = \"{url}\""));
    let server = TestServer::start(&format!("{config}\n[events]\ntimeout_ms = 500\nretries = 1\n")).await;
    // The witness itself is on the route whose webhook hangs, and so are five more calls that
    // come and go.
    let witness = Witness::start(&server).await;
    for i in 0..5u32 {
        let (sent, back) = common::echo_over(server.connect(&format!("/echo?call_id=h{i}")).await.tap_metadata().await, 8000, 10).await;
        assert_eq!(back, sent);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    witness.check().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_a_ten_minute_prompt_is_closed_1008() {
    // Ten minutes of 8 kHz audio: what the server would have to hold if it queued without bound.
    let dir = std::env::temp_dir().join(format!("callpipe-hostile-deaf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ten-minutes.wav");
    let spec = hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut wav = hound::WavWriter::create(&file, spec).unwrap();
    for i in 0..8000 * 600 {
        wav.write_sample(((i % 40) * 200 - 4000) as i16).unwrap();
    }
    wav.finalize().unwrap();
    let config = format!(
        "{}\n[[route]]\npath = \"/prompt\"\nprocessors = [{{ type = \"play\", file = \"{}\" }}]\n",
        ECHO_CONFIG.replace("[server]", "[server]\nwrite_timeout_ms = 1000\nsend_buffer_bytes = 16384"),
        file.display()
    );
    watch_panics();
    let server = TestServer::start(&config).await;
    let witness = Witness::start(&server).await;
    // A caller with a tiny receive window that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut deaf, _) = tokio_tungstenite::client_async(server.url("/prompt"), stream).await.unwrap();
    deaf.send(Message::text(METADATA_8K)).await.unwrap();
    let started = Instant::now();
    while server.handle.stats.closed_1008.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the deaf peer was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Closed by the write timeout, long before the prompt could have queued up.
    assert!(started.elapsed() < Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.handle.stats.calls_active.load(Ordering::Relaxed) > 1 {
        assert!(Instant::now() < deadline, "the deaf call never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bounded memory: while the socket was blocked, the prompt's frames were dropped at the call's
    // fixed-size outbound rings (the witness, which reads, drops none) instead of being queued.
    let dropped = server.handle.stats.ring_overrun_out.load(Ordering::Relaxed);
    assert!(dropped > 0, "a blocked peer's frames must be dropped at the capped rings, not queued");
    witness.check().await;
    drop(deaf);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
