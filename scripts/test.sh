#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine that has only the Rust
# toolchain: installs what the tests need (protoc for the gRPC contracts, kcat,
# kafka-python and Debian's Go clients as real Kafka clients, Burrow with a
# ZooKeeper, compression libraries), then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kafscale-target}"

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler libprotobuf-dev)
command -v kcat >/dev/null || need+=(kcat)
# etcd 3.4 for tests/etcd_*.rs (they start their own etcd on free ports).
command -v etcd >/dev/null || need+=(etcd-server etcd-client)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# venv for the kafka-python suite's own test requirements (tests/compat/run.sh).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# node checks the k6 scripts' syntax and stage mapping (k6's Kafka extension is not installable).
command -v node >/dev/null || need+=(nodejs)
# librdkafka in the rdkafka crate is built with OpenSSL (TLS and SCRAM for the security tests).
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev pkg-config)
# Go clients (tests/go_clients.rs): Debian's Go 1.19 and the client sources,
# built offline in GOPATH mode against /usr/share/gocode.
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/Shopify/sarama ] || need+=(golang-github-shopify-sarama-dev)
[ -d /usr/share/gocode/src/github.com/segmentio/kafka-go ] || need+=(golang-github-segmentio-kafka-go-dev)
# Burrow reads __consumer_offsets (tests/consumer_offsets_topic.rs) and needs a ZooKeeper.
command -v Burrow >/dev/null || need+=(burrow)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# kafka-python: an independent Kafka client for tests/kafka_python_groups.rs.
# Debian's own python3 refuses pip installs outside a venv (PEP 668) unless
# told --break-system-packages.
KAFKA_PYTHON=3.0.12
if ! python3 -c "import kafka, sys; sys.exit(kafka.__version__ != '$KAFKA_PYTHON')" 2>/dev/null; then
  python3 -m pip install -q "kafka-python==$KAFKA_PYTHON" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "kafka-python==$KAFKA_PYTHON"
fi

# moto: an in-memory S3-compatible server (honours If-None-Match: * with 412)
# for tests/s3_*.rs, started by tests/common_s3 as `moto_server`.
if ! command -v moto_server >/dev/null; then
  python3 -m pip install -q 'moto[server]>=5,<6' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'moto[server]>=5,<6'
  # A --user install puts its scripts outside PATH.
  command -v moto_server >/dev/null || export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi

cargo fmt --all -- --check
# As ES modules whatever node's version (k6 scripts use import/export).
k6tmp=$(mktemp -d)
for f in loadtest/k6/*.js; do cp "$f" "$k6tmp/$(basename "$f" .js).mjs"; node --check "$k6tmp/$(basename "$f" .js).mjs"; done
rm -rf "$k6tmp"
node --test loadtest/k6/stages.test.mjs
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets --features failpoints

# Third-party client suites (librdkafka's and kafka-python's own integration tests) against
# `kafscale dev`, with the binary the tests above built. Their runner and virtualenv are cached
# in ~/.cache/kafscale-compat, outside the clone.
if [ "${KAFSCALE_TEST_COMPAT:-1}" != 0 ]; then
  KAFSCALE_BIN="$CARGO_TARGET_DIR/debug/kafscale" tests/compat/run.sh
fi
