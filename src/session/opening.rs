//! The opening of a call: what the first message must be, which close code answers each fault,
//! and where the call id comes from (docs/protocol.md sections 2 and 6).

use std::fmt;

use crate::protocol::{Metadata, MetadataError};

/// WebSocket close codes callpipe uses (RFC 6455 section 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure; callpipe hangs up.
    Normal,
    /// 1001: going away; the server is shutting down.
    Away,
    /// 1003: unsupported data, e.g. an unsupported content type.
    Unsupported,
    /// 1007: invalid payload, e.g. unparsable metadata or a wrong frame size in strict mode.
    Invalid,
    /// 1008: policy violation, e.g. audio before metadata, or no metadata in time.
    Policy,
    /// 1009: a message over the size limit.
    TooBig,
    /// 1011: callpipe failed internally; the peer did nothing wrong.
    Internal,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Away => 1001,
            CloseCode::Unsupported => 1003,
            CloseCode::Invalid => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
        }
    }
}

/// A call refused or ended by callpipe: the close code and a short reason for the close frame
/// and the log (at most 123 bytes, as the close frame allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The close code.
    pub code: CloseCode,
    /// A short reason.
    pub reason: String,
}

impl Rejection {
    /// A rejection with a reason cut to what a close frame carries.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Rejection {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut cut = 123;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Rejection { code, reason }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.code(), self.reason)
    }
}

/// The first thing that happened on a new call's socket.
#[derive(Debug, Clone, Copy)]
pub enum FirstMessage<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
    /// Nothing arrived within the metadata timeout.
    Timeout,
}

/// Decides the fate of a call from its first message: metadata, or the close that answers it.
pub fn admit_first_message(first: FirstMessage<'_>) -> Result<Metadata, Rejection> {
    match first {
        FirstMessage::Timeout => Err(Rejection::new(CloseCode::Policy, "no metadata within the timeout")),
        FirstMessage::Binary(_) => Err(Rejection::new(CloseCode::Policy, "audio before metadata")),
        FirstMessage::Text(text) => Metadata::parse(text).map_err(|e| {
            let code = match e {
                MetadataError::UnsupportedContentType(_) => CloseCode::Unsupported,
                _ => CloseCode::Invalid,
            };
            Rejection::new(code, e.to_string())
        }),
    }
}

/// Query parameters and metadata headers that may carry a call id, in order of preference.
pub const CALL_ID_KEYS: [&str; 5] = ["call_id", "call", "uuid", "call_uuid", "conversation_uuid"];

/// The call id from the URI query or the metadata headers, if one is there. Only printable ASCII
/// ids of at most 128 characters are taken, so that an id is always safe to log and use in a path.
pub fn call_id_from(query: Option<&str>, metadata: &Metadata) -> Option<String> {
    let valid = |id: &str| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\');
    for key in CALL_ID_KEYS {
        let from_query = query.and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == key).then(|| percent_decode(v))
            })
        });
        if let Some(id) = from_query.filter(|id| valid(id)) {
            return Some(id);
        }
        if let Some(id) = metadata.header_str(key).filter(|id| valid(id)) {
            return Some(id.into_owned());
        }
    }
    None
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SampleRate;

    #[test]
    fn first_message_faults_map_to_their_close_codes() {
        let code = |first| admit_first_message(first).unwrap_err().code.code();
        assert_eq!(code(FirstMessage::Timeout), 1008);
        assert_eq!(code(FirstMessage::Binary(&[0, 0])), 1008);
        assert_eq!(code(FirstMessage::Text("{not json")), 1007);
        assert_eq!(code(FirstMessage::Text(r#"{"content-type":"audio/l16;rate=11025"}"#)), 1003);
        assert_eq!(code(FirstMessage::Text(r#"{"content-type":"audio/opus;rate=16000"}"#)), 1003);
        let ok = admit_first_message(FirstMessage::Text(r#"{"content-type":"audio/l16;rate=16000"}"#)).unwrap();
        assert_eq!(ok.rate, SampleRate::Hz16000);
    }

    #[test]
    fn call_id_prefers_the_query_then_headers() {
        let mut m = Metadata::new(SampleRate::Hz8000);
        m.headers.insert("uuid".into(), "from-header".into());
        assert_eq!(call_id_from(Some("x=1&call=abc%2D1"), &m).as_deref(), Some("abc-1"));
        assert_eq!(call_id_from(Some("x=1"), &m).as_deref(), Some("from-header"));
        assert_eq!(call_id_from(Some("call=../etc"), &Metadata::new(SampleRate::Hz8000)), None);
        assert_eq!(call_id_from(Some("call=%"), &Metadata::new(SampleRate::Hz8000)).as_deref(), Some("%"));
        assert_eq!(call_id_from(None, &Metadata::new(SampleRate::Hz8000)), None);
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        let r = Rejection::new(CloseCode::Invalid, "é".repeat(100));
        assert!(r.reason.len() <= 123);
    }
}
