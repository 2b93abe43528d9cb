#!/bin/bash
# The state machine's apply cost on each node of a live cluster, from the metrics every node
# exports (metad_sm_apply_*): starts a fresh local 3-node metad with metrics on free ports,
# warms up for 3 s, scrapes, runs metad-bench for 10 s, scrapes again, and prints per node the
# apply CPU per command, wall per command and commands per apply call over the run.
#
# usage: r15-apply-metrics.sh BIN_DIR WORKLOAD CLIENTS [metad-bench args...]
#   e.g. r15-apply-metrics.sh target/release kv-put 128
set -uo pipefail
D=$1; W=$2; C=$3; shift 3
WORK=$(mktemp -d /tmp/apply-metrics.XXXXXX)
. "$(dirname "$0")/../lib-cluster.sh"
start_metad "$D/metad" "$WORK" "$WORK" metrics
scrape() { for i in 0 1 2; do curl -s "http://${METAD_METRICS[i]}/metrics" | grep '^metad_sm_apply\|^metad_sm_applied' | sed "s/^/node$((i+1)) /"; done; }
bench() { "$D/metad-bench" --target metad --endpoints "$METAD_EPS" --workload "$W" --clients "$C" --keys 10000 "$@" --json; }
bench --duration 3 "$@" >/dev/null 2>&1
scrape >"$WORK/before"
bench --duration 10 "$@" 2>/dev/null | tail -1 >"$WORK/result.json"
scrape >"$WORK/after"
kill "${PIDS[@]}"; wait
python3 - "$WORK" "$W" "$C" <<'PY'
import json, re, sys
work, w, c = sys.argv[1:4]
def load(f):
    out = {}
    for line in open(f"{work}/{f}"):
        node, rest = line.split(' ', 1)
        name = re.match(r'(\w+)', rest).group(1)
        out[(node, name)] = float(rest.rsplit(' ', 1)[1])
    return out
b, a = load('before'), load('after')
r = json.load(open(f"{work}/result.json"))
print(f"{w} {c} clients: {r['ops_per_s']:.0f} ops/s, p50 {r['p50_ms']} ms")
for n in ('node1', 'node2', 'node3'):
    d = lambda k: a.get((n, k), 0) - b.get((n, k), 0)
    cmds, calls = d('metad_sm_applied_commands_total'), d('metad_sm_apply_batches_total')
    cpu, wall = d('metad_sm_apply_cpu_seconds_total'), d('metad_sm_apply_seconds_total')
    if cmds <= 0:
        print(f"{n}: no commands applied"); continue
    print(f"{n}: {cmds:.0f} commands in {calls:.0f} apply calls ({cmds/calls:.1f} per call); "
          f"apply CPU {1e6*cpu/cmds:.1f} us/command, wall {1e6*wall/cmds:.1f} us/command")
PY
rm -rf "$WORK"
