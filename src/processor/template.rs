//! Templates filled from the call when it starts: a fork's URL, headers and first message, a
//! conference's name. `{call_id}`, `{path}` and `{header:NAME}` (NAME of `[A-Za-z0-9_-]`) are
//! placeholders everywhere; a fork's templates also know the format it sends, `{codec}`,
//! `{rate}`, `{channels}`, `{frame_ms}` and `{content_type}`. Every other character, braces
//! included, is literal, so JSON can be written as it is. Values are escaped for where they go
//! ([`Escape`]). (The recorder's file names have rules of their own: see `record/mod.rs`.)

use serde_json::Value;

use crate::call::CallInfo;
use crate::protocol::SampleRate;
use crate::services::fork::ForkCodec;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text as it is.
    Literal(String),
    /// `{call_id}`.
    CallId,
    /// `{path}`.
    Path,
    /// `{header:NAME}`.
    Header(String),
    /// `{codec}`.
    Codec,
    /// `{rate}`.
    Rate,
    /// `{channels}`.
    Channels,
    /// `{frame_ms}`.
    FrameMs,
    /// `{content_type}`.
    ContentType,
}

/// What a fork sends, for the templates: the target learns the format from the URL, a header
/// or the first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The codec.
    pub codec: ForkCodec,
    /// Samples per second.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: usize,
    /// Audio per message, in ms.
    pub frame_ms: u32,
}

impl Format {
    /// `audio/l16;rate=16000` or `audio/opus;rate=16000`, with `;channels=2` when stereo.
    fn content_type(self) -> String {
        let channels = if self.channels == 2 { ";channels=2" } else { "" };
        format!("audio/{};rate={}{channels}", self.codec.as_str(), self.rate)
    }
}

/// How a template's values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Percent-encoding of everything but RFC 3986's unreserved characters.
    Url,
    /// The inside of a JSON string.
    Json,
    /// As is, control characters removed.
    Header,
}

/// Parses a template: `{call_id}`, `{path}` and `{header:NAME}` (NAME of `[A-Za-z0-9_-]`) are
/// placeholders; every other character, braces included, is literal.
pub fn parse(text: &str) -> Vec<Piece> {
    parse_pieces(text, false)
}

/// Parses a fork's template: the placeholders of [`parse`], and those of the format
/// sent, `{codec}`, `{rate}`, `{channels}`, `{frame_ms}` and `{content_type}`.
pub fn parse_with_format(text: &str) -> Vec<Piece> {
    parse_pieces(text, true)
}

fn parse_pieces(text: &str, with_format: bool) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let placeholder = after.find('}').and_then(|close| {
            let inner = &after[..close];
            let piece = match inner {
                "call_id" => Some(Piece::CallId),
                "path" => Some(Piece::Path),
                "codec" if with_format => Some(Piece::Codec),
                "rate" if with_format => Some(Piece::Rate),
                "channels" if with_format => Some(Piece::Channels),
                "frame_ms" if with_format => Some(Piece::FrameMs),
                "content_type" if with_format => Some(Piece::ContentType),
                _ => inner
                    .strip_prefix("header:")
                    .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .map(|name| Piece::Header(name.to_owned())),
            };
            piece.map(|p| (p, close))
        });
        match placeholder {
            Some((piece, close)) => {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                rest = &after[close + 1..];
            }
            None => {
                literal.push('{');
                rest = after;
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    pieces
}

/// Fills a template from the call; a missing header is empty.
pub fn render(pieces: &[Piece], call: &CallInfo, escape: Escape) -> String {
    render_pieces(pieces, call, None, escape)
}

/// Fills a fork's template from the call and the format sent.
pub fn render_with_format(pieces: &[Piece], call: &CallInfo, format: Format, escape: Escape) -> String {
    render_pieces(pieces, call, Some(format), escape)
}

/// Fills `pieces`; the format's placeholders (only a fork's templates have them) are empty
/// without a format.
fn render_pieces(pieces: &[Piece], call: &CallInfo, format: Option<Format>, escape: Escape) -> String {
    use std::borrow::Cow;
    let mut out = String::new();
    for piece in pieces {
        let value = match piece {
            Piece::Literal(text) => {
                out.push_str(text);
                continue;
            }
            Piece::CallId => Cow::Borrowed(call.id.as_str()),
            Piece::Path => Cow::Borrowed(call.path.as_str()),
            Piece::Header(name) => call.metadata.header_str(name).unwrap_or_default(),
            Piece::Codec => format.map_or(Cow::Borrowed(""), |f| Cow::Borrowed(f.codec.as_str())),
            Piece::Rate => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.rate.to_string())),
            Piece::Channels => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.channels.to_string())),
            Piece::FrameMs => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.frame_ms.to_string())),
            Piece::ContentType => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.content_type())),
        };
        push_escaped(&mut out, &value, escape);
    }
    out
}

