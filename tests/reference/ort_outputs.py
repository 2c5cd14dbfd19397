"""onnxruntime's outputs of ONNX models on a data file, computed on the machine that runs the
tests. onnxruntime's fused INT8 kernels depend on the CPU's instruction set (AVX2, AVX-512
VNNI, AMX give different logits), so a reference computed on another CPU does not hold here:
tests that compare with "what onnxruntime computes" call this script instead of reading
numbers committed from the generator's machine.

    python ort_outputs.py OUT.npz DATA.npz MODEL.onnx [MODEL.onnx ...]

Settings as fixtures/gen/generate.py and qgate's ONNX Runtime backend: CPU provider, one
intra-op and one inter-op thread, the default (full) graph optimisation level, the whole data
set as one batch (dynamic quantization depends on the batch). Writes `{stem}__{output}` for
every output of every model. Needs numpy and onnxruntime (tests/servers/requirements.txt).
"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main(out, data, models):
    arrays = np.load(data)
    result = {}
    for path in models:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feeds = {i.name: arrays[i.name] for i in sess.get_inputs()}
        names = [o.name for o in sess.get_outputs()]
        for name, value in zip(names, sess.run(names, feeds)):
            result[f"{Path(path).stem}__{name}"] = value
    np.savez(out, **result)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
