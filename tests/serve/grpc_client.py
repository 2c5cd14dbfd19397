"""Triton's gRPC client (`tritonclient[grpc]`) against `qgate serve`'s gRPC port, checked
against the same gateway's REST answers (`tritonclient[http]`).

    grpc_client.py REST_ADDR MODEL GRPC_ADDR N

Health, readiness and model metadata must agree with REST's. Then N requests from
fixtures/digits/test.npz (1 to 3 rows each) go over gRPC and, with the same inputs, over
REST; each gRPC answer must equal the REST answer in names, datatypes, shapes and values.
Two refusals are checked: an unknown model (NOT_FOUND) and a wrong input name
(INVALID_ARGUMENT). Prints one JSON line per gRPC request: its id and whether it gave one.
Exits 1 at the first mismatch.
"""

import json
import pathlib
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = pathlib.Path(__file__).resolve().parents[2]


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def main():
    rest_addr, model, grpc_addr, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rest = httpclient.InferenceServerClient(url=rest_addr)
    grpc = grpcclient.InferenceServerClient(url=grpc_addr)
    if not (grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready(model)):
        fail("the gRPC service is not live and ready")
    gmeta = grpc.get_model_metadata(model, as_json=True)
    rmeta = rest.get_model_metadata(model)
    for key in ("inputs", "outputs"):
        g = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in gmeta[key]]
        r = [(t["name"], t["datatype"], t["shape"]) for t in rmeta[key]]
        if g != r:
            fail(f"metadata {key}: gRPC {g} != REST {r}")
    inp = rmeta["inputs"][0]
    outs = [o["name"] for o in rmeta["outputs"]]
    data = np.load(ROOT / "fixtures/digits/test.npz")
    xs = data["image" if len(inp["shape"]) == 4 else "x"]
    at = 0
    for i in range(n):
        rows = 1 + i % 3
        x = np.ascontiguousarray(xs[at : at + rows])
        at = (at + rows) % (len(xs) - 3)
        gi = grpcclient.InferInput(inp["name"], list(x.shape), inp["datatype"])
        gi.set_data_from_numpy(x)
        rid = f"grpc-{i}" if i % 2 else ""
        # Ask for the outputs in reverse order every third request: the answer follows.
        names = outs[::-1] if i % 3 == 2 else outs
        gout = [grpcclient.InferRequestedOutput(o) for o in names]
        g = grpc.infer(model, [gi], outputs=gout, request_id=rid,
                       headers={"x-user-id": f"u{i % 11}"})
        ri = httpclient.InferInput(inp["name"], list(x.shape), inp["datatype"])
        ri.set_data_from_numpy(x)
        r = rest.infer(model, [ri], headers={"x-user-id": f"u{i % 11}"})
        resp = g.get_response(as_json=True)
        got_names = [o["name"] for o in resp["outputs"]]
        if got_names != names:
            fail(f"request {i}: outputs {got_names}, asked for {names}")
        for o in outs:
            a, b = g.as_numpy(o), r.as_numpy(o)
            if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
                fail(f"request {i} output {o}: gRPC {a.dtype}{a.shape} {a.ravel()[:4]} "
                     f"!= REST {b.dtype}{b.shape} {b.ravel()[:4]}")
        if rid and resp["id"] != rid:
            fail(f"request {i}: id {resp['id']!r}, sent {rid!r}")
        print(json.dumps({"id": resp["id"], "given": bool(rid)}), flush=True)
    # Refusals carry the gateway's message and the right status code.
    x = np.ascontiguousarray(xs[:1])
    for what, call, code in [
        ("unknown model", lambda: grpc.infer("nope", [gi_of(inp, x)]), "StatusCode.NOT_FOUND"),
        ("wrong input", lambda: grpc.infer(model, [gi_of(inp, x, "nope")]),
         "StatusCode.INVALID_ARGUMENT"),
    ]:
        try:
            call()
            fail(f"{what}: accepted")
        except InferenceServerException as e:
            if e.status() != code or "nope" not in e.message():
                fail(f"{what}: {e.status()} {e.message()}")
    return 0


def gi_of(inp, x, name=None):
    t = grpcclient.InferInput(name or inp["name"], list(x.shape), inp["datatype"])
    t.set_data_from_numpy(x)
    return t


if __name__ == "__main__":
    sys.exit(main())
