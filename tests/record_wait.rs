//! A recorder's `wait` returns once its writer thread has finalized every ended recording.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use callpipe::processor::{Record, RecordConfig};
use callpipe::services::Services;
use common::record_until_full;

#[test]
fn waiting_for_recordings_returns_once_the_file_is_final() {
    let dir = std::env::temp_dir().join(format!("callpipe-record-wait-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let services = Services::new();
    let mut record = Record::new(RecordConfig::new(dir.clone())).unwrap();
    let outcomes = record.outcomes().unwrap();
    let states = record_until_full(&mut record, &services, 10, |_| vec![100; 160]);
    assert_eq!(states.last().unwrap().0, "finished");
    assert!(services.recorder.wait(Duration::from_secs(5)), "the writer finalized the file");
    let outcome = outcomes.try_recv().expect("finalized before wait returned");
    assert_eq!(outcome.samples, 1600);
    assert_eq!(hound::WavReader::open(&outcome.path).unwrap().duration(), 1600);
    let _ = std::fs::remove_dir_all(&dir);
}
