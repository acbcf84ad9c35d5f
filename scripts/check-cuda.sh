#!/usr/bin/env bash
# Builds the learner with the `cuda` feature on a machine without a GPU, to
# keep the CUDA code compiling. Not part of the test command: it downloads
# about 1.6 GB (Debian bookworm's CUDA 11.8 toolkit from `non-free`; the
# script adds `contrib` and `non-free` to the apt sources) and compiles
# candle's kernels (about 15 minutes on 2 cores in a fresh target directory).
#
#   scripts/check-cuda.sh            # install what is missing, then build
#
# Settings (environment):
#   CUDA_COMPUTE_CAP  default 89. Not 90 with CUDA 11.8: candle's kernel
#                     build turns 90 into sm_90a, which needs CUDA 12. Code
#                     built for 89 runs on an H100 through the driver's PTX
#                     JIT; with CUDA 12, 90 builds as it is.
#   NVCC_CCBIN        default /usr/bin/g++-11 (CUDA 11.8 supports gcc <= 11;
#                     bookworm's default gcc is 12).
#   CUDA_TARGET_DIR   default ~/.cache/rliv/target-cuda (kept apart from the
#                     main target directory, whose features differ).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v nvcc >/dev/null 2>&1 || ! [ -x /usr/bin/g++-11 ]; then
  src=/etc/apt/sources.list.d/rliv-cuda.sources
  if [ ! -f "$src" ]; then
    echo "check-cuda: adding bookworm contrib and non-free to the apt sources ($src)" >&2
    printf '%s\n' \
      'Types: deb' \
      'URIs: http://deb.debian.org/debian' \
      'Suites: bookworm' \
      'Components: contrib non-free' \
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' | $SUDO tee "$src" >/dev/null
  fi
  echo "check-cuda: installing the CUDA 11.8 toolkit (about 1.6 GB)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    nvidia-cuda-toolkit nvidia-cuda-dev libcu++-dev libthrust-dev libcub-dev g++-11 >/dev/null
fi
nvcc --version | tail -n 2
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-89}"
export NVCC_CCBIN="${NVCC_CCBIN:-/usr/bin/g++-11}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$HOME/.cache/rliv/target-cuda}"
# The linker finds libcuda.so in the driver library package (libcuda1) or,
# failing that, in the toolkit's stubs, which cudarc does not search.
if [ -d /usr/lib/x86_64-linux-gnu/stubs ]; then
  export LIBRARY_PATH="/usr/lib/x86_64-linux-gnu/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi
start=$(date +%s)
cargo build --release --locked -p rliv-learner --features cuda --lib --tests
# The test binaries link libcuda and start without a GPU: the CPU tests run.
cargo test --release --locked -p rliv-learner --features cuda
echo "check-cuda: rliv-learner with --features cuda built and its CPU tests passed in $(( $(date +%s) - start )) s (compute capability $CUDA_COMPUTE_CAP)"
