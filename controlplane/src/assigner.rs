//! The partition assigner: keeps every partition owned by exactly one live
//! worker, moves as few partitions as possible when workers come and go, and
//! bumps a partition's assignment epoch on every move. A worker whose
//! registration says it is draining (control API `Drain`) is given nothing,
//! so its partitions move to the others.
//!
//! `plan` is a pure function (tested directly); `run` applies it whenever
//! topics or workers change.

use crate::metadata::{topic_uuid, MetaError, Metadata};
use futures::StreamExt;
use kafscale_proto::metadata::v1::Assignment;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// A partition: (topic id, partition index).
pub type PartitionId = (Uuid, i32);

/// Computes the assignments that must change so that every partition in
/// `partitions` is owned by one of `workers`, loads differ by at most one,
/// and partitions already on a live worker stay there unless balancing needs them.
pub fn plan(
    partitions: &[PartitionId],
    workers: &[String],
    current: &HashMap<PartitionId, Assignment>,
) -> Vec<(PartitionId, Assignment)> {
    if workers.is_empty() {
        return Vec::new();
    }
    let mut owner: BTreeMap<PartitionId, String> = BTreeMap::new();
    let mut load: BTreeMap<&str, Vec<PartitionId>> =
        workers.iter().map(|w| (w.as_str(), Vec::new())).collect();
    let mut orphans = Vec::new();
    for p in partitions {
        match current.get(p) {
            Some(a) if load.contains_key(a.worker_id.as_str()) => {
                if let Some(v) = load.get_mut(a.worker_id.as_str()) {
                    v.push(*p);
                }
                owner.insert(*p, a.worker_id.clone());
            }
            _ => orphans.push(*p),
        }
    }
    let least = |load: &BTreeMap<&str, Vec<PartitionId>>| -> Option<String> {
        load.iter()
            .min_by_key(|(w, v)| (v.len(), **w))
            .map(|(w, _)| w.to_string())
    };
    for p in orphans {
        if let Some(w) = least(&load) {
            if let Some(v) = load.get_mut(w.as_str()) {
                v.push(p);
            }
            owner.insert(p, w);
        }
    }
    // Balance: move from the most to the least loaded until within one.
    while let Some((max_w, max_n)) = load
        .iter()
        .max_by_key(|(w, v)| (v.len(), std::cmp::Reverse(**w)))
        .map(|(w, v)| (w.to_string(), v.len()))
    {
        let Some(min_w) = least(&load) else { break };
        let min_n = load.get(min_w.as_str()).map(Vec::len).unwrap_or(0);
        if max_n <= min_n + 1 {
            break;
        }
        let moved = load.get_mut(max_w.as_str()).and_then(Vec::pop);
        let Some(p) = moved else { break };
        if let Some(v) = load.get_mut(min_w.as_str()) {
            v.push(p);
        }
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

/// Applies one round of `plan` to the metadata; returns the number of moves.
pub async fn reconcile_once(meta: &Metadata) -> Result<usize, MetaError> {
    let topics = meta.list_topics().await?;
    let workers: Vec<String> = meta
        .list_workers()
        .await?
        .into_iter()
        .filter(|w| !w.draining)
        .map(|w| w.worker_id)
        .collect();
    let current: HashMap<PartitionId, Assignment> =
        meta.list_assignments().await?.into_iter().collect();
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
/// after every change to topics or workers (and periodically as a safety net).
pub async fn run(
    meta: Metadata,
    moves: prometheus::IntCounter,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MetaError> {
    let store = meta.store().clone();
    let mut topics = store.watch(&meta.keys().topics()).await?;
    let mut workers = store.watch(&meta.keys().workers()).await?;
    loop {
        match reconcile_once(&meta).await {
            Ok(n) if n > 0 => {
                moves.inc_by(n as u64);
                tracing::info!(moves = n, "assigner applied partition moves")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "assigner round failed"),
        }
        tokio::select! {
            _ = topics.next() => {}
            _ = workers.next() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
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

/// Runs the assigner while this process is the elected leader: campaigns
/// for the leader key under `lease`, assigns (and runs `also`) while it
/// holds it, and campaigns again when the key disappears (the leader's lease
/// lapsed). Returns on shutdown or when `lease` is lost.
pub async fn run_elected(
    meta: Metadata,
    candidate: String,
    lease: i64,
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
            .campaign(&key, bytes::Bytes::from(candidate.clone()), lease)
            .await
        {
            Ok(true) => {
                tracing::info!(candidate = %candidate, "elected assigner leader");
                let (stop_tx, stop) = watch::channel(false);
                let also = also.as_ref().map(|f| tokio::spawn(f(stop.clone())));
                let assigning = tokio::spawn(run(meta.clone(), moves.clone(), stop));
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
}
