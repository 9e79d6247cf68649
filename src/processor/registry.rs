//! Building processors by name from a route's configuration.
//!
//! A route lists processors as TOML tables such as `{ type = "echo", delay_ms = 200 }`. The
//! [`ProcessorRegistry`] maps each `type` to a [`Factory`]; applications embedding callpipe
//! register their own types next to the built-ins. Specs are checked once when the configuration
//! loads, so a bad parameter is a start-up error, not a failed call.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Echo, Pipeline, Processor, ProcessorError};

/// One processor in a route: its type and the rest of its TOML table as parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorSpec {
    /// The registered type name, e.g. `"echo"`.
    pub kind: String,
    /// Every other key of the table.
    pub params: toml::Table,
}

impl ProcessorSpec {
    /// A spec from a TOML table with a `type` key.
    pub fn from_table(mut table: toml::Table) -> Result<ProcessorSpec, ProcessorError> {
        match table.remove("type") {
            Some(toml::Value::String(kind)) => Ok(ProcessorSpec { kind, params: table }),
            _ => Err(ProcessorError::Config { processor: "?".into(), message: "every processor needs a string `type`".into() }),
        }
    }
}

/// Makes one processor instance from its parameters.
pub type Factory = Arc<dyn Fn(&toml::Table) -> Result<Box<dyn Processor>, ProcessorError> + Send + Sync>;

/// The processor types a server can build.
#[derive(Clone)]
pub struct ProcessorRegistry {
    factories: BTreeMap<String, Factory>,
}

impl ProcessorRegistry {
    /// A registry with no types.
    pub fn empty() -> ProcessorRegistry {
        ProcessorRegistry { factories: BTreeMap::new() }
    }

    /// A registry with callpipe's built-in processors.
    pub fn with_builtins() -> ProcessorRegistry {
        let mut registry = ProcessorRegistry::empty();
        registry.register("echo", |params| {
            let p = Params::new("echo", params);
            p.only(&["delay_ms"])?;
            let delay_ms = p.u32_or("delay_ms", 0)?;
            Ok(Box::new(Echo::new(delay_ms)?))
        });
        registry
    }

    /// Registers (or replaces) a type.
    pub fn register<F>(&mut self, kind: &str, factory: F)
    where
        F: Fn(&toml::Table) -> Result<Box<dyn Processor>, ProcessorError> + Send + Sync + 'static,
    {
        self.factories.insert(kind.to_owned(), Arc::new(factory));
    }

    /// The registered type names.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds one processor.
    pub fn build(&self, spec: &ProcessorSpec) -> Result<Box<dyn Processor>, ProcessorError> {
        let factory = self.factories.get(&spec.kind).ok_or_else(|| ProcessorError::Unknown(spec.kind.clone()))?;
        factory(&spec.params)
    }

    /// Builds a pipeline from a route's specs, in order.
    pub fn build_pipeline(&self, specs: &[ProcessorSpec]) -> Result<Pipeline, ProcessorError> {
        specs.iter().map(|spec| self.build(spec)).collect::<Result<Vec<_>, _>>().map(Pipeline::new)
    }
}

impl std::fmt::Debug for ProcessorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds()).finish()
    }
}

/// Typed access to a processor's TOML parameters, with errors that name the processor.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    processor: &'a str,
    table: &'a toml::Table,
}

impl<'a> Params<'a> {
    /// Parameters of processor type `processor`.
    pub fn new(processor: &'a str, table: &'a toml::Table) -> Params<'a> {
        Params { processor, table }
    }

    /// An error about this processor.
    pub fn error(&self, message: impl Into<String>) -> ProcessorError {
        ProcessorError::Config { processor: self.processor.to_owned(), message: message.into() }
    }

    /// Refuses keys other than `allowed`, so that typos do not pass silently.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ProcessorError> {
        match self.table.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(self.error(format!("unknown parameter `{key}` (known: {})", allowed.join(", ")))),
            None => Ok(()),
        }
    }

    /// A non-negative integer parameter that fits in `u32`, or `default` when absent.
    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32, ProcessorError> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(n)) => {
                u32::try_from(*n).map_err(|_| self.error(format!("`{key}` must be between 0 and {}", u32::MAX)))
            }
            Some(other) => Err(self.error(format!("`{key}` must be an integer, not {}", other.type_str()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ProcessorSpec {
        ProcessorSpec::from_table(toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn builds_builtins_and_refuses_bad_params() {
        let registry = ProcessorRegistry::with_builtins();
        assert_eq!(registry.build(&spec("type = 'echo'")).unwrap().name(), "echo");
        assert_eq!(registry.build(&spec("type = 'echo'\ndelay_ms = 200")).unwrap().delay().as_millis(), 200);
        for bad in [
            "type = 'echo'\ndelay_ms = -1",
            "type = 'echo'\ndelay_ms = 'x'",
            "type = 'echo'\ndelay = 5",
            "type = 'echo'\ndelay_ms = 600000",
        ] {
            assert!(matches!(registry.build(&spec(bad)), Err(ProcessorError::Config { .. })), "{bad}");
        }
        assert!(matches!(registry.build(&spec("type = 'nope'")), Err(ProcessorError::Unknown(_))));
        assert!(ProcessorSpec::from_table(toml::from_str("delay_ms = 1").unwrap()).is_err());
    }
}
