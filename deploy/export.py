"""Full-integer TFLite export for the Edge TPU: int8 ops, uint8 (or int8) input/output, batch 1, static shape.

Beside `X.tflite` it writes its sidecar `X.tflite.json` (model name, input size, normalisation, input/output
quantization, labels file, calibration source) and `X.tflite.labels.txt` when labels are given, so inference needs
nothing else. Every file is written atomically. The TFLite converter does the work; this module picks its settings,
feeds calibration images, and reads
the result back (with our flatbuffer reader) to verify it is what the Edge TPU needs before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from edgetpu_models.imagenet import class_names as imagenet_class_names
from edgetpu_models.imagenet import is_imagenet_head
from edgetpu_models.io_utils import check_destination
from edgetpu_models.quantize.convert import (
    IO_DTYPES,
    MIN_CALIBRATION_IMAGES,
    ExportError,
    convert,
    random_representative,
    static_input_shape,
)
from edgetpu_models.sidecar import Sidecar, foreign_outputs, sidecar_paths, write_sidecar
from edgetpu_models.spec import Normalization
from edgetpu_models.tflite_reader import TFLiteModel, read_tflite


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


def _checked_labels(model: Any, labels: Sequence[str] | None) -> list[str] | None:
    """The class names to write beside the model; an ImageNet head without any gets the shipped ImageNet names."""
    outputs = int(model.output_shape[-1]) if not isinstance(model.output_shape, list) else None
    if labels is None and outputs is not None and is_imagenet_head(outputs):
        labels = imagenet_class_names(outputs)
    if labels is None:
        return None
    labels = [str(x) for x in labels]
    if outputs is not None and len(labels) != outputs:
        raise ExportError(f"labels: {len(labels)} names for a model with {outputs} outputs")
    if any(not x or "\n" in x for x in labels):
        raise ExportError("labels: every label must be a non-empty single line")
    return labels


def _calibration(int8: bool, representative: Iterable[Any] | None, random_calibration: bool,
                 shape: tuple[int, int, int], normalization: Normalization) -> tuple[Any, str | None]:
    """(representative data, what the sidecar calls it: "dataset", "random", or None for a float export)."""
    if not int8:
        return representative, None
    if representative is not None and random_calibration:
        raise ExportError("give either representative data or random_calibration=True, not both")
    if representative is None and not random_calibration:
        raise ExportError("int8 export needs calibration images (a dataset folder, >= "
                          f"{MIN_CALIBRATION_IMAGES} images) or, explicitly, random calibration")
    if random_calibration:
        return random_representative(shape, normalization), "random"
    return representative, "dataset"


def export_tflite(model: Any, out_path: "str | os.PathLike[str]", *, int8: bool = True, io_dtype: str = "uint8",
                  representative: Iterable[Any] | None = None, random_calibration: bool = False,
                  model_name: str | None = None, normalization: Normalization | None = None,
                  labels: Sequence[str] | None = None, force: bool = False) -> ExportResult:
    """Converts a tf_keras model (plain, fine-tuned or tfmot-QAT) to a TFLite file for the Edge TPU.

    `model` may also be a zoo name, spec file or .keras/.h5 path (built with random weights / loaded); its name,
    normalisation and labels then default to the ones found for it.

    `representative`: float32 batches [N,H,W,3] already normalised (N may be 1), e.g. `ImageFolderData.train`; at
    least MIN_CALIBRATION_IMAGES images are required. `random_calibration=True` calibrates on random pixels instead,
    which gives working but less accurate ranges; the JSON then says "calibration": "random". `force`: replace existing
files that are not earlier exports to `out_path` (a file without a sidecar, another model's sidecar).
    """
    if isinstance(model, (str, os.PathLike)):
        from edgetpu_models.model_io import open_model

        loaded = open_model(model)
        model, model_name = loaded.model, model_name or loaded.name
        normalization = normalization or loaded.normalization
        labels = labels if labels is not None else loaded.labels
    out_path = os.fspath(out_path)
    if not out_path.endswith(".tflite"):
        raise ExportError(f"{out_path}: expected a .tflite output file name")
    if io_dtype not in IO_DTYPES:
        raise ExportError(f"io_dtype: expected one of {', '.join(IO_DTYPES)}, got {io_dtype!r}")
    normalization = normalization or Normalization()
    shape = static_input_shape(model)
    labels = _checked_labels(model, labels)
    check_destination(out_path, foreign=foreign_outputs(out_path), force=force)  # before converting
    representative, calibration = _calibration(int8, representative, random_calibration, shape, normalization)
    counter = [0]
    data = convert(model, int8=int8, io_dtype=io_dtype, representative=representative, counter=counter)
    if int8 and calibration == "dataset" and counter[0] < MIN_CALIBRATION_IMAGES:
        raise ExportError(f"representative data: {counter[0]} images, need at least {MIN_CALIBRATION_IMAGES} "
                          "real images for calibration")
    m = read_tflite(data)
    if int8:
        verify_int8(m, io_dtype)

    json_path, labels_path = sidecar_paths(out_path)
    (inp,), (out,) = m.input_tensors(), m.output_tensors()
    meta = Sidecar(model=model_name or model.name, normalization=normalization,
                   labels=tuple(labels) if labels is not None else None, input_size=(int(shape[0]), int(shape[1])),
                   extra={"input": _quant(inp), "output": _quant(out), "calibration": calibration})
    try:
        write_sidecar(out_path, meta, model_content=data)
    except OSError as e:
        raise ExportError(f"{out_path}: cannot write the export ({e.strerror or e}); nothing was written") from None
    return ExportResult(path=out_path, metadata_path=json_path, labels_path=labels_path if labels is not None else None,
                        size_bytes=len(data), calibration=calibration, calibration_images=counter[0])
