//! One template grammar for everything filled from the call when it starts: a fork's URL,
//! headers and first message, a conference's name, a recording's file name.
//!
//! `{call_id}`, `{path}` and `{header:NAME}` (NAME of `[A-Za-z0-9_-]`) are placeholders
//! everywhere. A fork's templates also know the format it sends, `{codec}`, `{rate}`,
//! `{channels}`, `{frame_ms}` and `{content_type}`; a file name knows `{start}` (UTC,
//! `YYYYMMDDTHHMMSSZ`) and `{rate}` (the call's). Anything else in braces is literal text, so
//! JSON can be written as it is. Values are escaped for where they go ([`Escape`]); a file name
//! is checked more strictly when parsed ([`parse_file_name`]) and sanitized when rendered.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// `{start}`: when the call started, UTC (file names).
    Start,
    /// `{rate}`: the fork's rate, or the call's in a file name.
    Rate,
    /// `{codec}`.
    Codec,
    /// `{channels}`.
    Channels,
    /// `{frame_ms}`.
    FrameMs,
    /// `{content_type}`.
    ContentType,
}

/// Which placeholders a template knows besides `{call_id}`, `{path}` and `{header:NAME}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grammar {
    /// None: a conference's name.
    Call,
    /// The format sent: a fork's URL, headers and first message.
    Fork,
    /// `{start}` and `{rate}`: a file name.
    File,
}

impl Grammar {
    fn piece(self, name: &str) -> Option<Piece> {
        let fork = self == Grammar::Fork;
        let file = self == Grammar::File;
        match name {
            "call_id" => Some(Piece::CallId),
            "path" => Some(Piece::Path),
            "rate" if fork || file => Some(Piece::Rate),
            "start" if file => Some(Piece::Start),
            "codec" if fork => Some(Piece::Codec),
            "channels" if fork => Some(Piece::Channels),
            "frame_ms" if fork => Some(Piece::FrameMs),
            "content_type" if fork => Some(Piece::ContentType),
            _ => name
                .strip_prefix("header:")
                .filter(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .map(|key| Piece::Header(key.to_owned())),
        }
    }
}

/// The placeholders a file name may use, as an unknown one's error lists them.
const FILE_PLACEHOLDERS: &str = "call_id, path, start, rate, header:NAME";

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
    /// Every character outside `[A-Za-z0-9._-]` replaced by `_`; a missing header is `none`.
    FileName,
}

/// Why a file name template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Nothing to name a file with.
    #[error("`template` must not be empty")]
    Empty,
    /// A `{` with no `}` after it.
    #[error("template {template:?} has an unclosed `{{`")]
    Unclosed {
        /// The template.
        template: String,
    },
    /// A placeholder this template does not know.
    #[error("template {template:?}: unknown placeholder `{{{placeholder}}}` (known: {known})")]
    Unknown {
        /// The template.
        template: String,
        /// What was in the braces.
        placeholder: String,
        /// The placeholders known.
        known: &'static str,
    },
    /// A character a file name may not hold.
    #[error("template {template:?}: {character:?} is not allowed in a file name (use A-Z a-z 0-9 . _ -)")]
    Unsafe {
        /// The template.
        template: String,
        /// The character.
        character: char,
    },
}

/// Parses a template with the placeholders every template knows.
pub fn parse(text: &str) -> Vec<Piece> {
    parse_pieces(text, Grammar::Call)
}

/// Parses a fork's template: the common placeholders and those of the format sent.
pub fn parse_with_format(text: &str) -> Vec<Piece> {
    parse_pieces(text, Grammar::Fork)
}

/// Parses a file name template: the common placeholders, `{start}` and `{rate}`. Stricter than
/// the others, since the result names a file: it must not be empty, braces must be a known
/// placeholder, and literal text may only use `[A-Za-z0-9._-]`.
pub fn parse_file_name(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let pieces = parse_pieces(text, Grammar::File);
    if pieces.is_empty() {
        return Err(TemplateError::Empty);
    }
    for piece in &pieces {
        let Piece::Literal(literal) = piece else { continue };
        if let Some(open) = literal.find('{') {
            let template = text.to_owned();
            return Err(match literal[open + 1..].find('}') {
                Some(close) => TemplateError::Unknown {
                    template,
                    placeholder: literal[open + 1..open + 1 + close].to_owned(),
                    known: FILE_PLACEHOLDERS,
                },
                None => TemplateError::Unclosed { template },
            });
        }
        if let Some(character) = literal.chars().find(|c| !is_file_safe(*c)) {
            return Err(TemplateError::Unsafe { template: text.to_owned(), character });
        }
    }
    Ok(pieces)
}

fn parse_pieces(text: &str, grammar: Grammar) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').and_then(|close| grammar.piece(&after[..close]).map(|piece| (piece, close))) {
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

/// What fills a template's placeholders.
#[derive(Debug, Clone, Copy)]
struct Values<'a> {
    call: &'a CallInfo,
    format: Option<Format>,
    /// The call's rate (file names).
    rate: Option<u32>,
    start: Option<SystemTime>,
}

/// Fills a template from the call; a missing header is empty.
pub fn render(pieces: &[Piece], call: &CallInfo, escape: Escape) -> String {
    render_pieces(pieces, Values { call, format: None, rate: None, start: None }, escape)
}

/// Fills a fork's template from the call and the format sent.
pub fn render_with_format(pieces: &[Piece], call: &CallInfo, format: Format, escape: Escape) -> String {
    render_pieces(pieces, Values { call, format: Some(format), rate: None, start: None }, escape)
}

/// Fills a file name template for `call` at `rate`, started at `start`: every value sanitized,
/// never empty, never a hidden or parent name.
pub fn render_file_name(pieces: &[Piece], call: &CallInfo, rate: u32, start: SystemTime) -> String {
    let mut name = render_pieces(pieces, Values { call, format: None, rate: Some(rate), start: Some(start) }, Escape::FileName);
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name
}

/// Fills `pieces`; placeholders without a value (the format's outside a fork) are empty.
fn render_pieces(pieces: &[Piece], values: Values<'_>, escape: Escape) -> String {
    let Values { call, format, rate, start } = values;
    let mut out = String::new();
    for piece in pieces {
        let value = match piece {
            Piece::Literal(text) => {
                out.push_str(text);
                continue;
            }
            Piece::CallId => Cow::Borrowed(call.id.as_str()),
            Piece::Path => Cow::Borrowed(call.path.as_str()),
            Piece::Header(name) => match call.metadata.header_str(name) {
                Some(value) => value,
                None if escape == Escape::FileName => Cow::Borrowed("none"),
                None => Cow::Borrowed(""),
            },
            Piece::Start => start.map_or(Cow::Borrowed(""), |t| Cow::Owned(utc_stamp(t))),
            Piece::Rate => format.map(|f| f.rate).or(rate).map_or(Cow::Borrowed(""), |r| Cow::Owned(r.to_string())),
            Piece::Codec => format.map_or(Cow::Borrowed(""), |f| Cow::Borrowed(f.codec.as_str())),
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
        Escape::FileName => out.extend(value.chars().map(|c| if is_file_safe(c) { c } else { '_' })),
    }
}

/// Whether `c` may appear in a file name as is.
fn is_file_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `text` made safe for a file name: every character outside `[A-Za-z0-9._-]` becomes `_`.
pub fn sanitize(text: &str) -> String {
    let mut out = String::new();
    push_escaped(&mut out, text, Escape::FileName);
    out
}

/// `time` in UTC as `YYYYMMDDTHHMMSSZ` (times before 1970 render as 1970).
pub fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
