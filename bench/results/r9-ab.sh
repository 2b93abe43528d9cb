#!/bin/bash
# usage: ab.sh LABEL METAD_BIN OUT  -- one fresh 3-node cluster, the write/read cases
set -uo pipefail
LABEL=$1; METAD=$2; OUT=$3; BENCH=/tmp/ab/base/metad-bench
DURATION=${DURATION:-10}
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
run() { local w=$1 c=$2 cons=$3
  "$BENCH" --target metad --endpoints "$EPS" --workload "$w" --clients "$c" --connections 8 \
    --consistency "$cons" --duration "$DURATION" --warmup 1 --keys 10000 --json 2>/dev/null | tail -1 | python3 -c "
import json,sys; d=json.loads(sys.stdin.read()); print(json.dumps({'label':'$LABEL','case':'$w $c $cons','ops':round(d['ops_per_s']),'p50':d['p50_ms'],'p99':d['p99_ms'],'err':d['errors']}))" >>"$OUT"
}
run kv-put 1 linearizable
run kv-put 128 linearizable
run create 128 linearizable
run stat 128 linearizable
run stat 128 serializable
for p in /proc/${PIDS[0]} /proc/${PIDS[1]} /proc/${PIDS[2]}; do grep -h VmHWM $p/status; done | tr '\n' ' ' | sed "s/^/$LABEL hwm: /" >>"$OUT.rss"; echo >>"$OUT.rss"
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
