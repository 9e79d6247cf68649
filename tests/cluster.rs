//! A cluster on loopback with a real `redis-server`: control from any node, the cluster's calls
//! listed from any node, a hang-up carried across nodes, a killed node gone from the registry
//! within its TTL, and a node that loses Redis keeping its calls and registering them again.
//!
//! Without `redis-server` these tests say so and pass, unless `CALLPIPE_REQUIRE_REDIS=1` (set
//! by `.ci/run`, which installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::helper::{Helper, free_port};
use common::{Client, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A `redis-server` on a loopback port of its own, stopped when dropped.
struct Redis(Helper);

impl Redis {
    /// Starts one, or `None` (with a message) when the binary is missing.
    fn start() -> Option<Redis> {
        Redis::start_on(free_port())
    }

    fn start_on(port: u16) -> Option<Redis> {
        let args =
            |port: u16| ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from).to_vec();
        Helper::start_on(port, "redis-server", args, "CALLPIPE_REQUIRE_REDIS", "install Debian's redis-server to run the cluster tests")
            .map(Redis)
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// Runs a command and returns its answer (with `redis-cli`'s plain output).
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port().to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn node_config(redis: &str, node: &str, extra: &str) -> String {
    format!(
        r#"
[server]
stats_interval_ms = 0
metadata_timeout_ms = 500
shutdown_grace_ms = 300
[media]
threads = 1
[control]
listen = "127.0.0.1:0"
token = "cluster-secret"
[cluster]
redis = "{redis}"
node_id = "{node}"
heartbeat_ms = 200
ttl_ms = 1000
{extra}
[[route]]
path = "/echo"
processors = [{{ type = "echo" }}]
"#
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

/// A control API request with the token: (status, the answering node's header, the body).
async fn api(server: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
    let mut request = http().request(method, server.control_url(path)).bearer_auth("cluster-secret");
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let node = response.headers().get("x-callpipe-node").map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    (status, node, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(server: &TestServer, path: &str) -> (u16, Option<String>, Value) {
    api(server, reqwest::Method::GET, path, None).await
}

/// Polls `check` every 20 ms until it holds, for at most `within`; returns how long it took.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Sends 20 ms frames of 16 kHz audio and reads what comes back, for `frames` frames.
async fn echo_some(ws: &mut Client, frames: usize) -> usize {
    let mut back = 0;
    for n in 0..frames {
        ws.send(Message::binary(common::test_frame(n as u32, 640))).await.unwrap();
        while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(15), ws.next()).await {
            if message.is_binary() {
                back += 1;
            }
        }
    }
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_lists_and_steers_every_nodes_calls() {
    let Some(redis) = Redis::start() else { return };
    let a = TestServer::start(&node_config(&redis.url(), "node-a", "")).await;
    let b = TestServer::start(&node_config(&redis.url(), "node-b", "")).await;
    let mut on_b = b.call("/echo?call_id=call-on-b", 16000).await;
    let _on_a = a.call("/echo?call_id=call-on-a", 16000).await;

    // A looks up B's call in the registry and forwards; B answers.
    eventually(Duration::from_secs(5), "node A finds B's call", || async { get(&a, "/calls/call-on-b").await.0 == 200 }).await;
    let (_, answered_by, call) = get(&a, "/calls/call-on-b").await;
    assert_eq!(answered_by.as_deref(), Some("node-b"));
    assert_eq!(call["node"], "node-b");
    assert_eq!(call["status"], "live");

    // Either node lists both calls, each with its node, and pages through them.
    for server in [&a, &b] {
        let (status, _, list) = get(server, "/calls?status=live").await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["count"], 2, "{list}");
        let mut nodes: Vec<(String, String)> = list["_embedded"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_owned(), c["node"].as_str().unwrap().to_owned()))
            .collect();
        nodes.sort();
        assert_eq!(nodes, [("call-on-a".to_owned(), "node-a".to_owned()), ("call-on-b".to_owned(), "node-b".to_owned())]);
        let (_, _, first) = get(server, "/calls?status=live&page_size=1").await;
        let (_, _, second) = get(server, "/calls?status=live&page_size=1&record_index=1").await;
        assert_eq!(first["_embedded"]["calls"].as_array().unwrap().len(), 1);
        assert_ne!(first["_embedded"]["calls"][0]["id"], second["_embedded"]["calls"][0]["id"]);
        assert!(first["_links"]["next"].is_object());
    }

    // The nodes, as either sees them.
    let (status, _, nodes) = get(&a, "/cluster/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    let listed: Vec<&str> = nodes["_embedded"]["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ["node-a", "node-b"]);
    assert!(nodes["_embedded"]["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "ready"));

    // A command through A reaches the call on B: DTMF first (B's answer comes back), then the
    // hang-up, and B closes the call with 1000.
    let (status, by, body) = api(&a, reqwest::Method::PUT, "/calls/call-on-b/dtmf", Some(serde_json::json!({ "digits": "12" }))).await;
    assert_eq!((status, by.as_deref()), (200, Some("node-b")), "{body}");
    assert!(echo_some(&mut on_b, 5).await > 0, "the call on B still echoes");
    let (status, by, body) = api(&a, reqwest::Method::PUT, "/calls/call-on-b", Some(serde_json::json!({ "action": "hangup" }))).await;
    assert_eq!((status, by.as_deref()), (204, Some("node-b")), "{body}");
    assert_eq!(common::close_code(&mut on_b).await, Some(1000));

    // The ended call leaves the registry, and B still tells A about it from its history.
    eventually(Duration::from_secs(5), "the ended call is B's history", || async {
        let (status, _, call) = get(&a, "/calls/call-on-b").await;
        status == 200 && call["status"] == "ended"
    })
    .await;
    assert_eq!(redis.cli(&["HEXISTS", "callpipe:calls:node-b", "call-on-b"]), "0");

    // A call no node knows, and bad input, get clear answers.
    let (status, _, problem) = get(&a, "/calls/no-such-call").await;
    assert_eq!(status, 404, "{problem}");
    let (status, _, problem) = api(&a, reqwest::Method::PUT, "/calls/no-such-call", Some(serde_json::json!({ "action": "hangup" }))).await;
    assert_eq!(status, 404, "{problem}");
    let unauthorized = http().get(a.control_url("/calls/call-on-b")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401, "forwarding never skips the token check");

    a.stop().await;
    b.stop().await;
    // Stopped nodes leave the registry at once.
    assert_eq!(redis.cli(&["SMEMBERS", "callpipe:nodes"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_the_registry_within_its_ttl_and_the_others_calls_go_on() {
    let Some(redis) = Redis::start() else { return };
    let a = TestServer::start(&node_config(&redis.url(), "node-a", "")).await;
    let mut on_a = a.call("/echo?call_id=survivor", 16000).await;

    let dir = std::env::temp_dir().join(format!("callpipe-cluster-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node-k.toml");
    std::fs::write(&config, node_config(&redis.url(), "node-k", "")).unwrap();
    let (mut child, listen) = serve(&config);
    let (mut victim, _) = tokio_tungstenite::connect_async(format!("ws://{listen}/echo?call_id=victim")).await.unwrap();
    victim.send(Message::text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}"#)).await.unwrap();
    eventually(Duration::from_secs(5), "the killed node's call is registered", || async { get(&a, "/calls/victim").await.0 == 200 }).await;

    child.0.kill().unwrap(); // SIGKILL: no goodbye.
    child.0.wait().unwrap();
    let gone = eventually(Duration::from_secs(5), "the killed node leaves the membership", || async {
        let (_, _, nodes) = get(&a, "/cluster/nodes").await;
        nodes["_embedded"]["nodes"].as_array().is_some_and(|n| n.iter().all(|n| n["id"] != "node-k"))
    })
    .await;
    assert!(gone <= Duration::from_millis(1500), "gone after {gone:?}; the TTL is 1 s");
    assert_eq!(redis.cli(&["EXISTS", "callpipe:calls:node-k"]), "0", "its calls expired with it");
    let (status, _, _) = get(&a, "/calls/victim").await;
    assert_eq!(status, 404);

    // Node A's call never noticed.
    assert!(echo_some(&mut on_a, 10).await >= 5, "the surviving node's call still echoes");
    let (_, _, call) = get(&a, "/calls/survivor").await;
    assert_eq!(call["status"], "live");
    a.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_redis_serves_its_calls_and_registers_them_when_redis_returns() {
    if Command::new("redis-server").arg("--version").output().is_err() {
        assert!(std::env::var("CALLPIPE_REQUIRE_REDIS").as_deref() != Ok("1"), "redis-server is required");
        eprintln!("skipping: no redis-server");
        return;
    }
    let port = free_port();
    let node = TestServer::start(&node_config(&format!("redis://127.0.0.1:{port}"), "lonely", "")).await;
    let mut ws = node.call("/echo?call_id=kept", 16000).await;
    assert!(echo_some(&mut ws, 10).await >= 5, "calls are served without Redis");
    let (status, _, ready) = get(&node, "/readyz").await;
    assert_eq!((status, ready["registry"].as_str()), (200, Some("unreachable")), "{ready}");
    let metrics = http().get(node.control_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callpipe_cluster_registry_up{node=\"lonely\"} 0"), "{metrics}");
    // The node's own calls answer; the registry's absence is named where it matters.
    assert_eq!(get(&node, "/calls/kept").await.0, 200);
    let (status, _, problem) = get(&node, "/calls/elsewhere").await;
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("Redis"), "{problem}");

    let redis = Redis::start_on(port).unwrap();
    eventually(Duration::from_secs(10), "the node registers its live call once Redis is back", || async {
        redis.cli(&["HEXISTS", "callpipe:calls:lonely", "kept"]) == "1"
    })
    .await;
    let (_, _, ready) = get(&node, "/readyz").await;
    assert_eq!(ready["registry"], "up");
    assert!(echo_some(&mut ws, 5).await > 0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_says_so_to_the_cluster() {
    let Some(redis) = Redis::start() else { return };
    let a = TestServer::start(&node_config(&redis.url(), "node-a", "")).await;
    // B drains for up to 5 s while its call is live.
    let b =
        TestServer::start(&node_config(&redis.url(), "node-b", "").replace("shutdown_grace_ms = 300", "shutdown_grace_ms = 5000")).await;
    let mut on_b = b.call("/echo?call_id=long", 16000).await;
    eventually(Duration::from_secs(5), "B's call is registered", || async { get(&a, "/calls/long").await.0 == 200 }).await;
    let stopping = tokio::spawn(b.stop());
    eventually(Duration::from_secs(3), "A sees B draining", || async {
        let (_, _, nodes) = get(&a, "/cluster/nodes").await;
        nodes["_embedded"]["nodes"].as_array().is_some_and(|n| n.iter().any(|n| n["id"] == "node-b" && n["state"] == "draining"))
    })
    .await;
    // The draining node's call is still served, and still steerable from A.
    assert!(echo_some(&mut on_b, 5).await > 0);
    let (status, by, _) = api(&a, reqwest::Method::PUT, "/calls/long", Some(serde_json::json!({ "action": "hangup" }))).await;
    assert_eq!((status, by.as_deref()), (204, Some("node-b")));
    assert_eq!(common::close_code(&mut on_b).await, Some(1000));
    stopping.await.unwrap();
    a.stop().await;
}

/// A `callpipe serve` process, killed when dropped (a failed test leaves nothing running).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `callpipe serve` with `config` on free loopback ports; returns it and its call address.
fn serve(config: &std::path::Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Process(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.checked_duration_since(Instant::now()).expect("callpipe serve said where it listens");
        let line = rx.recv_timeout(left).unwrap();
        if let Some(rest) = line.split("ws://").nth(1) {
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
            // Keep draining its output so that it never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, addr);
        }
    }
}

/// Reads every new entry of `stream` for the consumer group `group`, acknowledging them:
/// (call_id, event, the event's JSON) in stream order.
async fn read_group(redis: &Redis, stream: &str, group: &str) -> Vec<(String, String, Value)> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("reader-1")
        .arg("COUNT")
        .arg(10_000)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    let mut entries = Vec::new();
    for key in reply.keys {
        for entry in key.ids {
            let field = |name: &str| -> String { entry.get(name).unwrap_or_default() };
            let data: Value = serde_json::from_str(&field("data")).unwrap();
            assert!(!field("node").is_empty() && field("run").parse::<u64>().is_ok() && field("seq").parse::<u64>().is_ok(), "{entry:?}");
            entries.push((field("call_id"), field("event"), data));
            let _: i64 = redis::cmd("XACK").arg(stream).arg(group).arg(&entry.id).query_async(&mut connection).await.unwrap();
        }
    }
    entries
}

/// Reads the group `readers` of `test:events` until `done` holds for everything read.
async fn read_until(redis: &Redis, within: Duration, done: impl Fn(&[(String, String, Value)]) -> bool) -> Vec<(String, String, Value)> {
    let start = Instant::now();
    let mut entries = Vec::new();
    loop {
        entries.extend(read_group(redis, "test:events", "readers").await);
        if done(&entries) {
            return entries;
        }
        assert!(start.elapsed() < within, "not in the stream within {within:?}: {entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call with `id` that sends a second of audio and hangs up.
async fn short_call(server: &TestServer, id: &str) {
    let mut ws = server.call(&format!("/hooked?call_id={id}"), 16000).await;
    echo_some(&mut ws, 50).await;
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {}
}

/// Checks that each call's events came in order: `started` first, `ended` last, their `seq`
/// counting up from 0 without a gap.
fn assert_in_order(entries: &[(String, String, Value)], calls: &[&str]) {
    for call in calls {
        let mine: Vec<&(String, String, Value)> = entries.iter().filter(|(id, ..)| id == call).collect();
        assert!(mine.len() >= 2, "{call}: {mine:?}");
        assert_eq!(mine.first().unwrap().1, "started", "{call}");
        assert_eq!(mine.last().unwrap().1, "ended", "{call}");
        for (n, (_, kind, data)) in mine.iter().enumerate() {
            assert_eq!(data["seq"], n, "{call}: event {n} ({kind}) out of order");
            assert_eq!(&data["event"], kind);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_redis_stream_in_order_while_the_webhook_and_then_redis_are_down() {
    let Some(redis) = Redis::start() else { return };
    let port = redis.port();
    assert_eq!(redis.cli(&["XGROUP", "CREATE", "test:events", "readers", "0", "MKSTREAM"]), "OK");
    // Webhooks go to a port where nothing listens: every delivery fails.
    let dead = free_port();
    let config = format!(
        r#"
[server]
stats_interval_ms = 0
metadata_timeout_ms = 500
shutdown_grace_ms = 300
[media]
threads = 1
[events]
log = "off"
retries = 0
max_backoff_ms = 400
[events.redis]
url = "{}"
stream = "test:events"
max_len = 1000
[[route]]
path = "/hooked"
event_url = "http://127.0.0.1:{dead}/hook"
processors = [{{ type = "echo" }}]
"#,
        redis.url()
    );
    let node = TestServer::start(&config).await;
    for id in ["s-1", "s-2", "s-3"] {
        short_call(&node, id).await;
    }
    let entries =
        read_until(&redis, Duration::from_secs(5), |entries| entries.iter().filter(|(_, kind, _)| kind == "ended").count() == 3).await;
    assert_in_order(&entries, &["s-1", "s-2", "s-3"]);
    let metrics = http().get(node.control_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callpipe_webhooks_total{outcome=\"failed\"}"), "{metrics}");
    assert!(!metrics.contains("callpipe_webhooks_total{outcome=\"delivered\"} 1"), "the webhook receiver is down");

    // Redis goes away: a call's events wait in the queue, and reach the new Redis once it runs.
    drop(redis);
    short_call(&node, "s-4").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis = Redis::start_on(port).unwrap();
    assert_eq!(redis.cli(&["XGROUP", "CREATE", "test:events", "readers", "0", "MKSTREAM"]), "OK");
    let entries =
        read_until(&redis, Duration::from_secs(10), |entries| entries.iter().any(|(id, kind, _)| id == "s-4" && kind == "ended")).await;
    assert_in_order(&entries, &["s-4"]);
    let metrics = http().get(node.control_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callpipe_event_stream_total{outcome=\"dropped\"} 0"), "{metrics}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conference_members_on_two_nodes_hear_each_other_through_a_link() {
    use common::tones::{Caller, join};
    let Some(redis) = Redis::start() else { return };
    let a = TestServer::start(&node_config(&redis.url(), "node-a", CONFERENCE_ROUTE)).await;
    let b = TestServer::start(&node_config(&redis.url(), "node-b", CONFERENCE_ROUTE)).await;
    // The first member reaches A: A is the conference's home.
    let first = Caller::start(join(&a, "/conf", "m-a", 16000, "room-x").await, 16000, 440.0);
    claimed(&redis, "room-x", "node-a").await;
    // The second reaches B, which links it to A.
    let second = Caller::start(join(&b, "/conf", "m-b", 16000, "room-x").await, 16000, 1100.0);
    eventually(Duration::from_secs(5), "each member hears the other across the nodes", || async {
        hears(&first, 1100.0) > -30.0 && hears(&second, 440.0) > -30.0
    })
    .await;
    assert!(hears(&first, 440.0) < -50.0 && hears(&second, 1100.0) < -50.0, "nobody hears themselves");

    // The conference, asked on B, is answered by its home, with both members.
    let (status, by, room) = get(&b, "/conferences/room-x").await;
    assert_eq!((status, by.as_deref()), (200, Some("node-a")), "{room}");
    let mut members: Vec<&str> = room["members"].as_array().unwrap().iter().map(|m| m["call_id"].as_str().unwrap()).collect();
    members.sort();
    assert_eq!(members, ["m-a", "m-b"]);
    let (_, _, listed) = get(&b, "/conferences").await;
    assert_eq!((listed["count"].as_u64(), listed["_embedded"]["conferences"][0]["node"].as_str()), (Some(1), Some("node-a")), "{listed}");
    // The link is not a call of the cluster: m-b is B's call, listed once.
    let (_, _, calls) = get(&a, "/calls?status=live").await;
    let ids: Vec<(&str, &str)> =
        calls["_embedded"]["calls"].as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap(), c["node"].as_str().unwrap())).collect();
    assert_eq!(calls["count"], 2, "{calls}");
    assert!(ids.contains(&("m-b", "node-b")) && ids.contains(&("m-a", "node-a")), "{ids:?}");

    // Muting the linked member through B mutes it at the home.
    let (status, by, body) =
        api(&b, reqwest::Method::PUT, "/conferences/room-x/members/m-b", Some(serde_json::json!({ "action": "mute" }))).await;
    assert_eq!((status, by.as_deref()), (204, Some("node-a")), "{body}");
    eventually(Duration::from_secs(5), "the muted member is no longer heard", || async { hears(&first, 1100.0) < -50.0 }).await;
    assert!(hears(&second, 440.0) > -30.0, "the muted member still hears the room");

    second.hang_up().await;
    first.hang_up().await;
    eventually(Duration::from_secs(5), "the ended conference's claim is released", || async {
        redis.cli(&["EXISTS", "callpipe:conf:room-x"]) == "0"
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_home_still_links_new_members_to_its_live_conference() {
    use common::tones::{Caller, join};
    let Some(redis) = Redis::start() else { return };
    let route = "[[route]]\npath = \"/conf\"\nprocessors = [{ type = \"conference\", name = \"{header:room}\", rate = 16000 }]\n";
    let a =
        TestServer::start(&node_config(&redis.url(), "node-a", route).replace("shutdown_grace_ms = 300", "shutdown_grace_ms = 8000")).await;
    let b = TestServer::start(&node_config(&redis.url(), "node-b", route)).await;
    let first = Caller::start(join(&a, "/conf", "stay", 16000, "room-d").await, 16000, 440.0);
    eventually(Duration::from_secs(5), "A claims the conference", || async { redis.cli(&["GET", "callpipe:conf:room-d"]) == "node-a" })
        .await;
    let stopping = tokio::spawn(a.stop());
    eventually(Duration::from_secs(3), "A drains", || async {
        let (_, _, nodes) = get(&b, "/cluster/nodes").await;
        nodes["_embedded"]["nodes"].as_array().is_some_and(|n| n.iter().any(|n| n["id"] == "node-a" && n["state"] == "draining"))
    })
    .await;
    // A new member reaches B: it is linked to the draining home and hears the room.
    let late = Caller::start(join(&b, "/conf", "late", 16000, "room-d").await, 16000, 1100.0);
    eventually(Duration::from_secs(5), "the late member and the home's member hear each other", || async {
        hears(&late, 440.0) > -30.0 && hears(&first, 1100.0) > -30.0
    })
    .await;
    late.hang_up().await;
    first.hang_up().await;
    stopping.await.unwrap();
    b.stop().await;
}

/// A route whose calls join the conference their `room` header names.
const CONFERENCE_ROUTE: &str =
    "[[route]]\npath = \"/conf\"\nprocessors = [{ type = \"conference\", name = \"{header:room}\", rate = 16000 }]\n";

/// Waits until `node` holds the claim on the conference `room`.
async fn claimed(redis: &Redis, room: &str, node: &str) {
    let key = format!("callpipe:conf:{room}");
    eventually(Duration::from_secs(5), "the conference is claimed", || async { redis.cli(&["GET", &key]) == node }).await;
}

/// The level of `hz` in the last half second a 16 kHz caller heard, in dBFS.
fn hears(caller: &common::tones::Caller, hz: f64) -> f64 {
    common::tones::level_db(&caller.last(16000, 0.5), 16000, hz)
}
