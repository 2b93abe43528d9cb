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
# Round 9's figures were taken with the two halves of this script (CPU in one run, context
# switches in another); this one prints both from one run.
set -uo pipefail
TARGET=$1; D=$2; W=$3; C=$4; shift 4
BENCH=$D/metad-bench
WORK=$(mktemp -d /tmp/perop.XXXXXX)
read -r -a P <<<"$(python3 -c '
import socket
ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
PIDS=()
if [ "$TARGET" = etcd ]; then
  ECL="e1=http://127.0.0.1:${P[3]},e2=http://127.0.0.1:${P[4]},e3=http://127.0.0.1:${P[5]}"
  for i in 0 1 2; do
    etcd --name "e$((i+1))" --data-dir "$WORK/n$((i+1))" \
      --listen-client-urls "http://127.0.0.1:${P[i]}" --advertise-client-urls "http://127.0.0.1:${P[i]}" \
      --listen-peer-urls "http://127.0.0.1:${P[i+3]}" --initial-advertise-peer-urls "http://127.0.0.1:${P[i+3]}" \
      --initial-cluster "$ECL" --initial-cluster-state new --initial-cluster-token perop \
      --logger zap --log-level error >"$WORK/n$((i+1)).log" 2>&1 &
    PIDS+=($!)
  done
else
  MCL="1=site-a/127.0.0.1:${P[3]}/127.0.0.1:${P[0]},2=site-b/127.0.0.1:${P[4]}/127.0.0.1:${P[1]},3=site-c/127.0.0.1:${P[5]}/127.0.0.1:${P[2]}"
  SITES=(site-a site-b site-c)
  for i in 0 1 2; do
    RUST_LOG=warn,openraft=off "$D/metad" --node-id $((i+1)) --site "${SITES[i]}" --data-dir "$WORK/n$((i+1))" \
      --listen-client "127.0.0.1:${P[i]}" --listen-peer "127.0.0.1:${P[i+3]}" --listen-metrics= \
      --initial-cluster "$MCL" >"$WORK/n$((i+1)).log" 2>&1 &
    PIDS+=($!)
  done
fi
EPS="127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}"
bench() { "$BENCH" --target "$TARGET" --endpoints "$EPS" --workload "$W" --clients "$C" --keys 10000 "$@" --json; }
# One line per node: CPU ticks, then context switches.
counters() {
  for p in "${PIDS[@]}"; do
    echo "$(awk '{print $14+$15}' "/proc/$p/stat") $(cat /proc/"$p"/task/*/status | awk '/voluntary_ctxt_switches/{s+=$2} END{print s}')"
  done
}
bench --duration 3 "$@" >/dev/null 2>&1
before=$(counters)
bench --duration 10 "$@" 2>/dev/null | tail -1 >"$WORK/r.json"
after=$(counters)
python3 - "$before" "$after" "$WORK/r.json" "$TARGET" <<'PY'
import json, os, sys
b = [list(map(int, l.split())) for l in sys.argv[1].splitlines()]
a = [list(map(int, l.split())) for l in sys.argv[2].splitlines()]
r = json.load(open(sys.argv[3])); n = r['ops_per_s'] * 10
tick_us = 1e6 / os.sysconf('SC_CLK_TCK')
print(f"{sys.argv[4]} clients {r['clients']} ops/s {r['ops_per_s']:.0f} p50 {r['p50_ms']:.3f}",
      'cpu us/op per node:', [round((y[0] - x[0]) * tick_us / n) for x, y in zip(b, a)],
      'ctx switches/op per node:', [round((y[1] - x[1]) / n, 1) for x, y in zip(b, a)])
PY
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
