#!/usr/bin/env bash
# Whole process, qgate against the plain onnxruntime script (ort_script.py): wall time and
# peak RSS (/usr/bin/time -v) of RUNS alternating runs each, and their medians.
#
#   benches/whole_process/run.sh QGATE PYTHON DIR SIZE SAMPLES [RUNS] [BATCH]
#
# DIR holds what make_models.py wrote (cnn{SIZE}_fp32.onnx, cnn{SIZE}_int8_qdq.onnx,
# data{SIZE}_{SAMPLES}.npz). PYTHON must have numpy and the onnxruntime whose library
# ORT_DYLIB_PATH names (qgate loads that one).
set -euo pipefail
qgate=$1 python=$2 dir=$3 size=$4 samples=$5 runs=${6:-5} batch=${7:-8}
here=$(cd "$(dirname "$0")" && pwd)
base="$dir/cnn${size}_fp32.onnx" cand="$dir/cnn${size}_int8_qdq.onnx"
data="$dir/data${size}_${samples}.npz"
measure() { # label, command...: prints "label seconds peak_kib"
  local label=$1; shift
  local log; log=$(mktemp)
  /usr/bin/time -v "$@" > /dev/null 2> "$log" || { cat "$log" >&2; exit 1; }
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  rm -f "$log"
  echo "$label $wall $rss"
}
out=$(mktemp -d)
results=$(mktemp)
for i in $(seq "$runs"); do
  measure qgate "$qgate" compare --baseline "ort:$base" --candidate "ort:$cand" --data "$data" \
    --batch-size "$batch" --threads 1 --no-progress --out "$out/r$i" | tee -a "$results"
  measure script "$python" "$here/ort_script.py" "$base" "$cand" "$data" --batch "$batch" --threads 1 | tee -a "$results"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
q = [(float(w), int(m)) for l, w, m in rows if l == "qgate"]
s = [(float(w), int(m)) for l, w, m in rows if l == "script"]
med = lambda v: statistics.median(v)
qw, sw = med([w for w, _ in q]), med([w for w, _ in s])
qm, sm = med([m for _, m in q]), med([m for _, m in s])
ratios = [b / a for (a, _), (b, _) in zip(q, s)]
print(f"qgate : median {qw:.2f} s, peak RSS median {qm / 1024:.0f} MiB (runs: {[m // 1024 for _, m in q]})")
print(f"script: median {sw:.2f} s, peak RSS median {sm / 1024:.0f} MiB (runs: {[m // 1024 for _, m in s]})")
print(f"speed (script time / qgate time): {sw / qw:.3f} of medians, {med(ratios):.3f} median of pairs")
print(f"peak RSS (qgate / script): {qm / sm:.3f}")
PY
rm -rf "$out" "$results"
