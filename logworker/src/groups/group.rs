//! One consumer group under the classic protocol: membership, generations and
//! the state machine of Kafka's group coordinator (Empty, PreparingRebalance,
//! CompletingRebalance, Stable; a deleted group is simply removed, which is
//! Dead). Pure in-memory logic: no I/O; callers persist what it reports.
//!
//! Guarantees, as in Kafka: a JoinGroup waits until every known member has
//! rejoined or the rebalance timeout passed; the leader receives every
//! member's metadata for the selected protocol; the assignment the leader
//! sends in SyncGroup is delivered to each member verbatim; a member that
//! neither heartbeats nor waits on a join/sync is expired after its session
//! timeout; a static member (`group.instance.id`) that rejoins with unchanged
//! metadata while the group is Stable gets its assignment back without a
//! rebalance.

use bytes::Bytes;
use indexmap::IndexMap;
use std::collections::{BTreeMap, HashMap};
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

/// Error codes used by the group APIs.
pub mod codes {
    use kafka_protocol::error::ResponseError as E;
    pub const NONE: i16 = 0;
    pub const UNKNOWN_MEMBER_ID: i16 = E::UnknownMemberId.code();
    pub const ILLEGAL_GENERATION: i16 = E::IllegalGeneration.code();
    pub const REBALANCE_IN_PROGRESS: i16 = E::RebalanceInProgress.code();
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = E::InconsistentGroupProtocol.code();
    pub const INVALID_SESSION_TIMEOUT: i16 = E::InvalidSessionTimeout.code();
    pub const MEMBER_ID_REQUIRED: i16 = E::MemberIdRequired.code();
    pub const FENCED_INSTANCE_ID: i16 = E::FencedInstanceId.code();
    pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
    pub const COORDINATOR_NOT_AVAILABLE: i16 = E::CoordinatorNotAvailable.code();
}
use codes::*;

/// Group coordinator settings (Kafka's `group.*` broker settings).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an
    /// empty group waits for more members.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout: Duration,
    /// `offsets.retention.minutes`: how long committed offsets outlive an
    /// empty group (see [`Group::expired_offsets`]).
    pub offsets_retention: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout: Duration::from_millis(6000),
            max_session_timeout: Duration::from_millis(1_800_000),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The classic group states; a deleted group (Dead) is removed from its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup caller receives.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// (member id, group instance id, metadata): for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    /// A failed join.
    pub fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// What a SyncGroup caller receives.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    /// A failed sync.
    pub fn error(error: i16) -> Self {
        Self {
            error,
            ..Default::default()
        }
    }
}

/// One member of a group.
#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// Expiry time unless the member heartbeats or waits on a join/sync.
    deadline: Instant,
}

impl Member {
    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn keep_alive(&mut self, now: Instant) {
        self.deadline = now + self.session_timeout;
    }
}

/// A member as persisted in the coordinator log.
#[derive(Debug, Clone)]
pub struct RestoredMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// Metadata for the group's selected protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
    /// Offset of the log record that holds it: a replayed or late-applied
    /// commit never overwrites a newer one.
    pub log_offset: i64,
}

/// The arguments of a JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member must first get its id (KIP-394).
    pub require_known_member_id: bool,
}

/// How a JoinGroup proceeds.
pub enum JoinOutcome {
    /// Answer now.
    Now(JoinResult),
    /// Wait for the rebalance to complete.
    Wait(oneshot::Receiver<JoinResult>),
    /// A static member replaced its old member id while the group is Stable:
    /// persist the group, then answer with this.
    PersistThenAnswer(JoinResult),
}

/// How a SyncGroup proceeds.
pub enum SyncOutcome {
    Now(SyncResult),
    Wait(oneshot::Receiver<SyncResult>),
    /// The leader's assignment: persist the group with it, then call
    /// [`Group::complete_sync`]; the leader's answer comes through the receiver.
    Persist {
        generation: i32,
        assignments: HashMap<String, Bytes>,
        answer: oneshot::Receiver<SyncResult>,
    },
}

