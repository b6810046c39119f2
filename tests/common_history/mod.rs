//! A Jepsen-style history of one topic, recorded by the producers and
//! consumers of a test, and the checker that decides whether the log kept
//! its promises.
//!
//! Producers record every send (producer, idempotent or not, partition if
//! chosen, a value unique across the history), then its ack (partition and
//! offset) or its error; consumers record every record read (partition,
//! offset, value) and every committed or fetched group offset, in order.
//! [`History`] is thread-safe and cheap to clone (one shared log).
//!
//! [`History::check`] verifies, per partition:
//! - every acknowledged record is read back exactly at its acked offset
//!   (else *lost*, if it is read nowhere, or *wrong offset*); one
//!   acknowledged without an offset (librdkafka's implicit acknowledgement,
//!   offset -1001) must be read back somewhere in its partition;
//! - no offset holds two different values, and no offset was acknowledged
//!   to two different records;
//! - every record read was sent (no *phantoms*), in the partition it was
//!   sent to (when the sender chose one);
//! - a record of an idempotent producer appears at most once, and its
//!   records appear in the order they were sent (per partition);
//! - committed group offsets never go backwards (per group and partition,
//!   in recording order).
//!
//! Duplicates of non-idempotent producers are allowed (their retries may
//! land twice) but counted. Offsets read are not required to be dense: the
//! log has permanent gaps where a flush failed; a gap only matters if an
//! acknowledged record belongs there, which the ack check already reports.
//! Gaps are therefore a statistic ([`Report::gaps`]), never a violation.
//!
//! Test crates using it declare `mod common_history;`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A record handed to a producer client.
    Send {
        producer: String,
        idempotent: bool,
        /// The partition the sender chose, if it did.
        partition: Option<i32>,
        value: String,
    },
    /// The client reported the record durable at this position.
    Ack {
        producer: String,
        value: String,
        partition: i32,
        offset: i64,
    },
    /// The client reported the send failed (the record may still have landed).
    Error {
        producer: String,
        value: String,
        error: String,
    },
    /// A consumer read this record.
    Read {
        consumer: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// A group's committed offset for a partition (committed by a member,
    /// or fetched back), in the order observed.
    Commit {
        group: String,
        partition: i32,
        offset: i64,
    },
}

/// The shared, thread-safe event log of one topic.
#[derive(Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<Event>>>,
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("events", &self.lock().len())
            .finish()
    }
}

/// Records the sends of one producer.
#[derive(Clone, Debug)]
pub struct ProducerLog {
    history: History,
    id: String,
    idempotent: bool,
}

impl ProducerLog {
    /// The producer's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records a send; call it before handing the record to the client, in
    /// the order records are handed over.
    pub fn send(&self, partition: Option<i32>, value: &str) {
        self.history.push(Event::Send {
            producer: self.id.clone(),
            idempotent: self.idempotent,
            partition,
            value: value.to_string(),
        });
    }

    /// Records an acknowledgement.
    pub fn ack(&self, value: &str, partition: i32, offset: i64) {
        self.history.push(Event::Ack {
            producer: self.id.clone(),
            value: value.to_string(),
            partition,
            offset,
        });
    }

    /// Records a failed send.
    pub fn error(&self, value: &str, error: impl fmt::Display) {
        self.history.push(Event::Error {
            producer: self.id.clone(),
            value: value.to_string(),
            error: error.to_string(),
        });
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one event.
    pub fn push(&self, e: Event) {
        self.lock().push(e);
    }

    /// A recorder for producer `id`.
    pub fn producer(&self, id: &str, idempotent: bool) -> ProducerLog {
        ProducerLog {
            history: self.clone(),
            id: id.to_string(),
            idempotent,
        }
    }

    /// Records a read.
    pub fn read(&self, consumer: &str, partition: i32, offset: i64, value: &str) {
        self.push(Event::Read {
            consumer: consumer.to_string(),
            partition,
            offset,
            value: value.to_string(),
        });
    }

    /// Records a committed (or fetched-back) group offset.
    pub fn commit(&self, group: &str, partition: i32, offset: i64) {
        self.push(Event::Commit {
            group: group.to_string(),
            partition,
            offset,
        });
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// Number of acks recorded so far.
    pub fn acked(&self) -> usize {
        self.lock()
            .iter()
            .filter(|e| matches!(e, Event::Ack { .. }))
            .count()
    }

    /// Checks the history (see the module docs).
    pub fn check(&self) -> Report {
        check(&self.events())
    }
}

/// A record as the report names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
    /// The producer that sent it (`None` for a phantom).
    pub producer: Option<String>,
}

impl fmt::Display for Rec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}={:?} from {}",
            self.partition,
            self.offset,
            self.value,
            self.producer.as_deref().unwrap_or("nobody")
        )
    }
}

