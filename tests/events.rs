//! The event bus against a scripted HTTP receiver on 127.0.0.1: delivery and per-call order,
//! signing, retries, timeouts, the bounded queue, the JSON-lines log and `flush`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callpipe::events::{EventBus, EventStats, EventsConfig, LogSink, SigningKey, timestamp};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A generous bound for anything that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answer (the connection stays open until the test ends).
    Stall,
}

/// One request as received.
#[derive(Debug)]
struct Received {
    method: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A tiny HTTP/1.1 server: records every request and answers per its script, then with `then`.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: Vec<Reply>, then: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let recorded = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                let script = Arc::clone(&script);
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    while let Some(request) = read_request(&mut read).await {
                        let reply = script.lock().unwrap().next().unwrap_or(then);
                        recorded.lock().unwrap().push(request);
                        let answer = match reply {
                            Reply::Status(code) => format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\n\r\nok"),
                            Reply::RetryAfter(code, secs) => {
                                format!("HTTP/1.1 {code} X\r\nretry-after: {secs}\r\ncontent-length: 0\r\n\r\n")
                            }
                            Reply::Stall => std::future::pending().await,
                        };
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}/events?token=t", self.addr)
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn read_request(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Received> {
    let mut line = String::new();
    if read.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let method = line.split(' ').next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        read.read_line(&mut line).await.ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length").map_or(Some(0), |v| v.parse().ok())?;
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some(Received { method, headers, body })
}

/// A configuration with short delays for tests.
fn config() -> EventsConfig {
    EventsConfig {
        timeout: Duration::from_secs(5),
        retries: 3,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..EventsConfig::default()
    }
}

fn event(call: &str, seq: u64, name: &str) -> Value {
    json!({"event": name, "call_id": call, "path": "/bot", "seq": seq, "timestamp": timestamp(SystemTime::now())})
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn counts(stats: &EventStats) -> [u64; 4] {
    [get(&stats.webhooks_delivered), get(&stats.webhook_attempts_failed), get(&stats.webhooks_failed), get(&stats.webhooks_dropped)]
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-events-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn events_are_posted_intact_and_in_order_per_call() {
    let receiver = Receiver::start(vec![], Reply::Status(200)).await;
    let bus = EventBus::start(EventsConfig { workers: 2, ..config() }).unwrap();
    let calls = ["alpha", "bravo", "charlie", "delta"];
    let mut published = Vec::new();
    for seq in 0..10 {
        for call in calls {
            let e = event(call, seq, if seq == 0 { "started" } else { "dtmf" });
            published.push(e.clone());
            bus.publish(e, Some(&receiver.url()));
        }
    }
    assert!(bus.flush(PATIENCE).await, "everything delivered");

    let requests = receiver.requests.lock().unwrap();
    assert_eq!(requests.len(), published.len());
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for request in requests.iter() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.headers["content-type"], "application/json");
        assert!(request.headers["user-agent"].starts_with("callpipe/"), "{:?}", request.headers);
        assert!(!request.headers.contains_key("authorization"), "unsigned by default");
        let body = request.json();
        assert!(published.contains(&body), "{body}");
        seen.entry(body["call_id"].as_str().unwrap().to_owned()).or_default().push(body["seq"].as_u64().unwrap());
    }
    for call in calls {
        let order = &seen[call];
        let sorted = {
            let mut s = order.clone();
            s.sort();
            s
        };
        assert_eq!(order, &sorted, "call {call} delivered in order");
        assert_eq!(order.len(), 10);
    }
    assert_eq!(counts(bus.stats()), [published.len() as u64, 0, 0, 0]);
}

#[tokio::test]
async fn signed_webhooks_carry_a_verifiable_token() {
    let secret = b"a shared signature secret";
    let receiver = Receiver::start(vec![], Reply::Status(204)).await;
    let bus = EventBus::start(EventsConfig { signing: Some(SigningKey::new(secret.to_vec())), ..config() }).unwrap();
    bus.publish(event("sig", 1, "started"), Some(&receiver.url()));
    bus.publish(json!({"event": "ended", "call_id": "sig", "seq": 2, "note": "héllo \"quoted\""}), Some(&receiver.url()));
    assert!(bus.flush(PATIENCE).await);

    let requests = receiver.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut jtis = Vec::new();
    for request in requests.iter() {
        let token = request.headers["authorization"].strip_prefix("Bearer ").expect("a bearer token");
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let (header, payload) = signed.split_once('.').unwrap();

        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).expect("the signature verifies with the secret");
        let mut wrong = Hmac::<Sha256>::new_from_slice(b"another secret").unwrap();
        wrong.update(signed.as_bytes());
        assert!(wrong.verify_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).is_err());

        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let body_hash: String = Sha256::digest(&request.body).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(claims["payload_hash"], body_hash.as_str());
        assert_eq!(claims["iss"], "callpipe");
        let iat = claims["iat"].as_u64().unwrap();
        assert!(iat.abs_diff(now) < 60, "iat {iat}, now {now}");
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_ne!(jtis[0], jtis[1]);
    assert!(!jtis[0].is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let receiver = Receiver::start(vec![Reply::Status(503), Reply::Status(503)], Reply::Status(200)).await;
    let bus = EventBus::start(config()).unwrap();
    let sent = event("retry", 1, "dtmf");
    bus.publish(sent.clone(), Some(&receiver.url()));
    assert!(bus.flush(PATIENCE).await);
    let requests = receiver.requests.lock().unwrap();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.json() == sent), "every attempt carries the same body");
    assert_eq!(counts(bus.stats()), [1, 2, 0, 0]);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let receiver = Receiver::start(vec![Reply::Status(400)], Reply::Status(200)).await;
    let bus = EventBus::start(config()).unwrap();
    bus.publish(event("bad", 1, "dtmf"), Some(&receiver.url()));
    assert!(bus.flush(PATIENCE).await);
    assert_eq!(receiver.count(), 1);
    assert_eq!(counts(bus.stats()), [0, 1, 1, 0]);
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_max_backoff() {
    // An hour's Retry-After is cut to max_backoff (100 ms): the retry comes well within PATIENCE.
    let receiver = Receiver::start(vec![Reply::RetryAfter(429, 3600)], Reply::Status(200)).await;
    let bus = EventBus::start(config()).unwrap();
    bus.publish(event("busy", 1, "dtmf"), Some(&receiver.url()));
    assert!(bus.flush(PATIENCE).await);
    assert_eq!(receiver.count(), 2);
    assert_eq!(counts(bus.stats()), [1, 1, 0, 0]);
}

#[tokio::test]
async fn an_unreachable_url_is_given_up_after_the_retries() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let bus = EventBus::start(EventsConfig { retries: 2, ..config() }).unwrap();
    bus.publish(event("gone", 1, "ended"), Some(&format!("http://{closed}/events")));
    assert!(bus.flush(PATIENCE).await, "giving up finishes the delivery");
    assert_eq!(counts(bus.stats()), [0, 3, 1, 0]);
}

