"""A harder classification set built offline from the bundled digits: "digits-hard".

Why: on the bundled digits every reasonable network trained for a few hundred steps scores 0.88-0.98, so the
stand-alone accuracies a ranking study compares differ by less than their seed noise. Each digit here is moved,
turned, scaled and sheared at random, drawn over a fragment of another digit (clutter) and covered in pixel noise,
so accuracy depends on what a network can represent, not only on whether it trains. The set keeps the original
1797 images one for one (one distorted copy each, same class folders and file names), so a train/validation split
never holds two copies of one handwritten digit. Deterministic for a seed; numpy + Pillow only.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from edgetpu_models.data import default_dataset_dir
from edgetpu_models.errors import DatasetError

ROTATION_DEG = 35.0
SCALE = (0.7, 1.15)
SHIFT = 0.18            # of the image side
SHEAR = 0.25
CLUTTER_ALPHA = (0.25, 0.5)
NOISE_SIGMA = 0.22      # of the full range


def _affine(rng: np.random.Generator, size: int) -> tuple[float, ...]:
    """Pillow's inverse affine coefficients for a random rotation, scale, shear and shift about the centre."""
    a = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    s = rng.uniform(*SCALE)
    sh = rng.uniform(-SHEAR, SHEAR)
    forward = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1, sh], [0, 1]]) * s
    inv = np.linalg.inv(forward)
    c = (size - 1) / 2
    t = rng.uniform(-SHIFT, SHIFT, 2) * size
    offset = np.array([c, c]) - inv @ (np.array([c, c]) + t)
    return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


def distort(ink: np.ndarray, clutter: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One hard copy of a digit. `ink`, `clutter`: float [H, W] in 0..1, 1 = ink. Returns uint8 ink-on-paper."""
    from PIL import Image

    size = ink.shape[0]
    moved = Image.fromarray((ink * 255).astype(np.uint8)).transform(
        (size, size), Image.Transform.AFFINE, _affine(rng, size), resample=Image.Resampling.BILINEAR)
    fragment = np.roll(clutter, tuple(rng.integers(-size // 2, size // 2, 2)), axis=(0, 1))
    x = np.maximum(np.asarray(moved, np.float32) / 255, rng.uniform(*CLUTTER_ALPHA) * fragment)
    x = x + rng.normal(0, NOISE_SIGMA, x.shape)
    return ((1 - np.clip(x, 0, 1)) * 255).round().astype(np.uint8)


def make_hard_digits(out_dir: "str | os.PathLike[str]", seed: int = 0,
                     source: "str | os.PathLike[str] | None" = None) -> str:
    """Writes digits-hard (one distorted copy of every image of `source`, default the bundled digits) to `out_dir`
    and returns it. The folder appears whole or not at all (built beside it, then renamed); an existing one is
    kept as it is."""
    from PIL import Image

    out = os.fspath(out_dir)
    if os.path.isdir(out) and os.listdir(out):
        return out
    src = os.fspath(source or default_dataset_dir())
    classes = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
    if not classes:
        raise DatasetError(f"{src}: no class folders to build digits-hard from")
    files = [(c, f) for c in classes for f in sorted(os.listdir(os.path.join(src, c))) if f.endswith(".png")]
    inks = [1 - np.asarray(Image.open(os.path.join(src, c, f)).convert("L"), np.float32) / 255 for c, f in files]
    rng = np.random.default_rng(seed)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".digits-hard.", dir=parent)
    try:
        for (c, f), ink in zip(files, inks):
            os.makedirs(os.path.join(tmp, c), exist_ok=True)
            clutter = inks[int(rng.integers(len(inks)))]
            Image.fromarray(distort(ink, clutter, rng), mode="L").save(os.path.join(tmp, c, f))
        try:
            if os.path.isdir(out):
                os.rmdir(out)  # empty (checked above)
            os.replace(tmp, out)
        except OSError:
            if not (os.path.isdir(out) and os.listdir(out)):
                raise
            # another process built the same set meanwhile (deterministic for a seed): keep theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
