//! The JSON-lines event log: a thread of its own writes the lines it is sent, in batches.
//!
//! A batch is everything waiting when the thread wakes, up to [`BATCH_BYTES`], written with one
//! call and flushed at once, so a line never waits in a buffer while the thread is idle. A
//! failed write counts its lines in `log_errors` and logs one warning per failing stretch. If a
//! write stopped in the middle of a line, the next batch starts on a fresh line, so the file
//! keeps one JSON object per line apart from that one cut line.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{EventStats, Gate, LogSink};

/// A batch is written once it reaches this many bytes, whatever is still waiting.
const BATCH_BYTES: usize = 64 * 1024;

/// What the log thread is sent.
enum Msg {
    /// One serialised event, without its newline.
    Line(Bytes),
    /// Write everything received so far, then answer.
    Mark(oneshot::Sender<()>),
}

/// The sending side of the log thread's queue.
#[derive(Debug)]
pub(super) struct LogQueue {
    tx: mpsc::Sender<Msg>,
    /// Lines queued and not yet written (or lost).
    gate: Arc<Gate>,
}

impl LogQueue {
    /// Queues a line; false if the queue is full.
    pub(super) fn push(&self, line: Bytes) -> bool {
        if !self.gate.try_enter() {
            return false;
        }
        if self.tx.send(Msg::Line(line)).is_err() {
            self.gate.leave(1);
            return false;
        }
        true
    }

    /// Asks for an answer on `done` once every line queued before is written; false if the
    /// thread is gone.
    pub(super) fn mark(&self, done: oneshot::Sender<()>) -> bool {
        self.tx.send(Msg::Mark(done)).is_ok()
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Line(line) => write!(f, "Line({} bytes)", line.len()),
            Msg::Mark(_) => f.write_str("Mark"),
        }
    }
}

/// Opens the sink and starts the thread; `None` when the log is off. The thread ends once the
/// queue's sender is dropped and every line is written.
pub(super) fn start(sink: &LogSink, queue: usize, stats: Arc<EventStats>) -> io::Result<Option<LogQueue>> {
    let (out, name): (Box<dyn Write + Send>, String) = match sink {
        LogSink::Off => return Ok(None),
        LogSink::Stdout => (Box::new(io::stdout()), "stdout".into()),
        LogSink::Stderr => (Box::new(io::stderr()), "stderr".into()),
        LogSink::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open the event log {}: {e}", path.display())))?;
            (Box::new(file), path.display().to_string())
        }
    };
    let gate = Arc::new(Gate::new(queue));
    let (tx, rx) = mpsc::channel();
    let writer = Writer { out, name, batch: Vec::new(), lines: 0, torn: false, failing: false, stats, gate: Arc::clone(&gate) };
    std::thread::Builder::new().name("callpipe-events-log".into()).spawn(move || writer.run(rx))?;
    Ok(Some(LogQueue { tx, gate }))
}

/// The log thread's state.
struct Writer {
    out: Box<dyn Write + Send>,
    /// The sink's name for log lines.
    name: String,
    /// Lines not yet written, each ending in a newline.
    batch: Vec<u8>,
    /// Lines in `batch`.
    lines: usize,
    /// The last write stopped in the middle of a line.
    torn: bool,
    /// The last write failed (and was reported).
    failing: bool,
    stats: Arc<EventStats>,
    gate: Arc<Gate>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Line(line) => self.push(&line),
                    Msg::Mark(done) => {
                        self.write_out();
                        // The caller may have stopped waiting; nothing to do then.
                        let _ = done.send(());
                    }
                }
                next = rx.try_recv().ok();
            }
            self.write_out();
        }
        self.write_out();
    }

    fn push(&mut self, line: &[u8]) {
        self.batch.extend_from_slice(line);
        self.batch.push(b'\n');
        self.lines += 1;
        if self.batch.len() >= BATCH_BYTES {
            self.write_out();
        }
    }

    /// Writes and flushes the batch, then counts its lines as logged or lost.
    fn write_out(&mut self) {
        if self.lines == 0 {
            return;
        }
        let mended = self.torn;
        if mended {
            // End the line a failed write left half-written.
            self.batch.insert(0, b'\n');
        }
        let (written, result) = write_counted(&mut *self.out, &self.batch);
        let result = result.and_then(|()| self.out.flush());
        match result {
            Ok(()) => {
                self.torn = false;
                self.stats.logged.fetch_add(self.lines as u64, Ordering::Relaxed);
                if self.failing {
                    self.failing = false;
                    tracing::info!(log = %self.name, "event log writable again");
                }
            }
            Err(error) => {
                // Lines whose newline went out are in the log; the rest are lost.
                let ends = self.batch[..written].iter().filter(|&&b| b == b'\n').count();
                let complete = if mended && written > 0 { ends.saturating_sub(1) } else { ends };
                if written > 0 {
                    self.torn = self.batch[written - 1] != b'\n';
                }
                self.stats.logged.fetch_add(complete as u64, Ordering::Relaxed);
                self.stats.log_errors.fetch_add((self.lines - complete) as u64, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(log = %self.name, %error, "cannot write the event log; events are lost until it is writable again");
                }
            }
        }
        self.gate.leave(self.lines);
        self.batch.clear();
        self.lines = 0;
    }
}

/// `write_all` that also tells how many bytes made it out before an error.
fn write_counted(out: &mut dyn Write, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < bytes.len() {
        match out.write(&bytes[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that accepts `room` bytes, then fails until given more room.
    #[derive(Clone)]
    struct Tight(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().unwrap();
            let n = buf.len().min(inner.1);
            if n == 0 {
                return Err(io::Error::other("no space"));
            }
            inner.1 -= n;
            inner.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn writer(out: Tight, stats: Arc<EventStats>) -> Writer {
        Writer {
            out: Box::new(out),
            name: "test".into(),
            batch: Vec::new(),
            lines: 0,
            torn: false,
            failing: false,
            stats,
            gate: Arc::new(Gate::new(100)),
        }
    }

    #[test]
    fn a_cut_line_is_followed_by_a_fresh_line() {
        let sink = Tight(Arc::new(Mutex::new((Vec::new(), 5))));
        let stats = Arc::new(EventStats::default());
        let mut w = writer(sink.clone(), Arc::clone(&stats));
        w.push(br#"{"a":1}"#);
        w.push(br#"{"b":2}"#);
        w.write_out();
        assert_eq!(stats.log_errors.load(Ordering::Relaxed), 2, "5 bytes: the first line is cut");
        assert!(w.torn);
        sink.0.lock().unwrap().1 = 1000;
        w.push(br#"{"c":3}"#);
        w.write_out();
        assert_eq!(stats.logged.load(Ordering::Relaxed), 1);
        let text = String::from_utf8(sink.0.lock().unwrap().0.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(serde_json::from_str::<serde_json::Value>(lines[0]).is_err(), "the cut line");
        assert_eq!(serde_json::from_str::<serde_json::Value>(lines[1]).unwrap()["c"], 3);
    }

    #[test]
    fn a_batch_ending_on_a_line_boundary_is_not_torn() {
        let line = br#"{"a":1}"#;
        let sink = Tight(Arc::new(Mutex::new((Vec::new(), line.len() + 1))));
        let stats = Arc::new(EventStats::default());
        let mut w = writer(sink, Arc::clone(&stats));
        w.push(line);
        w.push(line);
        w.write_out();
        assert!(!w.torn);
        assert_eq!(stats.logged.load(Ordering::Relaxed), 1);
        assert_eq!(stats.log_errors.load(Ordering::Relaxed), 1);
    }
}