/// A broken promise, naming the records involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged record is read nowhere. `found` is what the acked
    /// offset holds instead, if it was read.
    LostAcked { acked: Rec, found: Option<String> },
    /// An acknowledged record was read, but not at its acked offset.
    AckedAtWrongOffset { acked: Rec, read_at: Vec<i64> },
    /// Two different records were acknowledged at the same offset.
    OffsetAckedTwice { first: Rec, second: Rec },
    /// One record acknowledged at two different positions.
    AckedTwice { first: Rec, second: Rec },
    /// One offset read with two different values.
    ConflictingValues {
        partition: i32,
        offset: i64,
        values: Vec<String>,
    },
    /// A record read that nobody sent.
    Phantom { read: Rec },
    /// A record read in another partition than the one it was sent to.
    WrongPartition { read: Rec, sent_to: i32 },
    /// A record of an idempotent producer appears more than once.
    IdempotentDuplicate { value: String, copies: Vec<Rec> },
    /// Records of one idempotent producer are stored out of send order.
    IdempotentReordered { earlier_sent: Rec, later_sent: Rec },
    /// A group's committed offset went backwards.
    CommitBackwards {
        group: String,
        partition: i32,
        from: i64,
        to: i64,
    },
    /// The same value was sent twice (a harness error: values must be unique).
    ValueSentTwice {
        value: String,
        producers: Vec<String>,
    },
}

impl Violation {
    /// A short stable name of the violation kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::LostAcked { .. } => "lost_acked",
            Violation::AckedAtWrongOffset { .. } => "acked_at_wrong_offset",
            Violation::OffsetAckedTwice { .. } => "offset_acked_twice",
            Violation::AckedTwice { .. } => "acked_twice",
            Violation::ConflictingValues { .. } => "conflicting_values",
            Violation::Phantom { .. } => "phantom",
            Violation::WrongPartition { .. } => "wrong_partition",
            Violation::IdempotentDuplicate { .. } => "idempotent_duplicate",
            Violation::IdempotentReordered { .. } => "idempotent_reordered",
            Violation::CommitBackwards { .. } => "commit_backwards",
            Violation::ValueSentTwice { .. } => "value_sent_twice",
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::LostAcked { acked, found } => match found {
                Some(v) => write!(f, "acked record {acked} is lost; its offset holds {v:?}"),
                None => write!(f, "acked record {acked} is lost; its offset was not read"),
            },
            Violation::AckedAtWrongOffset { acked, read_at } => {
                write!(f, "acked record {acked} was read at offsets {read_at:?}")
            }
            Violation::OffsetAckedTwice { first, second } => {
                write!(f, "one offset acked to two records: {first} and {second}")
            }
            Violation::AckedTwice { first, second } => {
                write!(f, "one record acked twice: {first} and {second}")
            }
            Violation::ConflictingValues {
                partition,
                offset,
                values,
            } => write!(f, "offset {partition}@{offset} read with values {values:?}"),
            Violation::Phantom { read } => write!(f, "phantom record {read} was never sent"),
            Violation::WrongPartition { read, sent_to } => {
                write!(f, "record {read} was sent to partition {sent_to}")
            }
            Violation::IdempotentDuplicate { value, copies } => write!(
                f,
                "idempotent record {value:?} stored {} times: {}",
                copies.len(),
                join(copies)
            ),
            Violation::IdempotentReordered {
                earlier_sent,
                later_sent,
            } => write!(
                f,
                "idempotent records out of send order: {earlier_sent} was sent before {later_sent}"
            ),
            Violation::CommitBackwards {
                group,
                partition,
                from,
                to,
            } => write!(
                f,
                "group {group:?} committed offset of partition {partition} went back from {from} to {to}"
            ),
            Violation::ValueSentTwice { value, producers } => {
                write!(f, "value {value:?} sent twice (by {producers:?})")
            }
        }
    }
}

