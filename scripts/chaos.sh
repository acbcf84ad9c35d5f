#!/usr/bin/env bash
# Fault injection on purpose: N rounds of SIGKILLs of `rliv run` and broker
# restarts at random points, each checked against the uninterrupted run.
#   scripts/chaos.sh [ROUNDS] [SEED]     (defaults: 20 rounds, seed = now)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
RLIV_TANSU="${RLIV_TANSU:-$(scripts/install-tansu.sh)}"
export RLIV_TANSU
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rliv/target}"
export RLIV_CHAOS_ROUNDS="${1:-20}"
export RLIV_CHAOS_SEED="${2:-$(date +%s)}"
echo "chaos: $RLIV_CHAOS_ROUNDS rounds, seed $RLIV_CHAOS_SEED" >&2
cargo build --release --locked --bin rliv
cargo test --release --locked -p rliv-integration-tests --test kafka \
  chaos_kills_and_broker_restarts_at_random_points -- --nocapture
