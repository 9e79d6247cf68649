//! The voice features end to end, with the platform emulator on 127.0.0.1: speech barges in
//! on a prompt (a clear on the wire, `barge_in` and done events) and a cough does not; `input`
//! collects keys from a route and from the control API and times out; with the `tts` feature,
//! a `talk` is heard in the emulator's recording and speech interrupts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use callpipe::client::engine::{self, Progress, RunConfig, Target};
use callpipe::client::platform::{CallPlan, CallReport, Source};
use callpipe::protocol::{DtmfDigit, SampleRate};
use common::*;
use serde_json::Value;

/// Runs one emulated call with `plan` against `url`.
async fn one_call(url: String, plan: CallPlan) -> CallReport {
    tokio::task::spawn_blocking(move || {
        let target = Target::parse(&url).unwrap();
        let config =
            RunConfig { calls: 1, ramp: Duration::ZERO, threads: 1, connect_timeout: Duration::from_secs(5), max_message: 1 << 20 };
        engine::run(&target, Arc::new(plan), &config, Arc::new(Progress::default())).unwrap().reports.remove(0)
    })
    .await
    .unwrap()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("callpipe-voice-{}-{name}", std::process::id()))
}

/// The speech fixture at `rate` after `lead_ms` of silence, and the onset of the speech (its
/// first sample above -40 dBFS) in ms.
fn speech_after(rate: SampleRate, lead_ms: u64) -> (Vec<i16>, u64) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech-en-16k.wav");
    let speech = callpipe::audio::load_wav(&fixture, rate).unwrap();
    let first = speech.iter().position(|s| s.unsigned_abs() > 328).unwrap() as u64;
    let mut audio = vec![0i16; (lead_ms * u64::from(rate.hz()) / 1000) as usize];
    audio.extend_from_slice(&speech);
    (audio, lead_ms + first * 1000 / u64::from(rate.hz()))
}

/// A cough: 150 ms of loud noise with a fast attack and an exponential decay.
fn cough(rate: SampleRate, lead_ms: u64) -> Vec<i16> {
    let hz = rate.hz();
    let mut audio = vec![0i16; (lead_ms * u64::from(hz) / 1000) as usize];
    let mut x: u32 = 777;
    audio.extend((0..hz as usize * 150 / 1000).map(|i| {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let t = i as f64 / f64::from(hz);
        (f64::from((x >> 16) as i16) / 32768.0 * 12_000.0 * (t / 0.005).min(1.0) * (-t / 0.05).exp()) as i16
    }));
    audio
}

/// A 2 s, 440 Hz prompt at -12 dBFS, as a WAV file.
fn prompt() -> PathBuf {
    let path = temp("prompt.wav");
    let spec = hound::WavSpec { channels: 1, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..32_000 {
        writer.write_sample((8_000.0 * (std::f64::consts::TAU * 440.0 * f64::from(i) / 16_000.0).sin()) as i16).unwrap();
    }
    writer.finalize().unwrap();
    path
}

/// The events of `call` in the log at `log`, waiting up to 5 s for one named `until`.
async fn events(log: &Path, call: &str, until: &str) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let events: Vec<Value> = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|e| e["call_id"] == call).collect();
        if events.iter().any(|e| e["event"] == until) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {until} event for {call} in {}", std::fs::read_to_string(log).unwrap_or_default());
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

