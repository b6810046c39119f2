#!/usr/bin/env bash
# What TLS, SASL and quotas cost and deliver (issue 12), in one session:
#
#  1. Produce throughput and p99 on PLAINTEXT, SSL, SASL_PLAINTEXT and
#     SASL_SSL (SCRAM-SHA-512), interleaved rounds, ratios to PLAINTEXT.
#  2. Achieved produce and consume rates under producer_byte_rate and
#     consumer_byte_rate quotas, against the configured rate.
#
#   loadtest/scripts/security.sh [ROUNDS]        # default 2
#   PARTS=2 loadtest/scripts/security.sh         # quotas only
#
# Needs release builds of `kafscale` and `kafscale-loadtest`
# (cargo build --release -p kafscale -p kafscale-loadtest --bins) in
# $CARGO_TARGET_DIR, and openssl for the test certificates. Each run starts
# a fresh `kafscale dev` on free ports and stops it on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-2}
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}/release}
WORK=$(mktemp -d /tmp/kafscale-security-XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A CA and a server certificate for 127.0.0.1.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
  -CAcreateserial -days 1 -extfile "$WORK/san.ext" -out "$WORK/server.pem" 2>/dev/null

KPORT=""
start() { # protocol
  local data=$WORK/data-$RANDOM hport gport
  KPORT=$(free_port); hport=$(free_port); gport=$(free_port)
  KAFSCALE_LOG_LEVEL=warn KAFSCALE_SECURITY_PROTOCOL=$1 \
    KAFSCALE_TLS_CERT_FILE=$WORK/server.pem KAFSCALE_TLS_KEY_FILE=$WORK/server.key \
    KAFSCALE_SASL_USERS=bench:bench-secret \
    "$BIN/kafscale" dev --data-dir "$data" \
    --kafka-addr "127.0.0.1:$KPORT" --advertised-host 127.0.0.1 --advertised-port "$KPORT" \
    --http-addr "127.0.0.1:$hport" --grpc-addr "127.0.0.1:$gport" >"$data.log" 2>&1 &
  PID=$!
  for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$hport/readyz" >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "kafscale dev ($1) did not become ready" >&2; cat "$data.log" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }

client_props() { # protocol -> --producer-prop/--consumer-prop arguments
  local p=()
  case $1 in
    SSL|SASL_SSL) p+=("security.protocol=$1" "ssl.ca.location=$WORK/ca.pem") ;;
    SASL_PLAINTEXT) p+=("security.protocol=$1") ;;
  esac
  case $1 in
    SASL_*) p+=("sasl.mechanisms=SCRAM-SHA-512" "sasl.username=bench" "sasl.password=bench-secret") ;;
  esac
  for kv in "${p[@]}"; do printf -- '--producer-prop %s --consumer-prop %s ' "$kv" "$kv"; done
}

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=d[sys.argv[2]]; print(sys.argv[3].format(t=p['throughput'], l=p.get('latency_ms') or {}))" "$@"; }

LT1="$BIN/kafscale-loadtest --record-size 1024 --partitions 12 --acks all --quiet"
LT="$LT1 --producers 2"
PARTS=${PARTS:-1 2}

case " $PARTS " in *" 1 "*)
echo "# 1. TLS and SASL: produce flat out (200,000 x 1 KiB) and at 20 MB/s"
for r in $(seq "$ROUNDS"); do
  for proto in PLAINTEXT SSL SASL_PLAINTEXT SASL_SSL; do
    start "$proto"
    # shellcheck disable=SC2046
    $LT --bootstrap "127.0.0.1:$KPORT" --mode produce --topic flat --records 200000 \
      $(client_props "$proto") --json "$WORK/flat.json" >/dev/null
    # shellcheck disable=SC2046
    $LT --bootstrap "127.0.0.1:$KPORT" --mode produce --topic rate --records 100000 --rate 20000 \
      $(client_props "$proto") --json "$WORK/rate.json" >/dev/null
    stop
    printf 'round %s %-15s flat %s | 20 MB/s %s\n' "$r" "$proto" \
      "$(field "$WORK/flat.json" produce '{t[mb_per_sec]:.1f} MB/s p99 {l[p99_ms]:.1f} ms')" \
      "$(field "$WORK/rate.json" produce 'p50 {l[p50_ms]:.1f} p99 {l[p99_ms]:.1f} ms')"
  done
done

esac

case " $PARTS " in *" 2 "*)
# One producer and one consumer (a quota is per client-id), each for about
# 20 s at the quota, so the burst a quota allows at the start (one second's
# worth) adds about 5 % to the rate.
echo "# 2. Quotas: achieved rate against the configured one (client-id default entity)"
for quota in 5000000 20000000; do
  records=$((quota / 1024 * 20))
  start PLAINTEXT
  python3 loadtest/scripts/set_quota.py "127.0.0.1:$KPORT" "client-id=" \
    "producer_byte_rate=$quota" "consumer_byte_rate=$quota"
  $LT1 --bootstrap "127.0.0.1:$KPORT" --mode produce --topic q --records "$records" \
    --json "$WORK/qp.json" >/dev/null
  $LT1 --bootstrap "127.0.0.1:$KPORT" --mode consume --topic q --records "$records" --from-beginning \
    --json "$WORK/qc.json" >/dev/null
  stop
  printf 'quota %5.1f MB/s  produce %s  consume %s\n' "$(python3 -c "print($quota/1e6)")" \
    "$(field "$WORK/qp.json" produce '{t[mb_per_sec]:.2f} MB/s p99 {l[p99_ms]:.0f} ms')" \
    "$(field "$WORK/qc.json" consume '{t[mb_per_sec]:.2f} MB/s')"
done
;;
esac
