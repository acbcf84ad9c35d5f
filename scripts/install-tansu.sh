#!/usr/bin/env bash
# Installs Tansu, the Apache-Kafka-compatible broker the Kafka integration
# tests run against, into ~/.cache/rliv/tools (outside the clone, so later
# runs on this machine reuse it). A fresh machine builds it from crates.io:
# about 15 minutes on 2 cores. Prints the binary's path.
set -euo pipefail
root="${RLIV_TOOLS:-$HOME/.cache/rliv/tools}"
bin="$root/bin/tansu"
if [ ! -x "$bin" ]; then
  echo "install-tansu: building tansu 0.6.0 into $root (about 15 minutes the first time)" >&2
  # Its own target directory: it must not evict rliv's build cache.
  CARGO_TARGET_DIR="$root/target" cargo install tansu --version 0.6.0 --locked \
    --features libsql --root "$root" >&2
  rm -rf "$root/target"
fi
echo "$bin"
