#!/usr/bin/env python3
"""Cost of Fetch down-conversion: reads the same records with kafka-python
pinned to api_version (0, 10, 1) (Fetch v3: stored v2 batches down-converted
to magic-1 messages by the gateway) and to (2, 0) (Fetch v8: batches as
stored), in one run against one broker, and reports for each the client's
read rate and the broker process's CPU time while it read.

Usage: down_conversion_bench.py --bootstrap HOST:PORT --pid BROKER_PID
                                [--records 100000] [--size 200] [--rounds 3]
"""

import argparse
import os
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def read_all(bootstrap, topic, version, records):
    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=version,
                      enable_auto_commit=False, fetch_max_bytes=50 << 20,
                      max_partition_fetch_bytes=1 << 20, fetch_max_wait_ms=100)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = 0
    size = 0
    while got < records:
        for batch in c.poll(timeout_ms=1000, max_records=10000).values():
            got += len(batch)
            size += sum(len(r.value) + len(r.key or b"") for r in batch)
    c.close()
    return size


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    topic = f"downconv-{uuid.uuid4().hex[:8]}"
    a = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    a.create_topics([NewTopic(topic, 1, 1)])
    a.close()
    prod = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=20, batch_size=256 << 10,
                         compression_type="gzip")
    value = b"x" * args.size
    for i in range(args.records):
        prod.send(topic, key=b"k%d" % i, value=value, partition=0)
    prod.flush()
    prod.close()
    print(f"{args.records} records of {args.size} B (gzip batches), {args.rounds} rounds each")
    for rnd in range(args.rounds):
        for version, label in (((2, 0), "Fetch v8 (no conversion)"),
                               ((0, 10, 1), "Fetch v3 (down-converted to magic 1)")):
            cpu0, t0 = cpu_seconds(args.pid), time.monotonic()
            size = read_all(args.bootstrap, topic, version, args.records)
            dt, cpu = time.monotonic() - t0, cpu_seconds(args.pid) - cpu0
            print(f"round {rnd + 1}: {label:38s} {size / dt / 1e6:7.2f} MB/s  "
                  f"{dt:6.2f} s  broker CPU {cpu:5.2f} s")


if __name__ == "__main__":
    main()
