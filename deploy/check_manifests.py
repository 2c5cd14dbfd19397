#!/usr/bin/env python3
"""Checks one set of qgate-gateway Kubernetes objects (deploy/k8s/*.yaml, or one rendering of
the Helm chart) and writes the gateway.toml of its ConfigMap to a file. Run by
deploy/validate.sh with the venv's Python (kubernetes-validate, PyYAML).

1. Every object against the Kubernetes OpenAPI schema of --kube-version, strictly (unknown
   fields are errors), with kubernetes-validate's bundled schemas: no network. A kind without
   a schema is an error, not a warning.
2. The set is the one expected (--expect-kinds).
3. The objects fit together and fit the gateway: selectors match the pod labels; the probes
   and the Prometheus path are GET routes of qgate-serve's router; ports by name exist; the
   ConfigMap is mounted where --config reads it; the Secret holds every variable that a
   `*_env` key of gateway.toml names; the grace period outlasts preStop + shutdown_grace_ms;
   the container port `http` is the port of `listen` and the probes use it (HTTPS with a
   [tls] table); with `grpc_listen`, the container port `grpc` is its port (and without it
   there is no `grpc` port); the Service exposes both.
4. gateway.toml parses as TOML and uses only keys that qgate-serve's config.rs declares
   (plus --pending-key ones being added), in the shape it declares: tables for `Raw*`
   fields, arrays of tables for `Vec<Raw*>` ones ([[models]], each entry with RawModel's
   keys and its required ones); the single-model keys and [[models]] are not mixed.
   `qgate serve --check-config` is the full check.

Exit status 1 on any error, each printed with the file and object it concerns.
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv

ERRORS: list[str] = []


def error(msg: str) -> None:
    ERRORS.append(msg)
    print(f"  ERROR {msg}")


def get_routes(sources: list[Path]) -> dict[str, set[str]]:
    """`.route("PATH", get(...).post(...))` calls -> {path: {"GET", ...}}."""
    routes: dict[str, set[str]] = {}
    for src in sources:
        for chunk in src.read_text().split(".route(")[1:]:
            path = re.match(r'\s*"([^"]+)"', chunk)
            if not path:
                continue
            call = re.split(r"\n\s*\.", chunk)[0]  # up to the next builder call
            methods = re.findall(r"(?<![\w.])(get|post|put|delete|patch|head)\(", call)
            routes.setdefault(path.group(1), set()).update(m.upper() for m in methods)
    if not routes:
        sys.exit(f"check_manifests.py: found no .route(...) in {', '.join(map(str, sources))}; update get_routes")
    return routes


def struct_fields(body: str) -> list[tuple[str, str, bool]]:
    """(field, type, has #[serde(default)]) of one struct body."""
    out, default = [], False
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("#[serde(") and re.search(r"\bdefault\b", line):
            default = True
        m = re.match(r"^(?:pub\s+)?(\w+)\s*:\s*(.+?),?$", line)
        if m:
            out.append((m.group(1), m.group(2).strip(), default))
            default = False
    return out


class Schema:
    """The keys gateway.toml may hold, from the `Raw*` serde structs of config.rs
    (`RawConfig` is the file). A field whose type is another `Raw*` struct is a table
    ("log.url"); a `Vec<Raw*>` one an array of tables, its entries' keys written
    "models[].model_name". `required` maps a table ("" the file, "tls", "models[]") to
    the fields it must hold (neither Option nor #[serde(default)])."""

    def __init__(self, config_rs: Path):
        text = config_rs.read_text()
        self.structs = {n: struct_fields(b) for n, b in re.findall(r"struct (Raw\w+)\s*\{(.*?)\n\}", text, re.S)}
        if "RawConfig" not in self.structs or "RawModel" not in self.structs:
            sys.exit(f"check_manifests.py: no `struct RawConfig` / `struct RawModel` in {config_rs}; update Schema")
        self.keys: set[str] = set()
        self.required: dict[str, set[str]] = {}
        self.walk("RawConfig", "")
        if len(self.keys) < 5 or not any(k.startswith("models[].") for k in self.keys):
            sys.exit(f"check_manifests.py: read only {sorted(self.keys)} from {config_rs}; update Schema")
        # The top-level keys that are also a model's: the single-model form.
        self.model_keys = {f for f, _, _ in self.structs["RawModel"]} & {f for f, _, _ in self.structs["RawConfig"]}

    def walk(self, name: str, prefix: str) -> None:
        table = prefix[:-1]
        for field, ty, default in self.structs[name]:
            optional = ty.startswith("Option<")
            inner = re.sub(r"^Option<(.*)>$", r"\1", ty)
            if not optional and not default:
                self.required.setdefault(table, set()).add(field)
            vec = re.fullmatch(r"Vec<(Raw\w+)>", inner)
            if vec and vec.group(1) in self.structs:
                self.walk(vec.group(1), f"{prefix}{field}[].")
            elif inner in self.structs:
                self.walk(inner, f"{prefix}{field}.")
            else:
                self.keys.add(prefix + field)


def is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def flatten(table: dict, prefix: str = "", schema_prefix: str = "") -> list[tuple[str, str]]:
    """(key as written, e.g. "models[1].ab.hash_seed"; key in Schema form, "models[].ab.hash_seed")."""
    out = []
    for k, v in table.items():
        if isinstance(v, dict):
            out += flatten(v, f"{prefix}{k}.", f"{schema_prefix}{k}.")
        elif is_table_array(v):
            for i, entry in enumerate(v):
                out += flatten(entry, f"{prefix}{k}[{i}].", f"{schema_prefix}{k}[].")
        else:
            out.append((prefix + k, schema_prefix + k))
    return out


def missing_required(table: dict, schema: Schema, prefix: str = "", schema_prefix: str = "") -> list[str]:
    out = [f"{prefix}{f}" for f in sorted(schema.required.get(schema_prefix.rstrip("."), set()) - table.keys())]
    for k, v in table.items():
        if isinstance(v, dict):
            out += missing_required(v, schema, f"{prefix}{k}.", f"{schema_prefix}{k}.")
        elif is_table_array(v):
            for i, entry in enumerate(v):
                out += missing_required(entry, schema, f"{prefix}{k}[{i}].", f"{schema_prefix}{k}[].")
    return out


def port_of(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


def subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in (small or {}).items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kube-version", required=True)
    ap.add_argument("--expect-kinds", required=True, help="comma-separated, e.g. ConfigMap,Deployment,Service")
    ap.add_argument("--routes", type=Path, nargs="+", required=True, help="Rust sources with the router")
    ap.add_argument("--config-rs", type=Path, required=True)
    ap.add_argument("--pending-key", action="append", default=[], help="a gateway.toml key being added")
    ap.add_argument("--toml-out", type=Path, required=True)
    ap.add_argument("files", type=Path, nargs="+")
    args = ap.parse_args()

    objs = []  # (file, object)
    for f in args.files:
        try:
            docs = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as e:
            error(f"{f}: not YAML: {e}")
            continue
        for d in docs:
            if d is None:
                continue
            if not isinstance(d, dict) or "kind" not in d:
                error(f"{f}: a document that is not a Kubernetes object")
                continue
            objs.append((f, d))

    # 1. Schemas.
    for f, d in objs:
        what = f"{f}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        try:
            kv.validate(d, args.kube_version, strict=True)
            print(f"  ok    {what} (Kubernetes {args.kube_version} schema, strict)")
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            error(f"{what}: {path}: {e.message}")
        except kv.SchemaNotFoundError:
            error(f"{what}: Kubernetes {args.kube_version} has no kind {d.get('kind')} in apiVersion {d.get('apiVersion')}")
        except kv.VersionNotSupportedError as e:
            sys.exit(f"check_manifests.py: {e}")

    # 2. The expected set.
    kinds = sorted(d["kind"] for _, d in objs)
    want = sorted(k for k in args.expect_kinds.split(",") if k)
    if kinds != want:
        error(f"objects {kinds}, expected {want}")
    by_kind = {}
    for f, d in objs:
        by_kind.setdefault(d["kind"], []).append((f, d))
    if len(by_kind.get("Deployment", [])) != 1 or len(by_kind.get("ConfigMap", [])) != 1:
        return report()
    dep_file, dep = by_kind["Deployment"][0]
    cm_file, cm = by_kind["ConfigMap"][0]
    secret = by_kind.get("Secret", [(None, None)])[0][1]

    # 3. Consistency.
    where = f"{dep_file}: Deployment/{dep['metadata']['name']}"
    tpl = dep["spec"]["template"]
    pod_labels = tpl["metadata"].get("labels", {})
    if not subset(dep["spec"]["selector"].get("matchLabels"), pod_labels):
        error(f"{where}: spec.selector does not match the pod labels")
    for kind in ("Service", "PodDisruptionBudget"):
        for f, o in by_kind.get(kind, []):
            sel = o["spec"].get("selector", {})
            sel = sel.get("matchLabels", {}) if kind == "PodDisruptionBudget" else sel
            if not sel or not subset(sel, pod_labels):
                error(f"{f}: {kind}/{o['metadata']['name']}: selector {sel} does not select the gateway's pods {pod_labels}")
    if "app.kubernetes.io/name" not in pod_labels or pod_labels["app.kubernetes.io/name"] != "qgate-gateway":
        error(f"{where}: pods lack the label app.kubernetes.io/name: qgate-gateway")

    pod = tpl["spec"]
    c = pod["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    routes = get_routes(args.routes)
    gets = {p for p, m in routes.items() if "GET" in m}
    probes: dict[str, dict] = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        pr = c.get(probe)
        if probe != "startupProbe" and not pr:
            error(f"{where}: no {probe}")
        if not pr:
            continue
        hg = pr.get("httpGet")
        if not hg:
            error(f"{where}: {probe} is not an httpGet probe")
            continue
        if hg["path"] not in gets:
            error(f"{where}: {probe} path {hg['path']} is no GET route of the gateway ({sorted(gets)})")
        if isinstance(hg["port"], str) and hg["port"] not in ports:
            error(f"{where}: {probe} port {hg['port']!r} is no container port ({ports})")
        probes[probe] = hg
        print(f"  ok    {where}: {probe} GET {hg['path']} is a route of the gateway")
    if c["readinessProbe"]["httpGet"]["path"] != "/v2/health/ready":
        error(f"{where}: readinessProbe should be /v2/health/ready (it answers 503 while draining)")
    ann = tpl["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") == "true":
        if ann.get("prometheus.io/path") not in gets:
            error(f"{where}: prometheus.io/path {ann.get('prometheus.io/path')} is no GET route")
        if str(ann.get("prometheus.io/port")) not in {str(p) for p in ports.values()}:
            error(f"{where}: prometheus.io/port {ann.get('prometheus.io/port')} is no container port")
    exposed: dict[int, list[str]] = {}  # container port -> "Service/NAME:PORT" exposing it
    for f, svc in by_kind.get("Service", []):
        for sp in svc["spec"]["ports"]:
            tp = sp.get("targetPort", sp["port"])
            if tp not in ports and tp not in ports.values():
                error(f"{f}: Service port {sp.get('name')} targets {tp!r}, no container port ({ports})")
                continue
            cport = ports[tp] if isinstance(tp, str) else tp
            exposed.setdefault(cport, []).append(f"Service/{svc['metadata']['name']}:{sp['port']}")

    # The config file: mounted from the ConfigMap, where --config reads it.
    argv = (c.get("command") or []) + (c.get("args") or [])
    cfg_path = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else "/etc/qgate/gateway.toml"
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    found = None
    for m in c.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        if "configMap" in v and cfg_path.startswith(m["mountPath"].rstrip("/") + "/"):
            found = (v["configMap"]["name"], cfg_path[len(m["mountPath"].rstrip("/")) + 1:])
    if not found:
        error(f"{where}: no ConfigMap volume is mounted at the config path {cfg_path}")
        return report()
    if found[0] != cm["metadata"]["name"]:
        error(f"{where}: mounts ConfigMap {found[0]}, the set has {cm['metadata']['name']}")
    text = (cm.get("data") or {}).get(found[1])
    if text is None:
        error(f"{cm_file}: ConfigMap/{cm['metadata']['name']} has no key {found[1]} ({cfg_path})")
        return report()

    # 4. gateway.toml.
    args.toml_out.parent.mkdir(parents=True, exist_ok=True)
    args.toml_out.write_text(text)
    try:
        gw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        error(f"{cm_file}: {found[1]} is not TOML: {e}")
        return report()
    schema = Schema(args.config_rs)
    pending = set(args.pending_key) - schema.keys
    keys = flatten(gw)
    unknown = [k for k, s in keys if s not in schema.keys | pending]
    if unknown:
        error(f"{cm_file}: {found[1]}: keys config.rs does not declare (or not in that shape): {unknown}")
    else:
        note = f" (+ pending {sorted(pending)})" if pending else ""
        print(f"  ok    {cm_file}: {found[1]}: {len(keys)} keys, all declared in {args.config_rs}{note}")
    missing = missing_required(gw, schema)
    if missing:
        error(f"{cm_file}: {found[1]}: required keys missing: {missing}")
    models = gw.get("models")
    if models is not None:
        mixed = sorted(schema.model_keys & gw.keys())
        if mixed:
            error(f"{cm_file}: {found[1]}: [[models]] and the single-model keys {mixed} together (give one form)")
        names = [m.get("model_name") for m in models] if is_table_array(models) else []
        if len(set(names)) != len(names):
            error(f"{cm_file}: {found[1]}: [[models]] names repeat: {names}")
        if not mixed and names and len(set(names)) == len(names):
            print(f"  ok    {cm_file}: {found[1]}: {len(names)} [[models]] tables {names}, no single-model keys")

    def check_bind(key: str, addr: str) -> int:
        host, port = port_of(addr)
        if host not in ("127.0.0.1", "::1", "localhost") and gw.get("allow_non_loopback") is not True:
            error(f"{cm_file}: {key} = {addr!r} needs allow_non_loopback = true")
        if host in ("127.0.0.1", "::1", "localhost"):
            error(f"{cm_file}: {key} = {addr!r} is loopback: the Service and the probes cannot reach it")
        return port

    listen = gw.get("listen", "127.0.0.1:8080")
    lport = check_bind("listen", listen)
    if lport not in ports.values():
        error(f"{where}: listen = {listen!r}, but the container ports are {ports}")
    elif ports.get("http", lport) != lport:
        error(f"{where}: listen = {listen!r}, but the container port http is {ports['http']}")
    grpc = gw.get("grpc_listen")
    if grpc is not None:
        gport = check_bind("grpc_listen", grpc)
        if gport == lport:
            error(f"{cm_file}: grpc_listen = {grpc!r} and listen = {listen!r} share a port")
        if ports.get("grpc") != gport:
            error(f"{where}: grpc_listen = {grpc!r}, but the container port grpc is {ports.get('grpc')} ({ports})")
        else:
            print(f"  ok    {where}: container port grpc {gport} is grpc_listen's")
    elif "grpc" in ports:
        error(f"{where}: a container port grpc ({ports['grpc']}), but gateway.toml has no grpc_listen")
    if by_kind.get("Service"):
        for what, port in [("listen", lport)] + ([("grpc_listen", gport)] if grpc is not None else []):
            if port not in exposed:
                error(f"{where}: no Service port targets {what}'s port {port} (Service ports reach {sorted(exposed)})")
            else:
                print(f"  ok    {what}'s port {port} is exposed by {', '.join(exposed[port])}")
    scheme = "HTTPS" if gw.get("tls") else "HTTP"
    for probe, hg in probes.items():
        pport = ports.get(hg["port"]) if isinstance(hg["port"], str) else hg["port"]
        if pport != lport:
            error(f"{where}: {probe} is on port {hg['port']!r} ({pport}), not listen's {lport} (REST; gRPC has no HTTP health routes)")
        if hg.get("scheme", "HTTP") != scheme:
            error(f"{where}: {probe} scheme {hg.get('scheme', 'HTTP')}, but the REST port speaks {scheme} ([tls] {'set' if gw.get('tls') else 'not set'})")
    if ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/scheme", "http").upper() != scheme:
        error(f"{where}: prometheus.io/scheme {ann.get('prometheus.io/scheme', 'http')}, but the REST port speaks {scheme}")

    envs = [gw.get("outcome_token_env"), gw.get("admin", {}).get("token_env"), gw.get("log", {}).get("url_env")]
    envs = [e for e in envs if e]
    plain_env = {e["name"] for e in c.get("env", [])}
    secret_refs = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
    if secret is not None:
        if secret["metadata"]["name"] not in secret_refs:
            error(f"{where}: envFrom does not name Secret/{secret['metadata']['name']} ({secret_refs})")
        held = set((secret.get("stringData") or {}).keys()) | set((secret.get("data") or {}).keys())
        missing = [e for e in envs if e not in held and e not in plain_env]
        if missing:
            error(f"Secret/{secret['metadata']['name']} lacks {missing}, named by gateway.toml's *_env keys")
        else:
            print(f"  ok    Secret/{secret['metadata']['name']} holds {envs}")
    else:
        print(f"  note  no Secret in this set: {secret_refs} must hold {envs}")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    need = pre_s + gw.get("shutdown_grace_ms", 10000) / 1000
    if grace <= need:
        error(f"{where}: terminationGracePeriodSeconds {grace} <= preStop {pre_s} s + shutdown_grace_ms {need - pre_s:g} s")
    else:
        print(f"  ok    {where}: terminationGracePeriodSeconds {grace} > preStop {pre_s} s + shutdown grace {need - pre_s:g} s")
    sc = c.get("securityContext", {})
    psc = pod.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and (sc.get("runAsNonRoot") or psc.get("runAsNonRoot"))):
        error(f"{where}: expected readOnlyRootFilesystem and runAsNonRoot")
    return report()


def report() -> int:
    if ERRORS:
        print(f"check_manifests.py: {len(ERRORS)} error(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
