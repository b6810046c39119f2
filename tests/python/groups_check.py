#!/usr/bin/env python3
"""Consumer groups through kafka-python (an independent, pure-Python Kafka
protocol implementation) against a running broker.

Checks, with Kafka's semantics as the reference:
  * two KafkaConsumer members of one group (each in its own thread) split
    the topic's partitions and together read every record a KafkaProducer
    wrote, committing after each batch;
  * KafkaAdminClient: list_groups, describe_groups (state, members, decoded
    subscriptions and assignments), list_group_offsets (equal to the
    committed positions), delete_group_offsets (refused with
    GROUP_SUBSCRIBED_TO_TOPIC while members subscribe to the topic, allowed
    once the group is empty), delete_groups (NON_EMPTY_GROUP (68) while
    members are active, OK once empty, GROUP_ID_NOT_FOUND (69) for an
    unknown group) and that a deleted group has no offsets left.

Usage: groups_check.py --bootstrap HOST:PORT
Exits 0 and prints a summary if every check passed; exits 1 with the failed
check otherwise. Written for kafka-python 3.x (3.0.12).
"""

import argparse
import os
import sys
import threading
import time
import traceback
import uuid

try:
    import kafka
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import kafka-python ({exc}); run scripts/test.sh to install it",
          flush=True)
    sys.exit(1)

PARTITIONS = 6
RECORDS_PER_PHASE = 60  # per phase, spread over all partitions
WAIT = 60.0  # seconds, bound of every wait
SESSION_TIMEOUT_MS = 10000
HEARTBEAT_MS = 500
# poll() timeout. It must comfortably exceed one JoinGroup + SyncGroup round:
# kafka-python 3.0.12 loses an in-flight rejoin that the leader started because
# topic metadata changed (the first join happens before the topic's metadata is
# known) if poll() returns before the SyncGroup response arrives, and then never
# applies the assignment. poll() returns early anyway once records arrive.
POLL_MS = 3000


class CheckFailed(Exception):
    pass


CHECKS = []


def check(cond, what, detail=""):
    """Records a passed check or raises CheckFailed."""
    if not cond:
        raise CheckFailed(f"{what}" + (f": {detail}" if detail else ""))
    CHECKS.append(what)


def wait_until(what, fn, timeout=WAIT, interval=0.2):
    """Calls fn() until it returns (True, value); fails with its last note."""
    deadline = time.monotonic() + timeout
    note = None
    while True:
        try:
            ok, value = fn()
        except Errors.KafkaError as exc:  # transient broker errors are retried
            ok, value = False, f"{type(exc).__name__}: {exc}"
        if ok:
            CHECKS.append(what)
            return value
        note = value
        if time.monotonic() >= deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}; last: {note}")
        time.sleep(interval)


class Member(threading.Thread):
    """A group member polling in its own thread; commits after each batch."""

    def __init__(self, bootstrap, group, topic, client_id):
        super().__init__(name=client_id, daemon=True)
        self.client_id = client_id
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.records = []  # (partition, offset, key)
        self.assignment = set()
        self.error = None
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=client_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            max_poll_interval_ms=60000,
            request_timeout_ms=30000,
        )

    def run(self):
        try:
            while not self.stop_flag.is_set():
                batches = self.consumer.poll(timeout_ms=POLL_MS)
                got = [(tp.partition, r.offset, r.key.decode())
                       for tp, records in batches.items() for r in records]
                if got:
                    self.consumer.commit()  # synchronous, the consumed positions
                assignment = {tp.partition for tp in self.consumer.assignment()}
                with self.lock:
                    self.records.extend(got)
                    self.assignment = assignment
            self.consumer.close(autocommit=False)  # LeaveGroup
        except Exception as exc:  # reported by the main thread
            self.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"

    def snapshot(self):
        """(assignment, records) so far; fails at once if the member's thread died."""
        if self.error is not None:
            raise CheckFailed(f"member {self.client_id} failed: {self.error}")
        with self.lock:
            return set(self.assignment), list(self.records)

    def stop(self):
        self.stop_flag.set()
        self.join(timeout=WAIT)
        check(not self.is_alive(), f"member {self.client_id} closes within {WAIT:.0f} s")
        check(self.error is None, f"member {self.client_id} ran without errors", self.error)


