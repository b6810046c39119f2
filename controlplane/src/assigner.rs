//! The partition assigner: keeps every partition owned by exactly one live
//! worker, moves as few partitions as possible when workers come and go, and
//! bumps a partition's assignment epoch on every move. A worker whose
//! registration says it is draining (control API `Drain`) is given nothing,
//! so its partitions move to the others.
//!
//! Which workers own partitions at all is the [`Placement`]'s choice:
//! `spread` uses every assignable worker; `pack` only as many as the
//! cluster's ingest rate needs, so a lightly loaded cluster does not pay one
//! WAL stream (and its PUTs) per worker (docs/architecture.md, "PUT cost and
//! the number of workers").
//!
//! Workers that join one after another (a cluster starting or restarting
//! all at once, a scale-out) are waited for ([`JoinSettle`]), so each
//! partition is placed once on the final set of workers instead of on the
//! first to arrive and then moved, mid-open, as the others register.
//!
//! `active_workers`, `plan` and the join window are pure (tested directly);
//! `run` applies them whenever topics or workers change.

use crate::metadata::{topic_uuid, MetaError, Metadata};
use futures::StreamExt;
use kafscale_proto::metadata::v1::Assignment;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// A partition: (topic id, partition index).
pub type PartitionId = (Uuid, i32);

/// How the assigner chooses the workers that own partitions
/// (`KAFSCALE_PLACEMENT`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    /// Every assignable worker owns partitions.
    Spread,
    /// Only as many workers own partitions as the cluster's ingest rate
    /// needs at `worker_bytes_per_sec` each (at least one). More are taken
    /// as soon as the rate needs them; fewer only once the rate would fit
    /// in fewer at half that figure each, so a rate near a boundary does
    /// not move partitions back and forth.
    Pack {
        /// The ingest rate one worker is given before another is taken.
        worker_bytes_per_sec: u64,
    },
}

/// The names [`Placement::named`] accepts.
pub const PLACEMENT_NAMES: [&str; 2] = ["spread", "pack"];

/// A placement name that is neither `spread` nor `pack`.
#[derive(Debug, thiserror::Error)]
#[error("unknown placement {0:?} (spread or pack)")]
pub struct UnknownPlacement(String);

impl Placement {
    /// The placement called `name`; `pack` gives each worker
    /// `worker_bytes_per_sec` (at least 1).
    pub fn named(name: &str, worker_bytes_per_sec: u64) -> Result<Self, UnknownPlacement> {
        match name {
            "spread" => Ok(Placement::Spread),
            "pack" => Ok(Placement::Pack {
                worker_bytes_per_sec: worker_bytes_per_sec.max(1),
            }),
            other => Err(UnknownPlacement(other.to_string())),
        }
    }
}

/// An assignable worker and its reported ingest rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLoad {
    /// The worker's id.
    pub worker_id: String,
    /// Its smoothed ingest rate, bytes per second.
    pub bytes_per_sec: u64,
}

/// The workers that are to own partitions under `placement`, out of
/// `workers` (all assignable). `pack` keeps the workers that already own
/// the most partitions, so a change of their number moves as few as it can.
pub fn active_workers(
    placement: Placement,
    workers: &[WorkerLoad],
    current: &HashMap<PartitionId, Assignment>,
) -> Vec<String> {
    let Placement::Pack {
        worker_bytes_per_sec: per_worker,
    } = placement
    else {
        return workers.iter().map(|w| w.worker_id.clone()).collect();
    };
    let mut owned: HashMap<&str, usize> = HashMap::new();
    for a in current.values() {
        *owned.entry(a.worker_id.as_str()).or_default() += 1;
    }
    let owned_by = |w: &WorkerLoad| owned.get(w.worker_id.as_str()).copied().unwrap_or(0);
    let total: u64 = workers.iter().map(|w| w.bytes_per_sec).sum();
    let per_worker = per_worker.max(1);
    let needed = |per: u64| total.div_ceil(per.max(1)).max(1) as usize;
    let grow = needed(per_worker);
    let shrink = needed(per_worker / 2);
    let now = workers.iter().filter(|w| owned_by(w) > 0).count();
    let count = if now == 0 || grow > now {
        grow
    } else {
        now.min(shrink)
    };
    let mut ranked: Vec<&WorkerLoad> = workers.iter().collect();
    ranked.sort_by(|a, b| {
        owned_by(b)
            .cmp(&owned_by(a))
            .then_with(|| a.worker_id.cmp(&b.worker_id))
    });
    ranked
        .into_iter()
        .take(count)
        .map(|w| w.worker_id.clone())
        .collect()
}

