//! Assignment bookkeeping for `--mode rebalance`.
//!
//! Every group member reports its rebalance callbacks and (once per
//! assignment change) its first consumed record. The tracker keeps each
//! member's current assignment and decides when a measured *round* (a member
//! joining or leaving) is over:
//!
//! * **assigned**: every expected member is present; members that are not
//!   expected (the one leaving) hold nothing; the assignments are pairwise
//!   disjoint and together cover every partition; and every expected member
//!   holds `floor(P/M)` or `ceil(P/M)` partitions (`P` partitions, `M`
//!   expected members). The balance condition is what distinguishes the new
//!   assignment from the old one: with `P > M - 1` the old assignment of a
//!   join round leaves the new member empty, and the intermediate states of
//!   both protocols (eager: empty after revoke; cooperative: partitions
//!   revoked but not yet reassigned) are incomplete.
//! * **settled**: assigned, and every expected member has consumed a record
//!   after both the round's start and its own last assignment change.
//!
//! The instants recorded are those of the events (taken by the reporting
//! thread), not of any polling, so the round durations are exact up to the
//! callback dispatch inside the client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::stats::lock;

/// Outcome of a settled round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundTimes {
    /// Round start until every member held its new assignment.
    pub assigned: Duration,
    /// Round start until, in addition, every member consumed a record.
    pub settled: Duration,
    /// Partitions per expected member when the round settled, by member id.
    pub assignment_sizes: BTreeMap<usize, usize>,
}

/// State of one member as seen through its callbacks.
#[derive(Debug)]
struct Member {
    assignment: BTreeSet<i32>,
    /// Consumed a record since `reset_at`.
    consumed: bool,
    /// Last time `consumed` was cleared (assignment change or round start).
    reset_at: Instant,
    /// Tells the member's poll loop to report its next record.
    wants_record: Arc<AtomicBool>,
}

impl Member {
    fn reset(&mut self, at: Instant) {
        self.consumed = false;
        self.reset_at = at;
        self.wants_record.store(true, Ordering::Relaxed);
    }
}

/// The round being measured.
#[derive(Debug)]
struct Round {
    /// `None` until the clock starts (a leave round starts on the leaving
    /// member's thread).
    started: Option<Instant>,
    expected: BTreeSet<usize>,
    assigned_at: Option<Instant>,
    settled: Option<RoundTimes>,
}

#[derive(Debug)]
struct State {
    partitions: BTreeSet<i32>,
    members: BTreeMap<usize, Member>,
    round: Option<Round>,
}

/// Shared between the members' threads and the orchestrating thread.
#[derive(Debug)]
pub struct Tracker {
    state: Mutex<State>,
    changed: Condvar,
}

impl Tracker {
    /// Tracks assignments of `partitions` (the topic's partition ids).
    pub fn new(partitions: &[i32]) -> Self {
        Self {
            state: Mutex::new(State {
                partitions: partitions.iter().copied().collect(),
                members: BTreeMap::new(),
                round: None,
            }),
            changed: Condvar::new(),
        }
    }

    /// Adds member `id` with an empty assignment; `wants_record` is set
    /// whenever the member should report its next consumed record.
    pub fn register(&self, id: usize, wants_record: Arc<AtomicBool>, at: Instant) {
        let mut s = lock(&self.state);
        let mut m = Member {
            assignment: BTreeSet::new(),
            consumed: false,
            reset_at: at,
            wants_record,
        };
        m.reset(at);
        s.members.insert(id, m);
        self.evaluate(&mut s, at);
    }

    /// Begins a round that is over once exactly the members `expected` share
    /// the partitions. With `started == None` the clock starts at
    /// [`Self::start_clock`].
    pub fn begin_round(&self, expected: BTreeSet<usize>, started: Option<Instant>) {
        let mut s = lock(&self.state);
        s.round = Some(Round {
            started: None,
            expected,
            assigned_at: None,
            settled: None,
        });
        if let Some(at) = started {
            Self::start(&mut s, at);
            self.evaluate(&mut s, at);
        }
    }

