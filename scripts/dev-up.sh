#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build, and run a whole local
# cluster (3 masters, 3 metanodes, 6 datanodes, a default volume mounted at
# ./strata-mnt, an S3 gateway whose endpoint and keys it prints) under
# ./strata-dev. Extra arguments go to `strata dev` (see
# `strata dev --help`). Ctrl-C unmounts and stops it; running it again brings
# the same cluster back.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build -p strata-cli
exec "$CARGO_TARGET_DIR/debug/strata" dev --mount strata-mnt "$@"
