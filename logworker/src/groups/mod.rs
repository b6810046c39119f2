//! Group coordination in the log worker. Groups hash onto coordinator slots,
//! which are the partitions of the internal topic `__consumer_offsets`; the
//! worker that owns a slot's partition is the coordinator of its groups.
//!
//! Durability: membership snapshots (after each completed rebalance) and
//! committed offsets are records of the slot's partition, written through the
//! same WAL as produced data, and answered only once durable. Heartbeats
//! write nothing. A worker that gains a slot replays its partition before it
//! serves the slot, so groups survive restarts and coordinator moves.

pub mod api;
pub mod group;
pub mod records;

use crate::completion::{wait_durable, Completion, WalError};
use crate::partition::PartitionLog;
use crate::reader;
use crate::wal::writer::WalWriter;
use bytes::Bytes;
use dashmap::DashMap;
use group::{Committed, Group, GroupConfig, RestoredMember};
use kafka_protocol::error::ResponseError;
use kafscale_controlplane::metadata::now_ms;
use records::{KeyValue, Replayed};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Errors of the coordinator's log.
#[derive(Debug, thiserror::Error)]
pub enum GroupLogError {
    #[error(transparent)]
    Records(#[from] records::RecordError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("reading the coordinator log: {0}")]
    Read(#[from] reader::ReadError),
}

impl GroupLogError {
    /// The Kafka error a group API answers with when its log write or read
    /// fails: the partition-level code of the failure, in coordinator terms
    /// ([`coordinator_code`]); an encoding failure of our own records reads
    /// as a storage failure.
    pub fn kafka_code(&self) -> i16 {
        coordinator_code(match self {
            GroupLogError::Wal(e) => e.kafka_code(),
            GroupLogError::Read(e) => e.kafka_code(),
            GroupLogError::Records(_) => ResponseError::KafkaStorageError.code(),
        })
    }
}

/// Translates a partition-level error code of the coordinator topic into
/// what group APIs say for it, the one place this happens: the slot moved
/// (NOT_LEADER_OR_FOLLOWER) is NOT_COORDINATOR, which makes the client look
/// the coordinator up again; any other failure is COORDINATOR_NOT_AVAILABLE
/// (retriable, same coordinator).
pub fn coordinator_code(partition_code: i16) -> i16 {
    if partition_code == ResponseError::NotLeaderOrFollower.code() {
        ResponseError::NotCoordinator.code()
    } else if partition_code == 0 {
        partition_code
    } else {
        ResponseError::CoordinatorNotAvailable.code()
    }
}

/// One group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The groups of one coordinator slot, backed by its partition's log.
pub struct Slot {
    pub log: Arc<PartitionLog>,
    groups: DashMap<String, Arc<Mutex<Group>>>,
}

/// The worker's group coordinator: the slots it owns and their groups.
pub struct GroupCoordinator {
    cfg: GroupConfig,
    wal: Arc<WalWriter>,
    source: reader::Source,
    slots: DashMap<i32, Arc<Slot>>,
}

fn lock(g: &Mutex<Group>) -> std::sync::MutexGuard<'_, Group> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCoordinator {
    /// A coordinator that owns no slot yet.
    pub fn new(cfg: GroupConfig, wal: Arc<WalWriter>, source: reader::Source) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            wal,
            source,
            slots: DashMap::new(),
        })
    }

    /// The coordinator settings.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// True if slot `partition` is loaded here.
    pub fn owns(&self, partition: i32) -> bool {
        self.slots.contains_key(&partition)
    }

    /// Replays a newly owned slot's log and starts serving its groups.
    pub async fn load(&self, log: Arc<PartitionLog>) -> Result<(), GroupLogError> {
        let started = std::time::Instant::now();
        let slot = Arc::new(Slot {
            log: log.clone(),
            groups: DashMap::new(),
        });
        let now = Instant::now();
        let hwm = log.high_watermark();
        let mut offset = log.log_start_offset();
        let mut records = 0usize;
        // Keys of live records in the pre-Kafka-schema format.
        let mut legacy: HashMap<Bytes, LegacyKey> = HashMap::new();
        while offset < hwm {
            let data = reader::read(&self.source, &log, offset, 8 << 20, true).await?;
            if data.is_empty() {
                break;
            }
            let decoded = records::decode(data)?;
            let Some(last) = decoded.last().map(|d| d.offset) else {
                break;
            };
            for d in decoded {
                if d.offset >= offset {
                    records += 1;
                    // An old key whose last record is a tombstone needs no
                    // rewriting: the cleaner drops both in time.
                    match d.legacy_key {
                        Some(k) if d.record.is_tombstone() => {
                            legacy.remove(&k);
                        }
                        Some(k) => {
                            legacy.insert(k, LegacyKey::of(&d.record));
                        }
                        None => {}
                    }
                    apply_replayed(&slot, d.offset, d.record, now);
                }
            }
            if last < offset {
                break;
            }
            offset = last + 1;
        }
        slot.groups.retain(|_, g| !lock(g).is_unused());
        if !legacy.is_empty() {
            self.migrate(&slot, legacy).await?;
        }
        let level_info = records > 0;
        if level_info {
            tracing::info!(
                slot = log.id.partition,
                groups = slot.groups.len(),
                records,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "coordinator slot loaded"
            );
        }
        tracing::debug!(
            slot = log.id.partition,
            groups = slot.groups.len(),
            records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "coordinator slot loaded"
        );
        for g in slot.groups.iter() {
            lock(g.value()).replayed();
        }
        self.slots.insert(log.id.partition, slot);
        Ok(())
    }

    /// Rewrites the live records of `legacy` keys (a log written before the
    /// coordinator used Kafka's schemas) in Kafka's format, each after a
    /// tombstone of its old key, so the log cleaner drops the old records
    /// and replay ends in the same state (the tombstone first, then the
    /// record; after a group's tombstone, which drops its offsets on
    /// replay, the group and all its offsets). Runs before the slot is
    /// served; durable before it returns.
    async fn migrate(
        &self,
        slot: &Slot,
        legacy: HashMap<Bytes, LegacyKey>,
    ) -> Result<(), GroupLogError> {
        let now = now_ms();
        let mut recs: Vec<KeyValue> = Vec::with_capacity(2 * legacy.len());
        for (old_key, key) in &legacy {
            recs.push((old_key.clone(), None));
            let g = slot.groups.get(key.group()).map(|g| g.value().clone());
            let Some(g) = g else { continue };
            let g = lock(&g);
            match key {
                LegacyKey::Offset(group, topic, partition) => {
                    if let Some(c) = g.offsets.get(&(topic.clone(), *partition)) {
                        recs.push(records::offset(group, topic, *partition, Some(c)));
                    }
                }
                // Replaying a group tombstone drops the group's offsets
                // too: the group's whole state follows it.
                LegacyKey::Group(group) => {
                    recs.push(records::group(&g, None, now));
                    recs.extend(
                        g.offsets
                            .iter()
                            .map(|((t, p), c)| records::offset(group, t, *p, Some(c))),
                    );
                }
            }
        }
        // Sections stay in one batch: a tombstone is never durable without the
        // records that follow it.
        for chunk in recs
            .chunk_by(|_, b| b.1.is_some())
            .collect::<Vec<_>>()
            .chunks(512)
        {
            let recs: Vec<KeyValue> = chunk.concat();
            let (_, done) = self.persist_raw(slot, &recs)?;
            wait_durable(done).await?;
        }
        tracing::info!(
            slot = slot.log.id.partition,
            records = legacy.len(),
            "coordinator log upgraded to Kafka's record schemas"
        );
        Ok(())
    }

    /// Stops serving a slot that moved away; waiting joins and syncs get
    /// NOT_COORDINATOR.
    pub fn unload(&self, partition: i32) {
        if let Some((_, slot)) = self.slots.remove(&partition) {
            for g in slot.groups.iter() {
                lock(g.value()).abandon(group::codes::NOT_COORDINATOR);
            }
            tracing::info!(slot = partition, "coordinator slot unloaded");
        }
    }

    /// Slots currently loaded.
    pub fn slot_ids(&self) -> Vec<i32> {
        self.slots.iter().map(|s| *s.key()).collect()
    }

    /// Slots currently loaded, with the number of groups each holds.
    pub fn slot_group_counts(&self) -> Vec<(i32, usize)> {
        self.slots
            .iter()
            .map(|s| (*s.key(), s.value().groups.len()))
            .collect()
    }

    /// Every committed offset of the groups loaded here.
    pub fn committed_offsets(&self) -> Vec<CommittedOffset> {
        let mut out = Vec::new();
        for slot in self.slots.iter() {
            for g in slot.groups.iter() {
                let g = lock(g.value());
                out.extend(
                    g.offsets
                        .iter()
                        .map(|((topic, partition), c)| CommittedOffset {
                            group: g.id.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            offset: c.offset,
                        }),
                );
            }
        }
        out
    }

    fn slot(&self, partition: i32) -> Option<Arc<Slot>> {
        self.slots.get(&partition).map(|s| s.clone())
    }

    /// Runs `f` on group `id` of `slot` under its lock, creating the group
    /// if `create`. `None` if it does not exist (and `create` is false).
    fn with_group<T>(
        &self,
        slot: &Slot,
        id: &str,
        create: bool,
        mut f: impl FnMut(&mut Group) -> T,
    ) -> Option<T> {
        loop {
            let g = if create {
                slot.groups
                    .entry(id.to_string())
                    .or_insert_with(|| Arc::new(Mutex::new(Group::new(id))))
                    .clone()
            } else {
                slot.groups.get(id)?.clone()
            };
            let mut guard = lock(&g);
            if guard.log_offset == DEAD {
                continue;
            }
            return Some(f(&mut guard));
        }
    }

    /// Removes a group from its slot (caller holds its lock).
    fn bury(slot: &Slot, g: &mut Group) {
        g.log_offset = DEAD;
        slot.groups.remove(&g.id);
    }

    /// Appends records to the slot's log (under the caller's group lock, so
    /// log order is state order); await the completion for durability.
    fn persist(&self, slot: &Slot, recs: &[KeyValue]) -> Result<(i64, Completion), GroupLogError> {
        if crate::failpoint::active(PROTOBUF_RECORDS) {
            let old: Vec<KeyValue> = recs
                .iter()
                .filter_map(records::protobuf::from_kafka)
                .collect();
            return self.persist_raw(slot, &old);
        }
        self.persist_raw(slot, recs)
    }

    /// [`Self::persist`] of records exactly as given.
    fn persist_raw(
        &self,
        slot: &Slot,
        recs: &[KeyValue],
    ) -> Result<(i64, Completion), GroupLogError> {
        let data = records::batch(recs, now_ms())?;
        let infos = crate::batch::validate(&data, usize::MAX)
            .map_err(|e| records::RecordError::Batch(e.to_string()))?;
        Ok(self.wal.append(&slot.log, &data, &infos)?)
    }

    /// Persists in the background (the answer does not depend on it).
    fn persist_detached(&self, slot: &Slot, recs: &[KeyValue]) {
        match self.persist(slot, recs) {
            Ok((_, c)) => {
                tokio::spawn(async move {
                    if let Err(e) = wait_durable(c).await {
                        tracing::warn!(error = %e, "group snapshot not persisted");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "group snapshot not persisted"),
        }
    }

    /// Writes tombstones for the group's expired offsets
    /// (`offsets.retention.minutes`) and forgets them once the tombstones are
    /// durable, so an expiry that a reader saw survives a crash; a group left
    /// with neither members nor offsets is deleted (Kafka's cleanup does
    /// both). A commit made meanwhile is kept: it lies above the tombstones.
    fn expire_offsets(&self, slot: &Arc<Slot>, group: &Arc<Mutex<Group>>, g: &mut Group) {
        let expired = g.expired_offsets(self.cfg.offsets_retention, now_ms());
        if expired.is_empty() {
            return;
        }
        let mut recs: Vec<KeyValue> = expired
            .iter()
            .map(|(t, p)| records::offset(&g.id, t, *p, None))
            .collect();
        if g.unused_without(&expired) {
            recs.push(records::group_tombstone(&g.id));
        }
        let (tombstones_at, written) = match self.persist(slot, &recs) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(group = %g.id, error = %e, "offset expiry not persisted");
                return;
            }
        };
        let (slot, group) = (slot.clone(), group.clone());
        tokio::spawn(async move {
            if let Err(e) = wait_durable(written).await {
                tracing::warn!(error = %e, "offset expiry not persisted");
                return;
            }
            let mut g = lock(&group);
            if g.log_offset == DEAD {
                return;
            }
            g.forget_offsets(&expired, tombstones_at);
            tracing::info!(group = %g.id, offsets = expired.len(), "committed offsets expired");
            if g.is_unused() {
                Self::bury(&slot, &mut g);
            }
        });
    }

    /// Expires sessions and completes due rebalances, every 100 ms, and
    /// committed offsets every [`OFFSET_EXPIRY_TICKS`], until shutdown.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            ticks += 1;
            let now = Instant::now();
            for slot in self.slots.iter().map(|s| s.clone()).collect::<Vec<_>>() {
                let groups: Vec<_> = slot.groups.iter().map(|g| g.value().clone()).collect();
                for group in groups {
                    let mut g = lock(&group);
                    if g.log_offset == DEAD {
                        continue;
                    }
                    if g.tick(&self.cfg, now) {
                        let rec = records::group(&g, None, now_ms());
                        self.persist_detached(&slot, &[rec]);
                    }
                    if ticks.is_multiple_of(OFFSET_EXPIRY_TICKS) {
                        self.expire_offsets(&slot, &group, &mut g);
                    }
                    if g.unused_for(UNUSED_GROUP_RETENTION, now) {
                        Self::bury(&slot, &mut g);
                    }
                }
            }
        }
    }
}

