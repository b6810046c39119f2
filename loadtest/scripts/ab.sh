#!/usr/bin/env bash
# A/B produce benchmark of two kafscale builds in one session, interleaved
# (A B A B ...) so that machine noise hits both alike.
#
#   loadtest/scripts/ab.sh A_DIR B_DIR [ROUNDS]
#
# A_DIR and B_DIR each hold a release `kafscale` and `kafscale-loadtest`.
# Every run starts a fresh `kafscale dev` (own data dir, free ports) and runs
#   1. unthrottled: --records 200000 --record-size 1024 --partitions 12 --acks all --producers 2
#   2. fixed 20 MB/s: --records 100000 --rate 20000 (same shape)
# and prints one line per run: build, round, unthrottled MB/s and p99, fixed-rate p50/p99/p99.9.
set -euo pipefail
A=${1:?A_DIR}
B=${2:?B_DIR}
ROUNDS=${3:-2}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=d['produce']; print(sys.argv[2].format(t=p['throughput'], l=p['latency_ms'] or {}))" "$@"; }

run_one() {
  local dir=$1 label=$2 round=$3
  local data kport hport gport log
  data=$(mktemp -d /tmp/kafscale-ab-XXXXXX)
  kport=$(free_port); hport=$(free_port); gport=$(free_port)
  log=$data/server.log
  KAFSCALE_LOG_LEVEL=warn "$dir/kafscale" dev --data-dir "$data/d" \
    --kafka-addr "127.0.0.1:$kport" --advertised-host 127.0.0.1 --advertised-port "$kport" \
    --http-addr "127.0.0.1:$hport" --grpc-addr "127.0.0.1:$gport" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$hport/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  local lt="$dir/kafscale-loadtest --bootstrap 127.0.0.1:$kport --record-size 1024 --partitions 12 --acks all --producers 2"
  $lt --topic flat --records 200000 --json "$data/flat.json" >/dev/null
  $lt --topic rate --records 100000 --rate 20000 --json "$data/rate.json" >/dev/null
  kill -TERM "$pid"; wait "$pid" || true
  printf '%s round %s  unthrottled %s  |  20 MB/s %s\n' "$label" "$round" \
    "$(field "$data/flat.json" '{t[mb_per_sec]:.1f} MB/s p99 {l[p99_ms]:.1f} ms')" \
    "$(field "$data/rate.json" 'p50 {l[p50_ms]:.1f} p99 {l[p99_ms]:.1f} p99.9 {l[p999_ms]:.1f} ms')"
  rm -rf "$data"
}

for r in $(seq "$ROUNDS"); do
  run_one "$A" A "$r"
  run_one "$B" B "$r"
done
