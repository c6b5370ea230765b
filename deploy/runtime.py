"""The one way to run a .tflite: `Runner` opens it on whatever runtime the machine has and takes what a user has.

    runner = Runner("run/model_int8.tflite", threads=2)
    runner.classify("cat.jpg", top_k=3).predictions      # a str path, os.PathLike, PIL image or uint8 array
    runner.input, runner.output                          # TensorInfo: shape, dtype, scale, zero point
    runner.predict(images)                               # normalised float32 [N, H, W, 3] -> float scores [N, C]

Runtimes, in order (`interpreter.make_interpreter`): Coral's pycoral with the Edge TPU delegate (when pycoral,
libedgetpu and a device are present), LiteRT (`ai_edge_litert`), `tflite_runtime` (a Coral Dev Board's or a
Raspberry Pi's), TensorFlow's `tf.lite`. Several segment files run as one pipeline (`pipeline.PipelineInterpreter`).

What `classify` (and `preprocess`) accept, and what each means:
  * a path (`str` or `os.PathLike`): an image file, read with Pillow (`edgetpu_models.data.read_rgb`);
  * a PIL image: any mode, converted to 8-bit RGB the same way (`data.to_rgb8`);
  * a uint8 array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] of any size: an image's pixels, like a file's;
    all three are cropped, resized and normalised the model's way (`eval_data.Preprocess`, from its sidecar);
  * a float array [H, W, 3] at exactly the model's input size: the model's input, already cropped and normalised
    (what `edgetpu_models.data.load_image` and the tf.data validation pipeline give); it is only quantized.
    A float array is never taken as pixels: 0..255 floats would be read as normalised values, so they are refused
    unless their shape is the input's (and then they are the caller's normalised values).
Nothing here imports TensorFlow (unless `tf.lite` is the only runtime left), so it runs on a board with only
numpy, Pillow, PyYAML and a TFLite runtime.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgetpu_models.deploy.eval_data import Preprocess, default_preprocess
from edgetpu_models.deploy.pipeline import open_interpreter
from edgetpu_models.errors import DatasetError, ModelFileError
from edgetpu_models.imagenet import class_names as imagenet_class_names
from edgetpu_models.imagenet import is_imagenet_head
from edgetpu_models.sidecar import Sidecar, read_labels, read_sidecar, sidecar_paths

ModelPath = Union[str, "os.PathLike[str]"]
_INT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor: what a caller needs to feed or read it."""

    index: int
    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0
    """Real value = (q - zero_point) * scale for an integer tensor; scale 0 means not quantized."""

    @property
    def quantized(self) -> bool:
        return self.dtype in _INT_RANGES and self.scale != 0.0

    @classmethod
    def from_detail(cls, d: dict) -> "TensorInfo":
        scale, zero = d.get("quantization", (0.0, 0)) or (0.0, 0)
        return cls(int(d["index"]), str(d.get("name", "")), tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]),
                   float(scale), int(zero))


def quantize_input(x: np.ndarray, info: "TensorInfo | dict") -> np.ndarray:
    """Normalised float images -> the input tensor's dtype, with its scale and zero point when it is an integer."""
    info = info if isinstance(info, TensorInfo) else TensorInfo.from_detail(info)
    if info.dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[info.dtype]
        x = np.clip(np.round(np.asarray(x, np.float32) / info.scale + info.zero_point), lo, hi)
    return np.asarray(x).astype(info.dtype)


def dequantize_output(y: np.ndarray, info: "TensorInfo | dict") -> np.ndarray:
    """An output tensor -> float32 scores (integer outputs de-quantized with their scale and zero point)."""
    info = info if isinstance(info, TensorInfo) else TensorInfo.from_detail(info)
    if info.dtype in _INT_RANGES:
        y = (y.astype(np.float32) - info.zero_point) * info.scale
    return y.astype(np.float32)


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    image: str
    predictions: List[Prediction] = field(default_factory=list)
    ms: float = 0.0
    """Time of the interpreter's invoke() alone."""


