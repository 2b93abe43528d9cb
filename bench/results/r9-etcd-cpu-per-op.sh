#!/bin/bash
set -uo pipefail
BENCH=/tmp/ab/patched/metad-bench
WORK=$(mktemp -d /tmp/etcddata.XXXXXX)
read -r -a P <<<"$(python3 -c '
import socket
ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
ECL="e1=http://127.0.0.1:${P[3]},e2=http://127.0.0.1:${P[4]},e3=http://127.0.0.1:${P[5]}"
PIDS=()
for i in 0 1 2; do
  etcd --name "e$((i+1))" --data-dir "$WORK/etcd$((i+1))" \
    --listen-client-urls "http://127.0.0.1:${P[i]}" --advertise-client-urls "http://127.0.0.1:${P[i]}" \
    --listen-peer-urls "http://127.0.0.1:${P[i+3]}" --initial-advertise-peer-urls "http://127.0.0.1:${P[i+3]}" \
    --initial-cluster "$ECL" --initial-cluster-state new --initial-cluster-token b \
    --logger zap --log-level error >"$WORK/etcd$((i+1)).log" 2>&1 &
  PIDS+=($!)
done
EPS="127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}"
for C in 1 128; do
"$BENCH" --target etcd --endpoints "$EPS" --workload kv-put --clients $C --duration 3 --keys 10000 --json >/dev/null 2>&1
cpu() { for p in "${PIDS[@]}"; do awk '{print $14+$15}' /proc/$p/stat; done | tr '\n' ' '; }
cs() { for p in "${PIDS[@]}"; do cat /proc/$p/task/*/status | awk "/voluntary_ctxt_switches/{s+=\$2} END{print s}"; done | tr '\n' ' '; }
b=$(cpu); bc=$(cs)
"$BENCH" --target etcd --endpoints "$EPS" --workload kv-put --clients $C --duration 10 --keys 10000 --json 2>/dev/null | tail -1 > $WORK/r.json
a=$(cpu); ac=$(cs)
python3 - "$b" "$a" "$bc" "$ac" $WORK/r.json <<'PY'
import json,sys
b=list(map(int,sys.argv[1].split())); a=list(map(int,sys.argv[2].split()))
bc=list(map(int,sys.argv[3].split())); ac=list(map(int,sys.argv[4].split())); r=json.load(open(sys.argv[5]))
n=r['ops_per_s']*10
print('etcd clients %d ops/s %.0f p50 %.3f'%(r['clients'],r['ops_per_s'],r['p50_ms']), 'cpu us/op:', [round((y-x)*10000/n) for x,y in zip(b,a)], 'ctxsw/op:', [round((y-x)/n,1) for x,y in zip(bc,ac)])
PY
done
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
