#!/usr/bin/env bash
# A pg_auto_failover formation on loopback (a monitor, a primary and a synchronous secondary), for trying
# failovers and for the tests:
#   scripts/pg-ha.sh start DIR [BASE_PORT]      # prints the service's multi-host database URL
#   scripts/pg-ha.sh failover DIR               # a planned failover (`pg_autoctl perform failover`); waits for it
#   scripts/pg-ha.sh state DIR                  # `pg_autoctl show state`
#   scripts/pg-ha.sh stop DIR
# The monitor listens on BASE_PORT (default 15432), node1 and node2 on BASE_PORT+1 and +2, all on 127.0.0.1
# with trust authentication and no TLS. Everything runs as the `postgres` user (DIR is chowned to it, so no
# parent of DIR may be private to root): data directories DIR/{monitor,node1,node2}, pg_autoctl's config and
# state under DIR/xdg/, logs DIR/<name>.log. The formation has one database, PG_HA_DBNAME (default consent).
# Needs Debian's pg-auto-failover-cli and postgresql-15-auto-failover (.ci/run installs them).
set -euo pipefail

usage="usage: pg-ha.sh start|stop|failover|state DIR [BASE_PORT]"
action=${1:?$usage}
dir=$(realpath -m "${2:?$usage}")  # absolute: pg_autoctl keys its config and pid files by the data directory's path
base=${3:-15432}
dbname=${PG_HA_DBNAME:-consent}
bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}

# Every pg_autoctl of one formation must see the same XDG directories: they hold each node's config and state
# files, which `run`, `stop`, `show` and `perform` find through --pgdata. Kept in DIR, nothing of a formation
# outlives DIR, and two formations never mix.
as_postgres() {
  runuser -u postgres -- env PATH="$bindir:$PATH" XDG_CONFIG_HOME="$dir/xdg/config" \
    XDG_DATA_HOME="$dir/xdg/data" XDG_RUNTIME_DIR="$dir/xdg/run" "$@"
}

monitor_sql() {  # the monitor's answer, unaligned, to one query
  as_postgres psql -X -q -At -h 127.0.0.1 -p "$(cat "$dir/monitor.port")" -d pg_auto_failover -c "$1" 2>/dev/null
}

# The pid `pg_autoctl run` writes for itself (its supervisor), found under its runtime directory.
service_pid() {  # name
  local file
  file=$(find "$dir/xdg/run" -path "*$dir/$1/pg_autoctl.pid" 2>/dev/null | head -n1)
  [[ -n "$file" ]] && head -n1 "$file"
}

run_in_background() {  # name, then the pg_autoctl arguments
  local name=$1
  shift
  as_postgres pg_autoctl "$@" </dev/null >>"$dir/$name.log" 2>&1 &
}

wait_for() {  # what, seconds, then a command that succeeds when it is so
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "pg-ha: $what did not happen within ${seconds}s; see $dir/*.log" >&2
      return 1
    fi
    sleep 0.5
  done
}

# pg_basebackup, which node2 copies node1 with, starts by waiting for a spread checkpoint: 90 s and more on an
# idle primary. An immediate CHECKPOINT requested meanwhile makes the one in progress finish at once.
hurried_ready() {
  as_postgres psql -X -q -h 127.0.0.1 -p $((base + 1)) -d postgres -c CHECKPOINT >/dev/null 2>&1 || true
  formation_ready
}

registered_single() { [[ "$(monitor_sql "SELECT reportedstate FROM pgautofailover.node WHERE nodename = 'node1'")" == single ]]; }