/// The partitions each worker is given while a plan is made, with counts per
/// topic.
struct Loads {
    owned: BTreeMap<String, Vec<PartitionId>>,
    /// Partitions per topic, by worker.
    per_topic: HashMap<String, HashMap<Uuid, usize>>,
}

impl Loads {
    fn new(workers: &[String]) -> Self {
        Self {
            owned: workers.iter().map(|w| (w.clone(), Vec::new())).collect(),
            per_topic: HashMap::new(),
        }
    }

    fn has(&self, w: &str) -> bool {
        self.owned.contains_key(w)
    }

    fn of_topic(&self, w: &str, topic: Uuid) -> usize {
        self.per_topic
            .get(w)
            .and_then(|t| t.get(&topic))
            .copied()
            .unwrap_or(0)
    }

    fn add(&mut self, w: &str, p: PartitionId) {
        if let Some(v) = self.owned.get_mut(w) {
            v.push(p);
            *self
                .per_topic
                .entry(w.to_string())
                .or_default()
                .entry(p.0)
                .or_default() += 1;
        }
    }

    /// The least loaded worker and its load (the first by id among equals).
    fn least(&self) -> Option<(String, usize)> {
        self.owned
            .iter()
            .min_by_key(|(w, v)| (v.len(), *w))
            .map(|(w, v)| (w.clone(), v.len()))
    }

    /// The most loaded worker and its load (the first by id among equals).
    fn most(&self) -> Option<(String, usize)> {
        self.owned
            .iter()
            .max_by_key(|(w, v)| (v.len(), std::cmp::Reverse(*w)))
            .map(|(w, v)| (w.clone(), v.len()))
    }

    /// The worker a new partition of `topic` goes to: the least loaded,
    /// and among those the one holding the fewest of `topic`.
    fn least_for(&self, topic: Uuid) -> Option<String> {
        self.owned
            .iter()
            .min_by_key(|(w, v)| (v.len(), self.of_topic(w, topic), *w))
            .map(|(w, _)| w.clone())
    }

    /// Takes from `from` the partition to move to `to`: the one whose topic
    /// `from` holds the most more of than `to` (the latest given among
    /// equals).
    fn take_for(&mut self, from: &str, to: &str) -> Option<PartitionId> {
        let v = self.owned.get(from)?;
        let (at, p) = v.iter().enumerate().max_by_key(|(i, p)| {
            let surplus = self.of_topic(from, p.0) as i64 - self.of_topic(to, p.0) as i64;
            (surplus, *i)
        })?;
        let p = *p;
        if let Some(v) = self.owned.get_mut(from) {
            v.remove(at);
        }
        if let Some(n) = self.per_topic.get_mut(from).and_then(|t| t.get_mut(&p.0)) {
            *n = n.saturating_sub(1);
        }
        Some(p)
    }
}

