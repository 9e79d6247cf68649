//! The TOML configuration, validated once into types.
//!
//! `callpipe.toml` at the repository root documents every key and is also embedded as the
//! default ([`DEFAULT_CONFIG`]). Unknown keys are errors, so a typo never silently falls back to a
//! default. Every route's processors are built once here, so a bad parameter fails at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::{Admission, Secret};
use crate::events::{EventsConfig, LogSink, SigningKey};
use crate::media::MediaConfig;
use crate::processor::{ProcessorRegistry, ProcessorSpec};
use crate::protocol::Metadata;
use crate::session::{SessionConfig, TimelineConfig};

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

/// The `[server.tls]` table, loaded: a certificate chain and its private key, checked against
/// each other once, at configuration load. Certificates are not reloaded while serving.
#[derive(Clone)]
pub struct TlsConfig {
    /// The certificate chain file (PEM, the server's certificate first), as resolved.
    pub cert: PathBuf,
    /// The private key file (PEM: PKCS#8, PKCS#1 or SEC1), as resolved.
    pub key: PathBuf,
    /// The rustls configuration built from them (ALPN `http/1.1`).
    pub(crate) rustls: Arc<rustls::ServerConfig>,
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
    /// Where this route's call events are POSTed.
    pub event_url: Option<String>,
    /// What the upgrade request must carry (the same for every route of a path).
    pub auth: Admission,
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
    /// The embedded default.
    pub fn embedded(registry: &ProcessorRegistry) -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, registry)
    }

    /// Reads and validates a file. Relative paths in it (`[server.tls]`) are relative to the
    /// file's directory.
    pub fn load(path: &Path, registry: &ProcessorRegistry) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse_in(&text, path.parent().unwrap_or(Path::new("")), registry)
    }

    /// Validates TOML text. Relative paths in it are relative to the current directory.
    pub fn parse(text: &str, registry: &ProcessorRegistry) -> Result<Config, ConfigError> {
        Config::parse_in(text, Path::new(""), registry)
    }

    /// Validates TOML text whose relative paths are relative to `dir`.
    fn parse_in(text: &str, dir: &Path, registry: &ProcessorRegistry) -> Result<Config, ConfigError> {
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
        if s.metadata_timeout_ms == 0 || s.max_calls == 0 || s.write_timeout_ms == 0 || s.max_text_per_second == 0 {
            return Err(invalid(
                "server.metadata_timeout_ms, server.max_calls, server.write_timeout_ms and server.max_text_per_second must be positive"
                    .into(),
            ));
        }
        let m = raw.media;
        if !(1..=50).contains(&m.lookahead_frames) {
            return Err(invalid("media.lookahead_frames must be between 1 and 50".into()));
        }
        if m.outbound_queue_frames < m.lookahead_frames as usize || m.outbound_queue_frames > 3072 {
            return Err(invalid("media.outbound_queue_frames must be between lookahead_frames and 3072".into()));
        }
        if !(2..=1000).contains(&m.inbound_buffer_frames) {
            return Err(invalid(format!("media.inbound_buffer_frames must be between 2 and 1000, not {}", m.inbound_buffer_frames)));
        }
        if !(20..=10_000).contains(&m.input_jitter_ms) {
            return Err(invalid(format!("media.input_jitter_ms must be between 20 and 10000, not {}", m.input_jitter_ms)));
        }
        if m.max_input_wait_ms < m.input_jitter_ms || m.max_input_wait_ms > 3_600_000 {
            return Err(invalid(format!(
                "media.max_input_wait_ms must be at least media.input_jitter_ms ({}) and at most 3600000 (an hour), not {}",
                m.input_jitter_ms, m.max_input_wait_ms
            )));
        }
        if m.max_input_backlog_ms < 1000 || m.max_input_backlog_ms > 3_600_000 {
            return Err(invalid(format!(
                "media.max_input_backlog_ms must be between 1000 and 3600000 (a second to an hour), not {}",
                m.max_input_backlog_ms
            )));
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
            if r.processors.is_empty() {
                tracing::warn!(
                    route = %r.path,
                    "route has no processors: its calls hear only what the control API sends them (add e.g. {{ type = \"echo\" }})"
                );
            }
            let mut tables = r.processors;
            for table in &mut tables {
                resolve_paths(table, dir).map_err(|e| invalid(format!("route {}: {e}", r.path)))?;
            }
            let processors = tables
                .into_iter()
                .map(ProcessorSpec::from_table)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("route {}: {e}", r.path)))?;
            registry.build_pipeline(&processors).map_err(|e| invalid(format!("route {}: {e}", r.path)))?;
            if count_kind(&processors, "conference") > 1 {
                return Err(invalid(format!("route {}: a call joins one conference at most; the route has several", r.path)));
            }
            if let Some(url) = &r.event_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(invalid(format!("route {}: event_url {url:?} must be an http:// or https:// URL", r.path)));
            }
            let auth = match &r.auth {
                Some(table) => Admission::from_table(table).map_err(|e| invalid(format!("route {}: {e}", r.path)))?,
                None => Admission::Open,
            };
            if let Some(other) = routes.iter().find(|o: &&Route| o.path == r.path && o.auth != auth) {
                return Err(invalid(format!(
                    "routes for {} must all have the same `auth` (the upgrade is checked before the metadata picks a route)",
                    other.path
                )));
            }
            routes.push(Route { path: r.path, header, processors, event_url: r.event_url, auth });
        }
        let c = raw.control;
        let control_listen = match c.listen.trim() {
            "" | "off" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|e| invalid(format!("control.listen {addr:?}: {e}")))?),
        };
        let token = match c.token.as_str() {
            "" => None,
            value => Some(Secret::parse(value).map_err(|e| invalid(format!("control.token: {e}")))?),
        };
        if let Some(addr) = control_listen
            && token.is_none()
            && !addr.ip().is_loopback()
        {
            return Err(invalid(format!(
                "control.listen {addr} is not a loopback address: set control.token, or listen on 127.0.0.1 / [::1]"
            )));
        }
        let e = raw.events;
        let log = match e.log.as_str() {
            "off" | "" => LogSink::Off,
            "stdout" => LogSink::Stdout,
            "stderr" => LogSink::Stderr,
            path => LogSink::File(path.into()),
        };
        if e.queue == 0 || e.workers == 0 || e.timeout_ms == 0 {
            return Err(invalid("events.queue, events.workers and events.timeout_ms must be positive".into()));
        }
        let signature_secret = match e.signature_secret.as_str() {
            "" => None,
            value => Some(Secret::parse(value).map_err(|e| invalid(format!("events.signature_secret: {e}")))?),
        }
        .map(|secret| SigningKey::new(secret.expose()));
        let tls = s.tls.map(|t| TlsConfig::load(&dir.join(t.cert), &dir.join(t.key))).transpose()?;
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
                tls,
                max_text_per_second: s.max_text_per_second,
                idle_timeout: (s.idle_timeout_ms > 0).then(|| Duration::from_millis(s.idle_timeout_ms)),
                max_duration: (s.max_duration_s > 0).then(|| Duration::from_secs(s.max_duration_s)),
            },
            control: ControlConfig {
                listen: control_listen,
                token,
                ended_calls: c.ended_calls,
                max_stream_bytes: c.max_stream_bytes,
                fetch_timeout: Duration::from_millis(c.fetch_timeout_ms.max(1)),
                stream_root: (!c.stream_root.is_empty()).then(|| dir.join(&c.stream_root)),
            },
            events: EventsConfig {
                log,
                queue: e.queue,
                timeout: Duration::from_millis(e.timeout_ms),
                retries: e.retries,
                backoff: Duration::from_millis(e.backoff_ms),
                max_backoff: Duration::from_millis(e.max_backoff_ms.max(e.backoff_ms)),
                workers: e.workers,
                signing: signature_secret,
                flush_timeout: Duration::from_millis(e.flush_timeout_ms),
            },
            session: SessionConfig {
                lookahead_frames: m.lookahead_frames,
                outbound_queue_frames: m.outbound_queue_frames,
                inbound_buffer_frames: m.inbound_buffer_frames,
                timeline: TimelineConfig {
                    jitter: Duration::from_millis(m.input_jitter_ms),
                    max_wait: Duration::from_millis(m.max_input_wait_ms),
                    max_backlog: Duration::from_millis(m.max_input_backlog_ms),
                },
                max_catchup: Duration::from_millis(m.max_catchup_ms),
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

impl TlsConfig {
    /// Loads a PEM certificate chain and its private key, and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsConfig, ConfigError> {
        let fail =
            |which: &'static str, path: &Path, problem: String| ConfigError::Tls { key: which, path: path.display().to_string(), problem };
        let read = |which, path: &Path| std::fs::read(path).map_err(|e| fail(which, path, format!("cannot read it: {e}")));
        let chain = CertificateDer::pem_slice_iter(&read("cert", cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("cert", cert, format!("not valid PEM: {e}")))?;
        if chain.is_empty() {
            return Err(fail("cert", cert, "no certificate in it (expected PEM `BEGIN CERTIFICATE` sections)".into()));
        }
        let private = PrivateKeyDer::from_pem_slice(&read("key", key)?).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                fail("key", key, "no private key in it (expected PEM `BEGIN PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)".into())
            }
            e => fail("key", key, format!("not valid PEM: {e}")),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("cert", cert, format!("no TLS version available: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    fail("key", key, format!("the private key does not match the certificate in {}", cert.display()))
                }
                e => fail("key", key, format!("unusable with the certificate in {}: {e}", cert.display())),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig { cert: cert.to_owned(), key: key.to_owned(), rustls: Arc::new(config) })
    }
}

