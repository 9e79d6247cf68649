//! Text messages after the metadata: what the platform sends (docs/protocol.md section 4) and what
//! callpipe may send (section 5).
//!
//! Unknown events parse to [`PlatformEvent::Unknown`] so that the caller can log and ignore them:
//! they are never fatal.

use std::fmt;

use serde_json::{Map, Value};

use super::MessageError;

/// A DTMF key: `0-9`, `*`, `#`, and the rarely used `A-D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfDigit {
    /// A decimal digit, 0 to 9.
    Digit(u8),
    /// `*`
    Star,
    /// `#`
    Pound,
    /// The fourth-column keys `A` to `D`, as `b'A'..=b'D'`.
    Letter(u8),
}

impl DtmfDigit {
    /// Every key, in keypad order.
    pub const ALL: [DtmfDigit; 16] = [
        DtmfDigit::Digit(1),
        DtmfDigit::Digit(2),
        DtmfDigit::Digit(3),
        DtmfDigit::Letter(b'A'),
        DtmfDigit::Digit(4),
        DtmfDigit::Digit(5),
        DtmfDigit::Digit(6),
        DtmfDigit::Letter(b'B'),
        DtmfDigit::Digit(7),
        DtmfDigit::Digit(8),
        DtmfDigit::Digit(9),
        DtmfDigit::Letter(b'C'),
        DtmfDigit::Star,
        DtmfDigit::Digit(0),
        DtmfDigit::Pound,
        DtmfDigit::Letter(b'D'),
    ];

    /// The low-group (row) frequencies in Hz, ITU-T Q.23; [`ALL`](Self::ALL) is in row order.
    pub const ROW_HZ: [f64; 4] = [697.0, 770.0, 852.0, 941.0];

    /// The high-group (column) frequencies in Hz, ITU-T Q.23.
    pub const COLUMN_HZ: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

    /// The key's (row, column) position on the 4 × 4 keypad.
    pub fn keypad_position(self) -> (usize, usize) {
        let index = DtmfDigit::ALL.iter().position(|d| *d == self).unwrap_or(0);
        (index / 4, index % 4)
    }

    /// The key's (low, high) frequency pair in Hz, ITU-T Q.23.
    pub fn frequencies(self) -> (f64, f64) {
        let (row, column) = self.keypad_position();
        (DtmfDigit::ROW_HZ[row], DtmfDigit::COLUMN_HZ[column])
    }

    /// The key a string of exactly one character names, if it does (letters in either case).
    pub fn from_key(text: &str) -> Option<DtmfDigit> {
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => DtmfDigit::from_char(c),
            _ => None,
        }
    }

    /// The key for a character, if it is one (letters in either case).
    pub fn from_char(c: char) -> Option<DtmfDigit> {
        match c {
            '0'..='9' => Some(DtmfDigit::Digit(c as u8 - b'0')),
            '*' => Some(DtmfDigit::Star),
            '#' => Some(DtmfDigit::Pound),
            'A'..='D' => Some(DtmfDigit::Letter(c as u8)),
            'a'..='d' => Some(DtmfDigit::Letter(c.to_ascii_uppercase() as u8)),
            _ => None,
        }
    }

    /// The key as a character.
    pub fn as_char(self) -> char {
        match self {
            DtmfDigit::Digit(d) => (b'0' + d) as char,
            DtmfDigit::Star => '*',
            DtmfDigit::Pound => '#',
            DtmfDigit::Letter(l) => l as char,
        }
    }
}

impl fmt::Display for DtmfDigit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// A text message from the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformEvent {
    /// `websocket:dtmf`: a keypress the platform detected.
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// How long it was held, in ms, when the platform says.
        duration_ms: Option<u32>,
    },
    /// `websocket:cleared`: acknowledges our `clear`.
    Cleared,
    /// `websocket:notify`: everything sent before our `notify` has played.
    Notify {
        /// The payload of our `notify`, echoed unchanged.
        payload: Value,
    },
    /// Any other event: to be logged and ignored.
    Unknown {
        /// The `event` field, or empty when there was none.
        event: String,
    },
}

impl PlatformEvent {
    /// Parses a text frame from the platform.
    pub fn parse(text: &str) -> Result<PlatformEvent, MessageError> {
        let fields = parse_object(text)?;
        let event = fields.get("event").and_then(Value::as_str).unwrap_or_default().trim();
        match event {
            "websocket:dtmf" => {
                let digit = fields
                    .get("digit")
                    .and_then(|d| match d {
                        Value::String(s) => DtmfDigit::from_key(s.trim()),
                        Value::Number(n) => n.as_u64().filter(|d| *d < 10).map(|d| DtmfDigit::Digit(d as u8)),
                        _ => None,
                    })
                    .ok_or(MessageError::BadField("digit"))?;
                let duration_ms = match fields.get("duration") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => n.as_f64().filter(|d| d.is_finite() && *d >= 0.0).map(|d| d.min(u32::MAX as f64) as u32),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    Some(_) => None,
                };
                Ok(PlatformEvent::Dtmf { digit, duration_ms })
            }
            "websocket:cleared" => Ok(PlatformEvent::Cleared),
            "websocket:notify" => Ok(PlatformEvent::Notify { payload: fields.get("payload").cloned().unwrap_or(Value::Null) }),
            other => Ok(PlatformEvent::Unknown { event: other.to_owned() }),
        }
    }

    /// The message as the platform sends it.
    pub fn to_json(&self) -> String {
        let mut fields = Map::new();
        match self {
            PlatformEvent::Dtmf { digit, duration_ms } => {
                fields.insert("event".into(), "websocket:dtmf".into());
                fields.insert("digit".into(), digit.to_string().into());
                if let Some(ms) = duration_ms {
                    fields.insert("duration".into(), (*ms).into());
                }
            }
            PlatformEvent::Cleared => {
                fields.insert("event".into(), "websocket:cleared".into());
            }
            PlatformEvent::Notify { payload } => {
                fields.insert("event".into(), "websocket:notify".into());
                fields.insert("payload".into(), payload.clone());
            }
            PlatformEvent::Unknown { event } => {
                fields.insert("event".into(), event.as_str().into());
            }
        }
        Value::Object(fields).to_string()
    }
}

