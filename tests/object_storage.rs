//! Recordings uploaded to S3-compatible storage, against a real S3 server on loopback (PyPI's
//! `moto[server]`): a call's recording arrives byte for byte and its `recording` event carries
//! the object's URL; `keep_local = false` removes the local file once stored; a large file goes
//! up in parts; a failed upload keeps the file and says why.
//!
//! Without `moto_server` this test says so and passes, unless `CALLPIPE_REQUIRE_S3=1` (set by
//! `.ci/run`, which installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callpipe::call::UploadTarget;
use callpipe::services::Uploads;
use common::TestServer;
use common::helper::Helper;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// `moto_server` on a loopback port, stopped when dropped.
struct S3(Helper);

impl S3 {
    fn start() -> Option<S3> {
        let args = |port: u16| ["-H", "127.0.0.1", "-p", &port.to_string()].map(String::from).to_vec();
        Helper::start("moto_server", args, "CALLPIPE_REQUIRE_S3", "pip install 'moto[server]' to run the object storage tests").map(S3)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.0.port)
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap()
}

/// The object's bytes, read back from the S3 server with a client of its own.
async fn object(s3: &S3, bucket: &str, key: &str) -> Option<Vec<u8>> {
    use object_store::ObjectStore;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{}", s3.0.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("callpipe-test")
        .with_secret_access_key("callpipe-test-secret")
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    let found = store.get(&object_store::path::Path::from(key)).await.ok()?;
    Some(found.bytes().await.unwrap().to_vec())
}

/// A short fingerprint of some bytes, for assertions that do not print megabytes.
fn digest(bytes: Option<&[u8]>) -> Option<(usize, u64)> {
    bytes.map(|b| (b.len(), b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3))))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-s3-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The JSON lines of the event log.
fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

