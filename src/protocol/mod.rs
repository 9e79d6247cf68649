//! The wire format, and nothing else: metadata, text messages and frame arithmetic.
//!
//! No I/O and no clock live here (see docs/protocol.md). Every parser returns a typed error and never
//! panics on input; the encoders write exactly what the contract prescribes.

mod audio;
mod message;
mod metadata;
pub mod ws;

pub use audio::{
    BYTES_PER_SAMPLE, FRAME_DURATION, FRAMES_PER_SECOND, MAX_FRAME_BYTES, MAX_FRAME_SAMPLES, SampleRate, decode_l16, encode_l16,
};
pub use message::{AppAction, DtmfDigit, PlatformEvent};
pub use metadata::{CONNECTED_EVENT, MAX_HEADER_DEPTH, Metadata, parse_content_type};

/// The JSON key callpipe puts in the payload of the `notify` requests its processors make, so
/// that the platform's `websocket:notify` can be matched to them.
pub const NOTIFY_MARKER_KEY: &str = "callpipe_marker";

/// Why the metadata frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The frame is not JSON.
    #[error("metadata is not valid JSON: {0}")]
    Json(String),
    /// The frame is JSON but not an object.
    #[error("metadata is not a JSON object")]
    NotAnObject,
    /// `event` is present and is not `websocket:connected`.
    #[error("first message has event {0}, expected websocket:connected")]
    UnexpectedEvent(String),
    /// No `content-type`.
    #[error("metadata has no content-type")]
    MissingContentType,
    /// A content type other than `audio/l16;rate=8000|16000|24000`.
    #[error("unsupported content-type {0}")]
    UnsupportedContentType(String),
    /// A header value nested deeper than [`MAX_HEADER_DEPTH`].
    #[error("metadata header values are nested too deeply")]
    TooDeep,
}

/// Why a text message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The message is not JSON.
    #[error("message is not valid JSON: {0}")]
    Json(String),
    /// The message is JSON but not an object.
    #[error("message is not a JSON object")]
    NotAnObject,
    /// A field is missing or has the wrong type.
    #[error("message field {0} is missing or invalid")]
    BadField(&'static str),
    /// An `action` callpipe does not know.
    #[error("unknown action {0}")]
    UnknownAction(String),
}
