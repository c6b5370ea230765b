"""Post-training full-integer quantization: the representative (calibration) set of real images from a dataset folder.

The converter picks every activation's int8 range from what the model computes on these images, so they must look
like the images the model will see: real images from the task's dataset, at least MIN_CALIBRATION_IMAGES of them.
Random pixels are possible (`export_tflite(random_calibration=True)`), only when asked for, and the export says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from edgetpu_models.errors import DatasetError
from edgetpu_models.quantize.convert import MIN_CALIBRATION_IMAGES
from edgetpu_models.spec import Normalization

DEFAULT_CALIBRATION_IMAGES = 200


@dataclass
class CalibrationSet:
    """Normalised float32 batches [N, size, size, 3] of real images, at most `count` images in all; iterable as many
    times as needed (the converter and the quantization debugger each walk it)."""

    dataset: Any
    count: int
    image_size: int
    class_names: list[str]
    directory: str

    def __iter__(self) -> Iterator[np.ndarray]:
        left = self.count
        for images, _labels in self.dataset:
            if left <= 0:
                break
            arr = np.asarray(images, np.float32)[:left]
            left -= len(arr)
            yield arr


def require_calibration_images(readable: int, where: str, then: str = "") -> None:
    """The one check that `readable` images are enough to calibrate an int8 export (MIN_CALIBRATION_IMAGES); made
    before expensive work whose result would then be exported (QAT, the demo's training). DatasetError in one line."""
    if readable < MIN_CALIBRATION_IMAGES:
        raise DatasetError(f"{where}: {readable} readable images, post-training quantization needs at least "
                           f"{MIN_CALIBRATION_IMAGES} to calibrate{then}")


def calibration_set(directory: "str | os.PathLike[str]", image_size: int, normalization: Normalization,
                    count: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0) -> CalibrationSet:
    """Up to `count` images of `directory` (one sub-folder per class), a seeded mix of all classes, resized and
    normalised for the model. DatasetError when the folder has fewer than MIN_CALIBRATION_IMAGES readable images."""
    from edgetpu_models.data import load_image_folder

    if count < MIN_CALIBRATION_IMAGES:
        raise DatasetError(f"calibration images: asked for {count}, at least {MIN_CALIBRATION_IMAGES} are needed")
    data = load_image_folder(directory, image_size, normalization, batch_size=32, validation_split=0.0, seed=seed,
                             augment=False)
    require_calibration_images(data.num_train, os.fspath(directory))
    return CalibrationSet(dataset=data.train, count=min(count, data.num_train), image_size=image_size,
                          class_names=list(data.class_names), directory=os.fspath(directory))
