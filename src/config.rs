//! The TOML configuration, validated once into types.
//!
//! `callpipe.toml` at the repository root documents every key and is also embedded as the
//! default ([`DEFAULT_CONFIG`]). Unknown keys are errors, so a typo never silently falls back to a
//! default. Every route's processors are built once here, so a bad parameter fails at start-up.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::media::MediaConfig;
use crate::processor::{ProcessorRegistry, ProcessorSpec};
use crate::protocol::Metadata;
use crate::session::SessionConfig;

/// The embedded default configuration (the repository's `callpipe.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../callpipe.toml");

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
    /// As soon as the socket is readable.
    Readiness,
    /// Once per tick, when the media thread wakes the call.
    Tick,
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
    /// Routes, in order.
    pub routes: Vec<Route>,
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
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The URL path.
    pub path: String,
    /// A metadata header that must equal a value for this route to apply.
    pub header: Option<(String, String)>,
    /// The processor chain.
    pub processors: Vec<ProcessorSpec>,
}

impl Route {
    /// Whether this route applies to a call with `metadata`.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        match &self.header {
            None => true,
            Some((name, value)) => metadata.header_str(name).is_some_and(|v| v == value.as_str()),
        }
    }
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
}

impl Config {
    /// The embedded default.
    pub fn embedded(registry: &ProcessorRegistry) -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, registry)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path, registry: &ProcessorRegistry) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse(&text, registry)
    }

    /// Validates TOML text.
    pub fn parse(text: &str, registry: &ProcessorRegistry) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        let invalid = |m: String| ConfigError::Invalid(m);
        let s = raw.server;
        let listen = s.listen.parse().map_err(|e| invalid(format!("server.listen {:?}: {e}", s.listen)))?;
        if s.max_message_bytes < crate::protocol::MAX_FRAME_BYTES {
            return Err(invalid(format!(
                "server.max_message_bytes must be at least one 24 kHz frame ({} bytes)",
                crate::protocol::MAX_FRAME_BYTES
            )));
        }
        if s.metadata_timeout_ms == 0 || s.max_calls == 0 || s.write_timeout_ms == 0 {
            return Err(invalid("server.metadata_timeout_ms, server.max_calls and server.write_timeout_ms must be positive".into()));
        }
        let m = raw.media;
        if !(1..=50).contains(&m.lookahead_frames) {
            return Err(invalid("media.lookahead_frames must be between 1 and 50".into()));
        }
        if m.outbound_queue_frames < m.lookahead_frames as usize || m.outbound_queue_frames > 3072 {
            return Err(invalid("media.outbound_queue_frames must be between lookahead_frames and 3072".into()));
        }
        if m.max_inbound_backlog == 0 || m.inbound_buffer_frames < m.max_inbound_backlog + 2 || m.inbound_buffer_frames > 1000 {
            return Err(invalid("media.max_inbound_backlog must be positive and media.inbound_buffer_frames at least max_inbound_backlog + 2 (and at most 1000)".into()));
        }
        let mut routes = Vec::with_capacity(raw.route.len());
        for r in raw.route {
            if !r.path.starts_with('/') {
                return Err(invalid(format!("route path {:?} must start with /", r.path)));
            }
            let header = match (r.header, r.equals) {
                (Some(h), Some(v)) => Some((h, v)),
                (None, None) => None,
                _ => return Err(invalid(format!("route {}: `header` and `equals` go together", r.path))),
            };
            let processors = r
                .processors
                .into_iter()
                .map(ProcessorSpec::from_table)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("route {}: {e}", r.path)))?;
            registry.build_pipeline(&processors).map_err(|e| invalid(format!("route {}: {e}", r.path)))?;
            routes.push(Route { path: r.path, header, processors });
        }
        Ok(Config {
            server: ServerConfig {
                listen,
                metadata_timeout: Duration::from_millis(s.metadata_timeout_ms),
                frame_policy: s.frame_policy,
                max_message_bytes: s.max_message_bytes,
                max_calls: s.max_calls,
                shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
                write_timeout: Duration::from_millis(s.write_timeout_ms),
                send_buffer_bytes: (s.send_buffer_bytes > 0).then_some(s.send_buffer_bytes),
                stats_interval: (s.stats_interval_ms > 0).then(|| Duration::from_millis(s.stats_interval_ms)),
                read_mode: s.read_mode,
            },
            session: SessionConfig {
                lookahead_frames: m.lookahead_frames,
                outbound_queue_frames: m.outbound_queue_frames,
                inbound_buffer_frames: m.inbound_buffer_frames,
                max_inbound_backlog: m.max_inbound_backlog,
            },
            media: MediaConfig { threads: m.threads, max_catchup: Duration::from_millis(m.max_catchup_ms), ..MediaConfig::default() },
            routes,
        })
    }

    /// Whether any route serves `path`.
    pub fn serves_path(&self, path: &str) -> bool {
        self.routes.iter().any(|r| r.path == path)
    }

    /// The first route for `path` that matches `metadata`.
    pub fn route(&self, path: &str, metadata: &Metadata) -> Option<&Route> {
        self.routes.iter().find(|r| r.path == path && r.matches(metadata))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    metadata_timeout_ms: u64,
    frame_policy: FramePolicy,
    max_message_bytes: usize,
    max_calls: usize,
    shutdown_grace_ms: u64,
    write_timeout_ms: u64,
    send_buffer_bytes: usize,
    stats_interval_ms: u64,
    read_mode: ReadMode,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            metadata_timeout_ms: 5000,
            frame_policy: FramePolicy::Lenient,
            max_message_bytes: 65536,
            max_calls: 10_000,
            shutdown_grace_ms: 10_000,
            write_timeout_ms: 10_000,
            send_buffer_bytes: 65_536,
            stats_interval_ms: 10_000,
            read_mode: ReadMode::Readiness,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMedia {
    threads: usize,
    lookahead_frames: u32,
    outbound_queue_frames: usize,
    inbound_buffer_frames: usize,
    max_inbound_backlog: usize,
    max_catchup_ms: u64,
}

impl Default for RawMedia {
    fn default() -> RawMedia {
        let s = SessionConfig::default();
        RawMedia {
            threads: 0,
            lookahead_frames: s.lookahead_frames,
            outbound_queue_frames: s.outbound_queue_frames,
            inbound_buffer_frames: s.inbound_buffer_frames,
            max_inbound_backlog: s.max_inbound_backlog,
            max_catchup_ms: 200,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: String,
    header: Option<String>,
    equals: Option<String>,
    processors: Vec<toml::Table>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SampleRate;

    /// Every TOML example in the README is a valid configuration, so the README stays true.
    /// Examples that record to Ogg/Opus load in builds with the `opus` feature; without it, they
    /// must fail with the error that names the feature.
    #[test]
    fn the_readme_examples_are_valid_configurations() {
        let readme = include_str!("../README.md");
        let registry = ProcessorRegistry::with_builtins();
        let mut checked = 0;
        for block in readme.split("```toml").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            match Config::parse(text, &registry) {
                Ok(_) => {}
                Err(e) if !cfg!(feature = "opus") && e.to_string().contains(crate::processor::OPUS_FEATURE_MISSING) => {}
                Err(e) => panic!("README example does not load: {e}\n{text}"),
            }
            checked += 1;
        }
        assert!(checked >= 2, "found {checked} examples");
    }

    #[test]
    fn the_embedded_default_is_valid_and_serves_echo() {
        let config = Config::embedded(&ProcessorRegistry::with_builtins()).unwrap();
        assert!(config.serves_path("/echo"));
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.session, SessionConfig::default());
        assert_eq!(config.server.frame_policy, FramePolicy::Lenient);
    }

    #[test]
    fn an_empty_file_means_defaults_and_no_routes() {
        let config = Config::parse("", &ProcessorRegistry::with_builtins()).unwrap();
        assert!(config.routes.is_empty());
        assert_eq!(config.server.metadata_timeout, Duration::from_secs(5));
    }

    #[test]
    fn routes_pick_by_header_in_order() {
        let text = r#"
            [[route]]
            path = "/bot"
            header = "lang"
            equals = "en-GB"
            processors = [{ type = "echo", delay_ms = 100 }]
            [[route]]
            path = "/bot"
            processors = [{ type = "echo" }]
        "#;
        let config = Config::parse(text, &ProcessorRegistry::with_builtins()).unwrap();
        let mut m = Metadata::new(SampleRate::Hz8000);
        assert!(config.route("/bot", &m).unwrap().header.is_none());
        m.headers.insert("lang".into(), "en-GB".into());
        assert!(config.route("/bot", &m).unwrap().header.is_some());
        assert!(config.route("/other", &m).is_none());
    }

    #[test]
    fn mistakes_are_refused_with_a_message() {
        let registry = ProcessorRegistry::with_builtins();
        for bad in [
            "[server]\nlisten = 'nowhere'",
            "[server]\nlisen = '127.0.0.1:1'",
            "[server]\nframe_policy = 'loose'",
            "[media]\nlookahead_frames = 0",
            "[[route]]\npath = 'echo'\nprocessors = []",
            "[[route]]\npath = '/x'\nheader = 'lang'\nprocessors = []",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'nope' }]",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'echo', delay_ms = -5 }]",
        ] {
            assert!(Config::parse(bad, &registry).is_err(), "{bad}");
        }
    }
}
