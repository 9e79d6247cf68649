//! The call's edge: the per-call protocol rules between the socket and the media thread, as a
//! state machine with no socket and no clock of its own (time is an argument).
//!
//! The connection loop feeds it what the socket delivers ([`CallEdge::handle_binary`],
//! [`CallEdge::handle_text`], [`CallEdge::handle_ping`]) and asks it which limit falls due
//! ([`CallEdge::poll_limit`]) and when to ask again ([`CallEdge::next_deadline`]). It decides:
//! the frame-size policy, where a message's samples begin and end (a sample split across two
//! messages), the text-message rate limit (a token bucket), the idle and maximum
//! duration limits, and what a platform text message means (an event for the media thread, the
//! acknowledgement of a `notify` callpipe's control API or its processors sent, or nothing).
//! Tests drive it with byte literals and a fake clock.

use std::time::{Duration, Instant};

use crate::call::Marker;
use crate::config::FramePolicy;
use crate::protocol::{NOTIFY_MARKER_KEY, PlatformEvent, SampleRate};
use crate::session::{CloseCode, InboundEvent, Rejection};

/// The limits of one call (from `[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EdgeLimits {
    /// What a frame of the wrong size does.
    pub frame_policy: FramePolicy,
    /// Text messages a second, in bursts of as many.
    pub max_text_per_second: u32,
    /// Longest time without any message.
    pub idle_timeout: Option<Duration>,
    /// Longest call.
    pub max_duration: Option<Duration>,
}

/// What a binary message was, and the caller's audio it carries, to deliver in this order:
/// `completes`, then `samples`.
///
/// Messages carry whole samples. An odd-length one (the lenient policy) holds half a sample at
/// its end: it is held back, and completed by the next message if that one is odd too (a sample
/// split across two messages); an even-length one after it shows it was a stray byte, dropped,
/// so the samples after it keep their alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Audio<'a> {
    /// Not exactly one frame (re-framed, and counted, under the lenient policy).
    pub wrong_size: bool,
    /// The byte held back from the previous message, which this one's first byte completes.
    pub completes: Option<u8>,
    /// The message's bytes but an odd last one (held back for the next message).
    pub samples: &'a [u8],
}

/// What a text message from the platform means.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Text {
    /// An event for the media thread.
    Event(InboundEvent),
    /// The platform has played everything before a `notify` of the control API: the marker,
    /// for its payload; the media thread is told too.
    ApiNotifyPlayed(Marker),
    /// Likewise for a `notify` a processor asked for.
    ProcessorNotifyPlayed(Marker),
    /// Nothing for callpipe: an unknown event, a `notify` callpipe did not send, text that does
    /// not parse. `bad` says it did not parse (counted); the string says why, for the log.
    Ignored { bad: bool, why: String },
}

/// A limit that fell due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Limit {
    /// Nothing received for the idle timeout: close with this.
    Idle(Rejection),
    /// The maximum duration is reached: callpipe hangs up (once).
    MaxDuration,
}

/// One call's edge. See the [module docs](self).
#[derive(Debug)]
pub(super) struct CallEdge {
    rate: SampleRate,
    limits: EdgeLimits,
    started: Instant,
    last_activity: Instant,
    texts: TextLimit,
    hung_up: bool,
    /// The last byte of an odd-length audio message: half a sample (see [`Audio`]).
    odd_byte: Option<u8>,
}

impl CallEdge {
    /// The edge of a call at `rate` that started at `started`.
    pub fn new(rate: SampleRate, limits: EdgeLimits, started: Instant) -> CallEdge {
        CallEdge {
            rate,
            limits,
            started,
            last_activity: started,
            texts: TextLimit::new(limits.max_text_per_second, started),
            hung_up: false,
            odd_byte: None,
        }
    }

