#!/bin/bash
# What one operation costs each node: starts a fresh local 3-node metad or etcd cluster (free
# loopback ports, temp data dirs), warms up for 3 s, then diffs each node's CPU time (utime +
# stime in /proc/PID/stat) and context switches (voluntary + nonvoluntary, summed over
# /proc/PID/task/*/status) over a 10 s metad-bench run, per operation.
#
# usage: r9-per-op.sh metad|etcd BIN_DIR WORKLOAD CLIENTS [metad-bench args...]
#   BIN_DIR holds metad-bench (and metad for a metad cluster); etcd comes from PATH.
# e.g.   r9-per-op.sh metad target/release kv-put 1
#        r9-per-op.sh etcd target/release kv-put 128
# It also prints, per operation, what the whole machine did (round 16): busy and idle CPU
# (/proc/stat), kernel threads' CPU (processes without a command line), the rest of the busy
# time (the benchmark client and anything else), and KiB written to the disk (/proc/diskstats).
# Round 9's figures were taken with the two halves of this script (CPU in one run, context
# switches in another); this one prints both from one run.
set -uo pipefail
TARGET=$1; D=$2; W=$3; C=$4; shift 4
BENCH=$D/metad-bench
WORK=$(mktemp -d /tmp/perop.XXXXXX)
# shellcheck source=bench/lib-cluster.sh
. "$(dirname "$0")/../lib-cluster.sh"
if [ "$TARGET" = etcd ]; then
  start_etcd "$WORK" "$WORK" perop
  EPS=$ETCD_EPS
else
  start_metad "$D/metad" "$WORK" "$WORK"
  EPS=$METAD_EPS
fi
bench() { "$BENCH" --target "$TARGET" --endpoints "$EPS" --workload "$W" --clients "$C" --keys 10000 "$@" --json; }
# One line per node: CPU ticks, then context switches.
counters() {
  for p in "${PIDS[@]}"; do
    echo "$(awk '{print $14+$15}' "/proc/$p/stat") $(cat /proc/"$p"/task/*/status | awk '/voluntary_ctxt_switches/{s+=$2} END{print s}')"
  done
}
# The whole machine: busy and idle ticks, kernel threads' ticks, sectors written.
machine() {
  awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat
  local k=0 f line c
  for f in /proc/[0-9]*; do
    c=''; IFS= read -r -d '' c <"$f/cmdline" 2>/dev/null
    [ -n "$c" ] && continue
    read -r line <"$f/stat" 2>/dev/null || continue
    k=$((k + $(echo "${line##*) }" | awk '{print $12+$13}')))
  done
  echo "$k"
  awk '$3 !~ /^(loop|ram|zram|dm-)/ && $3 !~ /[0-9]p?[0-9]*$/ || $3 ~ /^nvme[0-9]+n[0-9]+$/ {s+=$10} END{print s+0}' /proc/diskstats
}
bench --duration 3 "$@" >/dev/null 2>&1
before=$(counters); mbefore=$(machine)
bench --duration 10 "$@" 2>/dev/null | tail -1 >"$WORK/r.json"
after=$(counters); mafter=$(machine)
python3 - "$before" "$after" "$WORK/r.json" "$TARGET" "$mbefore" "$mafter" <<'PY'
import json, os, sys
b = [list(map(int, l.split())) for l in sys.argv[1].splitlines()]
a = [list(map(int, l.split())) for l in sys.argv[2].splitlines()]
r = json.load(open(sys.argv[3])); n = r['ops_per_s'] * 10
mb = [list(map(int, l.split())) for l in sys.argv[5].splitlines()]
ma = [list(map(int, l.split())) for l in sys.argv[6].splitlines()]
tick_us = 1e6 / os.sysconf('SC_CLK_TCK')
nodes = [(y[0] - x[0]) * tick_us / n for x, y in zip(b, a)]
busy, idle = ((ma[0][i] - mb[0][i]) * tick_us / n for i in (0, 1))
kthreads = (ma[1][0] - mb[1][0]) * tick_us / n
disk_kib = (ma[2][0] - mb[2][0]) * 512 / 1024 / n
print(f"{sys.argv[4]} clients {r['clients']} ops/s {r['ops_per_s']:.0f} p50 {r['p50_ms']:.3f}",
      'cpu us/op per node:', [round(c) for c in nodes],
      'ctx switches/op per node:', [round((y[1] - x[1]) / n, 1) for x, y in zip(b, a)],
      f'| machine us/op: busy {busy:.0f} idle {idle:.0f} kernel threads {kthreads:.0f}',
      f'rest {busy - sum(nodes) - kthreads:.0f}; disk written {disk_kib:.1f} KiB/op')
PY
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
