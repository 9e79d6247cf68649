//! The control API's voice features in a session: its talk (`PUT /calls/{id}/talk`), its
//! digit collection (`PUT /calls/{id}/input`), and barge-in on the API's stream and talk.
//!
//! Before each pass the session looks at the events the processors are about to see (the
//! platform's keys, in-band keys, `speech:started` from a `vad`): one that interrupts the API's
//! stream or talk (as its `barge_in` says) stops it, clears callpipe's queue and the platform's
//! buffer, and emits its done event and a `barge_in` event; a key goes to the collection under
//! way. Wall passes check the collection's time-out. Everything here is plain data: nothing
//! is allocated or freed (a talk's memory belongs to the synthesis thread).

use std::time::Instant;

use super::Session;
use crate::call::{BargeCause, BargeIn, BargeInMode, Event, Interrupted, StreamEnd, TalkEnd};
use crate::processor::InputCollector;
use crate::services::tts::TalkAudio;

/// The API's talk playing into a call.
#[derive(Debug)]
pub(super) struct ApiTalk {
    pub id: u64,
    pub audio: TalkAudio,
    pub barge_in: BargeInMode,
}

impl Session {
    /// Ends the API's talk, if one plays, with a `talk:done` event, and stops its synthesis.
    pub(super) fn end_talk(&mut self, reason: TalkEnd) {
        if let Some(talk) = self.talk.take() {
            talk.audio.shared().cancel();
            self.emit_own(Event::TalkDone { id: talk.id, reason });
        }
    }

    /// Starts a collection of keys, replacing one under way.
    pub(super) fn start_input(&mut self, mut collector: InputCollector) {
        collector.start(self.next_wall.unwrap_or_else(Instant::now));
        self.input_collector = Some(collector);
    }

    /// Applies the events of this pass to the API's audio and collection (see the module docs).
    pub(super) fn watch_events(&mut self, now: Instant) {
        let events = std::mem::take(&mut self.events_now);
        for (_, event) in &events {
            if let Some(cause) = self.stream.as_ref().and_then(|s| s.barge_in.interrupted_by(event)) {
                self.barge_in_stream(cause);
            }
            if let Some(cause) = self.talk.as_ref().and_then(|t| t.barge_in.interrupted_by(event)) {
                self.barge_in_talk(cause);
            }
            if let Some(digit) = event.new_key()
                && let Some(result) = self.input_collector.as_mut().and_then(|c| c.key(digit, now))
            {
                self.input_collector = None;
                self.emit_own(Event::Input(result));
            }
        }
        self.events_now = events;
    }

    /// Ends a collection whose time is up.
    pub(super) fn tick_input(&mut self, now: Instant) {
        if let Some(result) = self.input_collector.as_mut().and_then(|c| c.tick(now)) {
            self.input_collector = None;
            self.emit_own(Event::Input(result));
        }
    }

    fn barge_in_stream(&mut self, cause: BargeCause) {
        let Some(stream) = self.stream.as_ref() else { return };
        let played_ms = stream.playback.played() * 1000 / u64::from(self.rate.hz());
        let id = stream.id;
        self.end_stream(StreamEnd::BargeIn);
        self.clear_outbound();
        self.emit_own(Event::BargeIn(BargeIn { interrupted: Interrupted::Stream { id }, cause, played_ms }));
    }

    fn barge_in_talk(&mut self, cause: BargeCause) {
        let Some(talk) = self.talk.as_ref() else { return };
        let played_ms = talk.audio.played() * 1000 / u64::from(self.rate.hz());
        let id = talk.id;
        self.end_talk(TalkEnd::BargeIn);
        self.clear_outbound();
        self.emit_own(Event::BargeIn(BargeIn { interrupted: Interrupted::Talk { id }, cause, played_ms }));
    }
}
