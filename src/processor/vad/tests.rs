//! The `vad`'s tests: speech at every rate, over a hum and over music, coughs, noise.

use super::*;
use crate::processor::testkit::Harness;
use crate::protocol::SampleRate;

/// A cough: 150 ms of loud noise with a fast attack and an exponential decay.
pub(crate) fn cough(hz: u32) -> Vec<i16> {
    let n = hz as usize * 150 / 1000;
    let mut x: u32 = 777;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((x >> 16) as i16) / 32768.0;
            let t = i as f64 / f64::from(hz);
            (noise * 12_000.0 * (t / 0.005).min(1.0) * (-t / 0.05).exp()) as i16
        })
        .collect()
}

fn run(config: VadConfig, rate: SampleRate, audio: &[i16]) -> Harness<Vad> {
    let mut h = Harness::new(Vad::new(config).unwrap(), rate).unwrap();
    let frame = rate.frame_samples();
    let padded: Vec<i16> = audio.iter().copied().chain(std::iter::repeat(0)).take(audio.len().div_ceil(frame) * frame).collect();
    h.run(&padded);
    h
}

fn speech_events(h: &Harness<Vad>) -> Vec<Speech> {
    h.events.iter().filter_map(|(_, e)| if let Event::Speech(s) = e { Some(*s) } else { None }).collect()
}

/// The speech fixture (espeak-ng, en-GB, 4.1 s, 16 kHz) at `rate`, and its first and last
/// sample above -40 dBFS, in ms.
pub(crate) fn speech(rate: SampleRate) -> (Vec<i16>, u64, u64) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech-en-16k.wav");
    let audio = crate::audio::load_wav(&path, rate).unwrap();
    let loud = |s: &i16| s.unsigned_abs() > 328;
    let first = audio.iter().position(loud).unwrap() as u64 * 1000 / u64::from(rate.hz());
    let last = audio.iter().rposition(loud).unwrap() as u64 * 1000 / u64::from(rate.hz());
    (audio, first, last)
}

#[test]
fn speech_starts_near_its_onset_and_stops_after_it_at_every_rate() {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
        let (audio, first, last) = speech(rate);
        let lead = vec![0i16; rate.hz() as usize];
        let mut call = lead.clone();
        call.extend_from_slice(&audio);
        call.extend_from_slice(&lead);
        let h = run(VadConfig::default(), rate, &call);
        let events = speech_events(&h);
        let (onset, end) = (1000 + first, 1000 + last);
        let Some(Speech::Started { start_ms }) = events.first().copied() else { panic!("{rate:?}: no speech in {events:?}") };
        assert!(start_ms.abs_diff(onset) <= 100, "{rate:?}: started at {start_ms} ms, the speech at {onset} ms");
        let Some(Speech::Stopped { start_ms, duration_ms }) = events.last().copied() else { panic!("{rate:?}: {events:?}") };
        assert!(
            (start_ms + duration_ms).abs_diff(end) <= 250,
            "{rate:?}: stopped at {} ms, the speech at {end} ms",
            start_ms + duration_ms
        );
        assert!(events.len() <= 6, "{rate:?}: a sentence is one or a few utterances: {events:?}");
        // The stop event comes min_silence_ms after the speech's end, at the latest a pass later.
        let stopped_pass = h.events.iter().rev().find(|(_, e)| matches!(e, Event::Speech(Speech::Stopped { .. }))).unwrap().0;
        assert!(stopped_pass * 20 >= start_ms + duration_ms + 300 - 20, "{rate:?}");
    }
}

#[test]
fn speech_over_a_steady_hum_starts_within_200_ms_of_its_onset() {
    // A 120 Hz hum with its harmonics at about -32 dBFS, from a second before the speech to
    // its end: periodic and held, but no voice, so it must not hold speech back as music does
    // (only the wait after held tones, 48 ms at most).
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let (audio, first, _) = speech(rate);
        let hz = f64::from(rate.hz());
        let mut call = vec![0i16; rate.hz() as usize];
        call.extend_from_slice(&audio);
        for (i, s) in call.iter_mut().enumerate() {
            let phase = std::f64::consts::TAU * 120.0 * i as f64 / hz;
            let hum = 500.0 * (phase.sin() + 0.8 * (2.0 * phase).sin() + 0.6 * (3.0 * phase).sin() + 0.4 * (5.0 * phase).sin());
            *s = (f64::from(*s) + hum).clamp(-32768.0, 32767.0) as i16;
        }
        let h = run(VadConfig::default(), rate, &call);
        let events = speech_events(&h);
        let onset = 1000 + first;
        let Some(Speech::Started { start_ms }) = events.first().copied() else { panic!("{rate:?}: no speech in {events:?}") };
        assert!(start_ms.abs_diff(onset) <= 100, "{rate:?}: started at {start_ms} ms, the speech at {onset} ms");
        let started_pass = h.events.iter().find(|(_, e)| matches!(e, Event::Speech(Speech::Started { .. }))).unwrap().0;
        assert!(started_pass * 20 <= onset + 200, "{rate:?}: speech:started at {} ms, the speech at {onset} ms", started_pass * 20);
    }
}

