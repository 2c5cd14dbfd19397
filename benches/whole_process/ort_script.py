"""The ten-line script a user would write instead of qgate: both models over the same data
in the same batches with onnxruntime, and each one's accuracy. Same threads as qgate's
default (1 intra-op thread), same batch.

    python ort_script.py BASELINE.onnx CANDIDATE.onnx DATA.npz --batch 8
"""
import argparse

import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("baseline")
ap.add_argument("candidate")
ap.add_argument("data")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--threads", type=int, default=1)
args = ap.parse_args()

opts = ort.SessionOptions()
opts.intra_op_num_threads = args.threads
opts.inter_op_num_threads = 1
data = np.load(args.data)
x, y = data["image"], data["label"]
for path in (args.baseline, args.candidate):
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + args.batch]})[0].argmax(1)
                           for i in range(0, len(x), args.batch)])
    print(path, "accuracy", float((pred == y).mean()))
