//! The recorder's writer thread: every [`POLL_INTERVAL`] it drains each recording's ring into
//! its file, makes the file readable once per second of audio, and finalizes the recordings
//! whose calls have ended; it sleeps while there are none, and ends when its recorder is gone
//! and the last recording is final.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use ringbuf::{HeapCons, traits::*};

use super::sink::Sink;
use super::{Ledger, POLL_INTERVAL, RecordError, RecordingOutcome, Shared};

/// Samples the writer thread pops at a time.
const WRITE_CHUNK: usize = 8192;

/// One recording, as the writer thread holds it.
pub(super) struct Writer {
    pub(super) sink: Option<Sink>,
    pub(super) path: PathBuf,
    pub(super) channels: u16,
    pub(super) rate: u32,
    pub(super) consumer: HeapCons<i16>,
    pub(super) shared: Arc<Shared>,
    pub(super) outcomes: mpsc::Sender<RecordingOutcome>,
}

/// A recording being written, with its progress.
struct Job {
    writer: Writer,
    written: u64,
    since_flush: u64,
    error: Option<String>,
}

/// The writer thread's loop.
pub(super) fn write_recordings(incoming: mpsc::Receiver<Writer>, ledger: Arc<Ledger>) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut buffer = vec![0i16; WRITE_CHUNK];
    loop {
        if jobs.is_empty() {
            match incoming.recv() {
                Ok(writer) => jobs.push(Job::new(writer)),
                Err(_) => return,
            }
        }
        while let Ok(writer) = incoming.try_recv() {
            jobs.push(Job::new(writer));
        }
        let mut i = 0;
        while i < jobs.len() {
            if jobs[i].poll(&mut buffer) {
                let job = jobs.swap_remove(i);
                job.finish(&ledger);
            } else {
                i += 1;
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

impl Job {
    fn new(writer: Writer) -> Job {
        Job { writer, written: 0, since_flush: 0, error: None }
    }

    /// Drains the ring into the file and makes the file readable (WAV header, Ogg page) once per
    /// second of audio.
    /// Returns true once the call has ended and everything it pushed is written.
    fn poll(&mut self, buffer: &mut [i16]) -> bool {
        let channels = u64::from(self.writer.channels);
        // Read the flag before draining: everything pushed before it was set is drained.
        let stopping = self.writer.shared.stop.load(Ordering::Acquire);
        // Whole interleaved frames per chunk, so a write never splits a sample pair.
        let chunk = buffer.len() - buffer.len() % usize::from(self.writer.channels);
        loop {
            let n = self.writer.consumer.pop_slice(&mut buffer[..chunk]);
            if n == 0 {
                break;
            }
            self.write(&buffer[..n]);
        }
        if stopping {
            // What the recording still held beyond its ring when it stopped comes after it.
            let mut tail = std::mem::take(&mut *self.writer.shared.tail());
            if !tail.is_empty() {
                self.write(tail.make_contiguous());
            }
        }
        if self.since_flush >= u64::from(self.writer.rate) * channels && self.written.is_multiple_of(channels) {
            self.since_flush = 0;
            if let Some(Err(source)) = self.writer.sink.as_mut().map(Sink::flush) {
                self.writer.fail(&mut self.error, RecordError::Write { action: "flush", source }.to_string(), 0);
            }
        }
        stopping
    }

    /// Writes whole interleaved frames to the file, or counts them as dropped once it failed.
    fn write(&mut self, samples: &[i16]) {
        let channels = u64::from(self.writer.channels);
        let n = samples.len() as u64;
        match self.writer.sink.as_mut() {
            Some(sink) => match sink.write(samples) {
                Ok(()) => {
                    self.written += n;
                    self.since_flush += n;
                }
                Err(source) => {
                    let error = RecordError::Write { action: "write", source };
                    self.writer.fail(&mut self.error, error.to_string(), n / channels);
                }
            },
            None => {
                self.writer.shared.dropped.fetch_add(n / channels, Ordering::Relaxed);
            }
        }
    }

    /// Finalizes the file, takes it off the ledger and reports how the recording ended.
    fn finish(mut self, ledger: &Ledger) {
        let channels = u64::from(self.writer.channels);
        if let Some(Err(source)) = self.writer.sink.take().map(Sink::finalize) {
            self.error.get_or_insert(RecordError::Write { action: "finalize", source }.to_string());
        }
        ledger.close(&self.writer.path);
        let samples = self.written / channels;
        let outcome = RecordingOutcome {
            path: self.writer.path,
            duration_ms: samples * 1000 / u64::from(self.writer.rate),
            samples,
            dropped: self.writer.shared.dropped.load(Ordering::Relaxed),
            error: self.error,
        };
        tracing::info!(
            path = %outcome.path.display(),
            duration_ms = outcome.duration_ms,
            samples = outcome.samples,
            dropped = outcome.dropped,
            error = outcome.error.as_deref().unwrap_or(""),
            "recording finished"
        );
        let _ = self.writer.outcomes.send(outcome);
    }
}

impl Writer {
    /// Stops writing after an error: logs it once, closes the file as far as it got.
    fn fail(&mut self, error: &mut Option<String>, message: String, lost: u64) {
        tracing::warn!(path = %self.path.display(), error = %message, "recording stopped; the call goes on");
        let _ = self.shared.failed.set(message.clone());
        self.shared.dropped.fetch_add(lost, Ordering::Relaxed);
        // Dropping a hound writer tries to finalize, an Ogg/Opus one flushes what it has; errors
        // there are already reported.
        self.sink = None;
        error.get_or_insert(message);
    }
}
