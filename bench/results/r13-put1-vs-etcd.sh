#!/bin/bash
# Single-client sequential writes, metad against etcd, alternated: starts a local 3-node metad
# and a 3-member etcd (both idle while the other is measured), then runs kv-put with 1 client
# for DURATION s against each in turn, ROUNDS times. One JSON line per run.
# usage: r13-put1-vs-etcd.sh BIN_DIR ROUNDS OUT.jsonl     (BIN_DIR holds metad, metad-bench)
set -uo pipefail
D=$1; ROUNDS=$2; OUT=$3; DURATION=${DURATION:-10}
WORK=$(mktemp -d /tmp/put1.XXXXXX)
# shellcheck source=bench/lib-cluster.sh
. "$(dirname "$0")/../lib-cluster.sh"
start_metad "$D/metad" "$WORK" "$WORK"
start_etcd "$WORK" "$WORK" put1
for r in $(seq "$ROUNDS"); do
  for t in metad etcd; do
    eps=$METAD_EPS; [ $t = etcd ] && eps=$ETCD_EPS
    "$D/metad-bench" --target $t --endpoints "$eps" --workload kv-put --clients 1 --keys 1000 \
      --duration "$DURATION" --warmup 1 --json 2>/dev/null | tail -1 | python3 -c "
import json,sys; d=json.loads(sys.stdin.read()); print(json.dumps({'round':$r,'target':'$t','ops':round(d['ops_per_s']),'p50':d['p50_ms'],'p90':d['p90_ms'],'p99':d['p99_ms'],'load1':d['load1']}))" | tee -a "$OUT"
  done
done
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
