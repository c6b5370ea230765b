"""Segmentation data: image + mask folders, the ADE20K layout with the reference's 32-class mapping, and a small
synthetic set the package generates offline (tests and the demo).

Layouts (`list_segmentation_folder` finds which):
  image/mask folders  DIR/images/<name>.{jpg,png,...} and DIR/masks/<name>.png; a mask is an 8-bit single-channel
                      PNG (mode L or P) of class indices, 255 = ignore, the size of its image.
  ADE20K              DIR/images/{training,validation}/*.jpg + DIR/annotations/{training,validation}/*.png
                      (ADEChallengeData2016); `split` picks the subfolder. Labels are mapped as tensorflow/models'
                      ClassMappingParser does for 32 classes: labels above 31 -> 0, then 0 -> 255 (ignored): the 31
                      most frequent ADE20K classes are learned, "other" is ignored (class 0 is never a target).
Unreadable images or masks, masks of the wrong mode or size, and images without a mask are skipped and counted
(the classification readers' rule, `data._check_image`); `limit` bounds the work on huge folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgetpu_models.data import IMAGE_EXTENSIONS, _check_image, _is_regular_file, _opened, read_rgb
from edgetpu_models.errors import DatasetError
from edgetpu_models.spec import Normalization

IGNORE_LABEL = 255
ADE20K_CLASSES = 32
SYNTHETIC_CLASSES = ("background", "disc", "square", "triangle")
SYNTHETIC_COLOURS = ((90, 90, 90), (220, 60, 50), (60, 190, 80), (50, 90, 220))


@dataclass(frozen=True)
class SegFolder:
    """The checked listing of a segmentation folder."""

    images: tuple[str, ...]
    masks: tuple[str, ...]
    skipped: tuple[str, ...]
    layout: str  # "folders" or "ade20k"

    def __len__(self) -> int:
        return len(self.images)


def ade20k_32(mask: np.ndarray, classes: int = ADE20K_CLASSES) -> np.ndarray:
    """The reference's label mapping (see module doc): > classes - 1 -> 0, then 0 -> 255."""
    m = np.where(mask > classes - 1, 0, mask)
    return np.where(m == 0, IGNORE_LABEL, m).astype(np.uint8)


def _mask_ok(path: str, image: str) -> bool:
    try:
        with _opened(path) as m, _opened(image) as im:
            return m.mode in ("L", "P") and m.size == im.size
    except (OSError, ValueError, SyntaxError):
        return False


def _pairs(img_dir: str, mask_dir: str, limit: int | None) -> tuple[list[str], list[str], list[str]]:
    images, masks, skipped = [], [], []
    for fname in sorted(os.listdir(img_dir)):
        path = os.path.join(img_dir, fname)
        if fname.startswith(".") or not fname.lower().endswith(IMAGE_EXTENSIONS) or not _is_regular_file(path):
            continue
        if limit is not None and len(images) >= limit:
            break
        mask = os.path.join(mask_dir, os.path.splitext(fname)[0] + ".png")
        if _check_image(path) is None or not os.path.isfile(mask) or _check_image(mask) is None \
                or not _mask_ok(mask, path):
            skipped.append(path)
            continue
        images.append(path)
        masks.append(mask)
    return images, masks, skipped


def list_segmentation_folder(directory: "str | os.PathLike[str]", split: str = "training",
                             limit: int | None = None) -> SegFolder:
    """Lists (image, mask) pairs; DatasetError naming the folder when it has neither layout or no usable pair."""
    d = os.fspath(directory)
    if os.path.isdir(os.path.join(d, "annotations")):
        img_dir, mask_dir, layout = os.path.join(d, "images", split), os.path.join(d, "annotations", split), "ade20k"
    else:
        img_dir, mask_dir, layout = os.path.join(d, "images"), os.path.join(d, "masks"), "folders"
    if not os.path.isdir(img_dir) or not os.path.isdir(mask_dir):
        raise DatasetError(f"{d}: expected images/ and masks/ folders (or ADE20K's images/{split}/ and "
                           f"annotations/{split}/)")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit: expected an integer >= 1, got {limit}")
    images, masks, skipped = _pairs(img_dir, mask_dir, limit)
    if not images:
        raise DatasetError(f"{d}: no usable image + mask pairs ({len(skipped)} skipped)")
    return SegFolder(tuple(images), tuple(masks), tuple(skipped), layout)


