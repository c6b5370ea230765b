"""What `evaluate` reads: labelled image lists in three layouts, and each model's own image preprocessing.

Layouts of `--data DIR`:
  * class folders, as `train` reads them (`DIR/<class>/<image>`, `edgetpu_models.data.list_image_folder`); with
    `split="val"` the same seeded per-class split as `train`/`demo` (`split_indices`), so a run's held-out images are
    exactly the ones its own validation scored;
  * ImageNet's validation set as WordNet-id folders (`DIR/n01440764/*.JPEG`): the same listing, and the folder names
    map onto an ImageNet head (1000 outputs, or 1001 with background first);
  * ImageNet's validation set as one flat folder plus a ground-truth file: lines `FILE LABEL` (LABEL a WordNet id or
    the 0-based class index of the 1000-class order, as in Caffe's val.txt), Kaggle's `LOC_val_solution.csv`
    (`ImageId,PredictionString`, the WordNet id first), or the devkit's `ILSVRC2012_validation_ground_truth.txt` (one
    ILSVRC2012_ID per line for ILSVRC2012_val_00000001.JPEG on, named by the devkit's `meta.mat` beside it).

Preprocessing (`Preprocess`), one of two pipelines:
  * "train": this package's own validation pipeline (`edgetpu_models.data`): shorter side resized to
    round(size / crop) with antialiased bilinear interpolation, centre square, rounded to uint8, centre `size` crop.
    Models trained by `train`/`demo` were validated this way; `edgetpu_models.data.centre_crop` is the one definition
    (TensorFlow's arithmetic redone in numpy, no TensorFlow import), so evaluate reproduces their numbers exactly.
  * "reference": the ImageNet evaluation of tensorflow/tpu's EfficientNet (and timm's tf_efficientnet_e*, whose
    crop_pct = size / (size + 32)): a centre square of int(size / (size + 32) * shorter side) pixels (CROP_PADDING =
    32, i.e. 0.875 at 224, 0.882 at 240, 0.904 at 300), offset ((h - c) + 1) // 2, resized to size with bicubic
    interpolation. (Pillow's bicubic antialiases when it shrinks; TensorFlow's resize_bicubic does not. timm takes
    the same region the other way round: shorter side resized to floor(size / crop_pct), then a centre crop.)
A sidecar (X.tflite.json) may name them: {"preprocessing": {"pipeline": ..., "crop_fraction": ...}}; else an
ImageNet head gets "reference" and any other head "train".
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgetpu_models.data import (
    CROP_FRACTION,
    IMAGE_EXTENSIONS,
    centre_crop,
    list_image_folder,
    normalize_pixels,
    read_rgb,
    split_indices,
)
from edgetpu_models.errors import DatasetError, ModelFileError
from edgetpu_models.spec import Normalization

PIPELINES = ("train", "reference")
SPLITS = ("all", "train", "val")
CROP_PADDING = 32
"""tensorflow/tpu efficientnet preprocessing.py: the eval crop is image_size / (image_size + CROP_PADDING)."""
WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Preprocess:
    """How one model wants its images: input size, pipeline, centre-crop fraction, normalisation."""

    size: tuple[int, int]
    pipeline: str = "train"
    crop_fraction: float = CROP_FRACTION
    normalization: Normalization = field(default_factory=Normalization)

    @property
    def interpolation(self) -> str:
        return "bilinear (antialiased)" if self.pipeline == "train" else "bicubic"

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "pipeline": self.pipeline, "crop_fraction": round(self.crop_fraction, 6),
                "interpolation": self.interpolation, "mean": list(self.normalization.mean),
                "std": list(self.normalization.std)}

    def load(self, path: str) -> np.ndarray:
        """One image file -> float32 [H, W, 3], normalised; DatasetError naming the file when it cannot be read (read
        as `edgetpu_models.data.read_rgb` reads it: every mode to 8-bit RGB, decompression bombs refused)."""
        return self.apply(read_rgb(path))

    def apply(self, im: Any) -> np.ndarray:
        """An 8-bit RGB PIL image -> float32 [H, W, 3]: this model's crop and resize, then its normalisation."""
        return normalize_pixels(self.pixels(im), self.normalization)

    def pixels(self, im: Any) -> np.ndarray:
        """An 8-bit RGB PIL image -> the cropped, resized pixels [H, W, 3] (0..255), before normalisation."""
        if self.pipeline == "train":  # data.py's one definition: the very pixels `train`/`demo` validated on
            return centre_crop(im, self.size, self.crop_fraction)
        return self._reference(im)

    def _reference(self, im: Any) -> np.ndarray:
        from PIL import Image

        w, h = im.size
        c = max(1, int(self.crop_fraction * min(w, h)))
        top, left = ((h - c) + 1) // 2, ((w - c) + 1) // 2
        im = im.crop((left, top, left + c, top + c)).resize((self.size[1], self.size[0]), Image.BICUBIC)
        return np.clip(np.round(np.asarray(im, np.float32)), 0, 255)


