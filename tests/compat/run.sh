#!/usr/bin/env bash
# Runs third-party Kafka client test suites against `kafscale dev`:
#
#   * librdkafka's own test suite (tests/ of the librdkafka sources bundled in the rdkafka-sys
#     crate that Cargo.lock pins), core set, with -L -E -K -Q and TEST_KAFKA_VERSION=3.9.0;
#   * kafka-python's integration tests (test/integration of its PyPI sdist), minus the skips
#     listed in tests/compat/kafka-python-skips.txt.
#
# Nothing of either suite lives in this repository: both are fetched from the package
# registries (crates.io through cargo, PyPI through pip) and built in a cache outside the
# clone, reused by later runs. Each suite gets its own `kafscale dev` on free loopback ports
# with a temporary data directory. Prints a per-suite table and a closing
# "N passed, N failed" line; exits non-zero if anything failed.
#
# Environment (all optional):
#   KAFSCALE_COMPAT_CACHE     cache dir (default ~/.cache/kafscale-compat)
#   KAFSCALE_COMPAT_OUT       logs of this run (default $KAFSCALE_COMPAT_CACHE/last-run; wiped)
#   KAFSCALE_COMPAT_SUITES    comma list of suites (default librdkafka,kafka-python)
#   KAFSCALE_COMPAT_RDK_TESTS comma list of librdkafka test numbers (default: the core set)
#   KAFSCALE_COMPAT_RDK_TIMEOUT  seconds per librdkafka test (default 240)
#   KAFSCALE_COMPAT_KP_TESTS  pytest selection (-k expression) for kafka-python (default all)
#   KAFSCALE_COMPAT_KP_TIMEOUT   seconds per kafka-python test (default 120)
#   KAFSCALE_COMPAT_KP_KAFKA_VERSION  broker version kafka-python's tests assume (default 4.0.0)
#   KAFSCALE_COMPAT_KP_LOG_LEVEL  client log level captured for failed kafka-python tests (INFO)
#   KAFSCALE_COMPAT_BUILD=1   run `cargo build --bin kafscale` even if the binary exists
#   KAFSCALE_BIN              use this kafscale binary
#   KAFSCALE_LOG_LEVEL        server log level (default info; logs in $KAFSCALE_COMPAT_OUT)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}"
CACHE="${KAFSCALE_COMPAT_CACHE:-$HOME/.cache/kafscale-compat}"
OUT="${KAFSCALE_COMPAT_OUT:-$CACHE/last-run}"
SUITES="${KAFSCALE_COMPAT_SUITES:-librdkafka,kafka-python}"
RDK_TESTS="${KAFSCALE_COMPAT_RDK_TESTS:-0001,0002,0003,0005,0007,0008,0012,0013,0014,0015,0017,0018,0019,0020,0021,0022,0026,0029,0030,0031,0033,0034,0035,0036,0039,0040,0041,0042,0048,0050,0051,0053,0056,0057,0060,0063,0064,0065,0067,0070,0073,0082,0083,0084,0085,0089,0091,0093,0099,0110,0114,0118,0122,0125,0127,0130,0132,0140}"
RDK_TIMEOUT="${KAFSCALE_COMPAT_RDK_TIMEOUT:-240}"
KP_TESTS="${KAFSCALE_COMPAT_KP_TESTS:-}"
KP_TIMEOUT="${KAFSCALE_COMPAT_KP_TIMEOUT:-120}"
KAFKA_PYTHON_VERSION=3.0.12
# What kafka-python's test/integration needs besides kafka-python itself (run from the sdist):
# pytest plugins from its [testing] extra, and the codecs its compression tests exercise.
KP_REQUIREMENTS="pytest pytest-mock pytest-timeout lz4 zstandard python-snappy crc32c"
BROKER_VERSION=3.9.0
# kafka-python's tests are run as against Kafka 4.0, the version whose behaviour we match where
# the suite tells versions apart: broker configs are static and read-only (advertised.listeners
# is STATIC_BROKER_CONFIG), and DescribeTopicPartitions exists.
KP_BROKER_VERSION="${KAFSCALE_COMPAT_KP_KAFKA_VERSION:-4.0.0}"
# librdkafka's trivup clusters and kafka-python's fixture both auto-create topics with 4
# partitions (num.partitions=4); the suites count on it.
PARTITIONS=4
# group.initial.rebalance.delay.ms: trivup leaves Kafka's default (3 s), and librdkafka's tests
# count on it (0118 needs both consumers in the first generation; 0113 waits "3000 ms
# (default)"); kafka-python's broker config sets 0.
RDK_INITIAL_REBALANCE_DELAY_MS=3000
KP_INITIAL_REBALANCE_DELAY_MS=0
PY="${PYTHON:-python3}"
COMPAT="$PY $HERE/compat.py"

