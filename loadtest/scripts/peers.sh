#!/usr/bin/env bash
# Side-by-side benchmark against a peer (issue 15): the same load, on this
# machine, against
#   dev        `kafscale dev` (embedded: no etcd, no S3)
#   dev-mem    `kafscale dev` with KAFSCALE_DEV_STORAGE=memory (no disk I/O)
#   dist       distributed mode: etcd + S3, ${DIST_WORKERS:-3} workers, ${DIST_GATEWAYS:-2} gateways,
#              PUT payloads ${DIST_PAYLOAD_SIGNING:-unsigned} (KAFSCALE_S3_PAYLOAD_SIGNING: unsigned is
#              what the default, auto, picks on HTTPS, as on AWS; s3s-fs here is
#              plain HTTP on loopback, where auto would sign)
#   tansu-mem  Tansu 0.6.0, memory engine
#   tansu-s3   Tansu 0.6.0, S3 engine
# with both S3 systems on the same s3s-fs server, behind s3-count-proxy (which
# counts S3 requests by operation for every system alike; with S3_DELAY_MS it
# also holds every request that long, the time to first byte of a remote
# object store such as S3 in-region, for both systems alike). Rounds are
# interleaved (each round runs every system once, from a fresh start) and the
# report gives medians over the rounds, with ratios to the peer (dev and
# dev-mem to tansu-mem, dist to tansu-s3).
#
#   cargo build --release -p kafscale -p kafscale-loadtest --bins
#   loadtest/scripts/peers.sh                 # 3 rounds, ~25 minutes
#   ROUNDS=1 SYSTEMS="dev tansu-mem" RECORDS=100000 loadtest/scripts/peers.sh
#   KS_BIN=/path/to/other/kafscale SYSTEMS=dist ...   # another build of ours
#
# Per system and round:
#   lg-produce   our load generator, RECORDS x 1 KiB, PARTITIONS partitions,
#                acks=all, linger 5 ms, flat out: MB/s, p50, p99; the server
#                CPU seconds and S3 requests it took
#   lg-consume   the same records read back from offset 0: MB/s
#   lg-rate      RATE records/s for RATE_SECS s, produced and consumed at
#                once: produce p50/p99 and end-to-end p99 at a fixed rate
#   rk-produce   librdkafka's rdkafka_performance, the same load: MB/s
#   rk-consume   rdkafka_performance reading it back from offset 0: MB/s
#   lg-cold      after a restart of the system's own processes (not for
#                tansu-mem and dev-mem, which lose their data), the lg-produce records
#                read back from offset 0 again: MB/s with no cache warm
# Peak RSS is the sum of the system's own processes (not etcd or s3s-fs);
# CPU is reported for the system's own processes and with etcd and the S3
# server included.
#
# Tools it needs are installed on first use under ${KS_PEERS_DIR:-~/.cache/kafscale-peers}:
# tansu 0.6.0 and s3s-fs 0.14.1 (cargo install, ~10 min), rdkafka_performance
# (built from the librdkafka sources of the rdkafka-sys crate, ~2 min).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
T=${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}
KS=${KS_BIN:-$T/release/kafscale}
LT=$T/release/kafscale-loadtest
PROXY=$T/release/s3-count-proxy
PEERS=${KS_PEERS_DIR:-$HOME/.cache/kafscale-peers}
OUT=${KS_PEERS_OUT:-/tmp/kafscale-peers}
ROUNDS=${ROUNDS:-3}
SYSTEMS=${SYSTEMS:-dev dev-mem dist tansu-mem tansu-s3}
RECORDS=${RECORDS:-500000}
PARTITIONS=${PARTITIONS:-6}
RATE=${RATE:-5000}
RATE_SECS=${RATE_SECS:-10}
DIST_WORKERS=${DIST_WORKERS:-3}
DIST_GATEWAYS=${DIST_GATEWAYS:-2}
S3_PORT=23000
PROXY_PORT=23001
BROKER=127.0.0.1:29092
mkdir -p "$PEERS/bin" "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

# --- tools -----------------------------------------------------------------
for f in "$KS" "$LT" "$PROXY"; do
  [ -x "$f" ] || { echo "missing $f: cargo build --release -p kafscale -p kafscale-loadtest --bins" >&2; exit 2; }
done
if [ ! -x "$PEERS/bin/tansu" ]; then
  cargo install tansu --version 0.6.0 --locked --no-default-features --features dynostore \
    --root "$PEERS" --target-dir "$PEERS/build"
fi
if [ ! -x "$PEERS/bin/s3s-fs" ]; then
  cargo install s3s-fs@0.14.1 --locked --features binary --root "$PEERS" --target-dir "$PEERS/build"
fi
if [ ! -x "$PEERS/bin/rdkafka_performance" ]; then
  src=$(ls -d "$HOME"/.cargo/registry/src/*/rdkafka-sys-*/librdkafka | sort | tail -1)
  rm -rf "$PEERS/librdkafka" && cp -r "$src" "$PEERS/librdkafka"
  (cd "$PEERS/librdkafka" && ./configure --disable-ssl --disable-gssapi --disable-curl --disable-sasl \
    >/dev/null && make -j2 -C src librdkafka.a >/dev/null && make -C examples rdkafka_performance >/dev/null)
  cp "$PEERS/librdkafka/examples/rdkafka_performance" "$PEERS/bin/"
