//! The `fork` processor end to end: a target WebSocket server in the test (plain, or TLS with
//! certificates made in the test) receives the call's audio and answers with audio, text and
//! commands; the call's events are read from the event log and the fork's counters from
//! `/metrics`. With the `opus` feature, an Opus fork's packets are decoded and checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestServer, close_code, echo_over};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the test tells a target connection to do.
enum Action {
    Send(Message),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// One connection the target accepted.
struct Conn {
    uri: String,
    headers: Vec<(String, String)>,
    received: mpsc::UnboundedReceiver<Message>,
    actions: mpsc::UnboundedSender<Action>,
}

impl Conn {
    /// The next message, within 5 s.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(5), self.received.recv()).await.expect("a message within 5 s").expect("open")
    }

    /// Binary messages until `samples` samples have come (text messages are skipped).
    async fn samples(&mut self, samples: usize, sizes: &mut Vec<usize>) -> Vec<i16> {
        let mut out = Vec::new();
        while out.len() < samples {
            if let Message::Binary(b) = self.next().await {
                sizes.push(b.len());
                out.extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
            }
        }
        out
    }

    fn send(&self, message: Message) {
        self.actions.send(Action::Send(message)).unwrap();
    }
}

/// A WebSocket target on 127.0.0.1 that hands each accepted connection to the test.
async fn target() -> (SocketAddr, mpsc::UnboundedReceiver<Conn>) {
    slow_target(Duration::ZERO).await
}

/// The same, answering each upgrade only after `delay`.
async fn slow_target(delay: Duration) -> (SocketAddr, mpsc::UnboundedReceiver<Conn>) {
    target_with(delay, None).await
}

/// A target that speaks TLS with `tls` (`wss://`).
async fn tls_target(tls: Arc<rustls::ServerConfig>) -> (SocketAddr, mpsc::UnboundedReceiver<Conn>) {
    target_with(Duration::ZERO, Some(TlsAcceptor::from(tls))).await
}

async fn target_with(delay: Duration, tls: Option<TlsAcceptor>) -> (SocketAddr, mpsc::UnboundedReceiver<Conn>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns_tx, conns) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conns_tx = conns_tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                match tls {
                    None => serve(stream, conns_tx).await,
                    Some(tls) => {
                        // A client that does not trust the certificate ends here.
                        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), tls.accept(stream)).await {
                            serve(stream, conns_tx).await;
                        }
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// Upgrades one connection, hands it to the test and relays until either side ends it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, conns_tx: mpsc::UnboundedSender<Conn>) {
    let (info_tx, info_rx) = std::sync::mpsc::channel();
    // The handshake callback's error type is tungstenite's, large by design.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
        let headers = request.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect::<Vec<_>>();
        let _ = info_tx.send((request.uri().to_string(), headers));
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
    let (uri, headers) = info_rx.recv().unwrap();
    let (received_tx, received) = mpsc::unbounded_channel();
    let (actions, mut actions_rx) = mpsc::unbounded_channel();
    let _ = conns_tx.send(Conn { uri, headers, received, actions });
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message)) => { let _ = received_tx.send(message); }
                _ => return,
            },
            action = actions_rx.recv() => match action {
                Some(Action::Send(message)) => { if ws.send(message).await.is_err() { return; } }
                Some(Action::Drop) | None => return,
            },
        }
    }
}

/// A private certificate authority made for one test: its certificate in `ca.pem` (in a
/// directory removed on drop), and a rustls server configuration for 127.0.0.1 whose
/// certificate it signed.
struct PrivateCa {
    dir: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl PrivateCa {
    fn new(name: &str) -> PrivateCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = std::env::temp_dir().join(format!("callpipe-fork-ca-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("callpipe test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca.der().clone()], private)
            .unwrap();
        PrivateCa { dir, server: Arc::new(server) }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for PrivateCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server's `/metrics` samples of fork `name`: `(family, other label, value)`.
async fn fork_metrics(server: &TestServer, name: &str) -> Vec<(String, Option<String>, f64)> {
    let text = reqwest::get(server.control_url("/metrics")).await.unwrap().text().await.unwrap();
    let label = format!("fork=\"{name}\"");
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains(&label))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (family, labels) = series.split_once('{').unwrap();
            let other = labels.trim_end_matches('}').split(',').find(|l| !l.starts_with("fork=")).map(str::to_owned);
            (family.to_owned(), other, value.parse().unwrap())
        })
        .collect()
}