/// A text message callpipe sends to the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum AppAction {
    /// `{"action":"clear"}`: drop everything buffered for playout.
    Clear,
    /// `{"action":"notify","payload":...}`: tell us when everything before this has played.
    Notify {
        /// Echoed back unchanged in `websocket:notify`.
        payload: Value,
    },
}

impl AppAction {
    /// Parses an action (the emulator's side of the protocol).
    pub fn parse(text: &str) -> Result<AppAction, MessageError> {
        let fields = parse_object(text)?;
        match fields.get("action").and_then(Value::as_str).map(str::trim) {
            Some("clear") => Ok(AppAction::Clear),
            Some("notify") => Ok(AppAction::Notify { payload: fields.get("payload").cloned().unwrap_or(Value::Null) }),
            Some(other) => Err(MessageError::UnknownAction(other.to_owned())),
            None => Err(MessageError::BadField("action")),
        }
    }

    /// The message as sent on the wire.
    pub fn to_json(&self) -> String {
        match self {
            AppAction::Clear => r#"{"action":"clear"}"#.to_owned(),
            AppAction::Notify { payload } => {
                let mut fields = Map::new();
                fields.insert("action".into(), "notify".into());
                fields.insert("payload".into(), payload.clone());
                Value::Object(fields).to_string()
            }
        }
    }
}

fn parse_object(text: &str) -> Result<Map<String, Value>, MessageError> {
    match serde_json::from_str(text.trim()) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(MessageError::NotAnObject),
        Err(e) => Err(MessageError::Json(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_platform_events() {
        assert_eq!(
            PlatformEvent::parse(r#"{"event":"websocket:dtmf","digit":"5","duration":260}"#).unwrap(),
            PlatformEvent::Dtmf { digit: DtmfDigit::Digit(5), duration_ms: Some(260) }
        );
        assert_eq!(
            PlatformEvent::parse(r##" {"event":"websocket:dtmf","digit":"#"}"##).unwrap(),
            PlatformEvent::Dtmf { digit: DtmfDigit::Pound, duration_ms: None }
        );
        assert_eq!(PlatformEvent::parse(r#"{"event":"websocket:cleared"}"#).unwrap(), PlatformEvent::Cleared);
        assert_eq!(
            PlatformEvent::parse(r#"{"event":"websocket:notify","payload":{"a":[1]}}"#).unwrap(),
            PlatformEvent::Notify { payload: json!({"a":[1]}) }
        );
        assert_eq!(
            PlatformEvent::parse(r#"{"event":"websocket:future","x":1}"#).unwrap(),
            PlatformEvent::Unknown { event: "websocket:future".into() }
        );
        assert!(matches!(PlatformEvent::parse(r#"{"event":"websocket:dtmf","digit":"55"}"#), Err(MessageError::BadField("digit"))));
        assert!(matches!(PlatformEvent::parse("[]"), Err(MessageError::NotAnObject)));
        assert!(matches!(PlatformEvent::parse("{"), Err(MessageError::Json(_))));
    }

    #[test]
    fn events_round_trip() {
        for event in [
            PlatformEvent::Dtmf { digit: DtmfDigit::Star, duration_ms: Some(80) },
            PlatformEvent::Cleared,
            PlatformEvent::Notify { payload: json!({"callpipe_marker": 7}) },
        ] {
            assert_eq!(PlatformEvent::parse(&event.to_json()).unwrap(), event);
        }
    }

    #[test]
    fn actions_are_exact_on_the_wire() {
        assert_eq!(AppAction::Clear.to_json(), r#"{"action":"clear"}"#);
        let notify = AppAction::Notify { payload: json!({"callpipe_marker": 3}) };
        assert_eq!(notify.to_json(), r#"{"action":"notify","payload":{"callpipe_marker":3}}"#);
        assert_eq!(AppAction::parse(&notify.to_json()).unwrap(), notify);
        assert!(matches!(AppAction::parse(r#"{"action":"hangup"}"#), Err(MessageError::UnknownAction(_))));
    }

    #[test]
    fn keys_have_their_q23_frequencies() {
        assert_eq!(DtmfDigit::Digit(1).frequencies(), (697.0, 1209.0));
        assert_eq!(DtmfDigit::Star.frequencies(), (941.0, 1209.0));
        assert_eq!(DtmfDigit::Pound.frequencies(), (941.0, 1477.0));
        assert_eq!(DtmfDigit::Letter(b'D').frequencies(), (941.0, 1633.0));
        assert_eq!(DtmfDigit::Digit(0).keypad_position(), (3, 1));
    }

    #[test]
    fn digits_round_trip() {
        for digit in DtmfDigit::ALL {
            assert_eq!(DtmfDigit::from_char(digit.as_char()), Some(digit));
        }
        assert_eq!(DtmfDigit::from_char('x'), None);
    }
}
