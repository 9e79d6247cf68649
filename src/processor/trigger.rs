//! What starts a processor that waits: `on_digit` (a key from the caller, reported by the
//! platform or detected in-band) or `on_event` (the name of another event of the call, e.g.
//! `stream:done`, `talk:done`, `input`). `play`, `talk` and `input` take both parameters and
//! read them through [`Trigger`], so a key or an event starts each of them the same way.
//!
//! An `on_event` trigger hears the events of the stages before it in the route (and those from
//! outside the stages: the platform, the control API), not those after it: in
//! `[talk prompt, input on "talk:done", talk "Thank you" on "input"]` the confirmation's own
//! `talk:done` would otherwise start the input again, and the two would loop until the call
//! ends. Keys count from anywhere, since `dtmf_detect` is often last.

use super::Event;
use crate::protocol::DtmfDigit;

/// A processor's `on_digit` and `on_event`, borrowed from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trigger<'a> {
    on_digit: Option<DtmfDigit>,
    on_event: Option<&'a str>,
}

impl<'a> Trigger<'a> {
    /// The trigger of a processor with these parameters.
    pub(crate) fn new(on_digit: Option<DtmfDigit>, on_event: Option<&'a str>) -> Trigger<'a> {
        Trigger { on_digit, on_event }
    }

    /// Checks `on_event`; `example` names an event the processor is often started by.
    pub(crate) fn check(&self, example: &str) -> Result<(), String> {
        match self.on_event {
            Some("") => Err(format!("`on_event` must name an event, e.g. \"{example}\"")),
            _ => Ok(()),
        }
    }

    /// Whether the processor waits for its trigger rather than starting with the call.
    pub(crate) fn waits(&self) -> bool {
        self.on_digit.is_some() || self.on_event.is_some()
    }

    /// Whether `event` starts the processor: a new key equal to `on_digit` (the merged twin of
    /// a key already seen does not start it again), from wherever it came, or any other event
    /// named `on_event` that came from `upstream` (the platform, the control API, or a stage
    /// before this one: [`Context::event_from_upstream`](super::Context::event_from_upstream)).
    pub(crate) fn fired_by(&self, event: &Event, upstream: bool) -> bool {
        match event {
            Event::Dtmf { .. } => event.new_key().is_some_and(|key| self.on_digit == Some(key)),
            other => upstream && self.on_event.is_some_and(|name| name == other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{DtmfSource, Speech};

    fn key(digit: u8, source: DtmfSource) -> Event {
        Event::Dtmf { digit: DtmfDigit::Digit(digit), start_ms: None, duration_ms: None, source }
    }

    #[test]
    fn a_key_or_a_named_event_fires_once() {
        let on_five = Trigger::new(Some(DtmfDigit::Digit(5)), None);
        assert!(on_five.waits());
        assert!(on_five.fired_by(&key(5, DtmfSource::Platform), true));
        assert!(on_five.fired_by(&key(5, DtmfSource::Inband), false), "a key from dtmf_detect after it");
        assert!(!on_five.fired_by(&key(5, DtmfSource::Both), true), "a merged twin is not a new key");
        assert!(!on_five.fired_by(&key(4, DtmfSource::Platform), true));

        let on_speech = Trigger::new(None, Some("speech:started"));
        assert!(on_speech.fired_by(&Event::Speech(Speech::Started { start_ms: 0 }), true));
        assert!(!on_speech.fired_by(&Event::Speech(Speech::Started { start_ms: 0 }), false), "not from a stage after it");
        assert!(!on_speech.fired_by(&Event::Speech(Speech::Stopped { start_ms: 0, duration_ms: 1 }), true));
        let on_dtmf_name = Trigger::new(None, Some("dtmf"));
        assert!(!on_dtmf_name.fired_by(&key(1, DtmfSource::Platform), true), "keys start a trigger through on_digit only");

        let never = Trigger::new(None, None);
        assert!(!never.waits());
        assert!(!never.fired_by(&key(1, DtmfSource::Platform), true));
        assert_eq!(Trigger::new(None, Some("")).check("talk:done").unwrap_err(), "`on_event` must name an event, e.g. \"talk:done\"");
        assert!(on_speech.check("talk:done").is_ok());
    }
}
