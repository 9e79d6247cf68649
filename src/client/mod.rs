//! The platform's side of the protocol: `callpipe call` and `callpipe load`.
//!
//! [`platform::PlatformCall`] is one emulated call as a state machine (metadata, 20 ms frames on
//! an absolute clock, a playout buffer that honours `clear` and acknowledges `notify` only once
//! the audio before it has played, checks on everything the bot sends). [`engine`] runs any
//! number of them from a few threads, and [`report`] turns the results into a summary, JSON,
//! an SVG plot and an exit status.

pub use crate::audio;
pub mod engine;
pub mod metrics;
pub mod network;
pub mod platform;
pub mod plot;
pub mod report;
pub mod wire;

/// Why the emulator could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket or file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TCP connection to the bot could not be made.
    #[error("cannot connect to {addr}: {source}{}", connect_hint(source))]
    Connect {
        /// The address tried.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The URL is not one the emulator can use.
    #[error("bad URL: {0}")]
    Url(String),
    /// The server's bytes or upgrade response were invalid.
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    /// An audio file could not be used.
    #[error("{0}")]
    Audio(#[from] audio::AudioError),
    /// A command-line value is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// What to check after a failed connection, by its cause.
fn connect_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => " (nothing listens there: start the bot, or `callpipe serve`, first)",
        std::io::ErrorKind::TimedOut => " (no answer: check the address, and any firewall between)",
        _ => "",
    }
}
