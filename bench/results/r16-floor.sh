#!/bin/bash
# What a write costs outside the state machine: alternates kv-put runs of (1) the normal build,
# (2) a `--features mutations` build whose apply answers tag writes without applying them
# (METAD_MUTATIONS=null-apply), (3) the same writing one 256-byte row per write
# (one-row-apply), and (4) etcd, each on a fresh local cluster through r9-per-op.sh (ops/s,
# p50, CPU µs and context switches per write per node). Round 16 in docs/benchmarks.md.
#
# usage: r16-floor.sh BASE_BIN_DIR MUT_BIN_DIR ROUNDS CLIENTS
#   BASE_BIN_DIR: metad and metad-bench of a normal release build
#   MUT_BIN_DIR:  metad built with `cargo build --release -p metad --features mutations`,
#                 and metad-bench
# e.g.   r16-floor.sh target/release /tmp/mut 3 128
# The stand-in builds skip the benchmark's setup (--no-setup): their files would not exist.
set -uo pipefail
BASE=$1; MUT=$2; ROUNDS=$3; C=$4
PEROP="$(dirname "$0")/r9-per-op.sh"
for i in $(seq "$ROUNDS"); do
  bash "$PEROP" metad "$BASE" kv-put "$C" 2>&1 | tail -1
  for m in null-apply one-row-apply; do
    METAD_MUTATIONS=$m bash "$PEROP" metad "$MUT" kv-put "$C" --no-setup 2>&1 | tail -1 |
      sed "s/^metad/metad $m/"
  done
  bash "$PEROP" etcd "$BASE" kv-put "$C" 2>&1 | tail -1
done
