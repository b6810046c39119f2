#!/usr/bin/env python3
"""ACLs through kafka-python against a broker started with
KAFSCALE_AUTHORIZER=acl and KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND=true.
Every connection is plaintext, so the principal is User:ANONYMOUS.

Checks, with Kafka's semantics as the reference:
  * create / describe (LITERAL, MATCH, ANY filters) / delete ACLs, creating
    the same binding twice stores it once, invalid bindings are refused;
  * DENY WRITE on a topic: producing to it fails with
    TOPIC_AUTHORIZATION_FAILED, other topics keep working;
  * DENY READ on a topic: fetching fails, and committing offsets for it is
    refused per partition while other topics commit;
  * DENY DESCRIBE on a topic: it disappears from the all-topics listing, and
    so does a topic whose ACLs allow nothing (allow-everyone no longer
    applies to a resource once it has ACLs);
  * DENY READ on a group (prefixed pattern): joining it fails with
    GROUP_AUTHORIZATION_FAILED;
  * authorized operations (describe_topics, describe_cluster) reflect the ACLs;
  * deleting the ACLs restores access;
  * DENY ALTER on the cluster: CreateAcls is refused with
    CLUSTER_AUTHORIZATION_FAILED (checked last: it also blocks DeleteAcls).

Usage: acl_check.py --bootstrap HOST:PORT [--disabled | --still-denied]
With --disabled, checks instead that a broker without an authorizer answers
the ACL APIs with SECURITY_DISABLED; with --still-denied, that the cluster
DENY of a previous run is still stored and enforced (after a restart). Exits 0 with a summary if every check
passed; exits 1 with the failed check otherwise.
"""

import argparse
import sys
import time
import traceback
import uuid

try:
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ResourcePatternFilter,
                             ACLResourcePatternType, NewTopic, ResourcePattern,
                             ResourceType)
    from kafka.structs import OffsetAndMetadata
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import kafka-python ({exc}); run scripts/test.sh to install it",
          flush=True)
    sys.exit(1)

ANON = "User:ANONYMOUS"
ALL_TOPIC_OPS = {"READ", "WRITE", "CREATE", "DESCRIBE", "DELETE", "ALTER", "DESCRIBE_CONFIGS",
                 "ALTER_CONFIGS"}
ALL_CLUSTER_OPS = {"CREATE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
                   "IDEMPOTENT_WRITE", "ALTER", "DESCRIBE"}
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1
    print(f"ok {checks}: {what}", flush=True)


def acl(rtype, name, op, perm, pattern=ACLResourcePatternType.LITERAL, principal=ANON):
    return ACL(principal=principal, host="*", operation=op, permission_type=perm,
               resource_pattern=ResourcePattern(rtype, name, pattern))


def filter_for(rtype, name, pattern=ACLResourcePatternType.LITERAL, principal=None):
    return ACLFilter(principal=principal, host=None, operation=ACLOperation.ANY,
                     permission_type=ACLPermissionType.ANY,
                     resource_pattern=ResourcePatternFilter(rtype, name, pattern))


def failed_types(create_result):
    """The error classes of a create_acls result's failures."""
    return [e if isinstance(e, type) else type(e) for e in create_result["failed"]]


def expect_error(fn, error, what):
    try:
        fn()
    except error:
        check(True, what)
        return
    except Exception as exc:  # noqa: BLE001 - report what came instead
        raise AssertionError(f"{what}: got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{what}: no error")


def produce(bootstrap, topic):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=0,
                      enable_idempotence=False, max_block_ms=10000)
    try:
        return p.send(topic, b"v").get(timeout=20)
    finally:
        p.close()