log() { printf '[compat] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

mkdir -p "$CACHE"
rm -rf "$OUT"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"

# ---------------------------------------------------------------------------
# kafscale dev
# ---------------------------------------------------------------------------
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
  [ -n "${SERVER_DATA:-}" ] && rm -rf "$SERVER_DATA"
  SERVER_DATA=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

kafscale_bin() {
  BIN="${KAFSCALE_BIN:-$CARGO_TARGET_DIR/debug/kafscale}"
  if [ -z "${KAFSCALE_BIN:-}" ] && { [ ! -x "$BIN" ] || [ "${KAFSCALE_COMPAT_BUILD:-0}" = 1 ]; }; then
    log "building kafscale (cargo build --bin kafscale)"
    (cd "$ROOT" && cargo build --bin kafscale)
  fi
  [ -x "$BIN" ] || die "no kafscale binary at $BIN"
  log "kafscale binary: $BIN ($(date -r "$BIN" '+%F %T'))"
}

# start_server NAME [VAR=VALUE...]: sets PORT, SERVER_PID; logs to $OUT/NAME/server.log.
# Extra VAR=VALUE pairs mirror settings of the broker config the suite is normally run with.
start_server() {
  local name="$1" http
  shift
  mkdir -p "$OUT/$name"
  SERVER_DATA="$(mktemp -d "${TMPDIR:-/tmp}/kafscale-compat-$name.XXXXXX")"
  { read -r PORT; read -r http; } < <($COMPAT free-ports 2)
  KAFSCALE_DATA_DIR="$SERVER_DATA" \
  KAFSCALE_KAFKA_ADDR="127.0.0.1:$PORT" \
  KAFSCALE_ADVERTISED_HOST=127.0.0.1 \
  KAFSCALE_HTTP_ADDR="127.0.0.1:$http" \
  KAFSCALE_AUTO_CREATE_TOPICS=true \
  KAFSCALE_AUTO_CREATE_PARTITIONS="$PARTITIONS" \
  KAFSCALE_LOG_LEVEL="${KAFSCALE_LOG_LEVEL:-info}" NO_COLOR=1 \
    env "$@" "$BIN" dev >"$OUT/$name/server.log" 2>&1 &
  SERVER_PID=$!
  if ! $COMPAT wait-ready "http://127.0.0.1:$http/readyz" 60; then
    tail -n 30 "$OUT/$name/server.log" >&2
    die "kafscale dev did not become ready"
  fi
  log "$name: kafscale dev pid $SERVER_PID on 127.0.0.1:$PORT (http $http), log $OUT/$name/server.log"
}

# ---------------------------------------------------------------------------
# librdkafka
# ---------------------------------------------------------------------------
rdkafka_sys_version() {
  awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

# Headers the librdkafka build and its tests need: zstd and zlib codecs, and RapidJSON, without
# which the tests that verify statistics JSON (0053, 0110) skip themselves.
librdkafka_build_deps() {
  local need=()
  [ -f /usr/include/zstd.h ] || need+=(libzstd-dev)
  [ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
  [ -f /usr/include/rapidjson/schema.h ] || need+=(rapidjson-dev)
  command -v g++ >/dev/null && command -v make >/dev/null || need+=(build-essential)
  if ((${#need[@]})) && command -v apt-get >/dev/null; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    log "installing ${need[*]} (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

prepare_librdkafka() {
  local ver src dir stamp
  ver="$(rdkafka_sys_version)"
  [ -n "$ver" ] || die "rdkafka-sys not found in Cargo.lock"
  dir="$CACHE/librdkafka-$ver"
  RDK_DIR="$dir"
  librdkafka_build_deps
  stamp="rapidjson=$([ -f /usr/include/rapidjson/schema.h ] && echo y || echo n)"
  if [ "$(cat "$dir/.kafscale-built" 2>/dev/null)" = "$stamp" ] && [ -x "$dir/tests/test-runner" ]; then
    log "librdkafka test runner: $dir/tests/test-runner (cached, rdkafka-sys $ver)"
    return
  fi
  local registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
  src="$(ls -d "$registry"/*/"rdkafka-sys-$ver"/librdkafka 2>/dev/null | head -n1 || true)"
  if [ -z "$src" ]; then
    log "fetching rdkafka-sys $ver sources (cargo fetch)"
    (cd "$ROOT" && cargo fetch --locked)
    src="$(ls -d "$registry"/*/"rdkafka-sys-$ver"/librdkafka 2>/dev/null | head -n1 || true)"
  fi
  [ -n "$src" ] && [ -d "$src/tests" ] || die "librdkafka sources of rdkafka-sys $ver not found"
  log "building librdkafka $ver and its test runner in $dir (a few minutes, once)"
  rm -rf "$dir"
  cp -a "$src" "$dir"
  (
    cd "$dir"
    ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-curl
    make -j2 libs
    make -j2 -C tests build
  ) >"$CACHE/librdkafka-$ver.build.log" 2>&1 || {
    tail -n 40 "$CACHE/librdkafka-$ver.build.log" >&2
    die "librdkafka build failed (log: $CACHE/librdkafka-$ver.build.log)"
  }
  echo "$stamp" >"$dir/.kafscale-built"
}

run_librdkafka() {
  local out="$OUT/librdkafka" t start secs res detail
  prepare_librdkafka
  RDK_VERSION="$(rdkafka_sys_version)"
  start_server librdkafka KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS=$RDK_INITIAL_REBALANCE_DELAY_MS
  mkdir -p "$out"
  cat >"$out/test.conf" <<EOF
bootstrap.servers=127.0.0.1:$PORT
EOF
  IFS=',' read -r -a tests <<<"$RDK_TESTS"
  for t in "${tests[@]}"; do
    start=$(date +%s%N)
    # The runner reads test.conf (RDKAFKA_TEST_CONF) and writes its scratch files to its cwd.
    # (The inner shell reports a crash of the runner, e.g. "Aborted", into the log.)
    (
      cd "$RDK_DIR/tests"
      # Offset files the file offset store (0014) left in an earlier run: the runner's random
      # topic names repeat across runs now and then, and a stale file would start the consumer
      # at the old run's end (CI: 0014_reconsume_191 waited at EOF until it timed out).
      rm -f ./*.offset
      export LD_LIBRARY_PATH="../src:../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      TESTS="$t" TEST_KAFKA_VERSION="$BROKER_VERSION" RDKAFKA_TEST_CONF="$out/test.conf" \
        RDKAFKA_GITVER="librdkafka-$RDK_VERSION" \
        timeout -k 10 "$RDK_TIMEOUT" ./test-runner -L -E -K -Q
      exit $?
    ) >"$out/$t.log" 2>&1 && rc=0 || rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    IFS=$'\t' read -r res name detail < <(RDK_TESTS_DIR="$RDK_DIR/tests" $COMPAT rdk-result "$out/$t.log" "$t")
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      res=failed; detail="timed out after ${RDK_TIMEOUT}s${detail:+; $detail}"
    elif [ "$rc" != 0 ] && [ "$res" != failed ]; then
      res=failed; detail="test-runner exit code $rc${detail:+; $detail}"
    fi
    printf 'librdkafka\t%s\t%s\t%s\t%s\n' "$name" "$res" "$secs" "$detail" >>"$RESULTS"
    log "librdkafka $name: $res (${secs}s) $detail"
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "kafscale dev died; restarting it for the remaining tests"
      wait "$SERVER_PID" 2>/dev/null || true
      SERVER_PID=""
      stop_server
      start_server librdkafka KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS=$RDK_INITIAL_REBALANCE_DELAY_MS
      sed -i "s/^bootstrap.servers=.*/bootstrap.servers=127.0.0.1:$PORT/" "$out/test.conf"
    fi
  done
  stop_server
}

# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------
prepare_python() {
  local venv="$CACHE/venv" stamp="$CACHE/venv/.kafscale-requirements"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$KP_REQUIREMENTS" ]; then
    VPY="$venv/bin/python"
    return
  fi
  log "creating $venv with: $KP_REQUIREMENTS"
  rm -rf "$venv"
  if $PY -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install -q $KP_REQUIREMENTS
    echo "$KP_REQUIREMENTS" >"$stamp"
    VPY="$venv/bin/python"
  else
    # No venv module (Debian without python3-venv): user site, PEP 668 override as last resort.
    rm -rf "$venv"
    $PY -m pip install -q --user $KP_REQUIREMENTS 2>/dev/null ||
      $PY -m pip install -q --user --break-system-packages $KP_REQUIREMENTS
    VPY="$PY"
  fi
}

prepare_kafka_python() {
  local dl="$CACHE/downloads" sdist dir="$CACHE/kafka-python-$KAFKA_PYTHON_VERSION"
  KP_SRC="$dir"
  prepare_python
  if [ ! -f "$dir/.kafscale-extracted" ]; then
    mkdir -p "$dl"
    sdist="$(ls "$dl"/kafka_python-"$KAFKA_PYTHON_VERSION".tar.gz 2>/dev/null || true)"
    if [ -z "$sdist" ]; then
      log "downloading kafka-python $KAFKA_PYTHON_VERSION sdist from PyPI"
      "$VPY" -m pip download -q --no-binary :all: --no-deps -d "$dl" "kafka-python==$KAFKA_PYTHON_VERSION"
      sdist="$(ls "$dl"/kafka_python-"$KAFKA_PYTHON_VERSION".tar.gz)"
    fi
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    tar -xzf "$sdist" -C "$dir.tmp" --strip-components=1
    [ -d "$dir.tmp/test/integration" ] || die "no test/integration in $sdist"
    mv "$dir.tmp" "$dir"
    touch "$dir/.kafscale-extracted"
  fi
}

run_kafka_python() {
  local out="$OUT/kafka-python" work rc=0
  prepare_kafka_python
  mkdir -p "$out"
  # A fresh copy per run: the sdist's kafka/ and test/ plus our fixture next to them.
  work="$out/src"
  mkdir -p "$work"
  cp -a "$KP_SRC/kafka" "$KP_SRC/test" "$KP_SRC/pyproject.toml" "$work/"
  : >"$work/test/__init__.py"            # the sdist lacks it; its tests import test.testutil
  cp "$HERE/kafka_python/conftest.py" "$work/test/conftest.py"
  cp "$HERE/kafka_python/service.py" "$work/test/service.py"   # the sdist lacks it too
  # kafka-python's test broker (servers/resources/default/kafka.properties in its repository)
  # runs with group.min.session.timeout.ms=1000 (test_group asks for 3000),
  # group.initial.rebalance.delay.ms=0 and, from its
  # fixture, an ACL authorizer with allow.everyone.if.no.acl.found=true.
  start_server kafka-python KAFSCALE_GROUP_MIN_SESSION_TIMEOUT_MS=1000 \
    KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS=$KP_INITIAL_REBALANCE_DELAY_MS \
    KAFSCALE_AUTHORIZER=acl KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND=true
  local sel=()
  [ -n "$KP_TESTS" ] && sel=(-k "$KP_TESTS")
  (
    cd "$work"
    # Run from the sdist root: `python -m pytest` puts it first on sys.path, so `kafka` and
    # `test` are the sdist's (not an installed kafka-python, not the stdlib's test package).
    KAFKA_URI="PLAINTEXT://127.0.0.1:$PORT" KAFKA_VERSION="$KP_BROKER_VERSION" KAFKA_ROOT="$work" \
      KAFSCALE_COMPAT_SKIPS="$HERE/kafka-python-skips.txt" \
      timeout -k 10 1500 "$VPY" -m pytest test/integration -p no:cacheprovider \
      --timeout="$KP_TIMEOUT" --timeout-method=thread -o log_level="${KAFSCALE_COMPAT_KP_LOG_LEVEL:-INFO}" \
      --junitxml="$out/junit.xml" -rfEs "${sel[@]}"
  ) >"$out/pytest.log" 2>&1 || rc=$?
  stop_server
  if [ -f "$out/junit.xml" ]; then
    $COMPAT junit "$out/junit.xml" kafka-python >>"$RESULTS"
  else
    printf 'kafka-python\t(pytest)\tfailed\t0\tno junit report, pytest exit %s (see %s)\n' \
      "$rc" "$out/pytest.log" >>"$RESULTS"
  fi
  log "kafka-python: pytest exit $rc, log $out/pytest.log"
}

# ---------------------------------------------------------------------------
kafscale_bin
start_all=$(date +%s)
IFS=',' read -r -a suites <<<"$SUITES"
for s in "${suites[@]}"; do
  case "$s" in
    librdkafka) run_librdkafka ;;
    kafka-python) run_kafka_python ;;
    *) die "unknown suite $s" ;;
  esac
done
log "logs: $OUT (total $(($(date +%s) - start_all))s)"
$COMPAT table "$RESULTS"
