//! Pieces every `kafscale` process is built from: listeners, the HTTP
//! endpoint, the worker's gRPC server, the gateway, signal handling.

use crate::config::{GroupArgs, KafkaArgs, WalArgs};
use anyhow::Context;
use kafscale_controlplane::Metadata;
use kafscale_gateway::cluster::ClusterView;
use kafscale_gateway::conn::ListenerControl;
use kafscale_gateway::dispatch::Dispatcher;
use kafscale_gateway::metrics::GatewayMetrics;
use kafscale_gateway::router::Router;
use kafscale_gateway::GatewayConfig;
use kafscale_logworker::service::LogWorkerService;
use kafscale_logworker::wal::policy::FlushProfile;
use kafscale_logworker::{Worker, WorkerConfig};
use kafscale_proto::data::http2;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;

/// Binds a TCP listener, naming `what` in the error.
pub async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} {addr}"))
}

/// Serves `/metrics`, `/healthz`, `/readyz` and the control API on the
/// address of `http` (over TLS when it names a certificate) until shutdown.
/// The control API answers UNAVAILABLE until the process installs its state
/// in the returned slot.
pub async fn spawn_http(
    http: &crate::security::HttpArgs,
    registry: prometheus::Registry,
    ready: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<crate::control::ControlSlot> {
    let acceptor = http.acceptor()?;
    let listener = bind(&http.http_addr, "HTTP").await?;
    let slot = crate::control::ControlSlot::default();
    tokio::spawn(crate::http::serve(
        listener,
        acceptor,
        registry,
        ready,
        slot.clone(),
        shutdown,
    ));
    Ok(slot)
}

/// The worker settings shared by `dev` and `logworker`; `profile` is the
/// flush profile where `KAFSCALE_WAL_FLUSH_PROFILE` is unset.
pub fn worker_config(
    worker_id: String,
    namespace: &str,
    grpc_advertised_addr: String,
    wal: &WalArgs,
    profile: FlushProfile,
    max_message_bytes: usize,
    groups: &GroupArgs,
) -> WorkerConfig {
    WorkerConfig {
        worker_id,
        namespace: namespace.to_string(),
        grpc_advertised_addr,
        flush: wal.flush_settings(profile),
        max_inflight_puts: wal.wal_max_inflight,
        cache_bytes: wal.cache_bytes,
        default_max_message_bytes: max_message_bytes,
        groups: groups.config(),
        segment_cache_bytes: wal.segment_cache_bytes,
        compaction_interval: Duration::from_millis(wal.log.compaction_interval_ms.max(1)),
        log_defaults: wal.log.defaults(),
    }
}

/// Serves the worker's data-plane gRPC on `listener` until shutdown, over
/// TLS when `tls` is set (`KAFSCALE_INTERNAL_TLS_*`).
pub fn spawn_grpc(
    listener: TcpListener,
    worker: Arc<Worker>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(http2::STREAM_WINDOW))
        .initial_connection_window_size(Some(http2::CONNECTION_WINDOW))
        .max_frame_size(Some(http2::MAX_FRAME))
        .add_service(LogWorkerService::server(worker));
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    match tls {
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop,
        )),
        Some(acceptor) => {
            let accepted = kafscale_gateway::auth::internal::incoming(listener, acceptor, "gRPC");
            let incoming =
                tokio_stream::wrappers::ReceiverStream::new(accepted).map(Ok::<_, std::io::Error>);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
        }
    }
}

/// How a gateway reaches its workers.
pub enum WorkerDial {
    /// Over plaintext TCP.
    Plain,
    /// Over TLS (`KAFSCALE_INTERNAL_TLS_CA_FILE`).
    Tls(kafscale_gateway::auth::internal::TlsConnector),
    /// The worker registered at this address runs in this process: its
    /// service is called directly (`kafscale dev`).
    InProcess(String, Arc<Worker>),
}

/// Starts a gateway on `listener`: watches the cluster in `meta`, routes to
/// workers as `dial` says, answers Kafka clients until shutdown. Returns its
/// task and the handle the control API drains it with.
pub async fn spawn_gateway(
    listener: TcpListener,
    meta: Metadata,
    kafka: &KafkaArgs,
    dial: WorkerDial,
    max_message_bytes: usize,
    registry: &prometheus::Registry,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(JoinHandle<()>, ListenerControl)> {
    let port = listener.local_addr()?.port();
    anyhow::ensure!(
        kafka.max_connection_bytes >= kafka.max_frame_bytes
            && kafka.max_gateway_bytes >= kafka.max_frame_bytes,
        "KAFSCALE_MAX_CONNECTION_BYTES ({}) and KAFSCALE_MAX_GATEWAY_BYTES ({}) must be at least \
         KAFSCALE_MAX_FRAME_BYTES ({}), or a frame of the maximum size could never be read",
        kafka.max_connection_bytes,
        kafka.max_gateway_bytes,
        kafka.max_frame_bytes
    );
    let metrics = GatewayMetrics::new(registry, kafka.metrics_topic_labels)?;
    let security = kafka
        .security
        .build(&meta, metrics.authentications.clone())
        .await?;
    let view = ClusterView::start(meta).await?;
    let router = match dial {
        WorkerDial::Plain => Router::new(view.clone()),
        WorkerDial::Tls(tls) => Router::new(view.clone()).with_tls(tls),
        WorkerDial::InProcess(addr, worker) => Router::new(view.clone())
            .with_in_process(&addr, Arc::new(LogWorkerService::new(worker))),
    };
    let control = ListenerControl::new(view.clone(), metrics.connections.clone());
    let dispatcher = Arc::new(
        Dispatcher::new(
            GatewayConfig {
                node_id: 0,
                advertised_host: kafka.advertised_host.clone(),
                advertised_port: i32::from(kafka.advertised_port.unwrap_or(port)),
                auto_create_topics: kafka.auto_create_topics,
                auto_create_partitions: kafka.auto_create_partitions,
                max_frame_bytes: kafka.max_frame_bytes,
                default_max_message_bytes: max_message_bytes,
                max_pipelined: kafscale_gateway::config::MAX_PIPELINED,
                limits: kafscale_gateway::config::Limits {
                    connection_bytes: kafka.max_connection_bytes,
                    gateway_bytes: kafka.max_gateway_bytes,
                    max_connections: kafka.max_connections,
                    max_connections_per_ip: kafka.max_connections_per_ip,
                    frame_read_timeout: Duration::from_millis(kafka.frame_read_timeout_ms),
                    response_write_timeout: Duration::from_millis(kafka.response_write_timeout_ms),
                    idle_timeout: Duration::from_millis(kafka.connections_max_idle_ms),
                    fetch_max_bytes: kafka.fetch_max_bytes,
                    auth_timeout: Duration::from_millis(kafka.auth_timeout_ms),
                },
                authorizer: kafka.authorizer_config(),
            },
            router,
            metrics,
        )
        .with_security(security),
    );
    let task = tokio::spawn(kafscale_gateway::serve(
        listener,
        dispatcher,
        control.clone(),
        shutdown,
    ));
    Ok((task, control))
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