/// Computes the assignments that must change so that every partition in
/// `partitions` is owned by one of `workers`, loads differ by at most one,
/// and partitions already on a live worker stay there unless balancing needs them.
/// Among the choices that keep those, a topic's partitions go to the workers
/// holding the fewest of that topic, so one topic's load is spread, not only
/// the count (Kafka spreads each topic's leaders likewise).
pub fn plan(
    partitions: &[PartitionId],
    workers: &[String],
    current: &HashMap<PartitionId, Assignment>,
) -> Vec<(PartitionId, Assignment)> {
    if workers.is_empty() {
        return Vec::new();
    }
    let mut owner: BTreeMap<PartitionId, String> = BTreeMap::new();
    let mut load = Loads::new(workers);
    let mut orphans = Vec::new();
    for p in partitions {
        match current.get(p) {
            Some(a) if load.has(&a.worker_id) => {
                load.add(&a.worker_id, *p);
                owner.insert(*p, a.worker_id.clone());
            }
            _ => orphans.push(*p),
        }
    }
    for p in orphans {
        if let Some(w) = load.least_for(p.0) {
            load.add(&w, p);
            owner.insert(p, w);
        }
    }
    // Balance: move from the most to the least loaded until within one,
    // each time the partition whose topic the source holds most more of.
    while let (Some((max_w, max_n)), Some((min_w, min_n))) = (load.most(), load.least()) {
        if max_n <= min_n + 1 {
            break;
        }
        let Some(p) = load.take_for(&max_w, &min_w) else {
            break;
        };
        load.add(&min_w, p);
        owner.insert(p, min_w);
    }
    owner
        .into_iter()
        .filter_map(|(p, w)| {
            let prev = current.get(&p);
            match prev {
                Some(a) if a.worker_id == w => None,
                _ => Some((
                    p,
                    Assignment {
                        worker_id: w,
                        epoch: prev.map(|a| a.epoch).unwrap_or(0) + 1,
                    },
                )),
            }
        })
        .collect()
}

/// How long planning waits for workers that join one after another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JoinSettle {
    /// Planning waits until no worker has joined for this long ...
    pub quiet: Duration,
    /// ... but never longer than this after the first of them joined.
    pub max_wait: Duration,
}

impl JoinSettle {
    /// Plans at once: one process owns everything (`kafscale dev`).
    pub const NONE: JoinSettle = JoinSettle {
        quiet: Duration::ZERO,
        max_wait: Duration::ZERO,
    };
    /// Distributed mode: workers started together register within about a
    /// second of each other. A worker leaving is planned for at once; only a
    /// newly elected leader waits its first second (all workers it sees are
    /// new to it), so the failover of the leader's own partitions takes
    /// that second longer.
    pub const CLUSTER: JoinSettle = JoinSettle {
        quiet: Duration::from_secs(1),
        max_wait: Duration::from_secs(5),
    };
}

/// The assignable workers seen last, and the open join window.
#[derive(Debug)]
struct Joins {
    settle: JoinSettle,
    known: HashSet<String>,
    /// (first join, last join) of the window, while one is open.
    window: Option<(Instant, Instant)>,
}

impl Joins {
    fn new(settle: JoinSettle) -> Self {
        Self {
            settle,
            known: HashSet::new(),
            window: None,
        }
    }

    /// Records the assignable workers seen at `now`: one not seen before
    /// opens a window, or extends the open one. Leaving, draining and rate
    /// reports open none.
    fn observe(&mut self, workers: &[WorkerLoad], now: Instant) {
        let ids: HashSet<String> = workers.iter().map(|w| w.worker_id.clone()).collect();
        if ids.iter().any(|id| !self.known.contains(id)) {
            let first = self.window.map_or(now, |(first, _)| first);
            self.window = Some((first, now));
        }
        self.known = ids;
    }

    /// `None` when planning may go ahead at `now` (the window, if any, is
    /// closed); else the instant it may.
    fn hold_until(&mut self, now: Instant) -> Option<Instant> {
        let (first, last) = self.window?;
        let until = (last + self.settle.quiet).min(first + self.settle.max_wait);
        if now >= until {
            self.window = None;
            return None;
        }
        Some(until)
    }
}

