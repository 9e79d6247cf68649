//! `wss://` end to end on 127.0.0.1: a certificate made in the test, a rustls client that
//! trusts it, a byte-exact echo over TLS, a plain `ws://` client refused cleanly beside a live
//! TLS call, and `[server.tls]` mistakes refused at configuration load with their file named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use callpipe::config::Config;
use callpipe::processor::ProcessorRegistry;
use common::*;
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type TlsClient = WebSocketStream<TlsStream<TcpStream>>;

/// A temporary directory holding a fresh self-signed certificate for `localhost` and
/// 127.0.0.1 (`cert.pem`) and its key (`key.pem`); removed on drop.
struct Certs {
    dir: PathBuf,
    cert_der: CertificateDer<'static>,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("callpipe-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        Certs { dir, cert_der: made.cert.der().clone() }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The echo test configuration with `[server.tls]` naming these files.
    fn config(&self) -> String {
        tls_config(&self.cert(), &self.key())
    }

    /// A client configuration that trusts only this certificate and offers ALPN `http/1.1`.
    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ECHO_CONFIG` plus a `[server.tls]` table.
fn tls_config(cert: &Path, key: &Path) -> String {
    let table = format!("[server.tls]\ncert = {:?}\nkey = {:?}\n", cert.display().to_string(), key.display().to_string());
    ECHO_CONFIG.replace("[media]", &format!("{table}[media]"))
}

/// Opens TCP, TLS (checking the server's certificate for `localhost`), then the WebSocket, and
/// sends the metadata frame at `rate`.
async fn wss_call(addr: SocketAddr, client: Arc<ClientConfig>, rate: u32) -> TlsClient {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), TlsConnector::from(client).connect(name, tcp)).await.unwrap().unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]), "the server picks ALPN http/1.1");
    let url = format!("wss://localhost:{}/echo", addr.port());
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::client_async_with_config(url, tls, None))
        .await
        .unwrap()
        .expect("upgrade over TLS");
    ws.send(Message::text(format!(r#"{{"event":"websocket:connected","content-type":"audio/l16;rate={rate}"}}"#))).await.unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echo_is_byte_exact() {
    let certs = Certs::new("echo");
    let server = TestServer::start(&certs.config()).await;
    let ws = wss_call(server.addr, certs.client(), 16000).await;
    let (sent, received) = echo_over(ws, 16000, 100).await;
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "the echo over TLS must be byte-exact and in order");
    let stats = &server.handle.stats;
    assert_eq!(stats.frames_out.load(Ordering::Relaxed), 100);
    assert_eq!(stats.failed_handshakes.load(Ordering::Relaxed), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ws_to_the_tls_port_fails_cleanly_beside_a_live_tls_call() {
    let certs = Certs::new("plain");
    let server = TestServer::start(&certs.config()).await;
    let ws = wss_call(server.addr, certs.client(), 8000).await;
    let call = tokio::spawn(echo_over(ws, 8000, 100));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A plain client is answered with a TLS alert, not an HTTP response: an error, promptly.
    let plain = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(server.url("/echo"))).await;
    assert!(matches!(plain, Ok(Err(_))), "a plain ws:// upgrade to the TLS port must fail, not hang: {plain:?}");
    // A TLS client that does not trust the certificate gives up on its side.
    let untrusting = {
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await
    };
    assert!(untrusting.is_err());

    let (sent, received) = call.await.unwrap();
    assert!(received == sent, "the TLS call beside them echoes byte-exact ({} of {} frames)", received.len(), sent.len());
    let stats = &server.handle.stats;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while stats.failed_handshakes.load(Ordering::Relaxed) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.failed_handshakes.load(Ordering::Relaxed), 2, "both failed TLS handshakes are counted");
    assert_eq!(stats.calls_total.load(Ordering::Relaxed), 1);
    server.stop().await;
}

fn refusal(text: &str) -> String {
    match Config::parse(text, &ProcessorRegistry::with_builtins()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_tls_files_are_refused_with_a_message_naming_the_problem() {
    let certs = Certs::new("bad");
    let other = Certs::new("other");
    assert!(Config::parse(&certs.config(), &ProcessorRegistry::with_builtins()).unwrap().server.tls.is_some());

    let missing = certs.dir.join("missing.pem");
    let message = refusal(&tls_config(&certs.cert(), &missing));
    assert!(message.contains("server.tls.key") && message.contains(&*missing.to_string_lossy()), "{message}");
    assert!(message.contains("cannot read"), "{message}");

    let message = refusal(&tls_config(&certs.cert(), &other.key()));
    assert!(message.contains(&*other.key().to_string_lossy()), "{message}");
    assert!(message.contains("does not match the certificate"), "{message}");

    let message = refusal(&tls_config(&certs.key(), &certs.key()));
    assert!(message.contains("server.tls.cert") && message.contains("no certificate"), "{message}");

    let message = refusal(&tls_config(&certs.cert(), &certs.cert()));
    assert!(message.contains("server.tls.key") && message.contains("no private key"), "{message}");

    let garbled = certs.dir.join("garbled.pem");
    std::fs::write(&garbled, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n").unwrap();
    let message = refusal(&tls_config(&garbled, &certs.key()));
    assert!(message.contains("server.tls.cert") && message.contains("not valid PEM"), "{message}");

    let message = refusal(&ECHO_CONFIG.replace("[media]", "[server.tls]\ncert = \"cert.pem\"\n[media]"));
    assert!(message.contains("key"), "both files are required: {message}");
}

#[test]
fn relative_paths_are_relative_to_the_configuration_file() {
    let certs = Certs::new("relative");
    let text = ECHO_CONFIG.replace("[media]", "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[media]");
    let file = certs.dir.join("callpipe.toml");
    std::fs::write(&file, &text).unwrap();
    let registry = ProcessorRegistry::with_builtins();
    let tls = Config::load(&file, &registry).unwrap().server.tls.unwrap();
    assert_eq!((tls.cert, tls.key), (certs.cert(), certs.key()));
    // The same text parsed on its own resolves against the current directory instead.
    assert!(refusal(&text).contains("cannot read"));
}
