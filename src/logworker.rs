//! `kafscale logworker`: one log worker on etcd and S3. Registers under a
//! lease, serves the data-plane gRPC, takes part in the assigner election.
//! SIGTERM drains (every partition handed over with its data durable)
//! before the lease is revoked; a worker that loses its lease exits at once,
//! since its partitions have moved and its streams may be sealed.

use crate::config::{LogworkerArgs, S3Args};
use crate::control::{ControlState, LeaseView};
use crate::process;
use anyhow::Context;
use kafscale_controlplane::lease::Lease;
use kafscale_controlplane::store::etcd::EtcdStore;
use kafscale_controlplane::{assigner, Metadata, MetadataStore};
use kafscale_logworker::metrics::{RetryMetrics, S3Metrics};
use kafscale_logworker::objstore::replica::ReplicaReadStore;
use kafscale_logworker::objstore::s3::{S3Config, S3Store};
use kafscale_logworker::objstore::{with_retries, ObjectStore};
use kafscale_logworker::Worker;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Connects to etcd with the shared settings.
pub async fn connect_etcd(
    etcd: &crate::config::EtcdArgs,
) -> anyhow::Result<Arc<dyn MetadataStore>> {
    let user = etcd.etcd_username.clone().zip(etcd.etcd_password.clone());
    let store = EtcdStore::connect(etcd.etcd_endpoints.clone(), user)
        .await
        .with_context(|| format!("connecting to etcd {:?}", etcd.etcd_endpoints))?;
    Ok(Arc::new(store))
}

fn s3_config(bucket: &str, region: &str, endpoint: Option<String>, a: &S3Args) -> S3Config {
    let mut cfg = S3Config::new(bucket, region);
    cfg.endpoint = endpoint;
    cfg.path_style = a.s3_path_style;
    cfg.payload_signing = a.s3_payload_signing;
    cfg.access_key = a.s3_access_key.clone();
    cfg.secret_key = a.s3_secret_key.clone();
    cfg.session_token = a.s3_session_token.clone();
    cfg
}

/// The primary bucket (checked for conditional PUT support), behind the read
/// replica when one is configured.
async fn object_store(
    a: &S3Args,
    namespace: &str,
    registry: &prometheus::Registry,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let metrics = S3Metrics::new(registry)?;
    let primary = S3Store::connect(
        s3_config(&a.s3_bucket, &a.s3_region, a.s3_endpoint.clone(), a),
        metrics.clone(),
    )
    .await
    .context("connecting to S3")?;
    primary
        .check_conditional_put(namespace)
        .await
        .context("the S3 bucket must honour conditional PUT (If-None-Match) to fence writers; refusing to start")?;
    // Our SDK client makes one attempt per call; transient errors are retried
    // here, with backoff and jitter, for every operation.
    let primary = with_retries(Arc::new(primary), RetryMetrics::new(registry)?);
    let Some(read_bucket) = &a.s3_read_bucket else {
        return Ok(primary);
    };
    let mut replica_cfg = s3_config(
        read_bucket,
        a.s3_read_region.as_deref().unwrap_or(&a.s3_region),
        a.s3_read_endpoint.clone().or_else(|| a.s3_endpoint.clone()),
        a,
    );
    // A slow replica must not hold reads up: fall back to the primary soon.
    replica_cfg.attempt_timeout = Duration::from_secs(5);
    let replica = S3Store::connect(replica_cfg, metrics.clone())
        .await
        .context("connecting to the S3 read replica")?;
    Ok(Arc::new(ReplicaReadStore::new(
        primary,
        Arc::new(replica),
        &metrics,
    )))
}

/// The address gateways dial: the advertised one, else the listen address
/// with this host's name in place of an unspecified IP.
fn advertised(args: &LogworkerArgs, bound: std::net::SocketAddr) -> String {
    if let Some(a) = &args.grpc_advertised_addr {
        return a.clone();
    }
    if bound.ip().is_unspecified() {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        return format!("{host}:{}", bound.port());
    }
    bound.to_string()
}

