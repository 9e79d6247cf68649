//! The recorder driven directly, pass by pass, as the session drives it.

#[cfg(feature = "opus")]
mod opus;

use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::processor::Requests;
use crate::protocol::{Metadata, SampleRate};
use crate::services::Services;

/// A fresh, empty directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-record-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn call(rate: SampleRate) -> CallInfo {
    let mut metadata = Metadata::new(rate);
    metadata.headers.insert("caller".into(), serde_json::json!("+44 7700/900123"));
    metadata.headers.insert("n".into(), serde_json::json!(5));
    CallInfo { id: "call 1/é".into(), path: "/rec/a".into(), metadata }
}

fn recorder(dir: &Path, channels: RecordChannels) -> Record {
    Record::new(RecordConfig { channels, ..RecordConfig::new(dir) }).unwrap()
}

/// Caller frame `n`: a ramp; outbound frame `n`: another, so that the channels differ.
fn frames(rate: SampleRate, n: usize) -> (Vec<i16>, Vec<i16>) {
    let len = rate.frame_samples();
    let caller = (0..len).map(|i| ((n * 1000 + i * 7) % 20_000) as i16 - 10_000).collect();
    let outbound = (0..len).map(|i| (((n * 333 + i * 13) % 60_000) as i32 - 30_000) as i16).collect();
    (caller, outbound)
}

/// Runs `passes` passes through `record` (pacing so the 2 s ring never fills); returns the events.
fn drive(record: &mut Record, rate: SampleRate, passes: usize) -> Vec<Event> {
    let mut requests = Requests::new(rate.frame_samples());
    let mut events = Vec::new();
    for n in 0..passes {
        let (mut input, mut output) = frames(rate, n);
        requests.reset(rate.frame_samples());
        let mut cx = Context::new(Instant::now(), n as u64, rate, &mut input, true, &mut output, &mut requests);
        record.process(&mut cx);
        events.extend(requests.events.drain(..).map(|(_, e)| e));
        if n % 25 == 24 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    events
}

fn finish(record: &mut Record, rate: SampleRate) {
    let (mut input, mut output) = (vec![0; rate.frame_samples()], vec![0; rate.frame_samples()]);
    let mut requests = Requests::new(rate.frame_samples());
    record.finish(&mut Context::new(Instant::now(), 0, rate, &mut input, false, &mut output, &mut requests));
}

/// Records `passes` passes in `channels` mode; returns the outcome, the file's spec and samples.
fn record_call(name: &str, channels: RecordChannels, passes: usize) -> (RecordingOutcome, hound::WavSpec, Vec<i16>) {
    let rate = SampleRate::Hz8000;
    let dir = temp_dir(name);
    let mut record = recorder(&dir, channels);
    let outcomes = record.outcomes().unwrap();
    record.prepare(&Setup { rate, call: &call(rate), services: &Services::new() }).unwrap();
    let events = drive(&mut record, rate, passes);
    assert_eq!(events.len(), 1, "one event, at the first pass");
    let Event::Recording(recording) = &events[0] else { panic!("{events:?}") };
    let data = &recording.to_json();
    assert_eq!(data["state"], "started");
    finish(&mut record, rate);
    let outcome = outcomes.recv_timeout(Duration::from_secs(2)).expect("finalized within 2 s");
    assert_eq!(data["path"], outcome.path.display().to_string());
    let mut reader = hound::WavReader::open(&outcome.path).unwrap();
    let samples = reader.samples::<i16>().map(Result::unwrap).collect();
    let _ = std::fs::remove_dir_all(&dir);
    (outcome, reader.spec(), samples)
}

#[test]
fn each_mode_records_its_channels() {
    let rate = SampleRate::Hz8000;
    let passes = 60;
    let caller: Vec<i16> = (0..passes).flat_map(|n| frames(rate, n).0).collect();
    let outbound: Vec<i16> = (0..passes).flat_map(|n| frames(rate, n).1).collect();
    for channels in [RecordChannels::Caller, RecordChannels::Outbound, RecordChannels::Stereo, RecordChannels::Mixed] {
        let (outcome, spec, samples) = record_call(channels.as_str(), channels, passes);
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (channels.count(), 8000, 16), "{channels:?}");
        assert_eq!(outcome.samples, caller.len() as u64);
        assert_eq!(outcome.duration_ms, 20 * passes as u64);
        assert_eq!((outcome.dropped, outcome.error), (0, None));
        let expected: Vec<i16> = match channels {
            RecordChannels::Caller => caller.clone(),
            RecordChannels::Outbound => outbound.clone(),
            RecordChannels::Stereo => caller.iter().zip(&outbound).flat_map(|(l, r)| [*l, *r]).collect(),
            RecordChannels::Mixed => caller.iter().zip(&outbound).map(|(l, r)| l.saturating_add(*r)).collect(),
        };
        assert!(samples == expected, "{channels:?}");
    }
    assert!(caller.iter().zip(&outbound).any(|(l, r)| l.checked_add(*r).is_none()), "mixing really saturated");
}