def run(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    suffix = uuid.uuid4().hex[:8]
    locked, readonly, hidden, open_t = (f"{n}-{suffix}" for n in
                                       ("locked", "readonly", "hidden", "open"))
    admin.create_topics([NewTopic(t, 1, 1) for t in (locked, readonly, hidden, open_t)])
    for t in (readonly, open_t):
        produce(bootstrap, t)

    acls, err = admin.describe_acls(filter_for(ResourceType.TOPIC, None,
                                               ACLResourcePatternType.ANY))
    check(err is Errors.NoError and acls == [], "no ACLs at first")

    deny_write = acl(ResourceType.TOPIC, locked, ACLOperation.WRITE, ACLPermissionType.DENY)
    deny_read = acl(ResourceType.TOPIC, readonly, ACLOperation.READ, ACLPermissionType.DENY)
    # With an ACL on a topic, "allow everyone" no longer applies to it: the
    # consumer needs DESCRIBE (for offsets) to get as far as the fetch.
    allow_describe = acl(ResourceType.TOPIC, readonly, ACLOperation.DESCRIBE,
                         ACLPermissionType.ALLOW)
    deny_describe = acl(ResourceType.TOPIC, hidden, ACLOperation.DESCRIBE,
                        ACLPermissionType.DENY)
    deny_group = acl(ResourceType.GROUP, f"denied-{suffix}", ACLOperation.READ,
                     ACLPermissionType.DENY, ACLResourcePatternType.PREFIXED)
    all_acls = [deny_write, deny_read, allow_describe, deny_describe, deny_group]
    res = admin.create_acls(all_acls + [deny_write])
    check(len(res["succeeded"]) == 6 and not res["failed"], "create_acls accepts all six")
    bad = admin.create_acls([acl(ResourceType.CLUSTER, "not-the-cluster",
                                 ACLOperation.ALTER, ACLPermissionType.DENY)])
    check(failed_types(bad) == [Errors.InvalidRequestError], "a CLUSTER ACL not named kafka-cluster is refused")

    acls, _ = admin.describe_acls(filter_for(ResourceType.ANY, None,
                                             ACLResourcePatternType.ANY, ANON))
    check(len(acls) == 5, f"describe returns each binding once (got {len(acls)})")
    acls, _ = admin.describe_acls(filter_for(ResourceType.TOPIC, locked))
    check([a.operation for a in acls] == [ACLOperation.WRITE], "LITERAL filter by name")
    acls, _ = admin.describe_acls(filter_for(ResourceType.GROUP, f"denied-{suffix}-x",
                                             ACLResourcePatternType.MATCH))
    check(len(acls) == 1 and acls[0].resource_pattern.pattern_type
          == ACLResourcePatternType.PREFIXED, "MATCH filter finds the prefixed group ACL")

    expect_error(lambda: produce(bootstrap, locked), Errors.TopicAuthorizationFailedError,
                 "produce to a WRITE-denied topic fails with TOPIC_AUTHORIZATION_FAILED")
    meta = produce(bootstrap, open_t)
    check(meta.offset == 1, "produce to a topic without ACLs still works")

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=5000, auto_offset_reset="earliest")
    c.assign([TopicPartition(readonly, 0)])
    expect_error(lambda: c.poll(timeout_ms=5000) or c.poll(timeout_ms=5000),
                 Errors.TopicAuthorizationFailedError,
                 "fetch from a READ-denied topic fails with TOPIC_AUTHORIZATION_FAILED")
    c.close()

    group = f"g-{suffix}"
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    c.assign([TopicPartition(open_t, 0)])
    c.commit({TopicPartition(open_t, 0): OffsetAndMetadata(1, "", -1)})
    check(c.committed(TopicPartition(open_t, 0)) == 1, "commit on an allowed topic works")
    expect_error(lambda: c.commit({TopicPartition(readonly, 0): OffsetAndMetadata(1, "", -1)}),
                 Errors.TopicAuthorizationFailedError,
                 "commit for a READ-denied topic fails with TOPIC_AUTHORIZATION_FAILED")
    c.close()
    offsets = {tp: om.offset for tp, om in admin.list_group_offsets({group: None})
               .get(group, {}).items() if om.offset >= 0}
    check(offsets == {TopicPartition(open_t, 0): 1},
          f"only the allowed topic's offset was committed ({offsets})")

    listed = admin.list_topics()
    check(hidden not in listed and open_t in listed and readonly in listed,
          "a DESCRIBE-denied topic is left out of the topic listing")
    check(locked not in listed,
          "so is a topic whose only ACL denies WRITE (ACLs exist, none allows DESCRIBE)")

    ops = {t["topic"] if "topic" in t else t["name"]: set(t["authorized_operations"])
           for t in admin.describe_topics([readonly, open_t])}
    check(ops[readonly] == {"DESCRIBE"},
          f"authorized operations on the READ-denied topic: DESCRIBE only ({ops[readonly]})")
    check(ops[open_t] == ALL_TOPIC_OPS,
          f"authorized operations on a topic without ACLs: all eight ({ops[open_t]})")
    cluster_ops = set(admin.describe_cluster()["authorized_operations"])
    check(cluster_ops == ALL_CLUSTER_OPS, f"authorized operations on the cluster ({cluster_ops})")

    c = KafkaConsumer(open_t, bootstrap_servers=bootstrap, group_id=f"denied-{suffix}-app",
                      enable_auto_commit=False, consumer_timeout_ms=3000)
    expect_error(lambda: [c.poll(timeout_ms=1000) for _ in range(10)],
                 Errors.GroupAuthorizationFailedError,
                 "joining a READ-denied group fails with GROUP_AUTHORIZATION_FAILED")
    c.close()

    deleted = admin.delete_acls([filter_for(ResourceType.ANY, None,
                                            ACLResourcePatternType.ANY, ANON)])
    check(len(deleted) == 1 and len(deleted[0][1]) == 5 and deleted[0][2] is Errors.NoError,
          "delete_acls removes all five bindings")
    acls, _ = admin.describe_acls(filter_for(ResourceType.ANY, None,
                                             ACLResourcePatternType.ANY))
    check(acls == [], "no ACLs after delete")
    meta = produce(bootstrap, locked)
    check(meta.offset == 0, "produce works again once the DENY is gone")

    res = admin.create_acls([acl(ResourceType.CLUSTER, "kafka-cluster", ACLOperation.ALTER,
                                 ACLPermissionType.DENY)])
    check(len(res["succeeded"]) == 1, "DENY ALTER on the cluster is stored")
    res = admin.create_acls([deny_write])
    check(failed_types(res) == [Errors.ClusterAuthorizationFailedError],
          "with ALTER denied on the cluster, create_acls fails with CLUSTER_AUTHORIZATION_FAILED")
    admin.close()


