#!/usr/bin/env bash
# Storage-lifecycle benchmark (issue 11), release build, distributed mode on
# etcd + moto (loadtest/scripts/cluster.sh, 1 worker + 1 gateway):
#   1. storage held while producing 4x past retention.bytes (must stay flat),
#      and S3 requests (PUT, GET, DELETE, LIST) per GiB ingested, compaction
#      and GC included;
#   2. cold catch-up read (worker restarted, data in segments) vs a read of
#      the same records from the tail cache, MB/s, and a tailing consumer's
#      end-to-end latency alone and during a cold catch-up (starvation);
#   3. time to open partitions with a long history (many small WAL objects):
#      compaction off (every WAL footer read, as before segments) vs on.
#   loadtest/scripts/lifecycle.sh            # prints a report; ~15 minutes
# Needs etcd, moto_server and python3 with boto3 (what scripts/test.sh installs).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}
LT=$T/release/kafscale-loadtest
export KS_BENCH_DIR=${KS_BENCH_DIR:-/tmp/kafscale-lifecycle}
GW=127.0.0.1:29092
METRICS=http://127.0.0.1:22500/metrics
cluster=loadtest/scripts/cluster.sh

# objects and bytes in the bucket: "<objects> <MiB> <wal objects> <segments>"
bucket() {
  python3 - <<'PY'
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:22381", aws_access_key_id="k",
                  aws_secret_access_key="s", region_name="us-east-1")
n = size = wal = seg = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench"):
    for o in page.get("Contents", []):
        n += 1; size += o["Size"]
        wal += "/wal/" in o["Key"]; seg += "/seg/" in o["Key"]
print(n, round(size / 2**20, 1), wal, seg)
PY
}

# S3 request counts of the worker: "put get delete list"
s3_requests() {
  curl -s "$METRICS" | awk '
    /^kafscale_s3_requests_total/ {
      op = $0; sub(/.*op="/, "", op); sub(/".*/, "", op)
      if (op == "get_range") op = "get"
      n[op] += $NF
    }
    END { printf "%d %d %d %d\n", n["put"], n["get"], n["delete"], n["list"] }'
}

# The restarted worker gets what cluster.sh gave it: the cluster's endpoints
# and the phase's exported KAFSCALE_* settings.
restart_worker() {
  local old; old=$(cat "$KS_BENCH_DIR/w0.pid")
  kill -9 "$old"
  local start; start=$(date +%s.%N)
  # Its ports are free once it is gone.
  for _ in $(seq 500); do kill -0 "$old" 2>/dev/null || break; sleep 0.01; done
  # exec: the background job is the worker itself, holding no pipe of ours
  # (a command substitution of this function would never see EOF).
  ( cd /tmp && exec env KAFSCALE_ETCD_ENDPOINTS=http://127.0.0.1:22379 KAFSCALE_S3_BUCKET=bench \
      KAFSCALE_S3_ENDPOINT=http://127.0.0.1:22381 KAFSCALE_S3_PATH_STYLE=true \
      KAFSCALE_S3_ACCESS_KEY=k KAFSCALE_S3_SECRET_KEY=s KAFSCALE_WORKER_ID=w0 \
      KAFSCALE_GRPC_ADDR=127.0.0.1:22400 KAFSCALE_HTTP_ADDR=127.0.0.1:22500 \
      "$T/release/kafscale" logworker ) </dev/null >>"$KS_BENCH_DIR/w0.log" 2>&1 &
  echo $! >"$KS_BENCH_DIR/w0.pid"
  for _ in $(seq 600); do curl -sf http://127.0.0.1:22500/readyz >/dev/null && break; sleep 0.05; done
  echo "$(date +%s.%N) $start" | awk '{printf "%.2f", $1 - $2}'
}

consume_mbs() { # topic records
  "$LT" --bootstrap $GW --mode consume --topic "$1" --records "$2" --from-beginning --quiet \
    --json - 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["consume"]["throughput"]["mb_per_sec"], 1))'
}

# a tailing producer + consumer at 5 MB/s for 10 s: "e2e p50 p99" (ms)
tail_run() {
  "$LT" --bootstrap $GW --topic "tail-$1" --partitions 6 --records 50000 --rate 5000 --record-size 1024 \
    --acks all --quiet --json - 2>/dev/null | python3 -c '
import json,sys; l=json.load(sys.stdin)["consume"]["e2e_latency_ms"]; print(l["p50_ms"], l["p99_ms"])'
}