/// A consumer group.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// Members in join order.
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they rejoin.
    pending: HashMap<String, Instant>,
    /// group.instance.id → member id.
    statics: HashMap<String, String>,
    pub offsets: BTreeMap<(String, i32), Committed>,
    /// When PreparingRebalance completes at the latest.
    join_deadline: Option<Instant>,
    /// While the first rebalance of an empty group is delayed: its end.
    initial_join_end: Option<Instant>,
    /// Offset of the last group record applied during replay.
    pub log_offset: i64,
    /// Since when the group has had no members and no offsets.
    unused_since: Option<Instant>,
    /// Since when (wall clock, ms) the group has had no members.
    empty_since_ms: Option<i64>,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            offsets: BTreeMap::new(),
            join_deadline: None,
            initial_join_end: None,
            log_offset: -1,
            unused_since: None,
            empty_since_ms: None,
        }
    }

    /// After a replay: an empty group has been empty at least since its
    /// last commit (the moment it became empty is not persisted).
    pub fn replayed(&mut self) {
        if self.members.is_empty() {
            self.empty_since_ms = self.offsets.values().map(|c| c.commit_timestamp_ms).max();
        }
    }

    /// The committed offsets expired at `now_ms` (Kafka's rules, KIP-211):
    /// every offset of a group with a protocol (a consumer group) once it has
    /// been empty for `retention`; for a group without one (offsets committed
    /// by standalone consumers), each offset `retention` after its commit. A
    /// group with members keeps them all. They stay until
    /// [`Group::forget_offsets`] is called once their tombstones are durable.
    pub fn expired_offsets(&mut self, retention: Duration, now_ms: i64) -> Vec<(String, i32)> {
        if !self.members.is_empty() {
            self.empty_since_ms = None;
            return Vec::new();
        }
        let since = *self.empty_since_ms.get_or_insert(now_ms);
        let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let expired: Vec<(String, i32)> = match self.protocol_type {
            Some(_) if now_ms.saturating_sub(since) >= retention => {
                self.offsets.keys().cloned().collect()
            }
            Some(_) => Vec::new(),
            None => self
                .offsets
                .iter()
                .filter(|(_, c)| now_ms.saturating_sub(c.commit_timestamp_ms) >= retention)
                .map(|(k, _)| k.clone())
                .collect(),
        };
        expired
    }

    /// Forgets the offsets in `keys` whose commit record lies below
    /// `tombstones_at`, the log offset of their durable tombstones; a commit
    /// made after the tombstones were written is kept.
    pub fn forget_offsets(&mut self, keys: &[(String, i32)], tombstones_at: i64) {
        for k in keys {
            if self
                .offsets
                .get(k)
                .is_some_and(|c| c.log_offset < tombstones_at)
            {
                self.offsets.remove(k);
            }
        }
    }

    /// True if the group is Empty, has no members and would have no offsets
    /// left without `keys`.
    pub fn unused_without(&self, keys: &[(String, i32)]) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.offsets.keys().all(|k| keys.contains(k))
    }

    /// Restores a group from its persisted form: Stable if it has members.
    pub fn restore_members(
        &mut self,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        generation: i32,
        leader: Option<String>,
        members: Vec<RestoredMember>,
        now: Instant,
    ) {
        self.protocol_type = protocol_type;
        self.generation = generation;
        self.members.clear();
        self.statics.clear();
        self.pending.clear();
        let protocol = protocol_name.clone().unwrap_or_default();
        for m in members {
            if let Some(i) = &m.instance_id {
                self.statics.insert(i.clone(), m.id.clone());
            }
            self.members.insert(
                m.id.clone(),
                Member {
                    id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: m.session_timeout,
                    rebalance_timeout: m.rebalance_timeout,
                    protocols: vec![(protocol.clone(), m.metadata)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    deadline: now + m.session_timeout,
                },
            );
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
        } else {
            self.state = GroupState::Stable;
            self.protocol_name = protocol_name;
            self.leader = leader.filter(|l| self.members.contains_key(l));
            if self.leader.is_none() {
                self.leader = self.members.keys().next().cloned();
            }
        }
    }

    /// True when the group has neither members nor committed offsets.
    pub fn is_unused(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.offsets.is_empty()
    }

    /// True once the group has been unused for `retention` (Kafka removes
    /// such groups at its periodic cleanup; until then they are listed).
    pub fn unused_for(&mut self, retention: Duration, now: Instant) -> bool {
        if !self.is_unused() {
            self.unused_since = None;
            return false;
        }
        now.duration_since(*self.unused_since.get_or_insert(now)) >= retention
    }

    fn is_static_fenced(&self, instance_id: &Option<String>, member_id: &str) -> bool {
        match instance_id {
            Some(i) => matches!(self.statics.get(i), Some(m) if m != member_id),
            None => false,
        }
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut c: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            c.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        c
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    /// Each member votes for its most preferred common protocol; most votes
    /// wins, ties go to the leader's preference order.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let order: Vec<&str> = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .map(|m| m.protocols.iter().map(|(n, _)| n.as_str()).collect())
            .unwrap_or_else(|| candidates.iter().map(String::as_str).collect());
        let best = votes.values().copied().max()?;
        order
            .into_iter()
            .find(|p| votes.get(p) == Some(&best))
            .map(str::to_string)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn current_join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            skip_assignment: false,
            members,
        }
    }

    /// Handles a JoinGroup. `new_member_id` mints ids for new members.
    pub fn join(
        &mut self,
        cfg: &GroupConfig,
        args: JoinArgs,
        new_member_id: impl FnOnce(&str) -> String,
        now: Instant,
    ) -> JoinOutcome {
        if args.session_timeout < cfg.min_session_timeout
            || args.session_timeout > cfg.max_session_timeout
        {
            return JoinOutcome::Now(JoinResult::error(INVALID_SESSION_TIMEOUT, &args.member_id));
        }
        if !self.supports(&args.protocol_type, &args.protocols) {
            return JoinOutcome::Now(JoinResult::error(
                INCONSISTENT_GROUP_PROTOCOL,
                &args.member_id,
            ));
        }
        if args.member_id.is_empty() {
            return self.join_unknown(cfg, args, new_member_id, now);
        }
        if self.pending.remove(&args.member_id).is_some() {
            return JoinOutcome::Wait(self.add_member(cfg, args.member_id.clone(), args, now));
        }
        if self.is_static_fenced(&args.instance_id, &args.member_id) {
            return JoinOutcome::Now(JoinResult::error(FENCED_INSTANCE_ID, &args.member_id));
        }
        if !self.members.contains_key(&args.member_id) {
            return JoinOutcome::Now(JoinResult::error(UNKNOWN_MEMBER_ID, &args.member_id));
        }
        let id = args.member_id.clone();
        match self.state {
            GroupState::Empty => {
                JoinOutcome::Now(JoinResult::error(UNKNOWN_MEMBER_ID, &args.member_id))
            }
            GroupState::PreparingRebalance => {
                let rx = self.update_member(&id, &args, now);
                self.try_complete_join(now);
                JoinOutcome::Wait(rx)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let unchanged = self
                    .members
                    .get(&id)
                    .is_some_and(|m| m.protocols == args.protocols);
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                let stable = self.state == GroupState::Stable;
                if unchanged && !(stable && is_leader) {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.keep_alive(now);
                    }
                    JoinOutcome::Now(self.current_join_result(&id))
                } else {
                    let rx = self.update_member(&id, &args, now);
                    self.prepare_rebalance(cfg, now);
                    self.try_complete_join(now);
                    JoinOutcome::Wait(rx)
                }
            }
        }
    }

    fn join_unknown(
        &mut self,
        cfg: &GroupConfig,
        args: JoinArgs,
        new_member_id: impl FnOnce(&str) -> String,
        now: Instant,
    ) -> JoinOutcome {
        let prefix = args.instance_id.clone().unwrap_or(args.client_id.clone());
        let new_id = new_member_id(&prefix);
        if let Some(instance) = args.instance_id.clone() {
            if let Some(old) = self.statics.get(&instance).cloned() {
                return self.replace_static_member(cfg, &instance, &old, new_id, args, now);
            }
            return JoinOutcome::Wait(self.add_member(cfg, new_id, args, now));
        }
        if args.require_known_member_id {
            self.pending
                .insert(new_id.clone(), now + args.session_timeout);
            return JoinOutcome::Now(JoinResult::error(MEMBER_ID_REQUIRED, &new_id));
        }
        JoinOutcome::Wait(self.add_member(cfg, new_id, args, now))
    }

    fn replace_static_member(
        &mut self,
        cfg: &GroupConfig,
        instance: &str,
        old_id: &str,
        new_id: String,
        args: JoinArgs,
        now: Instant,
    ) -> JoinOutcome {
        let current_leader = self.leader.clone().unwrap_or_default();
        let Some(mut member) = self.members.shift_remove(old_id) else {
            self.statics.remove(instance);
            return JoinOutcome::Wait(self.add_member(cfg, new_id, args, now));
        };
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinResult::error(FENCED_INSTANCE_ID, old_id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncResult::error(FENCED_INSTANCE_ID));
        }
        let old_protocols = std::mem::take(&mut member.protocols);
        member.id = new_id.clone();
        self.statics.insert(instance.to_string(), new_id.clone());
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        let rx = self.update_member(&new_id, &args, now);
        match self.state {
            GroupState::Stable => {
                let unchanged =
                    old_protocols == args.protocols || self.select_protocol() == self.protocol_name;
                if unchanged {
                    if let Some(m) = self.members.get_mut(&new_id) {
                        m.join_waiter = None;
                    }
                    JoinOutcome::PersistThenAnswer(JoinResult {
                        error: NONE,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        leader: current_leader,
                        member_id: new_id,
                        skip_assignment: false,
                        members: Vec::new(),
                    })
                } else {
                    self.prepare_rebalance(cfg, now);
                    self.try_complete_join(now);
                    JoinOutcome::Wait(rx)
                }
            }
            GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now);
                self.try_complete_join(now);
                JoinOutcome::Wait(rx)
            }
            GroupState::PreparingRebalance | GroupState::Empty => {
                self.try_complete_join(now);
                JoinOutcome::Wait(rx)
            }
        }
    }

    fn add_member(
        &mut self,
        cfg: &GroupConfig,
        id: String,
        args: JoinArgs,
        now: Instant,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(args.protocol_type.clone());
        }
        if let Some(i) = &args.instance_id {
            self.statics.insert(i.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: args.instance_id,
                client_id: args.client_id,
                client_host: args.client_host,
                session_timeout: args.session_timeout,
                rebalance_timeout: args.rebalance_timeout,
                protocols: args.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(tx),
                sync_waiter: None,
                deadline: now + args.session_timeout,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        if let Some(end) = self.initial_join_end {
            // The delayed first rebalance waits a little longer for more members.
            self.join_deadline = Some((now + cfg.initial_rebalance_delay).min(end));
        }
        self.prepare_rebalance(cfg, now);
        self.try_complete_join(now);
        rx
    }

    fn update_member(
        &mut self,
        id: &str,
        args: &JoinArgs,
        now: Instant,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(id) {
            m.protocols = args.protocols.clone();
            m.session_timeout = args.session_timeout;
            m.rebalance_timeout = args.rebalance_timeout;
            m.client_id = args.client_id.clone();
            m.client_host = args.client_host.clone();
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinResult::error(REBALANCE_IN_PROGRESS, id));
            }
            m.keep_alive(now);
        }
        rx
    }

    fn prepare_rebalance(&mut self, cfg: &GroupConfig, now: Instant) {
        match self.state {
            GroupState::PreparingRebalance => return,
            GroupState::CompletingRebalance => self.reset_assignments(REBALANCE_IN_PROGRESS),
            GroupState::Empty if !cfg.initial_rebalance_delay.is_zero() => {
                let end = now + self.max_rebalance_timeout();
                self.initial_join_end = Some(end);
                self.join_deadline = Some((now + cfg.initial_rebalance_delay).min(end));
                self.state = GroupState::PreparingRebalance;
                return;
            }
            GroupState::Empty | GroupState::Stable => {}
        }
        self.initial_join_end = None;
        self.join_deadline = Some(now + self.max_rebalance_timeout());
        self.state = GroupState::PreparingRebalance;
    }

    fn reset_assignments(&mut self, error: i16) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(error));
            }
        }
    }

    /// Completes the join phase if everyone rejoined or the deadline passed.
    /// Returns true when the group became Empty (its record should be persisted).
    pub fn try_complete_join(&mut self, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let due = self.join_deadline.is_some_and(|d| now >= d);
        let ready = self.initial_join_end.is_none() && self.all_joined();
        if due || ready {
            self.complete_join(now)
        } else {
            false
        }
    }

    fn complete_join(&mut self, now: Instant) -> bool {
        self.join_deadline = None;
        self.initial_join_end = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.drop_member(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            return true;
        }
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.current_join_result(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.keep_alive(now);
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
        false
    }

    fn drop_member(&mut self, id: &str) {
        if let Some(m) = self.members.shift_remove(id) {
            if let Some(i) = &m.instance_id {
                if self.statics.get(i).map(String::as_str) == Some(id) {
                    self.statics.remove(i);
                }
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// Removes a member (leave or expiry) and rebalances as Kafka does.
    /// Returns true when the group became Empty.
    fn remove_member(&mut self, cfg: &GroupConfig, id: &str, now: Instant) -> bool {
        self.drop_member(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now);
                self.try_complete_join(now)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty => false,
        }
    }

    /// Handles a SyncGroup.
    pub fn sync(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
        protocol: (&Option<String>, &Option<String>),
        assignments: HashMap<String, Bytes>,
        now: Instant,
    ) -> SyncOutcome {
        let now_err = |e| SyncOutcome::Now(SyncResult::error(e));
        if self.is_static_fenced(instance_id, member_id) {
            return now_err(FENCED_INSTANCE_ID);
        }
        if !self.members.contains_key(member_id) {
            return now_err(UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation {
            return now_err(ILLEGAL_GENERATION);
        }
        let (ptype, pname) = protocol;
        if ptype
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || pname
                .as_ref()
                .is_some_and(|n| Some(n) != self.protocol_name.as_ref())
        {
            return now_err(INCONSISTENT_GROUP_PROTOCOL);
        }
        match self.state {
            GroupState::Empty => now_err(UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => now_err(REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let result = self.sync_result(member_id);
                if let Some(m) = self.members.get_mut(member_id) {
                    m.keep_alive(now);
                }
                SyncOutcome::Now(result)
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.keep_alive(now);
                    if let Some(old) = m.sync_waiter.replace(tx) {
                        let _ = old.send(SyncResult::error(REBALANCE_IN_PROGRESS));
                    }
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut full: HashMap<String, Bytes> = self
                        .members
                        .keys()
                        .map(|id| (id.clone(), Bytes::new()))
                        .collect();
                    for (id, a) in assignments {
                        if full.contains_key(&id) {
                            full.insert(id, a);
                        }
                    }
                    SyncOutcome::Persist {
                        generation: self.generation,
                        assignments: full,
                        answer: rx,
                    }
                } else {
                    SyncOutcome::Wait(rx)
                }
            }
        }
    }

    fn sync_result(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Applies the leader's assignment once it is durable (`error == NONE`),
    /// or propagates the failure and rebalances. Ignored if the group moved on.
    pub fn complete_sync(
        &mut self,
        cfg: &GroupConfig,
        generation: i32,
        assignments: HashMap<String, Bytes>,
        error: i16,
        now: Instant,
    ) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        if error != NONE {
            self.reset_assignments(error);
            self.prepare_rebalance(cfg, now);
            self.try_complete_join(now);
            return;
        }
        for (id, a) in assignments {
            if let Some(m) = self.members.get_mut(&id) {
                m.assignment = a;
            }
        }
        self.state = GroupState::Stable;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.sync_result(&id);
            if let Some(w) = self.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                let _ = w.send(result);
            }
        }
    }

    /// Handles a Heartbeat; returns its error code.
    pub fn heartbeat(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
        now: Instant,
    ) -> i16 {
        if self.is_static_fenced(instance_id, member_id) {
            return FENCED_INSTANCE_ID;
        }
        if self.state == GroupState::Empty || !self.members.contains_key(member_id) {
            return UNKNOWN_MEMBER_ID;
        }
        if generation != self.generation {
            return ILLEGAL_GENERATION;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.keep_alive(now);
        }
        match self.state {
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }

    /// Handles one member of a LeaveGroup; returns (error, became_empty).
    pub fn leave(
        &mut self,
        cfg: &GroupConfig,
        member_id: &str,
        instance_id: &Option<String>,
        now: Instant,
    ) -> (i16, bool) {
        let id = match instance_id {
            Some(i) => match self.statics.get(i) {
                None => return (UNKNOWN_MEMBER_ID, false),
                Some(m) if !member_id.is_empty() && m != member_id => {
                    return (FENCED_INSTANCE_ID, false)
                }
                Some(m) => m.clone(),
            },
            None => {
                if self.pending.remove(member_id).is_some() {
                    return (NONE, false);
                }
                member_id.to_string()
            }
        };
        if !self.members.contains_key(&id) {
            return (UNKNOWN_MEMBER_ID, false);
        }
        let empty = self.remove_member(cfg, &id, now);
        (NONE, empty)
    }

    /// Checks an OffsetCommit against the membership (Kafka's rules): returns
    /// NONE when the commit may proceed, else the error for every partition.
    pub fn check_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
        now: Instant,
    ) -> i16 {
        if self.is_static_fenced(instance_id, member_id) {
            return FENCED_INSTANCE_ID;
        }
        if generation < 0 && self.state == GroupState::Empty {
            return NONE;
        }
        if self.state == GroupState::CompletingRebalance {
            return REBALANCE_IN_PROGRESS;
        }
        if !self.members.contains_key(member_id) {
            return UNKNOWN_MEMBER_ID;
        }
        if generation != self.generation {
            return ILLEGAL_GENERATION;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.keep_alive(now);
        }
        NONE
    }

    /// Records a durable commit unless a newer one for the partition is known.
    pub fn apply_commit(&mut self, topic: &str, partition: i32, c: Committed) {
        let key = (topic.to_string(), partition);
        match self.offsets.get(&key) {
            Some(old) if old.log_offset > c.log_offset => {}
            _ => {
                self.offsets.insert(key, c);
            }
        }
    }

    /// Expires members and pending member ids whose session lapsed, and
    /// completes a join whose deadline passed. Returns true when the group
    /// became Empty.
    pub fn tick(&mut self, cfg: &GroupConfig, now: Instant) -> bool {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none() && m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        let mut empty = false;
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            empty |= self.remove_member(cfg, &id, now);
        }
        empty | self.try_complete_join(now)
    }

    /// Fails every waiting join and sync (the coordinator is going away).
    pub fn abandon(&mut self, error: i16) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(error, &m.id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(error));
            }
        }
    }

    /// Topics the members subscribe to, when the group uses the consumer
    /// protocol and the subscriptions decode; `None` if unknown.
    pub fn subscribed_topics(&self) -> Option<std::collections::HashSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut out = std::collections::HashSet::new();
        for m in self.members.values() {
            let mut md = m.metadata(&protocol);
            if md.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([md[0], md[1]]);
            let _ = bytes::Buf::get_i16(&mut md);
            let sub = ConsumerProtocolSubscription::decode(&mut md, version.clamp(0, 3)).ok()?;
            out.extend(sub.topics.into_iter().map(|t| t.to_string()));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            ..Default::default()
        }
    }

    fn args(member: &str, protocols: &[&str]) -> JoinArgs {
        JoinArgs {
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn join_now(g: &mut Group, a: JoinArgs, id: &str, now: Instant) -> JoinOutcome {
        let id = id.to_string();
        g.join(&cfg(), a, move |_| id, now)
    }

    fn expect_now(o: JoinOutcome) -> JoinResult {
        match o {
            JoinOutcome::Now(r) => r,
            _ => panic!("expected an immediate answer"),
        }
    }

    fn expect_wait(o: JoinOutcome) -> oneshot::Receiver<JoinResult> {
        match o {
            JoinOutcome::Wait(r) => r,
            _ => panic!("expected to wait"),
        }
    }

    /// Two members join through MEMBER_ID_REQUIRED; returns their ids.
    fn two_members(g: &mut Group, now: Instant) -> (String, String) {
        let r = expect_now(join_now(g, args("", &["range"]), "a", now));
        assert_eq!(r.error, MEMBER_ID_REQUIRED);
        let mut rx_a = expect_wait(join_now(g, args("a", &["range", "rr"]), "x", now));
        // a is alone: it completes at once.
        let ra = rx_a.try_recv().expect("join completes");
        assert_eq!((ra.leader.as_str(), ra.generation), ("a", 1));
        let r = expect_now(join_now(g, args("", &["rr", "range"]), "b", now));
        assert_eq!(r.error, MEMBER_ID_REQUIRED);
        let mut rx_b = expect_wait(join_now(g, args("b", &["rr", "range"]), "x", now));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(rx_b.try_recv().is_err(), "waits for a to rejoin");
        let mut rx_a = expect_wait(join_now(g, args("a", &["range", "rr"]), "x", now));
        let ra = rx_a.try_recv().expect("a joined");
        let rb = rx_b.try_recv().expect("b joined");
        assert_eq!(ra.generation, 2);
        assert_eq!(ra.members.len(), 2, "leader gets every member");
        assert!(rb.members.is_empty());
        (ra.member_id, rb.member_id)
    }

    #[test]
    fn join_sync_and_leave() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let (a, b) = two_members(&mut g, now);
        // Tie on votes: the leader's preference wins.
        assert_eq!(g.protocol_name.as_deref(), Some("range"));
        let none = (&None, &None);
        let SyncOutcome::Wait(mut rx_b) = g.sync(2, &b, &None, none, HashMap::new(), now) else {
            panic!("follower waits")
        };
        let assignments: HashMap<_, _> = [
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ]
        .into();
        let SyncOutcome::Persist {
            generation,
            assignments,
            mut answer,
        } = g.sync(2, &a, &None, none, assignments, now)
        else {
            panic!("leader persists")
        };
        g.complete_sync(&cfg(), generation, assignments, NONE, now);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(answer.try_recv().unwrap().assignment, "A");
        assert_eq!(rx_b.try_recv().unwrap().assignment, "B");
        assert_eq!(g.heartbeat(2, &b, &None, now), NONE);
        assert_eq!(g.heartbeat(1, &b, &None, now), ILLEGAL_GENERATION);
        assert_eq!(g.heartbeat(2, "zz", &None, now), UNKNOWN_MEMBER_ID);
        assert_eq!(g.leave(&cfg(), &b, &None, now), (NONE, false));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(2, &a, &None, now), REBALANCE_IN_PROGRESS);
        assert_eq!(g.leave(&cfg(), &a, &None, now), (NONE, true));
        assert_eq!(g.state, GroupState::Empty);
    }

    #[test]
    fn expiry_and_commit_rules() {
        let now = Instant::now();
        let mut g = Group::new("g");
        assert_eq!(g.check_commit(-1, "", &None, now), NONE, "admin commit");
        let (a, b) = two_members(&mut g, now);
        assert_eq!(g.check_commit(-1, "", &None, now), REBALANCE_IN_PROGRESS);
        let _ = (a, b);
        // Neither member heartbeats or waits: both expire and the group empties.
        let later = now + Duration::from_secs(11);
        assert!(g.tick(&cfg(), later));
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 3);
    }

    #[test]
    fn static_member_rejoins_without_rebalance() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let mut a = args("", &["range"]);
        a.instance_id = Some("i1".into());
        let mut rx = expect_wait(join_now(&mut g, a.clone(), "s1", now));
        let r = rx.try_recv().unwrap();
        assert_eq!(r.member_id, "s1");
        let SyncOutcome::Persist {
            generation,
            assignments,
            ..
        } = g.sync(
            1,
            "s1",
            &Some("i1".into()),
            (&None, &None),
            [("s1".to_string(), Bytes::from_static(b"X"))].into(),
            now,
        )
        else {
            panic!()
        };
        g.complete_sync(&cfg(), generation, assignments, NONE, now);
        let JoinOutcome::PersistThenAnswer(r) = join_now(&mut g, a, "s2", now) else {
            panic!("no rebalance for an unchanged static member")
        };
        assert_eq!((r.member_id.as_str(), r.generation), ("s2", 1));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(
            g.heartbeat(1, "s1", &Some("i1".into()), now),
            FENCED_INSTANCE_ID
        );
        assert_eq!(g.heartbeat(1, "s2", &Some("i1".into()), now), NONE);
        match g.sync(1, "s2", &None, (&None, &None), HashMap::new(), now) {
            SyncOutcome::Now(r) => assert_eq!(r.assignment, "X"),
            _ => panic!(),
        }
    }

    #[test]
    fn inconsistent_protocols_are_refused() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let (_a, _b) = two_members(&mut g, now);
        let mut other = args("", &["cooperative-sticky"]);
        other.require_known_member_id = false;
        let r = expect_now(join_now(&mut g, other, "c", now));
        assert_eq!(r.error, INCONSISTENT_GROUP_PROTOCOL);
        let mut wrong_type = args("", &["range"]);
        wrong_type.protocol_type = "connect".into();
        let r = expect_now(join_now(&mut g, wrong_type, "c", now));
        assert_eq!(r.error, INCONSISTENT_GROUP_PROTOCOL);
    }

    #[test]
    fn unused_groups_stay_for_the_retention_period() {
        let now = Instant::now();
        let ten_min = Duration::from_secs(600);
        let mut g = Group::new("g");
        assert!(!g.unused_for(ten_min, now));
        assert!(!g.unused_for(ten_min, now + Duration::from_secs(599)));
        assert!(g.unused_for(ten_min, now + Duration::from_secs(600)));
    }
}
