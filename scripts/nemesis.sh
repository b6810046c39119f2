#!/usr/bin/env bash
# The long nemesis run (issue 16): tests/nemesis.rs with enough random faults
# for at least 100 worker failovers (kill -9, SIGSTOP past the lease, cut off
# from etcd past the lease, SIGTERM drain), plus gateway kills, etcd outages and S3 fault bursts, under
# continuous acks=all load, then the history checker. The summary line and
# the checker's report are appended to $REPORT (default
# ./nemesis-report.txt); docs/reliability.md quotes it.
#
#   scripts/nemesis.sh [STEPS] [SEED]      # defaults: 180 steps, seed 0x4e4e0016
#   KAFSCALE_NEMESIS_PLACEMENT=pack scripts/nemesis.sh   # workers packed (KAFSCALE_PLACEMENT)
#
# The test and server binaries are copied first, so rebuilding while it runs
# changes nothing. Needs what scripts/test.sh installs (etcd, moto, protoc).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}"
STEPS="${1:-180}"
SEED="${2:-0x4e4e0016}"
REPORT="${REPORT:-$PWD/nemesis-report.txt}"
# Built here, right before copying: other worktrees sharing the target
# directory overwrite debug/kafscale at any time.
artifact() { # cargo args... -> the executable of the named target
  local name=$1; shift
  cargo "$@" --features failpoints --message-format=json 2>/dev/null | python3 -c 'import json,sys
name = sys.argv[1]
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name:
        print(m["executable"])' "$name"
}
copy=$(mktemp -d /tmp/kafscale-nemesis.XXXXXX)
trap 'rm -rf "$copy"' EXIT # the copies are large; the cluster logs stay
test_bin=$(artifact nemesis test --no-run --test nemesis)
cp "$test_bin" "$copy/nemesis"
server_bin=$(artifact kafscale build --bin kafscale)
cp "$server_bin" "$copy/kafscale"
echo "nemesis: $STEPS steps, seed $SEED, binaries in $copy, report in $REPORT"
KAFSCALE_TEST_KEEP_LOGS=1 KAFSCALE_TEST_BIN="$copy/kafscale" KAFSCALE_NEMESIS_STEPS="$STEPS" KAFSCALE_NEMESIS_SEED="$SEED" \
  KAFSCALE_NEMESIS_REPORT="$REPORT" "$copy/nemesis" --nocapture --test-threads 1
