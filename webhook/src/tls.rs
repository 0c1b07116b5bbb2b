//! Serving certificates: loaded from PEM files (as mounted from a Secret) and reloaded when the
//! files change, or generated with `rcgen` at start-up. Also the acceptor that answers a
//! plaintext HTTP request on the TLS port with a clear 400 instead of a dead connection.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::Metrics;

/// A serving certificate could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("no PEM certificate found in {0}")]
    NoCertificate(PathBuf),
    /// The key file holds no usable PEM private key.
    #[error("no PEM private key found in {0}")]
    NoKey(PathBuf),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("the certificate and key are not usable together")]
    Config(#[source] rustls::Error),
    /// rcgen could not generate a certificate.
    #[error("failed to generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),
}

/// A rustls server configuration for a PEM certificate chain and key, with ALPN `http/1.1`
/// and the aws-lc-rs provider.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| TlsError::NoKey(key_path.to_path_buf()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A self-signed certificate and key (PEM) for `names`.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(TlsError::Generate)?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// The certificate and key files, with the contents last seen.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    seen: Option<(Vec<u8>, Vec<u8>)>,
}

// === impl CertFiles ===

impl CertFiles {
    /// Watches `cert` and `key`.
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        CertFiles {
            cert,
            key,
            seen: None,
        }
    }

    /// Reads both files; returns a new configuration when their contents changed since the
    /// last call, `None` when they did not. A failed load is reported once per change.
    pub async fn poll(&mut self) -> Result<Option<ServerConfig>, TlsError> {
        let read = |p: PathBuf| async move {
            tokio::fs::read(&p)
                .await
                .map_err(|source| TlsError::Read { path: p, source })
        };
        let cert = read(self.cert.clone()).await?;
        let key = read(self.key.clone()).await?;
        if self
            .seen
            .as_ref()
            .is_some_and(|(c, k)| *c == cert && *k == key)
        {
            return Ok(None);
        }
        let config = server_config(&cert, &key, &self.cert, &self.key);
        self.seen = Some((cert, key));
        config.map(Some)
    }
}

/// Polls `files` every `interval` and swaps a changed certificate into `config` (connections
/// already open keep theirs). Runs until the task is dropped.
pub async fn reload_loop(
    mut files: CertFiles,
    config: RustlsConfig,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match files.poll().await {
            Ok(None) => {}
            Ok(Some(new)) => {
                config.reload_from_config(Arc::new(new));
                metrics.cert_reload(true);
                tracing::info!(cert = %files.cert.display(), "reloaded the serving certificate");
            }
            Err(e) => {
                metrics.cert_reload(false);
                tracing::warn!(error = %error_chain(&e), "keeping the previous serving certificate");
            }
        }
    }
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// The answer to a plaintext request on the TLS port.
pub const PLAINTEXT_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\
Content-Length: 74\r\n\
\r\n\
Client sent an HTTP request to an HTTPS server; use https:// on this port\n";

/// An inner acceptor for [`axum_server::tls_rustls::RustlsAcceptor`]: peeks at the first byte
/// of each connection and answers anything that is not a TLS handshake with
/// [`PLAINTEXT_RESPONSE`]. Also sets `TCP_NODELAY` and bounds the wait for the first byte.
#[derive(Debug, Clone)]
pub struct PlaintextGuard {
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl PlaintextGuard {
    /// Waits at most `timeout` for a client's first byte.
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> Self {
        PlaintextGuard { timeout, metrics }
    }
}

/// TLS records of type handshake start with this byte.
const TLS_HANDSHAKE: u8 = 0x16;

impl<S: Send + 'static> Accept<TcpStream, S> for PlaintextGuard {
    type Stream = TcpStream;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(TcpStream, S)>> + Send>>;

    fn accept(&self, mut stream: TcpStream, service: S) -> Self::Future {
        let timeout = self.timeout;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut first = [0u8; 1];
            let n = tokio::time::timeout(timeout, stream.peek(&mut first))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake"))??;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a TLS handshake",
                ));
            }
            if first[0] != TLS_HANDSHAKE {
                metrics.plaintext_refused();
                // Read what the client sent so that closing does not reset the connection
                // before it has read the answer.
                let mut sink = [0u8; 8192];
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), stream.read(&mut sink)).await;
                let _ = stream.write_all(PLAINTEXT_RESPONSE).await;
                let _ = stream.shutdown().await;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "plaintext HTTP request on the TLS port",
                ));
            }
            let _ = stream.set_nodelay(true);
            Ok((stream, service))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_response_length_is_right() {
        let text = String::from_utf8_lossy(PLAINTEXT_RESPONSE);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        assert_eq!(body.len(), 74);
    }

    #[test]
    fn self_signed_certificates_load() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (cert, key) = self_signed(&["localhost".into()]).unwrap_or_default();
        let p = Path::new("x");
        assert!(server_config(cert.as_bytes(), key.as_bytes(), p, p).is_ok());
        assert!(matches!(
            server_config(b"", key.as_bytes(), p, p),
            Err(TlsError::NoCertificate(_))
        ));
        let (_, other_key) = self_signed(&["localhost".into()]).unwrap_or_default();
        assert!(matches!(
            server_config(cert.as_bytes(), other_key.as_bytes(), p, p),
            Err(TlsError::Config(_))
        ));
    }
}
