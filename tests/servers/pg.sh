#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for the gateway's shared-log tests.
#   tests/servers/pg.sh start PORT    initdb (first time) and start; prints the URL
#   tests/servers/pg.sh stop PORT     fast shutdown
#   tests/servers/pg.sh kill PORT     SIGKILL the postmaster (a crash, not a shutdown)
#   tests/servers/pg.sh restart PORT  start again after kill/stop (same data)
# Runs the server as the `postgres` user (initdb refuses root); data under
# ${QGATE_PG_DIR:-/tmp/qgate-pg-PORT}, trust authentication on loopback only.
set -euo pipefail
cmd="${1:?start|stop|kill|restart}"
port="${2:?port}"
dir="${QGATE_PG_DIR:-/tmp/qgate-pg-$port}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$bin/pg_ctl" ] || { echo "pg.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
start() {
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=on" start >/dev/null
}
case "$cmd" in
start)
    if [ ! -d "$dir/data" ]; then
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir"
        as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 >/dev/null
    fi
    start
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
restart) start ;;
stop) as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null ;;
kill)
    pid="$(head -n 1 "$dir/data/postmaster.pid")"
    kill -9 "$pid"
    # Its backends exit when they see the postmaster gone; wait until the port is free.
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    pkill -9 -u postgres -f -- "-p $port" 2>/dev/null || true
    ;;
*) echo "pg.sh: unknown command $cmd" >&2; exit 2 ;;
esac
