//! The `MetadataStore` on etcd v3 (distributed mode), via `etcd-client`.
//!
//! Mapping: keys and values are etcd keys and values (keys UTF-8);
//! `mod_revision` is etcd's `mod_revision`; `range` is a paginated prefix
//! range read at one revision; `txn` is an etcd transaction whose compares are
//! `mod_revision == n` (0 matches an absent key) and whose success branch
//! holds the writes; leases are etcd leases (`PutLeased` is a put with the
//! lease attached).
//!
//! Timeouts: connecting gives up after [`CONNECT_TIMEOUT`]; every unary call
//! fails with [`StoreError::Backend`] after [`REQUEST_TIMEOUT`] (the call may
//! or may not have been applied). HTTP/2 pings detect dead connections.
//!
//! Watches: a background task per watch owns the etcd watch stream. When the
//! stream breaks (connection lost, etcd restarted, server-side cancel) it
//! reconnects with backoff from the last delivered revision + 1, so no event
//! is lost or repeated. If that revision has been compacted away meanwhile,
//! the lost history cannot be replayed: the watch resumes at the oldest
//! revision etcd still has (logging a warning), and consumers catch up on
//! what they missed through their periodic `range`. The stream ends only when
//! its receiver is dropped.

use super::{
    lease_ttl_secs, Compare, KeyValue, MetadataStore, StoreError, TxnOp, WatchEvent, WatchStream,
};
use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp as EtcdTxnOp, WatchOptions,
};
use futures::{Future, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long connecting to etcd may take before `connect` fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one etcd request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys fetched per page by `range`.
const RANGE_PAGE: i64 = 1000;
/// Events buffered between a watch task and its consumer.
const WATCH_BUFFER: usize = 1024;
/// Longest pause between two attempts to re-establish a broken watch.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The etcd-backed metadata store. Cloning shares the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

/// Maps an etcd error; a missing lease gets its own variant.
fn etcd_err(e: etcd_client::Error) -> StoreError {
    let msg = e.to_string();
    if msg.contains("requested lease not found") {
        StoreError::LeaseNotFound
    } else {
        StoreError::Backend(format!("etcd: {msg}"))
    }
}

/// Awaits one etcd request with [`REQUEST_TIMEOUT`].
async fn timed<T>(
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r.map_err(etcd_err),
        Err(_) => Err(StoreError::Backend(format!(
            "etcd {what} timed out after {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// The `[start, end)` key range holding exactly the keys that start with
/// `prefix` (every key when `prefix` is empty).
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let start = prefix.as_bytes().to_vec();
    let mut end = start.clone();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (start, end);
        }
    }
    // The prefix is all 0xff bytes: everything from it to the end.
    (start, vec![0])
}

fn key_string(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: key_string(kv.key()),
        value: Bytes::copy_from_slice(kv.value()),
        mod_revision: kv.mod_revision(),
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (e.g.
    /// `http://127.0.0.1:2379`), authenticating as `user` (name, password)
    /// when given, and checks that etcd answers. Fails within a few seconds
    /// when no endpoint is reachable.
    pub async fn connect(
        endpoints: Vec<String>,
        user: Option<(String, String)>,
    ) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some((name, password)) = user {
            options = options.with_user(name, password);
        }
        let client = timed("connect", Client::connect(&endpoints, Some(options))).await?;
        let store = Self { client };
        let mut maintenance = store.client.maintenance_client();
        timed("status", maintenance.status())
            .await
            .map_err(|e| match e {
                StoreError::Backend(m) => StoreError::Backend(format!(
                    "cannot reach etcd at {}: {m}",
                    endpoints.join(",")
                )),
                other => other,
            })?;
        Ok(store)
    }

    /// Like [`MetadataStore::watch`], but starting at `start_revision`
    /// (inclusive; 0 = changes after now), e.g. the revision after a `range`
    /// read, for gap-free list-then-watch.
    pub async fn watch_from(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<WatchStream, StoreError> {
        let (stream, next) = open_watch(&self.client, prefix, start_revision).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(follow_watch(
            self.client.clone(),
            prefix.to_string(),
            stream,
            next,
            tx,
        ));
        Ok(ReceiverStream::new(rx).boxed())
    }

    /// Compacts etcd's history up to `revision` (maintenance; watches that
    /// are behind it skip ahead, see the module docs).
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        timed("compact", kv.compact(revision, None)).await?;
        Ok(())
    }

    async fn put_with(&self, key: &str, value: Bytes, lease: i64) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let resp = timed("put", kv.put(key, value.to_vec(), options)).await?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Backend("etcd put response without header".into()))
    }
}

