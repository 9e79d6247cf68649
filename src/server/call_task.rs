//! A call's task on the runtime, from admission to its `ended` event.
//!
//! The call's audio never comes here: its socket and session live on a media thread. The task
//! carries what the runtime is for: the control API's commands (hang-ups, and media commands
//! into the call's control ring), the call's events to the event bus and webhooks (the
//! processors' events arrive through a ring; the media thread wakes the task when there are
//! some), and, once the media thread has finished the call, its report: the `recording` events
//! when the files are final, the conference's bookkeeping, the `ended` event with the close
//! code and counters, and the call's place in the list of ended calls.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use ringbuf::traits::{Consumer, Producer};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::call_events::{CallEvents, FINALIZE_WAIT, upload_into};
use super::calls::{CallCommand, CallStatus, CallView, LiveCall};
use super::{ConnectionGuard, Shared};
use crate::media::{ConnEnd, Hangup};
use crate::processor::{ConferenceState, Membership};
use crate::session::{CloseCode, Control, SharedAudio};

/// A conference member's track: its file, its start on the conference's timeline, and the
/// writer's report once it is final.
type TrackEnd = (std::path::PathBuf, Duration, std::sync::mpsc::Receiver<crate::call::RecordingOutcome>);

/// A call's task. See the [module docs](self).
pub(super) struct CallTask {
    shared: Arc<Shared>,
    call: Arc<LiveCall>,
    end: ConnEnd,
    commands: mpsc::Receiver<CallCommand>,
    /// A command waiting for room in the control ring.
    pending: Option<Control>,
    /// Audio the API handed to the media thread: dropped here once the session has let go.
    retained: Vec<SharedAudio>,
    events: CallEvents,
    route_index: usize,
    membership: Option<Membership>,
}

impl CallTask {
    pub fn new(
        shared: Arc<Shared>,
        call: Arc<LiveCall>,
        end: ConnEnd,
        commands: mpsc::Receiver<CallCommand>,
        events: CallEvents,
        route_index: usize,
        membership: Option<Membership>,
    ) -> CallTask {
        CallTask { shared, call, end, commands, pending: None, retained: Vec::new(), events, route_index, membership }
    }

    /// The call could not be handed to a media thread.
    pub async fn fail(mut self, error: &str) {
        if let Some(m) = &self.membership {
            leave_conference(&self.shared, m);
        }
        self.shared.stats.count_close(CloseCode::Internal);
        warn!(id = self.call.id.as_str(), error, "call refused");
        self.events.publish("error", json!({ "error": error, "close_code": 1011 }));
    }

    /// Runs the call: registers it, serves its commands and events until the media thread has
    /// finished it, then reports its end. `permit` is the call's place in the server's capacity.
    pub async fn run(mut self, permit: Option<OwnedSemaphorePermit>, _guard: ConnectionGuard) {
        let shared = self.shared.clone();
        let call = self.call.clone();
        let route = &shared.config.routes[self.route_index];
        let track = self.membership.as_mut().and_then(|m| m.track.take());
        if let Some(m) = self.membership.as_ref().filter(|m| m.started) {
            let fields = json!({ "rate": m.conference.settings().rate, "recording": m.conference.mixed_path() });
            publish_conference(&shared, &m.conference, "conference:started", fields);
        }
        shared.calls.insert(call.clone());
        if let Some(cluster) = shared.cluster.as_ref().filter(|_| !call.conference_link) {
            cluster.call_started(&call.id, &call.path, call.started_at);
        }
        shared.stats.calls_total.fetch_add(1, Ordering::Relaxed);
        shared.stats.calls_active.fetch_add(1, Ordering::AcqRel);
        if let Some(r) = shared.stats.routes.get(self.route_index) {
            r.calls_total.fetch_add(1, Ordering::Relaxed);
            r.calls_active.fetch_add(1, Ordering::Relaxed);
        }
        info!(id = call.id.as_str(), path = call.path, rate = call.rate.hz(), processors = route.processors.len(), "call started");
        let started = json!({ "rate": call.rate.hz(), "metadata": call.metadata, "start_time": crate::events::timestamp(call.started_at) });
        self.events.publish("started", started);

        poll_fn(|cx| self.poll(cx)).await;
        // The end's futures (recordings, uploads) are far larger than the live call's: boxed,
        // they take memory only once the call has ended.
        Box::pin(self.finish(permit, track)).await;
    }