/// One value from [`fork_metrics`]'s list.
fn metric(samples: &[(String, Option<String>, f64)], family: &str, other: Option<&str>) -> f64 {
    samples
        .iter()
        .find(|(f, o, _)| f == family && o.as_deref() == other)
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no {family} {other:?} in {samples:?}"))
}

async fn next_conn(conns: &mut mpsc::UnboundedReceiver<Conn>) -> Conn {
    tokio::time::timeout(Duration::from_secs(5), conns.recv()).await.expect("a connection within 5 s").unwrap()
}

fn config(events: &Path, processors: &str) -> String {
    format!(
        r#"
[server]
stats_interval_ms = 0
metadata_timeout_ms = 1000
shutdown_grace_ms = 300
[media]
threads = 1
[events]
log = "{}"
[[route]]
path = "/fork"
processors = {processors}
"#,
        events.display()
    )
}

fn events_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-fork-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&path);
    path
}

/// The call's events from the log, once its `ended` event is there (within 5 s).
async fn call_events(path: &Path, call_id: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let events: Vec<Value> =
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|e| e["call_id"] == call_id).collect();
        if events.iter().any(|e| e["event"] == "ended") {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "no ended event for {call_id} in {}: {text}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Sends `frames` frames of `samples` on a 20 ms clock.
async fn send_frames(ws: &mut Client, frames: impl Iterator<Item = Vec<i16>>) {
    let start = tokio::time::Instant::now();
    for (n, frame) in frames.enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(20 * n as u64)).await;
        let bytes: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
        ws.send(Message::binary(bytes)).await.unwrap();
    }
}

