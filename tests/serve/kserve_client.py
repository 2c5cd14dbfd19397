"""The KServe Python SDK (`kserve.InferenceRESTClient`, protocol v2) against `qgate serve`.

    kserve_client.py GATEWAY MODEL N BASELINE.onnx

Checks server and model readiness, then sends N requests from fixtures/digits/test.npz
(1 to 3 rows each), alternating JSON and binary tensor data, and checks that each answer
equals onnxruntime's (1 thread, as qgate runs it) on the baseline in datatypes, shapes and
values. Prints one JSON line per request with the id the gateway answered. Exits 1 at the
first mismatch.
"""

import asyncio
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]


async def main():
    gateway, model, n, baseline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    url = f"http://{gateway}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(baseline, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    names = [o.name for o in sess.get_outputs()]
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        assert await client.is_server_ready(url), "server not ready"
        assert await client.is_model_ready(url, model), "model not ready"
        data = np.load(ROOT / "fixtures/digits/test.npz")
        xs = data["image" if len(inp.shape) == 4 else "x"]
        at = 0
        for i in range(n):
            rows = 1 + i % 3
            x = np.ascontiguousarray(xs[at:at + rows])
            at += rows
            t = InferInput(name=inp.name, shape=list(x.shape), datatype="FP32")
            t.set_data_from_numpy(x, binary_data=i % 2 == 1)
            rid = f"ks-{i}"
            r = await client.infer(url, InferRequest(model_name=model, infer_inputs=[t],
                                                     request_id=rid), model_name=model)
            want = dict(zip(names, sess.run(None, {inp.name: x})))
            got = {o.name: o.as_numpy() for o in r.outputs}
            for k, w in want.items():
                g = got[k]
                if g.dtype != w.dtype or g.shape != w.shape or not np.array_equal(g, w):
                    print(f"request {i} output {k}: gateway {g.dtype}{g.shape} != "
                          f"onnxruntime {w.dtype}{w.shape}", file=sys.stderr)
                    return 1
            print(json.dumps({"id": r.id, "sent": rid, "binary": i % 2 == 1}), flush=True)
    finally:
        await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
