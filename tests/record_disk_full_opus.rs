//! An Ogg/Opus recording that runs out of space mid-call (the `opus` feature): the recording
//! stops with a `recording` error event, the file stays readable up to its last whole page, and
//! the recorder reports the end with a `recording` `finished` event and its outcome.
//!
//! "Out of space" is the process's file-size limit (`RLIMIT_FSIZE`), as in
//! `tests/record_disk_full.rs`, lowered for the length of the test only; the limit is per
//! process, so this file holds one test.
#![cfg(feature = "opus")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use callpipe::processor::{Record, RecordChannels, RecordConfig, RecordFormat};
use common::{FileSizeLimit, record_until_full};

/// Bytes any file this process writes may reach: the headers and the first second of 8 kHz
/// stereo at the default 48 kb/s (a page of about 6 kB), not the second.
const LIMIT: u64 = 10_000;

#[test]
fn a_full_disk_ends_the_opus_recording_not_the_call() {
    let limit = FileSizeLimit::set(LIMIT);
    let dir = std::env::temp_dir().join(format!("callpipe-disk-full-opus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = RecordConfig {
        template: "call.opus".into(),
        channels: RecordChannels::Stereo,
        format: RecordFormat::Opus,
        ..RecordConfig::new(dir.clone())
    };
    let mut record = Record::new(config).unwrap();
    let outcomes = record.outcomes().unwrap();
    // Four seconds of call time: noise, which takes the whole bitrate (a pure tone would take a
    // fraction of it under VBR).
    let mut seed = 1u32;
    let states = record_until_full(&mut record, &callpipe::services::Services::new(), 200, |_| {
        (0..160)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 16) as i16 / 4
            })
            .collect()
    });
    let names: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["started", "error", "finished"], "{states:?}");
    assert!(states[1].1["error"].as_str().unwrap().contains("too large"), "{states:?}");
    let outcome = outcomes.recv_timeout(Duration::from_secs(2)).unwrap();
    assert!(outcome.error.as_deref().unwrap().contains("too large"), "{outcome:?}");
    assert!(std::fs::metadata(&outcome.path).unwrap().len() <= LIMIT);

    // The file reads up to its last whole page: the first second, without an end of stream.
    let mut reader = ogg::PacketReader::new(std::io::BufReader::new(std::fs::File::open(&outcome.path).unwrap()));
    assert!(reader.read_packet_expected().unwrap().data.starts_with(b"OpusHead"));
    assert!(reader.read_packet_expected().unwrap().data.starts_with(b"OpusTags"));
    let mut decoder = opus::Decoder::new(8000, opus::Channels::Stereo).unwrap();
    let (mut packets, mut decoded, mut pcm) = (0, 0, vec![0i16; 5760 * 2]);
    while let Ok(Some(packet)) = reader.read_packet() {
        assert!(!packet.last_in_stream(), "no end-of-stream page after a failed write");
        decoded += decoder.decode(&packet.data, &mut pcm, false).unwrap();
        packets += 1;
    }
    assert!((50..100).contains(&packets), "{packets} packets readable");
    assert_eq!(decoded, packets * 160);
    drop(limit);
    let _ = std::fs::remove_dir_all(&dir);
}
