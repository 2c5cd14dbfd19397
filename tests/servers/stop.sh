#!/usr/bin/env bash
# Stop the MLServer started by start.sh on PORT, or every one started by start.sh if no
# PORT is given. SIGTERM, then SIGKILL after 10 s. Exits 0 if nothing was running.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${QGATE_SERVERS_STATE:-$ROOT/target/v2-server}"

if [[ $# -ge 1 ]]; then
    pidfiles=("$STATE/mlserver-$1.pid")
else
    shopt -s nullglob
    pidfiles=("$STATE"/mlserver-*.pid)
fi

for f in "${pidfiles[@]}"; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        # start.sh runs MLServer under setsid: its pid is also its process group id.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "stop.sh: stopped pid $pid ($f)"
    fi
    rm -f "$f"
done
