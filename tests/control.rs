//! The control plane end to end: every endpoint against a live call, with its effect checked in
//! the frames the call receives; call events delivered to a webhook receiver in the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, TestServer, close_code};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[server]
stats_interval_ms = 0
metadata_timeout_ms = 1000
shutdown_grace_ms = 300
[media]
threads = 2
[[route]]
path = "/echo"
processors = [{ type = "echo" }]
[[route]]
path = "/bot"
processors = []
"#;

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn put(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let response =
        http().put(server.control_url(path)).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let response = http().get(server.control_url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Opens a call with `call_id` at `rate` and waits until the API lists it.
async fn open_call(server: &TestServer, path: &str, id: &str, rate: u32) -> Client {
    let ws = server.call(&format!("{path}?call_id={id}"), rate).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(server, &format!("/calls/{id}")).await.0 != 200 {
        assert!(Instant::now() < deadline, "call {id} never listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ws
}

/// Everything a call receives until `until` returns true or `within` passes: audio samples in
/// order, and text messages.
async fn receive(ws: &mut Client, within: Duration, mut until: impl FnMut(&[i16], &[Value]) -> bool) -> (Vec<i16>, Vec<Value>) {
    let (mut samples, mut texts) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + within;
    while !until(&samples, &texts) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => samples.extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
            Ok(Some(Ok(Message::Text(t)))) => texts.push(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => break,
        }
    }
    (samples, texts)
}

fn write_wav(path: &std::path::Path, rate: u32, samples: &[i16]) {
    let spec = hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-control-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_stream_plays_the_files_samples_exactly() {
    let server = TestServer::start(CONFIG).await;
    let dir = temp_dir("stream");
    let wav = dir.join("prompt.wav");
    // Half a second of noise-like audio at the call's rate: played as is, sample for sample.
    let mut x: u32 = 12345;
    let audio: Vec<i16> = (0..8000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            ((x >> 16) as i16) / 4 + 1
        })
        .collect();
    write_wav(&wav, 16000, &audio);
    let mut ws = open_call(&server, "/bot", "s1", 16000).await;
    let url = format!("file://{}", wav.display());
    let (status, body) = put(&server, "/calls/s1/stream", json!({ "stream_url": [url], "loop": 2, "level": 0 })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Stream started");
    let (samples, _) = receive(&mut ws, Duration::from_secs(5), |s, _| s.len() >= 2 * audio.len()).await;
    let expected: Vec<i16> = audio.iter().chain(&audio).copied().collect();
    assert_eq!(&samples[..expected.len()], &expected[..], "two plays, sample for sample");
    assert_eq!(samples.len() % 320, 0, "whole 20 ms frames");

    // A loop of 0 plays until stopped; DELETE stops it.
    let (status, _) = put(&server, "/calls/s1/stream", json!({ "stream_url": [format!("file://{}", wav.display())], "loop": 0 })).await;
    assert_eq!(status, 200);
    let (more, _) = receive(&mut ws, Duration::from_secs(5), |s, _| s.len() >= 3 * audio.len()).await;
    assert!(more.len() >= 3 * audio.len(), "still playing after three plays");
    let (_, view) = get(&server, "/calls/s1").await;
    assert_eq!(view["players_active"], 1);
    let response = http().delete(server.control_url("/calls/s1/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = receive(&mut ws, Duration::from_millis(200), |_, _| false).await;
    let (after, _) = receive(&mut ws, Duration::from_millis(300), |_, _| false).await;
    assert!(after.is_empty(), "nothing plays after DELETE ({} samples)", after.len());

    // Over HTTP: fetched, decoded and played the same; a redirect is not followed.
    let web = serve_file(std::fs::read(&wav).unwrap()).await;
    let (status, body) = put(&server, "/calls/s1/stream", json!({ "stream_url": [format!("{web}/prompt.wav")] })).await;
    assert_eq!(status, 200, "{body}");
    let (samples, _) = receive(&mut ws, Duration::from_secs(5), |s, _| s.len() >= audio.len()).await;
    assert_eq!(&samples[..audio.len()], &audio[..], "the fetched file, sample for sample");
    for (url, status) in [(format!("{web}/moved"), 502), (format!("{web}/missing"), 502), (format!("{web}/not-a-wav"), 400)] {
        let (got, problem) = put(&server, "/calls/s1/stream", json!({ "stream_url": [url] })).await;
        assert_eq!(got, status, "{url}: {problem}");
    }

    // Bad requests: a missing file, a non-WAV file, a bad level, no URL.
    let text = dir.join("not.wav");
    std::fs::write(&text, "hello").unwrap();
    for body in [
        json!({ "stream_url": ["file:///nonexistent/x.wav"] }),
        json!({ "stream_url": [format!("file://{}", text.display())] }),
        json!({ "stream_url": [format!("file://{}", wav.display())], "level": 3 }),
        json!({ "stream_url": [] }),
        json!({ "stream_url": ["ftp://example.com/x.wav"] }),
    ] {
        let (status, problem) = put(&server, "/calls/s1/stream", body.clone()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert!(problem["type"].as_str().unwrap().starts_with("urn:callpipe:problem:"), "{problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    drop(ws);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Serves `wav` at `/prompt.wav`, a redirect to it at `/moved`, text at `/not-a-wav` and 404
/// elsewhere; returns the base URL.
async fn serve_file(wav: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let wav = Arc::new(wav);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let wav = wav.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let request = String::from_utf8_lossy(&head).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, extra, body): (&str, &str, Vec<u8>) = match path.as_str() {
                    "/prompt.wav" => ("200 OK", "content-type: audio/wav\r\n", wav.to_vec()),
                    "/moved" => ("302 Found", "location: /prompt.wav\r\n", Vec::new()),
                    "/not-a-wav" => ("200 OK", "", b"hello".to_vec()),
                    _ => ("404 Not Found", "", Vec::new()),
                };
                let response = format!("HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    base
}

/// The DTMF keys in `samples`, decoded independently of callpipe: a Goertzel filter per
/// frequency over 10 ms blocks, a key when one low and one high tone stand out.
fn decode_dtmf(samples: &[i16], rate: u32) -> String {
    const LOW: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const HIGH: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const KEYS: [[char; 4]; 4] = [['1', '2', '3', 'A'], ['4', '5', '6', 'B'], ['7', '8', '9', 'C'], ['*', '0', '#', 'D']];
    let block = rate as usize / 100;
    let power = |x: &[i16], f: f64| {
        let c = 2.0 * (2.0 * std::f64::consts::PI * f / f64::from(rate)).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for v in x {
            let s = f64::from(*v) + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - c * s1 * s2
    };
    let mut keys = String::new();
    let mut previous = None;
    for x in samples.chunks_exact(block) {
        let energy: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() * block as f64 / 2.0;
        let best = |freqs: &[f64; 4]| {
            let p: Vec<f64> = freqs.iter().map(|f| power(x, *f)).collect();
            let i = (0..4).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
            (i, p[i])
        };
        let ((lo, pl), (hi, ph)) = (best(&LOW), best(&HIGH));
        let key = (energy > 1e6 && pl + ph > 0.5 * energy).then(|| KEYS[lo][hi]);
        if let Some(k) = key
            && key != previous
        {
            keys.push(k);
        }
        previous = key;
    }
    keys
}

#[tokio::test]
async fn dtmf_sent_through_the_api_decodes_to_the_same_keys() {
    let server = TestServer::start(CONFIG).await;
    for (rate, id) in [(8000, "d8"), (16000, "d16"), (24000, "d24")] {
        let mut ws = open_call(&server, "/bot", id, rate).await;
        let (status, body) = put(&server, &format!("/calls/{id}/dtmf"), json!({ "digits": "1234#*90" })).await;
        assert_eq!((status, body["message"].as_str()), (200, Some("DTMF sent")));
        // Eight keys of 100 ms tone and 100 ms gap.
        let n = rate as usize * 16 / 10;
        let (samples, _) = receive(&mut ws, Duration::from_secs(5), |s, _| s.len() >= n).await;
        assert_eq!(decode_dtmf(&samples, rate), "1234#*90", "{rate} Hz");
        let (status, problem) = put(&server, &format!("/calls/{id}/dtmf"), json!({ "digits": "12x" })).await;
        assert_eq!(status, 400, "{problem}");
    }
    server.stop().await;
}

#[tokio::test]
async fn mute_earmuff_and_hangup_act_on_the_call() {
    let server = TestServer::start(CONFIG).await;
    let ws = open_call(&server, "/echo", "m1", 8000).await;
    let frame: Vec<u8> = (0..160).flat_map(|i: i16| (i * 100 + 50).to_le_bytes()).collect();
    let (tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = tick.tick() => { if sink.send(Message::binary(frame.clone())).await.is_err() { break } }
                _ = &mut stop => break,
            }
        }
        sink
    });
    assert!(count_frames(&mut stream, Duration::from_millis(300)).await >= 10, "the echo plays");
    assert_eq!(put(&server, "/calls/m1", json!({ "action": "mute" })).await.0, 204);
    count_frames(&mut stream, Duration::from_millis(100)).await;
    assert_eq!(count_frames(&mut stream, Duration::from_millis(300)).await, 0, "muted: silence");
    assert_eq!(get(&server, "/calls/m1").await.1["muted"], true);
    assert_eq!(put(&server, "/calls/m1", json!({ "action": "unmute" })).await.0, 204);
    assert!(count_frames(&mut stream, Duration::from_millis(300)).await >= 10, "unmuted");
    assert_eq!(put(&server, "/calls/m1", json!({ "action": "earmuff" })).await.0, 204);
    count_frames(&mut stream, Duration::from_millis(100)).await;
    assert_eq!(count_frames(&mut stream, Duration::from_millis(300)).await, 0, "earmuffed: the echo hears nothing");
    assert_eq!(put(&server, "/calls/m1", json!({ "action": "unearmuff" })).await.0, 204);
    assert!(count_frames(&mut stream, Duration::from_millis(300)).await >= 10, "unearmuffed");
    let (status, problem) = put(&server, "/calls/m1", json!({ "action": "transfer" })).await;
    assert_eq!((status, problem["type"].as_str()), (400, Some("urn:callpipe:problem:invalid-request")));

    assert_eq!(put(&server, "/calls/m1", json!({ "action": "hangup" })).await.0, 204);
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(1000));
    let _ = tx.send(());
    let _ = sender.await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let view = loop {
        let (_, view) = get(&server, "/calls/m1").await;
        if view["status"] == "ended" || Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((view["status"].as_str(), view["close_code"].as_i64(), view["hangup"].as_str()), (Some("ended"), Some(1000), Some("api")));
    assert!(view["frames_in"].as_u64().unwrap() > 30 && view["frames_out"].as_u64().unwrap() > 30, "{view}");
    let (status, problem) = put(&server, "/calls/m1", json!({ "action": "hangup" })).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("urn:callpipe:problem:call-ended")));
    server.stop().await;
}

/// Audio frames received within `window`.
async fn count_frames(stream: &mut futures_util::stream::SplitStream<Client>, window: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + window;
    let mut n = 0;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, stream.next()).await {
        if m.is_binary() {
            n += 1;
        }
    }
    n
}

/// A tiny HTTP/1.1 server that records every request (headers and body) and answers 200.
struct Receiver {
    url: String,
    requests: Requests,
}

/// Requests received: (head, body).
type Requests = Arc<Mutex<VecDeque<(String, Vec<u8>)>>>;

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(VecDeque::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            if buf.len() < end + 4 + length {
                                break;
                            }
                            let body = buf[end + 4..end + 4 + length].to_vec();
                            buf.drain(..end + 4 + length);
                            seen.lock().unwrap().push_back((head, body));
                            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                        }
                    }
                });
            }
        });
        Receiver { url, requests }
    }

    /// The events received so far, as (Authorization header, body).
    fn events(&self) -> Vec<(Option<String>, Vec<u8>)> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .map(|(head, body)| {
                let auth = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization").then(|| value.trim().to_owned())
                });
                (auth, body.clone())
            })
            .collect()
    }

    async fn wait_for(&self, kind: &str, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let events: Vec<Value> = self.events().iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
            if events.iter().any(|e| e["event"] == kind) || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn events_reach_the_webhook_signed_and_in_order() {
    let receiver = Receiver::start().await;
    let dir = temp_dir("events");
    let prompt = dir.join("beep.wav");
    write_wav(&prompt, 8000, &vec![3000i16; 800]);
    let config = format!(
        r#"
[server]
stats_interval_ms = 0
[events]
signature_secret = "webhook-secret"
[[route]]
path = "/dtmf"
event_url = "{}"
processors = [{{ type = "dtmf_detect" }}, {{ type = "play", file = "{}" }}, {{ type = "echo" }}, {{ type = "record", dir = "{}" }}]
"#,
        receiver.url,
        prompt.display(),
        dir.display()
    );
    let server = TestServer::start(&config).await;
    let mut ws = open_call(&server, "/dtmf", "w1", 8000).await;
    ws.send(Message::text(r#"{"event":"websocket:dtmf","digit":"7","duration":200}"#)).await.unwrap();
    // An API notify: the platform acknowledges it with the payload callpipe sent.
    assert_eq!(put(&server, "/calls/w1/notify", json!({ "payload": { "prompt": "welcome" } })).await.0, 200);
    assert_eq!(put(&server, "/calls/w1/clear", json!({})).await.0, 200);
    let (_, texts) = receive(&mut ws, Duration::from_secs(5), |_, t| t.len() >= 2).await;
    let notify = texts.iter().find(|t| t["action"] == "notify").expect("a notify action");
    assert!(texts.iter().any(|t| t["action"] == "clear"), "{texts:?}");
    let ack = json!({ "event": "websocket:notify", "payload": notify["payload"] });
    ws.send(Message::text(ack.to_string())).await.unwrap();
    receiver.wait_for("notify", Duration::from_secs(5)).await;
    receiver.wait_for("stream:done", Duration::from_secs(5)).await;
    ws.send(Message::Close(None)).await.unwrap();
    let events = receiver.wait_for("ended", Duration::from_secs(5)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds.first(), Some(&"started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"ended"), "{kinds:?}");
    let dtmf = events.iter().find(|e| e["event"] == "dtmf").expect("a dtmf event");
    assert_eq!((dtmf["digit"].as_str(), dtmf["source"].as_str()), (Some("7"), Some("platform")));
    let played = events.iter().find(|e| e["event"] == "stream:done").expect("the player's stream:done");
    assert_eq!((played["source"].as_str(), played["reason"].as_str()), (Some("play"), Some("finished")), "{played}");
    let recorded = events.iter().find(|e| e["event"] == "recording").expect("a recording event");
    let file = recorded["file"].as_str().unwrap();
    assert!(std::path::Path::new(file).exists() && file.ends_with(".wav"), "{recorded}");
    // The event leaves once the file is finalized: its header already counts every sample.
    let wav = hound::WavReader::open(file).unwrap();
    assert_eq!(u64::from(wav.duration()), recorded["samples"].as_u64().unwrap(), "{recorded}");
    assert!(wav.duration() > 0);
    let notified = events.iter().find(|e| e["event"] == "notify").expect("a notify event");
    assert_eq!(notified["payload"], json!({ "prompt": "welcome" }));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "in order, none missing");
    assert!(events.iter().all(|e| e["call_id"] == "w1" && e["path"] == "/dtmf"));
    let ended = events.last().unwrap();
    assert!(ended["close_code"].as_i64().is_some() && ended["duration_s"].as_f64().is_some(), "{ended}");

    // Every request is signed: an HS256 JWT whose payload_hash is the body's SHA-256.
    let validation = callpipe::auth::Validation::default();
    for (auth, body) in receiver.events() {
        let token = auth.expect("signed").strip_prefix("Bearer ").unwrap().to_owned();
        let claims = callpipe::auth::jwt::verify_hs256(&token, b"webhook-secret", &validation, std::time::SystemTime::now()).unwrap();
        assert_eq!(claims["payload_hash"], callpipe::auth::jwt::payload_hash(&body));
        assert!(callpipe::auth::jwt::verify_hs256(&token, b"another-secret", &validation, std::time::SystemTime::now()).is_err());
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn jwt_config() -> &'static str {
    r#"
[server]
stats_interval_ms = 0
[[route]]
path = "/secure"
auth = { type = "jwt", secret = "signature-secret", application_id = "app-1" }
processors = [{ type = "echo" }]
[[route]]
path = "/token"
auth = { type = "token", token = "static-token" }
processors = [{ type = "echo" }]
"#
}

async fn upgrade(server: &TestServer, path: &str, authorization: Option<&str>) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.url(path).into_client_request().unwrap();
    if let Some(value) = authorization {
        request.headers_mut().insert("authorization", value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn upgrades_are_admitted_by_jwt_or_token_and_refused_with_401() {
    use callpipe::auth::jwt::sign_hs256;
    let server = TestServer::start(jwt_config()).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let good = sign_hs256(&json!({ "iat": now, "jti": "a", "application_id": "app-1" }), b"signature-secret");
    let mut ws = upgrade(&server, "/secure", Some(&format!("Bearer {good}"))).await.expect("a valid token is admitted");
    ws.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}"#)).await.unwrap();
    ws.send(Message::binary(vec![1u8; 320])).await.unwrap();
    let (samples, _) = receive(&mut ws, Duration::from_secs(5), |s, _| s.len() >= 160).await;
    assert_eq!(samples.len(), 160, "and the call works");

    let expired = sign_hs256(&json!({ "iat": now - 7200, "exp": now - 3600, "application_id": "app-1" }), b"signature-secret");
    let wrong_key = sign_hs256(&json!({ "iat": now, "application_id": "app-1" }), b"not-the-secret");
    let wrong_app = sign_hs256(&json!({ "iat": now, "application_id": "app-2" }), b"signature-secret");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let alg_none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&format!(r#"{{"iat":{now},"application_id":"app-1"}}"#)));
    for (name, header) in [
        ("missing", None),
        ("expired", Some(format!("Bearer {expired}"))),
        ("bad signature", Some(format!("Bearer {wrong_key}"))),
        ("application id", Some(format!("Bearer {wrong_app}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("garbage", Some("Bearer x.y.z".to_owned())),
    ] {
        assert_eq!(upgrade(&server, "/secure", header.as_deref()).await.err(), Some(401), "{name}");
    }
    assert!(upgrade(&server, "/token", Some("Bearer static-token")).await.is_ok());
    assert!(upgrade(&server, "/token", Some("static-token")).await.is_ok(), "the platform's custom value is sent verbatim");
    assert_eq!(upgrade(&server, "/token", Some("Bearer static-tokeN")).await.err(), Some(401));
    assert_eq!(server.handle.stats.unauthorized_total(), 7);
    let reasons = server.handle.stats.rejected_unauthorized.lock().unwrap().clone();
    assert_eq!(reasons.get("expired"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.get("algorithm"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.get("missing"), Some(&1), "{reasons:?}");
    let metrics = http().get(server.control_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callpipe_upgrades_unauthorized_total{reason=\"expired\"} 1"), "{metrics}");
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn the_api_lists_pages_filters_and_explains_its_errors() {
    let server = TestServer::start(CONFIG).await;
    let mut calls = Vec::new();
    for i in 0..5 {
        calls.push(open_call(&server, "/echo", &format!("l{i}"), 16000).await);
    }
    calls.pop().unwrap().send(Message::Close(None)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&server, "/calls?status=ended").await.1["count"] != 1 {
        assert!(Instant::now() < deadline, "the closed call is listed as ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, page) = get(&server, "/calls?page_size=2").await;
    assert_eq!(status, 200);
    assert_eq!((page["count"].as_u64(), page["page_size"].as_u64()), (Some(5), Some(2)));
    let ids: Vec<&str> = page["_embedded"]["calls"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["l3", "l2"], "live calls first, newest first");
    assert_eq!(page["_links"]["next"]["href"], "/calls?page_size=2&record_index=2");
    let (_, last) = get(&server, "/calls?page_size=2&record_index=4").await;
    assert_eq!(last["_embedded"]["calls"][0]["id"], "l4");
    assert!(last["_links"].get("next").is_none());
    let (_, live) = get(&server, "/calls?status=live").await;
    assert_eq!(live["count"], 4);
    let (_, one) = get(&server, "/calls/l1").await;
    assert_eq!((one["status"].as_str(), one["rate"].as_u64(), one["path"].as_str()), (Some("live"), Some(16000), Some("/echo")));

    for (path, status, kind) in [
        ("/calls/nobody", 404, "call-not-found"),
        ("/calls?page_size=0", 400, "invalid-request"),
        ("/calls?status=ringing", 400, "invalid-request"),
        ("/nothing-here", 404, "not-found"),
    ] {
        let response = http().get(server.control_url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(problem["type"], format!("urn:callpipe:problem:{kind}"), "{path}");
        assert_eq!(problem["status"], status);
    }
    let response = http().put(server.control_url("/calls/l1")).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    // Every documented route is served (none falls through to the not-found fallback).
    for (method, path) in callpipe::server::ROUTES {
        let path = path.replace("{id}", "nobody");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = http().request(method.clone(), server.control_url(&path)).send().await.unwrap();
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
        let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
        assert!(!kind.ends_with(":not-found") && !kind.ends_with(":method-not-allowed"), "{method} {path}: {body}");
    }
    // Metrics: Prometheus text, calls by route, frames and the rest.
    let response = http().get(server.control_url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    for line in [
        "callpipe_calls_total{route=\"/echo\"} 5",
        "callpipe_calls_active{route=\"/echo\"} 4",
        "callpipe_calls_active{route=\"/bot\"} 0",
        "# TYPE callpipe_send_lateness_seconds histogram",
        "# TYPE callpipe_processor_seconds histogram",
        "callpipe_webhooks_total{outcome=\"dropped\"} 0",
        "callpipe_ring_underrun_total ",
        "callpipe_upgrades_rejected_total{reason=\"not_found\"} 0",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    for sample in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = sample.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{sample}");
    }
    let (status, health) = get(&server, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    assert_eq!(get(&server, "/readyz").await.0, 200);
    drop(calls);
    server.stop().await;
}

#[tokio::test]
async fn the_control_token_guards_the_calls_api() {
    let server = TestServer::start(&format!("{CONFIG}\n[control]\ntoken = \"api-token\"\n")).await;
    let url = server.control_url("/calls");
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(http().get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    assert_eq!(http().get(&url).bearer_auth("api-token").send().await.unwrap().status(), 200);
    assert_eq!(http().get(server.control_url("/healthz")).send().await.unwrap().status(), 200, "health stays open");
    server.stop().await;

    // Without a token, requests must name a loopback host (a page that rebinds a name of its
    // own to 127.0.0.1 gets 403).
    let open = TestServer::start(CONFIG).await;
    let response = http().get(open.control_url("/calls")).header("host", "rebind.example:8081").send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(http().get(open.control_url("/calls")).header("host", "localhost:8081").send().await.unwrap().status(), 200);
    open.stop().await;
}

#[tokio::test]
async fn limits_close_floods_idle_calls_and_long_calls() {
    let config = r#"
[server]
stats_interval_ms = 0
max_text_per_second = 5
idle_timeout_ms = 400
max_duration_s = 1
[[route]]
path = "/echo"
processors = [{ type = "echo" }]
"#;
    let server = TestServer::start(config).await;
    // Text flood: a burst of 5 is allowed, the rest closes the call with 1008.
    let mut flood = server.call("/echo", 8000).await;
    for _ in 0..20 {
        let _ = flood.send(Message::text(r#"{"event":"websocket:dtmf","digit":"1"}"#)).await;
    }
    assert_eq!(close_code(&mut flood).await, Some(1008));
    // No audio for 400 ms: 1008.
    let mut idle = server.call("/echo", 8000).await;
    let started = Instant::now();
    assert_eq!(close_code(&mut idle).await, Some(1008));
    assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
    // Audio flowing, but the call reaches its maximum duration: callpipe hangs up with 1000.
    let mut long = server.call("/echo", 8000).await;
    let started = Instant::now();
    let code = loop {
        long.send(Message::binary(vec![0u8; 320])).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(20), long.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(_) => break None,
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no hang-up");
    };
    assert_eq!(code, Some(1000));
    assert!(started.elapsed() >= Duration::from_millis(950));
    let r = std::sync::atomic::Ordering::Relaxed;
    let stats = &server.handle.stats;
    assert_eq!((stats.closed_text_flood.load(r), stats.closed_idle.load(r), stats.hangups_max_duration.load(r)), (1, 1, 1));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_turns_readyz_false_refuses_upgrades_and_closes_with_1001() {
    let config = CONFIG.replace("shutdown_grace_ms = 300", "shutdown_grace_ms = 1500");
    let server = TestServer::start(&config).await;
    let mut ws = open_call(&server, "/echo", "g1", 8000).await;
    let ready = server.control_url("/readyz");
    let url = server.url("/echo");
    let stopping = tokio::spawn(server.stop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = http().get(&ready).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never turned false");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("a new upgrade while draining: {:?}", other.map(|_| ())),
    }
    // The live call keeps working through the grace period, then closes with 1001.
    ws.send(Message::binary(vec![2u8; 320])).await.unwrap();
    let (samples, _) = receive(&mut ws, Duration::from_secs(1), |s, _| !s.is_empty()).await;
    assert_eq!(samples.len(), 160);
    assert_eq!(close_code(&mut ws).await, Some(1001));
    stopping.await.unwrap();
}
