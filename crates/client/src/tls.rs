//! Trust for a Keel host's certificate, which is usually self-signed: the
//! CLI pins it (trust on first use, after showing its fingerprint), or
//! skips verification when told to (`--insecure`).

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::ClientError;

/// How the client trusts the host's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Only this certificate (DER), as pinned earlier.
    Pinned(Vec<u8>),
    /// Any certificate (`--insecure`).
    Insecure,
}

/// `AB:CD:…` of the SHA-256 of a certificate (DER), as keeld prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts any certificate: for `--insecure`, and to read a host's
/// certificate once so that a person can decide to pin it.
#[derive(Debug)]
pub(crate) struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A pinned certificate must be exactly the one the host presents.
#[derive(Debug)]
pub(crate) struct PinnedCert {
    der: Vec<u8>,
    any: AcceptAny,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "The host's certificate changed (now SHA-256 {0}); if that is expected, accept it with --trust-fingerprint {0}",
                fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration for `trust`.
pub(crate) fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let p = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Insecure => Arc::new(AcceptAny(p.clone())),
        Trust::Pinned(der) => Arc::new(PinnedCert {
            der: der.clone(),
            any: AcceptAny(p.clone()),
        }),
    };
    let config = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `host:port` and returns the certificate it presents (DER),
/// without trusting it: for showing its fingerprint before pinning it.
pub fn fetch_certificate(host: &str, port: u16) -> Result<Vec<u8>, ClientError> {
    let config = client_config(&Trust::Insecure)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| ClientError::Tls(format!("'{host}' is not a valid host name")))?;
    let mut conn =
        rustls::ClientConnection::new(config, name).map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut tcp = TcpStream::connect((host, port))
        .map_err(|e| ClientError::Transport(format!("Cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => ClientError::Tls(format!(
                "{host}:{port} does not speak TLS ({e}); is it started with --insecure-http?"
            )),
            _ => ClientError::Transport(format!("TLS handshake with {host}:{port} failed: {e}")),
        })?;
    }
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| ClientError::Tls(format!("{host}:{port} presented no certificate")))
}
