//! A watched, in-memory view of topics, assignments and workers, so that
//! request handling never reads the metadata store on the hot path.

use futures::StreamExt;
use kafscale_controlplane::acl::AclSet;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_controlplane::quota::QuotaSet;
use kafscale_controlplane::{MetaError, Metadata};
use kafscale_proto::metadata::v1::{Assignment, Topic, WorkerRegistration};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// One consistent snapshot of cluster metadata.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub topics: HashMap<String, Topic>,
    pub topic_names: HashMap<Uuid, String>,
    pub assignments: HashMap<(Uuid, i32), Assignment>,
    pub workers: HashMap<String, WorkerRegistration>,
    pub acls: AclSet,
    /// Client quotas, shared by every request that reads this snapshot.
    pub quotas: Arc<QuotaSet>,
    /// Registered gateways (quotas are divided among them); at least 1.
    pub gateways: usize,
}

/// The watched view.
#[derive(Clone)]
pub struct ClusterView {
    meta: Metadata,
    snap: Arc<RwLock<Arc<Snapshot>>>,
    version: watch::Sender<u64>,
}

impl ClusterView {
    /// Loads the view and keeps it fresh from metadata watches.
    pub async fn start(meta: Metadata) -> Result<Self, MetaError> {
        let view = Self {
            meta,
            snap: Arc::new(RwLock::new(Arc::new(Snapshot::default()))),
            version: watch::channel(0).0,
        };
        view.refresh().await?;
        let v = view.clone();
        tokio::spawn(async move { v.follow().await });
        Ok(view)
    }

    /// Re-reads everything from the store.
    pub async fn refresh(&self) -> Result<(), MetaError> {
        let mut s = Snapshot::default();
        for t in self.meta.list_topics().await? {
            s.topic_names.insert(topic_uuid(&t), t.name.clone());
            s.topics.insert(t.name.clone(), t);
        }
        s.assignments = self.meta.list_assignments().await?.into_iter().collect();
        s.workers = self
            .meta
            .list_workers()
            .await?
            .into_iter()
            .map(|w| (w.worker_id.clone(), w))
            .collect();
        s.acls = AclSet::new(self.meta.list_acls().await?);
        s.quotas = Arc::new(QuotaSet::new(self.meta.list_client_quotas().await?));
        s.gateways = self.meta.list_gateways().await?.len().max(1);
        *self.snap.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn follow(self) {
        let store = self.meta.store().clone();
        let root = self.meta.keys().topics();
        let root = root.trim_end_matches("topics/").to_string();
        let Ok(mut events) = store.watch(&root).await else {
            tracing::error!("cannot watch metadata; view refreshes by polling only");
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = self.refresh().await;
            }
        };
        loop {
            tokio::select! {
                e = events.next() => if e.is_none() { return },
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            // Coalesce bursts of events into one refresh.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(2), events.next()).await
            {}
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cluster view refresh failed");
            }
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until `ready` holds for a snapshot, up to `timeout`.
    pub async fn wait_for<F: Fn(&Snapshot) -> bool>(
        &self,
        timeout: Duration,
        ready: F,
    ) -> Arc<Snapshot> {
        let mut rx = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if ready(&s) || tokio::time::Instant::now() >= deadline {
                return s;
            }
            let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        }
    }

    /// The metadata handle.
    pub fn meta(&self) -> &Metadata {
        &self.meta
    }
}
