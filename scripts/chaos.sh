#!/usr/bin/env bash
# Fault injection on purpose: N rounds of SIGKILLs of `rliv run` and broker
# restarts at random points, each checked against the uninterrupted run.
#   scripts/chaos.sh [ROUNDS] [SEED]     (defaults: 20 rounds, seed = now)
# The test command's setup and build, then only the chaos test.
set -euo pipefail
cd "$(dirname "$0")/.."
export RLIV_CHAOS_ROUNDS="${1:-20}"
export RLIV_CHAOS_SEED="${2:-$(date +%s)}"
echo "chaos: $RLIV_CHAOS_ROUNDS rounds, seed $RLIV_CHAOS_SEED" >&2
exec scripts/test.sh --test kafka chaos_kills_and_broker_restarts_at_random_points -- --nocapture
