#!/usr/bin/env bash
# Start MLServer (Open Inference Protocol V2 / KServe V2 REST) on 127.0.0.1:PORT in the
# background, serving the models in tests/servers/models. Prints the base URL once
# GET /v2/health/ready answers 200.
#   tests/servers/start.sh PORT [GRPC_PORT]     (GRPC_PORT defaults to PORT+1; MLServer
#                                               cannot turn gRPC off; metrics are off)
# Env: QGATE_SERVERS_VENV (default <repo>/.venv-servers, see install.sh),
#      QGATE_SERVERS_STATE (pid/log dir, default <repo>/target/v2-server),
#      QGATE_SERVERS_TIMEOUT (seconds to wait for readiness, default 60).
# Stop with tests/servers/stop.sh [PORT].
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${QGATE_SERVERS_VENV:-$ROOT/.venv-servers}"
STATE="${QGATE_SERVERS_STATE:-$ROOT/target/v2-server}"
TIMEOUT="${QGATE_SERVERS_TIMEOUT:-60}"

PORT="${1:?usage: start.sh PORT [GRPC_PORT]}"
GRPC_PORT="${2:-$((PORT + 1))}"
URL="http://127.0.0.1:$PORT"
PIDFILE="$STATE/mlserver-$PORT.pid"
LOG="$STATE/mlserver-$PORT.log"

if [[ ! -x "$VENV/bin/mlserver" ]]; then
    echo "start.sh: no MLServer in $VENV; run tests/servers/install.sh first" >&2
    exit 1
fi
mkdir -p "$STATE"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ready() {
    "$VENV/bin/python" - "$URL/v2/health/ready" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    if ready; then echo "$URL"; exit 0; fi
    echo "start.sh: pid $(cat "$PIDFILE") from $PIDFILE is running but $URL is not ready" >&2
    exit 1
fi
for p in "$PORT" "$GRPC_PORT"; do
    if port_open "$p"; then
        echo "start.sh: 127.0.0.1:$p is already in use" >&2
        exit 1
    fi
done

# Ports come from the environment (settings.json pins host 127.0.0.1, no metrics server,
# parallel_workers 0). Run from STATE so MLServer's working-directory files land there.
cd "$STATE"
MLSERVER_HTTP_PORT="$PORT" MLSERVER_GRPC_PORT="$GRPC_PORT" \
    setsid "$VENV/bin/mlserver" start "$HERE" >"$LOG" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$PIDFILE"

deadline=$((SECONDS + TIMEOUT))
until ready; do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "start.sh: MLServer exited during startup; log $LOG:" >&2
        tail -n 40 "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "start.sh: $URL/v2/health/ready not ready after ${TIMEOUT}s; log $LOG:" >&2
        tail -n 40 "$LOG" >&2
        kill -TERM -- "-$PID" 2>/dev/null || kill -TERM "$PID" 2>/dev/null || true
        rm -f "$PIDFILE"
        exit 1
    fi
    sleep 0.2
done
echo "$URL"
