"""ImageNet-1k class names and WordNet ids, offline: read from the file that ships in `datasets/imagenet/`.

    imagenet.class_names(1000)[281]   -> "tabby, tabby cat"
    imagenet.class_names(1001)[282]   -> "tabby, tabby cat"   (background first, as TF-slim / TPU heads have it)
    imagenet.decode_predictions(preds, top=5)   -> [[("n02123045", "tabby, tabby cat", 0.91), ...], ...]

The names are timm's (WordNet lemmas, Apache-2.0; see datasets/imagenet/SOURCE.txt). No TensorFlow, no network.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from edgetpu_models.errors import ModelFileError

NUM_CLASSES = 1000
BACKGROUND = "background"
HEAD_SIZES = (NUM_CLASSES, NUM_CLASSES + 1)
"""Outputs of an ImageNet head: 1000 classes, or 1001 with a background class at index 0."""
_FILE = ("datasets", "imagenet", "imagenet1k_classes.txt")


@lru_cache(maxsize=1)
def _classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(WordNet ids, names), 1000 each, in class-index order."""
    path = resources.files("edgetpu_models").joinpath(*_FILE)
    wnids, names = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, name = line.split("\t", 1)
        wnids.append(wnid)
        names.append(name)
    if len(wnids) != NUM_CLASSES:  # a damaged install, not user input
        raise ModelFileError(f"{path}: expected {NUM_CLASSES} ImageNet classes, found {len(wnids)}")
    return tuple(wnids), tuple(names)


def is_imagenet_head(num_outputs: int) -> bool:
    return int(num_outputs) in HEAD_SIZES


def _check_head(num_outputs: int) -> int:
    if not is_imagenet_head(num_outputs):
        raise ModelFileError(f"an ImageNet head has 1000 outputs (or 1001 with background first), not {num_outputs}")
    return int(num_outputs)


def wordnet_ids(num_outputs: int = NUM_CLASSES) -> list[str]:
    """WordNet id of each output ('background' at 0 for a 1001-class head)."""
    wnids = list(_classes()[0])
    return [BACKGROUND] + wnids if _check_head(num_outputs) == NUM_CLASSES + 1 else wnids


def class_names(num_outputs: int = NUM_CLASSES) -> list[str]:
    """Name of each output ('background' at 0 for a 1001-class head)."""
    names = list(_classes()[1])
    return [BACKGROUND] + names if _check_head(num_outputs) == NUM_CLASSES + 1 else names


def wordnet_index(num_outputs: int = NUM_CLASSES) -> dict[str, int]:
    """{WordNet id: output index} for a 1000- or 1001-class head (the 1001 head's indices are shifted by one)."""
    offset = 1 if _check_head(num_outputs) == NUM_CLASSES + 1 else 0
    return {wnid: i + offset for i, wnid in enumerate(_classes()[0])}


def decode_predictions(preds: Any, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """keras.applications' decode_predictions without the download: for each row of `preds` [N, 1000 or 1001], the
    `top` classes as (WordNet id, name, score), best first."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or not is_imagenet_head(preds.shape[1]):
        raise ModelFileError(f"decode_predictions: expected a batch of ImageNet scores [N, 1000] or [N, 1001], "
                             f"got shape {list(preds.shape)}")
    wnids, names = wordnet_ids(preds.shape[1]), class_names(preds.shape[1])
    out = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        out.append([(wnids[i], names[i], float(row[i])) for i in order])
    return out
