//! The caller's timeline end to end, through the CLI as a user runs it: `callpipe call` plays a
//! WAV file over an impaired network (jitter, stalls) or with a pause in its sending, against a
//! server that records the caller; the recording must hold exactly what was sent, sample for
//! sample, with silence only where the platform paused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestServer;

const RATE: u32 = 8000;
const FRAME: usize = RATE as usize / 50;

/// Noise that never repeats within a call and has no zero sample, so that a frame lost, doubled
/// or moved, or a silent frame put in, cannot go unnoticed.
fn noise(samples: usize, seed: u64) -> Vec<i16> {
    let mut x = seed | 1;
    (0..samples)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = (x % 20_000) as i16 - 10_000;
            if s == 0 { 1 } else { s }
        })
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-late-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server recording the caller of `/rec` into `dir`.
async fn record_server(dir: &Path) -> TestServer {
    let config = format!(
        "[server]\nstats_interval_ms = 0\n[media]\nthreads = 2\n[[route]]\npath = \"/rec\"\nprocessors = [{{ type = \"record\", dir = \"{}\", channels = \"caller\" }}]\n",
        dir.join("recordings").display()
    );
    TestServer::start(&config).await
}

fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec { channels: 1, sample_rate: RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        writer.write_sample(*s).unwrap();
    }
    writer.finalize().unwrap();
}

/// Runs `callpipe call` playing `wav` with `args`; asserts it succeeded.
async fn call(server: &TestServer, wav: &Path, seconds: f64, args: &[&str]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callpipe"));
    command.args(["call", &server.url("/rec"), "--rate", "8000", "--play"]).arg(wav);
    command.args(["--duration", &seconds.to_string()]).args(args);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(
        output.status.success(),
        "callpipe call {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The one finished recording in `dir/recordings`.
async fn recording(server: &TestServer, dir: &Path) -> Vec<i16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.handle.stats.calls_active.load(Ordering::Relaxed) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut last = None;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir.join("recordings")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        if let Ok(reader) = hound::WavReader::open(&files[0]) {
            let len = std::fs::metadata(&files[0]).unwrap().len();
            if len == 44 + u64::from(reader.duration()) * 2 && last == Some(len) {
                return reader.into_samples::<i16>().map(Result::unwrap).collect();
            }
            last = Some(len);
        }
        assert!(tokio::time::Instant::now() < deadline, "no finalized recording");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where `got` first differs from `want`, for a readable failure.
fn first_difference(got: &[i16], want: &[i16]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!("first difference at sample {i} (frame {}): {} != {}", i / FRAME, got[i], want[i]),
        None => format!("lengths {} and {}", got.len(), want.len()),
    }
}

async fn check_impaired(name: &str, seed: u64, args: &[&str]) {
    let dir = scratch(name);
    let server = record_server(&dir).await;
    let sent = noise(FRAME * 200, seed);
    let wav = dir.join("caller.wav");
    write_wav(&wav, &sent);
    call(&server, &wav, 4.0, args).await;
    let recorded = recording(&server, &dir).await;
    assert!(recorded == sent, "{name}: the recording is not what was sent: {}", first_difference(&recorded, &sent));
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_ms_of_jitter_loses_nothing_and_inserts_nothing() {
    check_impaired("jitter", 11, &["--jitter-ms", "60"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_of_300_ms_lose_nothing_and_insert_nothing() {
    check_impaired("stalls", 12, &["--jitter-ms", "20", "--stall-every", "1.5", "--stall-ms", "300"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_that_holds_the_end_of_the_stream_inserts_nothing() {
    // The call's last 100 ms (frames sent at 3.90..=3.98 s) stalled for 300 ms: they come
    // together, still late, and nothing newer follows to show the stall up.
    check_impaired("end-stall", 15, &["--stall-every", "3.9", "--stall-ms", "300"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_of_500_ms_becomes_500_ms_of_silence_and_nothing_else() {
    let dir = scratch("pause");
    let server = record_server(&dir).await;
    let sent = noise(FRAME * 150, 13);
    let wav = dir.join("caller.wav");
    write_wav(&wav, &sent);
    call(&server, &wav, 3.0, &["--pause-at", "1", "--pause-ms", "500"]).await;
    let recorded = recording(&server, &dir).await;
    let at = RATE as usize;
    let mut want = sent[..at].to_vec();
    want.extend(std::iter::repeat_n(0, RATE as usize / 2));
    want.extend(&sent[at..]);
    assert!(recorded == want, "the pause is 500 ms of silence between the two halves: {}", first_difference(&recorded, &want));
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_of_3_s_is_taken_for_a_pause_and_its_backlog_still_recorded_whole() {
    // Longer than `max_input_wait_ms` (1 s): silence goes in while it lasts, and its 3 s of
    // backlog, more than the recorder's 2 s ring, then goes through at once.
    let dir = scratch("long-stall");
    let server = record_server(&dir).await;
    let sent = noise(FRAME * 400, 14);
    let wav = dir.join("caller.wav");
    write_wav(&wav, &sent);
    call(&server, &wav, 8.0, &["--stall-every", "4", "--stall-ms", "3000"]).await;
    let recorded = recording(&server, &dir).await;
    let first = recorded.iter().zip(&sent).position(|(a, b)| a != b).unwrap_or(sent.len());
    let at = first / FRAME * FRAME;
    // After the last frame the call waits for more (a pause, again) until it closes: any
    // silence may follow.
    let fits = |silence: usize| {
        let end = sent.len() + silence;
        recorded.len() >= end
            && recorded[..at] == sent[..at]
            && recorded[at..at + silence].iter().all(|&s| s == 0)
            && recorded[at + silence..end] == sent[at..]
            && recorded[end..].iter().all(|&s| s == 0)
    };
    let silence = (125..=175).map(|frames| frames * FRAME).find(|&silence| fits(silence));
    assert!(
        silence.is_some(),
        "every frame sent, with 2.5-3.5 s of silence before the backlog: first difference at sample {first} of {} recorded, {} sent",
        recorded.len(),
        sent.len()
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
