//! The `[server.tls]` table, loaded: the certificate chain and private key `wss://` serves
//! with, read and checked against each other once, at configuration load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ConfigError;

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
