"""A real V2 client (Triton's `tritonclient[http]`) against `qgate serve`.

    client.py GATEWAY MODEL N --ort BASELINE.onnx CANDIDATE.onnx
    client.py GATEWAY MODEL N --v2 SERVER BASELINE_NAME CANDIDATE_NAME

Sends N requests from fixtures/digits/test.npz (1 to 3 rows each) to the gateway, half with
the binary tensor extension (tritonclient's default) and half as JSON, and checks that each
answer equals the baseline called directly -- onnxruntime in this process (1 thread, as
qgate runs it), or the V2 server itself -- in names, datatypes, shapes and values. Prints
one JSON line per request: its id, the arm, and the top-5 class indices of each 2-D float
output from the baseline and from the candidate, both called directly, for the caller to
compare with the gateway's log. Exits 1 at the first mismatch.
"""

import json
import pathlib
import sys

import numpy as np
import tritonclient.http as httpclient

ROOT = pathlib.Path(__file__).resolve().parents[2]


def direct_ort(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    in_name = sess.get_inputs()[0].name

    def run(x):
        return dict(zip(names, sess.run(None, {in_name: x})))

    return run


def direct_v2(server, model):
    client = httpclient.InferenceServerClient(url=server)
    meta = client.get_model_metadata(model)
    inp = meta["inputs"][0]
    outs = [o["name"] for o in meta["outputs"]]

    def run(x):
        i = httpclient.InferInput(inp["name"], list(x.shape), inp["datatype"])
        # MLServer refuses the binary extension: JSON both ways.
        i.set_data_from_numpy(x, binary_data=False)
        req = [httpclient.InferRequestedOutput(o, binary_data=False) for o in outs]
        r = client.infer(model, [i], outputs=req)
        return {o: r.as_numpy(o) for o in outs}

    return run


def top5(outputs):
    return {
        k: np.argsort(-v, axis=1, kind="stable")[:, :5].tolist()
        for k, v in outputs.items()
        if v.ndim == 2 and v.dtype.kind == "f"
    }


def main():
    gateway, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kind = sys.argv[4]
    if kind == "--ort":
        base, cand = direct_ort(sys.argv[5]), direct_ort(sys.argv[6])
    else:
        base, cand = direct_v2(sys.argv[5], sys.argv[6]), direct_v2(sys.argv[5], sys.argv[7])
    client = httpclient.InferenceServerClient(url=gateway)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model)
    meta = client.get_model_metadata(model)
    inp = meta["inputs"][0]
    outs = [o["name"] for o in meta["outputs"]]
    data = np.load(ROOT / "fixtures/digits/test.npz")
    key = "image" if len(inp["shape"]) == 4 else "x"
    xs = data[key]
    at = 0
    for i in range(n):
        rows = 1 + i % 3
        x = np.ascontiguousarray(xs[at : at + rows])
        at = (at + rows) % (len(xs) - 3)
        binary = i % 2 == 0
        t = httpclient.InferInput(inp["name"], list(x.shape), inp["datatype"])
        t.set_data_from_numpy(x, binary_data=binary)
        req = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outs]
        rid = f"tc-{i}" if i % 3 else ""
        r = client.infer(model, [t], outputs=req, request_id=rid, headers={"x-user-id": f"u{i % 17}"})
        got = {o: r.as_numpy(o) for o in outs}
        want = base(x)
        for o in outs:
            g, w = got[o], want[o]
            if g.dtype != w.dtype or g.shape != w.shape or not np.array_equal(g, w):
                print(f"request {i} output {o}: gateway {g.dtype}{g.shape} {g.ravel()[:4]} "
                      f"!= baseline {w.dtype}{w.shape} {w.ravel()[:4]}", file=sys.stderr)
                return 1
        resp = r.get_response()
        if rid and resp["id"] != rid:
            print(f"request {i}: id {resp['id']!r}, sent {rid!r}", file=sys.stderr)
            return 1
        print(json.dumps({
            "id": resp["id"],
            "binary": binary,
            "baseline_top5": top5(want),
            "candidate_top5": top5(cand(x)),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
