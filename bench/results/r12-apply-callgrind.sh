#!/bin/bash
# Instructions executed inside SmStore::apply_blocking (inclusive, callgrind), per build and
# batch size: a CPU-cost figure that does not move with this VM's noise (no hardware counters
# here, and timings drift +-10 %). The apply_bench binaries come from
#   cargo test --release -p metad --test apply_bench --no-run
# (one per build under comparison; copy target/release/deps/apply_bench-* away).
# usage: r12-apply-callgrind.sh OUTDIR LABEL=APPLY_BENCH_BIN [LABEL=BIN ...]
# Batch 32 takes ~4 min per build, batch 1 ~12 min.
set -euo pipefail
OUT=$1; shift; mkdir -p "$OUT"
for b in 32 1; do
  for lb in "$@"; do
    label=${lb%%=*}; bin=${lb#*=}
    APPLY_BENCH_BATCH=$b valgrind --tool=callgrind --collect-atstart=no \
      '--toggle-collect=*apply_blocking*' --callgrind-out-file="$OUT/$label-b$b.out" \
      "$bin" --ignored --test-threads=1 apply_cost_per_command >"$OUT/$label-b$b.log" 2>&1
    echo "$label batch $b: $(grep -o 'Collected : [0-9]*' "$OUT/$label-b$b.log") instructions in apply"
  done
done