def produce(producer, topic, phase, count):
    """Writes `count` keyed records round-robin over the partitions; returns key -> (p, o)."""
    acked = {}
    futures = []
    for i in range(count):
        key = f"{phase}-{i}"
        futures.append((key, producer.send(topic, key=key.encode(), value=key.encode(),
                                           partition=i % PARTITIONS)))
    for key, future in futures:
        md = future.get(timeout=30)
        acked[key] = (md.partition, md.offset)
    return acked


def partitions_of_assignment(assignment, topic):
    """Partitions of `topic` in a decoded ConsumerProtocolAssignment (dict or object)."""
    if isinstance(assignment, (bytes, bytearray)):
        raise CheckFailed(f"member assignment was not decoded by kafka-python: {assignment!r}")
    if not isinstance(assignment, dict):
        assignment = assignment.to_dict()
    out = set()
    for entry in assignment.get("assigned_partitions", []):
        if entry["topic"] == topic:
            out.update(entry["partitions"])
    return out


def subscription_topics(metadata):
    if isinstance(metadata, (bytes, bytearray)):
        raise CheckFailed(f"member metadata was not decoded by kafka-python: {metadata!r}")
    if not isinstance(metadata, dict):
        metadata = metadata.to_dict()
    return list(metadata.get("topics", []))


def offsets_of(admin, group, partitions=None):
    """{partition: committed offset} from list_group_offsets (-1 entries dropped)."""
    spec = {group: None if partitions is None else list(partitions)}
    result = admin.list_group_offsets(spec)
    return {tp.partition: om.offset for tp, om in result.get(group, {}).items()
            if om.offset >= 0}