    /// Starts the current round's clock at `at` (if not yet started).
    pub fn start_clock(&self, at: Instant) {
        let mut s = lock(&self.state);
        if s.round.as_ref().is_some_and(|r| r.started.is_none()) {
            Self::start(&mut s, at);
            self.evaluate(&mut s, at);
        }
    }

    fn start(s: &mut State, at: Instant) {
        if let Some(r) = s.round.as_mut() {
            r.started = Some(at);
        }
        for m in s.members.values_mut() {
            m.reset(at);
        }
    }

    /// Member `id` was given `partitions`: the whole new assignment (eager)
    /// or an addition to it (`incremental`, cooperative protocol).
    pub fn assigned(&self, id: usize, partitions: &[i32], incremental: bool, at: Instant) {
        self.change(id, at, |a| {
            if !incremental {
                a.clear();
            }
            a.extend(partitions.iter().copied());
        });
    }

    /// Member `id` lost `partitions` (`incremental`) or everything (eager).
    pub fn revoked(&self, id: usize, partitions: &[i32], incremental: bool, at: Instant) {
        self.change(id, at, |a| {
            if incremental {
                for p in partitions {
                    a.remove(p);
                }
            } else {
                a.clear();
            }
        });
    }

    /// Member `id` lost its assignment without a regular revoke (error).
    pub fn lost(&self, id: usize, at: Instant) {
        self.change(id, at, BTreeSet::clear);
    }

    fn change(&self, id: usize, at: Instant, f: impl FnOnce(&mut BTreeSet<i32>)) {
        let mut s = lock(&self.state);
        if let Some(m) = s.members.get_mut(&id) {
            f(&mut m.assignment);
            m.reset(at);
        }
        self.evaluate(&mut s, at);
    }

    /// Member `id` received a record at `at`. Only counts when `at` is after
    /// the member's last reset (a record taken just before a reset does not).
    pub fn consumed(&self, id: usize, at: Instant) {
        let mut s = lock(&self.state);
        match s.members.get_mut(&id) {
            Some(m) if at >= m.reset_at => m.consumed = true,
            Some(m) => {
                // Stale report; ask again for the next record.
                m.wants_record.store(true, Ordering::Relaxed);
                return;
            }
            None => return,
        }
        self.evaluate(&mut s, at);
    }

    /// Member `id` has closed and left.
    pub fn remove(&self, id: usize, at: Instant) {
        let mut s = lock(&self.state);
        s.members.remove(&id);
        self.evaluate(&mut s, at);
    }

    /// Ids of the registered members.
    pub fn member_ids(&self) -> BTreeSet<usize> {
        lock(&self.state).members.keys().copied().collect()
    }

