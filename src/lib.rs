//! callpipe: a real-time media engine for telephony WebSocket audio.
pub mod config;
pub mod media;
pub mod processor;
pub mod protocol;
pub mod server;
pub mod session;
pub mod stats;
