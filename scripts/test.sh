#!/usr/bin/env bash
# Runs every test of the workspace (unit, property, doc and integration tests).
# One profile (release) for tests, benches and the demo: RocksDB's C++ build
# then happens once. Integration tests drive the real binary, built first;
# the Kafka tests start their own Tansu brokers (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
RLIV_TANSU="${RLIV_TANSU:-$(scripts/install-tansu.sh)}"
export RLIV_TANSU
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rliv/target}"
cargo build --release --locked --bin rliv
cargo test --release --locked --workspace "$@"