/// Creates an etcd watch on `prefix` from `start_revision` (0 = now) and waits
/// until etcd confirms it. Returns the stream and the first revision it will
/// deliver.
async fn open_watch(
    client: &Client,
    prefix: &str,
    start_revision: i64,
) -> Result<(etcd_client::WatchStream, i64), StoreError> {
    let (start, end) = prefix_range(prefix);
    let mut options = WatchOptions::new().with_range(end);
    if start_revision > 0 {
        options = options.with_start_revision(start_revision);
    }
    let mut wc = client.watch_client();
    let mut stream = timed("watch", wc.watch(start, Some(options))).await?;
    loop {
        let Some(resp) = timed("watch", stream.message()).await? else {
            return Err(StoreError::Backend("etcd closed the watch stream".into()));
        };
        if resp.canceled() {
            return Err(StoreError::Backend(format!(
                "etcd refused the watch: {}",
                resp.cancel_reason()
            )));
        }
        if resp.created() {
            let next = if start_revision > 0 {
                start_revision
            } else {
                resp.header().map(|h| h.revision() + 1).unwrap_or(1)
            };
            return Ok((stream, next));
        }
    }
}

/// Forwards events of one watch to `tx` until the receiver is dropped,
/// re-establishing the etcd watch from `next` whenever it breaks.
async fn follow_watch(
    client: Client,
    prefix: String,
    mut stream: etcd_client::WatchStream,
    mut next: i64,
    tx: mpsc::Sender<WatchEvent>,
) {
    loop {
        // Deliver until the stream breaks.
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tx.closed() => return,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    tracing::debug!(%prefix, "etcd watch stream ended; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%prefix, error = %e, "etcd watch stream failed; reconnecting");
                    break;
                }
            };
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let event = match ev.event_type() {
                    EventType::Put => WatchEvent::Put(to_kv(kv)),
                    EventType::Delete => WatchEvent::Delete {
                        key: key_string(kv.key()),
                        mod_revision: kv.mod_revision(),
                    },
                };
                next = next.max(kv.mod_revision() + 1);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if resp.canceled() {
                if resp.compact_revision() > next {
                    tracing::warn!(
                        %prefix,
                        from = next,
                        to = resp.compact_revision(),
                        "etcd compacted watch history; events in between are skipped"
                    );
                    next = resp.compact_revision();
                } else {
                    tracing::debug!(%prefix, reason = resp.cancel_reason(), "etcd cancelled watch");
                }
                break;
            }
        }
        // Re-establish from `next`, with backoff, until it works or nobody listens.
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            let opened = tokio::select! {
                o = open_watch(&client, &prefix, next) => o,
                _ = tx.closed() => return,
            };
            match opened {
                Ok((s, _)) => {
                    stream = s;
                    break;
                }
                Err(e) => {
                    tracing::debug!(%prefix, error = %e, "re-establishing etcd watch failed");
                    backoff = (backoff * 2).min(WATCH_MAX_BACKOFF);
                }
            }
        }
    }
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = timed("get", kv.get(key, None)).await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<i64, StoreError> {
        self.put_with(key, value, 0).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = timed("delete", kv.delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let (mut from, end) = prefix_range(prefix);
        let mut kv = self.client.kv_client();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE);
            if revision > 0 {
                // Later pages read the same snapshot as the first.
                options = options.with_revision(revision);
            }
            let resp = timed("range", kv.get(from.clone(), Some(options))).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            out.extend(resp.kvs().iter().map(to_kv));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<bool, StoreError> {
        if ops.iter().any(|op| matches!(op, TxnOp::PutLeased(_, _, 0))) {
            // etcd would treat lease 0 as "no lease".
            return Err(StoreError::LeaseNotFound);
        }
        let compares: Vec<EtcdCompare> = compares
            .into_iter()
            .map(|c| EtcdCompare::mod_revision(c.key, CompareOp::Equal, c.mod_revision))
            .collect();
        let ops: Vec<EtcdTxnOp> = ops
            .into_iter()
            .map(|op| match op {
                TxnOp::Put(key, value) => EtcdTxnOp::put(key, value.to_vec(), None),
                TxnOp::PutLeased(key, value, lease) => EtcdTxnOp::put(
                    key,
                    value.to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::Delete(key) => EtcdTxnOp::delete(key, None),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let resp = timed("txn", kv.txn(Txn::new().when(compares).and_then(ops))).await?;
        Ok(resp.succeeded())
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError> {
        self.watch_from(prefix, 0).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let mut lease = self.client.lease_client();
        let resp = timed("lease grant", lease.grant(lease_ttl_secs(ttl), None)).await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        let mut client = self.client.lease_client();
        // One refresh over a short-lived keep-alive stream: etcd-client sends
        // the request and waits for etcd's answer (TTL ≤ 0 = no such lease).
        match timed("lease keep-alive", client.keep_alive(lease)).await {
            Ok(_) => Ok(true),
            Err(StoreError::LeaseNotFound) => Ok(false),
            Err(StoreError::Backend(m)) if m.contains("lease not found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        let mut client = self.client.lease_client();
        match timed("lease revoke", client.revoke(lease)).await {
            Ok(_) | Err(StoreError::LeaseNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn put_leased(&self, key: &str, value: Bytes, lease: i64) -> Result<i64, StoreError> {
        if lease == 0 {
            // etcd would treat lease 0 as "no lease".
            return Err(StoreError::LeaseNotFound);
        }
        self.put_with(key, value, lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_range;

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        assert_eq!(prefix_range("/a/"), (b"/a/".to_vec(), b"/a0".to_vec()));
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
        assert_eq!(
            prefix_range("a\u{7f}"),
            (b"a\x7f".to_vec(), b"a\x80".to_vec())
        );
    }
}
