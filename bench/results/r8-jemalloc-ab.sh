#!/bin/bash
# usage: ab.sh LABEL METAD_BIN OUT  -- one fresh 3-node cluster, the write/read cases
set -uo pipefail
LABEL=$1; METAD=$2; OUT=$3; BENCH=${BENCH:-/tmp/ab/base/metad-bench}
DURATION=${DURATION:-10}
WORK=$(mktemp -d /tmp/abdata.XXXXXX)
# shellcheck source=bench/lib-cluster.sh
. "$(dirname "$0")/../lib-cluster.sh"
start_metad "$METAD" "$WORK" "$WORK"
EPS=$METAD_EPS
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
