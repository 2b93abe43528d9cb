#!/usr/bin/env bash
# metad vs etcd on one machine, in one run: starts a 3-member etcd and a 3-node metad on
# loopback (free ports, fresh data dirs under a temp dir; both with their default durability:
# every commit fsynced, group-committed), then runs each case against metad and right after
# against etcd, and prints a ratio table (markdown). Results: $OUT/results.jsonl.
#
# Usage: bench/run-vs-etcd.sh            (DURATION=10 KEYS=10000 CONNS=8 by default)
#        DURATION=30 bench/run-vs-etcd.sh
# Needs: cargo, python3, etcd (installed with apt-get install -y etcd-server when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
KEYS=${KEYS:-10000}
CONNS=${CONNS:-8}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$(mktemp -d /tmp/metad-vs-etcd.XXXXXX)}
WORK=$(mktemp -d /tmp/metad-vs-etcd-data.XXXXXX)
mkdir -p "$OUT"

if ! command -v etcd >/dev/null; then
  apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
fi
cargo build --release -q -p metad -p metad-bench --bin metad --bin metad-bench
METAD="$TARGET_DIR/release/metad"
BENCH="$TARGET_DIR/release/metad-bench"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/lib-cluster.sh
. bench/lib-cluster.sh
start_etcd "$WORK" "$OUT"
start_metad "$METAD" "$WORK" "$OUT"
echo "$(date -u +%FT%TZ) etcd $ETCD_EPS metad $METAD_EPS; $(nproc) cores; $(uptime)" | tee "$OUT/machine.txt"
etcd --version >>"$OUT/machine.txt" || true

run() { # target workload clients consistency [extra...]
  local t=$1 w=$2 c=$3 cons=$4; shift 4
  local eps=$METAD_EPS; [ "$t" = etcd ] && eps=$ETCD_EPS
  echo "== $t $w clients=$c $cons $* ($(cut -d' ' -f1 /proc/loadavg) load)" >&2
  "$BENCH" --target "$t" --endpoints "$eps" --workload "$w" --clients "$c" --connections "$CONNS" \
    --consistency "$cons" --duration "$DURATION" --warmup 1 --keys "$KEYS" --json "$@" \
    | tee -a "$OUT/log.txt" | tail -1 | python3 -c "
import json,sys; d=json.loads(sys.stdin.read()); d['case']='$t $w $c $cons $*'.strip(); print(json.dumps(d))" \
    >>"$OUT/results.jsonl"
}

# Each case against metad, then at once against etcd.
for c in 1 128; do
  run metad kv-put "$c" linearizable;       run etcd kv-put "$c" linearizable
  run metad kv-get "$c" linearizable;       run etcd kv-get "$c" linearizable
  run metad kv-get "$c" serializable;       run etcd kv-get "$c" serializable
  run metad txn-cas "$c" linearizable;      run etcd txn-cas "$c" linearizable
done
# metad's own operations at 128 clients, compared with etcd's put / get above.
run metad create 128 linearizable
run metad stat 128 linearizable
run metad stat 128 serializable

python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r['target'], r['workload'], r['clients'], r['consistency']): r for r in rows}
print("\n| workload | clients | consistency | metad ops/s | etcd ops/s | ratio | metad p50 / p99 ms | etcd p50 / p99 ms | errors m/e | load1 |")
print("|---|---|---|---|---|---|---|---|---|---|")
def line(label, m, e):
    print(f"| {label} | {m['clients']} | {m['consistency'] if 'get' in label or 'stat' in label else '-'} "
          f"| {m['ops_per_s']:.0f} | {e['ops_per_s']:.0f} | **{m['ops_per_s']/max(e['ops_per_s'],1e-9):.2f}×** "
          f"| {m['p50_ms']:.2f} / {m['p99_ms']:.2f} | {e['p50_ms']:.2f} / {e['p99_ms']:.2f} "
          f"| {m['errors']}/{e['errors']} | {m['load1']:.1f}/{e['load1']:.1f} |")
for (t, w, c, cons), m in by.items():
    if t != 'metad':
        continue
    ew = {'create': 'kv-put', 'stat': 'kv-get'}.get(w, w)
    e = by.get(('etcd', ew, c, cons if ew == 'kv-get' else 'linearizable'))
    if e is None:
        e = by.get(('etcd', ew, c, cons))
    if e:
        line(w if ew == w else f"{w} (vs etcd {ew})", m, e)
PY
echo "results: $OUT/results.jsonl, logs: $OUT"