    /// Waits until the current round settles or `deadline` passes; on
    /// timeout returns a description of what was still missing.
    pub fn wait_settled(&self, deadline: Instant) -> Result<RoundTimes, String> {
        let mut s = lock(&self.state);
        loop {
            if let Some(t) = s.round.as_ref().and_then(|r| r.settled.clone()) {
                return Ok(t);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(describe(&s));
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Re-checks the round conditions after an event at `at`.
    fn evaluate(&self, s: &mut State, at: Instant) {
        let Some(round) = s.round.as_ref() else {
            return;
        };
        let Some(started) = round.started else {
            return;
        };
        if round.settled.is_some() {
            return;
        }
        let assigned = is_assigned(&s.partitions, &s.members, &round.expected);
        let settled = assigned
            && round
                .expected
                .iter()
                .all(|id| s.members.get(id).is_some_and(|m| m.consumed));
        let sizes = settled.then(|| {
            round
                .expected
                .iter()
                .map(|id| (*id, s.members.get(id).map_or(0, |m| m.assignment.len())))
                .collect()
        });
        let Some(round) = s.round.as_mut() else {
            return;
        };
        if !assigned {
            round.assigned_at = None;
            return;
        }
        let assigned_at = *round.assigned_at.get_or_insert(at);
        if let Some(assignment_sizes) = sizes {
            round.settled = Some(RoundTimes {
                assigned: assigned_at.saturating_duration_since(started),
                settled: at.saturating_duration_since(started),
                assignment_sizes,
            });
            self.changed.notify_all();
        }
    }
}

/// The "assigned" condition described in the module documentation.
fn is_assigned(
    partitions: &BTreeSet<i32>,
    members: &BTreeMap<usize, Member>,
    expected: &BTreeSet<usize>,
) -> bool {
    if expected.is_empty() || !expected.iter().all(|id| members.contains_key(id)) {
        return false;
    }
    let n = expected.len();
    let (lo, hi) = (partitions.len() / n, partitions.len().div_ceil(n));
    let mut covered = BTreeSet::new();
    for (id, m) in members {
        if !expected.contains(id) {
            if !m.assignment.is_empty() {
                return false;
            }
            continue;
        }
        let len = m.assignment.len();
        if len < lo || len > hi {
            return false;
        }
        for p in &m.assignment {
            if !partitions.contains(p) || !covered.insert(*p) {
                return false;
            }
        }
    }
    covered.len() == partitions.len()
}

/// One-line state dump for timeout errors.
fn describe(s: &State) -> String {
    let members: Vec<String> = s
        .members
        .iter()
        .map(|(id, m)| {
            format!(
                "member {id}: {} partitions{}",
                m.assignment.len(),
                if m.consumed { "" } else { ", nothing consumed" }
            )
        })
        .collect();
    let expected = s
        .round
        .as_ref()
        .map(|r| format!("{:?}", r.expected))
        .unwrap_or_default();
    format!(
        "expected members {expected} over {} partitions; {}",
        s.partitions.len(),
        members.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(partitions: i32, members: usize, t: Instant) -> (Tracker, Vec<Arc<AtomicBool>>) {
        let ids: Vec<i32> = (0..partitions).collect();
        let tr = Tracker::new(&ids);
        let flags: Vec<_> = (0..members)
            .map(|id| {
                let f = Arc::new(AtomicBool::new(false));
                tr.register(id, Arc::clone(&f), t);
                f
            })
            .collect();
        (tr, flags)
    }

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    fn settled(tr: &Tracker) -> Option<RoundTimes> {
        tr.wait_settled(Instant::now()).ok()
    }

    #[test]
    fn eager_join_round() {
        let t = Instant::now();
        let (tr, flags) = tracker(6, 2, t);
        tr.begin_round([0, 1].into(), Some(t));
        tr.assigned(0, &[0, 1, 2], false, ms(t, 1));
        tr.assigned(1, &[3, 4, 5], false, ms(t, 2));
        assert!(flags.iter().all(|f| f.load(Ordering::Relaxed)));
        tr.consumed(0, ms(t, 3));
        assert_eq!(settled(&tr), None);
        tr.consumed(1, ms(t, 4));
        let r = settled(&tr).expect("settled");
        assert_eq!(r.assigned, Duration::from_millis(2));
        assert_eq!(r.settled, Duration::from_millis(4));

        // Member 2 joins at t+10: the old (balanced for 2) assignment does
        // not count, nor do records consumed before the round started.
        let f2 = Arc::new(AtomicBool::new(false));
        tr.register(2, Arc::clone(&f2), ms(t, 9));
        tr.begin_round([0, 1, 2].into(), Some(ms(t, 10)));
        tr.consumed(0, ms(t, 5)); // stale: before the round
        assert!(flags[0].load(Ordering::Relaxed));
        tr.revoked(0, &[], false, ms(t, 20));
        tr.revoked(1, &[], false, ms(t, 21));
        tr.assigned(2, &[4, 5], false, ms(t, 30));
        tr.assigned(0, &[0, 1], false, ms(t, 31));
        tr.consumed(0, ms(t, 32));
        tr.consumed(2, ms(t, 33));
        assert_eq!(settled(&tr), None);
        tr.assigned(1, &[2, 3], false, ms(t, 34));
        assert_eq!(settled(&tr), None); // member 1 has not consumed yet
        tr.consumed(1, ms(t, 40));
        let r = settled(&tr).expect("settled");
        assert_eq!(r.assigned, Duration::from_millis(24));
        assert_eq!(r.settled, Duration::from_millis(30));
        assert_eq!(r.assignment_sizes, [(0, 2), (1, 2), (2, 2)].into());
    }

    #[test]
    fn overlap_and_imbalance_are_not_assigned() {
        let t = Instant::now();
        let (tr, _) = tracker(4, 2, t);
        tr.begin_round([0, 1].into(), Some(t));
        tr.assigned(0, &[0, 1, 2], false, ms(t, 1));
        tr.assigned(1, &[2, 3], false, ms(t, 1));
        tr.consumed(0, ms(t, 2));
        tr.consumed(1, ms(t, 2));
        assert_eq!(settled(&tr), None, "overlap");
        tr.assigned(1, &[3], false, ms(t, 3));
        tr.consumed(1, ms(t, 4));
        assert_eq!(settled(&tr), None, "partition 2 twice");
        tr.assigned(0, &[0, 1, 2], false, ms(t, 5));
        tr.consumed(0, ms(t, 6));
        assert_eq!(settled(&tr), None, "3 + 1 is complete but unbalanced");
    }

    #[test]
    fn cooperative_leave_round() {
        let t = Instant::now();
        let (tr, _) = tracker(6, 3, t);
        tr.begin_round([0, 1, 2].into(), Some(t));
        tr.assigned(0, &[0, 1], true, ms(t, 1));
        tr.assigned(1, &[2, 3], true, ms(t, 1));
        tr.assigned(2, &[4, 5], true, ms(t, 1));
        for id in 0..3 {
            tr.consumed(id, ms(t, 2));
        }
        assert!(settled(&tr).is_some());

        // Member 2 leaves; the clock starts on its thread.
        tr.begin_round([0, 1].into(), None);
        tr.consumed(0, ms(t, 3)); // before the clock started: ignored
        tr.start_clock(ms(t, 10));
        tr.revoked(2, &[4, 5], true, ms(t, 11));
        tr.remove(2, ms(t, 12));
        tr.assigned(0, &[4], true, ms(t, 20));
        tr.consumed(0, ms(t, 21));
        assert_eq!(settled(&tr), None);
        tr.assigned(1, &[5], true, ms(t, 22));
        tr.consumed(1, ms(t, 25));
        let r = settled(&tr).expect("settled");
        assert_eq!(r.assigned, Duration::from_millis(12));
        assert_eq!(r.settled, Duration::from_millis(15));
    }

    #[test]
    fn leaving_member_must_give_up_its_partitions() {
        let t = Instant::now();
        let (tr, _) = tracker(2, 3, t);
        tr.assigned(2, &[0, 1], false, t);
        tr.begin_round([0, 1].into(), Some(t));
        tr.assigned(0, &[0], false, ms(t, 1));
        tr.assigned(1, &[1], false, ms(t, 1));
        tr.consumed(0, ms(t, 2));
        tr.consumed(1, ms(t, 2));
        assert_eq!(settled(&tr), None);
        tr.revoked(2, &[], false, ms(t, 3));
        assert_eq!(
            settled(&tr).map(|r| r.settled),
            Some(Duration::from_millis(3))
        );
        let err = Tracker::new(&[0]).wait_settled(Instant::now()).unwrap_err();
        assert!(err.contains("1 partitions"), "{err}");
    }
}