def run_disabled(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    topic = f"noauth-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 1, 1)])
    ops = set(admin.describe_topics([topic])[0]["authorized_operations"])
    check(ops == ALL_TOPIC_OPS, f"without an authorizer every topic operation is authorized ({ops})")
    expect_error(lambda: admin.describe_acls(filter_for(ResourceType.ANY, None,
                                                        ACLResourcePatternType.ANY)),
                 Errors.SecurityDisabledError,
                 "without an authorizer, describe_acls fails with SECURITY_DISABLED")
    res = admin.create_acls([acl(ResourceType.TOPIC, "t", ACLOperation.READ,
                                 ACLPermissionType.ALLOW)])
    check(failed_types(res) == [Errors.SecurityDisabledError],
          "without an authorizer, create_acls fails with SECURITY_DISABLED")
    admin.close()


def run_still_denied(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # The cluster resource has an ACL now, and none allows DESCRIBE.
    expect_error(lambda: admin.describe_acls(filter_for(ResourceType.CLUSTER, "kafka-cluster")),
                 Errors.ClusterAuthorizationFailedError,
                 "the stored cluster ACL still applies: describe_acls is refused")
    res = admin.create_acls([acl(ResourceType.TOPIC, "t", ACLOperation.READ,
                                 ACLPermissionType.ALLOW)])
    check(failed_types(res) == [Errors.ClusterAuthorizationFailedError],
          "and still refuses create_acls")
    admin.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--disabled", action="store_true")
    ap.add_argument("--still-denied", action="store_true")
    args = ap.parse_args()
    start = time.time()
    mode = run_disabled if args.disabled else run_still_denied if args.still_denied else run
    try:
        mode(args.bootstrap)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print(f"FAIL after {checks} checks", flush=True)
        sys.exit(1)
    print(f"PASS: {checks} ACL checks in {time.time() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
