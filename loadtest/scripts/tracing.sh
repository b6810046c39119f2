#!/usr/bin/env bash
# Cost of tracing (issue 14): produce throughput and latency with traces off,
# exported at sampling 1.0, and at 0.01, on the distributed cluster of
# cluster.sh (1 worker + 1 gateway on etcd + moto, release build), rounds
# interleaved (off, 1.0, 0.01, off, ...) so machine noise hits all alike.
# Spans go over OTLP/HTTP to otlp_sink.py, which only counts them.
#   loadtest/scripts/tracing.sh [ROUNDS=2]      # ~2 minutes a round
# Per run: unthrottled 200k x 1 KiB (12 partitions, acks=all, 2 producers)
# and 100k x 1 KiB at a fixed 20 MB/s; prints MB/s and latency percentiles,
# and what the sink received.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-2}
T=${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}
LT=${KAFSCALE_LOADTEST:-$T/release/kafscale-loadtest}
export KS_BENCH_DIR=${KS_BENCH_DIR:-/tmp/kafscale-tracing}
SINK_PORT=24318
cluster=loadtest/scripts/cluster.sh

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=d['produce']; print(sys.argv[2].format(t=p['throughput'], l=p['latency_ms'] or {}))" "$@"; }

run_one() { # label ratio-or-off round
  local label=$1 ratio=$2 round=$3 out
  out=$(mktemp -d /tmp/kafscale-tracing-run-XXXXXX)
  unset KAFSCALE_OTLP_ENDPOINT KAFSCALE_OTLP_PROTOCOL KAFSCALE_TRACE_SAMPLE_RATIO
  local sink=""
  if [ "$ratio" != off ]; then
    python3 loadtest/scripts/otlp_sink.py $SINK_PORT "$out/sink.txt" & sink=$!
    export KAFSCALE_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT KAFSCALE_OTLP_PROTOCOL=http/protobuf \
      KAFSCALE_TRACE_SAMPLE_RATIO=$ratio
  fi
  $cluster start 1 1 >/dev/null
  local lt="$LT --bootstrap 127.0.0.1:29092 --record-size 1024 --partitions 12 --acks all --producers 2 --quiet"
  $lt --topic flat --records 200000 --json "$out/flat.json" >/dev/null
  $lt --topic rate --records 100000 --rate 20000 --json "$out/rate.json" >/dev/null
  $cluster stop
  local received="no export"
  if [ -n "$sink" ]; then
    sleep 1; kill -TERM "$sink"; wait "$sink" || true
    received=$(awk '{printf "sink got %d requests, %.1f MB", $1, $2 / 1e6}' "$out/sink.txt")
  fi
  printf '%-9s round %s  unthrottled %s  |  20 MB/s %s  |  %s\n' "$label" "$round" \
    "$(field "$out/flat.json" '{t[mb_per_sec]:.1f} MB/s p50 {l[p50_ms]:.1f} p99 {l[p99_ms]:.1f} ms')" \
    "$(field "$out/rate.json" 'p50 {l[p50_ms]:.1f} p99 {l[p99_ms]:.1f} p99.9 {l[p999_ms]:.1f} ms')" \
    "$received"
  rm -rf "$out"
}

trap '$cluster stop' EXIT
# The ports must be free: a cluster left running would be measured instead.
if curl -sf http://127.0.0.1:22500/readyz >/dev/null 2>&1; then
  echo "a process already serves 127.0.0.1:22500: stop it first (loadtest/scripts/cluster.sh stop)" >&2
  exit 1
fi
for r in $(seq "$ROUNDS"); do
  run_one off off "$r"
  run_one "ratio 1" 1.0 "$r"
  run_one "ratio .01" 0.01 "$r"
done