/// The failpoint under which the coordinator writes the protobuf records of
/// earlier releases (tests of the upgrade to Kafka's schemas).
pub const PROTOBUF_RECORDS: &str = "groups.protobuf_records";

/// What a pre-Kafka-schema record was about.
enum LegacyKey {
    /// group, topic, partition
    Offset(String, String, i32),
    Group(String),
}

impl LegacyKey {
    fn of(r: &Replayed) -> Self {
        match r {
            Replayed::Offset {
                group,
                topic,
                partition,
                ..
            } => LegacyKey::Offset(group.clone(), topic.clone(), *partition),
            Replayed::Group { group, .. } => LegacyKey::Group(group.clone()),
        }
    }

    fn group(&self) -> &str {
        match self {
            LegacyKey::Offset(g, _, _) | LegacyKey::Group(g) => g,
        }
    }
}

/// How long a group without members and offsets stays listed (Kafka's
/// `offsets.retention.check.interval.ms` cleanup period).
const UNUSED_GROUP_RETENTION: Duration = Duration::from_secs(600);

/// Offsets expiry runs every this many timer ticks (5 s).
const OFFSET_EXPIRY_TICKS: u64 = 50;

/// Marks a group removed from its slot.
const DEAD: i64 = i64::MIN;

fn apply_replayed(slot: &Slot, log_offset: i64, r: Replayed, now: Instant) {
    let group_of = |id: &str| {
        slot.groups
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(id))))
            .clone()
    };
    match r {
        Replayed::Offset {
            group,
            topic,
            partition,
            value,
        } => {
            let g = group_of(&group);
            let mut g = lock(&g);
            match value {
                Some(v) => g.apply_commit(
                    &topic,
                    partition,
                    Committed {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                        commit_timestamp_ms: v.commit_timestamp_ms,
                        log_offset,
                    },
                ),
                None => {
                    g.offsets.remove(&(topic, partition));
                }
            }
        }
        Replayed::Group { group, value: None } => {
            slot.groups.remove(&group);
        }
        Replayed::Group {
            group,
            value: Some(v),
        } => {
            let g = group_of(&group);
            let mut g = lock(&g);
            let non_empty = |s: String| (!s.is_empty()).then_some(s);
            let members = v
                .members
                .into_iter()
                .map(|m| RestoredMember {
                    id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    metadata: m.subscription,
                    assignment: m.assignment,
                })
                .collect();
            g.restore_members(
                non_empty(v.protocol_type),
                non_empty(v.protocol_name),
                v.generation,
                non_empty(v.leader),
                members,
                now,
            );
            g.log_offset = log_offset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_apis_answer_moves_as_not_coordinator_and_failures_as_unavailable() {
        let moved = [WalError::NotOwner, WalError::Fenced, WalError::ShuttingDown];
        for e in moved {
            assert_eq!(
                GroupLogError::Wal(e).kafka_code(),
                ResponseError::NotCoordinator.code()
            );
        }
        let failed =
            GroupLogError::Wal(WalError::Storage(crate::objstore::ObjectError::Transient {
                key: "k".into(),
                reason: "503".into(),
            }));
        assert_eq!(
            failed.kafka_code(),
            ResponseError::CoordinatorNotAvailable.code()
        );
        assert_eq!(coordinator_code(0), 0);
    }
}
