//! Reading and validating a configuration: the TOML text is parsed into its [raw](super::raw)
//! mirror, then every value is checked once (ranges, addresses, secrets, the routes and their
//! processors, the TLS files) and turned into the typed [`Config`].
//!
//! Relative paths are the configuration file's: a file loaded with [`Config::load`] resolves
//! them against its own directory, text given to [`Config::parse`] against the current one.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{RawCluster, RawConfig};
use super::route::validate_routes;
use super::{Config, ConfigError, ControlConfig, DEFAULT_CONFIG, ServerConfig, TlsConfig};
use crate::auth::Secret;
use crate::cluster::ClusterConfig;
use crate::events::stream::StreamConfig;
use crate::events::{EventsConfig, LogSink, SigningKey};
use crate::media::MediaConfig;
use crate::processor::ProcessorRegistry;
use crate::services::uploads::StorageConfig;
use crate::session::{SessionConfig, TimelineConfig};

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
        let routes = validate_routes(raw.route, dir, registry)?;
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
        let cluster = raw.cluster.map(|c| validate_cluster(c, control_listen, token.is_some())).transpose()?;
        let event_stream = e
            .redis
            .map(|r| {
                let url = Secret::parse(r.url.trim()).map_err(|e| invalid(format!("events.redis.url: {e}")))?;
                if r.stream.trim().is_empty() || r.max_len == 0 {
                    return Err(invalid("events.redis.stream must be named and events.redis.max_len must be positive".into()));
                }
                let node = cluster.as_ref().map_or_else(ClusterConfig::default_node_id, |c| c.node_id.clone());
                let config = StreamConfig { url, stream: r.stream.trim().to_owned(), max_len: r.max_len, node };
                config.client().map_err(invalid)?;
                Ok(config)
            })
            .transpose()?;
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
                redis: event_stream,
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
            media: MediaConfig {
                threads: m.threads,
                io: m.io,
                max_catchup: Duration::from_millis(m.max_catchup_ms),
                ..MediaConfig::default()
            },
            routes,
            cluster,
            storage: validate_storage(raw.storage)?,
        })
    }
}

/// Checks `[storage]`: an endpoint must be an http(s) URL; the keys may be `env:NAME`.
fn validate_storage(s: super::raw::RawStorage) -> Result<StorageConfig, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(m);
    let text = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    let secret = |key: &str, v: &str| -> Result<Option<Secret>, ConfigError> {
        text(v).map(|v| Secret::parse(&v).map_err(|e| invalid(format!("storage.{key}: {e}")))).transpose()
    };
    let endpoint = text(&s.endpoint);
    if let Some(url) = &endpoint {
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("storage.endpoint {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!("storage.endpoint {url:?} must be an http:// or https:// URL")));
        }
    }
    Ok(StorageConfig {
        endpoint,
        region: text(&s.region),
        allow_http: s.allow_http,
        access_key_id: secret("access_key_id", &s.access_key_id)?,
        secret_access_key: secret("secret_access_key", &s.secret_access_key)?,
    })
}

/// Checks `[cluster]`: Redis's URL, the node id, the address other nodes forward to, the
/// heartbeat and TTL.
fn validate_cluster(c: RawCluster, control_listen: Option<SocketAddr>, token: bool) -> Result<ClusterConfig, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(m);
    let redis = Secret::parse(c.redis.trim()).map_err(|e| invalid(format!("cluster.redis: {e}")))?;
    let node_id = match c.node_id.trim() {
        "" => ClusterConfig::default_node_id(),
        id => id.to_owned(),
    };
    ClusterConfig::check_node_id(&node_id).map_err(invalid)?;
    let Some(listen) = control_listen else {
        return Err(invalid("[cluster] needs the control API (control.listen): the other nodes forward requests to it".into()));
    };
    if !token {
        return Err(invalid(
            "[cluster] needs control.token (the same on every node): nodes present it to each other's control API and conference links"
                .into(),
        ));
    }
    let advertise_control = match c.advertise_control.trim() {
        "" if listen.ip().is_unspecified() => {
            return Err(invalid(format!(
                "control.listen {listen} is every address: set cluster.advertise_control to the URL other nodes reach this node's control API at"
            )));
        }
        "" => None,
        url => {
            let parsed = url::Url::parse(url).map_err(|e| invalid(format!("cluster.advertise_control {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() || parsed.path() != "/" {
                return Err(invalid(format!("cluster.advertise_control {url:?} must be http(s)://host:port, without a path")));
            }
            Some(url.trim_end_matches('/').to_owned())
        }
    };
    let advertise_media = match c.advertise_media.trim() {
        "" => None,
        url => {
            let parsed = url::Url::parse(url).map_err(|e| invalid(format!("cluster.advertise_media {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "ws" | "wss") || parsed.host().is_none() || parsed.path() != "/" {
                return Err(invalid(format!("cluster.advertise_media {url:?} must be ws(s)://host:port, without a path")));
            }
            Some(url.trim_end_matches('/').to_owned())
        }
    };
    if !(100..=60_000).contains(&c.heartbeat_ms) {
        return Err(invalid(format!("cluster.heartbeat_ms must be between 100 and 60000, not {}", c.heartbeat_ms)));
    }
    if c.ttl_ms < 2 * c.heartbeat_ms || c.ttl_ms > 300_000 {
        return Err(invalid(format!(
            "cluster.ttl_ms must be at least twice cluster.heartbeat_ms ({}) and at most 300000, not {}",
            2 * c.heartbeat_ms,
            c.ttl_ms
        )));
    }
    let prefix = c.key_prefix.trim();
    if prefix.is_empty() || prefix.len() > 64 || prefix.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
        return Err(invalid(format!("cluster.key_prefix {prefix:?} must be 1 to 64 characters without spaces")));
    }
    let config = ClusterConfig {
        redis,
        node_id,
        advertise_control,
        advertise_media,
        heartbeat: Duration::from_millis(c.heartbeat_ms),
        ttl: Duration::from_millis(c.ttl_ms),
        prefix: prefix.to_owned(),
    };
    config.client().map_err(invalid)?;
    Ok(config)
}
