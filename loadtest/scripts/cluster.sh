#!/usr/bin/env bash
# Starts a local distributed KafScale for benchmarks: etcd, moto (S3), N log
# workers and M gateways from the release build, on fixed loopback ports.
#   loadtest/scripts/cluster.sh start [workers=3] [gateways=2]   # gateways on 29092, 29093, ...
#   loadtest/scripts/cluster.sh restart   # SIGTERM workers and gateways, start them again
#   loadtest/scripts/cluster.sh stop
# Logs and data go to ${KS_BENCH_DIR:-/tmp/kafscale-bench}. Extra KAFSCALE_* variables in the
# environment are passed to every process (e.g. KAFSCALE_LEASE_TTL_MS).
# KS_S3_ENDPOINT=http://HOST:PORT uses that S3-compatible server (its bucket
# "bench" is created if absent) instead of starting moto.
set -euo pipefail
DIR=${KS_BENCH_DIR:-/tmp/kafscale-bench}
BIN=${KAFSCALE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}/release/kafscale}
cmd=${1:-start}

stop_processes() { # pid file patterns...
  local f
  for f in "$@"; do [ -f "$f" ] && kill "-$SIG" "$(cat "$f")" 2>/dev/null || true; done
}

# Workers and gateways; `restart` starts them again with the saved settings.
start_processes() {
  for i in $(seq 0 $((W-1))); do
    KAFSCALE_WORKER_ID=w$i KAFSCALE_GRPC_ADDR=127.0.0.1:$((22400+i)) KAFSCALE_HTTP_ADDR=127.0.0.1:$((22500+i)) \
      "$BIN" logworker >>"$DIR/w$i.log" 2>&1 & echo $! >"$DIR/w$i.pid"
  done
  for i in $(seq 0 $((G-1))); do
    KAFSCALE_KAFKA_ADDR=127.0.0.1:$((29092+i)) KAFSCALE_ADVERTISED_HOST=127.0.0.1 KAFSCALE_HTTP_ADDR=127.0.0.1:$((22600+i)) \
      "$BIN" gateway >>"$DIR/g$i.log" 2>&1 & echo $! >"$DIR/g$i.pid"
  done
  for i in $(seq 0 $((W-1))); do
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$((22500+i))/readyz >/dev/null && break; sleep 0.2; done
  done
}

case $cmd in
  stop)
    SIG=9 stop_processes "$DIR"/*.pid
    rm -f "$DIR"/*.pid
    exit 0 ;;
  restart)
    # shellcheck disable=SC1091
    . "$DIR/settings"
    SIG=TERM stop_processes "$DIR"/w*.pid "$DIR"/g*.pid
    for f in "$DIR"/w*.pid "$DIR"/g*.pid; do
      while kill -0 "$(cat "$f")" 2>/dev/null; do sleep 0.1; done
    done
    start_processes
    echo "cluster restarted"
    exit 0 ;;
esac

W=${2:-3}; G=${3:-2}
rm -rf "$DIR"; mkdir -p "$DIR"
etcd --name b --data-dir "$DIR/etcd" --listen-client-urls http://127.0.0.1:22379 \
  --advertise-client-urls http://127.0.0.1:22379 --listen-peer-urls http://127.0.0.1:22380 \
  --initial-advertise-peer-urls http://127.0.0.1:22380 --initial-cluster b=http://127.0.0.1:22380 \
  >"$DIR/etcd.log" 2>&1 & echo $! >"$DIR/etcd.pid"
S3=${KS_S3_ENDPOINT:-}
if [ -z "$S3" ]; then
  S3=http://127.0.0.1:22381
  moto_server -H 127.0.0.1 -p 22381 >"$DIR/moto.log" 2>&1 & echo $! >"$DIR/moto.pid"
  for _ in $(seq 50); do curl -sf $S3 >/dev/null 2>&1 && break; sleep 0.2; done
fi
python3 - "$S3" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="k",
                  aws_secret_access_key="s", region_name="us-east-1")
if "bench" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket="bench")
PY
export KAFSCALE_ETCD_ENDPOINTS=http://127.0.0.1:22379 KAFSCALE_S3_BUCKET=bench \
  KAFSCALE_S3_ENDPOINT=$S3 KAFSCALE_S3_PATH_STYLE=true \
  KAFSCALE_S3_ACCESS_KEY=k KAFSCALE_S3_SECRET_KEY=s
{ echo "W=$W G=$G BIN=$BIN"; env | grep '^KAFSCALE_' | sed 's/^/export /'; } >"$DIR/settings"
start_processes
echo "cluster up: gateways 127.0.0.1:29092..$((29092+G-1)), worker metrics http://127.0.0.1:22500.., logs in $DIR"
