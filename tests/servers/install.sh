#!/usr/bin/env bash
# Create/update the venv for the V2 test server (MLServer + onnxruntime).
#   tests/servers/install.sh            -> <repo>/.venv-servers
# Env: PYTHON (default python3, 3.11 expected), QGATE_SERVERS_VENV (venv path),
#      QGATE_REQUIREMENTS (default requirements.txt here; tests/serve/kserve-requirements.txt
#      with QGATE_SERVERS_VENV=.venv-kserve makes the kserve SDK's venv).
# Idempotent: does nothing if the venv already matches the requirements file.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${QGATE_SERVERS_VENV:-$ROOT/.venv-servers}"
PY="${PYTHON:-python3}"
REQ="${QGATE_REQUIREMENTS:-$HERE/requirements.txt}"
STAMP="$VENV/.requirements.sha256"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "install.sh: $VENV up to date"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 9) <= v <= (3, 12) else f"install.sh: need Python 3.9-3.12 for mlserver 1.7.1 and kserve 0.21, got {sys.version}")'
    "$PY" -m venv "$VENV"
fi
# A current pip installs this set about twice as fast as the pip 23 that ships with 3.11.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip==26.3"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
echo "$want" > "$STAMP"
echo "install.sh: installed into $VENV"
