//! TLS on the gateway's listener (rustls), and optional mutual TLS: with `tls.client_ca`
//! the handshake asks for a client certificate (without requiring one), and the admin and
//! outcome endpoints refuse callers that did not present one signed by that CA. A
//! plaintext HTTP request to the TLS port is answered with a plain 400 that says so, not a
//! dropped connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::ServeError;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client presented a certificate the configured CA verified (mutual TLS).
    pub client_cert: bool,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer {
            addr: *stream.remote_addr(),
            client_cert: false,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        *stream.remote_addr()
    }
}

fn tls_err(key: &str, path: &Path, message: impl std::fmt::Display) -> ServeError {
    ServeError::Tls(format!("{key} {}: {message}", path.display()))
}

/// The rustls server configuration of `cfg`: its certificate chain and key, and the client
/// CA when mutual TLS is on. Every error names the file and what was wrong with it.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| tls_err(key, path, format!("cannot read: {e}")))
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("tls.cert", &cfg.cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| tls_err("tls.cert", &cfg.cert, format!("is not PEM: {e:?}")))?;
    if certs.is_empty() {
        return Err(tls_err(
            "tls.cert",
            &cfg.cert,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("tls.key", &cfg.key)?).map_err(|e| {
        tls_err(
            "tls.key",
            &cfg.key,
            format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e:?}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read("tls.client_ca", ca)?) {
                let c =
                    c.map_err(|e| tls_err("tls.client_ca", ca, format!("is not PEM: {e:?}")))?;
                roots.add(c).map_err(|e| {
                    tls_err("tls.client_ca", ca, format!("not a CA certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(tls_err("tls.client_ca", ca, "holds no PEM certificate"));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_err("tls.client_ca", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        ServeError::Tls(format!(
            "tls.cert {} and tls.key {} do not make a usable pair: {e}",
            cfg.cert.display(),
            cfg.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The same certificate, key and client CA for the gRPC listener (tonic's own TLS; client
/// certificates are optional there, as no gRPC call is guarded by them).
pub fn grpc_config(cfg: &TlsConfig) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    server_config(cfg)?;
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| tls_err(key, path, format!("cannot read: {e}")))
    };
    let identity = tonic::transport::Identity::from_pem(
        read("tls.cert", &cfg.cert)?,
        read("tls.key", &cfg.key)?,
    );
    let mut t = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &cfg.client_ca {
        t = t
            .client_ca_root(tonic::transport::Certificate::from_pem(read(
                "tls.client_ca",
                ca,
            )?))
            .client_auth_optional(true);
    }
    Ok(t)
}

/// A listener whose connections are TLS streams. Handshakes run on tasks of their own, so
/// a slow or silent client never holds up the others.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, never spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Some(conn) = handshake(&acceptor, tcp, addr).await {
                        let _ = tx.send(conn).await;
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accepting,
        })
    }
}

/// The TLS handshake of one connection; a plaintext HTTP request is answered with 400.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Peer)> {
    let _ = tcp.set_nodelay(true);
    // One deadline for the first byte and the handshake together.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    // A TLS connection starts with a handshake record (0x16); an HTTP request with a verb.
    if first[0] != 0x16 {
        if first[0].is_ascii_uppercase() {
            let body = "this port speaks TLS: use https:// (the request was plain HTTP)\n";
            let mut tcp = tcp;
            let msg = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                // Read the request's head first: closing a socket with unread bytes makes
                // the kernel reset the connection, which can drop the answer in flight.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp.write_all(msg.as_bytes()).await;
                let _ = tcp.shutdown().await;
            })
            .await;
        }
        tracing::debug!("{addr}: not a TLS client");
        return None;
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            Some((tls, Peer { addr, client_cert }))
        }
        Ok(Err(e)) => {
            tracing::debug!("{addr}: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("{addr}: TLS handshake timed out");
            None
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (it only ends when aborted): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            client_cert: false,
        })
    }
}

/// Middleware for the admin and outcome routes: with mutual TLS configured, a caller
/// without a verified client certificate is refused (403) before its token is looked at.
pub async fn require_client_cert(
    axum::extract::State(required): axum::extract::State<bool>,
    req: Request,
    next: Next,
) -> Response {
    if required {
        let ok = req
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .is_some_and(|c| c.0.client_cert);
        if !ok {
            return crate::app::v2_error(
                StatusCode::FORBIDDEN,
                "this endpoint needs a client certificate signed by the gateway's tls.client_ca"
                    .into(),
            );
        }
    }
    next.run(req).await
}
