#!/usr/bin/env bash
# What a `pack` placement's partition moves cost a producer (issue 15),
# release build, 3 workers + 1 gateway on etcd + s3s-fs, for each placement
# in ${PLACEMENTS:-spread pack}:
# - a probe producer sends 1 MB/s (1 KiB records, 12 partitions, acks=all,
#   linger 5 ms) for ${PROBE_SECS:-90} s and reports its produce latency;
# - ${BURST_AT:-10} s in, a burst producer sends ${BURST_MBS:-40} MB/s to its
#   own topic for ${BURST_SECS:-25} s: enough for `pack` to take a second
#   worker (21 MB/s each with the balanced profile) and, once the burst's
#   rate has faded, to give it back. Under `spread` nothing moves.
# The difference between the probe's percentiles is what the moves cost.
#   loadtest/scripts/placement.sh          # ~4 minutes
# Prints per placement: the probe's p50 p99 p99.9 max (ms), the burst's
# MB/s, the partition moves the assigner made, and the records either
# producer failed to send.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}
LT=$T/release/kafscale-loadtest
export KS_BENCH_DIR=${KS_BENCH_DIR:-/tmp/kafscale-placement}
GW=127.0.0.1:29092
PLACEMENTS=${PLACEMENTS:-spread pack}
PROBE_SECS=${PROBE_SECS:-90}
BURST_AT=${BURST_AT:-10}
BURST_SECS=${BURST_SECS:-25}
BURST_MBS=${BURST_MBS:-40}
cluster=loadtest/scripts/cluster.sh
# shellcheck source=loadtest/scripts/bench_lib.sh
. loadtest/scripts/bench_lib.sh

start_s3s_fs 23011 "$KS_BENCH_DIR-s3"
trap 'kill $S3_PID 2>/dev/null; $cluster stop >/dev/null 2>&1; rm -rf "$KS_BENCH_DIR-s3"' EXIT

moves() { # the assigner's moves, summed over the workers
  worker_metrics 3 |
    awk '/^kafscale_assignment_moves_total/ { n += $NF } END { print n + 0 }'
}

echo "placement probe-p50-ms probe-p99-ms probe-p99.9-ms probe-max-ms burst-MB/s moves failed-records"
for p in $PLACEMENTS; do
  rm -rf "$KS_BENCH_DIR-s3/bench" && mkdir "$KS_BENCH_DIR-s3/bench"
  KAFSCALE_PLACEMENT=$p KAFSCALE_LEASE_TTL_MS=3000 $cluster start 3 1 >/dev/null
  # Both topics exist, and are assigned, before the probe starts.
  for t in probe burst; do
    "$LT" --bootstrap $GW --topic "$t-$p" --partitions 12 --mode produce --records 10 --quiet >/dev/null 2>&1
  done
  sleep 2
  m0=$(moves)
  "$LT" --bootstrap $GW --topic "probe-$p" --record-size 1024 --acks all --linger-ms 5 \
    --mode produce --quiet --rate 1000 --records $((1000 * PROBE_SECS)) --json - \
    >"$KS_BENCH_DIR-probe.json" 2>/dev/null &
  probe=$!
  sleep "$BURST_AT"
  burst=$("$LT" --bootstrap $GW --topic "burst-$p" --record-size 1024 --acks all --linger-ms 5 \
    --mode produce --quiet --rate $((BURST_MBS * 1000)) --records $((BURST_MBS * 1000 * BURST_SECS)) \
    --json - 2>/dev/null)
  wait $probe
  m1=$(moves)
  python3 - "$p" "$(cat "$KS_BENCH_DIR-probe.json")" "$burst" "$((m1 - m0))" <<'PY'
import json, sys
p, probe, burst, moves = sys.argv[1:]
probe, burst = json.loads(probe)["produce"], json.loads(burst)["produce"]
lat = probe["latency_ms"]
failed = probe["records_failed"] + burst["records_failed"]
print(p, *(round(lat[k], 1) for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms")),
      round(burst["throughput"]["mb_per_sec"], 1), moves, failed)
PY
  $cluster stop >/dev/null
done