class Runner:
    """An opened .tflite (or segment files in pipeline order): tensor details, batching, threads, and classification
    of images the model's way (normalisation, crop and labels from the sidecar beside the file, when it has one)."""

    def __init__(self, model: "ModelPath | Sequence[ModelPath]", *, labels: "str | Sequence[str] | None" = None,
                 threads: Optional[int] = None, batch: int = 1, prefer: Optional[str] = None) -> None:
        paths = [os.fspath(model)] if isinstance(model, (str, os.PathLike)) else [os.fspath(p) for p in model]
        if not paths:
            raise ModelFileError("no model file given")
        for path in paths:
            if not os.path.isfile(path):
                raise ModelFileError(f"{path}: no such model file")
        self.model_path, self.paths, self.threads = paths[0], paths, threads
        self.interpreter, self.backend = open_interpreter(paths if len(paths) > 1 else paths[0], threads, prefer=prefer)
        self.sidecar: Optional[Sidecar] = read_sidecar(self.model_path)
        self._refresh_details()
        self.batch = 1
        if batch > 1:
            self.set_batch(batch)
        self.labels = self._labels(labels)
        self._preprocessing: Optional[Preprocess] = None

    # tensors -------------------------------------------------------------------------------------------------------
    def _refresh_details(self) -> None:
        self.inputs = [TensorInfo.from_detail(d) for d in self.interpreter.get_input_details()]
        self.outputs = [TensorInfo.from_detail(d) for d in self.interpreter.get_output_details()]

    @property
    def input(self) -> TensorInfo:
        """The first (for a classifier, the only) input."""
        return self.inputs[0]

    @property
    def output(self) -> TensorInfo:
        return self.outputs[0]

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width) of an image input [N, H, W, C]."""
        shape = self.input.shape
        if len(shape) != 4 or shape[3] != 3:
            raise ModelFileError(f"{self.model_path}: input shape {list(shape)}, expected [1, H, W, 3]")
        return shape[1], shape[2]

    def set_batch(self, batch: int) -> int:
        """Resizes the input to `batch` images per invoke when the runtime and graph allow it (a pipeline, the Edge
        TPU or a fixed Reshape may not): returns the batch in force, `batch` or 1."""
        if not isinstance(batch, int) or batch < 1:
            raise ModelFileError(f"batch: expected an integer >= 1, got {batch!r}")
        resize = getattr(self.interpreter, "resize_tensor_input", None)
        if resize is None or self.backend.startswith("pycoral") or batch == self.batch:
            return self.batch
        shape, n_out = list(self.input.shape), self.output.shape[-1]
        try:
            resize(self.input.index, [batch, *shape[1:]], strict=False)
            self.interpreter.allocate_tensors()
            self._refresh_details()
            if self.output.shape[0] == batch and self.output.shape[-1] == n_out:
                self.batch = batch
                return batch
        except (RuntimeError, ValueError):
            pass
        resize(self.input.index, [1, *shape[1:]], strict=False)
        self.interpreter.allocate_tensors()
        self._refresh_details()
        self.batch = 1
        return 1

    def run(self, *tensors: np.ndarray) -> Tuple[List[np.ndarray], float]:
        """Raw tensors in (one per input, in the input's dtype and shape), raw output tensors out (copies), and the
        invoke time in ms."""
        for info, x in zip(self.inputs, tensors):
            self.interpreter.set_tensor(info.index, x)
        t0 = time.perf_counter()
        self.interpreter.invoke()
        ms = (time.perf_counter() - t0) * 1000.0
        return [np.array(self.interpreter.get_tensor(o.index)) for o in self.outputs], ms

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 images [N, H, W, 3] -> de-quantized float32 scores [N, C], `batch` images per invoke
        (the last short batch padded)."""
        out = []
        for start in range(0, len(x), self.batch):
            chunk = x[start:start + self.batch]
            n = len(chunk)
            if n < self.batch:  # resizing again would re-allocate every tensor
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            (y, *_), _ms = self.run(quantize_input(chunk, self.input))
            out.append(dequantize_output(y, self.output)[:n])
        return np.concatenate(out) if out else np.zeros((0, self.output.shape[-1]), np.float32)

    # images ----------------------------------------------------------------------------------------------------------
    @property
    def normalization(self) -> Any:
        return self._require_sidecar().normalization

    @property
    def preprocessing(self) -> Preprocess:
        """How this model wants its images (crop, resize, normalisation), from its sidecar."""
        if self._preprocessing is None:
            meta = self._require_sidecar()
            self._preprocessing = default_preprocess(self.size, meta.normalization,
                                                     is_imagenet_head(self.output.shape[-1]), meta.to_dict(),
                                                     meta.path or self.model_path)
        return self._preprocessing

    def _require_sidecar(self) -> Sidecar:
        if self.sidecar is None:
            raise ModelFileError(f"{sidecar_paths(self.model_path)[0]}: no such metadata file (written by "
                                 f"`edgetpu-models export` and `quantize`; it holds the input normalisation)")
        return self.sidecar

    def image_array(self, image: Any) -> np.ndarray:
        """What a user has (see the module docstring) -> the normalised float32 model input [H, W, 3]."""
        if isinstance(image, (str, os.PathLike)):
            return self.preprocessing.load(os.fspath(image))
        if isinstance(image, np.ndarray):
            return self._array_input(image)
        if _is_pil_image(image):
            from edgetpu_models.data import to_rgb8

            return self.preprocessing.apply(to_rgb8(image))
        raise DatasetError(f"image: expected a file path, a PIL image or a numpy array, got {type(image).__name__}")

    def _array_input(self, a: np.ndarray) -> np.ndarray:
        if a.dtype == np.uint8:
            if a.ndim == 3 and a.shape[2] == 1:
                a = a[:, :, 0]
            if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or min(a.shape[:2]) < 1:
                raise DatasetError(f"image: a uint8 array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got "
                                   f"{list(a.shape)}")
            from PIL import Image

            from edgetpu_models.data import to_rgb8

            return self.preprocessing.apply(to_rgb8(Image.fromarray(np.ascontiguousarray(a))))
        if np.issubdtype(a.dtype, np.floating):
            expect = (*self.size, 3)
            if a.shape != expect:
                raise DatasetError(f"image: a float array is the model's normalised input and must be "
                                   f"{list(expect)}, got {list(a.shape)} (give pixels as uint8 to have them resized)")
            return a.astype(np.float32)
        raise DatasetError(f"image: expected uint8 pixels or the normalised float input, got a {a.dtype} array")

    def preprocess(self, image: Any) -> np.ndarray:
        """An image (see `image_array`) -> the input tensor [1, H, W, 3] in the input's dtype."""
        return quantize_input(self.image_array(image)[None], self.input)

    def scores(self, tensor: np.ndarray) -> Tuple[np.ndarray, float]:
        """Class scores (de-quantized) for one preprocessed input tensor [1, H, W, 3], and the invoke time in ms."""
        if self.batch != 1:
            self.set_batch(1)
        (y, *_), ms = self.run(tensor)
        return dequantize_output(y, self.output)[0], ms

    def classify(self, image: Any, top_k: int = 5) -> ClassifyResult:
        """The `top_k` classes of one image (a path, PIL image or array: see the module docstring)."""
        y, ms = self.scores(self.preprocess(image))
        order = np.argsort(-y, kind="stable")[: max(1, top_k)]
        name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"<{type(image).__name__}>"
        return ClassifyResult(image=name, predictions=[Prediction(int(i), self.labels[i], float(y[i])) for i in order],
                              ms=ms)

    def _labels(self, labels: "str | Sequence[str] | None") -> List[str]:
        n_out = self.output.shape[-1]
        if isinstance(labels, str):
            names = list(read_labels(labels))
            if not names:
                raise ModelFileError(f"{labels}: empty labels file (expected one class name per line)")
        elif labels is not None:
            names = [str(x) for x in labels]
        elif self.sidecar is not None and self.sidecar.labels is not None:
            names = list(self.sidecar.labels)
        elif is_imagenet_head(n_out):  # an ImageNet head exported without a labels file: the shipped class names
            names = imagenet_class_names(n_out)
        else:
            names = [str(i) for i in range(n_out)]
        if len(names) != n_out:
            raise ModelFileError(f"labels: {len(names)} names for a model with {n_out} outputs")
        return names


def _is_pil_image(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a base dependency
        return False
    return isinstance(x, Image.Image)
