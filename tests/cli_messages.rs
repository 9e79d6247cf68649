//! What a newcomer meets first, through the binary: every mistake gets one clear message that
//! says what and where (and what would be right), and the exit status says whether the call
//! went well.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::scripted_bot;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn callpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callpipe")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-cli-messages-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_wav(path: &Path) {
    let spec = hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    (0..1600).for_each(|i| writer.write_sample(((i % 40) * 500 - 10_000) as i16).unwrap());
    writer.finalize().unwrap();
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_missing_configuration_file_is_named_and_its_cause_said_once() {
    let out = callpipe(&["serve", "--config", "/nonexistent/missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(text.contains("/nonexistent/missing.toml"), "{text}");
    assert_eq!(text.matches("No such file or directory").count(), 1, "the cause said once: {text}");
}

#[test]
fn a_toml_mistake_shows_its_place_once() {
    let dir = scratch("toml");
    let config = dir.join("callpipe.toml");
    std::fs::write(&config, "[server]\nlisten = 5\n").unwrap();
    let out = callpipe(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(text.contains("line 2, column 10"), "{text}");
    assert_eq!(text.matches("listen = 5").count(), 1, "the snippet shown once: {text}");
    assert_eq!(text.matches("expected a string").count(), 1, "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unknown_processor_type_lists_the_known_ones() {
    let dir = scratch("unknown");
    let config = dir.join("callpipe.toml");
    std::fs::write(&config, "[[route]]\npath = \"/x\"\nprocessors = [{ type = \"ecco\" }]\n").unwrap();
    let out = callpipe(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(text.contains("route /x: unknown processor type \"ecco\""), "{text}");
    for known in ["conference", "dtmf_detect", "echo", "fork", "play", "record", "resample"] {
        assert!(text.contains(known), "{known} missing from the known types: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_listen_address_that_is_not_ip_and_port_gets_an_example() {
    for (given, example) in [("localhost:8080", "127.0.0.1:8080"), ("8380", "127.0.0.1:8380"), ("127.0.0.1", "127.0.0.1:8080")] {
        let out = callpipe(&["serve", "--listen", given]);
        assert_eq!(out.status.code(), Some(2), "{given}");
        let text = stderr(&out);
        assert!(text.contains(&format!("'{given}'")), "names what was given: {text}");
        assert!(text.contains(&format!("expected IP:PORT, e.g. {example}")), "{text}");
    }
}

#[test]
fn a_call_where_nothing_listens_says_where_and_what_to_check() {
    let port = closed_port();
    let out = callpipe(&["call", &format!("ws://127.0.0.1:{port}/bot"), "--duration", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{text}");
    assert!(text.contains("nothing listens there"), "{text}");
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("frames sent"), "no report of a call that never was: {stdout}");
}

#[test]
fn a_missing_wav_to_play_is_named_once() {
    let out = callpipe(&["call", "ws://127.0.0.1:9/bot", "--play", "/nonexistent/prompt.wav"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(text.contains("/nonexistent/prompt.wav"), "{text}");
    assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
}

#[test]
fn a_play_file_that_is_missing_fails_the_configuration() {
    let dir = scratch("play-missing");
    let config = dir.join("callpipe.toml");
    std::fs::write(&config, "[[route]]\npath = \"/menu\"\nprocessors = [{ type = \"play\", file = \"prompts/menu.wav\" }]\n").unwrap();
    let out = callpipe(&["serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    // The relative path is the configuration file's directory's.
    let resolved = dir.join("prompts/menu.wav");
    assert!(text.contains("route /menu: play: cannot read WAV"), "{text}");
    assert!(text.contains(resolved.to_str().unwrap()), "names the file it looked for: {text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts `callpipe serve` and returns it with its standard error, read line by line.
fn serve(config: &Path) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0", "--control", "off"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    (child, rx)
}

/// The first line containing `needle` within 10 s, and the lines before it.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    Err(seen)
}

#[test]
fn relative_play_files_are_the_configuration_files_and_a_route_without_processors_is_said() {
    let dir = scratch("relative");
    std::fs::create_dir_all(dir.join("prompts")).unwrap();
    write_wav(&dir.join("prompts/hello.wav"));
    let config = dir.join("callpipe.toml");
    std::fs::write(
        &config,
        "[[route]]\npath = \"/hello\"\nprocessors = [{ type = \"play\", file = \"prompts/hello.wav\" }]\n\
         [[route]]\npath = \"/quiet\"\nprocessors = []\n",
    )
    .unwrap();
    // Served from another working directory: the file is still found, next to the
    // configuration.
    let (mut child, rx) = serve(&config);
    let warning = wait_for(&rx, "route has no processors");
    let serving = wait_for(&rx, "serving");
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.unwrap_or_else(|seen| panic!("no warning for the empty route: {seen:#?}"));
    assert!(warning.contains("/quiet"), "{warning}");
    serving.unwrap_or_else(|seen| panic!("did not serve: {seen:#?}"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A bot that answers the metadata by closing with `code`.
async fn closing_bot(code: u16) -> String {
    scripted_bot(move |mut ws| async move {
        let _ = ws.next().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = ws.send(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "test".into() }))).await;
        while ws.next().await.is_some() {}
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_closed_with_anything_but_1000_fails_unless_accepted() {
    let url = closing_bot(1011).await;
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || callpipe(&["call", &u, "--duration", "2"])).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("close code 1011"), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("closed with 1011"));
    let out =
        tokio::task::spawn_blocking(move || callpipe(&["call", &url, "--duration", "2", "--accept-close", "1000,1011"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let url = closing_bot(1000).await;
    let out = tokio::task::spawn_blocking(move || callpipe(&["call", &url, "--duration", "2"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// What a bot received from `callpipe call --dtmf 5 --dtmf-mode MODE`: the `websocket:dtmf`
/// events, and the audio's peak level (the call plays nothing else).
async fn dtmf_received(mode: &str) -> (usize, i16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bot = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let (mut events, mut peak) = (0, 0i16);
        let _ = ws.next().await; // the metadata
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) if text.contains("websocket:dtmf") => events += 1,
                Message::Binary(audio) => {
                    let loudest = audio.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]).saturating_abs()).max();
                    peak = peak.max(loudest.unwrap_or(0));
                }
                _ => {}
            }
        }
        (events, peak)
    });
    let url = format!("ws://{addr}/bot");
    let mode = mode.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        callpipe(&["call", &url, "--rate", "8000", "--duration", "1.2", "--dtmf", "5", "--dtmf-start", "0.2", "--dtmf-mode", &mode])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    bot.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_can_be_sent_as_events_tones_or_both() {
    let (events, peak) = dtmf_received("event").await;
    assert_eq!((events, peak), (1, 0), "event only: no tone in the audio");
    let (events, peak) = dtmf_received("inband").await;
    assert_eq!(events, 0, "inband only: no event");
    assert!(peak > 1000, "the tone is in the audio (peak {peak})");
    let (events, peak) = dtmf_received("both").await;
    assert_eq!(events, 1);
    assert!(peak > 1000, "the tone is in the audio (peak {peak})");
}
