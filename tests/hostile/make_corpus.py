"""The hostile-input corpus: malformed or hostile models, data files, image folders, policies,
run configs, flags, saved predictions and V2 server answers, each with the exit code qgate
must give and words its error must contain.

Writes tests/hostile/corpus/ (small files, committed) and tests/hostile/cases.json. Reads
only committed fixtures, so it reproduces the same corpus anywhere:

    .venv-fixtures/bin/python tests/hostile/make_corpus.py

tests/hostile/run.py runs the cases against a qgate binary (CI: the release build).

Case fields: id, category, args (placeholders: {F} fixtures/digits, {C} the corpus folder,
{OUT} a fresh report folder, {V2} the mock V2 server of run.py, {FIFO} a named pipe made by
run.py, {TMP} a scratch folder), exit (0 pass, 1 fail, 2 error), needles (every one must be
in stderr when exit is 2; in stdout otherwise).
"""
import io
import json
import shutil
import struct
import sqlite3
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures" / "digits"
HERE = Path(__file__).resolve().parent
C = HERE / "corpus"

CASES = []

# Short, cheap settings: these cases check handling, not figures.
QUICK_COMPARE = ["--no-progress", "--no-runtime-check", "--bootstrap-resamples", "100"]
QUICK_BENCH = ["--no-progress", "--no-sweeps", "--duration", "0.2", "--rounds", "2",
               "--warmup-time", "0.05", "--no-nvml"]


def case(cid, category, args, exit_code, needles=(), timeout=60):
    assert not any(c["id"] == cid for c in CASES), cid
    CASES.append({"id": cid, "category": category, "args": list(args), "exit": exit_code,
                  "needles": list(needles), "timeout": timeout})


def merged(defaults, extra):
    """`defaults` then `extra`, leaving out a default flag (and its value) that `extra`
    sets: a case tests its own value, not clap's refusal of a repeated flag."""
    extra = list(extra)
    out, i = [], 0
    while i < len(defaults):
        flag = defaults[i]
        takes_value = i + 1 < len(defaults) and not defaults[i + 1].startswith("--")
        if flag not in extra:
            out += defaults[i:i + 1 + takes_value]
        i += 1 + takes_value
    return out + extra


def compare(candidate="{F}/mlp_int8_qdq.onnx", data="{F}/test.npz",
            baseline="{F}/mlp_fp32.onnx", extra=()):
    return ["compare", "--baseline", baseline, "--candidate", candidate, "--data", data,
            "--out", "{OUT}", *merged(QUICK_COMPARE, extra)]


def bench(candidate="{F}/mlp_int8_qdq.onnx", baseline="{F}/mlp_fp32.onnx", extra=()):
    return ["bench", "--baseline", baseline, "--candidate", candidate, "--out", "{OUT}",
            *merged(QUICK_BENCH, extra)]


def sensitivity(model="{F}/mlp_fp32.onnx", data="{F}/test.npz", extra=()):
    return ["sensitivity", "--model", model, "--data", data, "--out", "{OUT}",
            *merged(["--no-progress", "--bench-seconds", "0"], extra)]


def save_model(m, name):
    p = C / "models" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(m.SerializeToString())
    return f"{{C}}/models/{name}"


def raw_file(rel, data):
    p = C / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return f"{{C}}/{rel}"


def mlp():
    return onnx.load(str(FIX / "mlp_fp32.onnx"))


