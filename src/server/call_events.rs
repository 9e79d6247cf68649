//! A call's events: numbered, published to the event bus (and the route's `event_url`), the
//! processors' events translated, and the `recording` events once the writer has finalized the
//! files (and uploaded them, when the route says so).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tracing::debug;

use super::Shared;
use crate::call::{CallId, RecordingEnd, RecordingEvent};
use crate::processor::{ConferenceState, DtmfSource, Event};

/// How long a call's `recording` events wait for the writer thread to finalize the files.
pub(super) const FINALIZE_WAIT: Duration = Duration::from_secs(2);

/// Builds a call's events and hands them to the event bus, numbered in order.
pub(super) struct CallEvents {
    shared: Arc<Shared>,
    id: CallId,
    path: String,
    url: Option<String>,
    seq: u64,
    /// Finished recordings whose files may still be being finalized.
    recordings: Vec<Arc<RecordingEnd>>,
}

impl CallEvents {
    /// The events of call `id` on `path`, posted to `url` when the route has one.
    pub fn new(shared: Arc<Shared>, id: CallId, path: String, url: Option<String>) -> CallEvents {
        CallEvents { shared, id, path, url, seq: 0, recordings: Vec::new() }
    }

    /// Publishes `{"event": kind, "call_id", "path", "seq", "timestamp", ...fields}`; a field
    /// with one of the first five names is ignored.
    pub fn publish(&mut self, kind: &str, fields: Value) {
        let mut event = json!({
            "event": kind,
            "call_id": self.id,
            "path": self.path,
            "seq": self.seq,
            "timestamp": crate::events::timestamp(SystemTime::now()),
        });
        if let (Value::Object(event), Value::Object(fields)) = (&mut event, fields) {
            for (key, value) in fields {
                event.entry(key).or_insert(value);
            }
        }
        self.seq += 1;
        self.shared.events.publish(event, self.url.as_deref());
    }

    /// Publishes the `recording` events of the call's finished recordings once their files are
    /// finalized (a poll interval or two after the call ends; at most `FINALIZE_WAIT`), so that
    /// a webhook can fetch a complete file.
    pub(super) async fn publish_recordings(&mut self) {
        for end in std::mem::take(&mut self.recordings) {
            // Each recording gets its own wait: the writer finalizes them one after the other.
            let outcome = match end.take_final() {
                Some(outcomes) => final_outcome(outcomes, tokio::time::Instant::now() + FINALIZE_WAIT).await,
                None => None,
            };
            // The recording's file goes in `file`: `path` is the call's.
            let mut fields = RecordingEvent::Finished(end.clone()).to_json();
            if let Some(map) = fields.as_object_mut()
                && let Some(file) = map.remove("path")
            {
                map.insert("file".into(), file);
            }
            if let Some(error) = outcome.as_ref().and_then(|o| o.error.as_ref()) {
                fields["error"] = json!(error);
            }
            // Only a file the writer reported final is uploaded (an unfinished one would be
            // stored truncated, and with `keep_local = false` removed while still written).
            match (&end.upload, &outcome) {
                (Some(target), Some(o)) if end.error.is_none() && o.error.is_none() => {
                    upload_into(&self.shared, &end.path, target, &mut fields).await;
                }
                (Some(_), None) => {
                    fields["upload_error"] = json!("not uploaded: the recording was not finalized in time");
                }
                _ => {}
            }
            self.publish("recording", fields);
        }
    }

    /// Publishes the `recording` event of the call's conference track once its file is final
    /// (the mixer lets go of it within a cycle of the call's end).
    pub(super) async fn publish_track(
        &mut self,
        file: &std::path::Path,
        offset: Duration,
        outcomes: std::sync::mpsc::Receiver<crate::processor::RecordingOutcome>,
        conference: &ConferenceState,
    ) {
        let outcome = final_outcome(outcomes, tokio::time::Instant::now() + FINALIZE_WAIT).await;
        let mut fields = json!({
            "state": "finished",
            "file": file,
            "conference": conference.name(),
            "conference_offset_ms": offset.as_millis() as u64,
        });
        if let Some(o) = &outcome {
            fields["duration_ms"] = json!(o.duration_ms);
            fields["samples"] = json!(o.samples);
            fields["dropped"] = json!(o.dropped);
            if let Some(error) = &o.error {
                fields["error"] = json!(error);
            }
        }
        if let Some(target) = &conference.settings().upload
            && outcome.is_some_and(|o| o.error.is_none())
        {
            upload_into(&self.shared, file, target, &mut fields).await;
        }
        self.publish("recording", fields);
    }

    /// Publishes a processor's or the session's event.
    pub(super) fn processor_event(&mut self, event: &Event) {
        match event {
            // A key the platform reported went out as it arrived; `dtmf_detect`'s merged twin of
            // it would repeat it.
            Event::Dtmf { source: DtmfSource::Both, .. } => {}
            Event::Dtmf { digit, start_ms, duration_ms, source } => {
                let source = if *source == DtmfSource::Platform { "platform" } else { "inband" };
                self.publish(
                    "dtmf",
                    json!({ "digit": digit.as_char().to_string(), "source": source, "start_ms": start_ms, "duration_ms": duration_ms }),
                );
            }
            Event::StreamDone { id, reason } => {
                self.publish("stream:done", json!({ "source": "api", "stream_id": id, "reason": reason.as_str() }))
            }
            // A finished recording waits for its file to be final (see `publish_recordings`).
            Event::Recording(RecordingEvent::Finished(end)) => self.recordings.push(end.clone()),
            Event::Recording(RecordingEvent::Failed { path, error }) => {
                self.publish("error", json!({ "source": "recording", "error": error, "file": path }))
            }
            Event::Recording(started) => debug!(id = self.id.as_str(), data = %started.to_json(), "recording"),
            Event::Speech(speech) => self.publish(speech.name(), speech.to_json()),
            Event::Input(collected) => self.publish("input", collected.to_json()),
            Event::BargeIn(barge_in) => self.publish("barge_in", barge_in.to_json()),
            Event::TalkDone { id, reason } => {
                self.publish("talk:done", json!({ "source": "api", "talk_id": id, "reason": reason.as_str() }))
            }
            Event::Custom { name: "stream:done", data } => {
                let mut fields = Value::clone(data);
                fields["source"] = json!("play");
                self.publish("stream:done", fields);
            }
            Event::Custom { name, data } => self.publish(name, Value::clone(data)),
            Event::NotifyPlayed { .. } | Event::Cleared => {}
        }
    }
}

/// Uploads a finished recording and says how it went in its event's fields: `url` once it is
/// stored (and `file_kept: false` when the local file was removed), or `upload_error`.
pub(super) async fn upload_into(shared: &Shared, file: &std::path::Path, target: &crate::call::UploadTarget, fields: &mut Value) {
    match shared.services.uploads.upload(file, target).await {
        Ok(uploaded) => {
            fields["url"] = json!(uploaded.url);
            if !target.keep_local {
                fields["file_kept"] = json!(uploaded.kept);
            }
        }
        Err(error) => fields["upload_error"] = json!(error),
    }
}

/// The writer's report that a recording's file is final, waited for until `deadline`.
async fn final_outcome(
    outcomes: std::sync::mpsc::Receiver<crate::processor::RecordingOutcome>,
    deadline: tokio::time::Instant,
) -> Option<crate::processor::RecordingOutcome> {
    loop {
        match outcomes.try_recv() {
            Ok(outcome) => return Some(outcome),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            Err(_) if tokio::time::Instant::now() >= deadline => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
