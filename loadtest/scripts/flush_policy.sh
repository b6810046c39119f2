#!/usr/bin/env bash
# WAL flush policy benchmark (issue 15), release build, distributed mode on
# etcd + moto (loadtest/scripts/cluster.sh): WAL objects and all S3 PUTs per
# GiB ingested, and produce latency, against the per-worker ingest rate, for
# each flush setting, all in one run.
#   loadtest/scripts/flush_policy.sh                       # ~20 minutes
#   WORKERS="1" SETTINGS="fixed50 balanced" RATES="5 0" loadtest/scripts/flush_policy.sh
# SETTINGS: fixed50 (the policy before profiles: a fixed 50 ms interval and an
# 8 MiB size trigger), balanced, cost, latency (KAFSCALE_WAL_FLUSH_PROFILE);
# pack and cost-pack are balanced and cost with KAFSCALE_PLACEMENT=pack (the
# cluster rate is still RATES x workers; the workers that own partitions are
# as many as it needs).
# RATES are MB/s per worker (1 KiB records, so 1,000 records/s per MB/s);
# 0 is flat out. Each point produces for ${SECS:-15} s (flat out: 300,000
# records) to its own 12-partition topic, acks=all, linger 5 ms (100 ms
# with the cost profile: see below), no compression (the payload is
# incompressible). The linger of 100 ms with the cost profile dates from
# when a gateway served only 64 pipelined requests per connection, which
# held librdkafka at linger 5 ms to 0.73 of 1 MB/s with 1 s acks; it is
# kept so that the figures compare with the tables in docs/benchmarks.md
# (with 1,024 pipelined requests linger 5 ms reaches 1.02 MB/s, p50 0.5 s).
# S3=s3s-fs runs every point against one s3s-fs server (installed by
# loadtest/scripts/peers.sh) instead of moto; with S3_DELAY_MS as well, the
# workers reach it through s3-count-proxy (built with the loadtest package),
# which holds every request that long: a remote object store's time to first
# byte on top of the local server's.
# Prints one line per point: workers setting rate MB/s-achieved wal/GiB
# puts/GiB p50 p99 (ms).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}
LT=$T/release/kafscale-loadtest
export KS_BENCH_DIR=${KS_BENCH_DIR:-/tmp/kafscale-flush}
GW=127.0.0.1:29092
WORKERS=${WORKERS:-1 3}
SETTINGS=${SETTINGS:-fixed50 balanced cost latency}
RATES=${RATES:-1 5 15 50 0}
SECS=${SECS:-15}
cluster=loadtest/scripts/cluster.sh
# shellcheck source=loadtest/scripts/bench_lib.sh
. loadtest/scripts/bench_lib.sh
if [ "${S3:-moto}" = s3s-fs ]; then
  start_s3s_fs 23010 "$KS_BENCH_DIR-s3"
  trap 'kill $S3_PID ${PROXY_PID:-} 2>/dev/null; rm -rf "$KS_BENCH_DIR-s3"' EXIT
  if [ -n "${S3_DELAY_MS:-}" ]; then
    "$T/release/s3-count-proxy" 127.0.0.1:23011 127.0.0.1:23010 "$S3_DELAY_MS" >/dev/null 2>&1 &
    PROXY_PID=$!
    export KS_S3_ENDPOINT=http://127.0.0.1:23011
    sleep 0.5
  fi
fi

# Sum over the workers' /metrics of: WAL objects written, S3 PUTs.
counters() { # workers
  worker_metrics "$1" | awk '
    /^kafscale_wal_flush_bytes_count/ { wal += $NF }
    /^kafscale_s3_requests_total/ && /op="put"/ { put += $NF }
    END { printf "%d %d\n", wal, put }'
}

linger_for() { case $1 in cost*) echo 100 ;; *) echo 5 ;; esac; }

settings_env() {
  case $1 in
    fixed50) echo KAFSCALE_WAL_FLUSH_INTERVAL_MS=50 KAFSCALE_WAL_FLUSH_MIN_INTERVAL_MS=50 \
      KAFSCALE_WAL_TARGET_OBJECT_BYTES=8388608 KAFSCALE_WAL_FLUSH_BYTES=8388608 ;;
    pack) echo KAFSCALE_WAL_FLUSH_PROFILE=balanced KAFSCALE_PLACEMENT=pack ;;
    cost-pack) echo KAFSCALE_WAL_FLUSH_PROFILE=cost KAFSCALE_PLACEMENT=pack ;;
    *) echo KAFSCALE_WAL_FLUSH_PROFILE=$1 ;;
  esac
}

echo "workers setting MB/s-per-worker MB/s-achieved wal-objects/GiB puts/GiB produce-p50-ms produce-p99-ms"
for w in $WORKERS; do
  for s in $SETTINGS; do
    # shellcheck disable=SC2046
    # A fresh cluster starts its streams at epoch 1 again: it needs an empty bucket.
    if [ -n "${S3_PID:-}" ]; then rm -rf "$KS_BENCH_DIR-s3/bench" && mkdir "$KS_BENCH_DIR-s3/bench"; fi
    env $(settings_env "$s") KAFSCALE_LEASE_TTL_MS=3000 $cluster start "$w" 1 >/dev/null
    for r in $RATES; do
      topic="f-$w-$s-$r"
      if [ "$r" = 0 ]; then args=(--records 300000); else
        args=(--records $((r * w * 1000 * SECS)) --rate $((r * w * 1000))); fi
      read -r wal0 put0 < <(counters "$w")
      json=$("$LT" --bootstrap $GW --topic "$topic" --partitions 12 --record-size 1024 --acks all \
        --linger-ms "$(linger_for "$s")" --mode produce --quiet "${args[@]}" --json - 2>/dev/null)
      sleep 1
      read -r wal1 put1 < <(counters "$w")
      python3 - "$w" "$s" "$r" "$((wal1 - wal0))" "$((put1 - put0))" "$json" <<'PY'
import json, sys
w, s, r, wal, put, doc = sys.argv[1:]
p = json.loads(doc)["produce"]
gib = p["bytes_acked"] / 2**30
lat = p["latency_ms"] or {"p50_ms": 0, "p99_ms": 0}
print(w, s, r if r != "0" else "flat", round(p["throughput"]["mb_per_sec"], 1),
      round(int(wal) / gib), round(int(put) / gib), round(lat["p50_ms"], 1), round(lat["p99_ms"], 1))
PY
    done
    $cluster stop
  done
done