def default_preprocess(size: tuple[int, int], normalization: Normalization, imagenet_head: bool,
                       sidecar: dict | None = None, where: str = "sidecar") -> Preprocess:
    """The sidecar's {"preprocessing": ...} when it has one, else "reference" for an ImageNet head, else "train"."""
    pipeline = "reference" if imagenet_head else "train"
    crop = reference_crop(size[0]) if imagenet_head else CROP_FRACTION
    given = (sidecar or {}).get("preprocessing")
    if given is not None:
        try:
            pipeline = str(given.get("pipeline", pipeline))
            crop = float(given.get("crop_fraction", crop))
        except (AttributeError, TypeError, ValueError):
            raise ModelFileError(f"{where}: 'preprocessing' must be {{'pipeline': ..., 'crop_fraction': ...}}") \
                from None
        if pipeline not in PIPELINES or not 0.0 < crop <= 1.0:
            raise ModelFileError(f"{where}: preprocessing: expected pipeline in {PIPELINES} and 0 < crop_fraction <= 1")
    return Preprocess(size=size, pipeline=pipeline, crop_fraction=crop, normalization=normalization)


def reference_crop(size: int) -> float:
    return size / (size + CROP_PADDING)


@dataclass(frozen=True)
class LabelledImages:
    """Image files and, for each, its class key (a folder name or a WordNet id)."""

    directory: str
    layout: str
    files: list[str]
    keys: list[str]
    classes: list[str]
    """The distinct keys, sorted."""
    skipped: list[str] = field(default_factory=list)

    @property
    def wordnet(self) -> bool:
        return all(WNID.match(k) for k in self.classes)


def read_dataset(directory: "str | os.PathLike[str]", ground_truth: str | None = None, split: str = "all",
                 validation_split: float = 0.2, seed: int = 0) -> LabelledImages:
    """A dataset folder in one of the module's layouts (a flat folder needs `ground_truth`)."""
    directory = os.fspath(directory)
    if split not in SPLITS:
        raise DatasetError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if ground_truth is not None:
        if split != "all":
            raise DatasetError(f"split: a ground-truth file lists its own images; use split 'all', not {split!r}")
        return _flat_folder(directory, ground_truth)
    if os.path.isdir(directory) and not any(os.path.isdir(os.path.join(directory, d)) for d in os.listdir(directory)):
        raise DatasetError(f"{directory}: no class sub-folders; for a flat ImageNet validation folder give the "
                           f"ground-truth file (lines 'FILE WNID' or 'FILE INDEX', or LOC_val_solution.csv)")
    folder = list_image_folder(directory)
    keep = np.arange(len(folder.files))
    if split != "all":
        train, val = split_indices(folder.labels, validation_split, seed)
        keep = val if split == "val" else train
    files = [folder.files[i] for i in keep]
    keys = [folder.class_names[folder.labels[i]] for i in keep]
    layout = "class folders" + (" (WordNet ids)" if all(WNID.match(c) for c in folder.class_names) else "")
    return LabelledImages(folder.directory, layout, files, keys, sorted(set(keys)), list(folder.skipped))


