//! callpipe: a real-time media engine for telephony WebSocket audio.
pub mod processor;
pub mod protocol;
pub mod session;
