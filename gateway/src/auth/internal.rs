//! TLS of the internal hops, off by default: the gateway → worker gRPC
//! (port 9094, mTLS when the worker is given a CA) and the HTTP endpoint
//! (port 9093). Certificates come from the same reloading PEM loader as the
//! Kafka listener's ([`super::tls`]), so a rotated pair is served without a
//! restart.
//!
//! What [`incoming`] guarantees: handshakes run in their own tasks (one slow
//! peer never holds up the accept loop), at most [`MAX_HANDSHAKES`] are in
//! progress at once (past that, accepting waits), and a handshake that does
//! not finish within [`HANDSHAKE_TIMEOUT`] is dropped. It does not
//! authenticate anything beyond what the rustls configuration verifies.

use super::tls::TlsError;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Longest an internal TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Internal TLS handshakes in progress at once, per listener.
pub const MAX_HANDSHAKES: usize = 256;

/// The ALPN protocol of gRPC.
pub const ALPN_H2: &[u8] = b"h2";

/// The ALPN protocol of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A TLS connection accepted by [`incoming`].
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl TlsConn {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.get_ref().0.connect_info()
    }
}

/// Accepts connections on `listener` and yields those whose TLS handshake
/// with `acceptor` succeeded (see the module doc); `what` names the
/// listener in logs. Accepting stops when the receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    what: &'static str,
) -> mpsc::Receiver<TlsConn> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = handshakes.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(listener = what, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(inner)) => {
                        let _ = tx.send(TlsConn { inner, peer }).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(listener = what, %peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::debug!(listener = what, %peer, "TLS handshake did not finish in time")
                    }
                }
            });
        }
    });
    rx
}

/// Errors dialling a worker over TLS.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The URI has no host or port.
    #[error("{0}: no host and port to dial")]
    Address(Uri),
    /// The host is neither a DNS name nor an IP address.
    #[error("{0}: not a valid TLS server name")]
    ServerName(String),
    /// TCP connect or the TLS handshake failed.
    #[error("{addr}: {source}")]
    Io {
        /// Where we dialled.
        addr: String,
        /// What went wrong.
        source: io::Error,
    },
}

/// Dials workers over TLS: the connector of the gateway's gRPC channels when
/// `KAFSCALE_INTERNAL_TLS_CA_FILE` is set. The worker's certificate must be
/// valid for the host of its registered address (a DNS name or an IP SAN).
#[derive(Clone)]
pub struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    /// A connector with `config` (see [`super::tls::client_config`]).
    pub fn new(config: rustls::ClientConfig) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// A connector that trusts `ca_file` and, with `identity` (certificate
    /// and key files), presents it to workers that require client
    /// certificates; offers HTTP/2.
    pub fn load(
        ca_file: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, TlsError> {
        Ok(Self::new(super::tls::client_config(
            ca_file,
            identity,
            &[ALPN_H2],
        )?))
    }
}

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(DialError::Address(uri));
            };
            // An IPv6 host comes bracketed in a URI.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = ServerName::try_from(host.clone())
                .map_err(|_| DialError::ServerName(host.clone()))?;
            let io_error = |source| DialError::Io {
                addr: format!("{host}:{port}"),
                source,
            };
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(io_error)?;
            let _ = tcp.set_nodelay(true);
            let stream = tls.connect(name, tcp).await.map_err(io_error)?;
            Ok(TokioIo::new(stream))
        })
    }
}
