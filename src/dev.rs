//! `kafscale dev`: embedded metadata store + local object directory (or
//! memory, `KAFSCALE_DEV_STORAGE=memory`), one log worker, the assigner and
//! one gateway. The gateway calls the worker's gRPC service in process (the
//! same requests and streams, without HTTP/2 or a socket), or over loopback
//! TLS when internal TLS is set; the worker also serves gRPC on
//! `KAFSCALE_GRPC_ADDR`.

use crate::config::{DevArgs, DevStorage};
use crate::control::ControlState;
use crate::process;
use anyhow::Context;
use kafscale_controlplane::{assigner, EmbeddedStore, Metadata};
use kafscale_logworker::metrics::RetryMetrics;
use kafscale_logworker::objstore::local::LocalDirStore;
use kafscale_logworker::objstore::memory::MemoryStore;
use kafscale_logworker::objstore::{with_retries, ObjectStore};
use kafscale_logworker::Worker;
use std::sync::Arc;
use tokio::sync::watch;

/// Runs the embedded cluster until SIGINT/SIGTERM, then flushes and exits.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // The worker serves the internal TLS; the in-process gateway dials it
    // with the same settings (its certificate must name 127.0.0.1).
    let grpc_tls = args.internal_tls.server()?;
    let dial_tls = args.internal_tls.client()?;
    let registry = prometheus::Registry::new();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);
    let control =
        process::spawn_http(&args.http, registry.clone(), ready, shutdown.clone()).await?;

    // Memory storage keeps metadata in a directory of its own, removed at
    // exit with the data it describes.
    let scratch = match args.storage {
        DevStorage::Disk => None,
        DevStorage::Memory => Some(
            tempfile::Builder::new()
                .prefix("kafscale-dev-")
                .tempdir()
                .context("creating the metadata directory")?,
        ),
    };
    let metadata_dir = scratch.as_ref().map_or_else(
        || args.data_dir.join("metadata"),
        |d| d.path().to_path_buf(),
    );
    let store = EmbeddedStore::open(&metadata_dir).context("opening metadata store")?;
    let meta = Metadata::new(Arc::new(store), &args.namespace);
    let cluster = meta.cluster_info().await?;
    tracing::info!(cluster_id = %cluster.cluster_id, storage = ?args.storage, data_dir = %args.data_dir.display(), "starting kafscale dev");
    meta.ensure_offsets_topic(args.groups.offsets_topic_partitions)
        .await
        .context("creating the group coordinator topic")?;
    let backend: Arc<dyn ObjectStore> = match args.storage {
        DevStorage::Disk => Arc::new(LocalDirStore::open(&args.data_dir.join("objects"))?),
        DevStorage::Memory => Arc::new(MemoryStore::new()),
    };
    let objects = with_retries(backend, RetryMetrics::new(&registry)?);

    // Worker, reached through its gRPC service.
    let grpc = process::bind(&args.grpc_addr, "gRPC").await?;
    let worker_addr = grpc.local_addr()?.to_string();
    let cfg = process::worker_config(
        "dev-0".into(),
        &args.namespace,
        worker_addr.clone(),
        &args.wal,
        // Local files or memory have no price per write: flush within 5 ms.
        kafscale_logworker::wal::policy::FlushProfile::Local,
        args.max_message_bytes,
        &args.groups,
    );
    let (worker, flusher) = Worker::start(
        cfg,
        meta.clone(),
        objects,
        None,
        &registry,
        shutdown.clone(),
    )
    .await?;
    let grpc_server = process::spawn_grpc(grpc, worker.clone(), grpc_tls, shutdown.clone());
    tokio::spawn(assigner::run(
        meta.clone(),
        assigner::Placement::Spread,
        assigner::JoinSettle::NONE,
        assigner::moves_counter(&registry),
        shutdown.clone(),
    ));
    tokio::spawn(worker.run_gc(shutdown.clone()));

    let kafka = process::bind(&args.kafka.kafka_addr, "Kafka").await?;
    // The gateway calls the worker's service in this process; with internal
    // TLS set it dials it over TLS on loopback instead, as asked.
    let dial = match dial_tls {
        Some(tls) => process::WorkerDial::Tls(tls),
        None => process::WorkerDial::InProcess(worker_addr, worker.clone()),
    };
    let (gateway, listener) = process::spawn_gateway(
        kafka,
        meta.clone(),
        &args.kafka,
        dial,
        args.max_message_bytes,
        &registry,
        shutdown.clone(),
    )
    .await?;

    control.install(
        ControlState::new("dev", ready_tx.clone())
            .with_worker(worker.clone())
            .with_gateway(listener)
            .with_identity("dev-0".into(), None),
    );
    let mut worker_ready = worker.ready();
    let _ = worker_ready.wait_for(|r| *r).await;
    ready_tx.send_replace(true);
    tracing::info!(kafka = %args.kafka.kafka_addr, "ready");

    process::wait_for_signal().await;
    tracing::info!("shutting down: flushing buffered records");
    ready_tx.send_replace(false);
    shutdown_tx.send_replace(true);
    // In-flight requests finish (long polls and joins are cut after 10 s).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), gateway).await;
    let _ = flusher.await;
    let _ = grpc_server.await;
    Ok(())
}
