#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine that has only the Rust
# toolchain: installs what the tests need (protoc for the gRPC contracts, kcat
# as a real Kafka client, compression libraries), then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}"

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler libprotobuf-dev)
command -v kcat >/dev/null || need+=(kcat)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
