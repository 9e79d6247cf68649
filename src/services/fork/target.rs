//! A fork's connection to its target: TCP, then for `wss://` TLS, then the WebSocket upgrade.
//!
//! * TLS is rustls with the ring provider. The server's certificate is checked against the
//!   Mozilla roots of the `webpki-roots` crate, plus the certificates of the fork's `ca_file`
//!   (PEM) when it has one, so that a target with a private CA works. The name checked, and sent
//!   as SNI, is the URL's host (an IP address is checked against the certificate's IP
//!   addresses, and no SNI is sent for it). ALPN offers `http/1.1`.
//! * The trust roots are read once per `ca_file` (and once for none), when the first fork
//!   naming it is built (at configuration load), and shared by every fork and call after: a
//!   bad file is a configuration error, and the file is not read again while serving (as the
//!   server's own `[server.tls]` files).
//! * [`connect`] runs on the fork's task; its caller bounds the whole of it (TCP, TLS and the
//!   upgrade) with the fork's connect timeout.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// An open connection to a target.
pub type Ws = WebSocketStream<TargetStream>;

/// The byte stream under a target's WebSocket: plain for `ws://`, TLS for `wss://`.
#[derive(Debug)]
pub enum TargetStream {
    /// `ws://`: the socket itself.
    Plain(TcpStream),
    /// `wss://`: the socket inside a rustls session (boxed: the session is large).
    Tls(Box<TlsStream<TcpStream>>),
}

/// How a fork reaches its target.
#[derive(Debug, Clone)]
pub enum Security {
    /// `ws://`.
    Plain,
    /// `wss://`, with these trust roots.
    Tls(Arc<ClientConfig>),
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum ConnectError {
    /// The request's URL has no host.
    #[error("the URL has no host")]
    NoHost,
    /// The TCP connection failed (including the host's name not resolving).
    #[error("TCP connection to {host}:{port} failed: {source}")]
    Tcp {
        /// The URL's host.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        source: io::Error,
    },
    /// The host is not a name TLS can check.
    #[error("TLS: {host:?} is not a valid server name")]
    ServerName {
        /// The URL's host.
        host: String,
    },
    /// The TLS handshake failed: most often a certificate that is not trusted or does not name
    /// the host.
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        /// The URL's host.
        host: String,
        /// Why (rustls's error inside).
        source: io::Error,
    },
    /// The WebSocket upgrade failed (an HTTP error status, a bad answer, the connection lost).
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(#[source] Box<tungstenite::Error>),
}

/// Connects to the request's URL and upgrades.
pub(super) async fn connect(request: Request, security: Security) -> Result<Ws, ConnectError> {
    let uri = request.uri();
    // `Uri::host` keeps an IPv6 address's brackets; sockets and TLS want it bare.
    let host = uri.host().ok_or(ConnectError::NoHost)?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let default_port = if matches!(security, Security::Tls(_)) { 443 } else { 80 };
    let port = uri.port_u16().unwrap_or(default_port);
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|source| ConnectError::Tcp { host: host.clone(), port, source })?;
    // Small audio messages go out at once.
    let _ = tcp.set_nodelay(true);
    let stream = match &security {
        Security::Plain => TargetStream::Plain(tcp),
        Security::Tls(config) => {
            let name = ServerName::try_from(host.as_str()).map_err(|_| ConnectError::ServerName { host: host.clone() })?.to_owned();
            let tls = TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(|source| ConnectError::Tls { host, source })?;
            TargetStream::Tls(Box::new(tls))
        }
    };
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await.map_err(|e| ConnectError::Upgrade(Box::new(e)))?;
    Ok(ws)
}

/// Why a fork's trust roots could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The file could not be read.
    #[error("`ca_file` {}: cannot read it: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not PEM.
    #[error("`ca_file` {}: not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("`ca_file` {}: no certificate in it (expected PEM `BEGIN CERTIFICATE` sections)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate cannot be a trust anchor.
    #[error("`ca_file` {}: a certificate in it cannot be a trust anchor: {source}", path.display())]
    Anchor {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The TLS provider offers no protocol version.
    #[error("no TLS version available: {0}")]
    Versions(#[source] rustls::Error),
}

/// The TLS client configuration for forks with `ca_file` (or none): built on first use, then
/// shared by every fork of the process (it is immutable: a cache of what the files held at
/// first use). Takes a lock and may read a file: call it when building a fork, never per frame.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TrustError> {
    static CONFIGS: Mutex<Option<HashMap<Option<PathBuf>, Arc<ClientConfig>>>> = Mutex::new(None);
    let key = ca_file.map(Path::to_path_buf);
    // A panic while the lock was held cannot leave the map half-changed (an insert either
    // happened or not), so a poisoned lock is used as is.
    let mut configs = CONFIGS.lock().unwrap_or_else(PoisonError::into_inner);
    let configs = configs.get_or_insert_with(HashMap::new);
    if let Some(config) = configs.get(&key) {
        return Ok(config.clone());
    }
    let config = Arc::new(build_tls_config(ca_file)?);
    configs.insert(key, config.clone());
    Ok(config)
}

/// The Mozilla roots plus `ca_file`'s certificates, the ring provider, ALPN `http/1.1`.
fn build_tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, TrustError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|source| TrustError::Anchor { path: path.to_owned(), source })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The PEM certificates in `path`: at least one.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let bytes = std::fs::read(path).map_err(|source| TrustError::Read { path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TrustError::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TrustError::Empty { path: path.to_owned() });
    }
    Ok(certs)
}

impl AsyncRead for TargetStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TargetStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TargetStream::Plain(s) => s.is_write_vectored(),
            TargetStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("callpipe-fork-ca-{}-{name}.pem", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn ca_files_are_checked_with_messages_naming_the_file() {
        let missing = std::env::temp_dir().join("callpipe-fork-ca-missing.pem");
        let error = tls_config(Some(&missing)).unwrap_err().to_string();
        assert!(error.contains("cannot read it") && error.contains("callpipe-fork-ca-missing.pem"), "{error}");
        let empty = temp("empty", "just text\n");
        assert!(tls_config(Some(&empty)).unwrap_err().to_string().contains("no certificate in it"));
        let garbled = temp("garbled", "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n");
        assert!(tls_config(Some(&garbled)).unwrap_err().to_string().contains("not valid PEM"));
        let made = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let good = temp("good", &made.cert.pem());
        let config = tls_config(Some(&good)).unwrap();
        assert!(Arc::ptr_eq(&config, &tls_config(Some(&good)).unwrap()), "built once, then shared");
        assert!(!Arc::ptr_eq(&config, &tls_config(None).unwrap()));
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        for path in [empty, garbled, good] {
            let _ = std::fs::remove_file(path);
        }
    }
}
