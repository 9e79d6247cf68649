//! Where the emulator connects: a `ws://` URL parsed into the Host header, the resolved address
//! and the path.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::client::ClientError;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` for the Host header.
    pub host: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Path and query of the WebSocket URL.
    pub path_and_query: String,
}

impl Target {
    /// Parses a `ws://host:port/path?query` URL. `wss://` is not supported by the emulator.
    pub fn parse(url: &str) -> Result<Target, ClientError> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| ClientError::Url(format!("{url}: only ws:// URLs are supported")))?;
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if host.is_empty() {
            return Err(ClientError::Url(format!("{url}: no host")));
        }
        let with_port =
            if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) { host.to_owned() } else { format!("{host}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| ClientError::Url(format!("{url}: {e}")))?
            .next()
            .ok_or_else(|| ClientError::Url(format!("{url}: no address")))?;
        Ok(Target { host: host.to_owned(), addr, path_and_query: path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/echo?call_id=7").unwrap();
        assert_eq!((t.host.as_str(), t.path_and_query.as_str()), ("127.0.0.1:8080", "/echo?call_id=7"));
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(Target::parse("ws://127.0.0.1:9").unwrap().path_and_query, "/");
        assert_eq!(Target::parse("ws://127.0.0.1:9?x=1").unwrap().path_and_query, "/?x=1");
        assert!(Target::parse("wss://127.0.0.1:9/").is_err());
        assert!(Target::parse("ws:///x").is_err());
    }
}