#[test]
fn the_bytes_written_are_counted() {
    // The header is rewritten once per second of audio, so the count is at least the file's size.
    let rate = SampleRate::Hz16000;
    let formats = [
        RecordFormat::Wav,
        #[cfg(feature = "opus")]
        RecordFormat::Opus,
    ];
    for format in formats {
        let dir = temp_dir(&format!("bytes-{format:?}"));
        let services = Services::new();
        let config = RecordConfig { format, template: format.default_template().into(), ..RecordConfig::new(&dir) };
        let mut record = Record::new(config).unwrap();
        let outcomes = record.outcomes().unwrap();
        record.prepare(&Setup { rate, call: &call(rate), services: &services }).unwrap();
        drive(&mut record, rate, 60);
        finish(&mut record, rate);
        let outcome = outcomes.recv_timeout(Duration::from_secs(2)).expect("finalized within 2 s");
        let size = std::fs::metadata(&outcome.path).unwrap().len();
        let grown = services.recorder.bytes_written();
        if format == RecordFormat::Wav {
            // 1.2 s of 16 kHz stereo: 76,800 bytes of samples after the 44-byte header.
            assert_eq!(size, 44 + 60 * 320 * 2 * 2);
        }
        assert!(size > 100, "{format:?}: {size} bytes");
        assert!(grown >= size, "{format:?}: the counter grew by {grown} bytes for a {size}-byte file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_file_never_finalized_still_opens_after_the_periodic_flush() {
    let rate = SampleRate::Hz8000;
    let dir = temp_dir("crash");
    let mut record = recorder(&dir, RecordChannels::Stereo);
    record.prepare(&Setup { rate, call: &call(rate), services: &Services::new() }).unwrap();
    let events = drive(&mut record, rate, 125);
    let Event::Recording(recording) = &events[0] else { panic!("{events:?}") };
    let data = &recording.to_json();
    let path = PathBuf::from(data["path"].as_str().unwrap());
    // As if the process died: no finish, no drop. The writer thread goes on polling.
    std::mem::forget(record);
    std::thread::sleep(Duration::from_millis(1_500));
    let reader = hound::WavReader::open(&path).expect("opens without finalize");
    assert!(reader.duration() >= 12_000, "at least 1.5 s readable, got {} samples", reader.duration());
    assert_eq!(reader.spec().channels, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_directory_disables_recording_but_not_the_call() {
    let rate = SampleRate::Hz8000;
    let formats = [
        RecordFormat::Wav,
        #[cfg(feature = "opus")]
        RecordFormat::Opus,
    ];
    for format in formats {
        let base = temp_dir(&format!("unwritable-{format:?}"));
        std::fs::create_dir_all(&base).unwrap();
        let file = base.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let config = RecordConfig { format, template: format.default_template().into(), ..RecordConfig::new(file.join("sub")) };
        let mut record = Record::new(config).unwrap();
        let outcomes = record.outcomes().unwrap();
        record.prepare(&Setup { rate, call: &call(rate), services: &Services::new() }).expect("prepare never fails the call");
        let events = drive(&mut record, rate, 10);
        assert_eq!(events.len(), 1, "{format:?}");
        let Event::Recording(recording) = &events[0] else { panic!("{events:?}") };
        let data = &recording.to_json();
        assert_eq!(data["state"], "error");
        assert!(data["error"].as_str().unwrap().contains("cannot create"), "{data}");
        finish(&mut record, rate);
        assert!(outcomes.recv_timeout(Duration::from_millis(100)).is_err(), "no writer ran");
        let _ = std::fs::remove_dir_all(&base);
    }
}

#[test]
fn templates_render_every_placeholder_sanitized() {
    let rate = SampleRate::Hz16000;
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
    let pieces = template::parse_file_name("rec_{call_id}.{path}-{start}-{rate}-{header:caller}-{header:n}-{header:missing}.wav").unwrap();
    assert_eq!(
        template::render_file_name(&pieces, &call(rate), 16_000, start),
        "rec_call_1__._rec_a-20231114T221320Z-16000-_44_7700_900123-5-none.wav"
    );
    assert_eq!(template::render_file_name(&template::parse_file_name("{header:dots}").unwrap(), &call(rate), 8000, start), "none");
    let mut dotted = call(rate);
    dotted.id = "..".into();
    assert_eq!(
        template::render_file_name(&template::parse_file_name("{call_id}").unwrap(), &dotted, 8000, start),
        "_..",
        "never a parent or hidden name"
    );
    assert_eq!(template::utc_stamp(UNIX_EPOCH), "19700101T000000Z");
    assert_eq!(template::utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229T000000Z");
    for bad in ["", "{call_id", "{nope}.wav", "{header:}.wav", "a/{call_id}.wav", "../x.wav", "a b.wav"] {
        assert!(template::parse_file_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_ring_drops_whole_frames_when_full() {
    let rate = SampleRate::Hz8000;
    let dir = temp_dir("full");
    let mut record = recorder(&dir, RecordChannels::Stereo);
    record.prepare(&Setup { rate, call: &call(rate), services: &Services::new() }).unwrap();
    // 40 s in one go: the 2 s ring takes 100 frames, and the writer, which drains it every
    // 20 ms, would have to run 20 times during the loop to keep up (200 frames were not always
    // enough on a machine busy with other tests).
    let mut requests = Requests::new(rate.frame_samples());
    for n in 0..2000 {
        let (mut input, mut output) = frames(rate, n);
        requests.reset(rate.frame_samples());
        record.process(&mut Context::new(Instant::now(), n as u64, rate, &mut input, true, &mut output, &mut requests));
    }
    assert!(record.dropped() > 0 && record.dropped().is_multiple_of(160), "{}", record.dropped());
    drop(record);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_format_is_checked_against_the_build_the_template_and_the_bitrate() {
    let dir = Path::new("/tmp/rec");
    let config = |format, template: &str, bitrate| RecordConfig { format, template: template.into(), bitrate, ..RecordConfig::new(dir) };
    let error = |config| match Record::new(config) {
        Err(ProcessorError::Config { message, .. }) => message,
        other => panic!("{other:?}"),
    };
    assert!(Record::new(config(RecordFormat::Wav, "{call_id}.wav", None)).is_ok());
    assert!(error(config(RecordFormat::Wav, "{call_id}.opus", None)).contains("must end in `.wav`"));
    assert!(error(config(RecordFormat::Wav, "{call_id}", None)).contains("must end in `.wav`"));
    assert!(error(config(RecordFormat::Wav, "{call_id}.wav", Some(24_000))).contains("`bitrate` applies to format = \"opus\" only"));
    let opus = Record::new(config(RecordFormat::Opus, "{call_id}.opus", None));
    if cfg!(feature = "opus") {
        assert!(opus.is_ok());
        assert!(Record::new(config(RecordFormat::Opus, "{call_id}.opus", Some(64_000))).is_ok());
        assert!(error(config(RecordFormat::Opus, "{call_id}.wav", None)).contains("must end in `.opus`"));
        assert!(error(config(RecordFormat::Opus, "{call_id}.opus", Some(5_999))).contains("`bitrate` must be between 6000 and 256000"));
        assert!(error(config(RecordFormat::Opus, "{call_id}.opus", Some(256_001))).contains("`bitrate` must be between"));
    } else {
        assert_eq!(error(config(RecordFormat::Opus, "{call_id}.opus", None)), OPUS_FEATURE_MISSING);
    }
    assert_eq!(RecordConfig::new(dir).opus_bitrate(), 48_000, "24 kb/s per channel, stereo by default");
    assert_eq!(RecordConfig { channels: RecordChannels::Mixed, ..RecordConfig::new(dir) }.opus_bitrate(), 24_000);
    assert_eq!(RecordFormat::from_template("{call_id}.opus"), RecordFormat::Opus);
    assert_eq!(RecordFormat::from_template("{call_id}.wav"), RecordFormat::Wav);
    assert_eq!(RecordFormat::parse("opus").map(RecordFormat::as_str), Some("opus"));
    assert_eq!(RecordFormat::parse("ogg"), None);
}