/// Per-partition statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Distinct offsets read.
    pub offsets_read: u64,
    /// Records acknowledged in this partition.
    pub acked: u64,
    /// Lowest and highest offset read.
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    /// Ranges of offsets below the highest read that were never read.
    pub gaps: u64,
    /// Offsets in those ranges (from offset 0).
    pub gap_offsets: u64,
}

/// What [`History::check`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Records sent.
    pub sent: u64,
    /// Of which by idempotent producers.
    pub sent_idempotent: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Of which without an offset (negative in the delivery report).
    pub acked_without_offset: u64,
    /// Sends that failed.
    pub errors: u64,
    /// Sends with neither ack nor error recorded.
    pub indeterminate: u64,
    /// Read events (a record read twice counts twice).
    pub reads: u64,
    /// Distinct (partition, offset) positions read.
    pub offsets_read: u64,
    /// Distinct sent records read at least once.
    pub records_read: u64,
    /// Records read that were not acknowledged (failed or indeterminate
    /// sends that landed anyway).
    pub unacked_read: u64,
    /// Acknowledged records read nowhere.
    pub lost: u64,
    /// Acknowledged records read elsewhere than at their acked offset.
    pub wrong_offset: u64,
    /// Extra copies of non-idempotent records (allowed).
    pub duplicates: u64,
    /// Extra copies of idempotent records (violations).
    pub idempotent_duplicates: u64,
    /// Records read that were never sent.
    pub phantoms: u64,
    /// Gap ranges and offsets in them, all partitions.
    pub gaps: u64,
    pub gap_offsets: u64,
    /// Commit observations.
    pub commits: u64,
    /// Error messages of failed sends, by message, with counts.
    pub error_kinds: BTreeMap<String, u64>,
    /// Per partition.
    pub partitions: BTreeMap<i32, PartitionStats>,
    /// Every violation found (empty means the history is clean).
    pub violations: Vec<Violation>,
}

impl Report {
    /// True when no violation was found.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Violation kinds with their counts.
    pub fn violation_kinds(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for v in &self.violations {
            *out.entry(v.kind()).or_default() += 1;
        }
        out
    }

    /// Panics with the report when there are violations.
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "the history has violations:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history: sent {} ({} idempotent), acked {} ({} without offset), errors {}, \
             indeterminate {}",
            self.sent,
            self.sent_idempotent,
            self.acked,
            self.acked_without_offset,
            self.errors,
            self.indeterminate
        )?;
        writeln!(
            f,
            "  read {} events, {} offsets, {} distinct records ({} unacked that landed)",
            self.reads, self.offsets_read, self.records_read, self.unacked_read
        )?;
        writeln!(
            f,
            "  lost {}, wrong offset {}, duplicates {} (idempotent {}), phantoms {}, \
             gaps {} ({} offsets), commits {}",
            self.lost,
            self.wrong_offset,
            self.duplicates,
            self.idempotent_duplicates,
            self.phantoms,
            self.gaps,
            self.gap_offsets,
            self.commits
        )?;
        for (p, s) in &self.partitions {
            writeln!(
                f,
                "  partition {p}: acked {}, offsets read {} ({:?}..={:?}), gaps {} ({} offsets)",
                s.acked, s.offsets_read, s.first_offset, s.last_offset, s.gaps, s.gap_offsets
            )?;
        }
        for (e, n) in &self.error_kinds {
            writeln!(f, "  send error x{n}: {e}")?;
        }
        writeln!(f, "  violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(50) {
            writeln!(f, "    [{}] {v}", v.kind())?;
        }
        if self.violations.len() > 50 {
            writeln!(f, "    ... and {} more", self.violations.len() - 50)?;
        }
        Ok(())
    }
}

struct SendInfo {
    producer: String,
    idempotent: bool,
    partition: Option<i32>,
    /// Position of the send among its producer's sends.
    order: usize,
}