# One primary and one secondary, each reporting the state the monitor assigned it, and the primary naming the
# secondary in synchronous_standby_names: from then on a commit acknowledged by the primary is on the secondary.
formation_ready() {
  local states primary_port
  states=$(monitor_sql "SELECT string_agg(reportedstate::text, ',' ORDER BY reportedstate::text)
                        FROM pgautofailover.node WHERE formationid = 'default' AND reportedstate = goalstate")
  [[ "$states" == "primary,secondary" ]] || return 1
  primary_port=$(monitor_sql "SELECT nodeport FROM pgautofailover.node WHERE reportedstate = 'primary'")
  [[ -n "$(as_postgres psql -X -At -h 127.0.0.1 -p "$primary_port" -d postgres \
            -c "SHOW synchronous_standby_names" 2>/dev/null)" ]]
}

case "$action" in
  start)
    command -v pg_autoctl >/dev/null || { echo "pg-ha: pg_autoctl is not installed (pg-auto-failover-cli)" >&2; exit 1; }
    mkdir -p "$dir/xdg/config" "$dir/xdg/data" "$dir/xdg/run"
    chown -R postgres: "$dir"
    as_postgres test -w "$dir" || { echo "pg-ha: the postgres user cannot write $dir (is a parent private?)" >&2; exit 1; }
    echo "$base" > "$dir/monitor.port"
    common=(--hostname 127.0.0.1 --auth trust --no-ssl --pgctl "$bindir/pg_ctl")

    as_postgres pg_autoctl create monitor --pgdata "$dir/monitor" --pgport "$base" "${common[@]}" \
      >>"$dir/monitor.log" 2>&1
    # The monitor listens on every interface by default (`postgres -h *`); this formation is for loopback only.
    as_postgres pg_autoctl config set --pgdata "$dir/monitor" postgresql.listen_addresses 127.0.0.1 >/dev/null
    run_in_background monitor run --pgdata "$dir/monitor"
    wait_for "the monitor answering" 30 monitor_sql "SELECT 1" >/dev/null
    monitor=$(as_postgres pg_autoctl show uri --pgdata "$dir/monitor" --formation monitor)

    # node1 first, alone: the first node to register becomes the primary, and creates the database. node2 then
    # registers as its standby, and copies it with pg_basebackup.
    for n in 1 2; do
      run_in_background "node$n" create postgres --run --pgdata "$dir/node$n" --pgport $((base + n)) \
        --listen 127.0.0.1 --name "node$n" --dbname "$dbname" --monitor "$monitor" "${common[@]}"
      ((n == 2)) || wait_for "node1 registered as the single node" 60 registered_single
    done
    wait_for "a primary and a synchronous secondary" 90 hurried_ready
    echo "postgresql+asyncpg://postgres@/$dbname?host=127.0.0.1:$((base + 1))&host=127.0.0.1:$((base + 2))&target_session_attrs=read-write"
    ;;
  failover)
    # pg_autoctl 2.0 logs an ERROR about get_nodes() while it waits here (a bug of that version): harmless, it
    # still waits for the new primary. Done when the old primary is back as the synchronous secondary.
    as_postgres pg_autoctl perform failover --pgdata "$dir/monitor" --wait 60
    wait_for "a primary and a synchronous secondary after the failover" 60 formation_ready
    ;;
  state)
    as_postgres pg_autoctl show state --pgdata "$dir/monitor"
    ;;
  stop)
    # Each service's pid is read before it is told to stop: it removes its pid file on the way out.
    declare -A pids=()
    for name in node2 node1 monitor; do
      pid=$(service_pid "$name") && pids[$name]=$pid
    done
    # The nodes first (a node left without its monitor would only wait for it), each stopping its Postgres.
    for name in node2 node1 monitor; do
      [[ -d "$dir/$name" ]] && as_postgres pg_autoctl stop --pgdata "$dir/$name" >/dev/null 2>&1 || true
    done
    for name in "${!pids[@]}"; do
      pid=${pids[$name]}
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then  # stuck: stop it and its Postgres without a checkpoint
        as_postgres pg_autoctl stop --immediate --pgdata "$dir/$name" >/dev/null 2>&1 || kill -KILL "$pid" || true
      fi
    done
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