    /// A binary message arrived at `now`: what it carries, or why the call closes (1007 for a
    /// wrong size under the strict policy).
    pub fn handle_binary<'a>(&mut self, now: Instant, bytes: &'a [u8]) -> Result<Audio<'a>, Rejection> {
        self.last_activity = now;
        let len = bytes.len();
        let wrong_size = len != self.rate.frame_bytes();
        if wrong_size && self.limits.frame_policy == FramePolicy::Strict {
            let reason = format!("frame of {len} bytes, expected {} at {}", self.rate.frame_bytes(), self.rate);
            return Err(Rejection::new(CloseCode::Invalid, reason));
        }
        let odd = len % 2 == 1;
        Ok(match (self.odd_byte.take(), odd) {
            (Some(held), true) => Audio { wrong_size, completes: Some(held), samples: bytes },
            (None, true) => {
                let (samples, last) = bytes.split_at(len - 1);
                self.odd_byte = Some(last[0]);
                Audio { wrong_size, completes: None, samples }
            }
            (_, false) => Audio { wrong_size, completes: None, samples: bytes },
        })
    }

    /// A text message arrived at `now`. Past the rate limit the call is closed with 1008.
    pub fn handle_text(&mut self, now: Instant, text: &str) -> Result<Text, Rejection> {
        self.last_activity = now;
        if !self.texts.allow(now) {
            let reason = format!("more than {} text messages per second", self.limits.max_text_per_second);
            return Err(Rejection::new(CloseCode::Policy, reason));
        }
        let event = match PlatformEvent::parse(text) {
            Ok(event) => event,
            Err(e) => return Ok(Text::Ignored { bad: true, why: e.to_string() }),
        };
        Ok(match event {
            PlatformEvent::Dtmf { digit, duration_ms } => Text::Event(InboundEvent::Dtmf { digit, duration_ms }),
            PlatformEvent::Cleared => Text::Event(InboundEvent::Cleared),
            PlatformEvent::Notify { payload } => match payload.get(NOTIFY_MARKER_KEY).and_then(serde_json::Value::as_u64) {
                Some(marker) if Marker(marker).is_api() => Text::ApiNotifyPlayed(Marker(marker)),
                Some(marker) => Text::ProcessorNotifyPlayed(Marker(marker)),
                None => Text::Ignored { bad: false, why: format!("a notify for a payload callpipe did not send: {payload}") },
            },
            PlatformEvent::Unknown { event } => Text::Ignored { bad: false, why: format!("an unknown event: {event}") },
        })
    }

    /// A ping arrived at `now` (it counts as activity). Pings share the text messages' rate
    /// limit: a ping flood is closed with 1008 like a text flood.
    pub fn handle_ping(&mut self, now: Instant) -> Result<(), Rejection> {
        self.last_activity = now;
        if !self.texts.allow(now) {
            let reason = format!("more than {} text and ping messages per second", self.limits.max_text_per_second);
            return Err(Rejection::new(CloseCode::Policy, reason));
        }
        Ok(())
    }

    /// Callpipe is hanging up for another reason: the maximum duration no longer applies.
    pub fn handle_hangup(&mut self) {
        self.hung_up = true;
    }

    /// The limit that falls due at `now`, if any. [`Limit::MaxDuration`] comes once.
    pub fn poll_limit(&mut self, now: Instant) -> Option<Limit> {
        if let Some(idle) = self.limits.idle_timeout
            && now.saturating_duration_since(self.last_activity) >= idle
        {
            let reason = format!("nothing received for {} s", idle.as_secs_f64());
            return Some(Limit::Idle(Rejection::new(CloseCode::Policy, reason)));
        }
        if let Some(max) = self.limits.max_duration
            && !self.hung_up
            && now.saturating_duration_since(self.started) >= max
        {
            self.hung_up = true;
            return Some(Limit::MaxDuration);
        }
        None
    }

    /// The earliest instant a limit could fall due, given what has happened so far.
    pub fn next_deadline(&self) -> Option<Instant> {
        let idle = self.limits.idle_timeout.map(|idle| self.last_activity + idle);
        let max = self.limits.max_duration.filter(|_| !self.hung_up).map(|max| self.started + max);
        match (idle, max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A token bucket over a call's text messages: `per_second` a second, bursts of as many.
#[derive(Debug)]
struct TextLimit {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl TextLimit {
    fn new(per_second: u32, now: Instant) -> TextLimit {
        let per_second = f64::from(per_second.max(1));
        TextLimit { per_second, tokens: per_second, at: now }
    }

    /// Whether one more message at `now` is within the limit.
    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DtmfDigit;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> EdgeLimits {
        EdgeLimits {
            frame_policy: FramePolicy::Lenient,
            max_text_per_second: 10,
            idle_timeout: Some(Duration::from_millis(400)),
            max_duration: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn the_text_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = TextLimit::new(10, t0);
        assert!((0..10).all(|_| limit.allow(t0)), "a burst of ten");
        assert!(!limit.allow(t0), "the eleventh at once is refused");
        assert!(limit.allow(t0 + 100 * MS), "one more after 100 ms");
        assert!(!limit.allow(t0 + 110 * MS));
        // A steady 9 a second never trips it.
        let mut steady = TextLimit::new(10, t0);
        assert!((1..=100).all(|i| steady.allow(t0 + 111 * MS * i)));
    }

    #[test]
    fn a_text_flood_is_closed_1008_with_its_reason() {
        let t0 = Instant::now();
        let mut edge = CallEdge::new(SampleRate::Hz8000, limits(), t0);
        let dtmf = r#"{"event":"websocket:dtmf","digit":"1"}"#;
        for _ in 0..10 {
            assert!(edge.handle_text(t0, dtmf).is_ok());
        }
        let refused = edge.handle_text(t0, dtmf).unwrap_err();
        assert_eq!(refused.code, CloseCode::Policy);
        assert_eq!(refused.reason, "more than 10 text messages per second");
    }

    #[test]
    fn frames_of_the_wrong_size_are_counted_or_closed_1007() {
        let t0 = Instant::now();
        let mut edge = CallEdge::new(SampleRate::Hz16000, limits(), t0);
        assert!(!edge.handle_binary(t0, &[0; 640]).unwrap().wrong_size);
        assert!(edge.handle_binary(t0, &[0; 642]).unwrap().wrong_size);
        let strict = EdgeLimits { frame_policy: FramePolicy::Strict, ..limits() };
        let mut edge = CallEdge::new(SampleRate::Hz16000, strict, t0);
        let refused = edge.handle_binary(t0, &[0; 320]).unwrap_err();
        assert_eq!((refused.code, refused.reason.as_str()), (CloseCode::Invalid, "frame of 320 bytes, expected 640 at 16000 Hz"));
    }

    #[test]
    fn a_sample_split_across_messages_is_joined_and_a_stray_byte_dropped() {
        let t0 = Instant::now();
        let mut edge = CallEdge::new(SampleRate::Hz8000, limits(), t0);
        let audio = |completes, samples| Audio { wrong_size: true, completes, samples };
        // Samples 1, 2, 3 as 1 + 3 + 2 bytes: the odd byte waits, the next odd message completes it.
        assert_eq!(edge.handle_binary(t0, &[1]), Ok(audio(None, &[][..])));
        assert_eq!(edge.handle_binary(t0, &[0, 2, 0]), Ok(audio(Some(1), &[0, 2, 0][..])));
        assert_eq!(edge.handle_binary(t0, &[3, 0]), Ok(audio(None, &[3, 0][..])));
        // A stray byte: the even message after it starts on a sample again, the byte is gone.
        assert_eq!(edge.handle_binary(t0, &[4, 0, 9]), Ok(audio(None, &[4, 0][..])));
        assert_eq!(edge.handle_binary(t0, &[5, 0]), Ok(audio(None, &[5, 0][..])));
        let frame = [6; 320];
        assert_eq!(edge.handle_binary(t0, &frame), Ok(Audio { wrong_size: false, completes: None, samples: &frame[..] }));
    }

    #[test]
    fn idle_and_maximum_duration_fall_due_on_the_clock() {
        let t0 = Instant::now();
        let mut edge = CallEdge::new(SampleRate::Hz8000, limits(), t0);
        assert_eq!(edge.next_deadline(), Some(t0 + 400 * MS));
        assert_eq!(edge.poll_limit(t0 + 399 * MS), None);
        edge.handle_binary(t0 + 300 * MS, &[0; 320]).unwrap();
        assert_eq!(edge.next_deadline(), Some(t0 + 700 * MS), "activity moves the idle deadline");
        edge.handle_ping(t0 + 650 * MS).unwrap();
        edge.handle_text(t0 + 900 * MS, "not json").unwrap();
        assert_eq!(edge.next_deadline(), Some(t0 + 1000 * MS), "the maximum duration comes first now");
        assert_eq!(edge.poll_limit(t0 + 1000 * MS), Some(Limit::MaxDuration));
        assert_eq!(edge.poll_limit(t0 + 1001 * MS), None, "the hang-up comes once");
        assert_eq!(edge.next_deadline(), Some(t0 + 1300 * MS));
        let Some(Limit::Idle(rejection)) = edge.poll_limit(t0 + 1300 * MS) else { panic!("idle") };
        assert_eq!((rejection.code, rejection.reason.as_str()), (CloseCode::Policy, "nothing received for 0.4 s"));
    }

    #[test]
    fn a_ping_flood_is_closed_like_a_text_flood() {
        let t0 = Instant::now();
        let mut edge = CallEdge::new(SampleRate::Hz8000, limits(), t0);
        for i in 0..10 {
            assert!(edge.handle_ping(t0 + i * MS).is_ok(), "a burst of the limit's size");
        }
        let rejection = edge.handle_ping(t0 + 10 * MS).unwrap_err();
        assert_eq!((rejection.code, rejection.reason.as_str()), (CloseCode::Policy, "more than 10 text and ping messages per second"));
        assert!(edge.handle_ping(t0 + 1000 * MS).is_ok(), "the bucket refills");
    }

    #[test]
    fn platform_text_becomes_events_acknowledgements_or_nothing() {
        let t0 = Instant::now();
        let mut edge = CallEdge::new(SampleRate::Hz8000, EdgeLimits { max_text_per_second: 100, ..limits() }, t0);
        let mut text = |t: &str| edge.handle_text(t0, t).unwrap();
        let five = DtmfDigit::from_char('5').unwrap();
        assert_eq!(
            text(r#" {"event":"websocket:dtmf","digit":"5","duration":120}"#),
            Text::Event(InboundEvent::Dtmf { digit: five, duration_ms: Some(120) })
        );
        assert_eq!(text(r#"{"event":"websocket:cleared"}"#), Text::Event(InboundEvent::Cleared));
        assert_eq!(text(r#"{"event":"websocket:notify","payload":{"callpipe_marker":7}}"#), Text::ProcessorNotifyPlayed(Marker(7)));
        let api = Marker::api(3);
        assert_eq!(text(&format!(r#"{{"event":"websocket:notify","payload":{{"callpipe_marker":{api}}}}}"#)), Text::ApiNotifyPlayed(api));
        assert!(matches!(text(r#"{"event":"websocket:notify","payload":{"mine":1}}"#), Text::Ignored { bad: false, .. }));
        assert!(matches!(text(r#"{"event":"something:new"}"#), Text::Ignored { bad: false, .. }));
        assert!(matches!(text("{"), Text::Ignored { bad: true, .. }));
    }
}
