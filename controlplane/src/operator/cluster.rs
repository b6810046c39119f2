//! Reconciles a `KafscaleCluster`: applies the objects of
//! [`super::desired::cluster_objects`] with server-side apply (field manager
//! `kafscale-operator`, forced: the operator owns what it sets), removes an
//! autoscaler that the spec no longer asks for, then reads the workloads and
//! the cluster's registrations in etcd and writes the status
//! ([`super::status::cluster_status`]). Deletion needs no finalizer: every
//! object carries the cluster as its controller owner, and Kubernetes'
//! garbage collector deletes them with it.

use super::crd::{ComponentStatus, KafscaleCluster};
use super::desired::{self, ClusterObjects};
use super::status::{cluster_status, Observed};
use super::{Context, OperatorError, FIELD_MANAGER};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// How often a settled cluster's status is refreshed (registrations in etcd
/// change without any Kubernetes event).
const RESYNC: Duration = Duration::from_secs(30);

/// Applies `obj` (server-side apply, forced).
pub async fn apply<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<(), OperatorError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

async fn apply_all(
    client: &kube::Client,
    ns: &str,
    o: &ClusterObjects,
) -> Result<(), OperatorError> {
    apply(client, ns, &o.config).await?;
    apply(client, ns, &o.worker_service).await?;
    apply(client, ns, &o.worker).await?;
    apply(client, ns, &o.worker_pdb).await?;
    apply(client, ns, &o.gateway_service).await?;
    apply(client, ns, &o.gateway).await?;
    apply(client, ns, &o.gateway_pdb).await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    for (wanted, name) in [
        (&o.gateway_hpa, o.gateway.name_any()),
        (&o.worker_hpa, o.worker.name_any()),
    ] {
        match wanted {
            Some(h) => apply(client, ns, h).await?,
            None => {
                // Autoscaling switched off (or never on): no autoscaler.
                match hpas.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// Replica counts of a Deployment or StatefulSet, read the same way.
struct Workload {
    spec_replicas: Option<i32>,
    generation: Option<i64>,
    observed_generation: Option<i64>,
    ready: Option<i32>,
    updated: Option<i32>,
}

impl Workload {
    fn of_deployment(d: Deployment) -> Self {
        let s = d.status.unwrap_or_default();
        Self {
            spec_replicas: d.spec.and_then(|s| s.replicas),
            generation: d.metadata.generation,
            observed_generation: s.observed_generation,
            ready: s.ready_replicas,
            updated: s.updated_replicas,
        }
    }

    fn of_stateful_set(st: StatefulSet) -> Self {
        let s = st.status.unwrap_or_default();
        Self {
            spec_replicas: st.spec.and_then(|s| s.replicas),
            generation: st.metadata.generation,
            observed_generation: s.observed_generation,
            ready: s.ready_replicas,
            updated: s.updated_replicas,
        }
    }

    /// The component's status and whether the workload is rolling out
    /// (its controller has not seen the newest spec, or pods of an older
    /// template remain).
    fn status(self, registered: i32) -> (ComponentStatus, bool) {
        let replicas = self.spec_replicas.unwrap_or(1);
        let rolling =
            self.observed_generation < self.generation || self.updated.unwrap_or(0) < replicas;
        let status = ComponentStatus {
            replicas,
            ready_replicas: self.ready.unwrap_or(0),
            registered,
        };
        (status, rolling)
    }
}

async fn observe(
    c: &KafscaleCluster,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Observed, OperatorError> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let gw = deployments.get_opt(&desired::gateway_name(name)).await?;
    let wk = sets.get_opt(&desired::worker_name(name)).await?;
    let (registered, etcd_error) = match ctx.metadata(c).await {
        Ok(meta) => match (meta.list_gateways().await, meta.list_workers().await) {
            (Ok(g), Ok(w)) => ((g.len() as i32, w.len() as i32), None),
            (Err(e), _) | (_, Err(e)) => ((-1, -1), Some(e.to_string())),
        },
        Err(e) => ((-1, -1), Some(e.to_string())),
    };
    let gateways = gw.map(|d| Workload::of_deployment(d).status(registered.0));
    let workers = wk.map(|st| Workload::of_stateful_set(st).status(registered.1));
    let rolling_out = [&gateways, &workers]
        .iter()
        .any(|c| c.as_ref().is_some_and(|(_, rolling)| *rolling));
    Ok(Observed {
        generation: c.metadata.generation,
        spec_error: None,
        gateways: gateways.map(|(s, _)| s),
        workers: workers.map(|(s, _)| s),
        rolling_out,
        etcd_error,
    })
}

/// One reconcile of a cluster.
pub async fn reconcile(
    c: Arc<KafscaleCluster>,
    ctx: Arc<Context>,
) -> Result<Action, OperatorError> {
    let ns = c.namespace().ok_or(OperatorError::Unnamespaced)?;
    let name = c.name_any();
    let observed = match desired::cluster_objects(&c) {
        Ok(objects) => {
            apply_all(&ctx.client, &ns, &objects).await?;
            observe(&c, &ctx, &ns, &name).await?
        }
        Err(e) => Observed {
            generation: c.metadata.generation,
            spec_error: Some(e.to_string()),
            ..Default::default()
        },
    };
    let status = cluster_status(
        &observed,
        c.status.as_ref(),
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    if c.status.as_ref() != Some(&status) {
        let api: Api<KafscaleCluster> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    }
    Ok(Action::requeue(
        if observed.rolling_out || observed.etcd_error.is_some() {
            Duration::from_secs(5)
        } else {
            RESYNC
        },
    ))
}