    /// The media thread has finished the call: reports its end, gives back its place, and
    /// publishes what it left.
    async fn finish(mut self, permit: Option<OwnedSemaphorePermit>, track: Option<TrackEnd>) {
        let shared = self.shared.clone();
        let call = self.call.clone();
        self.drain_events();
        self.drain_last_events();
        let link = &self.end.link;
        let s = link.stats.session();
        let close_code = match link.close_code.load(Ordering::Acquire) {
            0 => 1006,
            code => i32::from(code),
        };
        let mut view = call.view();
        view.status = CallStatus::Ended;
        view.end_time = Some(crate::events::timestamp(SystemTime::now()));
        view.close_code = Some(close_code);
        view.players_active = 0;
        info!(
            id = call.id.as_str(),
            path = call.path,
            rate = call.rate.hz(),
            close = close_code,
            duration_s = format!("{:.2}", view.duration_s),
            frames_in = view.frames_in,
            frames_out = view.frames_out,
            late = view.late_frames,
            dropped_in = view.dropped_in,
            dropped_out = view.dropped_out,
            wrong_size = view.wrong_size,
            catchups = s.catchups,
            "call ended"
        );
        let conference = self.membership.take().map(|m| {
            leave_conference(&shared, &m);
            m.conference.clone()
        });
        let ended = ended_event(&view);
        // The call's counters move into the server's totals in the same step that takes it off
        // the live list, so that /metrics (which adds both) never counts it twice or not at all.
        shared.calls.end(call.serial, view, || {
            let r = Ordering::Relaxed;
            shared.stats.ring_overrun_in_bytes.fetch_add(link.stats.ring_overrun_in_bytes.load(r), r);
            shared.stats.ring_overrun_out.fetch_add(link.stats.ring_overrun_out.load(r), r);
            shared.stats.input_missing.fetch_add(s.input_missing, r);
        });
        if let Some(cluster) = shared.cluster.as_ref().filter(|_| !call.conference_link) {
            cluster.call_ended(&call.id);
        }
        if let Some(r) = shared.stats.routes.get(self.route_index) {
            r.calls_active.fetch_sub(1, Ordering::Relaxed);
        }
        // The call is over: its place goes to the next call now, while what it left (its
        // recordings finalized, and uploaded when the route says so) is published.
        drop(permit);
        if shared.stats.calls_active.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.idle.notify_waiters();
        }
        if let (Some(conference), Some((file, offset, outcomes))) = (conference, track) {
            self.events.publish_track(&file, offset, outcomes, &conference).await;
        }
        self.events.publish_recordings().await;
        self.events.publish("ended", ended);
    }

    /// Until the media thread has finished the call: commands in, events out.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.end.link.waker.register(cx.waker());
        self.poll_commands(cx);
        self.drain_events();
        if self.end.link.is_media_done() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Takes the control API's commands: hang-ups here, media commands into the control ring.
    fn poll_commands(&mut self, cx: &mut Context<'_>) {
        self.retained.retain(|audio| Arc::strong_count(audio) > 1);
        loop {
            if let Some(command) = self.pending.take() {
                if let Err(command) = self.end.control_in.try_push(command) {
                    // The ring is full: wait for the media thread, and leave the channel full so
                    // that the API answers 503 meanwhile.
                    self.pending = Some(command);
                    return;
                }
                self.end.link.notify_media();
            }
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(CallCommand::Hangup)) => {
                    self.shared.stats.hangups_api.fetch_add(1, Ordering::Relaxed);
                    info!(id = self.call.id.as_str(), "hanging up: control API");
                    self.end.link.hang_up(Hangup::Api);
                }
                Poll::Ready(Some(CallCommand::Media(command))) => {
                    let command = *command;
                    if let Control::Stream { audio, .. } | Control::Dtmf { audio } = &command {
                        self.retained.push(audio.clone());
                    }
                    self.pending = Some(command);
                }
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    /// Publishes the events the session and its processors emitted.
    fn drain_events(&mut self) {
        while let Some(event) = self.end.events_out.try_pop() {
            self.events.processor_event(&event);
        }
    }

    /// Publishes the events the media thread handed over at the call's end (after the ring's,
    /// which came before them).
    fn drain_last_events(&mut self) {
        let last = self.end.link.last_events.lock().map(|mut last| std::mem::take(&mut *last)).unwrap_or_default();
        for event in &last {
            self.events.processor_event(event);
        }
    }
}

fn ended_event(view: &CallView) -> Value {
    json!({
        "duration_s": view.duration_s,
        "close_code": view.close_code,
        "hangup": view.hangup,
        "frames_in": view.frames_in,
        "frames_out": view.frames_out,
        "late_frames": view.late_frames,
        "dropped_in": view.dropped_in,
        "dropped_out": view.dropped_out,
        "wrong_size": view.wrong_size,
        "end_time": view.end_time,
    })
}

/// Publishes a conference's own event (no call: `conference` instead of `call_id`), to the log
/// and to the `event_url` of the route of the member that started it.
fn publish_conference(shared: &Shared, conference: &ConferenceState, kind: &str, fields: Value) {
    let mut event = json!({
        "event": kind,
        "conference": conference.name(),
        "timestamp": crate::events::timestamp(SystemTime::now()),
    });
    if let (Value::Object(event), Value::Object(fields)) = (&mut event, fields) {
        for (key, value) in fields {
            event.entry(key).or_insert(value);
        }
    }
    shared.events.publish(event, conference.event_url());
}

/// Takes a member out of its conference; after the last one, publishes `conference:ended` once
/// the mixed recording (if any) is final.
fn leave_conference(shared: &Arc<Shared>, membership: &Membership) {
    let Some(conference) = shared.conferences.leave(membership) else { return };
    if let Some(cluster) = &shared.cluster {
        cluster.conference_ended(conference.name());
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        // The mixer notices within a cycle; the writer finalizes within a poll interval or two.
        let waiting = conference.clone();
        let outcome = tokio::task::spawn_blocking(move || waiting.wait_for_mixed(FINALIZE_WAIT)).await.ok().flatten();
        let mut recording = outcome
            .as_ref()
            .map(|o| json!({ "file": o.path, "duration_ms": o.duration_ms, "samples": o.samples, "dropped": o.dropped, "error": o.error }));
        if let (Some(o), Some(fields), Some(target)) = (&outcome, recording.as_mut(), &conference.settings().upload)
            && o.error.is_none()
        {
            upload_into(&shared, &o.path, target, fields).await;
        }
        let duration_ms = conference.started().elapsed().map_or(0, |d| d.as_millis() as u64);
        let fields = json!({ "duration_ms": duration_ms, "members_total": conference.joined_total(), "recording": recording });
        publish_conference(&shared, &conference, "conference:ended", fields);
    });
}
