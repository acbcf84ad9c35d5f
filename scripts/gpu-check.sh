#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (H100/H200 class), its
# driver and a CUDA 12 toolkit (nvcc on PATH or in /usr/local/cuda/bin).
# Unattended: builds rliv with the `cuda` feature, runs the engines'
# agreement tests with the candle learners on the GPU, benchmarks the candle
# learner on the GPU at batch 1024 and 8192 beside the fused engine on the
# CPU, and prints a summary. Exits non-zero when a step fails.
#
#   scripts/gpu-check.sh
#
# Time: the runs take about 2 minutes; a cold build of rliv with candle's
# CUDA kernels takes longer on few cores. Carry a target directory over
# (CUDA_TARGET_DIR) to stay under 8 minutes.
#
# Settings (environment):
#   CUDA_COMPUTE_CAP  default: what nvidia-smi reports (90 on an H100/H200).
#   CUDA_TARGET_DIR   default ~/.cache/rliv/target-cuda.
#   STEP_TIMEOUT      seconds per step before it is stopped (default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
log=$(mktemp -d)/gpu-check
mkdir -p "$log"
say() { echo "gpu-check: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
step_timeout="${STEP_TIMEOUT:-900}"

command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this script is for a machine with an NVIDIA GPU and its driver"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | head -n 1)
say "GPU: $gpu"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
command -v nvcc >/dev/null 2>&1 || fail "no nvcc (install a CUDA 12 toolkit, or put its bin/ on PATH)"
nvcc --version | tail -n 1 >&2
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.[:space:]')
fi
export CUDA_COMPUTE_CAP
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$HOME/.cache/rliv/target-cuda}"
bash scripts/setup.sh

say "building rliv and the learner's tests with the cuda feature (compute capability $CUDA_COMPUTE_CAP)"
b0=$(date +%s)
timeout "$step_timeout" cargo build --release --locked -p rliv --bin rliv --features rliv-learner/cuda \
  >"$log/build.txt" 2>&1 || { tail -n 30 "$log/build.txt" >&2; fail "build"; }
timeout "$step_timeout" cargo test --release --locked -p rliv-learner --features cuda --test learner --no-run \
  >>"$log/build.txt" 2>&1 || { tail -n 30 "$log/build.txt" >&2; fail "test build"; }
build_s=$(( $(date +%s) - b0 ))
rliv="$CARGO_TARGET_DIR/release/rliv"

say "the engines' agreement tests, candle on the GPU"
RLIV_TEST_DEVICE=cuda timeout "$step_timeout" cargo test --release --locked -p rliv-learner --features cuda \
  --test learner engines -- --test-threads 1 >"$log/tests.txt" 2>&1 \
  || { tail -n 40 "$log/tests.txt" >&2; fail "agreement tests on the GPU"; }
tests=$(grep -E '^test result' "$log/tests.txt" | tail -n 1)

bench() { # name, then the arguments of `rliv bench learner`
  local name=$1
  shift
  timeout "$step_timeout" "$rliv" bench learner "$@" >"$log/$name.txt" 2>&1 \
    || { cat "$log/$name.txt" >&2; fail "bench $name"; }
  local line
  line=$(grep -E 'throughput' "$log/$name.txt" || true)
  [ -n "$line" ] || { cat "$log/$name.txt" >&2; fail "bench $name printed no throughput"; }
  echo "$name: ${line#"${line%%[![:space:]]*}"}"
}
say "benchmarks"
{
  bench "candle-cuda-b1024" --engine candle --device cuda --batch 1024 --steps 300
  bench "candle-cuda-b8192" --engine candle --device cuda --batch 8192 --steps 100
  bench "fused-cpu-b1024" --engine fused --batch 1024 --steps 50
  bench "fused-cpu-b8192" --engine fused --batch 8192 --steps 10
} >"$log/summary.txt"

echo
echo "== rliv gpu-check summary =="
echo "GPU:        $gpu (compute capability $CUDA_COMPUTE_CAP)"
echo "nvcc:       $(nvcc --version | tail -n 1)"
echo "host:       $(nproc) cores"
echo "build:      ${build_s} s (target directory $CARGO_TARGET_DIR)"
echo "agreement:  $tests"
cat "$log/summary.txt"
echo "total:      $(( $(date +%s) - t0 )) s; logs in $log"
