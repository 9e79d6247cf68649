//! The first text frame of a call: `websocket:connected` metadata (docs/protocol.md section 2).
//!
//! Lenient on input: surrounding whitespace, a missing `event`, any case and spacing in the
//! content type (`audio/L16; rate=16000`), header values of any JSON type. Strict on output:
//! [`Metadata::to_json`] always writes `event` first, then `content-type` in its canonical
//! form, then the flattened headers in their original order.

use serde_json::{Map, Value};

use super::{MetadataError, SampleRate};

/// The `event` value of the metadata frame.
pub const CONNECTED_EVENT: &str = "websocket:connected";

/// The largest nesting depth accepted inside header values; deeper documents are refused
/// before they can cost stack or memory further down the line.
pub const MAX_HEADER_DEPTH: usize = 16;

/// A parsed metadata frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The negotiated sample rate.
    pub rate: SampleRate,
    /// The NCCO `headers`, flattened to the top level by the platform, in their original order.
    /// Unknown keys are kept; `event` and `content-type` are not repeated here.
    pub headers: Map<String, Value>,
}

impl Metadata {
    /// Metadata with no headers.
    pub fn new(rate: SampleRate) -> Metadata {
        Metadata { rate, headers: Map::new() }
    }

    /// Parses the first text frame of a call.
    pub fn parse(text: &str) -> Result<Metadata, MetadataError> {
        let value: Value = serde_json::from_str(text.trim()).map_err(|e| MetadataError::Json(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(MetadataError::NotAnObject);
        };
        let mut rate = None;
        let mut headers = Map::new();
        for (key, value) in fields {
            if key.eq_ignore_ascii_case("event") {
                match value.as_str() {
                    Some(event) if event.trim() == CONNECTED_EVENT => {}
                    _ => return Err(MetadataError::UnexpectedEvent(value.to_string())),
                }
            } else if key.eq_ignore_ascii_case("content-type") {
                let Some(content_type) = value.as_str() else {
                    return Err(MetadataError::UnsupportedContentType(value.to_string()));
                };
                rate = Some(parse_content_type(content_type)?);
            } else {
                if depth(&value) > MAX_HEADER_DEPTH {
                    return Err(MetadataError::TooDeep);
                }
                headers.insert(key, value);
            }
        }
        let rate = rate.ok_or(MetadataError::MissingContentType)?;
        Ok(Metadata { rate, headers })
    }

    /// A header value as a string: strings as they are, other scalars in their JSON form.
    /// Objects and arrays have no string form and give `None`.
    pub fn header_str(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self.headers.get(key)? {
            Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(std::borrow::Cow::Owned(b.to_string())),
            _ => None,
        }
    }

    /// The metadata frame as the platform sends it.
    pub fn to_json(&self) -> String {
        let mut fields = Map::with_capacity(self.headers.len() + 2);
        fields.insert("event".into(), Value::String(CONNECTED_EVENT.into()));
        fields.insert("content-type".into(), Value::String(self.rate.content_type().into()));
        for (key, value) in &self.headers {
            fields.insert(key.clone(), value.clone());
        }
        Value::Object(fields).to_string()
    }
}

/// Parses `audio/l16;rate=N`, ignoring case and spaces, into a supported rate.
pub fn parse_content_type(content_type: &str) -> Result<SampleRate, MetadataError> {
    let unsupported = || MetadataError::UnsupportedContentType(content_type.to_owned());
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("audio/l16") {
        return Err(unsupported());
    }
    let mut rate = None;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, value) = param.split_once('=').ok_or_else(unsupported)?;
        let name = name.trim();
        let value = value.trim().trim_matches('"');
        if name.eq_ignore_ascii_case("rate") {
            let hz: u32 = value.parse().map_err(|_| unsupported())?;
            rate = Some(SampleRate::from_hz(hz).ok_or_else(unsupported)?);
        } else if name.eq_ignore_ascii_case("channels") && value != "1" {
            return Err(unsupported());
        }
    }
    rate.ok_or_else(unsupported)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_frame() {
        let m = Metadata::parse(
            r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000","caller":"447700900123","lang":"en-GB"}"#,
        )
        .unwrap();
        assert_eq!(m.rate, SampleRate::Hz16000);
        let keys: Vec<_> = m.headers.keys().map(String::as_str).collect();
        assert_eq!(keys, ["caller", "lang"]);
        assert_eq!(m.header_str("caller").as_deref(), Some("447700900123"));
    }

    #[test]
    fn is_lenient_on_whitespace_case_and_missing_event() {
        for text in [
            r#" {"content-type":"audio/L16; rate=8000"}"#,
            "\n{\"content-type\" : \"AUDIO/l16 ;RATE = 8000 \" }\t ",
            r#"{"Content-Type":"audio/l16;rate=8000;channels=1","event":"websocket:connected"}"#,
        ] {
            assert_eq!(Metadata::parse(text).unwrap().rate, SampleRate::Hz8000, "{text}");
        }
        let m = Metadata::parse(r#"{"content-type":"audio/l16;rate=24000","n":5,"o":{"a":[1,2]},"b":true}"#).unwrap();
        assert_eq!(m.rate, SampleRate::Hz24000);
        assert_eq!(m.header_str("n").as_deref(), Some("5"));
        assert_eq!(m.header_str("o"), None);
        assert_eq!(m.headers["o"]["a"][1], 2);
    }

    #[test]
    fn rejects_what_it_cannot_serve() {
        use MetadataError::*;
        type Check = fn(&MetadataError) -> bool;
        let cases: [(&str, Check); 8] = [
            ("not json", |e| matches!(e, Json(_))),
            ("[1,2]", |e| matches!(e, NotAnObject)),
            (r#"{"event":"websocket:connected"}"#, |e| matches!(e, MissingContentType)),
            (r#"{"content-type":"audio/l16;rate=44100"}"#, |e| matches!(e, UnsupportedContentType(_))),
            (r#"{"content-type":"audio/pcmu;rate=8000"}"#, |e| matches!(e, UnsupportedContentType(_))),
            (r#"{"content-type":"audio/l16"}"#, |e| matches!(e, UnsupportedContentType(_))),
            (r#"{"content-type":"audio/l16;rate=8000;channels=2"}"#, |e| matches!(e, UnsupportedContentType(_))),
            (r#"{"event":"websocket:dtmf","content-type":"audio/l16;rate=8000"}"#, |e| matches!(e, UnexpectedEvent(_))),
        ];
        for (text, check) in cases {
            let err = Metadata::parse(text).unwrap_err();
            assert!(check(&err), "{text}: {err:?}");
        }
        let deep = format!(r#"{{"content-type":"audio/l16;rate=8000","x":{}1{}}}"#, "[".repeat(40), "]".repeat(40));
        assert!(matches!(Metadata::parse(&deep), Err(TooDeep)));
    }

    #[test]
    fn numbers_that_need_17_digits_round_trip() {
        // Found by the `metadata` fuzz target: without serde_json's correctly rounding parser,
        // 3.3333333333333334e31 came back one step off after to_json and parse.
        let m = Metadata::parse(r#"{"content-type":"audio/l16;rate=8000","x":33333333333333333333333333333335,"y":-0.5e-3}"#).unwrap();
        let again = Metadata::parse(&m.to_json()).unwrap();
        assert_eq!(again, m);
        assert_eq!(again.to_json(), m.to_json());
    }

    #[test]
    fn round_trips_in_canonical_form() {
        let m = Metadata::parse(r#" {"lang":"en-GB","content-type":"audio/L16; rate=16000","z":[1,{"y":null}]}"#).unwrap();
        let text = m.to_json();
        assert_eq!(text, r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000","lang":"en-GB","z":[1,{"y":null}]}"#);
        assert_eq!(Metadata::parse(&text).unwrap(), m);
    }
}
