#!/bin/bash
# usage: cpu.sh METAD_DIR WORKLOAD CLIENTS -- CPU ms per op for each node and the bench
set -uo pipefail
D=$1; W=$2; C=$3; BENCH=$D/metad-bench; METAD=$D/metad
WORK=$(mktemp -d /tmp/abdata.XXXXXX)
read -r -a P <<<"$(python3 -c '
import socket
ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
MCL="1=site-a/127.0.0.1:${P[3]}/127.0.0.1:${P[0]},2=site-b/127.0.0.1:${P[4]}/127.0.0.1:${P[1]},3=site-c/127.0.0.1:${P[5]}/127.0.0.1:${P[2]}"
SITES=(site-a site-b site-c); PIDS=()
for i in 0 1 2; do
  RUST_LOG=warn,openraft=off "$METAD" --node-id $((i+1)) --site "${SITES[i]}" --data-dir "$WORK/m$((i+1))" \
    --listen-client "127.0.0.1:${P[i]}" --listen-peer "127.0.0.1:${P[i+3]}" --listen-metrics= \
    --initial-cluster "$MCL" >"$WORK/m$((i+1)).log" 2>&1 &
  PIDS+=($!)
done
EPS="127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}"
"$BENCH" --target metad --endpoints "$EPS" --workload $W --clients $C --duration 3 --keys 10000 --json >/dev/null 2>&1
cpu() { for p in "${PIDS[@]}"; do cat /proc/$p/task/*/status | awk "/voluntary_ctxt_switches/{s+=\$2} END{print s}"; done | tr '\n' ' '; }
b=$(cpu)
"$BENCH" --target metad --endpoints "$EPS" --workload $W --clients $C --duration 10 --keys 10000 --json 2>/dev/null | tail -1 > $WORK/r.json
a=$(cpu)
python3 - "$b" "$a" $WORK/r.json <<'PY'
import json,sys
b=list(map(int,sys.argv[1].split())); a=list(map(int,sys.argv[2].split())); r=json.load(open(sys.argv[3]))
n=r['ops_per_s']*r.get('duration_s',10)
print('ops/s %.0f p50 %.3f'%(r['ops_per_s'],r['p50_ms']), 'ctx switches/op per node:', [round((y-x)/n,1) for x,y in zip(b,a)])
PY
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
