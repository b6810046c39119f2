//! `kafscale operator`: reconciles KafscaleCluster and KafscaleTopic
//! resources (kafscale_controlplane::operator) with the in-cluster
//! Kubernetes credentials, serving /healthz, /readyz, /metrics and the
//! control API (Status) on its HTTP port. Run one replica: the reconcilers
//! are idempotent, but two operators would write statuses twice.

use crate::config::OperatorArgs;
use crate::control::ControlState;
use crate::process;
use anyhow::Context;
use tokio::sync::watch;

/// Runs the operator until SIGTERM.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    // kube's TLS stack and the AWS SDK both build on rustls: one provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let registry = prometheus::Registry::new();
    let (_shutdown_tx, shutdown) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);
    let control = process::spawn_http(&args.http, registry, ready, shutdown).await?;
    control.install(ControlState::new("operator", ready_tx.clone()));
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    ready_tx.send_replace(true);
    tokio::select! {
        _ = kafscale_controlplane::operator::run(client, args.watch_namespace) => {}
        _ = process::wait_for_signal() => tracing::info!("operator stopping"),
    }
    Ok(())
}