fn tone(rate: u32, hz: f64, amplitude: f64, frames: usize) -> impl Iterator<Item = Vec<i16>> {
    let n = rate as usize / 50;
    (0..frames).map(move |f| {
        (0..n).map(|i| (amplitude * (2.0 * std::f64::consts::PI * hz * (f * n + i) as f64 / f64::from(rate)).sin()) as i16).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_gets_the_first_message_and_the_callers_tone_resampled_and_reframed() {
    let (addr, mut conns) = target().await;
    let log = events_file("tone");
    let processors = format!(
        r#"[{{ type = "fork", url = "ws://{addr}/stt/{{call_id}}?caller={{header:caller}}", rate = 16000, frame_ms = 40, headers = {{ x-call = "{{call_id}}" }}, first_message = '{{"event":"start","call_id":"{{call_id}}","caller":"{{header:caller}}"}}' }}]"#
    );
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.connect("/fork?call_id=tone-1").await;
    ws.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000","caller":"+44 7\"1"}"#)).await.unwrap();
    let mut conn = next_conn(&mut conns).await;
    assert_eq!(conn.uri, "/stt/tone-1?caller=%2B44%207%221");
    assert!(conn.headers.iter().any(|(k, v)| k == "x-call" && v == "tone-1"), "{:?}", conn.headers);
    let Message::Text(first) = conn.next().await else { panic!("the first message is text") };
    let first: Value = serde_json::from_str(first.as_str()).unwrap();
    assert_eq!(first, serde_json::json!({ "event": "start", "call_id": "tone-1", "caller": "+44 7\"1" }));
    let sender = tokio::spawn(async move {
        send_frames(&mut ws, tone(8000, 1000.0, 8000.0, 60)).await;
        ws
    });
    let mut sizes = Vec::new();
    // 1 s at 16 kHz; skip the first 0.2 s (passes before the tone arrived, the filter's start).
    let samples = conn.samples(16_000, &mut sizes).await;
    assert!(sizes.iter().all(|&s| s == 1280), "40 ms at 16 kHz per message: {sizes:?}");
    let start = samples.iter().position(|&s| s.unsigned_abs() > 4000).expect("the tone arrives") + 3200;
    let steady = &samples[start..start + 8000];
    let crossings = steady.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    assert!((995..=1005).contains(&crossings), "a 1 kHz tone crosses zero 2000 times a second: {crossings} in 0.5 s");
    let rms = (steady.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / steady.len() as f64).sqrt();
    assert!((rms / (8000.0 / 2f64.sqrt()) - 1.0).abs() < 0.06, "level kept: rms {rms}");
    let mut ws = sender.await.unwrap();
    ws.send(Message::Close(None)).await.unwrap();
    let events = call_events(&log, "tone-1").await;
    assert_eq!(named(&events, "fork:connected").len(), 1, "{events:?}");
    assert_eq!(named(&events, "fork:connected")[0]["fork"], "127.0.0.1");
    // At the end of the call the fork closes cleanly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, conn.received.recv()).await.expect("the fork closes within 5 s") {
            Some(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
                break;
            }
            Some(_) => {}
            None => panic!("dropped without a close frame"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_replies_reach_the_caller_sample_exact() {
    let (addr, mut conns) = target().await;
    let log = events_file("replies");
    let processors = format!(r#"[{{ type = "fork", url = "ws://{addr}/bot" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=reply-1", 8000).await;
    let conn = next_conn(&mut conns).await;
    // 0.5 s of a ramp that never repeats a value, in odd-sized messages.
    let reply: Vec<i16> = (0..4000).map(|i| (i * 7 - 14000) as i16).collect();
    for chunk in reply.chunks(333) {
        conn.send(Message::binary(chunk.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()));
    }
    let caller = tokio::spawn(async move {
        let mut heard = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let silence = vec![0u8; 320];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while heard.len() < 4000 + 1600 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tick.tick() => ws.send(Message::binary(silence.clone())).await.unwrap(),
                m = ws.next() => if let Some(Ok(Message::Binary(b))) = m {
                    heard.extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
                },
            }
            if heard.iter().filter(|&&s| s != 0).count() >= 3999 {
                break;
            }
        }
        ws.send(Message::Close(None)).await.unwrap();
        heard
    });
    let heard = caller.await.unwrap();
    let start = heard.iter().position(|&s| s == reply[0]).expect("the reply's first sample");
    assert_eq!(&heard[start..start + reply.len()], &reply[..], "the reply, sample-exact");
    let _ = call_events(&log, "reply-1").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_target_never_stalls_the_call_and_overruns_are_reported() {
    // Accepts TCP connections and never answers the upgrade.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let log = events_file("hanging");
    let processors = format!(r#"[{{ type = "echo" }}, {{ type = "fork", url = "ws://{addr}/dead", buffer_ms = 200, name = "sink" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let ws = server.call("/fork?call_id=hang-1", 8000).await;
    let (sent, received) = echo_over(ws, 8000, 75).await;
    assert!(received.len() >= 70, "the echo went on: {} of 75 frames", received.len());
    let matched = received.iter().filter(|r| sent.contains(r)).count();
    assert_eq!(matched, received.len(), "every echoed frame is one the caller sent");
    let events = call_events(&log, "hang-1").await;
    let overruns = named(&events, "fork:overrun");
    assert_eq!(overruns.len(), 1, "{events:?}");
    assert_eq!(overruns[0]["state"], "started");
    assert_eq!(overruns[0]["fork"], "sink");
    assert!(named(&events, "fork:connected").is_empty());
    held.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrun_is_reported_when_it_starts_and_when_it_stops() {
    // The target answers the upgrade after 1 s: the 200 ms ring fills, frames are dropped, and
    // once connected the fork catches up and the dropping stops.
    let (addr, mut conns) = slow_target(Duration::from_secs(1)).await;
    let log = events_file("overrun");
    let processors = format!(r#"[{{ type = "fork", url = "ws://{addr}/slow", buffer_ms = 200 }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=over-1", 8000).await;
    send_frames(&mut ws, tone(8000, 500.0, 1000.0, 100)).await;
    let mut conn = next_conn(&mut conns).await;
    let mut sizes = Vec::new();
    let _ = conn.samples(1600, &mut sizes).await;
    ws.send(Message::Close(None)).await.unwrap();
    let events = call_events(&log, "over-1").await;
    let overruns = named(&events, "fork:overrun");
    assert_eq!(overruns.len(), 2, "{events:?}");
    assert_eq!(overruns[0]["state"], "started");
    assert_eq!(overruns[1]["state"], "stopped");
    let dropped = overruns[1]["dropped_frames"].as_u64().unwrap();
    // About 1 s of waiting less the 200 ms ring: 40 frames, give or take scheduling.
    assert!((20..=60).contains(&dropped), "dropped {dropped} frames");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_target_is_reconnected_and_a_clean_close_is_not() {
    let (addr, mut conns) = target().await;
    let log = events_file("reconnect");
    let processors = format!(r#"[{{ type = "fork", url = "ws://{addr}/x", first_message = "hello", name = "reconnect-counted" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=re-1", 8000).await;
    // A few frames of the caller's audio: the fork sends what the caller's timeline holds.
    for _ in 0..5 {
        ws.send(Message::binary(vec![0u8; 320])).await.unwrap();
    }
    let mut first = next_conn(&mut conns).await;
    assert!(matches!(first.next().await, Message::Text(t) if t.as_str() == "hello"));
    first.actions.send(Action::Drop).unwrap();
    let mut second = next_conn(&mut conns).await;
    assert!(matches!(second.next().await, Message::Text(t) if t.as_str() == "hello"), "the first message again");
    // A reply of each kind, then a clean close: all three arrive in order.
    second.send(Message::text(r#"{"transcript":"hi"}"#));
    second.send(Message::binary(vec![0u8; 320]));
    second.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })));
    let third = tokio::time::timeout(Duration::from_millis(1500), conns.recv()).await;
    assert!(third.is_err(), "no reconnect after a clean close");
    ws.send(Message::Close(None)).await.unwrap();
    let events = call_events(&log, "re-1").await;
    assert_eq!(named(&events, "fork:connected").len(), 2, "{events:?}");
    let gone = named(&events, "fork:disconnected");
    assert_eq!(gone.len(), 2, "{events:?}");
    assert_eq!(gone[0]["reconnect"], true);
    assert_eq!(gone[1]["reconnect"], false);
    // The fork's counters, as Prometheus reads them.
    let samples = fork_metrics(&server, "reconnect-counted").await;
    assert_eq!(metric(&samples, "callpipe_fork_connects_total", None), 2.0);
    assert_eq!(metric(&samples, "callpipe_fork_connect_failures_total", None), 0.0);
    assert_eq!(metric(&samples, "callpipe_fork_disconnects_total", Some(r#"reason="error""#)), 1.0);
    assert_eq!(metric(&samples, "callpipe_fork_disconnects_total", Some(r#"reason="target_closed""#)), 1.0);
    assert_eq!(metric(&samples, "callpipe_fork_disconnects_total", Some(r#"reason="call_ended""#)), 0.0);
    assert_eq!(metric(&samples, "callpipe_fork_replies_total", Some(r#"kind="text""#)), 1.0);
    assert_eq!(metric(&samples, "callpipe_fork_replies_total", Some(r#"kind="binary""#)), 1.0);
    assert_eq!(metric(&samples, "callpipe_fork_reply_audio_dropped_seconds_total", None), 0.0);
    let frames = metric(&samples, "callpipe_fork_frames_sent_total", None);
    assert!(frames >= 1.0, "{samples:?}");
    assert_eq!(metric(&samples, "callpipe_fork_sent_bytes_total", None), frames * 320.0, "20 ms of L16 at 8 kHz per frame");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_target_with_a_private_ca_gets_the_audio() {
    let ca = PrivateCa::new("trusted");
    let (addr, mut conns) = tls_target(ca.server.clone()).await;
    let log = events_file("wss");
    let processors = format!(
        r#"[{{ type = "fork", url = "wss://{addr}/stt/{{call_id}}", ca_file = {:?}, name = "wss-trusted", first_message = '{{"content-type":"{{content_type}}","codec":"{{codec}}","rate":{{rate}}}}' }}]"#,
        ca.ca_file().display().to_string()
    );
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=wss-1", 8000).await;
    let mut conn = next_conn(&mut conns).await;
    assert_eq!(conn.uri, "/stt/wss-1");
    let Message::Text(first) = conn.next().await else { panic!("the first message is text") };
    let first: Value = serde_json::from_str(first.as_str()).unwrap();
    assert_eq!(first, serde_json::json!({ "content-type": "audio/l16;rate=8000", "codec": "l16", "rate": 8000 }));
    let frames: Vec<Vec<i16>> = tone(8000, 700.0, 5000.0, 25).collect();
    let sent: Vec<Vec<u8>> = frames.iter().map(|f| f.iter().flat_map(|s| s.to_le_bytes()).collect()).collect();
    let sender = tokio::spawn(async move {
        send_frames(&mut ws, frames.into_iter()).await;
        ws
    });
    // One message per pass: a caller frame, byte for byte, or silence when the pass ran without
    // one (a frame late on a loaded machine waits for the next pass).
    let (mut heard, mut messages) = (Vec::new(), 0);
    while heard.len() < sent.len() && messages < 200 {
        if let Message::Binary(b) = conn.next().await {
            assert_eq!(b.len(), 320, "20 ms of 8 kHz L16 per message");
            messages += 1;
            if b.iter().any(|&x| x != 0) {
                heard.push(b.to_vec());
            }
        }
    }
    let mut next = 0;
    for frame in &heard {
        let at = sent[next..].iter().position(|s| s == frame).expect("each message is a frame the caller sent, in order");
        next += at + 1;
    }
    assert!(heard.len() >= 20, "the caller's frames arrive over TLS: {} of {}", heard.len(), sent.len());
    let mut ws = sender.await.unwrap();
    ws.send(Message::Close(None)).await.unwrap();
    let events = call_events(&log, "wss-1").await;
    let connected = named(&events, "fork:connected");
    assert_eq!(connected.len(), 1, "{events:?}");
    assert_eq!(connected[0]["url"], format!("wss://{addr}/stt/wss-1"));
    assert!(named(&events, "fork:disconnected").is_empty(), "{events:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_wss_target_is_refused_and_the_call_goes_on() {
    // The target's certificate is signed by a CA the fork was not told about.
    let unknown = PrivateCa::new("unknown");
    let (addr, mut conns) = tls_target(unknown.server.clone()).await;
    let log = events_file("untrusted");
    let processors = format!(r#"[{{ type = "echo" }}, {{ type = "fork", url = "wss://{addr}/x", name = "wss-untrusted" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let ws = server.call("/fork?call_id=untrusted-1", 8000).await;
    let (sent, received) = echo_over(ws, 8000, 50).await;
    assert!(received.len() >= 45, "the echo went on: {} of 50 frames", received.len());
    assert!(received.iter().all(|r| sent.contains(r)), "every echoed frame is one the caller sent");
    let events = call_events(&log, "untrusted-1").await;
    assert!(named(&events, "fork:connected").is_empty(), "{events:?}");
    let gone = named(&events, "fork:disconnected");
    assert_eq!(gone.len(), 1, "one event for the run of failed attempts: {events:?}");
    let reason = gone[0]["reason"].as_str().unwrap();
    assert!(reason.contains("TLS handshake") && reason.contains("certificate"), "{reason}");
    assert_eq!(gone[0]["reconnect"], true);
    assert!(conns.try_recv().is_err(), "no WebSocket reached the target");
    let samples = fork_metrics(&server, "wss-untrusted").await;
    assert!(metric(&samples, "callpipe_fork_connect_failures_total", None) >= 1.0, "{samples:?}");
    assert_eq!(metric(&samples, "callpipe_fork_connects_total", None), 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_replies_become_events_and_commands_clear_and_hang_up() {
    let (addr, mut conns) = target().await;
    let log = events_file("commands");
    let processors = format!(r#"[{{ type = "fork", url = "ws://{addr}/bot", replies = "commands", name = "bot" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=cmd-1", 8000).await;
    let conn = next_conn(&mut conns).await;
    conn.send(Message::text(r#"{"transcript":"hello","final":true}"#));
    conn.send(Message::text("not json"));
    conn.send(Message::text(r#"{"action":"dance"}"#));
    conn.send(Message::text(r#"{"action":"clear"}"#));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("a clear within 5 s") {
            Some(Ok(Message::Text(t))) if t.as_str().contains("clear") => {
                assert_eq!(serde_json::from_str::<Value>(t.as_str()).unwrap(), serde_json::json!({ "action": "clear" }));
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("call ended before the clear: {other:?}"),
        }
    }
    conn.send(Message::text(r#"{"action":"hangup"}"#));
    assert_eq!(close_code(&mut ws).await, Some(1000));
    let events = call_events(&log, "cmd-1").await;
    let messages = named(&events, "fork:message");
    assert_eq!(messages.len(), 3, "{events:?}");
    assert_eq!(messages[0]["fork"], "bot");
    assert_eq!(messages[0]["data"], serde_json::json!({ "transcript": "hello", "final": true }));
    assert_eq!(messages[1]["data"], serde_json::json!({ "text": "not json" }));
    assert_eq!(messages[2]["data"], serde_json::json!({ "action": "dance" }));
    let ended = named(&events, "ended");
    assert_eq!(ended[0]["hangup"], "processor");
    assert_eq!(ended[0]["close_code"], 1000);
    server.stop().await;
}

/// The latency the fork adds: from a caller frame leaving the caller to the same audio reaching
/// the target, on loopback, at 8 kHz in 20 ms frames (no resampling, so every frame is
/// recognized by its value). Run with
/// `cargo test --release --test fork -- --ignored --nocapture added_latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: 20 s of audio"]
async fn added_latency() {
    const FRAMES: usize = 1000;
    let (addr, mut conns) = target().await;
    let log = events_file("latency");
    let processors = format!(r#"[{{ type = "fork", url = "ws://{addr}/latency" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=lat-1", 8000).await;
    let mut conn = next_conn(&mut conns).await;
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(FRAMES);
        for n in 0..FRAMES {
            tokio::time::sleep_until(start + Duration::from_millis(20 * n as u64)).await;
            let bytes: Vec<u8> = std::iter::repeat_n(((n + 1) as i16).to_le_bytes(), 160).flatten().collect();
            sent.push(std::time::Instant::now());
            ws.send(Message::binary(bytes)).await.unwrap();
        }
        (ws, sent)
    });
    let mut arrived = vec![None; FRAMES];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while arrived.iter().any(Option::is_none) && tokio::time::Instant::now() < deadline {
        let Ok(Some(Message::Binary(b))) = tokio::time::timeout_at(deadline, conn.received.recv()).await else { break };
        let at = std::time::Instant::now();
        let value = i16::from_le_bytes([b[0], b[1]]);
        if value > 0 && (value as usize) <= FRAMES && arrived[value as usize - 1].is_none() {
            arrived[value as usize - 1] = Some(at);
        }
    }
    let (mut ws, sent) = sender.await.unwrap();
    ws.send(Message::Close(None)).await.unwrap();
    let latencies: Vec<f64> =
        sent.iter().zip(&arrived).filter_map(|(s, a)| a.map(|a| a.duration_since(*s).as_secs_f64() * 1000.0)).collect();
    if std::env::var_os("FORK_LATENCY_TRACE").is_some() {
        let trace: Vec<String> = latencies.chunks(25).map(|c| format!("{:.0}", c.iter().copied().fold(0.0, f64::max))).collect();
        println!("max per 0.5 s, in order: {}", trace.join(" "));
    }
    // The first 3 s include the session's start: a caller that sends before its call has
    // joined a media thread leaves a standing backlog, which the inbound policy makes up within
    // a second or two (as on the echo path). The steady figures leave it out.
    for (what, from) in [("whole call", 0), ("steady (after 3 s)", 150)] {
        let mut sorted = latencies[from.min(latencies.len())..].to_vec();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
        println!(
            "fork added latency, {what}, {} frames: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, min {:.2} ms",
            sorted.len(),
            pct(0.5),
            pct(0.9),
            pct(0.99),
            sorted[sorted.len() - 1],
            sorted[0]
        );
    }
    assert!(latencies.len() >= FRAMES * 9 / 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_the_target_and_play_and_notify_commands_follow_the_audio() {
    let (addr, mut conns) = target().await;
    let log = events_file("play");
    let wav = log.with_extension("wav");
    let prompt: Vec<i16> = (0..1200).map(|i| (i * 11 - 6000) as i16).collect();
    let spec = hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(&wav, spec).unwrap();
    prompt.iter().for_each(|s| writer.write_sample(*s).unwrap());
    writer.finalize().unwrap();
    let processors = format!(r#"[{{ type = "fork", url = "ws://{addr}/bot", replies = "commands" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=play-1", 8000).await;
    let mut conn = next_conn(&mut conns).await;
    ws.send(Message::text(r#"{"event":"websocket:dtmf","digit":"5","duration":100}"#)).await.unwrap();
    loop {
        if let Message::Text(t) = conn.next().await {
            assert_eq!(serde_json::from_str::<Value>(t.as_str()).unwrap(), serde_json::json!({ "event": "dtmf", "digit": "5" }));
            break;
        }
    }
    conn.send(Message::text(serde_json::json!({ "action": "play", "url": format!("file://{}", wav.display()) }).to_string()));
    conn.send(Message::text(r#"{"action":"notify","payload":{"after":"prompt"}}"#));
    // The caller: hears the prompt, and answers the platform's notify as the platform does.
    let (mut heard, mut notified) = (Vec::new(), false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !notified {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("the prompt and its notify within 5 s") {
            Some(Ok(Message::Binary(b))) => heard.extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
            Some(Ok(Message::Text(t))) => {
                let action: Value = serde_json::from_str(t.as_str()).unwrap();
                if action["action"] == "notify" {
                    let start = heard.iter().position(|&s| s == prompt[0]).expect("the prompt played");
                    assert_eq!(&heard[start..start + prompt.len()], &prompt[..], "the prompt, whole, before the notify");
                    let echo = serde_json::json!({ "event": "websocket:notify", "payload": action["payload"] });
                    ws.send(Message::text(echo.to_string())).await.unwrap();
                    notified = true;
                }
            }
            other => panic!("the call ended: {other:?}"),
        }
    }
    loop {
        if let Message::Text(t) = conn.next().await {
            let event: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(event, serde_json::json!({ "event": "notify", "payload": { "after": "prompt" } }));
            break;
        }
    }
    ws.send(Message::Close(None)).await.unwrap();
    let _ = call_events(&log, "play-1").await;
    let _ = std::fs::remove_file(&wav);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_both_interleaves_the_caller_and_the_outbound_audio() {
    let (addr, mut conns) = target().await;
    let log = events_file("both");
    // The echo writes the caller's frame to the outbound frame in the same pass: right = left.
    let processors = format!(r#"[{{ type = "echo" }}, {{ type = "fork", url = "ws://{addr}/both", send = "both" }}]"#);
    let server = TestServer::start(&config(&log, &processors)).await;
    let mut ws = server.call("/fork?call_id=both-1", 8000).await;
    let mut conn = next_conn(&mut conns).await;
    let frames: Vec<Vec<i16>> = tone(8000, 700.0, 5000.0, 25).collect();
    let sent: Vec<i16> = frames.concat();
    let sender = tokio::spawn(async move {
        send_frames(&mut ws, frames.into_iter()).await;
        ws
    });
    let mut sizes = Vec::new();
    let stereo = conn.samples(2 * 8000, &mut sizes).await;
    assert!(sizes.iter().all(|&s| s == 640), "20 ms of stereo 8 kHz per message: {sizes:?}");
    let (left, right): (Vec<i16>, Vec<i16>) = stereo.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
    assert_eq!(left, right, "the echo's outbound frame is the caller's");
    let start = left.iter().position(|&s| s != 0).expect("the caller's audio arrives");
    let start = start - sent.iter().position(|&s| s != 0).unwrap();
    assert_eq!(&left[start..start + sent.len()], &sent[..], "the caller's audio, sample-exact, on the left");
    let mut ws = sender.await.unwrap();
    ws.send(Message::Close(None)).await.unwrap();
    let _ = call_events(&log, "both-1").await;
    server.stop().await;
}

/// An Opus fork driven pass by pass, as a media thread drives it: the caller's 1 kHz tone (and
/// with `send = "both"` a 400 Hz tone on the outbound side) reaches a live target as one raw
/// Opus packet per `frame_ms`, one packet per `frame_ms` of call passes, each decoding to
/// exactly `frame_ms` of audio at the fork's rate, whose frequencies are the tones'.
#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_fork_sends_one_packet_per_frame_that_decodes_to_the_tone() {
    use callpipe::processor::{Context, Fork, ForkCodec, ForkConfig, ForkSend, Processor, Requests, Setup};
    use callpipe::protocol::{FRAME_DURATION, Metadata, SampleRate};
    const PASSES: usize = 150;
    let (addr, mut conns) = target().await;
    let cases = [
        (SampleRate::Hz16000, None, 20, ForkSend::Caller, "audio/opus;rate=16000"),
        (SampleRate::Hz8000, Some(48000), 60, ForkSend::Both, "audio/opus;rate=48000;channels=2"),
        (SampleRate::Hz24000, Some(8000), 10, ForkSend::Caller, "audio/opus;rate=8000"),
    ];
    for (rate, fork_rate, frame_ms, send, content_type) in cases {
        let config = ForkConfig {
            codec: ForkCodec::Opus,
            rate: fork_rate,
            frame_ms,
            send,
            buffer_ms: 5000,
            first_message: Some("{content_type}".into()),
            ..ForkConfig::new(format!("ws://{addr}/opus"))
        };
        let mut fork = Fork::new(config).unwrap();
        let call = callpipe::processor::CallInfo { id: "opus".into(), path: "/fork".into(), metadata: Metadata::new(rate) };
        let services = callpipe::services::Services::new();
        fork.prepare(&Setup { rate, call: &call, services: &services }).unwrap();
        let mut conn = next_conn(&mut conns).await;
        assert!(matches!(conn.next().await, Message::Text(t) if t.as_str() == content_type));
        let n = rate.frame_samples();
        let hz = f64::from(rate.hz());
        let (mut input, mut output, mut requests) = (vec![0i16; n], vec![0i16; n], Requests::new(n * 50));
        let t0 = std::time::Instant::now();
        for pass in 0..PASSES {
            for (i, (l, r)) in input.iter_mut().zip(output.iter_mut()).enumerate() {
                let t = (pass * n + i) as f64 / hz;
                *l = (8000.0 * (std::f64::consts::TAU * 1000.0 * t).sin()) as i16;
                *r = (8000.0 * (std::f64::consts::TAU * 400.0 * t).sin()) as i16;
            }
            requests.reset(n * 50);
            let mut cx = Context::new(t0 + FRAME_DURATION * pass as u32, pass as u64, rate, &mut input, true, &mut output, &mut requests);
            fork.process(&mut cx);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut cx = Context::new(t0, PASSES as u64, rate, &mut input, false, &mut output, &mut requests);
        fork.finish(&mut cx);
        assert_eq!(fork.dropped_frames(), 0);
        let mut packets = Vec::new();
        loop {
            match conn.next().await {
                Message::Binary(packet) => packets.push(packet),
                Message::Close(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(packets.len(), PASSES * 20 / frame_ms as usize, "{content_type}, {frame_ms} ms: one packet per frame of call passes");
        let fork_rate = fork_rate.unwrap_or(rate.hz());
        let channels = send.channels();
        let layout = if channels == 2 { opus::Channels::Stereo } else { opus::Channels::Mono };
        let mut decoder = opus::Decoder::new(fork_rate, layout).unwrap();
        let per_packet = (fork_rate * frame_ms / 1000) as usize;
        let mut decoded = Vec::new();
        let mut buffer = vec![0i16; 5760 * 2];
        for packet in &packets {
            let samples = decoder.decode(packet, &mut buffer, false).unwrap();
            assert_eq!(samples, per_packet, "{content_type}: each packet is {frame_ms} ms");
            decoded.extend_from_slice(&buffer[..samples * channels]);
        }
        // One second from 0.5 s on (past the resampler's and the codec's start).
        let second = fork_rate as usize;
        for (channel, tone) in [(0, 1000.0), (1, 400.0)].into_iter().take(channels) {
            let samples: Vec<i16> = decoded.iter().skip(channel).step_by(channels).copied().skip(second / 2).take(second).collect();
            assert_eq!(samples.len(), second);
            let crossings = samples.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64;
            assert!(
                (crossings / 2.0 - tone).abs() <= 5.0,
                "{content_type}: channel {channel} is {tone} Hz: {crossings} zero crossings in 1 s"
            );
            let rms = (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / second as f64).sqrt();
            assert!((rms / (8000.0 / 2f64.sqrt()) - 1.0).abs() < 0.25, "{content_type}: channel {channel} level kept: rms {rms}");
        }
    }
}
