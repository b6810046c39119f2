//! Routing of partition requests to the owning worker over gRPC: split a
//! request by owner, fan out, merge. Partitions without an owner yet are
//! waited for briefly (a topic that was just created gets assigned within
//! milliseconds) and otherwise answered with a retriable error.

use crate::cluster::{ClusterView, Snapshot};
use dashmap::DashMap;
use kafscale_proto::data::v1 as pb;
use kafscale_proto::data::v1::log_worker_client::LogWorkerClient;
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

/// How long a request waits for a partition to get an owner.
const ROUTE_WAIT: Duration = Duration::from_secs(3);

/// How long [`Router::fan_out`] retries parts whose owner is moving.
pub const RETRY_FOR: Duration = Duration::from_secs(5);

/// A worker's per-partition answer that can say "I do not own this
/// partition (any more)".
pub trait PartitionResult {
    /// True for NOT_LEADER_OR_FOLLOWER.
    fn not_owner(&self) -> bool;
}

macro_rules! partition_result {
    ($($t:ty),*) => {$(
        impl PartitionResult for $t {
            fn not_owner(&self) -> bool {
                self.error_code
                    == i32::from(kafka_protocol::error::ResponseError::NotLeaderOrFollower.code())
            }
        }
    )*};
}

partition_result!(
    pb::ListOffsetsPartitionResult,
    pb::DeleteRecordsPartitionResult,
    pb::PartitionSize
);

/// The (topic id, partition) a data-plane partition reference points at.
pub fn key_of(p: &Option<kafscale_proto::data::v1::PartitionRef>) -> (Uuid, i32) {
    match p {
        Some(r) => (
            Uuid::from_slice(&r.topic_id).unwrap_or_default(),
            r.partition,
        ),
        None => (Uuid::nil(), -1),
    }
}

/// Errors talking to workers.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("bad worker address {0}")]
    BadAddress(String),
    #[error("worker call failed: {0}")]
    Call(#[from] tonic::Status),
}

/// Connections to workers, one HTTP/2 channel per worker address.
#[derive(Clone)]
pub struct Router {
    view: ClusterView,
    clients: std::sync::Arc<DashMap<String, LogWorkerClient<Channel>>>,
}

impl Router {
    /// A router over the cluster view.
    pub fn new(view: ClusterView) -> Self {
        Self {
            view,
            clients: std::sync::Arc::new(DashMap::new()),
        }
    }

    /// The cluster view used for routing.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// A client for the worker at `addr`.
    pub fn client(&self, addr: &str) -> Result<LogWorkerClient<Channel>, RouteError> {
        if let Some(c) = self.clients.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| RouteError::BadAddress(addr.to_string()))?
            .tcp_nodelay(true)
            // Large HTTP/2 windows: produce bodies are up to a request's
            // size, and the 64 KiB default serialises them on window updates.
            .initial_stream_window_size(Some(16 << 20))
            .initial_connection_window_size(Some(64 << 20))
            .connect_timeout(Duration::from_secs(3));
        let c = LogWorkerClient::new(ep.connect_lazy())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        self.clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Splits `items` by owning worker address; items whose partition has no
    /// live owner (after a short wait) come back in the second list.
    pub async fn split<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> (Uuid, i32),
    ) -> (HashMap<String, Vec<T>>, Vec<T>) {
        let owner = |s: &Snapshot, k: (Uuid, i32)| -> Option<String> {
            let a = s.assignments.get(&k)?;
            s.workers.get(&a.worker_id).map(|w| w.grpc_addr.clone())
        };
        let mut snap = self.view.snapshot();
        if items.iter().any(|i| owner(&snap, key(i)).is_none()) {
            let keys: Vec<_> = items.iter().map(&key).collect();
            snap = self
                .view
                .wait_for(ROUTE_WAIT, |s| {
                    keys.iter()
                        .all(|k| owner(s, *k).is_some() || !s.topic_names.contains_key(&k.0))
                })
                .await;
        }
        let mut routed: HashMap<String, Vec<T>> = HashMap::new();
        let mut unroutable = Vec::new();
        for i in items {
            match owner(&snap, key(&i)) {
                Some(addr) => routed.entry(addr).or_default().push(i),
                None => unroutable.push(i),
            }
        }
        (routed, unroutable)
    }

    /// Sends each owning worker its share of `parts` with `call`, all
    /// workers concurrently, and returns every part's result in input order:
    /// `None` where the partition has no live owner or the call failed.
    /// Parts whose owner is moving (no owner, unreachable, or answering
    /// NOT_LEADER_OR_FOLLOWER) are retried for up to [`RETRY_FOR`], so a
    /// client sees a retriable error only if the move takes longer.
    pub async fn fan_out<S, P, R, F, Fut>(
        &self,
        parts: Vec<(S, P)>,
        key: impl Fn(&P) -> (Uuid, i32),
        call: F,
    ) -> Vec<(S, Option<R>)>
    where
        P: Clone,
        R: PartitionResult,
        F: Fn(LogWorkerClient<Channel>, Vec<P>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<R>, tonic::Status>>,
    {
        let (slots, parts): (Vec<S>, Vec<P>) = parts.into_iter().unzip();
        let mut out: Vec<Option<R>> = (0..parts.len()).map(|_| None).collect();
        let mut pending: Vec<(usize, P)> = parts.into_iter().enumerate().collect();
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let results = self.fan_out_once(pending.clone(), &key, &call).await;
            let mut retry = Vec::new();
            for ((i, r), (_, p)) in results.into_iter().zip(pending) {
                let moving = r.as_ref().is_none_or(PartitionResult::not_owner);
                out[i] = r;
                if moving {
                    retry.push((i, p));
                }
            }
            if retry.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            pending = retry;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        slots.into_iter().zip(out).collect()
    }

    /// One round of [`Self::fan_out`].
    async fn fan_out_once<S, P, R, F, Fut>(
        &self,
        parts: Vec<(S, P)>,
        key: &impl Fn(&P) -> (Uuid, i32),
        call: &F,
    ) -> Vec<(S, Option<R>)>
    where
        F: Fn(LogWorkerClient<Channel>, Vec<P>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<R>, tonic::Status>>,
    {
        let indexed: Vec<(usize, (S, P))> = parts.into_iter().enumerate().collect();
        let n = indexed.len();
        let (routed, unroutable) = self.split(indexed, |(_, (_, p))| key(p)).await;
        let mut out: Vec<Option<(S, Option<R>)>> = (0..n).map(|_| None).collect();
        for (i, (slot, _)) in unroutable {
            out[i] = Some((slot, None));
        }
        let calls = routed.into_iter().map(|(addr, group)| {
            let (ids, pairs): (Vec<usize>, Vec<(S, P)>) = group.into_iter().unzip();
            let (slots, ps): (Vec<S>, Vec<P>) = pairs.into_iter().unzip();
            let client = self.client(&addr);
            let fut = client.map(|c| call(c, ps));
            async move {
                let result = match fut {
                    Ok(f) => f.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (ids, slots, result)
            }
        });
        for (ids, slots, result) in futures::future::join_all(calls).await {
            match result {
                Ok(results) if results.len() == ids.len() => {
                    for ((i, slot), r) in ids.into_iter().zip(slots).zip(results) {
                        out[i] = Some((slot, Some(r)));
                    }
                }
                other => {
                    if let Err(e) = other {
                        tracing::warn!(error = %e, "worker call failed");
                    }
                    for (i, slot) in ids.into_iter().zip(slots) {
                        out[i] = Some((slot, None));
                    }
                }
            }
        }
        out.into_iter().flatten().collect()
    }
}
