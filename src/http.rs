//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (process up),
//! `/readyz` (200 once clients can produce, 503 while drained), and on the
//! same listener the gRPC control API (HTTP/2, `kafscale.control.v1`).
//! With `KAFSCALE_HTTP_TLS_CERT_FILE` all of it is served over TLS only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use kafscale_gateway::auth::internal::{incoming, TlsConn};
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    ready: watch::Receiver<bool>,
}

/// TLS connections of the HTTP endpoint, as axum accepts them.
struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<TlsConn>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        match self.accepted.recv().await {
            Some(c) => {
                let peer = c.peer_addr();
                (c, peer)
            }
            // The accept loop is gone (it only ends with this listener).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Serves the HTTP endpoint until `shutdown`, over TLS with `tls`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    registry: Registry,
    ready: watch::Receiver<bool>,
    control: crate::control::ControlSlot,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, ready })
        .merge(tonic::service::Routes::new(control.service()).into_axum_router());
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(acceptor) => {
            let addr = listener.local_addr()?;
            let accepted = incoming(listener, acceptor, "HTTP");
            axum::serve(TlsListener { accepted, addr }, app)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

async fn metrics(State(s): State<AppState>) -> (StatusCode, String) {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
