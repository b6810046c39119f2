//! The history checker (tests/common_history) on synthetic histories: a
//! clean history reports no violation, and each planted violation (lost
//! acked record, wrong offset, phantom, idempotent duplicate, two values at
//! one offset, a commit going backwards, ...) is reported exactly, naming
//! the records involved.

mod common_history;

use common_history::{History, Report, Violation};

/// A clean history: two producers (one idempotent) over two partitions,
/// all acked and read back, a non-idempotent duplicate, a failed send
/// that landed, a gap, two groups committing forward.
fn clean() -> History {
    let h = History::new();
    let a = h.producer("a", true);
    let b = h.producer("b", false);
    for (i, (p, o)) in [(0, 0), (0, 1), (1, 0)].into_iter().enumerate() {
        let v = format!("a{i}");
        a.send(None, &v);
        a.ack(&v, p, o);
        h.read("c", p, o, &v);
    }
    b.send(Some(0), "b0");
    b.ack("b0", 0, 2);
    h.read("c", 0, 2, "b0");
    // b0's retry landed again, later, after a gap at 3 and 4.
    h.read("c", 0, 5, "b0");
    b.send(Some(1), "b1");
    b.error("b1", "timed out");
    h.read("c", 1, 1, "b1");
    // Read twice through another consumer: same values.
    h.read("d", 0, 0, "a0");
    h.read("d", 1, 1, "b1");
    h.commit("g", 0, 1);
    h.commit("g", 0, 3);
    h.commit("g", 0, 3);
    h.commit("g", 1, 0);
    h.commit("h", 0, 0);
    h
}

fn kinds(r: &Report) -> Vec<&'static str> {
    r.violations.iter().map(Violation::kind).collect()
}

#[test]
fn a_clean_history_has_no_violations() {
    let r = clean().check();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.sent, 5);
    assert_eq!(r.sent_idempotent, 3);
    assert_eq!(r.acked, 4);
    assert_eq!(r.errors, 1);
    assert_eq!(r.indeterminate, 0);
    assert_eq!(r.reads, 8);
    assert_eq!(r.offsets_read, 6);
    assert_eq!(r.records_read, 5);
    assert_eq!(r.unacked_read, 1);
    assert_eq!(r.duplicates, 1);
    assert_eq!(r.idempotent_duplicates, 0);
    assert_eq!((r.lost, r.wrong_offset, r.phantoms), (0, 0, 0));
    assert_eq!((r.gaps, r.gap_offsets), (1, 2));
    assert_eq!(r.commits, 5);
    assert_eq!(r.partitions[&0].last_offset, Some(5));
    let shown = r.to_string();
    assert!(shown.contains("violations: 0"), "{shown}");
}

#[test]
fn a_lost_acked_record_is_reported() {
    let h = clean();
    let a = h.producer("a", true);
    a.send(None, "a3");
    a.ack("a3", 1, 2);
    let r = h.check();
    assert_eq!(kinds(&r), ["lost_acked"], "{r}");
    assert_eq!(r.lost, 1);
    match &r.violations[0] {
        Violation::LostAcked { acked, found } => {
            assert_eq!((acked.partition, acked.offset), (1, 2));
            assert_eq!(acked.value, "a3");
            assert_eq!(acked.producer.as_deref(), Some("a"));
            assert_eq!(*found, None);
        }
        v => panic!("{v}"),
    }
}

/// Regression (long nemesis): librdkafka acknowledges an idempotent
/// producer's messages whose request timed out once a later request
/// succeeds, with offset -1001 (unknown). Four such acks in one partition
/// were reported as one offset acknowledged to four records and as records
/// read at the wrong offset.
#[test]
fn acks_without_an_offset_need_only_be_read_back_in_their_partition() {
    let h = clean();
    let a = h.producer("a#1", true);
    for (i, o) in [(3, 3), (4, 4)] {
        let v = format!("a{i}");
        a.send(Some(0), &v);
        a.ack(&v, 0, -1001);
        h.read("c", 0, o, &v);
    }
    let r = h.check();
    assert!(r.is_ok(), "{r}");
    assert_eq!((r.acked, r.acked_without_offset), (6, 2));
    // Still lost if it is read nowhere, and misplaced if it is read only in
    // another partition.
    a.send(Some(0), "a5");
    a.ack("a5", 0, -1001);
    a.send(None, "a6");
    a.ack("a6", 0, -1001);
    h.read("c", 1, 2, "a6");
    let r = h.check();
    let mut found = kinds(&r);
    found.sort();
    assert_eq!(found, ["acked_at_wrong_offset", "lost_acked"], "{r}");
}