/// The workers that may be given partitions (registered, not draining),
/// with their reported rates.
async fn assignable_workers(meta: &Metadata) -> Result<Vec<WorkerLoad>, MetaError> {
    Ok(meta
        .list_workers()
        .await?
        .into_iter()
        .filter(|w| !w.draining)
        .map(|w| WorkerLoad {
            worker_id: w.worker_id,
            bytes_per_sec: w.ingest_bytes_per_sec,
        })
        .collect())
}

/// Applies one round of `active_workers` and `plan` to the metadata for
/// the `assignable` workers; returns the number of moves.
async fn reconcile(
    meta: &Metadata,
    placement: Placement,
    assignable: &[WorkerLoad],
) -> Result<usize, MetaError> {
    let topics = meta.list_topics().await?;
    let current: HashMap<PartitionId, Assignment> =
        meta.list_assignments().await?.into_iter().collect();
    let workers = active_workers(placement, assignable, &current);
    let mut names = HashMap::new();
    let mut partitions = Vec::new();
    for t in &topics {
        let id = topic_uuid(t);
        names.insert(id, t.name.clone());
        partitions.extend((0..t.partitions).map(|p| (id, p)));
    }
    let changes = plan(&partitions, &workers, &current);
    let mut moves = 0;
    for ((id, p), a) in changes {
        if let Some(name) = names.get(&id) {
            if meta.put_assignment(name, id, p, &a).await? {
                moves += 1;
            }
        }
    }
    Ok(moves)
}

