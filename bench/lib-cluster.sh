# Sourced by the benchmark scripts: free loopback ports and local 3-node clusters, started the
# same way everywhere (so figures from different scripts compare).
#
#   free_ports N                          prints N free loopback ports
#   start_etcd DATA_DIR LOG_DIR [TOKEN]   3 etcd members; sets ETCD_EPS, appends to PIDS
#   start_metad METAD_BIN DATA_DIR LOG_DIR [metrics]
#                                         3 metad nodes (sites a, b, c); sets METAD_EPS,
#                                         METAD_PIDS, appends to PIDS; with `metrics`, each
#                                         node serves /metrics on a free port (METAD_METRICS)
# The caller owns PIDS (kill "${PIDS[@]}"; wait) and the directories.

PIDS=(${PIDS[@]+"${PIDS[@]}"})

free_ports() {
  python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

start_etcd() {
  local data=$1 logs=$2 token=${3:-metad-bench} p i
  read -r -a p <<<"$(free_ports 6)"
  local cl="e1=http://127.0.0.1:${p[3]},e2=http://127.0.0.1:${p[4]},e3=http://127.0.0.1:${p[5]}"
  for i in 0 1 2; do
    etcd --name "e$((i+1))" --data-dir "$data/etcd$((i+1))" \
      --listen-client-urls "http://127.0.0.1:${p[i]}" --advertise-client-urls "http://127.0.0.1:${p[i]}" \
      --listen-peer-urls "http://127.0.0.1:${p[i+3]}" --initial-advertise-peer-urls "http://127.0.0.1:${p[i+3]}" \
      --initial-cluster "$cl" --initial-cluster-state new --initial-cluster-token "$token" \
      --logger zap --log-level error >"$logs/etcd$((i+1)).log" 2>&1 &
    PIDS+=($!)
  done
  ETCD_EPS="127.0.0.1:${p[0]},127.0.0.1:${p[1]},127.0.0.1:${p[2]}"
}

start_metad() {
  local bin=$1 data=$2 logs=$3 metrics=${4:-} p i m sites=(site-a site-b site-c)
  read -r -a p <<<"$(free_ports 9)"
  METAD_METRICS=()
  local cl="1=site-a/127.0.0.1:${p[3]}/127.0.0.1:${p[0]},2=site-b/127.0.0.1:${p[4]}/127.0.0.1:${p[1]},3=site-c/127.0.0.1:${p[5]}/127.0.0.1:${p[2]}"
  METAD_PIDS=()
  for i in 0 1 2; do
    m=
    if [ "$metrics" = metrics ]; then m="127.0.0.1:${p[i+6]}"; METAD_METRICS+=("$m"); fi
    RUST_LOG=warn,openraft=off "$bin" --node-id $((i+1)) --site "${sites[i]}" --data-dir "$data/metad$((i+1))" \
      --listen-client "127.0.0.1:${p[i]}" --listen-peer "127.0.0.1:${p[i+3]}" --listen-metrics="$m" \
      --initial-cluster "$cl" >"$logs/metad$((i+1)).log" 2>&1 &
    PIDS+=($!)
    METAD_PIDS+=($!)
  done
  METAD_EPS="127.0.0.1:${p[0]},127.0.0.1:${p[1]},127.0.0.1:${p[2]}"
}
