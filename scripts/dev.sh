#!/usr/bin/env bash
# Starts `kafscale dev` on embedded defaults (no etcd, no S3, no Docker) on a
# fresh Debian machine that has only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null
fi
exec cargo run --release --bin kafscale -- dev "$@"
