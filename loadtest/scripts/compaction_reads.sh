#!/usr/bin/env bash
# Where compaction reads its chunks from during a sustained produce: the tail cache or storage
# (in the distributed mode, an S3 GET per chunk). Two builds, interleaved (A B A B ...), on the
# same load, so that machine noise hits both alike.
#
#   loadtest/scripts/compaction_reads.sh A_DIR B_DIR [ROUNDS] [MODE]
#
# A_DIR and B_DIR each hold a release `kafscale` and `kafscale-loadtest`. MODE is `dev`
# (`kafscale dev` on disk, the default) or `dist` (3 workers + 2 gateways on etcd + s3s-fs,
# see loadtest/scripts/cluster.sh; s3s-fs as loadtest/scripts/peers.sh installs it). Each run
# starts a fresh system at default settings (`KAFSCALE_*` variables set for the script reach
# the servers), produces RECORDS (default 3,000,000) × 1 KiB to PARTITIONS (default 6)
# partitions, flat out or at RATE records/s (acks=all, linger 5 ms), waits WAIT_S seconds
# (default 15: a full compaction pass and more), and prints one line: produce MB/s and p99,
# the chunk reads of compaction and fetches by source (`kafscale_chunk_reads_total`, summed
# over workers: `cache` is the tail cache, `storage` a read from the store), the segments
# written, and the CPU seconds of our processes.
#
# With S3_DELAY_MS (dist only), the workers reach s3s-fs through s3-count-proxy (the
# `kafscale-loadtest` package's release build in A_DIR), which holds every request that long
# before forwarding it: the time to first byte of a remote object store. The line then also
# says how long after the produce the compaction backlog (`kafscale_partition_uncompacted_bytes`,
# summed over workers, polled every second until WAIT_S) took to drain, and what was left.
set -euo pipefail
A=${1:?A_DIR}
B=${2:?B_DIR}
ROUNDS=${3:-2}
MODE=${4:-dev}
RECORDS=${RECORDS:-3000000}
PARTITIONS=${PARTITIONS:-6}
RATE=${RATE:-0}
WAIT_S=${WAIT_S:-15}
S3_DELAY_MS=${S3_DELAY_MS:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=loadtest/scripts/bench_lib.sh
. "$ROOT/loadtest/scripts/bench_lib.sh"
WORK=$(mktemp -d /tmp/kafscale-compaction-reads-XXXXXX)
trap 'KS_BENCH_DIR=$WORK/cluster "$ROOT/loadtest/scripts/cluster.sh" stop >/dev/null 2>&1 || true; [ -n "${S3_PID:-}" ] && kill -9 "$S3_PID" 2>/dev/null; [ -n "${PROXY_PID:-}" ] && kill -9 "$PROXY_PID" 2>/dev/null; [ -n "${DEV_PID:-}" ] && kill -9 "$DEV_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

cpu_seconds() { # pids...
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}

metric_sum() { # name-with-labels, metrics text on stdin
  awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%d", s }'
}

run_one() { # dir label round
  local dir=$1 label=$2 round=$3 bootstrap pids=() metrics
  rm -rf "$WORK/run" && mkdir -p "$WORK/run"
  if [ "$MODE" = dist ]; then
    start_s3s_fs 22700 "$WORK/run/s3"
    if [ -n "$S3_DELAY_MS" ]; then
      "$A/s3-count-proxy" 127.0.0.1:22701 127.0.0.1:22700 "$S3_DELAY_MS" >/dev/null 2>&1 &
      PROXY_PID=$!
      export KS_S3_ENDPOINT=http://127.0.0.1:22701
      sleep 0.5
    fi
    KAFSCALE_S3_PAYLOAD_SIGNING=unsigned KAFSCALE_BIN=$dir/kafscale KS_BENCH_DIR=$WORK/cluster \
      "$ROOT/loadtest/scripts/cluster.sh" start 3 2 >/dev/null
    for f in "$WORK"/cluster/w*.pid "$WORK"/cluster/g*.pid; do pids+=("$(cat "$f")"); done
    bootstrap=127.0.0.1:29092,127.0.0.1:29093
  else
    KAFSCALE_LOG_LEVEL=warn KAFSCALE_DATA_DIR=$WORK/run/dev KAFSCALE_KAFKA_ADDR=127.0.0.1:29092 \
      KAFSCALE_HTTP_ADDR=127.0.0.1:22500 KAFSCALE_GRPC_ADDR=127.0.0.1:22400 \
      KAFSCALE_ADVERTISED_HOST=127.0.0.1 "$dir/kafscale" dev >"$WORK/run/dev.log" 2>&1 &
    DEV_PID=$!
    pids=("$DEV_PID")
    for _ in $(seq 100); do curl -sf http://127.0.0.1:22500/readyz >/dev/null && break; sleep 0.2; done
    bootstrap=127.0.0.1:29092
  fi
  "$dir/kafscale-loadtest" --bootstrap "$bootstrap" --topic sustained --records "$RECORDS" \
    --record-size 1024 --partitions "$PARTITIONS" --rate "$RATE" --acks all --linger-ms 5 --quiet --json "$WORK/run/p.json" \
    >>"$WORK/run/loadgen.log" 2>&1
  local backlog='' waited=0 left
  if [ -n "$S3_DELAY_MS" ]; then
    backlog="backlog after the produce $(($(worker_metrics 3 | metric_sum kafscale_partition_uncompacted_bytes) / 1000000)) MB, "
    while [ "$waited" -lt "$WAIT_S" ]; do
      left=$(worker_metrics 3 | metric_sum kafscale_partition_uncompacted_bytes)
      [ "$left" -eq 0 ] && break
      sleep 1; waited=$((waited + 1))
    done
    backlog+="drained after ${waited} s (left $((left / 1000000)) MB)  "
  else
    sleep "$WAIT_S"
  fi
  if [ "$MODE" = dist ]; then metrics=$(worker_metrics 3); else metrics=$(curl -s http://127.0.0.1:22500/metrics); fi
  printf '%s round %s  %s  %sreads: cache %s, storage %s, block cache %s  segments %s  CPU %s s\n' \
    "$label" "$round" \
    "$(python3 -c "import json,sys; p=json.load(open(sys.argv[1]))['produce']; print('{:.1f} MB/s p99 {:.0f} ms'.format(p['throughput']['mb_per_sec'], p['latency_ms']['p99_ms']))" "$WORK/run/p.json")" \
    "$backlog" \
    "$(metric_sum 'kafscale_chunk_reads_total{source="cache"}' <<<"$metrics")" \
    "$(metric_sum 'kafscale_chunk_reads_total{source="storage"}' <<<"$metrics")" \
    "$(metric_sum 'kafscale_chunk_reads_total{source="block_cache"}' <<<"$metrics")" \
    "$(find "$WORK/run" -path '*/seg/*' -type f | wc -l)" \
    "$(cpu_seconds "${pids[@]}")"
  if [ "$MODE" = dist ]; then
    KS_BENCH_DIR=$WORK/cluster "$ROOT/loadtest/scripts/cluster.sh" stop >/dev/null
    kill -9 "$S3_PID" ${PROXY_PID:+"$PROXY_PID"} 2>/dev/null || true
    S3_PID= PROXY_PID=
    rm -rf "$WORK/cluster"
  else
    kill -TERM "$DEV_PID"; wait "$DEV_PID" || true
    DEV_PID=
  fi
}

for r in $(seq "$ROUNDS"); do
  run_one "$A" A "$r"
  run_one "$B" B "$r"
done