fn plan(rate: SampleRate, audio: Vec<i16>, seconds: u64) -> CallPlan {
    CallPlan {
        source: Source::Samples(audio.into()),
        linger: Duration::from_millis(300),
        ..CallPlan::new(rate, Duration::from_secs(seconds))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_barges_in_on_a_prompt_and_a_cough_does_not() {
    let log = temp("barge.jsonl");
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "[server]\nstats_interval_ms = 0\n[events]\nlog = \"{}\"\n[[route]]\npath = \"/barge\"\n\
         processors = [{{ type = \"vad\" }}, {{ type = \"play\", file = \"{}\", loop = 0, barge_in = \"speech\" }}]\n",
        log.display(),
        prompt().display()
    );
    let server = TestServer::start(&config).await;
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let (speech, onset) = speech_after(rate, 1500);
        let call = format!("speech-{}", rate.hz());
        let report = one_call(server.url(&format!("/barge?call_id={call}")), plan(rate, speech, 6)).await;
        assert_eq!(report.clears_at_ms.len(), 1, "{report:?}");
        let latency = report.clears_at_ms[0] - onset as f64;
        assert!((40.0..=400.0).contains(&latency), "{rate:?}: the clear came {latency} ms after the speech's onset");
        let events = events(&log, &call, "barge_in").await;
        let barge = named(&events, "barge_in")[0];
        assert_eq!((barge["interrupted"].as_str(), barge["cause"].as_str()), (Some("play"), Some("speech")), "{barge}");
        assert!(barge["played_ms"].as_u64().unwrap() >= 1400, "{barge}");
        assert_eq!(named(&events, "stream:done")[0]["reason"], "barge_in");
        assert!(!named(&events, "speech:started").is_empty());

        let call = format!("cough-{}", rate.hz());
        let report = one_call(server.url(&format!("/barge?call_id={call}")), plan(rate, cough(rate, 1000), 3)).await;
        assert_eq!(report.clears, 0, "{rate:?}: a cough is not speech: {report:?}");
        assert!(report.frames_played > 100, "the prompt played on");
    }
    server.stop().await;
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["event"] == "barge_in")
        .collect();
    assert_eq!(events.len(), 2, "one barge-in per speech call, none for the coughs: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_collects_keys_and_times_out_from_a_route_and_the_control_api() {
    let log = temp("input.jsonl");
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "[server]\nstats_interval_ms = 0\n[events]\nlog = \"{}\"\n\
         [[route]]\npath = \"/input\"\nprocessors = [{{ type = \"input\", max_digits = 10, submit_on_hash = true, time_out = 1.5 }}]\n\
         [[route]]\npath = \"/echo\"\nprocessors = [{{ type = \"echo\" }}]\n",
        log.display()
    );
    let server = TestServer::start(&config).await;
    let keys = |text: &str, from_ms: u64| -> Vec<(Duration, DtmfDigit)> {
        text.chars()
            .enumerate()
            .map(|(i, c)| (Duration::from_millis(from_ms + 300 * i as u64), DtmfDigit::from_key(&c.to_string()).unwrap()))
            .collect()
    };
    let rate = SampleRate::Hz8000;
    let base = CallPlan { linger: Duration::from_millis(300), ..CallPlan::new(rate, Duration::from_secs(4)) };
    // "1234#": the hash submits.
    one_call(server.url("/input?call_id=hash"), CallPlan { dtmf: keys("1234#", 300), ..base.clone() }).await;
    let input = named(&events(&log, "hash", "input").await, "input")[0].clone();
    assert_eq!(input["dtmf"], serde_json::json!({ "digits": "1234", "timed_out": false }));
    // "12" and nothing more: timed out 1.5 s after the 2.
    one_call(server.url("/input?call_id=slow"), CallPlan { dtmf: keys("12", 300), ..base.clone() }).await;
    let input = named(&events(&log, "slow", "input").await, "input")[0].clone();
    assert_eq!(input["dtmf"], serde_json::json!({ "digits": "12", "timed_out": true }));

    // The control API starts a collection mid-call.
    let url = server.url("/echo?call_id=api");
    let call = tokio::spawn(one_call(url, CallPlan { dtmf: keys("9876", 1500), ..base.clone() }));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let put =
        |body: &'static str| http.put(server.control_url("/calls/api/input")).header("content-type", "application/json").body(body).send();
    let bad = put(r#"{"max_digits": 30}"#).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("max_digits must be between 1 and 20"));
    let speech = put(r#"{"type": ["speech"], "dtmf": {"maxDigits": 2}}"#).await.unwrap();
    assert_eq!(speech.status(), 400);
    assert!(speech.text().await.unwrap().contains("`type` must be ["));
    // The Voice API's base path serves the same request.
    let ok = http
        .put(server.control_url("/v1/calls/api/input"))
        .header("content-type", "application/json")
        .body(r#"{"type": ["dtmf"], "dtmf": {"maxDigits": 3}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    call.await.unwrap();
    let input = named(&events(&log, "api", "input").await, "input")[0].clone();
    assert_eq!(input["dtmf"], serde_json::json!({ "digits": "987", "timed_out": false }));
    server.stop().await;
}

#[cfg(not(feature = "tts"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tts_talk_is_refused_with_how_to_rebuild() {
    let config = "[[route]]\npath = \"/talk\"\nprocessors = [{ type = \"talk\", text = \"Hello\" }]\n";
    let error = callpipe::config::Config::parse(config, &callpipe::processor::ProcessorRegistry::with_builtins()).unwrap_err().to_string();
    assert!(error.contains("--features tts"), "{error}");
    let server = TestServer::start("[[route]]\npath = \"/echo\"\nprocessors = [{ type = \"echo\" }]\n").await;
    let call = tokio::spawn(one_call(server.url("/echo?call_id=t"), CallPlan::new(SampleRate::Hz8000, Duration::from_secs(2))));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http.put(server.control_url("/calls/t/talk")).body(r#"{"text":"hello"}"#).send().await.unwrap();
    assert_eq!(response.status(), 501);
    assert!(response.text().await.unwrap().contains("--features tts"));
    call.await.unwrap();
    server.stop().await;
}

#[cfg(feature = "tts")]
mod tts {
    use super::*;

    /// The RMS of `samples` in dBFS.
    fn level_db(samples: &[i16]) -> f64 {
        let power = samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
        10.0 * (power.max(1e-3) / (32768.0f64 * 32768.0)).log10()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_talk_from_the_control_api_is_heard_after_the_request_and_not_before() {
        let server =
            TestServer::start("[server]\nstats_interval_ms = 0\n[[route]]\npath = \"/quiet\"\nprocessors = [{ type = \"vad\" }]\n").await;
        let rate = SampleRate::Hz16000;
        let record = temp("talk.wav");
        let plan = CallPlan { record: Some(record.clone()), ..CallPlan::new(rate, Duration::from_secs(5)) };
        let call = tokio::spawn(one_call(server.url("/quiet?call_id=talk"), plan));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let body = r#"{"text": "Hello, this is a test of speech.", "language": "en-GB", "level": 0}"#;
        let response = http.put(server.control_url("/calls/talk/talk")).body(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let json: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(json["talk_id"].as_u64().is_some(), "{json}");
        let bad = http.put(server.control_url("/calls/talk/talk")).body(r#"{"text": "x", "language": "xx-QQ"}"#).send().await.unwrap();
        assert_eq!(bad.status(), 400);
        let report = call.await.unwrap();
        assert_eq!(report.close_code, Some(1000));
        server.stop().await;
        let mut reader = hound::WavReader::open(&record).unwrap();
        let played: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).skip(1).step_by(2).collect();
        let second = rate.hz() as usize;
        assert!(level_db(&played[..second]) < -80.0, "silence before the request: {} dB", level_db(&played[..second]));
        assert!(level_db(&played[2 * second..4 * second]) > -35.0, "speech after it: {} dB", level_db(&played[2 * second..4 * second]));
        let _ = std::fs::remove_file(record);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn speech_interrupts_a_talk() {
        let log = temp("talk-barge.jsonl");
        let _ = std::fs::remove_file(&log);
        let config = format!(
            "[server]\nstats_interval_ms = 0\n[events]\nlog = \"{}\"\n[[route]]\npath = \"/bot\"\n\
             processors = [{{ type = \"vad\" }}, {{ type = \"talk\", language = \"en-GB\", barge_in = \"speech\", \
             text = \"Thank you for calling. All of our agents are busy at the moment. Please stay on the line and we will be with you shortly.\" }}]\n",
            log.display()
        );
        let server = TestServer::start(&config).await;
        let rate = SampleRate::Hz16000;
        let (speech, onset) = speech_after(rate, 1500);
        let report = one_call(server.url("/bot?call_id=bot"), plan(rate, speech, 6)).await;
        assert_eq!(report.clears_at_ms.len(), 1, "{report:?}");
        let latency = report.clears_at_ms[0] - onset as f64;
        assert!((40.0..=400.0).contains(&latency), "the clear came {latency} ms after the onset");
        let events = events(&log, "bot", "barge_in").await;
        assert_eq!(named(&events, "talk:done")[0]["reason"], "barge_in");
        assert_eq!(named(&events, "barge_in")[0]["interrupted"], "talk");
        server.stop().await;
    }
}
