//! Registration leases: granted once, refreshed in the background, and
//! reported lost only when the store answers that the lease is gone. A
//! process that loses its lease must stop serving: its registration is gone
//! and its work has moved.
//!
//! A store that cannot be reached is not a lost lease. etcd is not on the
//! write path (DESIGN.md §4): while it is down nothing can move, so the
//! owners keep serving; if it is only this process that cannot reach it,
//! the new owners of its partitions seal its WAL streams in S3 and its next
//! write is refused there, which is the fence that keeps data safe. When the
//! store answers again, a lease that expired meanwhile is reported lost.

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
            let mut failing_since: Option<Instant> = None;
            let mut last_warned: Option<Instant> = None;
            loop {
                tokio::time::sleep(period).await;
                match s.keep_alive(id).await {
                    Ok(true) => {
                        if let Some(since) = failing_since.take() {
                            tracing::info!(lease = id, unreachable_for = ?since.elapsed(), "lease refreshed again");
                        }
                        last_warned = None;
                    }
                    Ok(false) => {
                        tracing::error!(lease = id, "lease expired");
                        tx.send_replace(true);
                        return;
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        // Once at the start of an outage, then once per TTL.
                        if last_warned.is_none_or(|w| w.elapsed() >= ttl) {
                            last_warned = Some(Instant::now());
                            tracing::warn!(lease = id, error = %e, unreachable_for = ?since.elapsed(),
                                "lease refresh failed; serving on and retrying");
                        }
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