def mlp_graph(nodes_after=(), output=None, extra_inits=(), input_shape=("N", 64),
              input_type=TensorProto.FLOAT, opset=17, outputs=None):
    """The digits MLP (x [N,64] -> fc1 -> relu -> fc2 -> `fc2`), then `nodes_after`."""
    base = mlp()
    inits = list(base.graph.initializer) + list(extra_inits)
    nodes = []
    for n in base.graph.node:
        n = onnx.NodeProto.FromString(n.SerializeToString())
        if n.name == "fc2_add":
            n.output[0] = "fc2"
        nodes.append(n)
    nodes += list(nodes_after)
    if outputs is None:
        outputs = [helper.make_tensor_value_info(output or "fc2", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "hostile",
                          [helper.make_tensor_value_info("x", input_type, list(input_shape))],
                          outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


# ---------------------------------------------------------------- models
def models():
    good = (FIX / "mlp_fp32.onnx").read_bytes()
    # Truncations at 16 places: every one an error naming the file.
    for frac in [0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95,
                 0.99, 0.999]:
        n = int(len(good) * frac)
        name = f"trunc_{n}.onnx"
        p = raw_file(f"models/{name}", good[:n])
        case(f"model/truncated-{n}", "models", compare(candidate=p), 2, [name])
    rng = np.random.default_rng(11)
    for size in [1, 64, 4096, 65536]:
        p = raw_file(f"models/random_{size}.onnx", rng.bytes(size))
        case(f"model/random-bytes-{size}", "models", compare(candidate=p), 2,
             [f"random_{size}.onnx"])
    for name, data in [("text.onnx", "this is not a model\n"),
                       ("json.onnx", '{"graph": {"node": []}}'),
                       ("png.onnx", (FIX / "images" / "0" / "d0276.png").read_bytes()),
                       ("zip.onnx", (FIX / "test.npz").read_bytes()[:2000]),
                       ("nul.onnx", b"\0" * 1000),
                       ("ff.onnx", b"\xff" * 1000)]:
        p = raw_file(f"models/{name}", data)
        case(f"model/not-onnx-{name}", "models", compare(candidate=p), 2, [name])
    case("model/missing-file", "models", compare(candidate="{C}/models/no_such.onnx"), 2,
         ["no_such.onnx"])
    case("model/directory", "models", compare(candidate="{C}/models"), 2, ["models"])
    case("model/named-pipe", "models", compare(candidate="{FIFO}"), 2, ["fifo"])
    case("model/baseline-truncated", "models",
         compare(baseline=f"{{C}}/models/trunc_{int(len(good) * 0.5)}.onnx"), 2,
         ["baseline", "trunc_"])

    # Structural damage.
    m = mlp()
    m.ClearField("graph")
    case("model/no-graph", "models", compare(candidate=save_model(m, "no_graph.onnx")), 2,
         ["no_graph.onnx"])
    m = mlp_graph(output="nowhere")
    case("model/output-not-produced", "models",
         compare(candidate=save_model(m, "output_not_produced.onnx")), 2,
         ["output_not_produced.onnx"])
    m = mlp_graph([helper.make_node("Relu", ["ghost"], ["out"], name="r")], output="out")
    case("model/undefined-input", "models",
         compare(candidate=save_model(m, "undefined_input.onnx")), 2,
         ["undefined_input.onnx"])
    m = mlp_graph([helper.make_node("Relu", ["fc2"], ["out"], name="a"),
                   helper.make_node("Neg", ["fc2"], ["out"], name="b")], output="out")
    case("model/two-producers", "models",
         compare(candidate=save_model(m, "two_producers.onnx")), 2,
         ["two_producers.onnx", "out"])
    m = mlp_graph([helper.make_node("Add", ["fc2", "loop_b"], ["loop_a"], name="a"),
                   helper.make_node("Relu", ["loop_a"], ["loop_b"], name="b")], output="loop_a")
    case("model/cycle", "models", compare(candidate=save_model(m, "cycle.onnx")), 2,
         ["cycle.onnx"])
    m = mlp_graph([helper.make_node("FooBar", ["fc2"], ["out"], name="foo")], output="out")
    case("model/unknown-op", "models", compare(candidate=save_model(m, "unknown_op.onnx")),
         2, ["unknown_op.onnx", "FooBar"])
    m = mlp_graph([helper.make_node("Gelu", ["fc2"], ["out"], name="g",
                                    domain="com.example")], output="out")
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    case("model/unknown-domain", "models",
         compare(candidate=save_model(m, "unknown_domain.onnx")), 2, ["unknown_domain.onnx"])
    m = mlp_graph(opset=99)
    case("model/future-opset", "models", compare(candidate=save_model(m, "opset99.onnx")),
         2, ["opset99.onnx"])
    m = mlp()
    del m.opset_import[:]
    case("model/no-opset", "models", compare(candidate=save_model(m, "no_opset.onnx")), 2,
         ["no_opset.onnx"])
    m = mlp()
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:100]
    case("model/short-initializer", "models",
         compare(candidate=save_model(m, "short_init.onnx")), 2, ["short_init.onnx"])
    m = mlp()
    w = m.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([1 << 20, 1 << 20])
    case("model/initializer-dims-lie", "models",
         compare(candidate=save_model(m, "init_dims_lie.onnx")), 2, ["init_dims_lie.onnx"])
    m = mlp()
    del m.graph.initializer[1]
    case("model/missing-initializer", "models",
         compare(candidate=save_model(m, "missing_init.onnx")), 2, ["missing_init.onnx"])
    shape = numpy_helper.from_array(np.array([1 << 40], dtype=np.int64), "big_shape")
    m = mlp_graph([helper.make_node("ConstantOfShape", ["big_shape"], ["zeros"], name="cos"),
                   helper.make_node("ReduceSum", ["zeros"], ["s"], name="sum", keepdims=1),
                   helper.make_node("Add", ["fc2", "s"], ["out"], name="add")],
                  output="out", extra_inits=[shape])
    case("model/constant-of-shape-2^40", "models",
         compare(candidate=save_model(m, "const_of_shape_2e40.onnx")), 2,
         ["const_of_shape_2e40.onnx"])
    m = mlp_graph(input_shape=(1 << 40, 64))
    p = save_model(m, "fixed_batch_2e40.onnx")
    case("model/fixed-batch-2^40", "models", compare(candidate=p), 2,
         ["fixed_batch_2e40.onnx", "--max-memory"])
    case("model/fixed-batch-2^40-bench", "models", bench(candidate=p), 2,
         ["candidate", "1099511627776"])
    m = mlp_graph(input_shape=(540, 1 << 40))
    case("model/feature-dim-2^40", "models",
         compare(candidate=save_model(m, "feature_2e40.onnx")), 2, ["candidate", "'x'"])
    m = mlp_graph(input_shape=("N", 64, 1))
    case("model/input-rank-3", "models", compare(candidate=save_model(m, "rank3.onnx")), 2,
         ["candidate", "'x'"])
    m = mlp_graph(input_shape=("N", 63))
    case("model/input-width-63", "models", compare(candidate=save_model(m, "width63.onnx")),
         2, ["candidate", "'x'"])
    m = mlp_graph([helper.make_node("Cast", ["x64"], ["x"], to=TensorProto.FLOAT, name="c")])
    m.graph.input[0].name = "x64"
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    case("model/int64-input", "models", compare(candidate=save_model(m, "int64_input.onnx")),
         2, ["candidate", "'x64'"])
    m = mlp_graph([helper.make_node("Cast", ["x64"], ["x"], to=TensorProto.FLOAT, name="c")])
    m.graph.input[0].name = "x64"
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.STRING
    case("model/string-input", "models",
         compare(candidate=save_model(m, "string_input.onnx")), 2, ["string_input.onnx"])
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "s0")
    ends = numpy_helper.from_array(np.array([1], dtype=np.int64), "e1")
    m = mlp_graph([helper.make_node("Slice", ["fc2", "s0", "e1"], ["out"], name="first")],
                  output="out", extra_inits=[starts, ends])
    case("model/one-row-only", "models", compare(candidate=save_model(m, "one_row.onnx")), 2,
         ["one_row.onnx", "one row per sample"])
    m = mlp_graph([helper.make_node("Concat", ["fc2", "fc2"], ["out"], name="twice", axis=0)],
                  output="out")
    case("model/double-rows", "models", compare(candidate=save_model(m, "double_rows.onnx")),
         2, ["double_rows.onnx", "one row per sample"])
    case("model/double-rows-bench", "models",
         bench(candidate="{C}/models/double_rows.onnx"), 2, ["double_rows.onnx"])
    ends_all = numpy_helper.from_array(np.array([-1], dtype=np.int64), "eall")
    m = mlp_graph([helper.make_node("Slice", ["fc2", "s0", "eall"], ["out"], name="drop")],
                  output="out", extra_inits=[starts, ends_all])
    case("model/one-row-short", "models", compare(candidate=save_model(m, "row_short.onnx")),
         2, ["row_short.onnx"])
    m = mlp_graph([helper.make_node("Transpose", ["fc2"], ["out"], name="t", perm=[1, 0])],
                  output="out")
    case("model/transposed-output", "models",
         compare(candidate=save_model(m, "transposed.onnx")), 2, ["transposed.onnx"])
    m = mlp_graph([helper.make_node("ReduceSum", ["fc2"], ["out"], name="r", keepdims=0)],
                  output="out")
    case("model/scalar-output", "models", compare(candidate=save_model(m, "scalar_out.onnx")),
         2, ["scalar_out.onnx"])
    zero = numpy_helper.from_array(np.zeros((10,), dtype=np.float32), "zero")
    m = mlp_graph([helper.make_node("Div", ["fc2", "zero"], ["out"], name="d")],
                  output="out", extra_inits=[zero])
    case("model/inf-output", "models", compare(candidate=save_model(m, "inf_out.onnx")), 1,
         ["finite_outputs"])
    case("model/nan-output", "models", compare(candidate="{F}/mlp_nan.onnx"), 1,
         ["finite_outputs"])
    case("model/nan-output-bench", "models", bench(candidate="{F}/mlp_nan.onnx"), 1,
         ["finite_timed_outputs"])
    case("model/nan-output-check", "models",
         ["check", "--baseline", "{F}/mlp_fp32.onnx", "--candidate", "{F}/mlp_nan.onnx",
          "--data", "{F}/test.npz", "--out", "{OUT}", *QUICK_COMPARE, "--no-sweeps",
          "--duration", "0.2", "--rounds", "2", "--warmup-time", "0.05", "--no-nvml"], 1,
         ["finite_outputs"])
    m = mlp_graph(outputs=[])
    case("model/no-outputs", "models", compare(candidate=save_model(m, "no_outputs.onnx")), 2,
         ["no_outputs.onnx"])
    m = mlp_graph([helper.make_node("Reshape", ["fc2", "badshape"], ["out"], name="rs")],
                  output="out",
                  extra_inits=[numpy_helper.from_array(np.array([7, -1, 3], np.int64),
                                                       "badshape")])
    case("model/bad-reshape", "models", compare(candidate=save_model(m, "bad_reshape.onnx")),
         2, ["bad_reshape.onnx"])
    m = mlp()
    w2 = next(i for i in m.graph.initializer if i.name == "W2")
    w2.CopyFrom(numpy_helper.from_array(np.zeros((63, 10), np.float32), "W2"))
    case("model/matmul-mismatch", "models",
         compare(candidate=save_model(m, "matmul_mismatch.onnx")), 2, ["matmul_mismatch.onnx"])
    # External data: traversal, missing file, offset past the end.
    for name, location, extra in [("ext_traversal", "../../../../etc/passwd", {}),
                                  ("ext_missing", "no_such.data", {}),
                                  ("ext_offset", "ext_offset.data", {"offset": "1000000"})]:
        m = mlp()
        w = m.graph.initializer[0]
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        entries = {"location": location, **extra}
        for k, v in entries.items():
            e = w.external_data.add()
            e.key, e.value = k, v
        if name == "ext_offset":
            raw_file("models/ext_offset.data", b"\0" * 64)
        case(f"model/{name}", "models", compare(candidate=save_model(m, f"{name}.onnx")), 2,
             [f"{name}.onnx"])
    # Every hostile model as the baseline and in inspect too.
    for name in ["two_producers", "cycle", "unknown_op", "one_row", "const_of_shape_2e40",
                 "fixed_batch_2e40", "bad_reshape", "output_not_produced", "opset99",
                 "unknown_domain"]:
        case(f"model/inspect-{name}", "inspect", ["inspect", f"{{C}}/models/{name}.onnx"], 0,
             ["runs in tract: no"])
        case(f"model/baseline-{name}", "models",
             compare(baseline=f"{{C}}/models/{name}.onnx", candidate="{F}/mlp_fp32.onnx"), 2,
             ["baseline", f"{name}.onnx"])
    for name in ["trunc_0", "random_4096", "text", "no_graph"]:
        case(f"model/inspect-unreadable-{name}", "inspect",
             ["inspect", f"{{C}}/models/{name}.onnx"], 2, [f"{name}.onnx"])
    case("model/inspect-good", "inspect", ["inspect", "{F}/mlp_fp32.onnx"], 0,
         ["runs in tract: yes"])
    case("model/inspect-dir", "inspect", ["inspect", "{C}/models"], 2, ["models"])
    case("model/inspect-fifo", "inspect", ["inspect", "{FIFO}"], 2, ["fifo"])
    case("model/inspect-url", "inspect", ["inspect", "http://127.0.0.1:1/v2/models/m"], 2,
         ["inspect reads model files"])
    case("model/sensitivity-truncated", "models",
         sensitivity(model=f"{{C}}/models/trunc_{int(len(good) * 0.5)}.onnx"), 2, ["trunc_"])
    case("model/sensitivity-no-layer", "models",
         sensitivity(model="{C}/models/no_outputs.onnx"), 2, ["no_outputs.onnx"])


