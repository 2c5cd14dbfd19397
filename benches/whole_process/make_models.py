"""Writes a CNN for `size`x`size` RGB images (FP32 and its INT8 QDQ quantization by
onnxruntime) and a labelled data set of synthetic images, for the whole-process benchmark
(`run.sh`). Nothing is downloaded; the same arguments give the same files.

    python make_models.py OUT_DIR --size 224 --samples 208
"""
import argparse
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

CLASSES = 10
# (out channels, stride) of the 3x3 convolutions, each followed by Relu.
CONVS = [(16, 2), (32, 2), (64, 2), (64, 2)]


def build(size, rng):
    nodes, inits, t, cin = [], [], "image", 3
    for k, (cout, stride) in enumerate(CONVS):
        w = rng.normal(0, np.sqrt(2.0 / (9 * cin)), (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.05, cout).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"B{k}")]
        nodes += [
            helper.make_node("Conv", [t, f"W{k}", f"B{k}"], [f"conv{k}"], name=f"conv{k}",
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]),
            helper.make_node("Relu", [f"conv{k}"], [f"relu{k}"], name=f"relu{k}"),
        ]
        t, cin = f"relu{k}", cout
    w = rng.normal(0, np.sqrt(1.0 / cin), (CLASSES, cin)).astype(np.float32)
    b = np.zeros(CLASSES, np.float32)
    inits += [numpy_helper.from_array(w, "Wfc"), numpy_helper.from_array(b, "Bfc")]
    nodes += [
        helper.make_node("GlobalAveragePool", [t], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "Wfc", "Bfc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, f"cnn{size}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def images(rng, n, size):
    """Smooth random images in [0, 1]: a few blurred blobs per channel."""
    out = np.empty((n, 3, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        for c in range(3):
            cy, cx, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3)
            out[i, c] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        out[i] += rng.normal(0, 0.05, (3, size, size)).astype(np.float32)
    return np.clip(out, 0, 1)


class Reader(CalibrationDataReader):
    def __init__(self, x):
        self.x, self.i = x, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        self.i += 8
        return {"image": self.x[self.i - 8:self.i]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--samples", type=int, default=208)
    ap.add_argument("--chunk", type=int, default=1000, help="images generated at a time")
    ap.add_argument("--models", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / f"cnn{args.size}_fp32.onnx"
    int8 = args.out / f"cnn{args.size}_int8_qdq.onnx"
    if args.models:
        onnx.save(build(args.size, np.random.default_rng(0)), fp32)
        calib = images(np.random.default_rng(1), 64, args.size)
        quantize_static(str(fp32), str(int8), Reader(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
    # Labels: the FP32 model's answer on a clean copy, then 10 % of them changed, so
    # accuracy is neither 0 nor 1. Written as an uncompressed .npz (numpy.savez), one
    # chunk of images at a time into a .npy member so 50 000 images never sit in memory.
    import onnxruntime as ort
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    data = args.out / f"data{args.size}_{args.samples}.npz"
    import zipfile
    with zipfile.ZipFile(data, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        labels = []
        with z.open("image.npy", "w", force_zip64=True) as f:
            header = {"descr": "<f4", "fortran_order": False,
                      "shape": (args.samples, 3, args.size, args.size)}
            np.lib.format.write_array_header_2_0(f, header)
            for start in range(0, args.samples, args.chunk):
                x = images(rng, min(args.chunk, args.samples - start), args.size)
                y = sess.run(None, {"image": x})[0].argmax(1)
                flip = rng.random(len(y)) < 0.1
                y[flip] = rng.integers(0, CLASSES, flip.sum())
                labels.append(y.astype(np.int64))
                f.write(x.tobytes())
        with z.open("label.npy", "w") as f:
            np.lib.format.write_array(f, np.concatenate(labels))
    print(data)


if __name__ == "__main__":
    main()