#[test]
fn an_acked_record_at_another_offset_is_reported() {
    let h = clean();
    let b = h.producer("b", false);
    b.send(None, "b2");
    b.ack("b2", 1, 2);
    h.read("c", 1, 3, "b2");
    let r = h.check();
    assert_eq!(kinds(&r), ["acked_at_wrong_offset"], "{r}");
    assert_eq!(r.wrong_offset, 1);
    match &r.violations[0] {
        Violation::AckedAtWrongOffset { acked, read_at } => {
            assert_eq!(
                (acked.partition, acked.offset, acked.value.as_str()),
                (1, 2, "b2")
            );
            assert_eq!(read_at, &[3]);
        }
        v => panic!("{v}"),
    }
}

#[test]
fn a_phantom_record_is_reported() {
    let h = clean();
    h.read("c", 1, 2, "nobody-sent-this");
    let r = h.check();
    assert_eq!(kinds(&r), ["phantom"], "{r}");
    assert_eq!(r.phantoms, 1);
    match &r.violations[0] {
        Violation::Phantom { read } => {
            assert_eq!((read.partition, read.offset), (1, 2));
            assert_eq!(read.producer, None);
        }
        v => panic!("{v}"),
    }
}

#[test]
fn an_idempotent_duplicate_is_reported() {
    let h = clean();
    h.read("c", 1, 2, "a2");
    let r = h.check();
    assert_eq!(kinds(&r), ["idempotent_duplicate"], "{r}");
    assert_eq!(r.idempotent_duplicates, 1);
    match &r.violations[0] {
        Violation::IdempotentDuplicate { value, copies } => {
            assert_eq!(value, "a2");
            let at: Vec<_> = copies.iter().map(|c| (c.partition, c.offset)).collect();
            assert_eq!(at, [(1, 0), (1, 2)]);
        }
        v => panic!("{v}"),
    }
}

#[test]
fn two_values_at_one_offset_are_reported() {
    let h = clean();
    let b = h.producer("b", false);
    b.send(None, "x");
    b.send(None, "y");
    h.read("c", 1, 7, "x");
    h.read("d", 1, 7, "y");
    let r = h.check();
    assert_eq!(kinds(&r), ["conflicting_values"], "{r}");
    match &r.violations[0] {
        Violation::ConflictingValues {
            partition,
            offset,
            values,
        } => {
            assert_eq!((*partition, *offset), (1, 7));
            assert_eq!(values, &["x", "y"]);
        }
        v => panic!("{v}"),
    }
}

#[test]
fn a_commit_going_backwards_is_reported() {
    let h = clean();
    h.commit("g", 0, 2);
    let r = h.check();
    assert_eq!(kinds(&r), ["commit_backwards"], "{r}");
    assert_eq!(
        r.violations[0],
        Violation::CommitBackwards {
            group: "g".into(),
            partition: 0,
            from: 3,
            to: 2
        }
    );
}

#[test]
fn an_offset_acked_twice_is_reported() {
    let h = clean();
    let b = h.producer("b", false);
    b.send(None, "z");
    b.ack("z", 0, 1);
    h.read("c", 0, 8, "z");
    let r = h.check();
    // z is also not at its acked offset.
    assert_eq!(
        kinds(&r),
        ["offset_acked_twice", "acked_at_wrong_offset"],
        "{r}"
    );
}

#[test]
fn idempotent_records_out_of_send_order_are_reported() {
    let h = History::new();
    let a = h.producer("a", true);
    a.send(None, "first");
    a.send(None, "second");
    h.read("c", 0, 1, "first");
    h.read("c", 0, 0, "second");
    let r = h.check();
    assert_eq!(kinds(&r), ["idempotent_reordered"], "{r}");
}

#[test]
fn a_record_in_another_partition_than_chosen_is_reported() {
    let h = History::new();
    let a = h.producer("a", false);
    a.send(Some(2), "v");
    h.read("c", 3, 0, "v");
    let r = h.check();
    assert_eq!(kinds(&r), ["wrong_partition"], "{r}");
}

#[test]
fn recorders_are_thread_safe() {
    let h = History::new();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = h.producer(&format!("p{t}"), t % 2 == 0);
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let v = format!("p{t}-{i}");
                    p.send(Some(t), &v);
                    p.ack(&v, t, i);
                    h.read("c", t, i, &v);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("recorder thread");
    }
    let r = h.check();
    assert!(r.is_ok(), "{r}");
    assert_eq!((r.sent, r.acked, r.offsets_read), (2000, 2000, 2000));
    assert_eq!(h.acked(), 2000);
}
