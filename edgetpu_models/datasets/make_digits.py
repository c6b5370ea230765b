"""Regenerates `digits/` (the default dataset) from scikit-learn's bundled copy of the UCI handwritten digits.

Run once by a maintainer, not at run time (the PNG files are committed):

    pip download --no-deps scikit-learn -d /tmp/skl && cd /tmp/skl && unzip -o scikit_learn-*.whl \
        'sklearn/datasets/data/digits.csv.gz'
    python -m edgetpu_models.datasets.make_digits /tmp/skl/sklearn/datasets/data/digits.csv.gz

Each row of digits.csv.gz is 64 pixel counts (0..16, an 8x8 grid) and the digit. The script writes dark ink on a
light background, upsampled to 32x32 with bicubic interpolation, as `digits/<digit>/<row index>.png`.
"""

from __future__ import annotations

import gzip
import os
import sys

import numpy as np
from PIL import Image

SIZE = 32


def main(csv_gz: str, out_dir: str | None = None) -> int:
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits")
    with gzip.open(csv_gz, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    for i, row in enumerate(rows):
        pixels, label = row[:64].reshape(8, 8), int(row[64])
        gray = (255 - pixels * 255 // 16).astype(np.uint8)
        img = Image.fromarray(gray, mode="L").resize((SIZE, SIZE), Image.BICUBIC)
        folder = os.path.join(out_dir, str(label))
        os.makedirs(folder, exist_ok=True)
        img.save(os.path.join(folder, f"{i:04d}.png"), optimize=True)
    print(f"wrote {len(rows)} images to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