/// The files only: the rustls configuration holds the key.
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

/// Two TLS configurations are equal when they were loaded from the same files.
impl PartialEq for TlsConfig {
    fn eq(&self, other: &TlsConfig) -> bool {
        self.cert == other.cert && self.key == other.key
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
    control: RawControl,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawControl {
    listen: String,
    token: String,
    ended_calls: usize,
    max_stream_bytes: usize,
    fetch_timeout_ms: u64,
    stream_root: String,
}

impl Default for RawControl {
    fn default() -> RawControl {
        RawControl {
            listen: "127.0.0.1:8081".into(),
            token: String::new(),
            ended_calls: 1000,
            max_stream_bytes: 64 << 20,
            fetch_timeout_ms: 10_000,
            stream_root: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEvents {
    log: String,
    queue: usize,
    timeout_ms: u64,
    retries: u32,
    backoff_ms: u64,
    max_backoff_ms: u64,
    workers: usize,
    signature_secret: String,
    flush_timeout_ms: u64,
}

impl Default for RawEvents {
    fn default() -> RawEvents {
        RawEvents {
            log: "stdout".into(),
            queue: 10_000,
            timeout_ms: 5000,
            retries: 3,
            backoff_ms: 500,
            max_backoff_ms: 10_000,
            workers: 4,
            signature_secret: String::new(),
            flush_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    tls: Option<RawTls>,
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
    max_text_per_second: u32,
    idle_timeout_ms: u64,
    max_duration_s: u64,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            tls: None,
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
            max_text_per_second: 50,
            idle_timeout_ms: 120_000,
            max_duration_s: 14_400,
        }
    }
}

/// `[server.tls]`: both files are required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMedia {
    threads: usize,
    lookahead_frames: u32,
    outbound_queue_frames: usize,
    inbound_buffer_frames: usize,
    input_jitter_ms: u64,
    max_input_wait_ms: u64,
    max_input_backlog_ms: u64,
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
            input_jitter_ms: s.timeline.jitter.as_millis() as u64,
            max_input_wait_ms: s.timeline.max_wait.as_millis() as u64,
            max_input_backlog_ms: s.timeline.max_backlog.as_millis() as u64,
            max_catchup_ms: s.max_catchup.as_millis() as u64,
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
    event_url: Option<String>,
    auth: Option<toml::Table>,
}

/// The parameters of each processor type that name a file or directory.
const PATH_PARAMS: [(&str, &str); 4] = [("play", "file"), ("record", "dir"), ("conference", "record_dir"), ("fork", "ca_file")];

/// Makes a processor's relative paths (and those of the processors a `resample` wraps)
/// relative to `dir`, the configuration file's directory, and checks that a `play` file is a
/// WAV file that can be read: a missing prompt fails here, not at every call.
fn resolve_paths(table: &mut toml::Table, dir: &Path) -> Result<(), String> {
    let kind = table.get("type").and_then(toml::Value::as_str).unwrap_or_default().to_owned();
    for (_, key) in PATH_PARAMS.iter().filter(|(k, _)| *k == kind) {
        if let Some(toml::Value::String(path)) = table.get_mut(*key)
            && !path.is_empty()
            && Path::new(path.as_str()).is_relative()
            && !dir.as_os_str().is_empty()
        {
            *path = dir.join(path.as_str()).to_string_lossy().into_owned();
        }
    }
    if kind == "play"
        && let Some(file) = table.get("file").and_then(toml::Value::as_str)
        && !file.is_empty()
    {
        crate::audio::check_wav(Path::new(file)).map_err(|e| format!("play: {e}"))?;
    }
    if let Some(toml::Value::Array(inner)) = table.get_mut("processors") {
        for value in inner {
            if let Some(nested) = value.as_table_mut() {
                resolve_paths(nested, dir)?;
            }
        }
    }
    Ok(())
}

/// Processors of type `kind` in `specs`, counting those inside `resample` wrappers.
fn count_kind(specs: &[ProcessorSpec], kind: &str) -> usize {
    specs
        .iter()
        .map(|spec| {
            let nested = match spec.params.get("processors") {
                Some(toml::Value::Array(inner)) => inner
                    .iter()
                    .filter_map(|v| v.as_table().cloned().and_then(|t| ProcessorSpec::from_table(t).ok()))
                    .map(|s| count_kind(std::slice::from_ref(&s), kind))
                    .sum(),
                _ => 0,
            };
            usize::from(spec.kind == kind) + nested
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SampleRate;

    /// Every TOML example in the README and the pages under `docs/` is a valid configuration,
    /// so the documentation stays true. Examples that record to Ogg/Opus load in builds with the
    /// `opus` feature; without it, they must fail with the error that names the feature.
    #[test]
    fn the_documented_examples_are_valid_configurations() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let mut pages: Vec<_> = std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
        pages.sort();
        for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
            readme.push_str(&std::fs::read_to_string(page).unwrap());
        }
        let registry = ProcessorRegistry::with_builtins();
        // The prompts the examples play, as the configuration's check wants them: real WAVs.
        let prompts = std::env::temp_dir().join(format!("callpipe-readme-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&prompts).unwrap();
        let spec = hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        for name in ["welcome.wav", "menu.wav"] {
            let mut writer = hound::WavWriter::create(prompts.join(name), spec).unwrap();
            (0..800).for_each(|_| writer.write_sample(0i16).unwrap());
            writer.finalize().unwrap();
        }
        let mut checked = 0;
        for block in readme.split("```toml").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            let text = text.replace("/var/lib/callpipe/prompts/", &format!("{}/", prompts.display()));
            match Config::parse(&text, &registry) {
                Ok(_) => {}
                Err(e) if !cfg!(feature = "opus") && e.to_string().contains(crate::processor::OPUS_FEATURE_MISSING) => {}
                Err(e) => panic!("documented example does not load: {e}\n{text}"),
            }
            checked += 1;
        }
        let _ = std::fs::remove_dir_all(&prompts);
        assert!(checked >= 8, "found {checked} examples");
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
    fn the_control_plane_settings_load() {
        let registry = ProcessorRegistry::with_builtins();
        let text = r#"
            [control]
            listen = "0.0.0.0:9000"
            token = "t0ken"
            stream_root = "prompts"
            [events]
            log = "/var/log/callpipe/events.jsonl"
            retries = 5
            signature_secret = "s"
            [[route]]
            path = "/bot"
            event_url = "https://example.com/events"
            auth = { type = "token", token = "x" }
            processors = []
        "#;
        let config = Config::parse(text, &registry).unwrap();
        assert_eq!(config.control.listen, Some("0.0.0.0:9000".parse().unwrap()), "a token allows any address");
        assert_eq!(config.control.stream_root.as_deref(), Some(Path::new("prompts")));
        assert_eq!(config.events.log, LogSink::File("/var/log/callpipe/events.jsonl".into()));
        assert_eq!(config.events.retries, 5);
        assert_eq!(config.routes[0].event_url.as_deref(), Some("https://example.com/events"));
        assert!(matches!(config.admission("/bot"), Admission::Token(_)));
        assert_eq!(config.admission("/elsewhere"), &Admission::Open);
        let off = Config::parse("[control]\nlisten = 'off'", &registry).unwrap();
        assert_eq!(off.control.listen, None);
        let defaults = Config::parse("", &registry).unwrap();
        assert_eq!(defaults.control.listen, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!((defaults.server.max_text_per_second, defaults.server.idle_timeout), (50, Some(Duration::from_secs(120))));
        assert_eq!(defaults.events.log, LogSink::Stdout);
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
            "[control]\nlisten = '0.0.0.0:8081'",
            "[control]\nlisten = 'localhost'",
            "[server]\nmax_text_per_second = 0",
            "[events]\nqueue = 0",
            "[events]\nlog_file = 'x'",
            "[[route]]\npath = '/x'\nevent_url = 'ftp://example.com/e'\nprocessors = []",
            "[[route]]\npath = '/x'\nauth = { type = 'jwt' }\nprocessors = []",
            "[[route]]\npath = '/x'\nauth = { type = 'token', token = 'a' }\nprocessors = []\n[[route]]\npath = '/x'\nprocessors = []",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a' }, { type = 'conference', name = 'b' }]",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a' }, { type = 'resample', rate = 8000, processors = [{ type = 'conference', name = 'b' }] }]",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a b' }]",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = '{header:room}', rate = 11025 }]",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a', record = 'mixed' }]",
            "[[route]]\npath = '/x'\nprocessors = [{ type = 'conference', name = 'a', role = 'boss' }]",
        ] {
            assert!(Config::parse(bad, &registry).is_err(), "{bad}");
        }
    }
}