/// Music at `rate`, about -26 dBFS: chords of three harmonic notes changing every 1.2 s, a
/// tune of 300 ms notes with vibrato over them, a brushed beat every 400 ms, and a rest of
/// 0.6 s every 6 s.
fn music(rate: SampleRate, seconds: f64) -> Vec<i16> {
    const CHORDS: [[f64; 3]; 4] = [[262.0, 330.0, 392.0], [220.0, 262.0, 330.0], [175.0, 220.0, 262.0], [196.0, 247.0, 294.0]];
    const TUNE: [f64; 8] = [523.0, 587.0, 659.0, 587.0, 784.0, 659.0, 523.0, 494.0];
    let hz = f64::from(rate.hz());
    let harmonics = |phase: f64| phase.sin() + 0.5 * (2.0 * phase).sin() + 0.3 * (3.0 * phase).sin() + 0.2 * (4.0 * phase).sin();
    let mut noise: u32 = 12_345;
    let mut tune_phase = 0.0f64;
    (0..(seconds * hz) as usize)
        .map(|i| {
            let t = i as f64 / hz;
            if t % 6.0 >= 5.4 {
                return 0;
            }
            let chord = CHORDS[(t / 1.2) as usize % CHORDS.len()];
            let attack = ((t % 1.2) / 0.02).min(1.0) * (-(t % 1.2) / 2.0).exp();
            let pad: f64 = chord.iter().map(|f| harmonics(std::f64::consts::TAU * f * t)).sum::<f64>() * attack;
            let note = TUNE[(t / 0.3) as usize % TUNE.len()];
            tune_phase += std::f64::consts::TAU * note * (1.0 + 0.01 * (std::f64::consts::TAU * 5.5 * t).sin()) / hz;
            let tune = harmonics(tune_phase) * ((t % 0.3) / 0.01).min(1.0);
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let brush = f64::from((noise >> 16) as i16) / 32768.0 * (-(t % 0.4) / 0.03).exp();
            ((pad * 500.0 + tune * 700.0 + brush * 2500.0).clamp(-32768.0, 32767.0)) as i16
        })
        .collect()
}

#[test]
fn music_does_not_start_speech_and_a_voice_over_it_does() {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let tune = music(rate, 20.0);
        let h = run(VadConfig::default(), rate, &tune);
        assert!(speech_events(&h).is_empty(), "{rate:?}: music alone started speech: {:?}", speech_events(&h));
        // The speech 10 dB or so over the music, 8 s in.
        let (audio, first, _) = speech(rate);
        let mut call = music(rate, 14.0);
        let at = 8 * rate.hz() as usize;
        for (s, v) in call[at..].iter_mut().zip(&audio) {
            *s = (i32::from(*s) / 3 + i32::from(*v)).clamp(-32768, 32767) as i16;
        }
        let h = run(VadConfig::default(), rate, &call);
        let events = speech_events(&h);
        let onset = 8000 + first;
        let Some(Speech::Started { start_ms }) = events.first().copied() else { panic!("{rate:?}: no speech over music in {events:?}") };
        assert!(start_ms.abs_diff(onset) <= 150, "{rate:?}: started at {start_ms} ms over music, the speech at {onset} ms");
    }
}

#[test]
fn speech_over_music_stops_when_the_voice_does_while_the_music_plays_on() {
    // The speech 12.5 s into the music, ending about 0.8 s before the music's next rest: the
    // music alone must not keep the speech going to the rest.
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let (audio, _, last) = speech(rate);
        let mut call = music(rate, 20.0);
        let at = 12_500 * rate.hz() as usize / 1000;
        for (s, v) in call[at..].iter_mut().zip(&audio) {
            *s = (i32::from(*s) / 3 + i32::from(*v)).clamp(-32768, 32767) as i16;
        }
        let h = run(VadConfig::default(), rate, &call);
        let end = 12_500 + last;
        let stopped = h.events.iter().find_map(|(pass, e)| match e {
            Event::Speech(Speech::Stopped { start_ms, duration_ms }) if start_ms + duration_ms + 300 >= end => {
                Some((pass * 20, start_ms + duration_ms))
            }
            _ => None,
        });
        let Some((pass_ms, stopped_at)) = stopped else { panic!("{rate:?}: no stop after the voice in {:?}", speech_events(&h)) };
        assert!(stopped_at.abs_diff(end) <= 300, "{rate:?}: stopped at {stopped_at} ms, the voice at {end} ms");
        assert!(pass_ms < 17_400, "{rate:?}: speech:stopped at {pass_ms} ms, after the music's rest at 17.4 s");
    }
}

