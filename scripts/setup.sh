#!/usr/bin/env bash
# Installs the system packages rliv's build needs on a fresh Debian machine.
# Idempotent: does nothing when everything is already present.
#   libclang-dev  librocksdb-sys runs bindgen, which needs libclang.
set -euo pipefail
need=()
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (apt)" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
