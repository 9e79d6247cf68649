//! Measures callpipe's text to speech (the `tts` feature, libespeak-ng): the time from a
//! talk's request to its first audio, the real-time factor of synthesis, and how many talks
//! played at once at real time one synthesis thread keeps fed (no frame starved of speech after
//! its first audio).
//!
//! ```text
//! cargo run --release --features tts --example tts_bench
//! ```

use std::time::{Duration, Instant};

use callpipe::audio::Blend;
use callpipe::protocol::SampleRate;
use callpipe::services::tts::{TalkAudio, TalkRequest, Tts};

const SENTENCE: &str = "Thank you for calling, your call is important to us.";
const ANNOUNCEMENT: &str = "Thank you for calling. All of our agents are busy at the moment. \
    Please stay on the line, and we will be with you as soon as we can. \
    You can also reach us on our website, where most questions are answered in minutes.";

fn request(text: &str, rate: SampleRate) -> TalkRequest {
    TalkRequest { text: text.into(), language: "en-GB".into(), voice: None, rate, queued_at: Instant::now() }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let tts = Tts;
    tts.check("warm up", "en-GB", None).unwrap_or_else(|e| panic!("{e}"));
    println!("# text to speech: cargo run --release --features tts --example tts_bench");
    println!();
    println!("| rate | time to first audio p50 / p90 / max (ms), 30 talks one at a time |");
    println!("|---|---|");
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
        let mut firsts = Vec::new();
        for _ in 0..30 {
            let started = Instant::now();
            let shared = tts.speak(request(SENTENCE, rate)).unwrap_or_else(|e| panic!("{e}"));
            while shared.published() == 0 && !shared.is_complete() {
                std::thread::sleep(Duration::from_micros(200));
            }
            firsts.push(started.elapsed().as_secs_f64() * 1000.0);
            while !shared.is_complete() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        firsts.sort_by(f64::total_cmp);
        println!(
            "| {} Hz | {:.1} / {:.1} / {:.1} |",
            rate.hz(),
            percentile(&firsts, 0.5),
            percentile(&firsts, 0.9),
            firsts[firsts.len() - 1]
        );
    }
    let stats = tts.stats();
    println!();
    println!(
        "real-time factor: {:.4} ({:.1} s of speech in {:.2} s of synthesis: one thread keeps up with {:.0} talks at once, on average)",
        stats.synth_seconds / stats.audio_seconds,
        stats.audio_seconds,
        stats.synth_seconds,
        stats.audio_seconds / stats.synth_seconds
    );
    println!();
    println!("| talks started at once (16 kHz) | first audio p50 / max (ms) | frames starved after first audio | wall s |");
    println!("|---|---|---|---|");
    for talks in [1usize, 10, 20, 40, 80] {
        let rate = SampleRate::Hz16000;
        let start = Instant::now();
        let mut players: Vec<(TalkAudio, Option<f64>, bool)> = (0..talks)
            .map(|_| (TalkAudio::new(tts.speak(request(ANNOUNCEMENT, rate)).unwrap_or_else(|e| panic!("{e}")), 1, 1.0), None, false))
            .collect();
        let mut frame = vec![0i16; rate.frame_samples()];
        let mut tick = start;
        while players.iter().any(|p| !p.2) {
            tick += Duration::from_millis(20);
            std::thread::sleep(tick.saturating_duration_since(Instant::now()));
            for (audio, first, done) in players.iter_mut().filter(|p| !p.2) {
                let played = audio.play_into(&mut frame, Blend::Replace);
                if played.samples > 0 && first.is_none() {
                    *first = Some(start.elapsed().as_secs_f64() * 1000.0);
                }
                *done = played.ended;
            }
        }
        let mut firsts: Vec<f64> = players.iter().filter_map(|p| p.1).collect();
        firsts.sort_by(f64::total_cmp);
        let starved: u64 = players.iter().map(|p| p.0.starved()).sum::<u64>() / rate.frame_samples() as u64;
        println!(
            "| {talks} | {:.0} / {:.0} | {starved} | {:.1} |",
            percentile(&firsts, 0.5),
            firsts[firsts.len() - 1],
            start.elapsed().as_secs_f64()
        );
    }
}
