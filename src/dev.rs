//! `kafscale dev`: embedded metadata store + local object directory, one log
//! worker reached over real loopback gRPC, the assigner and one gateway.

use crate::config::DevArgs;
use anyhow::Context;
use kafscale_controlplane::{assigner, EmbeddedStore, Metadata};
use kafscale_gateway::cluster::ClusterView;
use kafscale_gateway::dispatch::Dispatcher;
use kafscale_gateway::router::Router;
use kafscale_gateway::GatewayConfig;
use kafscale_logworker::groups::group::GroupConfig;
use kafscale_logworker::objstore::local::LocalDirStore;
use kafscale_logworker::service::LogWorkerService;
use kafscale_logworker::{Worker, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Runs the embedded cluster until SIGINT/SIGTERM, then flushes and exits.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);

    let http = TcpListener::bind(&args.http_addr)
        .await
        .with_context(|| format!("binding HTTP {}", args.http_addr))?;
    tokio::spawn(crate::http::serve(
        http,
        registry.clone(),
        ready.clone(),
        shutdown.clone(),
    ));

    let store =
        EmbeddedStore::open(&args.data_dir.join("metadata")).context("opening metadata store")?;
    let meta = Metadata::new(Arc::new(store), &args.namespace);
    let cluster = meta.cluster_info().await?;
    tracing::info!(cluster_id = %cluster.cluster_id, data_dir = %args.data_dir.display(), "starting kafscale dev");
    meta.ensure_offsets_topic(args.offsets_topic_partitions)
        .await
        .context("creating the group coordinator topic")?;
    let objects = Arc::new(LocalDirStore::open(&args.data_dir.join("objects"))?);

    // Worker, reached only through gRPC.
    let grpc = TcpListener::bind(&args.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC {}", args.grpc_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let (worker, flusher) = Worker::start(
        WorkerConfig {
            worker_id: "dev-0".into(),
            namespace: args.namespace.clone(),
            grpc_advertised_addr: grpc_addr.to_string(),
            flush_bytes: args.wal_flush_bytes,
            flush_interval: Duration::from_millis(args.wal_flush_interval_ms),
            max_inflight_puts: args.wal_max_inflight,
            cache_bytes: args.cache_bytes,
            default_max_message_bytes: args.max_message_bytes,
            groups: GroupConfig {
                initial_rebalance_delay: Duration::from_millis(
                    args.group_initial_rebalance_delay_ms,
                ),
                min_session_timeout: Duration::from_millis(args.group_min_session_timeout_ms),
                max_session_timeout: Duration::from_millis(args.group_max_session_timeout_ms),
            },
        },
        meta.clone(),
        objects,
        &registry,
        shutdown.clone(),
    )
    .await?;
    let mut grpc_shutdown = shutdown.clone();
    let grpc_server = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(16 << 20))
            .initial_connection_window_size(Some(64 << 20))
            .add_service(LogWorkerService::server(worker.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                async move {
                    let _ = grpc_shutdown.changed().await;
                },
            ),
    );

    tokio::spawn(assigner::run(meta.clone(), shutdown.clone()));

    // Gateway.
    let kafka = TcpListener::bind(&args.kafka_addr)
        .await
        .with_context(|| format!("binding Kafka {}", args.kafka_addr))?;
    let kafka_port = kafka.local_addr()?.port();
    let view = ClusterView::start(meta.clone()).await?;
    let dispatcher = Arc::new(Dispatcher::new(
        GatewayConfig {
            node_id: 0,
            advertised_host: args.advertised_host.clone(),
            advertised_port: i32::from(args.advertised_port.unwrap_or(kafka_port)),
            auto_create_topics: args.auto_create_topics,
            auto_create_partitions: args.auto_create_partitions,
            max_frame_bytes: args.max_frame_bytes,
            default_max_message_bytes: args.max_message_bytes,
            max_pipelined: 64,
        },
        Router::new(view),
    ));
    let gateway = tokio::spawn(kafscale_gateway::serve(kafka, dispatcher, shutdown.clone()));

    let mut worker_ready = worker.ready();
    let _ = worker_ready.wait_for(|r| *r).await;
    ready_tx.send_replace(true);
    tracing::info!(kafka = %args.kafka_addr, "ready");

    wait_for_signal().await;
    tracing::info!("shutting down: flushing buffered records");
    ready_tx.send_replace(false);
    shutdown_tx.send_replace(true);
    let _ = gateway.await;
    let _ = flusher.await;
    let _ = grpc_server.await;
    Ok(())
}

async fn wait_for_signal() {
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
