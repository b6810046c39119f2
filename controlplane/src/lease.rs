//! Registration leases: granted once, refreshed in the background, and
//! reported lost when the store says the lease is gone (or could not be
//! refreshed for a whole time-to-live). A process that loses its lease must
//! stop serving: its registration is gone and its work has moved.

use crate::metadata::MetaError;
use crate::store::MetadataStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A lease kept alive by a background task.
pub struct Lease {
    id: i64,
    store: Arc<dyn MetadataStore>,
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Grants a lease with `ttl` and refreshes it every `ttl / 3`.
    pub async fn grant(store: Arc<dyn MetadataStore>, ttl: Duration) -> Result<Self, MetaError> {
        let id = store.grant_lease(ttl).await?;
        let (tx, lost) = watch::channel(false);
        let s = store.clone();
        let task = tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(100));
            let mut last_ok = Instant::now();
            loop {
                tokio::time::sleep(period).await;
                match s.keep_alive(id).await {
                    Ok(true) => last_ok = Instant::now(),
                    Ok(false) => {
                        tracing::error!(lease = id, "lease expired");
                        tx.send_replace(true);
                        return;
                    }
                    Err(e) if last_ok.elapsed() >= ttl => {
                        tracing::error!(lease = id, error = %e, "lease not refreshed for a whole TTL");
                        tx.send_replace(true);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = id, error = %e, "lease refresh failed; retrying")
                    }
                }
            }
        });
        Ok(Self {
            id,
            store,
            lost,
            task,
        })
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Becomes true when the lease is lost.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stops refreshing and revokes the lease (its keys disappear now).
    pub async fn revoke(&self) {
        self.task.abort();
        if let Err(e) = self.store.revoke_lease(self.id).await {
            tracing::warn!(lease = self.id, error = %e, "lease revoke failed; it will expire");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}
