"""The data of the other streamed sources, for rss.sh (see README.md):

    python make_streamed.py DIR

writes DIR/data32c_{5000,50000}.npz (numpy.savez_compressed copies of the 32x32 sets
make_models.py wrote) and DIR/digits_{10000,100000,1000000}.csv (the digits' CSV table
repeated, ids s0, s1, ...).
"""

import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    out = Path(sys.argv[1])
    for n in (5000, 50000):
        with np.load(out / f"data32_{n}.npz") as d:
            np.savez_compressed(out / f"data32c_{n}.npz", **{k: d[k] for k in d.files})
    with open(ROOT / "fixtures/digits/test.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[0] == "id", header[:3]
    for n in (10_000, 100_000, 1_000_000):
        with open(out / f"digits_{n}.csv", "w") as f:
            f.write(",".join(header) + "\n")
            for i in range(n):
                f.write(",".join([f"s{i}"] + body[i % len(body)][1:]) + "\n")


if __name__ == "__main__":
    main()
