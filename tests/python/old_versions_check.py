#!/usr/bin/env python3
"""kafka-python pinned to an old broker version (api_version), so that it
speaks only the protocol versions that broker had, against a running broker.

Checks, with Kafka's semantics as the reference:
  * a producer at that version writes keyed records (gzip and uncompressed);
    before 0.11 these are message sets of magic 0 (< 0.10) or 1;
  * a consumer at that version reads them back exactly (keys, values and,
    from 0.10, timestamps), commits half way, and a new consumer of the same
    group resumes at the committed offset. From 0.9 the group is managed
    (JoinGroup/SyncGroup); before, partitions are assigned by hand and only
    offsets are committed (OffsetCommit v0 at 0.8.1, v1 at 0.8.2);
  * admin at that version where that broker had the API: create_topics
    (from 0.10.1), describe_configs and alter_configs (from 0.11), with
    AlterConfigs' replace-all semantics (a config left out returns to its
    default), validate_only, and INVALID_CONFIG for a bad value.

Usage: old_versions_check.py --bootstrap HOST:PORT --api-version 0.10.1
Exits 0 and prints a summary if every check passed; exits 1 with the failed
check otherwise. Written for kafka-python 3.x (3.0.12).
"""

import argparse
import sys
import time
import traceback
import uuid

try:
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import kafka-python ({exc}); run scripts/test.sh to install it",
          flush=True)
    sys.exit(1)

RECORDS = 40
WAIT = 60.0


class CheckFailed(Exception):
    pass


def check(cond, what, detail=""):
    if not cond:
        raise CheckFailed(f"{what}: {detail}")
    print(f"ok: {what}", flush=True)


def admin(bootstrap, version):
    return KafkaAdminClient(bootstrap_servers=bootstrap, api_version=version,
                            request_timeout_ms=20000)


def create_topic(bootstrap, version, topic):
    if version >= (0, 10, 1):
        a = admin(bootstrap, version)
        a.create_topics([NewTopic(topic, 1, 1)])
        a.close()
        print(f"ok: create_topics at {version}", flush=True)
    else:
        a = admin(bootstrap, None)
        a.create_topics([NewTopic(topic, 1, 1)])
        a.close()


def configs_of(a, topic, config_filter="all"):
    got = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                             config_filter=config_filter)
    return {k: v["value"] for k, v in got["topic"][topic].items()}


def raw_alter(a, topic, configs, validate_only=False):
    """AlterConfigs as sent (kafka-python's alter_configs adds the configs
    the topic already has, to spare callers the replace-all semantics)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
    got = a._manager.run(a._send_alter_configs_requests, [resource], validate_only, False)
    return got["topic"][topic]


def check_configs(bootstrap, version, topic):
    a = admin(bootstrap, version)
    got = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                          configs={"retention.ms": "3600000"})],
                          incremental=False)
    check(got["topic"][topic] == "OK", "alter_configs (AlterConfigs v0)", got)
    got = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                          configs={"cleanup.policy": "compact,delete"})],
                          incremental=False)
    check(got["topic"][topic] == "OK", "a second alter_configs", got)
    modified = configs_of(a, topic, "modified")
    check(modified == {"retention.ms": "3600000", "cleanup.policy": "compact,delete"},
          "describe_configs (v0, is_default) shows both as modified", modified)
    check(raw_alter(a, topic, {"retention.ms": "7200000"}) == "OK", "AlterConfigs of one config")
    got = configs_of(a, topic)
    check(got.get("retention.ms") == "7200000" and got.get("cleanup.policy") == "delete",
          "AlterConfigs resets the configs it does not name to their defaults", got)
    check(raw_alter(a, topic, {"retention.ms": "1"}, validate_only=True) == "OK",
          "validate_only is answered OK")
    got = configs_of(a, topic)
    check(got.get("retention.ms") == "7200000", "validate_only changes nothing", got)
    result = raw_alter(a, topic, {"retention.ms": "soon", "segment.ms": "1000"})
    check(result.startswith("[Error 40]"), "a bad value is INVALID_CONFIG", result)
    result = raw_alter(a, topic, {"no.such.config": "1"})
    check(result.startswith("[Error 40]"), "an unknown config is INVALID_CONFIG", result)
    got = configs_of(a, topic)
    check(got.get("retention.ms") == "7200000" and got.get("segment.ms") != "1000",
          "a refused alter changes nothing", got)
    a.close()


def consumer(bootstrap, version, group, topic):
    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=version, group_id=group,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=10000, heartbeat_interval_ms=500,
                      request_timeout_ms=30000, fetch_max_wait_ms=200)
    if version >= (0, 9):
        c.subscribe([topic])
    else:
        c.assign([TopicPartition(topic, 0)])
    return c


def read(c, want):
    got = []
    deadline = time.time() + WAIT
    while len(got) < want and time.time() < deadline:
        for records in c.poll(timeout_ms=1000, max_records=want - len(got)).values():
            got.extend(records)
    return got


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--api-version", required=True)
    args = p.parse_args()
    version = tuple(int(x) for x in args.api_version.split("."))
    topic = f"old-{args.api_version.replace('.', '-')}-{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"
    create_topic(args.bootstrap, version, topic)

    sent = []
    for compression in (None, "gzip"):
        prod = KafkaProducer(bootstrap_servers=args.bootstrap, api_version=version,
                             compression_type=compression, linger_ms=20, acks=1)
        for i in range(RECORDS // 2):
            n = len(sent)
            ts = 1_600_000_000_000 + n
            k, v = f"k{n}".encode(), f"value-{n}-{compression}".encode()
            prod.send(topic, key=k, value=v, partition=0,
                      timestamp_ms=ts if version >= (0, 10) else None)
            sent.append((k, v, ts))
        prod.flush(timeout=WAIT)
        prod.close()
    check(len(sent) == RECORDS, f"produced {RECORDS} records at {version}")

    c = consumer(args.bootstrap, version, group, topic)
    first = read(c, RECORDS // 2)
    check([(r.key, r.value) for r in first] == [(k, v) for k, v, _ in sent[:RECORDS // 2]],
          "the first half reads back exactly", [(r.offset, r.key, r.value) for r in first[:3]])
    check([r.offset for r in first] == list(range(RECORDS // 2)), "offsets are 0..n-1",
          [r.offset for r in first])
    if version >= (0, 10):
        check([r.timestamp for r in first] == [ts for _, _, ts in sent[:RECORDS // 2]],
              "timestamps read back", [r.timestamp for r in first[:3]])
    c.commit()
    committed = c.committed(TopicPartition(topic, 0))
    check(committed == RECORDS // 2, "the commit is read back", committed)
    c.close()

    c = consumer(args.bootstrap, version, group, topic)
    rest = read(c, RECORDS // 2)
    check([r.offset for r in rest] == list(range(RECORDS // 2, RECORDS)),
          "a new consumer of the group resumes at the commit", [r.offset for r in rest][:5])
    check([(r.key, r.value) for r in rest] == [(k, v) for k, v, _ in sent[RECORDS // 2:]],
          "the second half (gzip) reads back exactly")
    c.close()

    if version >= (0, 11):
        check_configs(args.bootstrap, version, topic)
    print(f"PASS: kafka-python at api_version {args.api_version}: produce, consume, "
          f"commit and resume{', admin configs' if version >= (0, 11) else ''}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("FAIL: unexpected error", flush=True)
        sys.exit(1)
