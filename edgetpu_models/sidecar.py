"""The sidecar: what a model file needs to be used, in a JSON file beside it. One per model FILE, named after the
whole file name: `model.tflite.json` beside `model.tflite`, `model.keras.json` beside `model.keras` (class names, when
there are any, in `model.tflite.labels.txt`, one a line, the format Coral's tools read).

Why the whole file name and not the stem: `model.keras` and `model.tflite` are different models (float or QAT vs int8
with its quantization), so they must not share `model.json`; with one sidecar per stem, `export model.keras --out
model.tflite --labels other.txt` rewrote the Keras model's labels and provenance. A file made from another one (a
compiled `X_edgetpu.tflite`, a pipeline segment `X_segment_1_of_2.tflite`) gets its own sidecar from the step that
makes it (`compile`, `partition`); nothing is looked up under another file's name.

It says the model it came from, its input size, its input normalisation, its class names, and format-specific facts
(`extra`: for an int8 .tflite the "input"/"output" quantization and the "calibration"; read them with
`Sidecar.extra_value`). `write_sidecar` is the one writer and writes the model file, the JSON and the labels as one
unit; `read_sidecar` is the one reader. A malformed sidecar is a ModelFileError naming the file and the field: there
is no fallback and no reader for other formats (nothing was ever released with another).

Paths named inside a sidecar (the labels file) are file names in the model's own folder; a sidecar cannot point
elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Sequence, TypeVar

from edgetpu_models.errors import ModelFileError
from edgetpu_models.io_utils import write_group_atomic
from edgetpu_models.spec import Normalization

MAX_SIDECAR_BYTES = 1 << 20
MAX_LABELS_BYTES = 16 << 20
SIDECAR_SUFFIX = ".json"
LABELS_SUFFIX = ".labels.txt"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Sidecar:
    model: str
    """The model it came from: a zoo name, a spec's name, or the training run's model reference."""
    normalization: Normalization = Normalization()
    labels: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Format-specific facts: for an int8 .tflite, "input"/"output" quantization and "calibration"; for a file made
    from another, "source" (that file's name). Read them with `extra_value`."""
    path: str | None = None
    """The JSON file it was read from (None for one not read from a file)."""
    labels_file: str | None = None
    """The labels file's name in the model's folder, as the JSON names it."""

    def extra_value(self, key: str, kind: type[_T]) -> _T | None:
        """`extra[key]` when it is a `kind` (e.g. `extra_value("calibration", str)`, `extra_value("input", dict)`),
        None when absent; ModelFileError naming the file when it holds something else."""
        value = self.extra.get(key)
        if value is None or isinstance(value, kind):
            return value
        raise ModelFileError(f"{self.path or self.model}: {key!r} must be a {kind.__name__}, got "
                             f"{type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written beside the model."""
        return {"model": self.model,
                "input_size": list(self.input_size) if self.input_size else None,
                "normalization": {"mean": [float(v) for v in self.normalization.mean],
                                  "std": [float(v) for v in self.normalization.std]},
                "labels": self.labels_file,
                **self.extra}


def sidecar_paths(model_path: "str | os.PathLike[str]") -> tuple[str, str]:
    """(X.tflite.json, X.tflite.labels.txt) for X.tflite; the same for X.keras, X.h5, ..."""
    path = os.fspath(model_path)
    return path + SIDECAR_SUFFIX, path + LABELS_SUFFIX


def _check_labels(labels: Sequence[str], where: str) -> tuple[str, ...]:
    out = tuple(str(x) for x in labels)
    if any(not x or "\n" in x for x in out):
        raise ModelFileError(f"{where}: labels: every label must be a non-empty single line")
    return out


def sidecar_files(model_path: "str | os.PathLike[str]", sidecar: Sidecar) -> dict[str, str]:
    """{path: text} of the sidecar JSON and labels file for a model file (what `write_sidecar` writes)."""
    json_path, labels_path = sidecar_paths(model_path)
    labels = _check_labels(sidecar.labels, json_path) if sidecar.labels is not None else None
    data = replace(sidecar, labels_file=os.path.basename(labels_path) if labels is not None else None).to_dict()
    files = {json_path: json.dumps(data, indent=1) + "\n"}
    if labels is not None:
        files[labels_path] = "".join(f"{x}\n" for x in labels)
    return files


def write_sidecar(model_path: "str | os.PathLike[str]", sidecar: Sidecar, model_content: Any = None) -> str:
    """Writes the sidecar (X.tflite.json, + X.tflite.labels.txt) beside `model_path`, and the model file itself when
    `model_content` (bytes or a function that writes the path it is given) is given: all land or none. Returns the
    JSON's path."""
    files: dict[str, Any] = {}
    if model_content is not None:
        files[os.fspath(model_path)] = model_content
    files.update(sidecar_files(model_path, sidecar))
    write_group_atomic(files)
    return sidecar_paths(model_path)[0]


def derived_sidecar(source_model: "str | os.PathLike[str]", **facts: Any) -> Sidecar | None:
    """The sidecar for a file made from `source_model` (a pipeline segment, a compiled model): the source's model name,
    input size, normalisation and labels, plus `facts` (e.g. segment="1/2"). The source's input/output quantization
    is left out: a segment's own tensors say theirs. None when the source has no sidecar."""
    source = read_sidecar(source_model)
    if source is None:
        return None
    extra = {k: v for k, v in source.extra.items() if k not in ("input", "output")}
    extra.update(derived_from=os.path.basename(os.fspath(source_model)), **facts)
    return replace(source, extra=extra, path=None, labels_file=None)


def foreign_outputs(model_path: "str | os.PathLike[str]") -> list[str]:
    """Existing files that writing a model to `model_path` with its sidecar would replace although they are not
    outputs of ours: the model file itself when no sidecar describes it (a file the user put there). A sidecar belongs
    to its one model file, so writing a model never touches another model's metadata. `--force` replaces them anyway;
    `io_utils.check_destination` refuses them otherwise."""
    model_path = os.fspath(model_path)
    if os.path.lexists(model_path) and not os.path.exists(sidecar_paths(model_path)[0]):
        return [model_path]
    return []


# ----------------------------------------------------------------------------------------------------------------------
# Reading

def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    try:
        if os.path.getsize(path) > MAX_SIDECAR_BYTES:
            raise ModelFileError(f"{path}: metadata file larger than {MAX_SIDECAR_BYTES} bytes")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable JSON metadata file ({str(e)[:200]})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    return data


def _normalization(data: dict[str, Any], path: str) -> Normalization:
    try:
        norm = data["normalization"]
        mean, std = (tuple(float(v) for v in norm[k]) for k in ("mean", "std"))
        if len(mean) != 3 or len(std) != 3 or not all(v > 0 and v < float("inf") for v in std):
            raise ValueError
        if not all(abs(v) < float("inf") for v in mean):
            raise ValueError
        return Normalization(mean=mean, std=std)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{path}: 'normalization' must be {{'mean': [3 numbers], 'std': [3 positive "
                             f"numbers]}}") from None


def _labels_file_inside(folder: str, name: Any, path: str) -> str:
    """The labels file a sidecar names: a file name in the model's folder, never a path that leaves it."""
    if not isinstance(name, str) or not name:
        raise ModelFileError(f"{path}: 'labels' must be a file name or null")
    target = os.path.realpath(os.path.join(folder, name))
    if os.path.isabs(name) or os.path.dirname(target) != os.path.realpath(folder):
        raise ModelFileError(f"{path}: 'labels' must name a file in the model's folder, got {name[:100]!r}")
    return target


def read_labels(path: str) -> tuple[str, ...]:
    """One class name a line."""
    try:
        if os.path.getsize(path) > MAX_LABELS_BYTES:
            raise ModelFileError(f"{path}: labels file larger than {MAX_LABELS_BYTES} bytes")
        with open(path, encoding="utf-8") as f:
            return tuple(line.rstrip("\r\n") for line in f if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: cannot read labels file ({e})") from None


def _input_size(data: dict[str, Any], path: str) -> tuple[int, int] | None:
    size = data.get("input_size")
    if size is None:
        return None
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16384 for v in size)):
        raise ModelFileError(f"{path}: 'input_size' must be [height, width] in pixels")
    return int(size[0]), int(size[1])


def _from_json(data: dict[str, Any], path: str) -> Sidecar:
    folder = os.path.dirname(os.path.abspath(path))
    model = data.get("model")
    if not isinstance(model, str):
        raise ModelFileError(f"{path}: 'model' must be a string")
    labels_file = data.get("labels")
    labels = read_labels(_labels_file_inside(folder, labels_file, path)) if labels_file is not None else None
    extra = {k: v for k, v in data.items() if k not in ("model", "input_size", "normalization", "labels")}
    return Sidecar(model=model, normalization=_normalization(data, path), labels=labels,
                   input_size=_input_size(data, path), extra=extra, path=path, labels_file=labels_file)


def read_sidecar(model_path: "str | os.PathLike[str]") -> Sidecar | None:
    """The sidecar of a model file (`X.tflite` -> `X.tflite.json`), or None when there is none. ModelFileError when
    it is malformed."""
    path = sidecar_paths(model_path)[0]
    data = _read_json(path)
    return _from_json(data, path) if data is not None else None


def require_sidecar(model_path: "str | os.PathLike[str]") -> Sidecar:
    """`read_sidecar`, but a model file without metadata is a ModelFileError naming the file it looked for."""
    found = read_sidecar(model_path)
    if found is None:
        raise ModelFileError(f"{sidecar_paths(model_path)[0]}: no such metadata file (written by `edgetpu-models "
                             f"export` and `quantize`)")
    return found
