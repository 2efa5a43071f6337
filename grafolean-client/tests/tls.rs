//! HTTPS with real TLS handshakes: a CA and a server certificate for 127.0.0.1 and localhost
//! made at test time (rcgen), a rustls front on a loopback port that forwards each request to
//! the stand-in backend, and the client trusting (or not) the CA through `ClientConfig::ca_file`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use grafolean_client::test_server::{BotKind, TestServer};
use grafolean_client::{Client, ClientConfig, Error, Token, ValueBatch};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

type R = Result<(), Box<dyn std::error::Error>>;
type BoxError = Box<dyn std::error::Error>;

/// A private CA and a server certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: String,
    server_config: Arc<ServerConfig>,
}

fn make_pki(ca_name: &str) -> Result<Pki, BoxError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let server_key = KeyPair::generate()?;
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "grafolean.test");
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )?;
    Ok(Pki {
        ca_pem: ca.pem(),
        server_config: Arc::new(server_config),
    })
}

/// HTTPS on `127.0.0.1:<free port>`: terminates TLS and forwards each request (the client
/// sends one per connection to the stand-in, which answers `Connection: close`) to `backend`.
struct TlsFront {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TlsFront {
    fn start(config: Arc<ServerConfig>, backend: SocketAddr) -> io::Result<TlsFront> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept_stop = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = conn else { continue };
                let config = Arc::clone(&config);
                thread::spawn(move || {
                    // A refused handshake ends here with an error: that is the point of
                    // some tests, and the client reports it.
                    let _ = forward(tcp, config, backend);
                });
            }
        });
        Ok(TlsFront {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    fn url(&self) -> String {
        format!("https://{}/api", self.addr)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn forward(tcp: TcpStream, config: Arc<ServerConfig>, backend: SocketAddr) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = read_request(&mut tls)?;
    let mut upstream = TcpStream::connect(backend)?;
    upstream.set_read_timeout(Some(Duration::from_secs(10)))?;
    upstream.write_all(&request)?;
    upstream.shutdown(Shutdown::Write)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    tls.write_all(&response)?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// One HTTP/1.1 request: the head up to the blank line, then `Content-Length` body bytes.
fn read_request(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let body_len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// A file under this test binary's scratch directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> io::Result<TempFile> {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("grafolean-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents)?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// No retries, short timeouts: a refused handshake must come back at once.
fn config() -> ClientConfig {
    ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_retries(0, 0)
}

#[test]
fn test_https_with_the_private_ca_trusted() -> R {
    let server = TestServer::start()?;
    let account = server.add_account("NetFlow test account");
    let (bot, token) = server.add_bot(BotKind::Systemwide);
    let cred = server.add_credential(account, "Default NetFlow credential");
    let sensor = server.add_sensor(account, "Default NetFlow sensor", None);
    let entity = server.add_netflow_entity(account, "router", "10.0.0.1", cred, sensor, Some(bot));
    let pki = make_pki("Private Test CA")?;
    let front = TlsFront::start(Arc::clone(&pki.server_config), server.addr())?;
    let ca = TempFile::new("ca.pem", pki.ca_pem.as_bytes())?;

    let url = front.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let client = Client::with_config(&url, Token::new(&token)?, config().with_ca_file(&ca.0))?;
    assert!(client.status()?.is_ready());
    let jobs = client.job_config()?;
    assert_eq!(jobs.accounts.len(), 1);
    assert_eq!(jobs.accounts[0].entities.len(), 1);
    assert_eq!(jobs.accounts[0].entities[0].entity_id, entity);
    let mut batch = ValueBatch::new();
    batch.try_insert("netflow.1min.ingress", 1500.0)?;
    let report = client.post_values(account, &batch)?;
    assert_eq!(report.values, 1);
    let values = server.values();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].path, "netflow.1min.ingress");
    assert_eq!(values[0].value, 1500.0);
    Ok(())
}

/// The certificate is not trusted: without a CA file (bundled roots only) and with a CA file
/// of another CA. Either way a transport error before anything was sent, and no request
/// reached the backend.
#[test]
fn test_https_untrusted_certificate_is_a_transport_error() -> R {
    let server = TestServer::start()?;
    let (_, token) = server.add_bot(BotKind::Systemwide);
    let pki = make_pki("Private Test CA")?;
    let other = make_pki("Some Other CA")?;
    let front = TlsFront::start(Arc::clone(&pki.server_config), server.addr())?;
    let other_ca = TempFile::new("other-ca.pem", other.ca_pem.as_bytes())?;

    let without = Client::with_config(&front.url(), Token::new(&token)?, config())?;
    let with_other = Client::with_config(
        &front.url(),
        Token::new(&token)?,
        config().with_ca_file(&other_ca.0),
    )?;
    for (what, client) in [("no CA file", without), ("another CA", with_other)] {
        for result in [
            client.status().map(|_| ()),
            client.profile().map(|_| ()),
            client.job_config().map(|_| ()),
        ] {
            match result {
                Err(Error::Transport {
                    before_send,
                    message,
                    ..
                }) => {
                    assert!(before_send, "{what}: {message}");
                    // Says what is wrong and what to do.
                    assert!(message.contains("UnknownIssuer"), "{what}: {message}");
                    assert!(message.contains("BACKEND_CA_FILE"), "{what}: {message}");
                    assert!(!message.contains(&token), "{what}: token in {message}");
                }
                other => panic!("{what}: expected a transport error, got {other:?}"),
            }
        }
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    Ok(())
}

fn ca_file_error(contents: &[u8], name: &str) -> Result<(PathBuf, String, String), BoxError> {
    let file = TempFile::new(name, contents)?;
    let result = Client::with_config(
        "https://127.0.0.1:1/api",
        Token::new("2950cb50-8be5-4079-881e-312732065f11")?,
        config().with_ca_file(&file.0),
    );
    match result {
        Err(e @ Error::CaFile { .. }) => {
            let shown = e.to_string();
            let Error::CaFile { path, reason } = e else {
                unreachable!()
            };
            assert_eq!(path, file.0);
            assert!(shown.contains(&file.0.display().to_string()), "{shown}");
            Ok((path, reason, shown))
        }
        other => Err(format!("{name}: expected Error::CaFile, got {other:?}").into()),
    }
}

#[test]
fn test_ca_file_that_is_not_pem_is_a_typed_error_naming_the_file() -> R {
    let (_, reason, _) = ca_file_error(b"this is not a certificate\n", "not-pem.txt")?;
    assert!(reason.contains("no certificate"), "{reason}");

    // A private key is PEM, but not a certificate.
    let key = KeyPair::generate()?.serialize_pem();
    let (_, reason, _) = ca_file_error(key.as_bytes(), "key.pem")?;
    assert!(reason.contains("no certificate"), "{reason}");

    // A CERTIFICATE block with broken base64.
    let (_, reason, _) = ca_file_error(
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "bad-base64.pem",
    )?;
    assert!(reason.contains("not valid PEM"), "{reason}");

    // Valid PEM whose content is not a certificate.
    let (_, reason, _) = ca_file_error(
        b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        "not-a-cert.pem",
    )?;
    assert!(reason.contains("certificate 1"), "{reason}");
    Ok(())
}

#[test]
fn test_missing_ca_file_is_a_typed_error_naming_the_file() -> R {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grafolean-tls-no-such-ca.pem");
    match Client::with_config(
        "https://127.0.0.1:1/api",
        Token::new("x")?,
        config().with_ca_file(&path),
    ) {
        Err(e @ Error::CaFile { .. }) => {
            let shown = e.to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(shown.contains("cannot read"), "{shown}");
        }
        other => panic!("expected Error::CaFile, got {other:?}"),
    }
    Ok(())
}
