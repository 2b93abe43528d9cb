#!/bin/bash
# Reads against an already loaded cluster, as `metad-bench scale --read-warmup` runs them: for
# stat (linearizable, serializable) and GetTags (linearizable), 64 clients, a WARMUP-second run
# (the cold figure) then a 10 s run (the warm figure), each with the MiB the machine read from
# disk meanwhile (pgpgin in /proc/vmstat).
# usage: r10-reads.sh BENCH ENDPOINTS KEYS [WARMUP]
#   e.g. r10-reads.sh target/release/metad-bench 127.0.0.1:43577,127.0.0.1:41041,127.0.0.1:40773 10000000 60
set -uo pipefail
BENCH=$1; EPS=$2; KEYS=$3; WARMUP=${4:-60}
pgpgin() { awk '/^pgpgin /{print $2}' /proc/vmstat; }
one() { local w=$1 cons=$2 secs=$3 label=$4 before after
  before=$(pgpgin)
  "$BENCH" --target metad --endpoints "$EPS" --workload "$w" --clients 64 --duration "$secs" \
    --warmup 1 --consistency "$cons" --keys "$KEYS" --prefix /scale --no-setup 2>&1 | tail -2
  after=$(pgpgin)
  echo "$label $w $cons: $(( (after - before) / 1024 )) MiB read from disk"
}
for wc in "stat linearizable" "stat serializable" "kv-get linearizable"; do
  set -- $wc
  one "$1" "$2" "$WARMUP" cold
  one "$1" "$2" 10 warm
done