# ---------------------------------------------------------------- data files
def member(name, compress=zipfile.ZIP_STORED):
    """A zip member with a fixed date, so the corpus is the same byte for byte each run."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compress
    return info


def npz_bytes(arrays, compress=True):
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return buf.getvalue()


def data_files():
    d = np.load(FIX / "test.npz")
    # 60 samples keep the files small; every class is among them.
    x, y, ids = d["x"][:60], d["label"][:60], d["id"][:60]

    def npz_case(cid, arrays, exit_code, needles, extra=(), candidate="{F}/mlp_int8_qdq.onnx",
                 named=True):
        """`named`: the error names the file; otherwise it names the array or tensor."""
        name = cid.replace("/", "_") + ".npz"
        p = raw_file(f"data/{name}", npz_bytes(arrays))
        case(f"data/{cid}", "data", compare(candidate=candidate, data=p, extra=extra),
             exit_code, [name, *needles] if exit_code == 2 and named else needles)

    good = npz_bytes({"x": x, "label": y}, compress=False)
    for frac in [0.0, 0.01, 0.1, 0.5, 0.9, 0.99]:
        n = int(len(good) * frac)
        p = raw_file(f"data/trunc_{n}.npz", good[:n])
        case(f"data/npz-truncated-{n}", "data", compare(data=p), 2, [f"trunc_{n}.npz"])
    p = raw_file("data/not_zip.npz", "x,label\n1,2\n")
    case("data/npz-not-zip", "data", compare(data=p), 2, ["not_zip.npz"])
    p = raw_file("data/empty_zip.npz", npz_bytes({}))
    case("data/npz-empty", "data", compare(data=p), 2, ["empty_zip.npz"])
    npz_case("no-label", {"x": x}, 2, ["label"])
    npz_case("no-features", {"label": y}, 2, [])
    npz_case("width-63", {"x": x[:, :63], "label": y}, 2, ["'x'", "63"], named=False)
    npz_case("rank-3", {"x": x[:, :, None], "label": y}, 2, ["'x'"], named=False)
    npz_case("x-as-text", {"x": x.astype(str), "label": y}, 2, ["'x'", "string"], named=False)
    y15 = y.astype(np.float64)
    y15[7] = 1.5
    npz_case("label-1.5", {"x": x, "label": y15}, 2, ["1.5"])
    ynan = y.astype(np.float64)
    ynan[3] = np.nan
    npz_case("label-nan", {"x": x, "label": ynan}, 2, ["label"])
    yneg = y.copy()
    yneg[0] = -1
    npz_case("label-negative", {"x": x, "label": yneg}, 2, ["-1"])
    ybig = y.astype(np.int64)
    ybig[0] = 10 ** 12
    npz_case("label-10^12", {"x": x, "label": ybig}, 2, ["label"])
    ymix = y.astype(str)
    npz_case("label-digits-as-text", {"x": x, "label": ymix}, 2, ["label"])
    npz_case("label-short", {"x": x, "label": y[:-1]}, 2, ["label"])
    npz_case("label-2d", {"x": x, "label": np.stack([y, y], 1)}, 2, ["label"])
    npz_case("zero-samples", {"x": x[:0], "label": y[:0]}, 2, [])
    xnan = x.copy()
    xnan[5, 3] = np.nan
    npz_case("x-nan", {"x": xnan, "label": y}, 1, ["finite_outputs"])
    xinf = x.copy()
    xinf[5, 3] = np.inf
    npz_case("x-inf", {"x": xinf, "label": y}, 1, ["finite_outputs"])
    npz_case("ids-duplicate", {"x": x, "label": y, "id": np.zeros_like(ids)}, 2, ["id"])
    npz_case("ids-short", {"x": x, "label": y, "id": ids[:10]}, 2, ["id"])
    npz_case("x-float64", {"x": x.astype(np.float64), "label": y}, 0, [])
    npz_case("x-float16", {"x": x.astype(np.float16), "label": y}, 0, [])
    # Integers feed a float input as their values (x·16 is not the model's scaling: FAIL).
    npz_case("x-int8", {"x": (x * 16).astype(np.int8), "label": y}, 1, [])
    npz_case("label-bool", {"x": x, "label": y > 4}, 0, [])
    npz_case("x-big-endian", {"x": x.astype(">f4"), "label": y}, 0, [])
    npz_case("x-fortran", {"x": np.asfortranarray(x), "label": y}, 0, [])
    npz_case("x-object", {"x": np.array([object()] * 60, dtype=object), "label": y}, 2, [])
    npz_case("x-complex", {"x": x.astype(np.complex64), "label": y}, 2, [])
    # Member-level damage.
    raw = npz_bytes({"x": x, "label": y}, compress=False)
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for cid, mutate in [
        ("npy-bad-magic", lambda b: b"\x00" + b[1:]),
        ("npy-header-garbage", lambda b: b.replace(b"'fortran_order': False", b"'fortran_order': Maybe")),
        ("npy-header-not-dict", lambda b: b.replace(b"{'descr'", b"['descr'")),
        ("npy-shape-longer", lambda b: b.replace(b"(60, 64)", b"(999, 64)")),
        ("npy-shape-huge", lambda b: b.replace(b"(60, 64)", b"(1099511627776, 64)")),
        ("npy-data-short", lambda b: b[:-100]),
        ("npy-descr-unknown", lambda b: b.replace(b"<f4", b"<q9")),
        ("npy-header-len-lie", lambda b: b[:8] + struct.pack("<H", 60000) + b[10:]),
    ]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(member("x.npy"), mutate(members["x.npy"]))
            z.writestr(member("label.npy"), members["label.npy"])
        name = f"{cid}.npz"
        p = raw_file(f"data/{name}", buf.getvalue())
        case(f"data/{cid}", "data", compare(data=p), 2, [name])
    # A deflate bomb: 100 MiB of zeros in ~100 KiB, under a 50 MiB limit. Deflated members
    # are streamed (decompressed once at load into nothing): memory stays flat, and its
    # 409 600 rows are refused against the 60 labels.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        hdr = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118)
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (409600, 64), }"
        header = header.ljust(117) + "\n"
        z.writestr(member("x.npy", zipfile.ZIP_DEFLATED),
                   hdr + header.encode() + b"\0" * (409600 * 64 * 4))
        z.writestr(member("label.npy", zipfile.ZIP_DEFLATED), members["label.npy"])
    p = raw_file("data/deflate_bomb.npz", buf.getvalue())
    case("data/deflate-bomb", "data", compare(data=p, extra=["--max-memory", "50MiB"]), 2,
         ["deflate_bomb.npz", "'x'", "[409600, 64]", "60 samples"])
    # A zip whose directory claims members of 2 GiB: nothing is allocated by that size, and
    # a member that decompresses to less is a damaged archive (as numpy.load finds too).
    lie = bytearray(npz_bytes({"x": x, "label": y}))
    i = lie.find(b"PK\x01\x02")
    while i >= 0:
        lie[i + 24:i + 28] = b"\xff\xff\xff\x7f"  # uncompressed size in the central directory
        i = lie.find(b"PK\x01\x02", i + 4)
    p = raw_file("data/size_lie.npz", bytes(lie))
    case("data/zip-size-lie", "data", compare(data=p, extra=["--max-memory", "1GiB"]), 2,
         ["size_lie.npz", "directory says 2147483647", "damaged"])
    # .npy alone (no labels), wrong extensions, missing paths.
    buf = io.BytesIO()
    np.save(buf, x)
    p = raw_file("data/x_only.npy", buf.getvalue())
    case("data/npy-no-labels", "data", compare(data=p), 2, ["x_only.npy"])
    p = raw_file("data/data.txt", "1 2 3\n")
    case("data/unknown-extension", "data", compare(data=p), 2, ["data.txt"])
    case("data/missing", "data", compare(data="{C}/data/no_such.npz"), 2, ["no_such.npz"])
    case("data/fifo", "data", compare(data="{FIFO}"), 2, ["fifo"])
    # CSV.
    header = ",".join([f"f{i}" for i in range(64)] + ["label"])
    rows = [",".join([f"{v:g}" for v in x[i]] + [str(y[i])]) for i in range(len(y))]
    good_csv = header + "\n" + "\n".join(rows) + "\n"

    def csv_case(cid, text, exit_code, needles, extra=(), named=True):
        name = cid + ".csv"
        p = raw_file(f"data/{name}", text)
        case(f"data/csv-{cid}", "data", compare(data=p, extra=extra), exit_code,
             [name, *needles] if exit_code == 2 and named else needles)

    csv_case("empty", "", 2, [])
    csv_case("header-only", header + "\n", 2, [])
    csv_case("ragged", good_csv.replace(rows[10] + "\n", rows[10] + ",7\n"), 2, ["line"])
    csv_case("short-row", good_csv.replace(rows[10] + "\n", ",".join(rows[10].split(",")[:30]) + "\n"), 2, ["line"])
    csv_case("text-feature", good_csv.replace(rows[4] + "\n", "abc," + rows[4].split(",", 1)[1] + "\n"), 2, ["abc"])
    csv_case("label-1.5", good_csv.replace(rows[7] + "\n", rows[7].rsplit(",", 1)[0] + ",1.5\n"), 2, ["1.5"])
    csv_case("no-label-column", header.replace(",label", ",target_x") + "\n" + "\n".join(rows) + "\n", 2, ["label"])
    csv_case("bom", "\ufeff" + good_csv, 0, [])
    csv_case("semicolons", good_csv.replace(",", ";"), 2, [])
    csv_case("nan-feature", good_csv.replace(rows[4] + "\n", "nan," + rows[4].split(",", 1)[1] + "\n"), 1, ["finite_outputs"])
    csv_case("crlf", good_csv.replace("\n", "\r\n"), 0, [])
    csv_case("binary", "\0\1\2\3" * 100, 2, [])
    csv_case("duplicate-header", header.replace("f1,", "f0,") + "\n" + "\n".join(rows) + "\n", 2, ["f0"])
    csv_case("one-column", "label\n1\n2\n", 2, ["'features'"], named=False)


# ---------------------------------------------------------------- image folders
def image_folders():
    src = FIX / "images"

    def folder(name, classes):
        root = C / "images" / name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        # git keeps no empty folder: a `.gitkeep` (not an image) stands in for "empty".
        if not classes:
            (root / ".gitkeep").write_bytes(b"")
        for cls, files in classes.items():
            (root / cls).mkdir()
            if not files:
                (root / cls / ".gitkeep").write_bytes(b"")
            for fname, data in files.items():
                (root / cls / fname).write_bytes(data)
        return f"{{C}}/images/{name}"

    png = {c: {f.name: f.read_bytes() for f in sorted((src / c).iterdir())[:3]}
           for c in sorted(p.name for p in src.iterdir())}
    cnn = dict(candidate="{F}/cnn_int8_qdq.onnx", baseline="{F}/cnn_fp32.onnx")
    img_args = ["--image-color", "gray", "--image-scale", str(1 / 240)]

    def img_case(cid, path, exit_code, needles, extra=img_args):
        case(f"images/{cid}", "images",
             compare(data=path, extra=merged(img_args, extra[len(img_args):])
                     if extra[:len(img_args)] == img_args else extra, **cnn),
             exit_code, needles)

    img_case("good-subset", folder("good", png), 0, [])
    img_case("empty-root", folder("empty_root", {}), 2, ["empty_root"])
    with_empty = dict(png)
    with_empty["00"] = {}
    img_case("empty-class", folder("empty_class", with_empty), 2, ["00", "--allow-empty-classes"])
    bad = {k: dict(v) for k, v in png.items()}
    bad["3"]["fake.png"] = b"not a png at all"
    img_case("not-an-image", folder("fake_png", bad), 2, ["fake.png"])
    bad = {k: dict(v) for k, v in png.items()}
    first = next(iter(bad["4"].values()))
    bad["4"]["truncated.png"] = first[: len(first) // 2]
    img_case("truncated-png", folder("truncated_png", bad), 2, ["truncated.png"])
    from PIL import Image
    mixed = {k: dict(v) for k, v in png.items()}
    b = io.BytesIO()
    Image.new("L", (9, 8)).save(b, format="PNG")
    mixed["5"]["wide.png"] = b.getvalue()
    img_case("mixed-sizes", folder("mixed_sizes", mixed), 2, ["wide.png", "--image-size"])
    bomb = {k: dict(v) for k, v in png.items()}
    b = io.BytesIO()
    Image.new("1", (30000, 30000)).save(b, format="PNG", optimize=True)
    bomb["6"]["bomb.png"] = b.getvalue()
    img_case("png-bomb", folder("png_bomb", bomb), 2, ["bomb.png"])
    good = "{C}/images/good"
    img_case("image-size-huge", good, 2, ["--image-size", "--max-memory"],
             [*img_args, "--image-size", "100000x100000"])
    img_case("image-size-zero", good, 2, ["--image-size"], [*img_args, "--image-size", "0x0"])
    img_case("image-size-text", good, 2, ["--image-size"], [*img_args, "--image-size", "big"])
    img_case("image-size-negative", good, 2, ["--image-size"],
             [*img_args, "--image-size", "-8x8"])
    img_case("mean-two-values", good, 2, ["mean", "expected 1 or 3"],
             ["--image-scale", str(1 / 240), "--image-mean", "0.1,0.2"])
    img_case("std-zero", good, 2, ["std"], [*img_args, "--image-std", "0"])
    img_case("mean-text", good, 2, ["--image-mean"], [*img_args, "--image-mean", "a"])
    img_case("layout-bogus", good, 2, ["--image-layout"], [*img_args, "--image-layout", "chwn"])
    img_case("color-bogus", good, 2, ["--image-color"], [*img_args, "--image-color", "cmyk"])
    img_case("rgb-for-gray-model", good, 2, ["expects shape"], ["--image-scale", str(1 / 240)])
    img_case("scale-nan", good, 2, ["--image-scale"], [*img_args, "--image-scale", "nan"])
    img_case("resized-wrong", good, 2, ["expects shape"], [*img_args, "--image-size", "16x16"])
    case("images/bench-huge-size", "images",
         bench(candidate="{F}/cnn_int8_qdq.onnx", baseline="{F}/cnn_fp32.onnx",
               extra=["--data", good, "--image-size", "100000x100000"]), 2,
         ["--image-size"])


# ---------------------------------------------------------------- policies
def policies():
    def pol(cid, text, exit_code, needles):
        name = cid + ".toml"
        p = raw_file(f"policies/{name}", text)
        case(f"policy/{cid}", "policies", [*compare(), "--policy", p], exit_code,
             [name, *needles] if exit_code == 2 else needles)

    pol("malformed", "max_accuracy_drop_pp = = 1\n", 2, ["line 1"])
    pol("unknown-key", "max_acuracy_drop_pp = 1\n", 2, ["max_acuracy_drop_pp"])
    pol("wrong-type", 'max_accuracy_drop_pp = "one"\n', 2, ["max_accuracy_drop_pp"])
    pol("negative", "max_accuracy_drop_pp = -1\n", 2, ["max_accuracy_drop_pp"])
    pol("nan", "max_accuracy_drop_pp = nan\n", 2, ["max_accuracy_drop_pp"])
    pol("inf", "max_accuracy_drop_pp = inf\n", 2, ["max_accuracy_drop_pp"])
    pol("over-100", "max_accuracy_drop_pp = 101\n", 2, ["max_accuracy_drop_pp"])
    pol("relative-20", "min_relative_accuracy = 20\n", 2, ["min_relative_accuracy"])
    pol("agreement-negative", "min_top1_agreement = -0.5\n", 2, ["min_top1_agreement"])
    pol("flip-rate-2", "max_negative_flip_rate = 2\n", 2, ["max_negative_flip_rate"])
    pol("kl-negative", "max_kl_mean = -1\n", 2, ["max_kl_mean"])
    pol("array", "max_accuracy_drop_pp = [1, 2]\n", 2, ["max_accuracy_drop_pp"])
    pol("table", "[max_accuracy_drop_pp]\nvalue = 1\n", 2, ["max_accuracy_drop_pp"])
    pol("duplicate", "max_accuracy_drop_pp = 1\nmax_accuracy_drop_pp = 2\n", 2, ["duplicate"])
    pol("empty", "", 0, [])
    pol("binary", "\0\1\2\xff", 2, [])
    pol("speedup-negative", "min_speedup = -1\n", 2, ["min_speedup"])
    pol("p99-negative", "max_p99_ms = -5\n", 2, ["max_p99_ms"])
    pol("rss-nan", "max_peak_rss_mb = nan\n", 2, ["max_peak_rss_mb"])
    pol("joules-negative", "max_joules_per_inference = -1\n", 2, ["max_joules_per_inference"])
    pol("huge-number", "max_accuracy_drop_pp = 1e400\n", 2, ["max_accuracy_drop_pp"])
    pol("strict-fails", "max_accuracy_drop_pp = 0\nmin_top1_agreement = 1.0\n", 1, [])
    case("policy/missing", "policies", [*compare(), "--policy", "{C}/policies/no_such.toml"],
         2, ["no_such.toml"])
    case("policy/directory", "policies", [*compare(), "--policy", "{C}/policies"], 2,
         ["policies"])
    case("policy/fifo", "policies", [*compare(), "--policy", "{FIFO}"], 2, ["fifo"])
    case("policy/bench-unknown", "policies",
         [*bench(), "--policy", "{C}/policies/unknown-key.toml"], 2, ["max_acuracy_drop_pp"])


# ---------------------------------------------------------------- slices and candidates
def slices():
    """Slice manifests, `slice_<tag>` arrays, slice policies and several candidates."""
    d = np.load(FIX / "test.npz")
    ids = [str(i) for i in d["id"]]

    def man(cid, name, data, exit_code, needles):
        p = raw_file(f"slices/{name}", data)
        case(f"slices/{cid}", "slices", [*compare(), "--slices", p], exit_code,
             [name, *needles] if exit_code == 2 else needles)

    man("no-id-column", "noid.csv", "name,ink\nd0000,light\n", 2, ["no `id` column"])
    man("duplicate-id", "dup.csv", f"id,ink\n{ids[0]},light\n{ids[0]},heavy\n", 2,
        ["line 3", "listed twice"])
    man("empty-id", "emptyid.csv", "id,ink\n,light\n", 2, ["line 2", "`id` is empty"])
    man("no-tag-column", "notag.csv", "id\nd0000\n", 2, ["no tag column"])
    man("tag-with-equals", "eq.csv", "id,a=b\nd0000,x\n", 2, ["a=b"])
    man("ragged-row", "ragged.csv", "id,ink\nd0000,light,extra\n", 2, ["line 2"])
    man("binary", "bin.csv", b"\x00\x01\xff\xfe" * 64, 2, [])
    man("not-utf8", "latin.csv", "id,ink\nd0000,caf\xe9\n".encode("latin-1"), 2, [])
    man("json-not-object", "arr.jsonl", "[1, 2]\n", 2, ["line 1", "expected an object"])
    man("json-truncated", "trunc.jsonl", '{"id": "d0000", "ink": "li', 2, ["line 1", "not JSON"])
    man("json-nested", "nested.jsonl", '{"id": "d0000", "ink": {"a": 1}}\n', 2, ["tag 'ink'"])
    man("json-no-id", "noid.jsonl", '{"ink": "light"}\n', 2, ["no `id`"])
    man("unknown-extension", "m.xlsx", "id,ink\n", 2, [".xlsx"])
    man("all-ids-unknown", "unknown.csv", "id,ink\nnope1,light\nnope2,dark\n", 0, [])
    man("header-only", "header.csv", "id,ink\n", 0, [])
    man("id-like-tag", "idlike.csv", "id,file\n" + "".join(f"{k},{k}.png\n" for k in ids), 2,
        ["tag 'file'", "540 distinct values"])
    case("slices/missing-file", "slices", [*compare(), "--slices", "{C}/slices/none.csv"], 2,
         ["none.csv"])
    case("slices/directory", "slices", [*compare(), "--slices", "{C}/slices"], 2, ["slices"])
    case("slices/fifo", "slices", [*compare(), "--slices", "{FIFO}"], 2, ["fifo"])

    def arr(cid, arrays, exit_code, needles):
        name = cid + ".npz"
        p = raw_file(f"slices/{name}", npz_bytes(arrays))
        case(f"slices/{cid}", "slices", compare(data=p), exit_code,
             [name, *needles] if exit_code == 2 else needles)

    x, y, i = d["x"][:60], d["label"][:60], d["id"][:60]
    arr("array-2d", {"x": x, "label": y, "id": i, "slice_ink": np.zeros((60, 2))}, 2,
        ["slice_ink", "shape [60]"])
    arr("array-short", {"x": x, "label": y, "id": i, "slice_ink": np.zeros(10)}, 2,
        ["slice_ink", "shape [60]"])
    arr("array-no-tag", {"x": x, "label": y, "id": i, "slice_": np.zeros(60)}, 2, ["slice_"])
    arr("array-nan-tags", {"x": x, "label": y, "id": i,
                           "slice_level": np.where(np.arange(60) % 2, np.nan, 1.0)}, 0, [])
    arr("array-bool", {"x": x, "label": y, "id": i, "slice_flag": np.arange(60) % 2 == 0}, 0, [])
    arr("array-uint64-huge", {"x": x, "label": y, "id": i,
                              "slice_big": np.full(60, 2**64 - 1, dtype=np.uint64)}, 0, [])
    arr("array-id-like", {"x": x, "label": y, "id": i,
                          "slice_file": np.array([f"f{k}" for k in range(60)])}, 0, [])

    def spol(cid, text, needles, extra=()):
        name = cid + ".toml"
        p = raw_file(f"slices/{name}", text)
        case(f"slices/policy-{cid}", "slices", [*compare(extra=extra), "--policy", p], 2,
             [name, *needles])

    spol("not-table", "slices = 3\n", ["slices"])
    spol("no-equals", '[slices."dark"]\nmax_accuracy_drop_pp = 1\n', ["dark", "tag=value"])
    spol("unknown-key", '[slices."ink=light"]\nmax_dorp = 1\n', ["max_dorp", "per slice"])
    spol("perf-key-range", '[slices."ink=light"]\nmin_speedup = -1\n', ["min_speedup"])
    spol("same-slice-twice", '[slices."ink=light"]\nmax_accuracy_drop_pp = 1\n'
         '[slices."ink = light"]\nmax_accuracy_drop_pp = 2\n', ["ink=light", "again"])
    spol("out-of-range", '[slices."ink=light"]\nmax_accuracy_drop_pp = 500\n',
         ["max_accuracy_drop_pp", "out of range"])
    spol("string-value", '[slices."ink=light"]\nmax_accuracy_drop_pp = "2"\n',
         ["max_accuracy_drop_pp", "a number"])
    spol("gate-bad", 'slice_gate = "sometimes"\n', ["slice_gate", "significant"])
    spol("alpha-zero", "slice_alpha = 0\n", ["slice_alpha"])
    spol("min-samples-zero", "min_slice_samples = 0\n", ["min_slice_samples"])
    spol("unknown-slice", '[slices."ink=drak"]\nmax_accuracy_drop_pp = 1\n', ["ink=drak"])
    # Several candidates.
    two = ["--candidate", "{F}/mlp_int8_dynamic.onnx"]
    case("slices/require-bad", "slices", compare(extra=[*two, "--require", "most"]), 2,
         ["--require", "all"])
    case("slices/require-one", "slices", compare(extra=["--require", "any"]), 2,
         ["--require", "more than once"])
    case("slices/second-candidate-missing", "slices",
         compare(extra=["--candidate", "{C}/models/none.onnx"]), 2, ["none.onnx"])
    case("slices/second-candidate-bad-spec", "slices",
         compare(extra=["--candidate", "ftp://x"]), 2, ["candidate 2", "ftp://x"])
    case("slices/bench-two", "slices", bench(extra=two), 2, ["qgate check"])
    # Corruptions: what cannot be read as images, and bad flags.
    cnn = {"baseline": "{F}/cnn_fp32.onnx", "candidate": "{F}/cnn_int8_qdq.onnx"}
    for cid, extra, needles in [
        ("no-range", ["--corruptions", "dark"], ["--input-range"]),
        ("unknown", ["--corruptions", "fog", "--input-range", "0,1"], ["fog"]),
        ("severity-6", ["--corruptions", "dark", "--severities", "6", "--input-range", "0,1"],
         ["--severities"]),
        ("range-bad", ["--corruptions", "dark", "--input-range", "0,2"], ["--input-range"]),
        ("layout-wrong", ["--corruptions", "dark", "--input-range", "0,1", "--input-layout",
                          "nhwc"], ["array 'image'", "nhwc"]),
        ("mean-wrong", ["--corruptions", "dark", "--input-range", "0,1", "--image-mean", "9"],
         ["outside [0, 1]"]),
        ("seed-alone", ["--corruption-seed", "3"], ["--corruption-seed", "--corruptions"]),
    ]:
        case(f"slices/corrupt-{cid}", "slices", compare(extra=extra, **cnn), 2, needles)
    case("slices/corrupt-flat-array", "slices",
         compare(extra=["--corruptions", "dark", "--input-range", "0,1"]), 2, ["array 'x'"])
    case("slices/two-pass", "slices", compare(extra=[*two, "--require", "any"]), 0, [])


# ---------------------------------------------------------------- run configs
def run_configs():
    def cfg(cid, text, exit_code, needles, extra=None, named=True):
        """`named`: the error is about the file's syntax, so it names the file; a value
        error names the key (the flag's name) instead."""
        name = cid + ".toml"
        p = raw_file(f"configs/{name}", text)
        case(f"config/{cid}", "configs",
             ["compare", "--config", p, "--out", "{OUT}",
              *(QUICK_COMPARE if extra is None else extra)], exit_code,
             [name, *needles] if exit_code == 2 and named else needles)

    F = "../../../../fixtures/digits"  # relative to the config file, as users write them
    good = f'baseline = "{F}/mlp_fp32.onnx"\ncandidate = "{F}/mlp_int8_qdq.onnx"\ndata = "{F}/test.npz"\n'
    cfg("good", good, 0, [])
    cfg("malformed", good + "batch-size = \n", 2, ["line 4"])
    cfg("unknown-key", good + "batch_size = 4\n", 2, ["batch_size"])
    cfg("wrong-type", good + 'batch-size = "x"\n', 2, ["batch-size"])
    cfg("batch-zero", good + "batch-size = 0\n", 2, ["batch-size"], named=False)
    cfg("batch-negative", good + "batch-size = -1\n", 2, ["batch-size"])
    cfg("top-k-zero", good + "top-k = 0\n", 2, ["top-k"], named=False)
    cfg("side-table-no-spec", good.replace(f'baseline = "{F}/mlp_fp32.onnx"\n', "") +
        '[baseline]\ndevice = "cpu"\n', 2, ["[baseline]", "spec"])
    cfg("side-int", good.replace(f'"{F}/mlp_fp32.onnx"', "3"), 2, ["baseline"])
    cfg("side-table-typo", good.replace(f'baseline = "{F}/mlp_fp32.onnx"\n', "") +
        f'[baseline]\nspec = "{F}/mlp_fp32.onnx"\ndevise = "cpu"\n', 2, ["devise"])
    cfg("side-table-threads-text", good.replace(f'baseline = "{F}/mlp_fp32.onnx"\n', "") +
        f'[baseline]\nspec = "{F}/mlp_fp32.onnx"\nthreads = "many"\n', 2, ["threads"])
    cfg("out-empty", good + 'out = ""\n', 2, ["out"], named=False)
    cfg("data-missing", good.replace("test.npz", "nope.npz"), 2, ["nope.npz"], named=False)
    cfg("relative-missing", good.replace(f"{F}/mlp_int8_qdq.onnx", "mlp_int8_qdq.onnx"), 2,
        ["mlp_int8_qdq.onnx"], named=False)
    cfg("inline-policy-bad", good + "[policy]\nmax_accuracy_drop_pp = -3\n", 2,
        ["max_accuracy_drop_pp"])
    cfg("inline-policy-unknown", good + "[policy]\nmax_drop = 1\n", 2, ["max_drop"])
    cfg("image-unknown", good + "[image]\nsise = [8, 8]\n", 2, ["sise"])
    cfg("image-size-text", good + '[image]\nsize = "8x8"\n', 2, ["size"])
    cfg("bootstrap-zero", good + "bootstrap-resamples = 0\n", 2, ["bootstrap-resamples"],
        extra=["--no-progress", "--no-runtime-check"], named=False)
    cfg("timeout-negative", good + "timeout = -1\n", 2, ["timeout"], named=False)
    cfg("max-memory-bogus", good + 'max-memory = "lots"\n', 2, ["max-memory"], named=False)
    cfg("deployment-bogus", good + 'deployment-runtime = "tpu"\n', 2, ["deployment-runtime"], named=False)
    cfg("duplicate-key", good + 'data = "x.npz"\n', 2, ["data"])
    cfg("binary", "\0\xff\xfe", 2, [])
    cfg("empty", "", 2, ["--baseline"], named=False)
    cfg("output-kind-bogus", good + 'output-kind = "scores"\n', 2, ["output-kind"],
        named=False)
    case("config/missing", "configs",
         ["compare", "--config", "{C}/configs/no_such.toml", "--out", "{OUT}"], 2,
         ["no_such.toml"])
    case("config/directory", "configs",
         ["compare", "--config", "{C}/configs", "--out", "{OUT}"], 2, ["configs"])


# ---------------------------------------------------------------- gateway configs
def gateway_configs():
    """`qgate serve --check-config`: loads both models and checks the log without serving
    or writing anything (the corpus folder stays as committed)."""
    import sqlite3

    F = "../../../../fixtures/digits"
    good = (f'model_name = "digits"\nmode = "shadow"\nbaseline = "{F}/mlp_fp32.onnx"\n'
            f'candidate = "{F}/mlp_int8_qdq.onnx"\n')

    def gw(cid, text, exit_code, needles):
        name = cid + ".toml"
        p = raw_file(f"gateway/{name}", text)
        case(f"serve/{cid}", "gateway configs", ["serve", "--check-config", "--config", p],
             exit_code, [name, *needles] if exit_code == 2 else needles)

    gw("good", good, 0, ["valid", "inputs    x"])
    gw("malformed", good + "mode = \n", 2, ["line 5"])
    gw("unknown-key", good + "modes = 3\n", 2, ["modes"])
    gw("mode-bogus", good.replace('"shadow"', '"blue"'), 2, ["blue"])
    gw("mode-int", good.replace('"shadow"', "3"), 2, ["mode"])
    gw("no-baseline", good.replace(f'baseline = "{F}/mlp_fp32.onnx"\n', ""), 2, ["baseline"])
    gw("baseline-missing", good.replace("mlp_fp32.onnx", "nope.onnx"), 2, ["nope.onnx"])
    gw("candidate-truncated", good.replace(f"{F}/mlp_int8_qdq.onnx", "../models/trunc_195.onnx"),
       2, ["trunc_195.onnx", "candidate"])
    gw("incompatible", good.replace("mlp_int8_qdq.onnx", "cnn_fp32.onnx"), 2, ["the candidate"])
    gw("preds", good.replace(f"{F}/mlp_int8_qdq.onnx", "preds:x.npz"), 2, ["candidate", "preds"])
    gw("spec-option", good.replace("mlp_int8_qdq.onnx", "mlp_int8_qdq.onnx?speed=max"), 2,
       ["speed=max"])
    gw("listen-bogus", 'listen = "here"\n' + good, 2, ["listen", "here"])
    gw("listen-public", 'listen = "0.0.0.0:8080"\n' + good, 2, ["allow_non_loopback"])
    gw("name-slash", good.replace('"digits"', '"a/b"'), 2, ["model_name"])
    gw("weight", good + "[ab]\ncandidate_weight = 1.5\n", 2, ["ab.candidate_weight"])
    gw("weight-text", good + '[ab]\ncandidate_weight = "half"\n', 2, ["candidate_weight"])
    gw("steps-down", good + "[canary]\nsteps = [50, 5]\n", 2, ["canary.steps"])
    gw("steps-over", good + "[canary]\nsteps = [5, 150]\n", 2, ["canary.steps"])
    gw("queue-zero", good + "[shadow]\nqueue = 0\n", 2, ["shadow.queue"])
    gw("queue-negative", good + "[shadow]\nqueue = -1\n", 2, ["queue"])
    gw("timeout-zero", good + "[shadow]\ntimeout_ms = 0\n", 2, ["shadow.timeout_ms"])
    gw("top-k-zero", good + "[log]\ntop_k = 0\n", 2, ["log.top_k"])
    gw("retain-negative", good + "[log]\nretain_days = -1\n", 2, ["log.retain_days"])
    gw("durability-bogus", good + '[log]\ndurability = "maybe"\n', 2, ["maybe"])
    gw("log-url", good + '[log]\nurl = "mysql://db"\n', 2, ["log.url", "postgres://"])
    gw("log-url-env-unset", good + '[log]\nurl_env = "QGATE_HOSTILE_UNSET_URL"\n', 2,
       ["log.url_env", "QGATE_HOSTILE_UNSET_URL"])
    gw("log-url-and-env", good + '[log]\nurl = "sqlite://x.db"\nurl_env = "X"\n', 2,
       ["log.url_env", "not both"])
    gw("log-pg-bad-port", good + '[log]\nurl = "postgres://qgate:pw@host:notaport/db"\n', 2,
       ["log.url", "qgate:***@"])
    gw("log-pg-durability", good + '[log]\nurl = "postgres://q@127.0.0.1:1/db"\ndurability = "fsync"\n',
       2, ["log.durability", "synchronous_commit"])
    gw("log-pg-size", good + '[log]\nurl = "postgres://q@127.0.0.1:1/db"\nretain_max_mb = 10\n',
       2, ["log.retain_max_mb"])
    gw("log-pg-refused", good + '[log]\nurl = "postgres://qgate:pw@127.0.0.1:1/qgate"\n', 2,
       ["cannot connect", "postgres://qgate:***@127.0.0.1:1/qgate"])
    gw("log-failure-bogus", good + '[log]\non_log_failure = "shrug"\n', 2, ["shrug"])
    gw("log-pool-zero", good + '[log]\npool = 0\n', 2, ["log.pool"])
    gw("log-poll-fast", good + '[log]\nstate_poll_ms = 1\n', 2, ["log.state_poll_ms"])
    two = ('[[models]]\nmodel_name = "a"\nmode = "shadow"\n'
           f'baseline = "{F}/mlp_fp32.onnx"\ncandidate = "{F}/mlp_int8_qdq.onnx"\n')
    gw("models-two", two + two.replace('"a"', '"b"'), 0, ["model     b", "inputs    x"])
    gw("models-same-name", two + two, 2, ["models", "two models are named 'a'"])
    gw("models-and-top-level", good + two, 2, ["models", "none at the top level"])
    gw("models-empty", "models = []\n", 2, ["lists no model"])
    gw("models-bad-weight", two + "[models.ab]\ncandidate_weight = 2\n", 2,
       ["models[0].ab.candidate_weight"])
    gw("models-unknown-key", two + "colour = 1\n", 2, ["colour"])
    gw("models-incompatible", two + two.replace('"a"', '"b"').replace("mlp_int8_qdq", "cnn_fp32"),
       2, ["model 'b'", "the candidate"])
    gw("grpc-listen-public", 'grpc_listen = "0.0.0.0:8081"\n' + good, 2,
       ["grpc_listen", "allow_non_loopback"])
    gw("grpc-spec-bad", good.replace(f"{F}/mlp_int8_qdq.onnx", "grpc://127.0.0.1:1"), 2,
       ["grpc://127.0.0.1:1", "HOST:PORT/NAME"])
    gw("tls-missing", good + '[tls]\ncert = "nope.pem"\nkey = "nope.key"\n', 2,
       ["tls.cert", "nope.pem"])
    gw("tls-not-pem", good + '[tls]\ncert = "good.toml"\nkey = "good.toml"\n', 2,
       ["tls.cert", "no PEM certificate"])
    gw("tls-no-key", good + '[tls]\ncert = "nope.pem"\n', 2, ["key"])
    gw("tls-unknown-key", good + '[tls]\ncert = "a"\nkey = "b"\nciphers = "all"\n', 2,
       ["ciphers"])
    gw("log-folder-missing", good + '[log]\nurl = "sqlite://no/such/dir/log.db"\n', 2,
       ["no/such/dir"])
    gw("token-unset", good + '[admin]\ntoken_env = "QGATE_HOSTILE_UNSET_TOKEN"\n', 2,
       ["QGATE_HOSTILE_UNSET_TOKEN"])
    gw("outcome-token-unset", 'outcome_token_env = "QGATE_HOSTILE_UNSET_TOKEN"\n' + good, 2,
       ["QGATE_HOSTILE_UNSET_TOKEN"])
    gw("workers-zero", "workers = 0\n" + good, 2, ["workers"])
    # The automatic canary's keys.
    raw_file("gateway/canary-bad-policy.toml.policy", "max_error_rate_increase = 2\n")
    raw_file("gateway/canary-unknown-policy.toml.policy", "[outcomes.buy]\nmax_dorp = 1\n")
    gw("canary-auto-key-without-auto", good + "[canary]\nmax_holds = 3\n", 2,
       ["canary.max_holds", "auto = true"])
    gw("canary-min-requests-zero", good + "[canary]\nauto = true\nmin_requests_per_step = 0\n", 2,
       ["canary.min_requests_per_step"])
    gw("canary-min-step-negative", good + "[canary]\nauto = true\nmin_step_seconds = -5\n", 2,
       ["canary.min_step_seconds"])
    gw("canary-notify-ftp", good + '[canary]\nauto = true\nnotify_url = "ftp://x/y"\n', 2,
       ["canary.notify_url", "ftp://x/y"])
    gw("canary-on-max-holds", good + '[canary]\nauto = true\non_max_holds = "pray"\n', 2,
       ["on_max_holds", "pray"])
    gw("canary-policy-missing", good + '[canary]\nauto = true\npolicy = "no-such.toml"\n', 2,
       ["canary.policy", "no-such.toml"])
    gw("canary-policy-range", good + '[canary]\nauto = true\npolicy = "canary-bad-policy.toml.policy"\n',
       2, ["canary.policy", "max_error_rate_increase"])
    gw("canary-policy-unknown", good + '[canary]\nauto = true\npolicy = "canary-unknown-policy.toml.policy"\n',
       2, ["canary.policy", "max_dorp"])
    gw("canary-auto-good", good.replace('"shadow"', '"canary"') + "[canary]\nauto = true\n", 0,
       ["valid"])
    gw("binary", "\0\xff\xfe", 2, [])
    gw("empty", "", 2, ["model_name"])
    # Existing log files that are not this qgate's.
    raw_file("gateway/not_sqlite.db", b"this is not a database" * 10)
    gw("log-not-sqlite", good + '[log]\nurl = "sqlite://not_sqlite.db"\n', 2, ["not_sqlite.db"])
    for name, sql in [("other_app.db", "CREATE TABLE users (id INTEGER)"),
                      ("future_log.db", "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                                        "INSERT INTO meta VALUES ('schema_version', '99')")]:
        path = C / "gateway" / name
        con = sqlite3.connect(path)
        con.executescript(sql)
        con.commit()
        con.close()
    gw("log-other-app", good + '[log]\nurl = "sqlite://other_app.db"\n', 2,
       ["other_app.db", "not a qgate log"])
    gw("log-future-schema", good + '[log]\nurl = "sqlite://future_log.db"\n', 2,
       ["future_log.db", "schema version"])
    case("serve/missing", "gateway configs",
         ["serve", "--check-config", "--config", "{C}/gateway/no_such.toml"], 2, ["no_such.toml"])
    case("serve/directory", "gateway configs",
         ["serve", "--check-config", "--config", "{C}/gateway"], 2, ["gateway"])
    case("serve/fifo", "gateway configs",
         ["serve", "--check-config", "--config", "{FIFO}"], 2, ["regular file"])
    case("serve/listen-flag", "gateway configs",
         ["serve", "--check-config", "--listen", "[::]:0", "--config", "{C}/gateway/good.toml"],
         2, ["--listen", "allow_non_loopback"])


# ---------------------------------------------------------------- gateway logs (analyze)
LOG_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '2');
CREATE TABLE requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL UNIQUE,
   ts_ms INTEGER NOT NULL, model TEXT NOT NULL, mode TEXT NOT NULL, arm TEXT, weight REAL NOT NULL,
   canary_step INTEGER, status INTEGER NOT NULL, outputs TEXT, shadow_status TEXT,
   shadow_outputs TEXT, baseline_us INTEGER, candidate_us INTEGER, shadow_us INTEGER, inputs TEXT);
CREATE TABLE outcomes (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
   ts_ms INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL);
CREATE TABLE admin_actions (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL DEFAULT '',
   ts_ms INTEGER NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL, state TEXT NOT NULL DEFAULT '',
   model TEXT, replica TEXT);
"""


def analyze_logs():
    def log(name, rows=(), outcomes=()):
        path = C / "logs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path)
        con.executescript(LOG_SCHEMA)
        for r in rows:
            con.execute("INSERT INTO requests (request_id, ts_ms, model, mode, arm, weight, status,"
                        " outputs, shadow_status, shadow_outputs, baseline_us, shadow_us)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", r)
        for o in outcomes:
            con.execute("INSERT INTO outcomes (request_id, ts_ms, name, value) VALUES (?,?,?,?)", o)
        con.commit()
        con.close()
        return "{C}/logs/" + name

    def an(cid, args, exit_code, needles):
        case(f"analyze/{cid}", "gateway logs", ["analyze", "--no-progress", *args, "--out", "{OUT}"],
             exit_code, needles)

    out = '{"y": {"datatype": "FP32", "shape": [1, 3], "data": [%s]}}'
    good = out % "0.1, 2.0, -1.0"
    shadow = [(f"r{i}", 1000 + i, "m", "shadow", "baseline", 0.0, 200, good, "ok", good, 900, 950)
              for i in range(60)]
    ok = log("shadow.db", shadow)
    an("good-shadow", ["--log", ok], 3, ["INCONCLUSIVE"])
    an("not-sqlite", ["--log", "{C}/gateway/not_sqlite.db"], 2, ["not_sqlite.db", "not an SQLite"])
    an("other-app", ["--log", "{C}/gateway/other_app.db"], 2, ["other_app.db", "not a qgate"])
    an("future-schema", ["--log", "{C}/gateway/future_log.db"], 2, ["future_log.db", "newer"])
    raw_file("logs/empty_file.db", b"")
    an("empty-file", ["--log", "{C}/logs/empty_file.db"], 2, ["empty_file.db", "not a qgate"])
    data = (C / "logs" / "shadow.db").read_bytes()
    raw_file("logs/truncated.db", data[: len(data) // 2])
    an("truncated", ["--log", "{C}/logs/truncated.db"], 2, ["truncated.db", "damaged"])
    an("missing", ["--log", "{C}/logs/no_such.db"], 2, ["no_such.db", "no such log file"])
    an("directory", ["--log", "{C}/logs"], 2, ["a folder"])
    an("empty-log", ["--log", log("no_rows.db"), "--model", "m"], 1, ["INVALID", "no requests"])
    an("no-model-no-rows", ["--log", "{C}/logs/no_rows.db"], 1, ["INVALID"])
    bad = shadow[:5] + [("bad", 2000, "m", "shadow", "baseline", 0.0, 200, "{not json", "ok", good, 1, 1)]
    an("malformed-outputs", ["--log", log("bad_outputs.db", bad)], 2, ["'bad'", "not JSON"])
    nan = [(f"n{i}", 1000 + i, "m", "shadow", "baseline", 0.0, 200, good, "ok",
            out % '"NaN", "Infinity", 1.0', 900, 950) for i in range(40)]
    an("nan-outputs", ["--log", log("nan_outputs.db", nan)], 1, ["FAIL", "min_shadow_agreement"])
    two = shadow[:3] + [("o1", 5000, "other", "shadow", "baseline", 0.0, 200, good, "ok", good, 1, 1)]
    an("several-models", ["--log", log("two_models.db", two)], 2, ["several models", "--model"])
    an("unknown-model", ["--log", "{C}/logs/two_models.db", "--model", "nope"], 1, ["no requests"])
    an("pg-unreachable", ["--log", "postgres://qgate:s3cret@127.0.0.1:1/log"], 2,
       ["cannot connect", "qgate:***@", "refused"])
    an("pg-bad-url", ["--log", "postgres://[oops"], 2, ["not a PostgreSQL URL"])
    an("no-log", [], 2, ["missing --log"])
    an("bad-since", ["--log", ok, "--since", "last tuesday"], 2, ["--since", "RFC 3339"])
    an("bad-until", ["--log", ok, "--until", "2026-02-30T25:00:00Z"], 2, ["--until"])
    an("since-after-until", ["--log", ok, "--since", "-1h", "--until", "-2h"], 2, ["before --until"])
    an("window-zero", ["--log", ok, "--window", "0req"], 2, ["--window", "at least one request"])
    an("window-unit", ["--log", ok, "--window", "5 fortnights"], 2, ["--window", "unknown unit"])
    an("top-k-zero", ["--log", ok, "--top-k", "0"], 2, ["--top-k"])
    an("export-csv", ["--log", ok, "--export-inputs", "{OUT}/x.csv"], 2, ["FILE.npz"])
    an("export-nothing-stored", ["--log", ok, "--export-inputs", "{OUT}/x.npz"], 2,
       ["store_inputs"])
    an("kl-on-topk", ["--log", log("topk.db", [
        (f"t{i}", 1000 + i, "m", "shadow", "baseline", 0.0, 200,
         '{"y": {"datatype": "FP32", "shape": [1, 3], "top_k": [[1, 0]], "scores": [[2, 1]]}}', "ok",
         '{"y": {"datatype": "FP32", "shape": [1, 3], "top_k": [[1, 0]], "scores": [[2, 1]]}}', 1, 1)
        for i in range(10)]), "--policy", raw_file("logs/kl.toml", "max_shadow_kl_mean = 0.1\n")],
       2, ["max_shadow_kl_mean", 'outputs = \"full\"'])

    def pol(cid, text, needles):
        an(f"policy-{cid}", ["--log", ok, "--policy", raw_file(f"logs/{cid}.toml", text)], 2, needles)

    pol("outcomes-not-table", "outcomes = 3\n", ["outcomes"])
    pol("outcome-bad-kind", "[outcomes.buy]\nkind = \"ordinal\"\n", ["[outcomes.buy]", "binary"])
    pol("outcome-unknown-key", "[outcomes.buy]\nmax_dorp = 1\n", ["max_dorp"])
    pol("outcome-negative-drop", "[outcomes.buy]\nmax_drop = -1\n", ["max_drop"])
    pol("tau-zero", "msprt_tau = 0\n", ["msprt_tau"])
    pol("alpha-big", "alpha = 0.9\n", ["alpha"])
    pol("srm-alpha-zero", "srm_alpha = 0\n", ["srm_alpha"])
    pol("min-requests-zero", "min_requests = 0\n", ["min_requests"])
    pol("agreement-2", "min_shadow_agreement = 2\n", ["min_shadow_agreement"])


# ---------------------------------------------------------------- flags
def flags():
    def flag(cid, args, exit_code, needles, cmd=compare):
        case(f"flag/{cid}", "flags", cmd(extra=args), exit_code, needles)

    for v in ["0", "-1", "abc", "1e20", "99999999999999999999999"]:
        flag(f"batch-size={v}", ["--batch-size", v], 2, ["--batch-size"])
    for v in ["0", "-3", "x"]:
        flag(f"top-k={v}", ["--top-k", v], 2, ["--top-k"])
    flag("top-k=1000", ["--top-k", "1000"], 0, [])
    for v in ["0", "-1", "x"]:
        flag(f"limit={v}", ["--limit", v], 2, ["--limit"])
    flag("seed=-1", ["--seed", "-1"], 2, ["--seed"])
    flag("limit+seed", ["--limit", "100", "--seed", "7"], 0, [])
    for v in ["0", "-1", "1000000000", "100000000", "1e3", "x"]:
        flag(f"bootstrap-resamples={v}", ["--bootstrap-resamples", v], 2,
             ["--bootstrap-resamples"])
    flag("bootstrap-seed=x", ["--bootstrap-seed", "x"], 2, ["--bootstrap-seed"])
    for v in ["-1", "0", "nan", "inf", "1e300", "x"]:
        flag(f"timeout={v}", ["--timeout", v], 2, ["--timeout"])
    for v in ["0", "-2", "x"]:
        flag(f"threads={v}", ["--threads", v], 2, ["--threads"])
    flag("device=bogus", ["--device", "bogus"], 2, ["bogus"])
    flag("device=cuda-tract", ["--device", "cuda"], 2, ["cuda"])
    flag("output=nope", ["--output", "nope"], 2, ["--output nope"])
    flag("output-kind=bogus", ["--output-kind", "scores"], 2, ["--output-kind"])
    flag("output-kind=labels", ["--output-kind", "labels"], 2, ["labels"])
    flag("input=nope", ["--input", "nope=x"], 2, ["nope"])
    flag("input=no-equals", ["--input", "x"], 2, ["--input"])
    flag("input=missing-key", ["--input", "x=nokey"], 2, ["nokey"])
    flag("input-key=nope", ["--input-key", "nokey"], 2, ["nokey"])
    flag("label-key=nope", ["--label-key", "nolabel"], 2, ["nolabel"])
    flag("id-key=nope", ["--id-key", "noid"], 2, ["noid"])
    flag("deployment-runtime=bogus", ["--deployment-runtime", "tpu"], 2,
         ["--deployment-runtime"])
    flag("runtime-check-samples=0", ["--runtime-check-samples", "0"], 2,
         ["--runtime-check-samples"])
    for v in ["lots", "0", "-1", "1e30TiB", "12parsecs"]:
        flag(f"max-memory={v}", ["--max-memory", v], 2, ["--max-memory"])
    flag("max-memory=1KiB", ["--max-memory", "1KiB"], 2, ["--max-memory"])
    flag("max-memory=8GiB", ["--max-memory", "8GiB"], 0, [])
    flag("unknown-flag", ["--frobnicate"], 2, ["--frobnicate"])
    flag("save-outputs-is-file", ["--save-outputs", "{F}/test.npz"], 2, ["test.npz"])
    case("flag/out-is-file", "flags",
         ["compare", "--baseline", "{F}/mlp_fp32.onnx", "--candidate", "{F}/mlp_int8_qdq.onnx",
          "--data", "{F}/test.npz", "--out", "{F}/test.npz", *QUICK_COMPARE], 2, ["test.npz"])
    case("flag/missing-baseline", "flags",
         ["compare", "--candidate", "{F}/mlp_fp32.onnx", "--data", "{F}/test.npz", "--out",
          "{OUT}"], 2, ["--baseline"])
    case("flag/missing-data", "flags",
         ["compare", "--baseline", "{F}/mlp_fp32.onnx", "--candidate", "{F}/mlp_fp32.onnx",
          "--out", "{OUT}"], 2, ["--data"])
    case("flag/missing-out", "flags",
         ["compare", "--baseline", "{F}/mlp_fp32.onnx", "--candidate", "{F}/mlp_fp32.onnx",
          "--data", "{F}/test.npz"], 2, ["--out"])
    for spec in ["ort:", "preds:", "tract:", "http://", "x.onnx?foo=1", "x.onnx?threads=many"]:
        case(f"flag/spec-{spec}", "flags", compare(candidate=spec), 2, ["--candidate"])
    case("flag/unknown-command", "flags", ["frobnicate"], 2, ["frobnicate"])
    # bench
    for v in ["-1", "0", "1e300", "nan", "x"]:
        flag(f"bench-duration={v}", ["--duration", v], 2, ["--duration"], cmd=bench)
    for v in ["1", "0", "-2"]:
        flag(f"bench-rounds={v}", ["--rounds", v], 2, ["--rounds"], cmd=bench)
    for v in ["0", "1,0", "abc", "-4"]:
        flag(f"bench-batch-sizes={v}", ["--batch-sizes", v], 2, ["--batch-sizes"], cmd=bench)
    for v in ["0", "-1", "x"]:
        flag(f"bench-concurrency={v}", ["--concurrency", v], 2, ["--concurrency"], cmd=bench)
    for v in ["0.5,x", "-1", "0", "nan"]:
        flag(f"bench-load-fractions={v}", ["--load-fractions", v], 2, ["--load-fractions"],
             cmd=bench)
    for v in ["-1", "nan", "1e300"]:
        flag(f"bench-warmup-time={v}", ["--warmup-time", v], 2, ["--warmup-time"], cmd=bench)
    for v in ["nope=1x64", "x=0x64", "x=1x1000000000000", "x=axb", "x"]:
        flag(f"bench-shape={v}", ["--shape", v], 2, ["--shape"], cmd=bench)
    flag("bench-shape-with-data", ["--shape", "x=1x64", "--data", "{F}/test.npz"], 2,
         ["--shape"], cmd=bench)
    flag("bench-output-tolerance", ["--output-tolerance", "loose"], 2, ["--output-tolerance"],
         cmd=bench)
    flag("bench-timeout=-1", ["--timeout", "-1"], 2, ["--timeout"], cmd=bench)
    flag("bench-max-memory=1KiB", ["--max-memory", "1KiB"], 2, ["--max-memory"], cmd=bench)
    flag("bench-deployment-bogus", ["--deployment-runtime", "tpu"], 2,
         ["--deployment-runtime"], cmd=bench)
    flag("bench-reference-outputs-missing", ["--reference-outputs", "{C}/no_such.npz"], 2,
         ["no_such.npz"], cmd=bench)
    flag("bench-data-label-key", ["--data", "{F}/test.npz", "--input-key", "nokey"], 2,
         ["nokey"], cmd=bench)
    # sensitivity
    for args, needle in [(["--batch-size", "0"], "--batch-size"),
                         (["--calib-samples", "0"], "--calib-samples"),
                         (["--calib-samples", "540"], "--calib-samples"),
                         (["--calib-samples", "-5"], "--calib-samples"),
                         (["--calibration-method", "kl"], "--calibration-method"),
                         (["--calibration-method", "percentile:200"], "percentile"),
                         (["--float-type", "int4"], "--float-type"),
                         (["--bench-seconds", "-1"], "--bench-seconds"),
                         (["--bench-seconds", "nan"], "--bench-seconds"),
                         (["--latency-runtime", "trt"], "--latency-runtime"),
                         (["--quantized", "{F}/mlp_fp32.onnx"], "--quantized"),
                         (["--quantized", "{C}/models/trunc_0.onnx"], "trunc_0.onnx"),
                         (["--limit", "0"], "--limit"),
                         (["--max-memory", "bogus"], "--max-memory"),
                         (["--calibration", "{C}/data/no_such.npz"], "no_such.npz"),
                         (["--label-key", "nolabel"], "nolabel")]:
        flag("sensitivity" + "".join(args).replace("{F}/", "").replace("{C}/", ""), args, 2,
             [needle], cmd=sensitivity)
    case("flag/check-reference-outputs", "flags",
         ["check", "--baseline", "{F}/mlp_fp32.onnx", "--candidate", "{F}/mlp_fp32.onnx",
          "--data", "{F}/test.npz", "--out", "{OUT}", "--reference-outputs",
          "{F}/ref_outputs.npz"], 2, ["--reference-outputs"])


# ---------------------------------------------------------------- saved predictions
def predictions():
    ref = np.load(FIX / "ref_outputs.npz")
    key = "mlp_fp32__logits"
    logits = ref[key].astype(np.float32)
    ids = np.load(FIX / "test.npz")["id"]

    def preds(cid, arrays, exit_code, needles, named=True):
        name = cid + ".npz"
        p = raw_file(f"preds/{name}", npz_bytes(arrays))
        case(f"preds/{cid}", "predictions", compare(candidate=f"preds:{p}"), exit_code,
             [name, *needles] if exit_code == 2 and named else needles)

    preds("good", {"logits": logits}, 0, [])
    preds("rows-541", {"logits": np.vstack([logits, logits[:1]])}, 2, ["541"])
    preds("rows-539", {"logits": logits[:-1]}, 2, ["539"])
    preds("nan", {"logits": np.where(np.arange(10) == 3, np.nan, logits).astype(np.float32)},
          1, ["finite_outputs"])
    preds("text", {"logits": logits.astype(str)}, 2, [])
    preds("empty", {}, 2, [])
    preds("rank-3", {"logits": logits[:, :, None]}, 2, ["candidate", "'logits'"], named=False)
    preds("ids-unknown", {"logits": logits, "id": np.array([f"zz{i}" for i in range(540)])},
          2, ["no saved output for sample id"])
    preds("ids-duplicate", {"logits": logits, "id": np.array(["a"] * 540)}, 2,
          ["appears twice"])
    preds("ids-matching", {"logits": logits, "id": ids}, 0, [])
    preds("ids-shuffled", {"logits": logits[::-1], "id": ids[::-1]}, 0, [])
    preds("labels-int", {"labels": logits.argmax(1).astype(np.int64)}, 0, [])
    preds("labels-negative", {"labels": -np.ones(540, np.int64)}, 2,
          ["candidate", "'labels'", "-1"], named=False)
    preds("one-column", {"logits": logits[:, :1]}, 2, ["candidate", "'logits'"], named=False)
    buf = io.BytesIO()
    np.save(buf, logits)
    p = raw_file("preds/logits.npy", buf.getvalue())
    case("preds/npy", "predictions", compare(candidate=f"preds:{p}"), 0, [])
    p = raw_file("preds/garbage.npz", b"garbage")
    case("preds/garbage", "predictions", compare(candidate=f"preds:{p}"), 2, ["garbage.npz"])
    case("preds/missing", "predictions", compare(candidate="preds:{C}/preds/no_such.npz"), 2,
         ["no_such.npz"])
    case("preds/fifo", "predictions", compare(candidate="preds:{FIFO}"), 2, ["fifo"])


# ---------------------------------------------------------------- V2 servers
def servers():
    # The mock server computes the MLP in plain Python from these weights.
    w = {t.name: numpy_helper.to_array(t).tolist() for t in mlp().graph.initializer}
    raw_file("v2/mlp_weights.json", json.dumps(w))
    # run.py serves /v2/models/<behaviour>; each answers as its name says.
    for behaviour, exit_code, needles in [
        ("good", 0, []),
        ("no_metadata", 2, ["no_metadata"]),
        ("metadata_garbage", 2, ["metadata_garbage"]),
        ("infer_500", 2, ["HTTP 500"]),
        ("infer_garbage", 2, ["infer_garbage"]),
        ("fewer_rows", 2, ["one row per sample"]),
        ("more_rows", 2, ["one row per sample"]),
        ("bytes_output", 2, ["logits"]),
        ("no_datatype", 2, ["datatype"]),
        ("wrong_count", 2, ["values"]),
        ("missing_output", 2, ["lacks output"]),
        ("nan_strings", 1, ["finite_outputs"]),
        ("huge_reply", 2, ["huge_reply"]),
        ("slow", 2, ["timeout"]),
        ("redirect_loop", 2, ["redirect_loop"]),
        ("close_early", 2, ["close_early"]),
        ("text_data", 2, ["non-numeric"]),
        ("shape_text", 2, ["shape"]),
        ("not_ready", 2, ["not_ready"]),
    ]:
        case(f"v2/{behaviour}", "v2-server",
             compare(candidate=f"{{V2}}/v2/models/{behaviour}",
                     extra=["--timeout", "2"]), exit_code, needles, timeout=90)
    case("v2/unreachable", "v2-server",
         compare(candidate="http://127.0.0.1:1/v2/models/m", extra=["--timeout", "1"]), 2,
         ["127.0.0.1:1"], timeout=90)
    case("v2/bench-fewer-rows", "v2-server",
         bench(candidate="{V2}/v2/models/fewer_rows", extra=["--timeout", "2"]), 2,
         ["fewer_rows"], timeout=90)


def main():
    if C.exists():
        shutil.rmtree(C)
    C.mkdir(parents=True)
    models()
    data_files()
    image_folders()
    policies()
    slices()
    run_configs()
    gateway_configs()
    analyze_logs()
    flags()
    predictions()
    servers()
    cats = {}
    for c in CASES:
        cats[c["category"]] = cats.get(c["category"], 0) + 1
    (HERE / "cases.json").write_text(json.dumps(CASES, indent=1) + "\n")
    size = sum(p.stat().st_size for p in C.rglob("*") if p.is_file())
    print(f"{len(CASES)} cases, {size / 1024:.0f} KiB of files: {cats}")


if __name__ == "__main__":
    main()
