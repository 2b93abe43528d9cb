#!/bin/bash
# Bytes each node writes per operation, by system call, during a metad-bench run (default
# kv-put with 128 clients): starts a fresh local 3-node metad or etcd, warms up 3 s, then
# traces one follower's pwrite64/write/writev/fdatasync calls with `perf trace` for 5 s in the
# middle of a 12 s run and sums their byte counts per file (file descriptors resolved through
# /proc/PID/fd while the node runs; sockets and pipes are left out).
#
# usage: r14-write-bytes.sh metad|etcd BIN_DIR [WORKLOAD CLIENTS]
set -uo pipefail
TARGET=$1; D=$2; W=${3:-kv-put}; C=${4:-128}
WORK=$(mktemp -d /tmp/wbytes.XXXXXX)
# shellcheck source=bench/lib-cluster.sh
. "$(dirname "$0")/../lib-cluster.sh"
if [ "$TARGET" = etcd ]; then start_etcd "$WORK" "$WORK" wbytes; EPS=$ETCD_EPS; NODES=("${PIDS[@]}")
else start_metad "$D/metad" "$WORK" "$WORK"; EPS=$METAD_EPS; NODES=("${METAD_PIDS[@]}"); fi
bench() { "$D/metad-bench" --target "$TARGET" --endpoints "$EPS" --workload "$W" --clients "$C" --connections 8 --keys 10000 "$@" --json; }
bench --duration 3 >/dev/null 2>&1
bench --duration 12 2>/dev/null | tail -1 >"$WORK/r.json" &
B=$!
sleep 3
# Node 3 / member 3: a follower unless an election moved the leader, which the output shows.
perf trace -e pwrite64,write,writev,fdatasync -p "${NODES[2]}" -o "$WORK/trace.txt" -- sleep 5 >/dev/null 2>&1
for f in /proc/"${NODES[2]}"/fd/*; do echo "${f##*/} $(readlink "$f")"; done >"$WORK/fds.txt"
wait $B
kill "${PIDS[@]}"; wait
python3 - "$WORK/trace.txt" "$WORK/r.json" "$TARGET" "$WORK/fds.txt" "$WORK" <<'PY'
import collections, json, re, sys
r = json.load(open(sys.argv[2])); ops = r['ops_per_s'] * 5
fds = dict(l.rstrip('\n').split(' ', 1) for l in open(sys.argv[4]) if ' ' in l)
calls = collections.Counter(); nbytes = collections.Counter(); syncs = collections.Counter()
for line in open(sys.argv[1]):
    m = re.search(r'\b(pwrite64|writev|write|fdatasync)\(fd: (\d+).*\)\s+= (-?\d+)', line)
    if not m: continue
    name = fds.get(m[2], 'fd ' + m[2])
    if not name.startswith('/'): continue
    name = name.replace(sys.argv[5] + '/', '')
    if m[1] == 'fdatasync': syncs[name] += 1
    else:
        calls[name] += 1; nbytes[name] += max(int(m[3]), 0)
print(f"{sys.argv[3]} {r['workload']} {r['clients']} clients: {r['ops_per_s']:.0f} ops/s; node 3, per operation:")
for f in sorted(set(calls) | set(syncs)):
    print(f"  {f}: {calls[f]/ops:.2f} writes, {nbytes[f]/ops/1024:.2f} KiB, {syncs[f]/ops:.3f} fdatasync")
PY
rm -rf "$WORK"