fn push_escaped(out: &mut String, value: &str, escape: Escape) {
    match escape {
        Escape::Url => {
            for byte in value.bytes() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
        }
        Escape::Json => {
            let quoted = Value::from(value).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
        Escape::Header => out.extend(value.chars().filter(|c| !c.is_control())),
    }
}

/// A call for checking templates at configuration time.
pub fn sample_call() -> CallInfo {
    CallInfo { id: "call-id".into(), path: "/path".into(), metadata: crate::protocol::Metadata::new(SampleRate::Hz8000) }
}

/// A format for checking templates at configuration time.
pub const SAMPLE_FORMAT: Format = Format { codec: ForkCodec::L16, rate: 8000, channels: 1, frame_ms: 20 };

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Metadata;
    use serde_json::json;

    fn call() -> CallInfo {
        let metadata =
            Metadata::parse(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000","caller":"+44 \"7\"/1"}"#).unwrap();
        CallInfo { id: "a b".into(), path: "/bot/1".into(), metadata }
    }

    #[test]
    fn templates_fill_and_escape_for_urls_json_and_headers() {
        let t = parse("ws://h/x/{call_id}?p={path}&c={header:caller}&m={header:missing}");
        assert_eq!(render(&t, &call(), Escape::Url), "ws://h/x/a%20b?p=%2Fbot%2F1&c=%2B44%20%227%22%2F1&m=");
        let t = parse(r#"{"event":"start","call_id":"{call_id}","caller":"{header:caller}","x":{}}"#);
        let text = render(&t, &call(), Escape::Json);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value, json!({ "event": "start", "call_id": "a b", "caller": "+44 \"7\"/1", "x": {} }));
        let t = parse("Bearer {header:caller}{unknown}{header:}");
        assert_eq!(render(&t, &call(), Escape::Header), "Bearer +44 \"7\"/1{unknown}{header:}");
    }

    #[test]
    fn templates_tell_the_target_the_format() {
        let t = parse_with_format(r#"{"codec":"{codec}","rate":{rate},"channels":{channels},"ms":{frame_ms},"type":"{content_type}"}"#);
        let stereo_opus = Format { codec: ForkCodec::Opus, rate: 48000, channels: 2, frame_ms: 60 };
        let value: Value = serde_json::from_str(&render_with_format(&t, &call(), stereo_opus, Escape::Json)).unwrap();
        assert_eq!(value, json!({ "codec": "opus", "rate": 48000, "channels": 2, "ms": 60, "type": "audio/opus;rate=48000;channels=2" }));
        let t = parse_with_format("ws://h/{codec}?type={content_type}");
        let mono_l16 = Format { codec: ForkCodec::L16, rate: 16000, channels: 1, frame_ms: 20 };
        assert_eq!(render_with_format(&t, &call(), mono_l16, Escape::Url), "ws://h/l16?type=audio%2Fl16%3Brate%3D16000");
        // Templates that are not a fork's keep these names literal.
        assert_eq!(render(&parse("{codec}-{rate}-{call_id}"), &call(), Escape::Header), "{codec}-{rate}-a b");
    }
}