fi
RK=$PEERS/bin/rdkafka_performance

# --- processes -------------------------------------------------------------
SYS_PIDS=()   # the system's own processes
INFRA_PIDS=() # etcd and the S3 server

proc_sum() { # awk-program pids... -> the program's value summed over the processes
  local prog=$1 t=0 p; shift
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk "$prog" "/proc/$p/${FILE:-stat}")))
  done
  echo $t
}
# Clock ticks of user + system time; peak RSS (VmHWM) in KiB.
cpu_ticks() { proc_sum '{print $14 + $15}' "$@"; }
peak_rss_kb() { FILE=status proc_sum '/^VmHWM/ {print $2}' "$@"; }
s3_counts() { curl -sf "http://127.0.0.1:$PROXY_PORT/__counts" || echo '{}'; }
wait_kafka() {
  for _ in $(seq 150); do
    (exec 3<>/dev/tcp/127.0.0.1/29092) 2>/dev/null && return 0
    sleep 0.2
  done
  echo "broker did not start" >&2; return 1
}

start_s3() {
  rm -rf "$OUT/s3" && mkdir -p "$OUT/s3/bench"
  "$PEERS/bin/s3s-fs" --host 127.0.0.1 --port $S3_PORT --access-key k --secret-key s "$OUT/s3" \
    >"$OUT/s3s-fs.log" 2>&1 &
  INFRA_PIDS+=($!); disown
  "$PROXY" 127.0.0.1:$PROXY_PORT 127.0.0.1:$S3_PORT ${S3_DELAY_MS:-} >"$OUT/proxy.log" 2>&1 &
  PROXY_PID=$!; disown
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PROXY_PORT/__counts" >/dev/null && break; sleep 0.1; done
}

start() { # system
  SYS_PIDS=(); INFRA_PIDS=(); PROXY_PID=
  rm -rf "$OUT/dev"
  case $1 in
    dist)
      start_s3
      KAFSCALE_S3_PAYLOAD_SIGNING=${DIST_PAYLOAD_SIGNING:-unsigned} \
      KAFSCALE_BIN=$KS KS_BENCH_DIR=$OUT/cluster KS_S3_ENDPOINT=http://127.0.0.1:$PROXY_PORT \
        loadtest/scripts/cluster.sh start "$DIST_WORKERS" "$DIST_GATEWAYS" >/dev/null
      INFRA_PIDS+=("$(cat "$OUT/cluster/etcd.pid")") ;;
    tansu-s3) start_s3 ;;
  esac
  start_server "$1"
}

start_server() { # system: its own processes, on the state left by the last ones
  case $1 in
    dev|dev-mem)
      local storage=disk
      [ "$1" = dev-mem ] && storage=memory
      KAFSCALE_DEV_STORAGE=$storage KAFSCALE_DATA_DIR=$OUT/dev KAFSCALE_KAFKA_ADDR=$BROKER \
        KAFSCALE_HTTP_ADDR=127.0.0.1:22600 KAFSCALE_ADVERTISED_HOST=127.0.0.1 "$KS" dev \
        >>"$OUT/$1.log" 2>&1 &
      SYS_PIDS=($!); disown ;;
    dist)
      SYS_PIDS=()
      for f in "$OUT"/cluster/w*.pid "$OUT"/cluster/g*.pid; do SYS_PIDS+=("$(cat "$f")"); done ;;
    tansu-mem|tansu-s3)
      local engine=memory://tansu/
      [ "$1" = tansu-s3 ] && engine=s3://bench/
      AWS_ENDPOINT=http://127.0.0.1:$PROXY_PORT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=k \
        AWS_SECRET_ACCESS_KEY=s AWS_DEFAULT_REGION=us-east-1 \
        "$PEERS/bin/tansu" broker --storage-engine "$engine" \
        --listener-url tcp://$BROKER --advertised-listener-url tcp://$BROKER \
        >>"$OUT/$1.log" 2>&1 &
      SYS_PIDS=($!); disown ;;
  esac
  wait_kafka
}

restart_server() { # system: stop its own processes (SIGTERM) and start them again
  if [ "$1" = dist ]; then
    KS_BENCH_DIR=$OUT/cluster loadtest/scripts/cluster.sh restart >/dev/null
  else
    local p
    for p in "${SYS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${SYS_PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  fi
  start_server "$1"
}

stop() {
  if [ -d "$OUT/cluster" ]; then KS_BENCH_DIR=$OUT/cluster loadtest/scripts/cluster.sh stop; fi
  for p in "${SYS_PIDS[@]}" "${INFRA_PIDS[@]}" ${PROXY_PID:-}; do kill -9 "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$OUT/cluster" "$OUT/s3" "$OUT/dev"
}
trap stop EXIT