# No cluster outlives the script, whichever part it ends in.
trap '$cluster stop' EXIT
# Every part: short leases (restarts), compaction looked at every second.
export KAFSCALE_LEASE_TTL_MS=3000 KAFSCALE_COMPACTION_INTERVAL_MS=1000
PARTS=" ${PARTS:-1 2 3} "   # e.g. PARTS="2 3" to skip part 1
if [[ $PARTS == *" 1 "* ]]; then
echo "== 1. storage held past retention (6 partitions, segment.bytes 4 MiB, retention.bytes 16 MiB each)"
export KAFSCALE_LOG_SEGMENT_BYTES=4194304 KAFSCALE_LOG_RETENTION_BYTES=16777216 KAFSCALE_LOG_RETENTION_MS=-1
$cluster start 1 1 >/dev/null
read -r p0 g0 d0 l0 < <(s3_requests)
for round in 1 2 3 4; do
  "$LT" --bootstrap $GW --topic lc --partitions 6 --records 100000 --record-size 1024 --acks all \
    --mode produce --quiet >/dev/null
  sleep 20
  echo "after $((round * 100)) MB produced: objects MiB wal segments = $(bucket)"
done
read -r p1 g1 d1 l1 < <(s3_requests)
echo "S3 requests for 0.381 GiB ingested (4 x 100k x 1 KiB): put $((p1 - p0)) get $((g1 - g0)) delete $((d1 - d0)) list $((l1 - l0))"
python3 -c "g=400*1024*1000/2**30; print('per GiB: put %.0f get %.0f delete %.0f list %.0f' % ($((p1 - p0))/g, $((g1 - g0))/g, $((d1 - d0))/g, $((l1 - l0))/g))"


fi

if [[ $PARTS == *" 2 "* ]]; then
echo "== 2. cold catch-up vs tail read (100k x 1 KiB, 6 partitions), and both at once"
# A fresh cluster without retention (every record stays readable from offset
# 0) and with 4 MiB segments.
$cluster stop
unset KAFSCALE_LOG_RETENTION_BYTES KAFSCALE_LOG_RETENTION_MS
export KAFSCALE_LOG_SEGMENT_BYTES=4194304
$cluster start 1 1 >/dev/null
"$LT" --bootstrap $GW --topic reads --partitions 6 --records 100000 --record-size 1024 --acks all \
  --mode produce --quiet >/dev/null
echo "read from the tail cache: $(consume_mbs reads 100000) MB/s"
sleep 15  # compaction cuts the segments
echo "tailing consumer alone, e2e p50 p99 ms: $(tail_run alone)"
echo "worker restarted (cold caches) in $(restart_worker) s"
echo "cold catch-up alone (segments in S3): $(consume_mbs reads 100000) MB/s"
echo "worker restarted (cold caches) in $(restart_worker) s"
consume_mbs reads 100000 >"$KS_BENCH_DIR/catchup.txt" &
catchup=$!
echo "tailing consumer during a cold catch-up, e2e p50 p99 ms: $(tail_run shared)"
wait $catchup
echo "cold catch-up during the tail run: $(cat "$KS_BENCH_DIR/catchup.txt") MB/s"
$cluster stop

fi

if [[ $PARTS == *" 3 "* ]]; then
echo "== 3. open time with a long history (6 partitions, 1,500 records/s for 60 s: ~1,200 WAL flushes)"
for mode in off on; do
  if [ $mode = off ]; then seg=1099511627776; segms=86400000; else seg=1048576; segms=5000; fi
  export KAFSCALE_LOG_SEGMENT_BYTES=$seg KAFSCALE_LOG_SEGMENT_MS=$segms
  unset KAFSCALE_LOG_RETENTION_BYTES KAFSCALE_LOG_RETENTION_MS
  $cluster start 1 1 >/dev/null
  "$LT" --bootstrap $GW --topic history --partitions 6 --records 90000 --rate 1500 --record-size 1024 \
    --acks all --mode produce --quiet >/dev/null
  sleep 15
  echo "compaction $mode: objects MiB wal segments = $(bucket); worker restart to ready: $(restart_worker) s; again: $(restart_worker) s"
  $cluster stop
done
fi