/// Runs the assigner until `shutdown` flips to true: reconciles at start and
/// after every change to topics or workers (a worker's reported rate is
/// one), and periodically as a safety net; while workers are joining, it
/// waits as `settle` says first.
pub async fn run(
    meta: Metadata,
    placement: Placement,
    settle: JoinSettle,
    moves: prometheus::IntCounter,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MetaError> {
    let store = meta.store().clone();
    let mut topics = store.watch(&meta.keys().topics()).await?;
    let mut workers = store.watch(&meta.keys().workers()).await?;
    let mut joins = Joins::new(settle);
    loop {
        let safety_net = Instant::now() + Duration::from_secs(5);
        let wake = match assignable_workers(&meta).await {
            Err(e) => {
                tracing::warn!(error = %e, "assigner round failed");
                safety_net
            }
            Ok(assignable) => {
                joins.observe(&assignable, Instant::now());
                if let Some(until) = joins.hold_until(Instant::now()) {
                    tracing::debug!("workers are joining; planning waits for them");
                    until
                } else {
                    match reconcile(&meta, placement, &assignable).await {
                        Ok(0) => {}
                        Ok(n) => {
                            moves.inc_by(n as u64);
                            tracing::info!(moves = n, "assigner applied partition moves");
                        }
                        Err(e) => tracing::warn!(error = %e, "assigner round failed"),
                    }
                    safety_net
                }
            }
        };
        tokio::select! {
            _ = topics.next() => {}
            _ = workers.next() => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// The counter of partition moves (`kafscale_assignment_moves_total`),
/// registered in `registry`.
pub fn moves_counter(registry: &prometheus::Registry) -> prometheus::IntCounter {
    let c = prometheus::IntCounter::new(
        "kafscale_assignment_moves_total",
        "Partition and coordinator-slot assignments changed by this process's assigner",
    )
    .expect("valid metric");
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::warn!(error = %e, "assignment moves metric not registered");
    }
    c
}

/// A task that runs only on the elected leader (besides assigning), until
/// its stop signal.
pub type LeaderTask =
    Box<dyn Fn(watch::Receiver<bool>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A process campaigning to be the assigner leader.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The value of the leader key while it leads (its worker id).
    pub id: String,
    /// The etcd lease the leader key is held under.
    pub lease: i64,
}

/// Runs the assigner while this process is the elected leader: campaigns
/// for the leader key under the candidate's lease, assigns (and runs `also`)
/// while it holds it, and campaigns again when the key disappears (the
/// leader's lease lapsed). Returns on shutdown or when the lease is lost.
pub async fn run_elected(
    meta: Metadata,
    candidate: Candidate,
    placement: Placement,
    moves: prometheus::IntCounter,
    also: Option<LeaderTask>,
    mut lease_lost: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let store = meta.store().clone();
    let key = meta.keys().assigner_leader();
    loop {
        if *shutdown.borrow() || *lease_lost.borrow() {
            return;
        }
        let mut leader_changes = match store.watch(&key).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the assigner leader key");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match store
            .campaign(
                &key,
                bytes::Bytes::from(candidate.id.clone()),
                candidate.lease,
            )
            .await
        {
            Ok(true) => {
                tracing::info!(candidate = %candidate.id, "elected assigner leader");
                let (stop_tx, stop) = watch::channel(false);
                let also = also.as_ref().map(|f| tokio::spawn(f(stop.clone())));
                let assigning = tokio::spawn(run(
                    meta.clone(),
                    placement,
                    JoinSettle::CLUSTER,
                    moves.clone(),
                    stop,
                ));
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = lease_lost.changed() => {}
                }
                stop_tx.send_replace(true);
                let _ = assigning.await;
                if let Some(a) = also {
                    let _ = a.await;
                }
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "assigner campaign failed"),
        }
        tokio::select! {
            _ = leader_changes.next() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
            _ = lease_lost.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(n: i32) -> Vec<PartitionId> {
        let id = Uuid::from_u128(1);
        (0..n).map(|p| (id, p)).collect()
    }

    fn workers(ids: &[&str]) -> Vec<WorkerLoad> {
        ids.iter()
            .map(|id| WorkerLoad {
                worker_id: id.to_string(),
                bytes_per_sec: 0,
            })
            .collect()
    }

    #[test]
    fn workers_joining_one_after_another_are_waited_for_up_to_the_maximum() {
        let mut j = Joins::new(JoinSettle::CLUSTER);
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        j.observe(&workers(&["w0"]), s(0));
        assert_eq!(j.hold_until(s(0)), Some(s(1000)));
        j.observe(&workers(&["w0", "w1"]), s(600));
        assert_eq!(
            j.hold_until(s(600)),
            Some(s(1600)),
            "a join extends the wait"
        );
        // A rate report or a repeated listing is no join.
        j.observe(&workers(&["w0", "w1"]), s(900));
        assert_eq!(j.hold_until(s(900)), Some(s(1600)));
        // One more every 900 ms: the wait never passes the maximum.
        let mut ids = vec!["w0".to_string(), "w1".to_string()];
        for (i, at) in [1500, 2400, 3300, 4200].into_iter().enumerate() {
            ids.push(format!("w{}", i + 2));
            let now: Vec<&str> = ids.iter().map(String::as_str).collect();
            j.observe(&workers(&now), s(at));
            assert_eq!(j.hold_until(s(at)), Some(s(at + 1000).min(s(5000))));
        }
        assert_eq!(j.hold_until(s(5000)), None);
        j.observe(&workers(&["w0", "w1", "w2", "w3", "w4", "w5"]), s(5001));
        assert_eq!(j.hold_until(s(5001)), None, "the window stays closed");
    }

    #[test]
    fn a_worker_leaving_never_holds_planning_and_nothing_holds_in_dev() {
        let mut j = Joins::new(JoinSettle::CLUSTER);
        let t0 = Instant::now();
        j.observe(&workers(&["w0", "w1", "w2"]), t0);
        assert_eq!(j.hold_until(t0 + Duration::from_secs(2)), None);
        let t1 = t0 + Duration::from_secs(3);
        j.observe(&workers(&["w0", "w2"]), t1);
        assert_eq!(j.hold_until(t1), None, "a failover is planned at once");
        // The same id back (a restart after its lease lapsed) is a join.
        j.observe(&workers(&["w0", "w1", "w2"]), t1);
        assert_eq!(j.hold_until(t1), Some(t1 + Duration::from_secs(1)));
        let mut dev = Joins::new(JoinSettle::NONE);
        dev.observe(&workers(&["w0"]), t0);
        assert_eq!(dev.hold_until(t0), None);
    }

    fn apply(
        cur: &mut HashMap<PartitionId, Assignment>,
        ch: Vec<(PartitionId, Assignment)>,
    ) -> usize {
        let n = ch.len();
        for (p, a) in ch {
            cur.insert(p, a);
        }
        n
    }

    #[test]
    fn spreads_evenly_and_moves_few_on_join_and_leave() {
        let ps = parts(12);
        let mut cur = HashMap::new();
        let ws: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let ch = plan(&ps, &ws, &cur);
        assert_eq!(apply(&mut cur, ch), 12);
        let count = |cur: &HashMap<PartitionId, Assignment>, w: &str| {
            cur.values().filter(|a| a.worker_id == w).count()
        };
        assert!(ws.iter().all(|w| count(&cur, w) == 4));
        // A fourth worker takes exactly three partitions.
        let ws4: Vec<String> = vec!["a".into(), "b".into(), "c".into(), "d".into()];
        let ch = plan(&ps, &ws4, &cur);
        assert_eq!(apply(&mut cur, ch), 3);
        assert_eq!(count(&cur, "d"), 3);
        // Worker b leaves: only its partitions move, epochs bump.
        let before = cur.clone();
        let ws3: Vec<String> = vec!["a".into(), "c".into(), "d".into()];
        let moved = plan(&ps, &ws3, &cur);
        assert!(moved
            .iter()
            .all(|(p, a)| before[p].worker_id == "b" && a.epoch == before[p].epoch + 1));
        apply(&mut cur, moved);
        assert_eq!(count(&cur, "b"), 0);
        assert!(plan(&ps, &ws3, &cur).is_empty(), "stable once balanced");
    }

    fn loads(rates: &[(&str, u64)]) -> Vec<WorkerLoad> {
        rates
            .iter()
            .map(|(w, r)| WorkerLoad {
                worker_id: w.to_string(),
                bytes_per_sec: *r,
            })
            .collect()
    }

    const MB: u64 = 1_000_000;
    const PACK: Placement = Placement::Pack {
        worker_bytes_per_sec: 20 * MB,
    };

    /// Runs `active_workers` and `plan` once and applies the moves.
    fn round(
        ps: &[PartitionId],
        ws: &[WorkerLoad],
        cur: &mut HashMap<PartitionId, Assignment>,
    ) -> usize {
        let active = active_workers(PACK, ws, cur);
        let ch = plan(ps, &active, cur);
        apply(cur, ch)
    }

    fn owners(cur: &HashMap<PartitionId, Assignment>) -> std::collections::BTreeSet<String> {
        cur.values().map(|a| a.worker_id.clone()).collect()
    }

    #[test]
    fn spread_uses_every_worker_whatever_the_rate() {
        let ws = loads(&[("a", 0), ("b", 0), ("c", 0)]);
        assert_eq!(
            active_workers(Placement::Spread, &ws, &HashMap::new()),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn pack_puts_an_idle_or_light_cluster_on_one_worker() {
        let ps = parts(12);
        let mut cur = HashMap::new();
        round(&ps, &loads(&[("a", 0), ("b", 0), ("c", 0)]), &mut cur);
        assert_eq!(owners(&cur).len(), 1);
        // 15 MB/s in all fits one worker at 20 MB/s: nothing moves.
        let ws = loads(&[("a", 15 * MB), ("b", 0), ("c", 0)]);
        assert_eq!(round(&ps, &ws, &mut cur), 0);
    }

    #[test]
    fn pack_takes_workers_as_the_rate_needs_them_and_gives_them_back_with_hysteresis() {
        let ps = parts(12);
        let mut cur = HashMap::new();
        round(&ps, &loads(&[("a", 0), ("b", 0), ("c", 0)]), &mut cur);
        let first: Vec<String> = owners(&cur).into_iter().collect();
        assert_eq!(first, vec!["a"]);
        // 45 MB/s needs three workers at 20 MB/s: half of the partitions...
        let ws = loads(&[("a", 45 * MB), ("b", 0), ("c", 0)]);
        assert_eq!(round(&ps, &ws, &mut cur), 8, "a keeps 4 of its 12");
        assert_eq!(owners(&cur).len(), 3);
        // 25 MB/s would fit two at 20, but not two at half of it: stay.
        let ws = loads(&[("a", 9 * MB), ("b", 8 * MB), ("c", 8 * MB)]);
        assert_eq!(round(&ps, &ws, &mut cur), 0);
        // 15 MB/s fits two at 10 MB/s each: give one back (the last by
        // id among equals), and only its partitions move.
        let before = cur.clone();
        let ws = loads(&[("a", 5 * MB), ("b", 5 * MB), ("c", 5 * MB)]);
        let moved = round(&ps, &ws, &mut cur);
        assert_eq!(moved, 4);
        assert_eq!(owners(&cur).len(), 2);
        assert!(before
            .iter()
            .filter(|(p, a)| cur[*p].worker_id != a.worker_id)
            .all(|(_, a)| a.worker_id == "c"));
        // Idle: back to one worker; then stable.
        let ws = loads(&[("a", 0), ("b", 0), ("c", 0)]);
        round(&ps, &ws, &mut cur);
        assert_eq!(owners(&cur).len(), 1);
        assert_eq!(round(&ps, &ws, &mut cur), 0, "stable once packed");
    }

    /// How many of `topic`'s partitions each of `ws` owns.
    fn spread_of(cur: &HashMap<PartitionId, Assignment>, topic: u128, ws: &[&str]) -> Vec<usize> {
        ws.iter()
            .map(|w| {
                cur.iter()
                    .filter(|(p, a)| p.0 == Uuid::from_u128(topic) && a.worker_id == *w)
                    .count()
            })
            .collect()
    }

    #[test]
    fn each_topic_is_spread_when_partitions_are_placed_or_moved() {
        let topic = |id: u128, n: i32| (0..n).map(move |p| (Uuid::from_u128(id), p));
        let ws = ["a", "b", "c"];
        let names: Vec<String> = ws.iter().map(|w| w.to_string()).collect();
        // A big topic first, then a small one on the balanced workers.
        let mut ps: Vec<PartitionId> = topic(1, 50).collect();
        let mut cur = HashMap::new();
        let ch = plan(&ps, &names, &cur);
        apply(&mut cur, ch);
        ps.extend(topic(2, 6));
        let ch = plan(&ps, &names, &cur);
        apply(&mut cur, ch);
        assert_eq!(spread_of(&cur, 2, &ws), vec![2, 2, 2]);
        // Both packed on one worker, then spread over three: each topic is
        // spread, not only the counts.
        let mut packed = HashMap::new();
        let ch = plan(&ps, &names[..1], &packed);
        apply(&mut packed, ch);
        let ch = plan(&ps, &names, &packed);
        let moved = apply(&mut packed, ch);
        assert_eq!(moved, 56 - 19, "a keeps its share of 56");
        assert_eq!(spread_of(&packed, 2, &ws), vec![2, 2, 2]);
        let big = spread_of(&packed, 1, &ws);
        assert!(big.iter().all(|n| (16..=17).contains(n)), "{big:?}");
    }

    #[test]
    fn pack_never_asks_for_more_workers_than_there_are() {
        let ps = parts(4);
        let mut cur = HashMap::new();
        round(&ps, &loads(&[("a", 500 * MB), ("b", 0)]), &mut cur);
        assert_eq!(owners(&cur).len(), 2);
    }

    #[test]
    fn placement_names() {
        assert_eq!(
            Placement::named("spread", 5).expect("spread"),
            Placement::Spread
        );
        assert_eq!(
            Placement::named("pack", 0).expect("pack"),
            Placement::Pack {
                worker_bytes_per_sec: 1
            }
        );
        assert!(Placement::named("packed", 5).is_err());
    }
}