/// Checks `events` (see the module docs).
pub fn check(events: &[Event]) -> Report {
    let mut r = Report::default();
    let mut sent: HashMap<&str, SendInfo> = HashMap::new();
    let mut per_producer_sends: HashMap<&str, usize> = HashMap::new();
    // value -> first ack (partition, offset)
    let mut acks: HashMap<&str, (i32, i64)> = HashMap::new();
    let mut acked_at: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    let mut errored: BTreeSet<&str> = BTreeSet::new();
    // (partition, offset) -> values read there (distinct, in first-read order)
    let mut read_at: BTreeMap<(i32, i64), Vec<&str>> = BTreeMap::new();
    let mut commits: BTreeMap<(&str, i32), i64> = BTreeMap::new();

    let producer_of = |sent: &HashMap<&str, SendInfo>, v: &str| -> Option<String> {
        sent.get(v).map(|s| s.producer.clone())
    };

    for e in events {
        match e {
            Event::Send {
                producer,
                idempotent,
                partition,
                value,
            } => {
                r.sent += 1;
                if *idempotent {
                    r.sent_idempotent += 1;
                }
                let order = per_producer_sends.entry(producer).or_default();
                *order += 1;
                if let Some(prev) = sent.get(value.as_str()) {
                    r.violations.push(Violation::ValueSentTwice {
                        value: value.clone(),
                        producers: vec![prev.producer.clone(), producer.clone()],
                    });
                    continue;
                }
                sent.insert(
                    value,
                    SendInfo {
                        producer: producer.clone(),
                        idempotent: *idempotent,
                        partition: *partition,
                        order: *order,
                    },
                );
            }
            Event::Ack {
                producer,
                value,
                partition,
                offset,
            } => {
                let rec = |p: i32, o: i64, v: &str| Rec {
                    partition: p,
                    offset: o,
                    value: v.to_string(),
                    producer: Some(producer.clone()),
                };
                if let Some(&(p0, o0)) = acks.get(value.as_str()) {
                    if (p0, o0) != (*partition, *offset) {
                        r.violations.push(Violation::AckedTwice {
                            first: rec(p0, o0, value),
                            second: rec(*partition, *offset, value),
                        });
                    }
                    continue;
                }
                r.acked += 1;
                acks.insert(value, (*partition, *offset));
                r.partitions.entry(*partition).or_default().acked += 1;
                if *offset < 0 {
                    // Acknowledged without an offset: librdkafka's
                    // idempotent producer acknowledges messages of a
                    // request that timed out once a later one succeeds
                    // (the broker keeps sequences in order), reporting
                    // RD_KAFKA_OFFSET_INVALID (-1001). It must be read
                    // back in its partition, at any offset.
                    r.acked_without_offset += 1;
                    continue;
                }
                match acked_at.get(&(*partition, *offset)) {
                    Some(other) if *other != value.as_str() => {
                        r.violations.push(Violation::OffsetAckedTwice {
                            first: Rec {
                                partition: *partition,
                                offset: *offset,
                                value: other.to_string(),
                                producer: producer_of(&sent, other),
                            },
                            second: rec(*partition, *offset, value),
                        });
                    }
                    _ => {
                        acked_at.insert((*partition, *offset), value);
                    }
                }
            }
            Event::Error { value, error, .. } => {
                if errored.insert(value) {
                    r.errors += 1;
                    *r.error_kinds.entry(error.clone()).or_default() += 1;
                }
            }
            Event::Read {
                partition,
                offset,
                value,
                ..
            } => {
                r.reads += 1;
                let vs = read_at.entry((*partition, *offset)).or_default();
                if !vs.contains(&value.as_str()) {
                    vs.push(value);
                }
            }
            Event::Commit {
                group,
                partition,
                offset,
            } => {
                r.commits += 1;
                let last = commits
                    .entry((group.as_str(), *partition))
                    .or_insert(*offset);
                if *offset < *last {
                    r.violations.push(Violation::CommitBackwards {
                        group: group.clone(),
                        partition: *partition,
                        from: *last,
                        to: *offset,
                    });
                }
                *last = (*last).max(*offset);
            }
        }
    }
    r.indeterminate = sent
        .keys()
        .filter(|v| !acks.contains_key(*v) && !errored.contains(*v))
        .count() as u64;

    // Where each value was read: value -> positions.
    let mut positions: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (&(p, o), vs) in &read_at {
        if vs.len() > 1 {
            r.violations.push(Violation::ConflictingValues {
                partition: p,
                offset: o,
                values: vs.iter().map(|v| v.to_string()).collect(),
            });
        }
        for v in vs {
            positions.entry(v).or_default().push((p, o));
        }
    }
    r.offsets_read = read_at.len() as u64;

    // Per-partition offsets and gaps.
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(p, o) in read_at.keys() {
        by_partition.entry(p).or_default().push(o);
    }
    for (p, offsets) in &by_partition {
        let s = r.partitions.entry(*p).or_default();
        s.offsets_read = offsets.len() as u64;
        s.first_offset = offsets.first().copied();
        s.last_offset = offsets.last().copied();
        let mut expected = 0i64;
        for &o in offsets {
            if o > expected {
                s.gaps += 1;
                s.gap_offsets += (o - expected) as u64;
            }
            expected = o + 1;
        }
        r.gaps += s.gaps;
        r.gap_offsets += s.gap_offsets;
    }

    // Records read: phantoms, partitions, duplicates.
    let mut values: Vec<&&str> = positions.keys().collect();
    values.sort();
    for v in values {
        let at = &positions[*v];
        let rec_at = |&(p, o): &(i32, i64)| Rec {
            partition: p,
            offset: o,
            value: v.to_string(),
            producer: producer_of(&sent, v),
        };
        let Some(info) = sent.get(*v) else {
            r.phantoms += 1;
            for pos in at {
                r.violations.push(Violation::Phantom { read: rec_at(pos) });
            }
            continue;
        };
        r.records_read += 1;
        if !acks.contains_key(*v) {
            r.unacked_read += 1;
        }
        if let Some(sent_to) = info.partition {
            for pos in at.iter().filter(|(p, _)| *p != sent_to) {
                r.violations.push(Violation::WrongPartition {
                    read: rec_at(pos),
                    sent_to,
                });
            }
        }
        if at.len() > 1 {
            let extra = (at.len() - 1) as u64;
            if info.idempotent {
                r.idempotent_duplicates += extra;
                r.violations.push(Violation::IdempotentDuplicate {
                    value: v.to_string(),
                    copies: at.iter().map(rec_at).collect(),
                });
            } else {
                r.duplicates += extra;
            }
        }
    }

    // Acknowledged records.
    let mut acked: Vec<(&&str, &(i32, i64))> = acks.iter().collect();
    acked.sort_by_key(|(_, pos)| **pos);
    for (v, &(p, o)) in acked {
        let at = positions.get(*v).map(Vec::as_slice).unwrap_or(&[]);
        if at.contains(&(p, o)) || (o < 0 && at.iter().any(|(q, _)| *q == p)) {
            continue;
        }
        let acked = Rec {
            partition: p,
            offset: o,
            value: v.to_string(),
            producer: producer_of(&sent, v),
        };
        if at.is_empty() {
            r.lost += 1;
            let found = read_at
                .get(&(p, o))
                .and_then(|vs| vs.first())
                .map(|s| s.to_string());
            r.violations.push(Violation::LostAcked { acked, found });
        } else {
            r.wrong_offset += 1;
            r.violations.push(Violation::AckedAtWrongOffset {
                acked,
                read_at: at.iter().map(|(_, o)| *o).collect(),
            });
        }
    }

    // Idempotent producers' send order, per partition: each record's first
    // stored offset must grow with its send order.
    // (producer, partition) → (send order, first stored offset, value)
    type Stream<'a> = Vec<(usize, i64, &'a str)>;
    let mut streams: BTreeMap<(&str, i32), Stream> = BTreeMap::new();
    for (v, at) in &positions {
        let Some(info) = sent.get(*v) else { continue };
        if !info.idempotent {
            continue;
        }
        let Some(&(p, o)) = at.iter().min_by_key(|(_, o)| *o) else {
            continue;
        };
        streams
            .entry((info.producer.as_str(), p))
            .or_default()
            .push((info.order, o, *v));
    }
    for ((producer, p), mut recs) in streams {
        recs.sort();
        for w in recs.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.1 < a.1 {
                let rec = |(_, o, v): (usize, i64, &str)| Rec {
                    partition: p,
                    offset: o,
                    value: v.to_string(),
                    producer: Some(producer.to_string()),
                };
                r.violations.push(Violation::IdempotentReordered {
                    earlier_sent: rec(a),
                    later_sent: rec(b),
                });
            }
        }
    }
    r
}
