//! Typed access to cluster metadata on top of any `MetadataStore`.
//!
//! Every read-modify-write is a compare-and-swap loop on the key's revision,
//! so concurrent gateways and workers never lose each other's updates.

use crate::acl::{self, AclBinding};
use crate::keys::Keys;
use crate::store::{Compare, MetadataStore, StoreError, TxnOp};
use bytes::Bytes;
use kafscale_proto::metadata::v1::{
    Assignment, ClientQuota, ClusterInfo, GatewayRegistration, PartitionState, ProducerIdBlock,
    ScramCredential, Topic, WorkerRegistration,
};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Errors of metadata operations.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt metadata at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("{0}")]
    Invalid(String),
    /// A conditional change refused because the caller no longer owns what
    /// it changes (a newer owner's epoch is recorded).
    #[error("fenced: {0}")]
    Fenced(String),
}

impl MetaError {
    /// The Kafka error a client sees when a metadata change fails on this
    /// error, where the API has no more specific code. An unreachable or
    /// closed store is REQUEST_TIMED_OUT (retriable: it is what a Kafka
    /// broker answers when its controller quorum does not respond).
    pub fn kafka_code(&self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            MetaError::Store(StoreError::Backend(_) | StoreError::Closed) => {
                E::RequestTimedOut.code()
            }
            MetaError::Store(StoreError::LeaseNotFound) | MetaError::Corrupt { .. } => {
                E::UnknownServerError.code()
            }
            MetaError::TopicExists(_) => E::TopicAlreadyExists.code(),
            MetaError::UnknownTopic(_) => E::UnknownTopicOrPartition.code(),
            MetaError::Invalid(_) => E::InvalidRequest.code(),
            MetaError::Fenced(_) => E::NotLeaderOrFollower.code(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The topic id of a stored topic as a UUID (nil when malformed).
pub fn topic_uuid(topic: &Topic) -> Uuid {
    Uuid::from_slice(&topic.topic_id).unwrap_or(Uuid::nil())
}

/// Operations per metadata transaction (etcd's default limit is 128).
const MAX_TXN_OPS: usize = 100;

/// Typed metadata operations for one namespace.
#[derive(Clone)]
pub struct Metadata {
    store: Arc<dyn MetadataStore>,
    keys: Keys,
}

fn decode<M: Message + Default>(key: &str, value: &[u8]) -> Result<M, MetaError> {
    M::decode(value).map_err(|e| MetaError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn bytes_of<M: Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

impl Metadata {
    /// Typed metadata over `store` under namespace `namespace`.
    pub fn new(store: Arc<dyn MetadataStore>, namespace: &str) -> Self {
        Self {
            store,
            keys: Keys::new(namespace),
        }
    }

    /// The underlying store (for watches).
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn get_msg<M: Message + Default>(
        &self,
        key: &str,
    ) -> Result<Option<(M, i64)>, MetaError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(key, &kv.value)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Applies `update` to the message at `key` (default when absent) with a
    /// CAS loop; returns the stored result. `update` may return an error to abort.
    async fn update_msg<M, F>(&self, key: &str, mut update: F) -> Result<M, MetaError>
    where
        M: Message + Default + Clone,
        F: FnMut(Option<M>) -> Result<M, MetaError>,
    {
        loop {
            let current = self.get_msg::<M>(key).await?;
            let rev = current.as_ref().map(|(_, r)| *r).unwrap_or(0);
            let next = update(current.map(|(m, _)| m))?;
            let cmp = Compare {
                key: key.to_string(),
                mod_revision: rev,
            };
            let op = TxnOp::Put(key.to_string(), bytes_of(&next));
            if self.store.txn(vec![cmp], vec![op]).await? {
                return Ok(next);
            }
        }
    }

    /// The cluster identity, created on first call.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, MetaError> {
        if let Some((info, _)) = self.get_msg::<ClusterInfo>(&self.keys.cluster()).await? {
            return Ok(info);
        }
        self.update_msg(&self.keys.cluster(), |cur: Option<ClusterInfo>| {
            Ok(cur.unwrap_or_else(|| ClusterInfo {
                cluster_id: base64_id(Uuid::new_v4()),
                created_at_ms: now_ms(),
            }))
        })
        .await
    }

    /// Creates a topic with a fresh topic id. Fails with `TopicExists`.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: HashMap<String, String>,
    ) -> Result<Topic, MetaError> {
        let topic = Topic {
            name: name.to_string(),
            topic_id: Uuid::new_v4().as_bytes().to_vec().into(),
            partitions,
            configs,
            created_at_ms: now_ms(),
        };
        let key = self.keys.topic(name);
        let cmp = Compare {
            key: key.clone(),
            mod_revision: 0,
        };
        if self
            .store
            .txn(vec![cmp], vec![TxnOp::Put(key, bytes_of(&topic))])
            .await?
        {
            Ok(topic)
        } else {
            Err(MetaError::TopicExists(name.to_string()))
        }
    }

    /// One topic by name.
    pub async fn get_topic(&self, name: &str) -> Result<Option<Topic>, MetaError> {
        Ok(self.get_msg(&self.keys.topic(name)).await?.map(|(t, _)| t))
    }

    /// Every topic, by name order.
    pub async fn list_topics(&self) -> Result<Vec<Topic>, MetaError> {
        let mut out = Vec::new();
        for kv in self.store.range(&self.keys.topics()).await? {
            out.push(decode(&kv.key, &kv.value)?);
        }
        Ok(out)
    }

    /// Deletes a topic, its partition states and assignments.
    pub async fn delete_topic(&self, name: &str) -> Result<Topic, MetaError> {
        let key = self.keys.topic(name);
        let (topic, rev): (Topic, i64) = self
            .get_msg(&key)
            .await?
            .ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?;
        let id = topic_uuid(&topic);
        let mut ops = vec![TxnOp::Delete(key.clone())];
        for prefix in [self.keys.partitions_of(id), self.keys.assignments_of(id)] {
            for kv in self.store.range(&prefix).await? {
                ops.push(TxnOp::Delete(kv.key));
            }
        }
        let cmp = Compare {
            key,
            mod_revision: rev,
        };
        // etcd caps a transaction at 128 operations: the topic key goes
        // first (conditionally), its partition keys follow in batches.
        // Leftovers of an interrupted delete belong to no topic and are
        // ignored by readers.
        let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
        if !self.store.txn(vec![cmp], ops).await? {
            return Err(MetaError::UnknownTopic(name.to_string()));
        }
        for batch in rest.chunks(MAX_TXN_OPS) {
            self.store.txn(Vec::new(), batch.to_vec()).await?;
        }
        Ok(topic)
    }

    /// Applies `update` to a topic with CAS; `update` may reject the change.
    pub async fn update_topic<F>(&self, name: &str, mut update: F) -> Result<Topic, MetaError>
    where
        F: FnMut(&mut Topic) -> Result<(), MetaError>,
    {
        self.update_msg(&self.keys.topic(name), |cur: Option<Topic>| {
            let mut t = cur.ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?;
            update(&mut t)?;
            Ok(t)
        })
        .await
    }

    /// A partition's durable state (default when never written).
    pub async fn partition_state(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<PartitionState, MetaError> {
        Ok(self
            .get_msg(&self.keys.partition(topic_id, partition))
            .await?
            .map(|(s, _)| s)
            .unwrap_or_else(|| PartitionState {
                topic_id: topic_id.as_bytes().to_vec().into(),
                partition,
                ..Default::default()
            }))
    }

    /// Applies `update` to a partition's state with CAS.
    pub async fn update_partition_state<F>(
        &self,
        topic_id: Uuid,
        partition: i32,
        mut update: F,
    ) -> Result<PartitionState, MetaError>
    where
        F: FnMut(&mut PartitionState),
    {
        self.try_update_partition_state(topic_id, partition, |s| {
            update(s);
            Ok(())
        })
        .await
    }

    /// Applies `update` to a partition's state with CAS; `update` may refuse
    /// the change (the state is then left as it is).
    pub async fn try_update_partition_state<F>(
        &self,
        topic_id: Uuid,
        partition: i32,
        mut update: F,
    ) -> Result<PartitionState, MetaError>
    where
        F: FnMut(&mut PartitionState) -> Result<(), MetaError>,
    {
        self.update_msg(
            &self.keys.partition(topic_id, partition),
            |cur: Option<PartitionState>| {
                let mut s = cur.unwrap_or_else(|| PartitionState {
                    topic_id: topic_id.as_bytes().to_vec().into(),
                    partition,
                    ..Default::default()
                });
                update(&mut s)?;
                Ok(s)
            },
        )
        .await
    }

    /// Hands out the next stream epoch for `worker_id` (strictly increasing,
    /// never reused, persisted).
    pub async fn next_stream_epoch(&self, worker_id: &str) -> Result<u64, MetaError> {
        let key = self.keys.stream_epoch(worker_id);
        loop {
            let current = self.store.get(&key).await?;
            let (prev, rev) = match &current {
                Some(kv) => {
                    let raw: [u8; 8] =
                        kv.value
                            .as_ref()
                            .try_into()
                            .map_err(|_| MetaError::Corrupt {
                                key: key.clone(),
                                reason: "stream epoch is not 8 bytes".into(),
                            })?;
                    (u64::from_be_bytes(raw), kv.mod_revision)
                }
                None => (0, 0),
            };
            let next = prev + 1;
            let cmp = Compare {
                key: key.clone(),
                mod_revision: rev,
            };
            let op = TxnOp::Put(key.clone(), Bytes::copy_from_slice(&next.to_be_bytes()));
            if self.store.txn(vec![cmp], vec![op]).await? {
                return Ok(next);
            }
        }
    }

    /// Registers (or refreshes) a worker; with a lease, the registration
    /// disappears when the lease lapses (the worker is then considered gone).
    pub async fn register_worker(
        &self,
        reg: &WorkerRegistration,
        lease: Option<i64>,
    ) -> Result<(), MetaError> {
        self.put_maybe_leased(&self.keys.worker(&reg.worker_id), bytes_of(reg), lease)
            .await
    }

    /// Registers a gateway under its lease.
    pub async fn register_gateway(
        &self,
        reg: &GatewayRegistration,
        lease: Option<i64>,
    ) -> Result<(), MetaError> {
        self.put_maybe_leased(&self.keys.gateway(&reg.gateway_id), bytes_of(reg), lease)
            .await
    }

    /// Reserves `count` consecutive producer ids; returns the first.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetaError> {
        let block = self
            .update_msg(&self.keys.producer_ids(), |cur: Option<ProducerIdBlock>| {
                let next = cur.map(|b| b.next).unwrap_or(0);
                Ok(ProducerIdBlock { next: next + count })
            })
            .await?;
        Ok(block.next - count)
    }

    /// Stores ACL bindings (each once, however often created).
    pub async fn create_acls(&self, bindings: &[AclBinding]) -> Result<(), MetaError> {
        for chunk in bindings.chunks(MAX_TXN_OPS) {
            let ops = chunk
                .iter()
                .map(|b| TxnOp::Put(self.keys.acl(&acl::canonical(b)), bytes_of(b)))
                .collect();
            self.store.txn(Vec::new(), ops).await?;
        }
        Ok(())
    }

    /// Every stored ACL binding.
    pub async fn list_acls(&self) -> Result<Vec<AclBinding>, MetaError> {
        let mut out = Vec::new();
        for kv in self.store.range(&self.keys.acls()).await? {
            out.push(decode(&kv.key, &kv.value)?);
        }
        Ok(out)
    }

    /// Removes ACL bindings (absent ones are ignored).
    pub async fn delete_acls(&self, bindings: &[AclBinding]) -> Result<(), MetaError> {
        for chunk in bindings.chunks(MAX_TXN_OPS) {
            let ops = chunk
                .iter()
                .map(|b| TxnOp::Delete(self.keys.acl(&acl::canonical(b))))
                .collect();
            self.store.txn(Vec::new(), ops).await?;
        }
        Ok(())
    }

    /// One user's SCRAM credential for `mechanism`, if stored.
    pub async fn scram_credential(
        &self,
        user: &str,
        mechanism: i32,
    ) -> Result<Option<ScramCredential>, MetaError> {
        Ok(self
            .get_msg(&self.keys.scram_credential(user, mechanism))
            .await?
            .map(|(c, _)| c))
    }

    /// Every stored SCRAM credential.
    pub async fn list_scram_credentials(&self) -> Result<Vec<ScramCredential>, MetaError> {
        let mut out = Vec::new();
        for kv in self.store.range(&self.keys.scram_credentials()).await? {
            out.push(decode(&kv.key, &kv.value)?);
        }
        Ok(out)
    }

    /// Stores (or replaces) a SCRAM credential.
    pub async fn put_scram_credential(&self, c: &ScramCredential) -> Result<(), MetaError> {
        let key = self.keys.scram_credential(&c.user, c.mechanism);
        self.store
            .txn(Vec::new(), vec![TxnOp::Put(key, bytes_of(c))])
            .await?;
        Ok(())
    }

    /// Stores a SCRAM credential unless one exists for its user and
    /// mechanism; true if it was stored.
    pub async fn create_scram_credential(&self, c: &ScramCredential) -> Result<bool, MetaError> {
        let key = self.keys.scram_credential(&c.user, c.mechanism);
        let cmp = Compare {
            key: key.clone(),
            mod_revision: 0,
        };
        Ok(self
            .store
            .txn(vec![cmp], vec![TxnOp::Put(key, bytes_of(c))])
            .await?)
    }

    /// Removes a SCRAM credential (no-op when absent).
    pub async fn delete_scram_credential(
        &self,
        user: &str,
        mechanism: i32,
    ) -> Result<(), MetaError> {
        let key = self.keys.scram_credential(user, mechanism);
        self.store.txn(Vec::new(), vec![TxnOp::Delete(key)]).await?;
        Ok(())
    }

    /// Every stored client quota entity.
    pub async fn list_client_quotas(&self) -> Result<Vec<ClientQuota>, MetaError> {
        let mut out = Vec::new();
        for kv in self.store.range(&self.keys.client_quotas()).await? {
            out.push(decode(&kv.key, &kv.value)?);
        }
        Ok(out)
    }

    /// Sets (`Some`) or removes (`None`) quota values of one entity in one
    /// compare-and-swap; an entity left without values is deleted.
    pub async fn alter_client_quota(
        &self,
        entity: &crate::quota::Entity,
        ops: &[(String, Option<f64>)],
    ) -> Result<(), MetaError> {
        let key = self.keys.client_quota(&entity.canonical());
        loop {
            let current = self.get_msg::<ClientQuota>(&key).await?;
            let rev = current.as_ref().map(|(_, r)| *r).unwrap_or(0);
            let mut q = current.map(|(q, _)| q).unwrap_or_default();
            q.entity = entity.to_stored();
            for (k, v) in ops {
                match v {
                    Some(v) => q.values.insert(k.clone(), *v),
                    None => q.values.remove(k),
                };
            }
            let op = if q.values.is_empty() {
                TxnOp::Delete(key.clone())
            } else {
                TxnOp::Put(key.clone(), bytes_of(&q))
            };
            let cmp = Compare {
                key: key.clone(),
                mod_revision: rev,
            };
            if self.store.txn(vec![cmp], vec![op]).await? {
                return Ok(());
            }
        }
    }

    /// Every registered gateway.
    pub async fn list_gateways(&self) -> Result<Vec<GatewayRegistration>, MetaError> {
        let mut out = Vec::new();
        for kv in self.store.range(&self.keys.gateways()).await? {
            out.push(decode(&kv.key, &kv.value)?);
        }
        Ok(out)
    }

    async fn put_maybe_leased(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<i64>,
    ) -> Result<(), MetaError> {
        match lease {
            Some(l) => self.store.put_leased(key, value, l).await?,
            None => self.store.put(key, value).await?,
        };
        Ok(())
    }

    /// Every registered worker.
    pub async fn list_workers(&self) -> Result<Vec<WorkerRegistration>, MetaError> {
        let mut out = Vec::new();
        for kv in self.store.range(&self.keys.workers()).await? {
            out.push(decode(&kv.key, &kv.value)?);
        }
        Ok(out)
    }

    /// Every partition assignment.
    pub async fn list_assignments(&self) -> Result<Vec<((Uuid, i32), Assignment)>, MetaError> {
        let mut out = Vec::new();
        for kv in self.store.range(&self.keys.assignments()).await? {
            if let Some(tp) = self.keys.parse_assignment(&kv.key) {
                out.push((tp, decode(&kv.key, &kv.value)?));
            }
        }
        Ok(out)
    }

    /// Writes a partition's assignment only if the topic still exists
    /// (so a deleted topic never gets assignments back).
    pub async fn put_assignment(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        assignment: &Assignment,
    ) -> Result<bool, MetaError> {
        let tkey = self.keys.topic(topic);
        let Some(kv) = self.store.get(&tkey).await? else {
            return Ok(false);
        };
        let t: Topic = decode(&tkey, &kv.value)?;
        if topic_uuid(&t) != topic_id {
            return Ok(false);
        }
        let cmp = Compare {
            key: tkey,
            mod_revision: kv.mod_revision,
        };
        let op = TxnOp::Put(
            self.keys.assignment(topic_id, partition),
            bytes_of(assignment),
        );
        Ok(self.store.txn(vec![cmp], vec![op]).await?)
    }
}

/// Kafka-style cluster id: URL-safe base64 of 16 random bytes, unpadded.
fn base64_id(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    async fn meta() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (dir, Metadata::new(Arc::new(store), "test"))
    }

    #[tokio::test]
    async fn topics_are_unique_and_deletable() {
        let (_d, m) = meta().await;
        let t = m.create_topic("a", 3, HashMap::new()).await.unwrap();
        assert!(matches!(
            m.create_topic("a", 1, HashMap::new()).await,
            Err(MetaError::TopicExists(_))
        ));
        assert_eq!(m.list_topics().await.unwrap().len(), 1);
        m.update_partition_state(topic_uuid(&t), 0, |s| s.log_start_offset = 5)
            .await
            .unwrap();
        m.delete_topic("a").await.unwrap();
        assert!(m.get_topic("a").await.unwrap().is_none());
        assert_eq!(
            m.partition_state(topic_uuid(&t), 0)
                .await
                .unwrap()
                .log_start_offset,
            0
        );
    }

    #[tokio::test]
    async fn stream_epochs_strictly_increase_and_cluster_id_is_stable() {
        let (_d, m) = meta().await;
        assert_eq!(m.next_stream_epoch("w").await.unwrap(), 1);
        assert_eq!(m.next_stream_epoch("w").await.unwrap(), 2);
        let a = m.cluster_info().await.unwrap();
        let b = m.cluster_info().await.unwrap();
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.cluster_id.len(), 22);
    }
}
