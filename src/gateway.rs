//! `kafscale gateway`: a stateless Kafka-protocol gateway on etcd. Routes
//! from watched assignments, so gateways can be added or removed at any time.
//! SIGTERM stops accepting connections and lets in-flight requests finish
//! (up to the drain timeout) before the process exits.

use crate::config::GatewayArgs;
use crate::control::{ControlState, LeaseView};
use crate::process;
use kafscale_controlplane::lease::Lease;
use kafscale_controlplane::metadata::now_ms;
use kafscale_controlplane::Metadata;
use kafscale_proto::metadata::v1::GatewayRegistration;
use std::time::Duration;
use tokio::sync::watch;

/// Runs a gateway until SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let internal_tls = args.internal_tls.client()?;
    let registry = prometheus::Registry::new();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);
    let control =
        process::spawn_http(&args.http, registry.clone(), ready, shutdown.clone()).await?;

    let store = crate::logworker::connect_etcd(&args.etcd).await?;
    let meta = Metadata::new(store.clone(), &args.etcd.namespace);
    let cluster = meta.cluster_info().await?;
    let kafka = process::bind(&args.kafka.kafka_addr, "Kafka").await?;
    let port = kafka.local_addr()?.port();
    let (gateway, listener) = process::spawn_gateway(
        kafka,
        meta.clone(),
        &args.kafka,
        internal_tls.map_or(process::WorkerDial::Plain, process::WorkerDial::Tls),
        args.max_message_bytes,
        &registry,
        shutdown.clone(),
    )
    .await?;
    let lease = Lease::grant(store, Duration::from_millis(args.etcd.lease_ttl_ms)).await?;
    let id = format!("g-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    meta.register_gateway(
        &GatewayRegistration {
            gateway_id: id.clone(),
            node_id: 0,
            host: args.kafka.advertised_host.clone(),
            port: i32::from(args.kafka.advertised_port.unwrap_or(port)),
            started_at_ms: now_ms(),
        },
        Some(lease.id()),
    )
    .await?;
    control.install(
        ControlState::new("gateway", ready_tx.clone())
            .with_gateway(listener)
            .with_identity(
                id.clone(),
                Some(LeaseView {
                    id: lease.id(),
                    lost: lease.lost(),
                }),
            ),
    );
    ready_tx.send_replace(true);
    tracing::info!(cluster_id = %cluster.cluster_id, gateway = %id, kafka = %args.kafka.kafka_addr, "ready");

    let mut lost = lease.lost();
    tokio::select! {
        _ = process::wait_for_signal() => {}
        // Only the registration is lost; routing does not depend on it.
        _ = lost.wait_for(|l| *l) => tracing::warn!("gateway lease lost; exiting"),
    }
    tracing::info!("draining connections");
    ready_tx.send_replace(false);
    shutdown_tx.send_replace(true);
    let drain = Duration::from_millis(args.drain_timeout_ms);
    if tokio::time::timeout(drain, gateway).await.is_err() {
        tracing::warn!("drain timeout; closing remaining connections");
    }
    lease.revoke().await;
    Ok(())
}