#[test]
fn every_sentence_over_a_hum_starts_promptly() {
    // Three sentences over the same hum, 1.5 s apart: the hum coming back between them is
    // the same note each time, not a tune, so none of them is held back as over music.
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let (audio, first, _) = speech(rate);
        let hz = rate.hz() as usize;
        let gap = hz * 3 / 2;
        let mut call = vec![0i16; hz];
        let mut onsets = Vec::new();
        for _ in 0..3 {
            onsets.push((call.len() * 1000 / hz) as u64 + first);
            call.extend_from_slice(&audio);
            call.extend(std::iter::repeat_n(0, gap));
        }
        for (i, s) in call.iter_mut().enumerate() {
            let phase = std::f64::consts::TAU * 120.0 * i as f64 / hz as f64;
            let hum = 500.0 * (phase.sin() + 0.8 * (2.0 * phase).sin() + 0.6 * (3.0 * phase).sin() + 0.4 * (5.0 * phase).sin());
            *s = (f64::from(*s) + hum).clamp(-32768.0, 32767.0) as i16;
        }
        let h = run(VadConfig::default(), rate, &call);
        for onset in onsets {
            let started = h.events.iter().find_map(|(pass, e)| match e {
                Event::Speech(Speech::Started { start_ms }) if start_ms.abs_diff(onset) <= 100 => Some(pass * 20),
                _ => None,
            });
            let Some(at) = started else { panic!("{rate:?}: no start near {onset} ms in {:?}", speech_events(&h)) };
            assert!(at <= onset + 200, "{rate:?}: speech at {onset} ms, speech:started at {at} ms");
        }
    }
}

#[test]
fn a_short_burst_does_not_start_speech_and_a_call_ending_mid_speech_stops_it() {
    let rate = SampleRate::Hz16000;
    let (audio, first, _) = speech(rate);
    let from = (first as usize + 300) * 16;
    let mut call = vec![0i16; 16_000];
    call.extend_from_slice(&audio[from..from + 16 * 60]);
    call.extend(std::iter::repeat_n(0, 32_000));
    let h = run(VadConfig { min_speech_ms: 100, ..VadConfig::default() }, rate, &call);
    assert!(speech_events(&h).is_empty(), "60 ms of speech is under min_speech_ms: {:?}", speech_events(&h));
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let mut call = vec![0i16; rate.hz() as usize];
        call.extend(cough(rate.hz()));
        call.extend(std::iter::repeat_n(0, rate.hz() as usize));
        let h = run(VadConfig::default(), rate, &call);
        assert!(speech_events(&h).is_empty(), "{rate:?}: a cough is not speech: {:?}", speech_events(&h));
    }
    let mut h = run(VadConfig::default(), rate, &audio[..(first as usize + 1500) * 16]);
    assert!(h.processor.speaking());
    h.finish();
    assert!(matches!(speech_events(&h).last(), Some(Speech::Stopped { .. })), "{:?}", speech_events(&h));
}

#[test]
fn parameters_are_checked() {
    let bad = |c: VadConfig| Vad::new(c).unwrap_err().to_string();
    assert!(bad(VadConfig { sensitivity: 1.2, ..VadConfig::default() }).contains("sensitivity 1.2"));
    assert!(bad(VadConfig { min_speech_ms: 20_000, ..VadConfig::default() }).contains("min_speech_ms 20000"));
}

#[test]
fn silence_and_noise_start_nothing() {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
        let h = run(VadConfig::default(), rate, &vec![0; rate.hz() as usize * 3]);
        assert!(speech_events(&h).is_empty(), "{rate:?}");
        // Quiet white noise (a fixed generator).
        let mut x: u32 = 12345;
        let noise: Vec<i16> = (0..rate.hz() * 3)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 16) as i16) / 64
            })
            .collect();
        let h = run(VadConfig::default(), rate, &noise);
        assert!(speech_events(&h).is_empty(), "{rate:?}: {:?}", speech_events(&h));
    }
}

/// Gaussian-ish white noise from a fixed generator, at about `rms` (sample units).
fn white(n: usize, rms: f64, seed: u32) -> Vec<i16> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            // The sum of four uniform values, scaled to unit variance.
            let sum: f64 = (0..4)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    f64::from(x >> 8) / f64::from(1u32 << 24) - 0.5
                })
                .sum();
            (sum * 1.732 * rms).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[test]
fn loud_stationary_noise_does_not_start_speech() {
    // White noise at about -20 dBFS for 10 s: whatever the network makes of it, it has no
    // pitch, so it never starts speech (without the pitch check it did, at 8 kHz).
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let noise = white(rate.hz() as usize * 10, 3300.0, 4242);
        let h = run(VadConfig::default(), rate, &noise);
        assert!(speech_events(&h).is_empty(), "{rate:?}: {:?}", speech_events(&h));
    }
    // Noise with speech in it still starts speech, at the speech.
    let rate = SampleRate::Hz16000;
    let (audio, first, _) = speech(rate);
    let mut call = white(16_000 + audio.len(), 100.0, 7);
    for (c, s) in call[16_000..].iter_mut().zip(&audio) {
        *c = c.saturating_add(*s);
    }
    let h = run(VadConfig::default(), rate, &call);
    let Some(Speech::Started { start_ms }) = speech_events(&h).first().copied() else { panic!("{:?}", speech_events(&h)) };
    assert!(start_ms.abs_diff(1000 + first) <= 100, "started at {start_ms} ms, the speech at {} ms", 1000 + first);
}
