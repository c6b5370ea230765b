"""Image classification with an exported .tflite: preprocessing and labels from the exporter's X.json.

    clf = Classifier("run/model_int8.tflite")
    for p in clf.classify("cat.jpg", top_k=3).predictions: ...

Images are read with Pillow, resized (shorter side to size/0.875) and centre-cropped like the validation split of
`edgetpu_models.data`, normalised with the JSON's mean/std, then quantized with the input tensor's own scale and zero
point (uint8 or int8) or fed as float32 for a float model; outputs are de-quantized the same way.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..data import load_image
from ..errors import ModelFileError
from ..spec import Normalization
from .export import read_metadata, sidecar_paths

_INT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


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


def metadata_for(model_path: str) -> tuple[dict[str, Any], str]:
    """(X.json content, its path) for X.tflite; a compiled X_edgetpu.tflite falls back to X.json."""
    base = os.path.splitext(model_path)[0]
    candidates = [model_path]
    if base.endswith("_edgetpu"):
        base = base[: -len("_edgetpu")]
        candidates.append(base + ".tflite")
    whole = re.sub(r"_segment_\d+_of_\d+$", "", base)  # a pipeline segment: the whole model's X.json
    if whole != base:
        candidates.append(whole + ".tflite")
    for cand in candidates:
        json_path, _ = sidecar_paths(cand)
        if os.path.exists(json_path):
            return read_metadata(cand), json_path
    return read_metadata(model_path), sidecar_paths(model_path)[0]  # raises the one-line "no such metadata file"


def read_labels(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            labels = [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: not a readable labels file ({e})") from None
    while labels and not labels[-1].strip():
        labels.pop()
    if not labels:
        raise ModelFileError(f"{path}: empty labels file (expected one class name per line)")
    return labels


class Classifier:
    """An interpreter plus what it needs to turn image files into labelled scores."""

    def __init__(self, model_path: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]", *,
                 labels: "str | Sequence[str] | None" = None, threads: int | None = None,
                 prefer: str | None = None) -> None:
        """`model_path`: one .tflite, or segment files in pipeline order (`deploy.pipeline`)."""
        from .pipeline import open_model

        paths = [os.fspath(model_path)] if isinstance(model_path, (str, os.PathLike)) else \
            [os.fspath(p) for p in model_path]
        self.model_path = paths[0]
        for path in paths:
            if not os.path.isfile(path):
                raise ModelFileError(f"{path}: no such model file")
        self.interpreter, self.backend = open_model(paths, threads, prefer=prefer)
        self.meta, json_path = metadata_for(self.model_path)
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._in, self._out = inp, out
        shape = [int(d) for d in inp["shape"]]
        if len(shape) != 4 or shape[3] != 3:
            raise ModelFileError(f"{self.model_path}: input shape {shape}, expected [1, H, W, 3]")
        self.size = (shape[1], shape[2])
        norm = self.meta["normalization"]
        self.normalization = Normalization(tuple(norm["mean"]), tuple(norm["std"]))
        n_out = int(out["shape"][-1])
        if isinstance(labels, str):
            names = read_labels(labels)
        elif labels is not None:
            names = [str(x) for x in labels]
        elif self.meta.get("labels"):
            names = read_labels(os.path.join(os.path.dirname(json_path), self.meta["labels"]))
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
        dtype = np.dtype(self._in["dtype"])
        if dtype in _INT_RANGES:
            scale, zero = self._in["quantization"]
            lo, hi = _INT_RANGES[dtype]
            x = np.clip(np.round(x / scale + zero), lo, hi)
        return x.astype(dtype)[None]

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Class scores (de-quantized) for one preprocessed input, and the invoke time in ms."""
        self.interpreter.set_tensor(self._in["index"], batch)
        t0 = time.perf_counter()
        self.interpreter.invoke()
        ms = (time.perf_counter() - t0) * 1000.0
        y = self.interpreter.get_tensor(self._out["index"])[0]
        if np.dtype(self._out["dtype"]) in _INT_RANGES:
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32), ms

    def classify(self, image: "str | np.ndarray", top_k: int = 5) -> ClassifyResult:
        y, ms = self.scores(self.preprocess(image))
        order = np.argsort(-y, kind="stable")[: max(1, top_k)]
        return ClassifyResult(image=image if isinstance(image, str) else "<array>",
                              predictions=[Prediction(int(i), self.labels[i], float(y[i])) for i in order], ms=ms)
