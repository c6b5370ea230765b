"""Full-integer TFLite export for the Edge TPU: int8 ops, uint8 (or int8) input/output, batch 1, static shape.

Beside `X.tflite` it writes `X.json` (model name, input size, normalisation, input/output quantization, labels file,
calibration source) and `X.labels.txt` when labels are given, so inference needs nothing else. Every file is written
atomically. The TFLite converter does the work; this module picks its settings, feeds calibration images, and reads
the result back (with our flatbuffer reader) to verify it is what the Edge TPU needs before anything is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import EdgeTPUModelsError, ModelFileError
from ..imagenet import class_names as imagenet_class_names, is_imagenet_head
from ..io_utils import write_bytes_atomic, write_text_atomic
from ..spec import Normalization
from .tflite_reader import TFLiteModel, read_tflite

IO_DTYPES = ("uint8", "int8")
MIN_CALIBRATION_IMAGES = 100
RANDOM_CALIBRATION_IMAGES = 100


class ExportError(EdgeTPUModelsError, ValueError):
    """The export cannot produce what was asked (bad options, no calibration data, converter left float ops)."""


@dataclass(frozen=True)
class ExportResult:
    path: str
    metadata_path: str
    labels_path: str | None
    size_bytes: int
    calibration: str | None
    """"dataset", "random", or None for a float export."""
    calibration_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "metadata_path": self.metadata_path, "labels_path": self.labels_path,
                "size_bytes": self.size_bytes, "calibration": self.calibration,
                "calibration_images": self.calibration_images}


def sidecar_paths(out_path: "str | os.PathLike[str]") -> tuple[str, str]:
    """(X.json, X.labels.txt) for X.tflite."""
    base = os.path.splitext(os.fspath(out_path))[0]
    return base + ".json", base + ".labels.txt"


def random_representative(shape: Sequence[int], normalization: Normalization, count: int = RANDOM_CALIBRATION_IMAGES,
                          seed: int = 0) -> Iterator[np.ndarray]:
    """Uniform random uint8 pixels, normalised: only a stand-in when no images are at hand (ranges, not accuracy)."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(normalization.mean, np.float32)
    std = np.asarray(normalization.std, np.float32)
    for _ in range(count):
        pixels = rng.integers(0, 256, size=(1, *shape), dtype=np.uint8).astype(np.float32)
        yield (pixels - mean) / std


def _single_images(batches: Iterable[Any], shape: tuple[int, int, int], counter: list[int]) -> Iterator[list[np.ndarray]]:
    """Splits float batches [N,H,W,3] into the [1,H,W,3] inputs the converter's calibration expects."""
    for batch in batches:
        if isinstance(batch, tuple) and len(batch) == 2:
            batch = batch[0]  # (images, labels) from a tf.data pipeline
        arr = np.asarray(batch, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
            raise ExportError(f"representative data: expected float32 batches [N,{shape[0]},{shape[1]},{shape[2]}], "
                              f"got shape {list(arr.shape)}")
        for image in arr:
            counter[0] += 1
            yield [image[None]]


def _static_input_shape(model: Any) -> tuple[int, int, int]:
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ExportError(f"model {model.name}: expected one image input [batch, H, W, C] with known H, W, C, "
                          f"got {model.input_shape}; build it with a fixed resolution")
    return shape  # type: ignore[return-value]


def convert(model: Any, *, int8: bool = True, io_dtype: str = "uint8", representative: Iterable[Any] | None = None,
            counter: list[int] | None = None) -> bytes:
    """Runs the TFLite converter on a tf_keras model with a batch-1, static-shape signature."""
    import tensorflow as tf

    shape = _static_input_shape(model)
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([1, *shape], tf.float32, name="input")])
    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if int8:
        counter = counter if counter is not None else [0]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _single_images(representative or (), shape, counter)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io_dtype)
    try:
        return converter.convert()
    except ExportError:
        raise
    except Exception as e:  # the converter raises ConverterError / RuntimeError with long multi-line logs
        first = next((ln for ln in str(e).splitlines() if "error" in ln.lower()), str(e).splitlines()[0] if str(e) else "")
        raise ExportError(f"model {model.name}: the TFLite converter failed: {first.strip()[:300]}") from None


def verify_int8(m: TFLiteModel, io_dtype: str) -> None:
    """What the Edge TPU needs: integer tensors everywhere, the requested I/O type, one image at a time."""
    floats = [t.name for t in m.tensors if t.dtype in ("FLOAT32", "FLOAT16", "FLOAT64")]
    if floats:
        raise ExportError(f"the converter left {len(floats)} float tensors (first: {floats[0]}): "
                          "the model has an op with no int8 kernel")
    for t in m.input_tensors() + m.output_tensors():
        if t.dtype != io_dtype.upper():
            raise ExportError(f"tensor {t.name}: expected {io_dtype.upper()}, the converter wrote {t.dtype}")
    for t in m.input_tensors():
        if t.shape_signature[:1] != (1,) or t.is_dynamic:
            raise ExportError(f"input {t.name}: expected a static batch-1 shape, got {list(t.shape_signature)}")


