"""Image classification with an exported .tflite: preprocessing and labels from the exporter's X.tflite.json.

    clf = Classifier("run/model_int8.tflite")
    for p in clf.classify("cat.jpg", top_k=3).predictions: ...

Images are read with Pillow, resized (shorter side to size/0.875) and centre-cropped like the validation split of
`edgetpu_models.data`, normalised with the JSON's mean/std, then quantized with the input tensor's own scale and zero
point (uint8 or int8) or fed as float32 for a float model; outputs are de-quantized the same way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgetpu_models.data import load_image
from edgetpu_models.errors import ModelFileError
from edgetpu_models.imagenet import class_names as imagenet_class_names
from edgetpu_models.imagenet import is_imagenet_head
from edgetpu_models.sidecar import read_labels, require_sidecar

_INT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def quantize_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Normalised float images -> the input tensor's dtype, with its scale and zero point when it is an integer."""
    dtype = np.dtype(detail["dtype"])
    if dtype in _INT_RANGES:
        scale, zero = detail["quantization"]
        lo, hi = _INT_RANGES[dtype]
        x = np.clip(np.round(x / scale + zero), lo, hi)
    return x.astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An output tensor -> float32 scores (integer outputs de-quantized with their scale and zero point)."""
    if np.dtype(detail["dtype"]) in _INT_RANGES:
        scale, zero = detail["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    image: str
    predictions: list[Prediction] = field(default_factory=list)
    ms: float = 0.0
    """Time of the interpreter's invoke() alone."""


class Classifier:
    """An interpreter plus what it needs to turn image files into labelled scores."""

    def __init__(self, model_path: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]", *,
                 labels: "str | Sequence[str] | None" = None, threads: int | None = None,
                 prefer: str | None = None) -> None:
        """`model_path`: one .tflite, or segment files in pipeline order (`deploy.pipeline`)."""
        from edgetpu_models.deploy.pipeline import open_interpreter

        paths = [os.fspath(model_path)] if isinstance(model_path, (str, os.PathLike)) else \
            [os.fspath(p) for p in model_path]
        self.model_path = paths[0]
        for path in paths:
            if not os.path.isfile(path):
                raise ModelFileError(f"{path}: no such model file")
        self.interpreter, self.backend = open_interpreter(paths, threads, prefer=prefer)
        self.meta = require_sidecar(self.model_path)
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._in, self._out = inp, out
        shape = [int(d) for d in inp["shape"]]
        if len(shape) != 4 or shape[3] != 3:
            raise ModelFileError(f"{self.model_path}: input shape {shape}, expected [1, H, W, 3]")
        self.size = (shape[1], shape[2])
        self.normalization = self.meta.normalization
        n_out = int(out["shape"][-1])
        if isinstance(labels, str):
            names = list(read_labels(labels))
            if not names:
                raise ModelFileError(f"{labels}: empty labels file (expected one class name per line)")
        elif labels is not None:
            names = [str(x) for x in labels]
        elif self.meta.labels is not None:
            names = list(self.meta.labels)
        elif is_imagenet_head(n_out):  # an ImageNet head exported without a labels file: the shipped class names
            names = imagenet_class_names(n_out)
        else:
            names = [str(i) for i in range(n_out)]
        if len(names) != n_out:
            raise ModelFileError(f"labels: {len(names)} names for a model with {n_out} outputs")
        self.labels = names

    def preprocess(self, image: "str | np.ndarray") -> np.ndarray:
        """An image file (or an already normalised float array [H,W,3]) -> the input tensor [1,H,W,3]."""
        if isinstance(image, str):
            if self.size[0] != self.size[1]:
                raise ModelFileError(f"{self.model_path}: non-square input {self.size} is not supported")
            x = load_image(image, self.size[0], self.normalization)
        else:
            x = np.asarray(image, np.float32)
        return quantize_input(x, self._in)[None]

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Class scores (de-quantized) for one preprocessed input, and the invoke time in ms."""
        self.interpreter.set_tensor(self._in["index"], batch)
        t0 = time.perf_counter()
        self.interpreter.invoke()
        ms = (time.perf_counter() - t0) * 1000.0
        return dequantize_output(self.interpreter.get_tensor(self._out["index"])[0], self._out), ms

    def classify(self, image: "str | np.ndarray", top_k: int = 5) -> ClassifyResult:
        y, ms = self.scores(self.preprocess(image))
        order = np.argsort(-y, kind="stable")[: max(1, top_k)]
        return ClassifyResult(image=image if isinstance(image, str) else "<array>",
                              predictions=[Prediction(int(i), self.labels[i], float(y[i])) for i in order], ms=ms)
