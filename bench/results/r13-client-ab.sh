#!/bin/bash
# Client-side A/B: one fresh local 3-node metad cluster, and two metad-bench builds run in
# turn against it, case by case (order A B A B ...), so both see the same servers and data.
# Per run it prints ops/s, p50, and CPU per measured operation of the benchmark process
# (utime+stime from GNU time) and of each node (/proc/PID/stat diff, warm-up included).
#
# usage: r13-client-ab.sh METAD_BIN BENCH_A BENCH_B ROUNDS OUT.jsonl
#   CASES (default below) is a list of workload:clients:consistency; DURATION (10) s each.
set -uo pipefail
METAD=$1; A=$2; B=$3; ROUNDS=$4; OUT=$5
DURATION=${DURATION:-10}
CASES=${CASES:-"kv-get:128:linearizable kv-get:128:serializable stat:128:linearizable kv-put:128:linearizable kv-put:1:linearizable"}
WORK=$(mktemp -d /tmp/clientab.XXXXXX)
# shellcheck source=bench/lib-cluster.sh
. "$(dirname "$0")/../lib-cluster.sh"
start_metad "$METAD" "$WORK" "$WORK"
ticks() { for p in "${PIDS[@]}"; do awk '{print $14+$15}' "/proc/$p/stat"; done | tr '\n' ' '; }
# One setup run creates the 10 000 keys and their tags under /ab; the measured runs skip
# setup (--no-setup), so their CPU figures hold only the measured operations and warm-up.
"$A" --target metad --endpoints "$METAD_EPS" --workload kv-get --clients 8 --keys 10000 \
  --prefix /ab --duration 3 >/dev/null 2>&1
for c in $CASES; do
  IFS=: read -r w n cons <<<"$c"
  for r in $(seq "$ROUNDS"); do
    for label in A B; do
      bin=$A; [ $label = B ] && bin=$B
      before=$(ticks)
      /usr/bin/time -f '%U %S' -o "$WORK/time" "$bin" --target metad --endpoints "$METAD_EPS" \
        --workload "$w" --clients "$n" --connections 8 --consistency "$cons" --keys 10000 --prefix /ab --no-setup \
        --duration "$DURATION" --warmup 1 --json 2>/dev/null | tail -1 >"$WORK/r.json"
      after=$(ticks)
      python3 - "$label" "$r" "$before" "$after" "$WORK/r.json" "$WORK/time" "$DURATION" <<'PY' | tee -a "$OUT"
import json, os, sys
label, rnd, b, a, rj, tf, dur = sys.argv[1:8]
r = json.load(open(rj)); n = r['ops_per_s'] * int(dur)
u, s = map(float, open(tf).read().split()[-2:])
tick = 1e6 / os.sysconf('SC_CLK_TCK')
nodes = [round((int(y) - int(x)) * tick / n, 1) for x, y in zip(b.split(), a.split())]
# The benchmark's CPU includes its 1 s warm-up and connecting; the same for both builds.
print(json.dumps({'label': label, 'round': int(rnd), 'case': f"{r['workload']} {r['clients']}",
                  'consistency': r.get('consistency'), 'ops': round(r['ops_per_s']), 'p50': r['p50_ms'],
                  'bench_us_per_op': round((u + s) * 1e6 / n, 1), 'node_us_per_op': nodes}))
PY
    done
  done
done
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
