#!/usr/bin/env bash
# Peak RSS of `qgate compare` at 5 000 and 50 000 samples of the same 32x32 CNN pair,
# RUNS interleaved runs of each (see README.md for the data):
#   benches/whole_process/rss.sh QGATE DIR [RUNS] [BACKEND_PREFIX]
# BACKEND_PREFIX is "" for tract or "ort:" for ONNX Runtime. Prints every run
# (seconds, KiB) and the median per size.
set -euo pipefail
QGATE=$1 DIR=$2 RUNS=${3:-5} PREFIX=${4:-}
declare -A peaks
for r in $(seq 1 "$RUNS"); do
  for n in 5000 50000; do
    line=$( { /usr/bin/time -f "%e %M" "$QGATE" compare \
        --baseline "${PREFIX}$DIR/cnn32_fp32.onnx" --candidate "${PREFIX}$DIR/cnn32_int8_qdq.onnx" \
        --data "$DIR/data32_$n.npz" --batch-size 32 --threads 1 --no-progress \
        --out "$DIR/rss_out_$n" > /dev/null 2> "$DIR/rss_err"; } 2>&1 || true; tail -n 1 "$DIR/rss_err")
    echo "run $r, $n samples: $line"
    peaks[$n]="${peaks[$n]:-} $(echo "$line" | awk '{print $2}')"
  done
done
for n in 5000 50000; do
  echo "$n samples: median peak RSS $(echo ${peaks[$n]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') KiB (runs:${peaks[$n]})"
done