def load_pair(image: str, mask: str, size: int, normalization: Normalization, layout: str = "folders",
              classes: int = ADE20K_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """(normalised float32 [size, size, 3], uint8 labels [size, size]): bilinear image, nearest-neighbour mask."""
    from PIL import Image

    im = read_rgb(image).resize((size, size), Image.BILINEAR)
    with _opened(mask) as m:
        labels = np.asarray(m.resize((size, size), Image.NEAREST), np.uint8)
    if layout == "ade20k":
        labels = ade20k_32(labels, classes)
    x = (np.asarray(im, np.float32) - np.asarray(normalization.mean, np.float32)) / np.asarray(normalization.std,
                                                                                               np.float32)
    return x, labels


def load_segmentation(folder: SegFolder, size: int, normalization: Normalization,
                      classes: int = ADE20K_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """All pairs as arrays (small sets: the synthetic set, calibration and evaluation subsets)."""
    pairs = [load_pair(i, m, size, normalization, folder.layout, classes) for i, m in zip(folder.images, folder.masks)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _draw_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image: a textured background and 1-3 shapes (disc, square, triangle) of per-class colour, each outlined by
    a 1-pixel ignore band (255), as VOC/ADE-style masks mark uncertain boundaries."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.asarray(SYNTHETIC_COLOURS[0], np.float32) + rng.normal(0, 18, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cls = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
        cx, cy, r = rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size, rng.uniform(0.1, 0.22) * size
        if cls == 1:
            dist = np.hypot(xx - cx, yy - cy) - r
        elif cls == 2:
            dist = np.maximum(abs(xx - cx), abs(yy - cy)) - r
        else:  # a triangle: inside all three half-planes
            dist = np.maximum.reduce([cy - r - yy, (yy - cy - r) * 0.5 + (xx - cx) * 0.87 - r * 0.3,
                                      (yy - cy - r) * 0.5 - (xx - cx) * 0.87 - r * 0.3])
        inside = dist < 0
        img[inside] = np.asarray(SYNTHETIC_COLOURS[cls], np.float32) + rng.normal(0, 18, (int(inside.sum()), 3))
        mask[inside] = cls
        mask[np.abs(dist) < 0.75] = IGNORE_LABEL
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_synthetic_segmentation(out_dir: "str | os.PathLike[str]", count: int = 96, size: int = 128,
                                seed: int = 0) -> SegFolder:
    """Writes `count` synthetic image + mask pairs (images/, masks/, classes.txt) and returns their listing.
    Deterministic for a seed; offline (numpy + Pillow)."""
    from PIL import Image

    from edgetpu_models.io_utils import write_text_atomic

    if not 1 <= count <= 100_000 or not 32 <= size <= 2048:
        raise DatasetError(f"synthetic set: count 1..100000 and size 32..2048 expected, got {count}, {size}")
    out = os.fspath(out_dir)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "masks"), exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        img, mask = _draw_scene(rng, size)
        Image.fromarray(img).save(os.path.join(out, "images", f"{i:05d}.png"))
        Image.fromarray(mask, mode="L").save(os.path.join(out, "masks", f"{i:05d}.png"))
    write_text_atomic(os.path.join(out, "classes.txt"), "\n".join(SYNTHETIC_CLASSES) + "\n")
    return list_segmentation_folder(out)


def class_names(directory: "str | os.PathLike[str]", classes: int) -> list[str]:
    """classes.txt beside images/ (one name per line) when present, else "0".."classes-1"."""
    path = os.path.join(os.fspath(directory), "classes.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
        if len(names) == classes:
            return names
    return [str(i) for i in range(classes)]
