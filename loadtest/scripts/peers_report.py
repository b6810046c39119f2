#!/usr/bin/env python3
"""Medians over rounds of loadtest/scripts/peers.sh results, as a markdown
table with ratios to the peer (dev and dev-mem / tansu-mem, dist / tansu-s3).

Usage: peers_report.py results.jsonl
"""
import json
import statistics
import sys

PEER = {"dev": "tansu-mem", "dev-mem": "tansu-mem", "dist": "tansu-s3"}
# (label, test, key, higher is better)
ROWS = [
    ("produce MB/s, our generator", "lg-produce", "mb_s", True),
    ("produce MB/s, rdkafka_performance", "rk-produce", "mb_s", True),
    ("consume from offset 0 MB/s, our generator", "lg-consume", "mb_s", True),
    ("consume from offset 0 MB/s, rdkafka_performance", "rk-consume", "mb_s", True),
    ("cold consume from offset 0 MB/s (after a restart)", "lg-cold", "mb_s", True),
    ("produce p50 ms, flat out", "lg-produce", "p50_ms", False),
    ("produce p99 ms, flat out", "lg-produce", "p99_ms", False),
    ("produce p50 ms, fixed rate", "lg-rate", "p50_ms", False),
    ("produce p99 ms, fixed rate", "lg-rate", "p99_ms", False),
    ("end-to-end p99 ms, fixed rate", "lg-rate", "e2e_p99_ms", False),
    ("server CPU s per GiB produced", "lg-produce", "cpu_s_per_gib", False),
    ("CPU s per GiB incl. etcd and S3 server", "lg-produce", "cpu_all_s_per_gib", False),
    ("peak RSS MB", "totals", "rss_mb", False),
]


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    systems = list(dict.fromkeys(r["system"] for r in runs))
    ops = sorted({op for r in runs if r["test"] == "totals" for op in r["s3_per_gib"]})

    def values(system, test, key):
        out = []
        for r in runs:
            if r["system"] == system and r["test"] == test:
                v = r["s3_per_gib"].get(key, 0) if test == "totals" and key in ops else r.get(key)
                if v is not None:
                    out.append(v)
        return out

    def median(system, test, key):
        v = values(system, test, key)
        return statistics.median(v) if v else None

    rows = ROWS + [(f"S3 {op} per GiB produced", "totals", op, False) for op in ops]
    rounds = len({r["round"] for r in runs})
    head = ["", *systems] + [f"{s} / {PEER[s]}" for s in systems if PEER.get(s) in systems]
    print(f"medians of {rounds} rounds")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, test, key, _ in rows:
        cells = [label]
        for s in systems:
            m = median(s, test, key)
            cells.append("—" if m is None else f"{m:,.1f}" if m < 100 else f"{m:,.0f}")
        for s in systems:
            if PEER.get(s) not in systems:
                continue
            a, b = median(s, test, key), median(PEER[s], test, key)
            cells.append(f"{a / b:.2f}×" if a is not None and b else "—")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
