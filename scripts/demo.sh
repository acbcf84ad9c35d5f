#!/usr/bin/env bash
# Sets up and runs the main job on the embedded default: generates a synthetic
# KuaiRand-like log, replays it into a pair-state directory with ASA
# transitions while the learner trains on them (checkpoints in demo/checkpoints),
# and prints a few pairs. Output goes to ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rliv/target}"
cargo build --release --locked --bin rliv
rliv="$CARGO_TARGET_DIR/release/rliv"
rm -rf demo
"$rliv" gen --out demo/data
"$rliv" replay --exposures demo/data/exposures.jsonl --actions demo/data/actions.jsonl \
  --state demo/state --transitions demo/transitions.jsonl \
  --train --checkpoints demo/checkpoints
echo "--- first pairs of user 1 (rliv dump --state demo/state --user 1 --limit 5):"
"$rliv" dump --state demo/state --user 1 --limit 5
echo "--- first transition (demo/transitions.jsonl):"
head -n 1 demo/transitions.jsonl
echo "--- learner checkpoint (demo/checkpoints):"
ls demo/checkpoints/*/
