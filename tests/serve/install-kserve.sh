#!/usr/bin/env bash
# Create/update the venv with the KServe SDK for qgate serve's client tests.
#   tests/serve/install-kserve.sh         -> <repo>/.venv-kserve
# Env: PYTHON (default python3, 3.9-3.12), QGATE_KSERVE_VENV (venv path).
# Idempotent: does nothing if the venv already matches kserve-requirements.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${QGATE_KSERVE_VENV:-$ROOT/.venv-kserve}"
PY="${PYTHON:-python3}"
REQ="$HERE/kserve-requirements.txt"
STAMP="$VENV/.requirements.sha256"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "install-kserve.sh: $VENV up to date"
    exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip==26.3"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
echo "$want" > "$STAMP"
echo "install-kserve.sh: installed into $VENV"