#[tokio::test]
async fn a_silent_receiver_is_abandoned_after_the_timeout_and_retried() {
    let receiver = Receiver::start(vec![Reply::Stall], Reply::Status(200)).await;
    let bus = EventBus::start(EventsConfig { timeout: Duration::from_millis(200), ..config() }).unwrap();
    bus.publish(event("slow", 1, "dtmf"), Some(&receiver.url()));
    assert!(bus.flush(PATIENCE).await);
    assert_eq!(receiver.count(), 2);
    assert_eq!(counts(bus.stats()), [1, 1, 0, 0]);
}

#[tokio::test]
async fn a_full_queue_drops_new_deliveries_without_waiting() {
    let receiver = Receiver::start(vec![], Reply::Stall).await;
    let queue = 50;
    let bus = EventBus::start(EventsConfig { queue, workers: 2, timeout: Duration::from_secs(30), ..config() }).unwrap();
    let url = receiver.url();
    let published = 1000;
    let started = Instant::now();
    for i in 0..published {
        bus.publish(event(&format!("call-{i}"), 1, "started"), Some(&url));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "1000 publishes took {took:?}");
    assert_eq!(get(&bus.stats().webhooks_dropped), (published - queue) as u64);
    assert_eq!(get(&bus.stats().webhooks_delivered), 0);
}

#[tokio::test]
async fn flush_reports_a_missed_deadline() {
    let receiver = Receiver::start(vec![], Reply::Stall).await;
    let bus = EventBus::start(EventsConfig { timeout: Duration::from_secs(30), ..config() }).unwrap();
    bus.publish(event("stuck", 1, "ended"), Some(&receiver.url()));
    let started = Instant::now();
    assert!(!bus.flush(Duration::from_millis(300)).await, "a stalled delivery is not done");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < PATIENCE, "{took:?}");
    assert_eq!(counts(bus.stats()), [0, 0, 0, 0]);
}

#[tokio::test]
async fn the_log_file_gets_one_json_object_per_line() {
    let dir = temp_dir("log");
    let path = dir.join("events.jsonl");
    let bus = EventBus::start(EventsConfig { log: LogSink::File(path.clone()), ..config() }).unwrap();
    let published: Vec<Value> = (0..25).map(|seq| event(&format!("call-{}", seq % 3), seq, "dtmf")).collect();
    for e in &published {
        bus.publish(e.clone(), None);
    }
    assert!(bus.flush(PATIENCE).await);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, published);
    assert!(text.ends_with('\n'));
    assert_eq!(get(&bus.stats().logged), published.len() as u64);
    assert_eq!(get(&bus.stats().log_errors), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_unopenable_log_path_fails_start() {
    let path = temp_dir("missing").join("no-such-dir").join("events.jsonl");
    let error = EventBus::start(EventsConfig { log: LogSink::File(path.clone()), ..config() }).unwrap_err();
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
}

#[tokio::test]
async fn a_failing_log_does_not_stop_webhooks() {
    // Writes to /dev/full fail with ENOSPC, as on a full disk.
    let full = PathBuf::from("/dev/full");
    if !full.exists() {
        eprintln!("no /dev/full here; skipped");
        return;
    }
    let receiver = Receiver::start(vec![], Reply::Status(200)).await;
    let bus = EventBus::start(EventsConfig { log: LogSink::File(full), ..config() }).unwrap();
    for seq in 0..5 {
        bus.publish(event("disk", seq, "dtmf"), Some(&receiver.url()));
    }
    assert!(bus.flush(PATIENCE).await);
    assert_eq!(get(&bus.stats().log_errors), 5);
    assert_eq!(get(&bus.stats().logged), 0);
    assert_eq!(get(&bus.stats().webhooks_delivered), 5);
    assert_eq!(receiver.count(), 5);
}
