#!/bin/bash
# Where each node's CPU goes under one workload: starts a fresh local 3-node metad, warms up
# for 3 s, then records every node with `perf record -g` (999 Hz, 6 s) in the middle of a 12 s
# metad-bench run, and prints, per node, the share of samples under each part of the server
# (a sample counts for the first matching rule, in order; see RULES) and under a few syscalls.
#
# usage: r11-profile.sh BIN_DIR WORKLOAD CLIENTS OUT_DIR [metad-bench args...]
# Call stacks need frame pointers; build the profiled binary apart so as not to disturb
# target/:
#   CARGO_TARGET_DIR=/tmp/proftarget CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#     RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release -p metad
# BIN_DIR holds that metad and a metad-bench. perf.data files and the report stay in OUT_DIR.
set -uo pipefail
D=$1; W=$2; C=$3; OUT=$4; shift 4
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/profile.XXXXXX)
# shellcheck source=bench/lib-cluster.sh
. "$(dirname "$0")/../lib-cluster.sh"
start_metad "$D/metad" "$WORK" "$WORK"
bench() { "$D/metad-bench" --target metad --endpoints "$METAD_EPS" --workload "$W" --clients "$C" --keys 10000 "$@" --json; }
bench --duration 3 "$@" >/dev/null 2>&1
bench --duration 12 "$@" 2>/dev/null | tail -1 >"$OUT/result.json" &
B=$!
sleep 3 # into the measured run
for i in 0 1 2; do
  perf record -g -F 999 -p "${METAD_PIDS[i]}" -o "$OUT/node$((i+1)).data" -- sleep 6 >/dev/null 2>&1 &
done
wait $B
kill "${PIDS[@]}"; wait; rm -rf "$WORK"
for i in 1 2 3; do perf script -i "$OUT/node$i.data" 2>/dev/null >"$OUT/node$i.txt"; done
python3 - "$OUT" <<'PY' | tee "$OUT/report.txt"
import collections, json, re, sys
out = sys.argv[1]
RULES = [('apply_blocking', 'apply'), ('Writer::run', 'raft-log writer'),
         ('h2::server', 'client+peer gRPC server (incl. handlers)'), ('h2::client', 'peer gRPC client'),
         ('openraft::core::raft_core', 'openraft core'), ('openraft::replication', 'openraft replication'),
         ('openraft::core::sm', 'openraft sm worker'), ('tokio::runtime::io', 'tokio io driver'),
         ('park', 'tokio park/unpark'), ('tokio::runtime', 'tokio other')]
SYSCALLS = ['sendmsg', 'recvmsg', 'fdatasync', 'pwrite', 'epoll_wait', 'futex']
r = json.load(open(f'{out}/result.json'))
print(f"{r['workload']} {r['clients']} clients: {r['ops_per_s']:.0f} ops/s, p50 {r['p50_ms']} ms")
for n in (1, 2, 3):
    stacks, cur = [], []
    for line in open(f'{out}/node{n}.txt'):
        line = line.rstrip()
        if not line:
            if cur: stacks.append(cur)
            cur = []
        elif line[0] in ' \t':
            parts = line.strip().split(' ', 1)
            if len(parts) == 2: cur.append(re.sub(r'\+0x[0-9a-f]+', '', parts[1].split(' (')[0]))
    if cur: stacks.append(cur)
    tot = max(len(stacks), 1)
    c = collections.Counter()
    for s in stacks:
        c[next((name for pat, name in RULES if any(pat in f for f in s)), 'other')] += 1
    print(f"node {n} ({tot} samples): " + ', '.join(f'{k} {100*v/tot:.1f} %' for k, v in c.most_common()))
    print('  under syscalls: ' + ', '.join(
        f"{p} {100*sum(1 for s in stacks if any(p in f for f in s))/tot:.1f} %" for p in SYSCALLS))
PY