def run(bootstrap):
    version = kafka.__version__
    check(int(version.split(".")[0]) >= 3,
          "kafka-python 3.x is installed (run scripts/test.sh to install 3.0.12)",
          f"found {version}")
    suffix = uuid.uuid4().hex[:8]
    topic = f"pygroups-{suffix}"
    group = f"pygroup-{suffix}"

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="groups-check-admin",
                             request_timeout_ms=30000)
    created = admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    check(all(t.get("error_code") == 0 for t in created.get("topics", [])),
          f"create topic {topic}", str(created))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             enable_idempotence=False, linger_ms=5)
    wait_until(f"metadata for {topic}",
               lambda: ((len(producer.partitions_for(topic) or ()) == PARTITIONS),
                        producer.partitions_for(topic)))
    acked = produce(producer, topic, "before", RECORDS_PER_PHASE)

    # --- two members split the partitions and read everything ---------------
    c1 = Member(bootstrap, group, topic, "groups-check-c1")
    c1.start()
    wait_until("c1 alone owns every partition",
               lambda: (c1.snapshot()[0] == set(range(PARTITIONS)), c1.snapshot()[0]))
    c2 = Member(bootstrap, group, topic, "groups-check-c2")
    c2.start()

    def split():
        a1, a2 = c1.snapshot()[0], c2.snapshot()[0]
        ok = a1 and a2 and not (a1 & a2) and (a1 | a2) == set(range(PARTITIONS))
        return ok, (a1, a2)
    a1, a2 = wait_until("c1 and c2 split the partitions (disjoint, complete)", split)
    acked.update(produce(producer, topic, "after", RECORDS_PER_PHASE))

    def all_consumed():
        seen = {}
        for member in (c1, c2):
            for partition, offset, key in member.snapshot()[1]:
                seen[key] = (partition, offset)
        missing = sorted(set(acked) - set(seen))
        return not missing, f"{len(missing)} missing, e.g. {missing[:5]}"
    wait_until("the group reads every produced record", all_consumed)
    for member, owned in ((c1, a1), (c2, a2)):
        _, records = member.snapshot()
        after = [(p, o, k) for p, o, k in records if k.startswith("after-")]
        check(after, f"{member.client_id} read records after the split")
        check(all(p in owned for p, _, _ in after),
              f"{member.client_id} read only its own partitions after the split",
              f"owned {sorted(owned)}, read from {sorted({p for p, _, _ in after})}")
        wrong = [(p, o, k) for p, o, k in records if acked.get(k) != (p, o)]
        check(not wrong, f"{member.client_id} read each record where it was acknowledged",
              str(wrong[:5]))

    ends = {}
    for partition, offset in acked.values():
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    check(sorted(ends) == list(range(PARTITIONS)), "records were written to every partition")

    # --- admin view of the active group ---------------------------------------
    wait_until("list_group_offsets equals the committed positions (end offsets)",
               lambda: (offsets_of(admin, group) == ends, offsets_of(admin, group)))

    def listed():
        groups = admin.list_groups()
        mine = [g for g in groups if g.get("group_id") == group]
        return len(mine) == 1, groups
    listing = [g for g in wait_until("list_groups shows the group", listed)
               if g["group_id"] == group][0]
    check(listing.get("protocol_type") == "consumer", "list_groups protocol type is 'consumer'",
          str(listing))
    if listing.get("group_state"):
        check(listing["group_state"] == "Stable", "list_groups state is Stable", str(listing))

    described = wait_until(
        "describe_groups shows the group Stable with 2 members",
        lambda: (lambda d: (d.get("group_state") == "Stable" and len(d.get("members", [])) == 2,
                            d))(admin.describe_groups([group])[group]))
    check(described.get("error") is None, "describe_groups reports no error", str(described))
    check(described.get("protocol_type") == "consumer", "describe_groups protocol type",
          str(described))
    check(described.get("protocol_data") in ("range", "roundrobin"),
          "describe_groups protocol is one of the members' assignors", str(described))
    by_client = {m["client_id"]: m for m in described["members"]}
    check(set(by_client) == {"groups-check-c1", "groups-check-c2"},
          "describe_groups member client ids", str(sorted(by_client)))
    member_ids = {m["member_id"] for m in described["members"]}
    check(len(member_ids) == 2 and all(member_ids), "describe_groups member ids are distinct",
          str(member_ids))
    for member in (c1, c2):
        desc = by_client[member.client_id]
        check(desc.get("client_host", "").lstrip("/") == "127.0.0.1",
              f"{member.client_id} client host", str(desc.get("client_host")))
        check(subscription_topics(desc["member_metadata"]) == [topic],
              f"{member.client_id} subscription decodes to [{topic}]",
              str(desc["member_metadata"]))
        owned = member.snapshot()[0]
        got = partitions_of_assignment(desc["member_assignment"], topic)
        check(got == owned, f"{member.client_id} described assignment equals its own",
              f"described {sorted(got)}, consumer has {sorted(owned)}")

    # OffsetDelete on a topic the active group subscribes to is refused per partition.
    tp0 = TopicPartition(topic, 0)
    result = admin.delete_group_offsets(group, [tp0])
    check(result.get(tp0) is Errors.GroupSubscribedToTopicError,
          "delete_group_offsets while subscribed fails with GROUP_SUBSCRIBED_TO_TOPIC (86)",
          str(result))
    check(offsets_of(admin, group).get(0) == ends[0],
          "refused delete_group_offsets leaves the offset in place")

    # DeleteGroups of an active group is refused.
    result = admin.delete_groups([group])
    check(result.get(group) == "NonEmptyGroupError" and Errors.NonEmptyGroupError.errno == 68,
          "delete_groups of an active group fails with NON_EMPTY_GROUP (68)", str(result))

    # --- the group empties ------------------------------------------------------
    c1.stop()
    c2.stop()
    empty = wait_until(
        "describe_groups shows the group Empty after both members left",
        lambda: (lambda d: (d.get("group_state") == "Empty", d))(
            admin.describe_groups([group])[group]))
    check(not empty.get("members"), "the empty group has no members", str(empty))
    check(offsets_of(admin, group) == ends, "offsets are kept after the members left",
          str(offsets_of(admin, group)))

    # OffsetDelete on the empty group removes exactly the named partitions.
    deleted = [TopicPartition(topic, p) for p in (0, 1, 2)]
    result = admin.delete_group_offsets(group, deleted)
    check(all(result.get(tp) is Errors.NoError for tp in deleted) and len(result) == 3,
          "delete_group_offsets on the empty group succeeds per partition", str(result))
    remaining = {p: o for p, o in ends.items() if p not in (0, 1, 2)}
    check(offsets_of(admin, group) == remaining,
          "after delete_group_offsets only the other partitions keep offsets",
          str(offsets_of(admin, group)))
    all_tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    explicit = admin.list_group_offsets({group: all_tps})[group]
    check({tp.partition: om.offset for tp, om in explicit.items()}
          == {p: remaining.get(p, -1) for p in range(PARTITIONS)},
          "list_group_offsets for named partitions reports -1 for deleted offsets",
          str(explicit))

    # DeleteGroups of the empty group succeeds and removes its offsets.
    result = admin.delete_groups([group])
    check(result.get(group) == "OK", "delete_groups of the empty group succeeds", str(result))
    check(admin.list_group_offsets(group).get(group, {}) == {},
          "a deleted group has no committed offsets (all partitions)",
          str(admin.list_group_offsets(group)))
    explicit = admin.list_group_offsets({group: all_tps})[group]
    check(all(om.offset == -1 for om in explicit.values()),
          "a deleted group reports -1 for named partitions", str(explicit))
    check(all(g.get("group_id") != group for g in admin.list_groups()),
          "list_groups no longer shows the deleted group")
    gone = admin.describe_groups([group])[group]
    check(gone.get("group_state") == "Dead" or gone.get("error"),
          "describe_groups of the deleted group says Dead (or GROUP_ID_NOT_FOUND)", str(gone))

    result = admin.delete_groups([f"never-existed-{suffix}"])
    check(result.get(f"never-existed-{suffix}") == "GroupIdNotFoundError"
          and Errors.GroupIdNotFoundError.errno == 69,
          "delete_groups of an unknown group fails with GROUP_ID_NOT_FOUND (69)", str(result))

    # A new member of the deleted group starts from the beginning again.
    fresh = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                          client_id="groups-check-fresh", auto_offset_reset="earliest",
                          enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
                          heartbeat_interval_ms=HEARTBEAT_MS)
    try:
        first = {}

        def first_records():
            for tp, records in fresh.poll(timeout_ms=POLL_MS).items():
                if records:
                    first.setdefault(tp.partition, records[0].offset)
            return len(first) == PARTITIONS, f"first offsets so far {first}"
        wait_until("a new member of the deleted group reads every partition", first_records)
        check(first == {p: 0 for p in range(PARTITIONS)},
              "a new member of the deleted group starts every partition at 0", str(first))
        committed = {p: fresh.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
        check(all(c is None for c in committed.values()),
              "the new member sees no committed offsets", str(committed))
    finally:
        fresh.close(autocommit=False)

    producer.close()
    admin.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of the broker")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        run(args.bootstrap)
    except CheckFailed as exc:
        print(f"FAIL: {exc}", flush=True)
        print(f"({len(CHECKS)} checks passed before the failure)", flush=True)
        os._exit(1)
    except Exception:
        print("FAIL: unexpected exception", flush=True)
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    for what in CHECKS:
        print(f"ok: {what}")
    print(f"groups_check: {len(CHECKS)} checks passed in {time.monotonic() - started:.1f} s "
          f"(kafka-python {kafka.__version__})", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
