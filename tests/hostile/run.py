"""Runs the hostile-input corpus (tests/hostile/cases.json) against a qgate binary.

    python3 tests/hostile/run.py target/release/qgate [--jobs N] [--only SUBSTRING]

Standard library only. Starts a misbehaving KServe V2 server on 127.0.0.1 (one model per
behaviour: /v2/models/<behaviour>) and makes a named pipe, then runs every case in parallel.
A case passes when qgate
- exits with the case's code (0 pass, 1 fail, 2 error), never 101 (panic), 134 (abort), a
  signal or the case's timeout;
- prints no panic message;
- names what is wrong: each of the case's needles is in stderr (exit 2) or stdout (0 and 1),
  and an error's first line starts with "qgate: error:" or clap's "error:";
- leaves no stale PASS: every case with a report folder starts with a passing report.json
  from an "earlier run" there; after an exit 2, report.json is absent or says "error".

Prints failures, the cases by category, the exit-code histogram and the wall time; exits 1
when any case fails.
"""
import argparse
import concurrent.futures
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIX = ROOT / "fixtures" / "digits"
CORPUS = HERE / "corpus"


# ------------------------------------------------------------------ the V2 server
def mlp_logits(weights, rows):
    """The digits MLP in plain Python (float64): relu(x·W1 + B1)·W2 + B2."""
    w1, b1, w2, b2 = weights["W1"], weights["B1"], weights["W2"], weights["B2"]
    out = []
    for x in rows:
        h = [max(0.0, b1[j] + sum(x[i] * w1[i][j] for i in range(64))) for j in range(64)]
        out.append([b2[k] + sum(h[j] * w2[j][k] for j in range(64)) for k in range(10)])
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    weights = None

    def log_message(self, *args):
        pass

    def send(self, code, body, content_type="application/json", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def behaviour(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        # v2 / models / NAME [/ ready | / infer]
        if len(parts) < 3 or parts[:2] != ["v2", "models"]:
            return None, None
        return parts[2], (parts[3] if len(parts) > 3 else "")

    def do_GET(self):
        name, tail = self.behaviour()
        if name is None:
            return self.send(404, '{"error": "not found"}')
        if tail == "ready":
            if name == "not_ready":
                return self.send(503, '{"error": "model is loading"}')
            return self.send(200, "")
        if name == "no_metadata":
            return self.send(404, '{"error": "Model no_metadata not found"}')
        if name == "metadata_garbage":
            return self.send(200, "<html>hello</html>", "text/html")
        meta = {"name": name, "platform": "onnx",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}
        return self.send(200, json.dumps(meta))

    def do_POST(self):
        name, tail = self.behaviour()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if name is None or tail != "infer":
            return self.send(404, '{"error": "not found"}')
        if name == "infer_500":
            return self.send(500, '{"error": "boom: the model crashed"}')
        if name == "infer_garbage":
            return self.send(200, "<html>gateway error</html>", "text/html")
        if name == "slow":
            time.sleep(6)
        if name == "redirect_loop":
            return self.send(307, "", headers=[("Location", self.path)])
        if name == "close_early":
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if name == "huge_reply":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            self.wfile.write(b'{"outputs": [' + b" " * 65536)
            self.close_connection = True
            return None
        req = json.loads(body)
        x = req["inputs"][0]
        flat, (b, w) = x["data"], x["shape"]
        rows = [flat[i * w:(i + 1) * w] for i in range(b)]
        logits = mlp_logits(self.weights, rows)
        out = {"name": "logits", "datatype": "FP32", "shape": [b, 10],
               "data": [v for r in logits for v in r]}
        if name == "fewer_rows":
            out["shape"], out["data"] = [b - 1, 10], out["data"][10:]
        elif name == "more_rows":
            out["shape"], out["data"] = [b + 1, 10], out["data"] + out["data"][:10]
        elif name == "bytes_output":
            out["datatype"], out["data"] = "BYTES", [str(v) for v in out["data"]]
        elif name == "no_datatype":
            del out["datatype"]
        elif name == "wrong_count":
            out["data"] = out["data"][:-1]
        elif name == "nan_strings":
            out["data"] = ["NaN" if i % 10 == 3 else v for i, v in enumerate(out["data"])]
        elif name == "text_data":
            out["data"] = ["a"] * len(out["data"])
        elif name == "shape_text":
            out["shape"] = "b,10"
        outputs = [] if name == "missing_output" else [out]
        return self.send(200, json.dumps({"model_name": name, "outputs": outputs}))


def start_server():
    Handler.weights = json.loads((CORPUS / "v2" / "mlp_weights.json").read_text())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ------------------------------------------------------------------ running cases
STALE = {"schema_version": "0", "command": "compare", "verdict": "pass",
         "summary": "PASS from an earlier run (planted by tests/hostile/run.py)"}


def run_case(qgate, case, index, subst, scratch):
    out = scratch / "out" / str(index)
    uses_out = any("{OUT}" in a for a in case["args"])
    if uses_out:
        out.mkdir(parents=True)
        (out / "report.json").write_text(json.dumps(STALE))
    values = dict(subst, OUT=str(out))
    args = [a.format(**values) for a in case["args"]]
    started = time.monotonic()
    try:
        p = subprocess.run([qgate, *args], capture_output=True, text=True, errors="replace",
                           timeout=case["timeout"], cwd=scratch, stdin=subprocess.DEVNULL)
        code, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = "timeout", str(e.stdout or ""), str(e.stderr or "")
    took = time.monotonic() - started
    problems = []
    if code != case["exit"]:
        problems.append(f"exit {code}, expected {case['exit']}")
    if "panicked at" in stderr or code in (101, 134, -6, -9, -11):
        problems.append("panic or abort")
    if code == 2:
        first = stderr.strip().splitlines()[0] if stderr.strip() else ""
        if not (first.startswith("qgate: error:") or first.startswith("error:")):
            problems.append(f"first stderr line is not an error: {first!r}")
    where = stderr if case["exit"] == 2 else stdout
    missing = [n.format(**values) for n in case["needles"] if n.format(**values) not in where]
    if missing:
        problems.append(f"missing from {'stderr' if case['exit'] == 2 else 'stdout'}: {missing}")
    if uses_out and code not in (0, 1, 3):
        report = out / "report.json"
        if report.is_file():
            try:
                verdict = json.loads(report.read_text()).get("verdict")
            except ValueError:
                verdict = "unreadable"
            if verdict != "error":
                problems.append(f"report.json left with verdict {verdict!r} after exit {code}")
    shutil.rmtree(out, ignore_errors=True)
    return {"id": case["id"], "category": case["category"], "exit": code,
            "expected": case["exit"], "seconds": round(took, 2), "problems": problems,
            "stderr": stderr[-1500:], "stdout": stdout[-600:]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("qgate", help="the qgate binary")
    ap.add_argument("--jobs", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--only", default="", help="run cases whose id contains this")
    ap.add_argument("--json", help="write every result to this file")
    a = ap.parse_args()
    qgate = str(Path(a.qgate).resolve())
    cases = json.loads((HERE / "cases.json").read_text())
    cases = [c for c in cases if a.only in c["id"]]
    scratch = Path(tempfile.mkdtemp(prefix="qgate-hostile-"))
    fifo = scratch / "fifo"
    os.mkfifo(fifo)
    server, url = start_server()
    subst = {"F": str(FIX), "C": str(CORPUS), "V2": url, "FIFO": str(fifo),
             "TMP": str(scratch)}
    started = time.monotonic()
    results = []
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        futures = [pool.submit(run_case, qgate, c, i, subst, scratch)
                   for i, c in enumerate(cases)]
        for f in concurrent.futures.as_completed(futures):
            results.append(f.result())
    wall = time.monotonic() - started
    server.shutdown()
    shutil.rmtree(scratch, ignore_errors=True)
    results.sort(key=lambda r: r["id"])
    failed = [r for r in results if r["problems"]]
    for r in failed:
        print(f"FAIL {r['id']}: {'; '.join(r['problems'])}")
        for line in (r["stderr"] or r["stdout"]).strip().splitlines()[:6]:
            print(f"     | {line}")
    by_cat = defaultdict(Counter)
    for r in results:
        by_cat[r["category"]][r["exit"]] += 1
    print(f"\n{len(results)} cases, {len(failed)} failed, wall {wall:.0f} s "
          f"({a.jobs} jobs)")
    print(f"{'category':<14} {'cases':>5}  exit codes")
    for cat in sorted(by_cat):
        counts = by_cat[cat]
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
        print(f"{cat:<14} {sum(counts.values()):>5}  {codes}")
    total = Counter(r["exit"] for r in results)
    print(f"{'all':<14} {len(results):>5}  "
          + ", ".join(f"{k}: {v}" for k, v in sorted(total.items(), key=str)))
    slow = sorted(results, key=lambda r: -r["seconds"])[:3]
    print("slowest: " + ", ".join(f"{r['id']} {r['seconds']:.1f} s" for r in slow))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
