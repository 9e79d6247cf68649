//! The recorder service's files, without a processor.

use std::fs::File;

use super::*;

/// A fresh, empty directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callpipe-recorder-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A mono 8 kHz file of `format` at `path`.
fn spec(path: &Path, format: RecordFormat) -> FileSpec {
    FileSpec { path: path.to_owned(), format, channels: 1, rate: 8000, opus_bitrate: DEFAULT_OPUS_BITRATE_PER_CHANNEL }
}

#[test]
fn a_recording_is_written_counted_and_reported_once_stopped() {
    let dir = temp_dir("written");
    let recorder = Recorder::new();
    let (tx, rx) = mpsc::channel();
    let path = dir.join("sub").join("a.wav");
    let mut recording = recorder.open(spec(&path, RecordFormat::Wav), tx).unwrap();
    assert!(recorder.in_progress(&path), "on the ledger from the start");
    recording.push(&[7; 160], false);
    recording.push(&[8; 160], false);
    assert_eq!(recording.pushed(), 320);
    recording.stop();
    let outcome = rx.recv_timeout(Duration::from_secs(2)).expect("finalized");
    assert!(recorder.wait(Duration::from_secs(1)));
    assert!(!recorder.in_progress(&path));
    assert_eq!((outcome.samples, outcome.dropped, outcome.error), (320, 0, None));
    let samples: Vec<i16> = hound::WavReader::open(&path).unwrap().into_samples().map(Result::unwrap).collect();
    assert_eq!(samples, [[7; 160], [8; 160]].concat());
    let (size, counted) = (std::fs::metadata(&path).unwrap().len(), recorder.bytes_written());
    assert!((size..size + 64).contains(&counted), "{counted} bytes counted for a {size}-byte file (header rewrites add a few)");
    let other = Recorder::new();
    assert_eq!(other.bytes_written(), 0, "recorders share nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_burst_longer_than_the_ring_is_spilled_and_written_in_order() {
    // A stall's catch-up: 6 s of frames pushed back to back (the ring holds 2 s), some more
    // paced ones after the writer has had time to drain (they follow the spill, never pass
    // it), and the call ends with the spill not yet empty.
    let dir = temp_dir("spill");
    let recorder = Recorder::new();
    let (tx, rx) = mpsc::channel();
    let path = dir.join("burst.wav");
    let mut recording = recorder.open(spec(&path, RecordFormat::Wav), tx).unwrap();
    let frame = |n: usize| [(n % 30_000) as i16; 160];
    for n in 0..300 {
        recording.push(&frame(n), n > 0);
    }
    assert!(recording.spilled() > 0, "more than the ring at once");
    // The writer drains the ring (the spill moves into it at the next push), so the paced
    // frames find room behind the spill without growing it.
    assert!(crate::services::poll_until(Duration::from_secs(5), POLL_INTERVAL / 4, || recording.producer.is_empty()));
    let capacity = recording.spill.capacity();
    for n in 300..310 {
        recording.push(&frame(n), false);
    }
    assert_eq!(recording.spill.capacity(), capacity, "paced frames never grow the spill");
    for n in 310..700 {
        recording.push(&frame(n), true);
    }
    assert!(recording.spilled() > 0, "the call ends with samples still spilled");
    recording.stop();
    let outcome = rx.recv_timeout(Duration::from_secs(5)).expect("finalized");
    assert_eq!((outcome.samples, outcome.dropped, outcome.error), (700 * 160, 0, None));
    let samples: Vec<i16> = hound::WavReader::open(&path).unwrap().into_samples().map(Result::unwrap).collect();
    assert_eq!(samples, (0..700).flat_map(frame).collect::<Vec<_>>(), "every frame, in order");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn paced_frames_behind_a_spill_drop_rather_than_grow_it_and_the_spill_is_given_back() {
    // A burst spills; the writer is taken to be stuck (nothing drains): paced frames fill what
    // the spill already has, then are dropped and counted. Once the ring has room again the
    // spill empties into it and its memory goes back.
    let dir = temp_dir("paced-behind");
    let recorder = Recorder::new();
    let (tx, rx) = mpsc::channel();
    let path = dir.join("paced.wav");
    let mut recording = recorder.open(spec(&path, RecordFormat::Wav), tx).unwrap();
    let ring = recording.producer.capacity().get();
    // Fill the ring and spill a burst, all before the writer's first poll can drain much.
    let mut n = 0;
    while recording.spilled() == 0 {
        recording.push(&[1; 160], true);
        n += 1;
        assert!(n < 10 * ring / 160, "the ring never filled");
    }
    let capacity = recording.spill.capacity();
    let before = recording.dropped();
    let mut paced = 0;
    while recording.dropped() == before && paced < 10_000 {
        // Without the writer's help: keep the ring full so nothing moves out of the spill.
        while recording.producer.vacant_len() >= 160 {
            recording.producer.push_slice(&[1; 160]);
        }
        recording.push(&[2; 160], false);
        paced += 1;
    }
    assert!(recording.dropped() > before, "a paced frame found the spill's memory full and was dropped");
    assert_eq!(recording.spill.capacity(), capacity, "and the spill never grew for paced frames");
    // The writer catches up: the spill goes into the ring, and a paced push gives it back.
    while recording.spilled() > 0 {
        assert!(crate::services::poll_until(Duration::from_secs(5), POLL_INTERVAL / 4, || recording.producer.is_empty()));
        recording.push(&[3; 160], false);
    }
    assert!(crate::services::poll_until(Duration::from_secs(5), POLL_INTERVAL / 4, || recording.producer.is_empty()));
    recording.push(&[3; 160], false);
    assert_eq!(recording.spill.capacity(), 0, "the spill's memory is given back");
    recording.stop();
    let outcome = rx.recv_timeout(Duration::from_secs(5)).expect("finalized");
    assert_eq!(outcome.error, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_ring_outside_a_burst_drops_and_never_spills() {
    // Frames that did not come in a burst find the ring full only when the writer cannot keep
    // up: they are dropped and counted, and nothing grows on the media thread.
    let dir = temp_dir("no-spill");
    let recorder = Recorder::new();
    let (tx, rx) = mpsc::channel();
    let path = dir.join("paced.wav");
    let mut recording = recorder.open(spec(&path, RecordFormat::Wav), tx).unwrap();
    for n in 0..400 {
        recording.push(&[(n % 30_000) as i16 + 1; 160], false);
        assert_eq!(recording.spilled(), 0);
    }
    let (pushed, dropped) = (recording.pushed(), recording.dropped());
    assert!(dropped > 0, "8 s at once into a 2 s ring (a writer running every 20 ms cannot drain it in time)");
    assert_eq!(pushed + dropped, 400 * 160, "each frame either handed over or counted");
    recording.stop();
    let outcome = rx.recv_timeout(Duration::from_secs(5)).expect("finalized");
    assert_eq!(outcome.samples, pushed);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_whose_header_cannot_be_written_is_removed() {
    // A full disk creates the file and then fails the header's write; the soak met it. A
    // read-only handle on a freshly created regular file fails the same way, on any filesystem.
    let formats = [
        RecordFormat::Wav,
        #[cfg(feature = "opus")]
        RecordFormat::Opus,
    ];
    for format in formats {
        let dir = temp_dir(&format!("header-fails-{format:?}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("call.{}", format.as_str()));
        let read_only = |p: &Path| {
            File::create(p)?;
            File::open(p)
        };
        let (tx, _rx) = mpsc::channel();
        let error = Recorder::new().open_with(spec(&path, format), tx, read_only).expect_err("the header cannot be written").to_string();
        assert!(error.starts_with(&format!("cannot create {}", path.display())), "{error}");
        assert!(!path.exists(), "{format:?}: a file without its header is left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The real thing: /dev/full fails every write with ENOSPC. Reached through a symbolic link,
    // which is not the recorder's to remove.
    use std::os::unix::fs::FileTypeExt;
    if std::fs::metadata("/dev/full").is_ok_and(|m| m.file_type().is_char_device()) {
        let dir = temp_dir("header-dev-full");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("call.wav");
        std::os::unix::fs::symlink("/dev/full", &link).unwrap();
        let (tx, _rx) = mpsc::channel();
        let error = Recorder::new().open(spec(&link, RecordFormat::Wav), tx).expect_err("/dev/full is full");
        assert!(std::error::Error::source(&error).is_some(), "the cause is behind source()");
        let error = error.to_string();
        assert!(error.contains("os error 28"), "{error}");
        assert!(std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()), "the link stays");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