async fn recording_event(log: &Path, call: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(event) = events(log).into_iter().find(|e| e["event"] == "recording" && e["call_id"] == call && e["state"] == "finished")
        {
            return event;
        }
        assert!(Instant::now() < deadline, "no finished recording event for {call}: {:?}", events(log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call that sends two seconds of a tone and hangs up.
async fn record_a_call(server: &TestServer, path: &str) {
    let mut ws = server.call(path, 16000).await;
    for n in 0..100u32 {
        let frame: Vec<u8> = (0..320).flat_map(|i| ((((n * 320 + i) as f32 * 0.05).sin() * 8000.0) as i16).to_le_bytes()).collect();
        ws.send(Message::binary(frame)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {}
}

/// `[storage]` for the S3 server: its endpoint, and credentials it accepts.
fn storage_table(s3: &S3) -> String {
    format!(
        "[storage]\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\nallow_http = true\naccess_key_id = \"callpipe-test\"\nsecret_access_key = \"callpipe-test-secret\"\n",
        s3.0.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_reach_object_storage() {
    let Some(s3) = S3::start() else { return };
    assert_eq!(http().put(s3.url("recordings")).send().await.unwrap().status(), 200, "bucket created");

    let dir = scratch("calls");
    let log = dir.join("events.jsonl");
    let config = format!(
        r#"
[server]
stats_interval_ms = 0
shutdown_grace_ms = 300
[media]
threads = 1
[events]
log = "{log}"
{storage}
[[route]]
path = "/kept"
processors = [{{ type = "record", dir = "{dir}", template = "{{call_id}}.wav", upload = "s3://recordings/calls" }}]
[[route]]
path = "/moved"
processors = [{{ type = "record", dir = "{dir}", template = "{{call_id}}.wav", upload = "s3://recordings/calls/", keep_local = false }}]
[[route]]
path = "/room"
processors = [{{ type = "conference", name = "upl", record = "both", record_dir = "{dir}", upload = "s3://recordings/rooms/" }}]
[[route]]
path = "/nowhere"
processors = [{{ type = "record", dir = "{dir}", template = "{{call_id}}.wav", upload = "s3://no-such-bucket/" }}]
"#,
        log = log.display(),
        dir = dir.display(),
        storage = storage_table(&s3),
    );
    let server = TestServer::start(&config).await;

    // Kept: the object is byte-identical to the local file, and the event names it.
    record_a_call(&server, "/kept?call_id=kept-1").await;
    let event = recording_event(&log, "kept-1").await;
    assert_eq!(event["url"], "s3://recordings/calls/kept-1.wav", "{event}");
    let local = std::fs::read(dir.join("kept-1.wav")).unwrap();
    assert!(local.len() > 100_000, "two seconds of stereo 16 kHz");
    assert_eq!(digest(object(&s3, "recordings", "calls/kept-1.wav").await.as_deref()), digest(Some(&local)), "byte-identical");
    let ended = events(&log).into_iter().position(|e| e["event"] == "ended" && e["call_id"] == "kept-1");
    let recorded = events(&log).into_iter().position(|e| e["event"] == "recording" && e["call_id"] == "kept-1" && e["state"] == "finished");
    assert!(recorded < ended, "the recording event (with its URL) comes before `ended`");

    // Moved: stored, then the local file removed.
    record_a_call(&server, "/moved?call_id=moved-1").await;
    let event = recording_event(&log, "moved-1").await;
    assert_eq!((event["url"].as_str(), event["file_kept"].as_bool()), (Some("s3://recordings/calls/moved-1.wav"), Some(false)), "{event}");
    assert!(!dir.join("moved-1.wav").exists(), "the local file is removed once stored");
    let stored = object(&s3, "recordings", "calls/moved-1.wav").await.expect("stored");
    let wav = hound::WavReader::new(std::io::Cursor::new(stored)).unwrap();
    assert_eq!((wav.spec().channels, wav.spec().sample_rate), (2, 16000));
    assert!(wav.duration() >= 16000, "a complete, readable WAV of about two seconds");

    // A conference: each member's track and the mix are uploaded, and their events say where.
    tokio::join!(record_a_call(&server, "/room?call_id=member-a"), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        record_a_call(&server, "/room?call_id=member-b").await
    });
    for member in ["member-a", "member-b"] {
        let event = recording_event(&log, member).await;
        let url = event["url"].as_str().unwrap_or_else(|| panic!("{event}"));
        let key = url.strip_prefix("s3://recordings/").unwrap();
        let file = event["file"].as_str().unwrap();
        assert!(key.starts_with("rooms/") && file.ends_with(key.trim_start_matches("rooms/")), "{event}");
        assert_eq!(
            digest(object(&s3, "recordings", key).await.as_deref()),
            digest(Some(&std::fs::read(file).unwrap())),
            "{member}'s track"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        if let Some(e) = events(&log).into_iter().find(|e| e["event"] == "conference:ended") {
            break e;
        }
        assert!(Instant::now() < deadline, "no conference:ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mix = &ended["recording"];
    let key = mix["url"].as_str().unwrap_or_else(|| panic!("{ended}")).strip_prefix("s3://recordings/").unwrap().to_owned();
    let local = std::fs::read(mix["file"].as_str().unwrap()).unwrap();
    assert_eq!(digest(object(&s3, "recordings", &key).await.as_deref()), digest(Some(&local)), "the conference's mix");

    // A bucket that does not exist: the event says why, and the local file stays.
    record_a_call(&server, "/nowhere?call_id=lost-1").await;
    let event = recording_event(&log, "lost-1").await;
    assert!(event["url"].is_null(), "{event}");
    assert!(event["upload_error"].as_str().unwrap().contains("no-such-bucket"), "{event}");
    assert!(dir.join("lost-1.wav").exists(), "a failed upload keeps the file");
    server.stop().await;

    // A file larger than one PUT goes in parts, and arrives whole.
    let big = dir.join("big.bin");
    let content: Vec<u8> =
        (0..(callpipe::services::uploads::SINGLE_PUT_MAX as usize + 3 * 1024 * 1024 + 17)).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &content).unwrap();
    let registry = callpipe::processor::ProcessorRegistry::with_builtins();
    let storage = callpipe::config::Config::parse(&storage_table(&s3), &registry).unwrap().storage;
    let uploads = Uploads::new(storage);
    let target = UploadTarget::parse("s3://recordings/large", true).unwrap();
    let uploaded = uploads.upload(&big, &target).await.unwrap();
    assert_eq!((uploaded.url.as_str(), uploaded.kept), ("s3://recordings/large/big.bin", true));
    assert_eq!(
        digest(object(&s3, "recordings", "large/big.bin").await.as_deref()),
        digest(Some(&content)),
        "the multipart upload is byte-identical"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