def _quant(t: Any) -> dict[str, Any]:
    if t.is_quantized:
        return {"dtype": t.dtype.lower(), "scale": t.scale[0], "zero_point": t.zero_point[0]}
    return {"dtype": t.dtype.lower(), "scale": None, "zero_point": None}


def export_tflite(model: Any, out_path: "str | os.PathLike[str]", *, int8: bool = True, io_dtype: str = "uint8",
                  representative: Iterable[Any] | None = None, random_calibration: bool = False,
                  model_name: str | None = None, normalization: Normalization | None = None,
                  labels: Sequence[str] | None = None) -> ExportResult:
    """Converts a tf_keras model (plain, fine-tuned or tfmot-QAT) to a TFLite file for the Edge TPU.

    `model` may also be a zoo name, spec file or .keras/.h5 path (built with random weights / loaded); its name,
    normalisation and labels then default to the ones found for it.

    `representative`: float32 batches [N,H,W,3] already normalised (N may be 1), e.g. `ImageFolderData.train`; at
    least MIN_CALIBRATION_IMAGES images are required. `random_calibration=True` calibrates on random pixels instead,
    which gives working but less accurate ranges; the JSON then says "calibration": "random".
    """
    if isinstance(model, (str, os.PathLike)):
        from .model_ref import load_model_ref

        loaded = load_model_ref(model)
        model, model_name = loaded.model, model_name or loaded.name
        normalization = normalization or loaded.normalization
        labels = labels if labels is not None else loaded.labels
    out_path = os.fspath(out_path)
    if not out_path.endswith(".tflite"):
        raise ExportError(f"{out_path}: expected a .tflite output file name")
    if io_dtype not in IO_DTYPES:
        raise ExportError(f"io_dtype: expected one of {', '.join(IO_DTYPES)}, got {io_dtype!r}")
    normalization = normalization or Normalization()
    shape = _static_input_shape(model)
    outputs = int(model.output_shape[-1]) if not isinstance(model.output_shape, list) else None
    if labels is None and outputs is not None and is_imagenet_head(outputs):
        labels = imagenet_class_names(outputs)  # an ImageNet head: its class names, shipped with the package
    if labels is not None:
        labels = [str(x) for x in labels]
        if outputs is not None and len(labels) != outputs:
            raise ExportError(f"labels: {len(labels)} names for a model with {outputs} outputs")
        if any(not x or "\n" in x for x in labels):
            raise ExportError("labels: every label must be a non-empty single line")

    calibration: str | None = None
    counter = [0]
    if int8:
        if representative is not None and random_calibration:
            raise ExportError("give either representative data or random_calibration=True, not both")
        if representative is None and not random_calibration:
            raise ExportError("int8 export needs calibration images (a dataset folder, >= "
                              f"{MIN_CALIBRATION_IMAGES} images) or, explicitly, random calibration")
        if random_calibration:
            representative, calibration = random_representative(shape, normalization), "random"
        else:
            calibration = "dataset"
    data = convert(model, int8=int8, io_dtype=io_dtype, representative=representative, counter=counter)
    if int8 and calibration == "dataset" and counter[0] < MIN_CALIBRATION_IMAGES:
        raise ExportError(f"representative data: {counter[0]} images, need at least {MIN_CALIBRATION_IMAGES} "
                          "real images for calibration")
    m = read_tflite(data)
    if int8:
        verify_int8(m, io_dtype)

    json_path, labels_path = sidecar_paths(out_path)
    (inp,), (out,) = m.input_tensors(), m.output_tensors()
    meta = {"model": model_name or model.name, "input_size": [int(shape[0]), int(shape[1])],
            "normalization": {"mean": [float(v) for v in normalization.mean],
                              "std": [float(v) for v in normalization.std]},
            "input": _quant(inp), "output": _quant(out),
            "labels": os.path.basename(labels_path) if labels is not None else None,
            "calibration": calibration}
    if labels is not None:
        write_text_atomic(labels_path, "".join(f"{x}\n" for x in labels))
    write_text_atomic(json_path, json.dumps(meta, indent=1) + "\n")
    write_bytes_atomic(out_path, data)
    return ExportResult(path=out_path, metadata_path=json_path, labels_path=labels_path if labels is not None else None,
                        size_bytes=len(data), calibration=calibration, calibration_images=counter[0])


def read_metadata(tflite_path: "str | os.PathLike[str]") -> dict[str, Any]:
    """The X.json written beside X.tflite (ModelFileError if missing or malformed)."""
    json_path, _ = sidecar_paths(tflite_path)
    try:
        with open(json_path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ModelFileError(f"{json_path}: no such metadata file (written by `edgetpu-models export`)") from None
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{json_path}: not a metadata JSON file ({e})") from None
    missing = [k for k in ("model", "input_size", "normalization", "input", "output") if k not in meta]
    if missing:
        raise ModelFileError(f"{json_path}: missing key {missing[0]!r}")
    return meta
