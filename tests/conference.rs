//! Conferences end to end: callers at 8, 16 and 24 kHz in one room hear each other and not
//! themselves, the control API mutes members and makes them listen-only, the recordings are
//! written, and full or mismatched conferences refuse calls with a clear close code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::tones::{Caller, join, level_db};
use common::{TestServer, close_code};
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let response = http().get(server.control_url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
}

async fn put(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let response = http().put(server.control_url(path)).body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-conference-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const TONES: [(&str, u32, f64); 3] = [("a8", 8000, 500.0), ("b16", 16000, 1100.0), ("c24", 24000, 1700.0)];

/// Waits until `f` holds, polling every 50 ms for up to 5 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which of the three tones each caller hears in its last half second: above -30 dBFS means
/// heard (the tones go in at -16 dBFS), below -50 dBFS means not.
fn heard_tones(callers: &[Caller]) -> Vec<Vec<Option<bool>>> {
    callers
        .iter()
        .zip(TONES)
        .map(|(caller, (_, rate, _))| {
            let window = caller.last(rate, 0.5);
            TONES
                .iter()
                .map(|(_, _, hz)| {
                    let db = level_db(&window, rate, *hz);
                    if db > -30.0 {
                        Some(true)
                    } else if db < -50.0 {
                        Some(false)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_at_three_rates_hear_the_others_and_the_api_mutes_and_makes_listeners() {
    let dir = temp_dir("e2e");
    let events = dir.join("events.jsonl");
    let config = format!(
        r#"
[server]
stats_interval_ms = 0
shutdown_grace_ms = 300
[media]
threads = 2
[events]
log = "{events}"
[[route]]
path = "/conf"
processors = [{{ type = "conference", name = "{{header:room}}", rate = 16000, record = "both", record_dir = "{dir}" }}]
"#,
        events = events.display(),
        dir = dir.display()
    );
    let server = TestServer::start(&config).await;
    let mut callers = Vec::new();
    for (id, rate, hz) in TONES {
        callers.push(Caller::start(join(&server, "/conf", id, rate, "room-1").await, rate, hz));
    }
    // Everyone hears the two others, never itself.
    let everyone = vec![
        vec![Some(false), Some(true), Some(true)],
        vec![Some(true), Some(false), Some(true)],
        vec![Some(true), Some(true), Some(false)],
    ];
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    eventually("each caller hears the two others", || heard_tones(&callers) == everyone).await;
    // Everyone speaks for 1.6 s before anything changes: the recordings are checked over
    // 0.5-1.5 s.
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed())).await;

    let (status, room) = get(&server, "/conferences/room-1").await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["rate"], 16000);
    let mut members: Vec<(String, u64)> = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["call_id"].as_str().unwrap().to_owned(), m["rate"].as_u64().unwrap()))
        .collect();
    members.sort();
    assert_eq!(members, [("a8".into(), 8000), ("b16".into(), 16000), ("c24".into(), 24000)]);
    let (_, list) = get(&server, "/conferences").await;
    assert_eq!(list["count"], 1);

    // Mute b16: a8 and c24 stop hearing it; b16 still hears them.
    assert_eq!(put(&server, "/conferences/room-1/members/b16", json!({ "action": "mute" })).await.0, 204);
    let muted = vec![
        vec![Some(false), Some(false), Some(true)],
        vec![Some(true), Some(false), Some(true)],
        vec![Some(true), Some(false), Some(false)],
    ];
    eventually("nobody hears the muted member, who still hears", || heard_tones(&callers) == muted).await;
    // Make c24 listen-only as well: a8 now hears nobody; the others still hear a8.
    assert_eq!(put(&server, "/conferences/room-1/members/c24", json!({ "action": "listen" })).await.0, 204);
    let listening = vec![
        vec![Some(false), Some(false), Some(false)],
        vec![Some(true), Some(false), Some(false)],
        vec![Some(true), Some(false), Some(false)],
    ];
    eventually("the listener is not heard either", || heard_tones(&callers) == listening).await;
    let (_, room) = get(&server, "/conferences/room-1").await;
    let c24 = room["members"].as_array().unwrap().iter().find(|m| m["call_id"] == "c24").unwrap();
    assert_eq!((c24["role"].as_str(), c24["muted"].as_bool()), (Some("listener"), Some(false)));
    assert_eq!(put(&server, "/conferences/room-1/members/b16", json!({ "action": "unmute" })).await.0, 204);
    assert_eq!(put(&server, "/conferences/room-1/members/c24", json!({ "action": "speak" })).await.0, 204);
    eventually("unmuted and speaking again", || heard_tones(&callers) == everyone).await;

    // The API's errors.
    let (status, problem) = put(&server, "/conferences/room-1/members/zz", json!({ "action": "mute" })).await;
    assert_eq!((status, problem["type"].as_str()), (404, Some("urn:callpipe:problem:member-not-found")));
    let (status, problem) = put(&server, "/conferences/room-9/members/a8", json!({ "action": "mute" })).await;
    assert_eq!((status, problem["type"].as_str()), (404, Some("urn:callpipe:problem:conference-not-found")));
    let (status, _) = put(&server, "/conferences/room-1/members/a8", json!({ "action": "deafen" })).await;
    assert_eq!(status, 400);

    for caller in callers {
        caller.hang_up().await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains("conference:ended") && text.matches("\"event\":\"ended\"").count() == 3 {
            break text;
        }
        assert!(Instant::now() < deadline, "no conference:ended in {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds = |kind: &str| events.iter().filter(|e| e["event"] == kind).cloned().collect::<Vec<_>>();
    assert_eq!(kinds("conference:started").len(), 1);
    assert_eq!(kinds("conference:joined").len(), 3);
    assert_eq!(kinds("conference:left").len(), 3);
    let ended = &kinds("conference:ended")[0];
    assert_eq!((ended["conference"].as_str(), ended["members_total"].as_u64()), (Some("room-1"), Some(3)));
    let mixed = ended["recording"]["file"].as_str().expect("the mixed recording");
    assert!(ended["recording"]["error"].is_null(), "{ended}");

    // The mixed file holds all three tones at the conference rate; each track holds its own.
    let mut reader = hound::WavReader::open(mixed).unwrap();
    assert_eq!((reader.spec().sample_rate, reader.spec().channels), (16000, 1));
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    assert!(samples.len() > 16000 * 2, "{} samples", samples.len());
    let second = &samples[8000..24000];
    for (_, _, hz) in TONES {
        assert!(level_db(second, 16000, hz) > -20.0, "{hz} Hz in the mix");
    }
    let tracks = kinds("recording");
    assert_eq!(tracks.len(), 3, "{tracks:?}");
    for track in &tracks {
        assert_eq!(track["conference"], "room-1");
        assert!(track["conference_offset_ms"].as_u64().unwrap() < 2000);
        let file = track["file"].as_str().unwrap();
        let own = TONES.iter().find(|(id, ..)| track["call_id"] == *id).unwrap().2;
        let samples: Vec<i16> = hound::WavReader::open(file).unwrap().samples::<i16>().map(Result::unwrap).collect();
        let second = &samples[8000..24000];
        for (_, _, hz) in TONES {
            let db = level_db(second, 16000, hz);
            assert!(if hz == own { db > -20.0 } else { db < -50.0 }, "{file}: {hz} Hz at {db:.1} dB");
        }
    }
    let (status, _) = get(&server, "/conferences/room-1").await;
    assert_eq!(status, 404, "the conference ended with its last member");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn full_and_mismatched_conferences_refuse_calls_with_a_close_code() {
    let config = r#"
[server]
stats_interval_ms = 0
shutdown_grace_ms = 300
[[route]]
path = "/small"
processors = [{ type = "conference", name = "{header:room}", max_members = 2 }]
[[route]]
path = "/narrow"
processors = [{ type = "conference", name = "{header:room}", max_members = 2, rate = 8000 }]
"#;
    let server = TestServer::start(config).await;
    let first = join(&server, "/small", "one", 16000, "tiny").await;
    let second = join(&server, "/small", "two", 8000, "tiny").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&server, "/conferences/tiny").await.1["members"].as_array().map_or(0, Vec::len) < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = join(&server, "/small", "three", 16000, "tiny").await;
    assert_eq!(close_code(&mut third).await, Some(1008), "full");
    let mut other = join(&server, "/narrow", "four", 16000, "tiny").await;
    assert_eq!(close_code(&mut other).await, Some(1011), "a route with other settings");
    let mut nameless = join(&server, "/small", "five", 16000, "bad name!").await;
    assert_eq!(close_code(&mut nameless).await, Some(1011), "a name that cannot be a file name");
    let metrics = http().get(server.control_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callpipe_conference_refusals_total 2"), "{metrics}");
    assert!(metrics.contains("callpipe_conference_members_active 2"), "{metrics}");
    assert!(metrics.contains("callpipe_conference_mixers 1"), "{metrics}");
    drop((first, second));
    server.stop().await;
}
