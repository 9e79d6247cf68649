//! One `[[route]]`: which calls it serves (a path, optionally a metadata header's value), its
//! processor chain, where its events go and what its upgrade must carry; and how a route table
//! is validated into one.
//!
//! Every route's processors are built once here, so a bad parameter fails at start-up. Relative
//! paths in processor parameters are the configuration file's, and a `play` file must be a WAV
//! file that can be read, so a missing prompt stops start-up instead of failing every call.

use std::path::Path;

use super::ConfigError;
use super::raw::RawRoute;
use crate::auth::Admission;
use crate::processor::{ProcessorRegistry, ProcessorSpec};
use crate::protocol::Metadata;

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

/// Validates the `[[route]]` tables, in order. Relative paths in them are relative to `dir`.
pub(super) fn validate_routes(raw: Vec<RawRoute>, dir: &Path, registry: &ProcessorRegistry) -> Result<Vec<Route>, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(m);
    let mut routes = Vec::with_capacity(raw.len());
    for r in raw {
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
            resolve_paths(table, dir).map_err(|source| ConfigError::Prompt { route: r.path.clone(), source })?;
        }
        let processors = tables
            .into_iter()
            .map(ProcessorSpec::from_table)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("route {}: {e}", r.path)))?;
        registry.build_pipeline(&processors).map_err(|e| invalid(format!("route {}: {e}", r.path)))?;
        if let Some(kind) = speech_barge_in_without_vad(&processors) {
            return Err(invalid(format!(
                "route {}: {kind} barges in on speech, but nothing in the route detects speech: add {{ type = \"vad\" }} to the route",
                r.path
            )));
        }
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
    Ok(routes)
}

/// The parameters of each processor type that name a file or directory.
const PATH_PARAMS: [(&str, &str); 4] = [("play", "file"), ("record", "dir"), ("conference", "record_dir"), ("fork", "ca_file")];

/// Makes a processor's relative paths (and those of the processors a `resample` wraps)
/// relative to `dir`, the configuration file's directory, and checks that a `play` file is a
/// WAV file that can be read: a missing prompt fails here, not at every call.
fn resolve_paths(table: &mut toml::Table, dir: &Path) -> Result<(), crate::audio::AudioError> {
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
        crate::audio::check_wav(Path::new(file))?;
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

impl Route {
    /// Whether the route has a `vad`, so that its calls report speech (and speech can barge
    /// in on the control API's audio).
    pub fn detects_speech(&self) -> bool {
        count_kind(&self.processors, "vad") > 0
    }
}

/// Processors of type `kind` in `specs`, counting those inside `resample` wrappers.
fn count_kind(specs: &[ProcessorSpec], kind: &str) -> usize {
    let mut n = 0;
    each_spec(specs, &mut |spec| n += usize::from(spec.kind == kind));
    n
}

/// Calls `f` on every spec of `specs`, and on those inside `resample` wrappers.
fn each_spec(specs: &[ProcessorSpec], f: &mut impl FnMut(&ProcessorSpec)) {
    for spec in specs {
        f(spec);
        if let Some(toml::Value::Array(inner)) = spec.params.get("processors") {
            let nested: Vec<ProcessorSpec> =
                inner.iter().filter_map(|v| v.as_table().cloned().and_then(|t| ProcessorSpec::from_table(t).ok())).collect();
            each_spec(&nested, f);
        }
    }
}

/// The first processor in `specs` that barges in on speech, when no `vad` would tell it the
/// caller speaks.
fn speech_barge_in_without_vad(specs: &[ProcessorSpec]) -> Option<String> {
    let mut first = None;
    each_spec(specs, &mut |spec| {
        let on_speech = matches!(spec.params.get("barge_in"), Some(toml::Value::String(mode)) if mode == "speech" || mode == "both");
        if on_speech && first.is_none() {
            first = Some(spec.kind.clone());
        }
    });
    first.filter(|_| count_kind(specs, "vad") == 0)
}
