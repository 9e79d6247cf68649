//! The TOML configuration, validated once into types.
//!
//! `callpipe.toml` at the repository root documents every key and is also embedded as the
//! default ([`DEFAULT_CONFIG`]). Unknown keys are errors, so a typo never silently falls back to a
//! default. Every route's processors are built once here, so a bad parameter fails at start-up.
//!
//! The typed configuration lives here; the file as written is mirrored in `raw`, read and
//! validated in `load`, with the routes checked in `route` and the TLS files in `tls`.

mod load;
mod raw;
mod route;
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

pub use route::Route;
pub use tls::TlsConfig;

use crate::auth::{Admission, Secret};
use crate::events::EventsConfig;
use crate::media::MediaConfig;
use crate::protocol::Metadata;
use crate::session::SessionConfig;

/// The embedded default configuration (the repository's `callpipe.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../callpipe.toml");

/// What happens to inbound frames of the wrong size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FramePolicy {
    /// Re-frame and count them (the default).
    Lenient,
    /// Close the call with 1007.
    Strict,
}

/// When a connection reads the caller's audio from its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// As soon as the socket is readable (the only mode: a caller frame's pass runs when it
    /// arrives).
    Readiness,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server settings.
    pub server: ServerConfig,
    /// Per-call media limits.
    pub session: SessionConfig,
    /// Media thread settings.
    pub media: MediaConfig,
    /// The HTTP control API.
    pub control: ControlConfig,
    /// Call events: the JSON-lines log and webhooks.
    pub events: EventsConfig,
    /// Routes, in order.
    pub routes: Vec<Route>,
    /// `[cluster]`: the registry this node joins, if any.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `[storage]`: where uploaded recordings go.
    pub storage: crate::services::uploads::StorageConfig,
}

/// The `[control]` table: the HTTP API over live calls, metrics and health.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// Where the HTTP API listens; `None` turns it off.
    pub listen: Option<SocketAddr>,
    /// The bearer token `/calls` requires. Without one the API must listen on loopback only.
    pub token: Option<Secret>,
    /// Ended calls kept for `GET /calls`.
    pub ended_calls: usize,
    /// Largest audio file `PUT /calls/{id}/stream` loads, in bytes.
    pub max_stream_bytes: usize,
    /// Time allowed to fetch an `http(s)://` stream or read a `file://` one.
    pub fetch_timeout: Duration,
    /// When set, `file://` streams must lie inside this directory.
    pub stream_root: Option<std::path::PathBuf>,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Time allowed for the metadata frame.
    pub metadata_timeout: Duration,
    /// Inbound frame size policy.
    pub frame_policy: FramePolicy,
    /// Largest message accepted.
    pub max_message_bytes: usize,
    /// Concurrent calls.
    pub max_calls: usize,
    /// Grace period on shutdown.
    pub shutdown_grace: Duration,
    /// How long a peer may leave callpipe's frames unread before the call is closed.
    pub write_timeout: Duration,
    /// The kernel send buffer of each call's socket; `None` leaves the OS default.
    pub send_buffer_bytes: Option<usize>,
    /// Period of the summary log line; `None` for none.
    pub stats_interval: Option<Duration>,
    /// When connections read audio.
    pub read_mode: ReadMode,
    /// Text messages a call may send per second (burst of as many); beyond it the call is
    /// closed with 1008.
    pub max_text_per_second: u32,
    /// A call that sends nothing (no frame, no text, no ping) for this long is closed with 1008;
    /// `None` for never.
    pub idle_timeout: Option<Duration>,
    /// Calls are hung up (1000) after this long; `None` for no limit.
    pub max_duration: Option<Duration>,
    /// TLS (`wss://`); `None` serves plain `ws://`.
    pub tls: Option<TlsConfig>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("invalid configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A route's `play` file cannot be played.
    #[error("invalid configuration: route {route}: play: {source}")]
    Prompt {
        /// The route's path.
        route: String,
        /// What is wrong with the file.
        #[source]
        source: crate::audio::AudioError,
    },
    /// A `[server.tls]` file cannot be used.
    #[error("server.tls.{key} {path}: {problem}")]
    Tls {
        /// Which key of `[server.tls]` names the file: `cert` or `key`.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl Config {
    /// Whether any route serves `path`.
    pub fn serves_path(&self, path: &str) -> bool {
        self.routes.iter().any(|r| r.path == path)
    }

    /// The first route for `path` that matches `metadata`.
    pub fn route(&self, path: &str, metadata: &Metadata) -> Option<&Route> {
        self.route_index(path, metadata).map(|i| &self.routes[i])
    }

    /// The index of the first route for `path` that matches `metadata`.
    pub fn route_index(&self, path: &str, metadata: &Metadata) -> Option<usize> {
        self.routes.iter().position(|r| r.path == path && r.matches(metadata))
    }

    /// What an upgrade to `path` must carry.
    pub fn admission(&self, path: &str) -> &Admission {
        static OPEN: Admission = Admission::Open;
        self.routes.iter().find(|r| r.path == path).map_or(&OPEN, |r| &r.auth)
    }
}

#[cfg(test)]
mod tests;