/// Runs a log worker until SIGTERM (drain) or lease loss (exit).
pub async fn run(args: LogworkerArgs) -> anyhow::Result<()> {
    let grpc_tls = args.internal_tls.server()?;
    let registry = prometheus::Registry::new();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);
    let control =
        process::spawn_http(&args.http, registry.clone(), ready, shutdown.clone()).await?;

    let store = connect_etcd(&args.etcd).await?;
    let meta = Metadata::new(store.clone(), &args.etcd.namespace);
    let cluster = meta.cluster_info().await?;
    meta.ensure_offsets_topic(args.groups.offsets_topic_partitions)
        .await
        .context("creating the group coordinator topic")?;
    let objects = object_store(&args.s3, &args.etcd.namespace, &registry).await?;

    let grpc = process::bind(&args.grpc_addr, "gRPC").await?;
    let worker_id = args
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("w-{}", &uuid_suffix()));
    let cfg = process::worker_config(
        worker_id.clone(),
        &args.etcd.namespace,
        advertised(&args, grpc.local_addr()?),
        &args.wal,
        kafscale_logworker::wal::policy::FlushProfile::Balanced,
        args.max_message_bytes,
        &args.groups,
    );
    let placement = assigner::Placement::named(args.placement_name(), cfg.flush.target_rate())?;
    let lease = Lease::grant(store, Duration::from_millis(args.etcd.lease_ttl_ms)).await?;
    tracing::info!(cluster_id = %cluster.cluster_id, worker = %worker_id, advertised = %cfg.grpc_advertised_addr, "starting log worker");
    let (worker, flusher) = Worker::start(
        cfg,
        meta.clone(),
        objects,
        Some(lease.id()),
        &registry,
        shutdown.clone(),
    )
    .await?;
    let grpc_server = process::spawn_grpc(grpc, worker.clone(), grpc_tls, shutdown.clone());
    control.install(
        ControlState::new("logworker", ready_tx.clone())
            .with_worker(worker.clone())
            .with_identity(
                worker_id.clone(),
                Some(LeaseView {
                    id: lease.id(),
                    lost: lease.lost(),
                }),
            ),
    );
    tokio::spawn(assigner::run_elected(
        meta.clone(),
        assigner::Candidate {
            id: worker_id.clone(),
            lease: lease.id(),
        },
        placement,
        assigner::moves_counter(&registry),
        Some({
            let w = worker.clone();
            Box::new(move |stop| Box::pin(w.run_gc(stop)))
        }),
        lease.lost(),
        shutdown.clone(),
    ));
    let mut worker_ready = worker.ready();
    let _ = worker_ready.wait_for(|r| *r).await;
    ready_tx.send_replace(true);
    tracing::info!("ready");

    let mut lost = lease.lost();
    let fenced = {
        let worker = worker.clone();
        async move {
            while !worker.is_fenced() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::select! {
        _ = fenced => {
            // A new owner sealed our stream (we were too slow to hand a
            // partition over): nothing more can be acknowledged from it.
            tracing::error!("WAL stream fenced by a new owner; exiting to restart with a fresh stream");
            std::process::exit(4);
        }
        _ = process::wait_for_signal() => {
            tracing::info!("SIGTERM: draining partitions before leaving");
            ready_tx.send_replace(false);
            worker.drain().await;
            lease.revoke().await;
            shutdown_tx.send_replace(true);
            let _ = flusher.await;
            let _ = grpc_server.await;
            Ok(())
        }
        _ = lost.wait_for(|l| *l) => {
            // The registration is gone: partitions are moving to other
            // workers, which seal this worker's streams. Serving on would
            // only produce errors; a supervisor restarts a fresh worker.
            tracing::error!("registration lease lost; exiting");
            std::process::exit(3);
        }
    }
}

fn uuid_suffix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_string()
}
