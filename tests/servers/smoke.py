"""Smoke test of a running V2 test server (tests/servers/start.sh PORT).

    .venv-servers/bin/python tests/servers/smoke.py http://127.0.0.1:PORT

Checks readiness, metadata, that a 540-sample batch of fixtures/digits/test.npz through
mlp_fp32 / cnn_fp32 over HTTP/JSON reproduces fixtures/digits/ref_outputs.npz bit for bit,
the `outputs` filter, the error models, and the `slow` model's delay.
"""

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "fixtures" / "digits"


def call(url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, r.headers.get("Content-Type"), raw, len(data or b"")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read(), len(data or b"")


def infer_body(name, arr, outputs=None):
    body = {
        "inputs": [
            {"name": name, "shape": list(arr.shape), "datatype": "FP32",
             "data": arr.ravel().tolist()}
        ]
    }
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    return body


def main(base):
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("ok   " if ok else "FAIL ") + what)
        fails += 0 if ok else 1

    check(call(f"{base}/v2/health/ready")[0] == 200, "GET /v2/health/ready -> 200")
    st, _, raw, _ = call(f"{base}/v2/models/mlp_fp32")
    meta = json.loads(raw)
    check(st == 200 and meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["shape"] == [-1, 64],
          f"GET /v2/models/mlp_fp32 -> {st} {raw.decode()}")
    check(call(f"{base}/v2/models/cnn_fp32/ready")[0] == 200, "GET /v2/models/cnn_fp32/ready -> 200")

    test = np.load(DIGITS / "test.npz")
    ref = np.load(DIGITS / "ref_outputs.npz")
    for model, inp, key in [("mlp_fp32", "x", "x"), ("cnn_fp32", "image", "image"),
                            ("mlp_int8_dynamic", "x", "x"), ("cnn_int8_qdq", "image", "image")]:
        x = test[key].astype(np.float32)
        t0 = time.perf_counter()
        st, _, raw, sent = call(f"{base}/v2/models/{model}/infer", infer_body(inp, x))
        dt = time.perf_counter() - t0
        resp = json.loads(raw)
        for out in resp["outputs"]:
            got = np.asarray(out["data"], dtype=np.float64).astype(np.float32).reshape(out["shape"])
            want = ref[f"{model}__{out['name']}"]
            diff = float(np.max(np.abs(got - want)))
            check(st == 200 and got.shape == want.shape and diff == 0.0,
                  f"{model} {x.shape} -> {out['name']} {out['shape']} max|diff| vs ref_outputs.npz"
                  f" = {diff} (request {sent} B, response {len(raw)} B, {dt * 1000:.0f} ms)")

    st, _, raw, _ = call(f"{base}/v2/models/cnn_fp32/infer",
                         infer_body("image", test["image"][:3], outputs=["logits"]))
    names = [o["name"] for o in json.loads(raw)["outputs"]]
    check(st == 200 and names == ["logits"], f"cnn_fp32 outputs=[logits] -> {names}")

    st, ctype, raw, _ = call(f"{base}/v2/models/broken/infer", infer_body("x", test["x"][:2]))
    check(st == 500, f"broken -> {st} {ctype} {raw[:200]!r}")
    st, ctype, raw, _ = call(f"{base}/v2/models/broken_json/infer", infer_body("x", test["x"][:2]))
    check(st == 500 and "error" in json.loads(raw), f"broken_json -> {st} {ctype} {raw[:200]!r}")

    t0 = time.perf_counter()
    st, _, _, _ = call(f"{base}/v2/models/slow/infer", infer_body("x", test["x"][:2]))
    dt = time.perf_counter() - t0
    check(st == 200 and 4.5 < dt < 7, f"slow -> {st} after {dt:.2f} s")

    print(f"{fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"))
