#!/usr/bin/env bash
# A 3-node NATS JetStream cluster on loopback, for trying replicas and for the tests:
#   scripts/nats-cluster.sh start DIR [BASE_PORT]   # prints the client URLs, comma-separated
#   scripts/nats-cluster.sh stop DIR
# Node n (1..3) listens for clients on BASE_PORT+n-1 (default 14222..14224) and for its peers on
# BASE_PORT+100+n-1; it keeps its store, config, log and pid under DIR/n<n>/. Uses the machine's nats-server.
set -euo pipefail

action=${1:?usage: nats-cluster.sh start|stop DIR [BASE_PORT]}
dir=${2:?usage: nats-cluster.sh start|stop DIR [BASE_PORT]}
base=${3:-14222}
server=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}

case "$action" in
  start)
    routes=""
    for n in 1 2 3; do routes+="nats-route://127.0.0.1:$((base + 100 + n - 1)),"; done
    urls=""
    for n in 1 2 3; do
      node="$dir/n$n"
      mkdir -p "$node/store"
      cat > "$node/nats.conf" <<CONF
server_name: n$n
listen: 127.0.0.1:$((base + n - 1))
jetstream { store_dir: "$node/store" }
cluster {
  name: consent-test
  listen: 127.0.0.1:$((base + 100 + n - 1))
  routes: [${routes%,}]
}
CONF
      "$server" -c "$node/nats.conf" -l "$node/nats.log" -P "$node/nats.pid" </dev/null >/dev/null 2>&1 &
      urls+="nats://127.0.0.1:$((base + n - 1)),"
    done
    # Ready when each node answers its monitoring-free client port and JetStream has a leader.
    for n in 1 2 3; do
      for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$((base + n - 1))") 2>/dev/null && break
        sleep 0.1
      done
    done
    echo "${urls%,}"
    ;;
  stop)
    for n in 1 2 3; do
      pid_file="$dir/n$n/nats.pid"
      if [[ -f "$pid_file" ]]; then
        kill "$(cat "$pid_file")" 2>/dev/null || true
      fi
    done
    ;;
  *)
    echo "usage: nats-cluster.sh start|stop DIR [BASE_PORT]" >&2
    exit 2
    ;;
esac
