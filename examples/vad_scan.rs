//! Runs the `vad` processor over WAV files, as a call would, and prints what it decided: one
//! JSON line per file with, for every 16 ms frame, the detector's score (`probs`), whether the
//! frame counted as voiced (`voiced`: the score and the level floor; the pitch and music checks
//! that gate `speech:started`, and the higher bar that keeps speech going over music, are not
//! part of it), its periodicity (`periodicity`, 0 to 1), whether it held a note and was voiced
//! (`steady`) and whether music was held to be playing after it (`music`), whether it was a new
//! note the network did not call voiced (`new_note`), its level (`level_db`, dB of its mean
//! square in sample units, about dBFS + 90.3); `delay_ms`, the conversion's delay that the
//! events' times take out and the frames' do not; the speech segments its `speech:started` / `speech:stopped` events
//! marked (`segments`), when each `speech:started` was emitted (`started_at`, ms of call time);
//! and its cost per 20 ms frame.
//! `benches/vad_accuracy.sh` compares these with other detectors on a labelled corpus.
//!
//! ```text
//! cargo run --release --example vad_scan -- [--threshold 0.5] [--min-speech-ms 100] [--min-silence-ms 300] FILE.wav...
//! ```
//!
//! Files at 8, 16 or 24 kHz run at their own rate; others are resampled to 16 kHz.

use std::time::Instant;

use callpipe::call::Speech;
use callpipe::processor::testkit::Harness;
use callpipe::processor::{Event, Vad, VadConfig};
use callpipe::protocol::SampleRate;

fn main() {
    let mut config = VadConfig::default();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> f64 {
            let text = args.next().unwrap_or_else(|| fail(&format!("{name} needs a value")));
            text.parse().unwrap_or_else(|_| fail(&format!("{name}: {text:?} is not a number")))
        };
        match arg.as_str() {
            "--threshold" => config.sensitivity = 1.0 - value("--threshold") as f32,
            "--min-speech-ms" => config.min_speech_ms = value("--min-speech-ms") as u32,
            "--min-silence-ms" => config.min_silence_ms = value("--min-silence-ms") as u32,
            "-h" | "--help" => {
                println!("usage: vad_scan [--threshold T] [--min-speech-ms N] [--min-silence-ms N] FILE.wav...");
                return;
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        fail("no WAV file given (see --help)");
    }
    for file in files {
        let hz = hound::WavReader::open(&file).unwrap_or_else(|e| fail(&format!("{file}: {e}"))).spec().sample_rate;
        let rate = SampleRate::from_hz(hz).unwrap_or(SampleRate::Hz16000);
        let audio = callpipe::audio::load_wav(std::path::Path::new(&file), rate).unwrap_or_else(|e| fail(&format!("{file}: {e}")));
        let frame = rate.frame_samples();
        let frames = audio.len().div_ceil(frame);
        let mut padded = audio;
        padded.resize(frames * frame, 0);
        let mut vad = Vad::new(config).unwrap_or_else(|e| fail(&e.to_string()));
        vad.log_scores(frames * 2 + 2);
        let mut h = Harness::new(vad, rate).unwrap_or_else(|e| fail(&e.to_string()));
        let started = Instant::now();
        h.run(&padded);
        let elapsed = started.elapsed();
        h.finish();
        let segments: Vec<[u64; 2]> = h
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Speech(Speech::Stopped { start_ms, duration_ms }) => Some([*start_ms, start_ms + duration_ms]),
                _ => None,
            })
            .collect();
        // When each `speech:started` was emitted: the end of its pass, in call time (ms).
        let emitted: Vec<u64> =
            h.events.iter().filter_map(|(pass, e)| matches!(e, Event::Speech(Speech::Started { .. })).then_some((pass + 1) * 20)).collect();
        let log = h.processor.score_log();
        let round = |x: f32| (f64::from(x) * 1000.0).round() / 1000.0;
        let probs: Vec<f64> = log.iter().map(|f| round(f.score)).collect();
        let voiced: Vec<u8> = log.iter().map(|f| u8::from(f.voiced)).collect();
        let periodicity: Vec<f64> = log.iter().map(|f| round(f.periodicity)).collect();
        let steady: Vec<u8> = log.iter().map(|f| u8::from(f.steady)).collect();
        let music: Vec<u8> = log.iter().map(|f| u8::from(f.music)).collect();
        let new_note: Vec<u8> = log.iter().map(|f| u8::from(f.new_note)).collect();
        let level: Vec<f64> = log.iter().map(|f| (f64::from(f.level_db) * 100.0).round() / 100.0).collect();
        let line = serde_json::json!({
            "file": file,
            "rate": rate.hz(),
            "hop_ms": 16,
            "probs": probs,
            "voiced": voiced,
            "periodicity": periodicity,
            "steady": steady,
            "music": music,
            "new_note": new_note,
            "level_db": level,
            "delay_ms": h.processor.delay_ms(),
            "segments": segments,
            "started_at": emitted,
            "us_per_frame": elapsed.as_secs_f64() * 1e6 / frames.max(1) as f64,
        });
        println!("{line}");
    }
}

fn fail(message: &str) -> ! {
    eprintln!("vad_scan: {message}");
    std::process::exit(2)
}