def _ground_truth_rows(path: str) -> list[tuple[str, str]]:
    """(file name, label) pairs from a ground-truth file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such ground-truth file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a readable ground-truth file ({e})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and all(ln.strip().isdigit() for ln in lines):  # the devkit's: one ILSVRC2012_ID per image, in order
        ids = _devkit_ids(path)
        unknown = next((ln.strip() for ln in lines if int(ln) not in ids), None)
        if unknown is not None:
            raise DatasetError(f"{path}: ILSVRC2012_ID {unknown} is not in the devkit's meta.mat")
        return [(f"ILSVRC2012_val_{n:08d}.JPEG", ids[int(ln)]) for n, ln in enumerate(lines, 1)]
    if lines and lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        rows = [(r[0], (r[1].split() or [""])[0]) for r in csv.reader(lines[1:]) if len(r) >= 2]
    else:
        rows = []
        for n, line in enumerate(lines, start=1):
            parts = line.replace(",", " ").split()
            if len(parts) != 2:
                raise DatasetError(f"{path}: line {n}: expected 'FILE LABEL' (a WordNet id or a class index 0-999), "
                                   f"got {line.strip()[:80]!r}")
            rows.append((parts[0], parts[1]))
    if not rows:
        raise DatasetError(f"{path}: no labelled images in the ground-truth file")
    return rows


def _devkit_ids(ground_truth: str) -> dict[int, str]:
    """{ILSVRC2012_ID: WordNet id} from the devkit's meta.mat beside its ILSVRC2012_validation_ground_truth.txt (the
    devkit numbers classes in its own order, not in the 0-999 class-index order)."""
    meta = os.path.join(os.path.dirname(os.path.abspath(ground_truth)), "meta.mat")
    if not os.path.exists(meta):
        raise DatasetError(f"{ground_truth}: one ILSVRC2012_ID per line (the ImageNet devkit's ground truth) needs the "
                           f"devkit's meta.mat beside it to name the classes; {meta} is missing")
    from scipy.io import loadmat

    try:
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        ids = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DatasetError(f"{meta}: not the ImageNet devkit's meta.mat (synsets with ILSVRC2012_ID and WNID: "
                           f"{type(e).__name__}: {e})") from None
    return ids


def _flat_folder(directory: str, ground_truth: str) -> LabelledImages:
    from edgetpu_models.imagenet import wordnet_ids

    if not os.path.isdir(directory):
        raise DatasetError(f"{directory}: no such dataset folder")
    wnids = wordnet_ids(1000)
    by_stem = {os.path.splitext(n)[0]: n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS)}
    files, keys = [], []
    for name, label in _ground_truth_rows(ground_truth):
        if label.isdigit():
            if int(label) >= len(wnids):
                raise DatasetError(f"{ground_truth}: {name}: class index {label} is not in 0-999")
            label = wnids[int(label)]
        elif not WNID.match(label):
            raise DatasetError(f"{ground_truth}: {name}: label {label!r} is neither a WordNet id nor a class index")
        found = name if os.path.exists(os.path.join(directory, name)) else by_stem.get(os.path.splitext(name)[0])
        if found is None:
            raise DatasetError(f"{ground_truth}: {name}: no such image in {directory}")
        files.append(os.path.join(directory, found))
        keys.append(label)
    return LabelledImages(directory, "ImageNet validation (flat folder + ground truth)", files, keys,
                          sorted(set(keys)))


def class_index_map(data: LabelledImages, labels: Sequence[str] | None, num_outputs: int, model: str) -> dict[str, int]:
    """{class key of the data: output index of the model}: WordNet ids onto an ImageNet head, else by label name, else
    (a model without labels) by sorted class order when the counts match."""
    from edgetpu_models.imagenet import is_imagenet_head, wordnet_index

    if data.wordnet and is_imagenet_head(num_outputs):
        index = wordnet_index(num_outputs)
    elif labels is not None and not (data.wordnet and not set(data.classes) & set(labels)):
        index = {name: i for i, name in enumerate(labels)}
    elif labels is None and len(data.classes) == num_outputs:
        index = {key: i for i, key in enumerate(data.classes)}
    else:
        raise DatasetError(f"{data.directory}: {len(data.classes)} classes cannot be matched to the {num_outputs} "
                           f"outputs of {model} (it has {'no labels' if labels is None else 'other labels'})")
    missing = [k for k in data.classes if k not in index]
    if missing:
        raise DatasetError(f"{data.directory}: class {missing[0]!r} is not one of the classes of {model} "
                           f"({len(missing)} of {len(data.classes)} classes unknown to it)")
    return {k: index[k] for k in data.classes}
