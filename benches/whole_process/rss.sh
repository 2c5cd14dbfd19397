#!/usr/bin/env bash
# Peak RSS of `qgate compare` at 5 000 and 50 000 samples of the same 32x32 CNN pair,
# RUNS interleaved runs of each (see README.md for the data):
#   benches/whole_process/rss.sh QGATE DIR [RUNS] [BACKEND_PREFIX]
# BACKEND_PREFIX is "" for tract or "ort:" for ONNX Runtime. Prints every run
# (seconds, KiB) and the median per size. Other data and models through the environment:
#   SIZES="10000 100000" DATA=digits_%s.csv BASE=mlp_fp32.onnx CAND=mlp_int8_dynamic.onnx
# (DATA's %s is the size; relative names are in DIR).
set -euo pipefail
QGATE=$1 DIR=$2 RUNS=${3:-5} PREFIX=${4:-}
SIZES=${SIZES:-5000 50000} DATA=${DATA:-data32_%s.npz}
BASE=${BASE:-cnn32_fp32.onnx} CAND=${CAND:-cnn32_int8_qdq.onnx}
in_dir() { case $1 in /*) echo "$1" ;; *) echo "$DIR/$1" ;; esac; }
declare -A peaks
for r in $(seq 1 "$RUNS"); do
  for n in $SIZES; do
    # shellcheck disable=SC2059
    data=$(in_dir "$(printf "$DATA" "$n")")
    line=$( { /usr/bin/time -f "%e %M" "$QGATE" compare \
        --baseline "${PREFIX}$(in_dir "$BASE")" --candidate "${PREFIX}$(in_dir "$CAND")" \
        --data "$data" --batch-size 32 --threads 1 --no-progress \
        --out "$DIR/rss_out_$n" > /dev/null 2> "$DIR/rss_err"; } 2>&1 || true; tail -n 1 "$DIR/rss_err")
    echo "run $r, $n samples: $line"
    peaks[$n]="${peaks[$n]:-} $(echo "$line" | awk '{print $2}')"
  done
done
for n in $SIZES; do
  echo "$n samples: median peak RSS $(echo ${peaks[$n]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') KiB (runs:${peaks[$n]})"
done
