//! HTTPS: keeld's certificate (self-signed with rcgen on first start, kept
//! in `STATE/tls/`, replaceable by the administrator) and a listener that
//! does TLS handshakes off the accept path, so one slow client cannot hold
//! up the others.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot generate the self-signed certificate: {0}")]
    Generate(String),
    #[error("{path} is not a usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("The certificate and key in {dir} do not make a TLS configuration: {message}")]
    Config { dir: PathBuf, message: String },
}

/// A loaded certificate and key.
pub struct TlsSetup {
    config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate (DER), as `AB:CD:...`: what clients pin.
    pub fingerprint: String,
    pub cert_path: PathBuf,
    /// The certificate was made now.
    pub created: bool,
}

impl TlsSetup {
    /// Loads `DIR/cert.pem` and `DIR/key.pem`, making a self-signed pair for
    /// `names` (plus localhost and 127.0.0.1) first when they do not exist.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        let mut created = false;
        if !cert_path.exists() || !key_path.exists() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            let mut alt: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            for n in names {
                if !alt.contains(n) {
                    alt.push(n.clone());
                }
            }
            let ck = rcgen::generate_simple_self_signed(alt)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            write_private(&key_path, ck.signing_key.serialize_pem().as_bytes())
                .map_err(io_err(&key_path))?;
            write_private(&cert_path, ck.cert.pem().as_bytes()).map_err(io_err(&cert_path))?;
            created = true;
        }
        let cert_pem = std::fs::read(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = std::fs::read(&key_path).map_err(io_err(&key_path))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::Pem {
                path: cert_path.clone(),
                what: "certificate",
            })?;
        let first = certs.first().ok_or_else(|| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificate",
        })?;
        let fingerprint = fingerprint(first.as_ref());
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
            path: key_path.clone(),
            what: "private key",
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| TlsError::Config {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            fingerprint,
            cert_path,
            created,
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// `AB:CD:…` of the SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A TCP listener that hands out connections once their TLS handshake is
/// done; handshakes run in their own tasks with a time limit.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of descriptors or similar: back off, keep going.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let conn_tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        let _ = conn_tx.send((tls, addr)).await;
                    }
                });
            }
        });
        Self { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("keeld-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = TlsSetup::load_or_create(&dir, &["myhost".into()]).unwrap();
        assert!(a.created);
        let b = TlsSetup::load_or_create(&dir, &[]).unwrap();
        assert!(!b.created);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        std::fs::write(dir.join("cert.pem"), "garbage").unwrap();
        let err = TlsSetup::load_or_create(&dir, &[]).err().unwrap();
        assert!(err.to_string().contains("cert.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