record() { # round system test json
  python3 -c 'import json,sys; print(json.dumps({"round": int(sys.argv[1]), "system": sys.argv[2], "test": sys.argv[3], **json.loads(sys.argv[4])}))' \
    "$@" >>"$RESULTS"
}

lg() { # args... -> JSON report on stdout
  "$LT" --bootstrap $BROKER --record-size 1024 --partitions "$PARTITIONS" --acks all \
    --linger-ms 5 --quiet --json - "$@" 2>>"$OUT/loadgen.log"
}

rk_mbps() { # rdkafka_performance args... -> MB/s of its final summary
  "$RK" -b $BROKER "$@" 2>&1 | tee -a "$OUT/rdkafka_performance.log" | python3 -c '
import re, sys
rates = re.findall(r"([\d.]+) MB/s", sys.stdin.read())
print(rates[-1] if rates else 0)'
}

run_system() { # round system
  local r=$1 s=$2 hz rss=
  hz=$(getconf CLK_TCK)
  start "$s"
  sleep 2
  local s3_0 c0 a0 c1 a1 json
  s3_0=$(s3_counts)
  c0=$(cpu_ticks "${SYS_PIDS[@]}"); a0=$(cpu_ticks "${SYS_PIDS[@]}" "${INFRA_PIDS[@]}")
  json=$(lg --topic lg-$r --mode produce --records "$RECORDS")
  c1=$(cpu_ticks "${SYS_PIDS[@]}"); a1=$(cpu_ticks "${SYS_PIDS[@]}" "${INFRA_PIDS[@]}")
  record "$r" "$s" lg-produce "$(python3 -c '
import json, sys
p = json.loads(sys.argv[1])["produce"]; hz = float(sys.argv[4])
gib = p["bytes_acked"] / 2**30
lat = p["latency_ms"] or {}
print(json.dumps({"mb_s": p["throughput"]["mb_per_sec"], "p50_ms": lat.get("p50_ms"),
  "p99_ms": lat.get("p99_ms"), "gib": gib,
  "cpu_s_per_gib": (int(sys.argv[2]) / hz) / gib if gib else None,
  "cpu_all_s_per_gib": (int(sys.argv[3]) / hz) / gib if gib else None}))' \
    "$json" $((c1 - c0)) $((a1 - a0)) "$hz")"
  json=$(lg --topic lg-$r --mode consume --from-beginning --records "$RECORDS")
  record "$r" "$s" lg-consume "$(python3 -c '
import json, sys
c = json.loads(sys.argv[1])["consume"]
print(json.dumps({"mb_s": c["throughput"]["mb_per_sec"]}))' "$json")"
  json=$(lg --topic rate-$r --mode both --rate "$RATE" --records $((RATE * RATE_SECS)))
  record "$r" "$s" lg-rate "$(python3 -c '
import json, sys
d = json.loads(sys.argv[1]); p = d["produce"]["latency_ms"] or {}; e = d["consume"]["e2e_latency_ms"] or {}
print(json.dumps({"p50_ms": p.get("p50_ms"), "p99_ms": p.get("p99_ms"), "e2e_p99_ms": e.get("p99_ms")}))' "$json")"
  # rdkafka_performance does not create topics: our generator makes it (one record).
  lg --topic rk-$r --mode produce --records 1 >/dev/null
  record "$r" "$s" rk-produce "{\"mb_s\": $(rk_mbps -P -t rk-$r -s 1024 -c "$RECORDS" -X acks=all -X linger.ms=5)}"
  record "$r" "$s" rk-consume "{\"mb_s\": $(rk_mbps -G rk-$r -X auto.offset.reset=earliest -t rk-$r -c "$RECORDS")}"
  if [ "$s" != tansu-mem ] && [ "$s" != dev-mem ]; then
    # Cold: the same records from offset 0 after a restart (no cache holds them).

    rss=$(peak_rss_kb "${SYS_PIDS[@]}")
    restart_server "$s"
    sleep 2
    json=$(lg --topic lg-$r --mode consume --from-beginning --records "$RECORDS")
    record "$r" "$s" lg-cold "$(python3 -c '
import json, sys
c = json.loads(sys.argv[1])["consume"]
print(json.dumps({"mb_s": c["throughput"]["mb_per_sec"]}))' "$json")"
  fi
  record "$r" "$s" totals "$(python3 -c '
import json, sys
before, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
gib = (2 * int(sys.argv[3]) + int(sys.argv[4])) * 1024 / 2**30  # lg-, rk-produce and rate records
ops = {k: (after.get(k, 0) - before.get(k, 0)) / gib for k in after}
print(json.dumps({"rss_mb": int(sys.argv[5]) / 1024, "s3_per_gib": ops}))' \
    "$s3_0" "$(s3_counts)" "$RECORDS" $((RATE * RATE_SECS)) "${rss:-$(peak_rss_kb "${SYS_PIDS[@]}")}")"
  stop
}

for r in $(seq "$ROUNDS"); do
  for s in $SYSTEMS; do
    echo "round $r: $s" >&2
    run_system "$r" "$s"
  done
done
python3 "$ROOT/loadtest/scripts/peers_report.py" "$RESULTS"
