//! The Kubernetes operator (`kafscale operator`): reconciles
//! `KafscaleCluster` resources into the workloads that run a cluster, and
//! `KafscaleTopic` resources into topics of a cluster's metadata store.
//!
//! - [`crd`]: the resource types (`kafscale crd` prints their CRDs);
//! - [`desired`]: spec → Kubernetes objects, pure;
//! - [`status`]: observations → conditions, pure;
//! - [`cluster`], [`topic`]: the reconcilers;
//! - [`run`]: both controllers, watching one namespace or all.
//!
//! The operator talks to a cluster's etcd (spec.etcd) only to read
//! registrations for status and to create, alter and delete topics; it is
//! never on the data path.

pub mod cluster;
pub mod crd;
pub mod desired;
pub mod status;
pub mod topic;

use crate::store::etcd::EtcdStore;
use crate::{MetaError, Metadata, MetadataStore};
use crd::{KafscaleCluster, KafscaleTopic};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "kafscale-operator";

/// Errors of a reconcile (retried with backoff by the controller).
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
    #[error("the resource has no namespace")]
    Unnamespaced,
    #[error("secret {secret}: {reason}")]
    Secret { secret: String, reason: String },
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<OperatorError>>),
}

/// Shared by every reconcile: the Kubernetes client and one metadata
/// connection per cluster (etcd endpoints, credentials and namespace).
pub struct Context {
    pub client: kube::Client,
    stores: Mutex<HashMap<String, Arc<dyn MetadataStore>>>,
}

impl Context {
    /// A context on `client` with no metadata connection yet.
    pub fn new(client: kube::Client) -> Arc<Self> {
        Arc::new(Self {
            client,
            stores: Mutex::new(HashMap::new()),
        })
    }

    async fn etcd_credentials(
        &self,
        c: &KafscaleCluster,
    ) -> Result<Option<(String, String)>, OperatorError> {
        let Some(r) = &c.spec.etcd.credentials_secret else {
            return Ok(None);
        };
        let ns = c.namespace().ok_or(OperatorError::Unnamespaced)?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = secrets.get(&r.name).await?;
        let field = |key: &str| -> Result<String, OperatorError> {
            let data = secret.data.as_ref().and_then(|d| d.get(key));
            let bytes = data.ok_or_else(|| OperatorError::Secret {
                secret: r.name.clone(),
                reason: format!("no key {key}"),
            })?;
            String::from_utf8(bytes.0.clone()).map_err(|_| OperatorError::Secret {
                secret: r.name.clone(),
                reason: format!("{key} is not UTF-8"),
            })
        };
        Ok(Some((
            field(r.username_key.as_deref().unwrap_or("username"))?,
            field(r.password_key.as_deref().unwrap_or("password"))?,
        )))
    }

    /// The metadata of cluster `c` (connecting on first use).
    pub async fn metadata(&self, c: &KafscaleCluster) -> Result<Metadata, OperatorError> {
        let creds = self.etcd_credentials(c).await?;
        let key = format!(
            "{}|{}",
            c.spec.etcd.endpoints.join(","),
            creds.as_ref().map(|(u, _)| u.as_str()).unwrap_or("")
        );
        let namespace = desired::metadata_namespace(c);
        let mut stores = self.stores.lock().await;
        let store = match stores.get(&key) {
            Some(s) => s.clone(),
            None => {
                let connected = tokio::time::timeout(
                    Duration::from_secs(10),
                    EtcdStore::connect(c.spec.etcd.endpoints.clone(), creds),
                )
                .await
                .map_err(|_| {
                    MetaError::Store(crate::StoreError::Backend(
                        "connecting to etcd timed out".into(),
                    ))
                })?
                .map_err(MetaError::from)?;
                let s: Arc<dyn MetadataStore> = Arc::new(connected);
                stores.insert(key, s.clone());
                s
            }
        };
        Ok(Metadata::new(store, &namespace))
    }
}

fn error_policy<K>(_: Arc<K>, e: &OperatorError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Runs both controllers until the process stops, watching `namespace`
/// (every namespace when `None`).
pub async fn run(client: kube::Client, namespace: Option<String>) {
    let ctx = Context::new(client.clone());
    let (clusters, topics, deployments, sets) = match &namespace {
        Some(ns) => (
            Api::<KafscaleCluster>::namespaced(client.clone(), ns),
            Api::<KafscaleTopic>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<KafscaleCluster>::all(client.clone()),
            Api::<KafscaleTopic>::all(client.clone()),
            Api::<Deployment>::all(client.clone()),
            Api::<StatefulSet>::all(client.clone()),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=kafscale-operator");
    let cluster_controller = Controller::new(clusters, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(sets, owned)
        .run(cluster::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster controller");
            }
        });
    let topic_controller = Controller::new(topics, watcher::Config::default())
        .run(topic::reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "topic controller");
            }
        });
    tracing::info!(namespace = ?namespace, "operator running");
    futures::join!(cluster_controller, topic_controller);
}
