"""The one metadata format beside a model file: `X.json` (+ `X.labels.txt`) next to `X.tflite`, `X.keras` or `X.h5`.

It says what a model file needs to be used: the model it came from, its input size, its input normalisation, its
class names, and (for an int8 .tflite) the input/output quantization and calibration. `write_sidecar` is the one
writer and writes the model file, the JSON and the labels as one unit; `read_sidecar` is the one reader. Files
written by earlier versions still load: `X.meta.json` (old `quantize`), and a training run's `train_config.json` +
`labels.txt` beside its `model.keras`. A compiled `X_edgetpu.tflite` uses the sidecar of `X.tflite`, and a pipeline
segment `X_segment_1_of_2.tflite` the sidecar of the whole model `X.tflite`.

Paths named inside a sidecar (the labels file) are file names in the model's own folder; a sidecar cannot point
elsewhere.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from edgetpu_models.errors import ModelFileError
from edgetpu_models.io_utils import write_group_atomic
from edgetpu_models.spec import Normalization

MAX_SIDECAR_BYTES = 1 << 20
MAX_LABELS_BYTES = 16 << 20


@dataclass(frozen=True)
class Sidecar:
    model: str
    """The model it came from: a zoo name, a spec's name, or the training run's model reference."""
    normalization: Normalization = Normalization()
    labels: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Format-specific facts: for an int8 .tflite, "input"/"output" quantization and "calibration"."""
    path: str | None = None
    """Where it was read from; "spec ..." or a file path (for messages)."""
    labels_file: str | None = None
    """The labels file's name in the model's folder, as the JSON names it."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written beside the model."""
        return {"model": self.model,
                "input_size": list(self.input_size) if self.input_size else None,
                "normalization": {"mean": [float(v) for v in self.normalization.mean],
                                  "std": [float(v) for v in self.normalization.std]},
                "labels": self.labels_file,
                **self.extra}


def sidecar_paths(model_path: "str | os.PathLike[str]") -> tuple[str, str]:
    """(X.json, X.labels.txt) for X.tflite / X.keras / X.h5."""
    base = os.path.splitext(os.fspath(model_path))[0]
    return base + ".json", base + ".labels.txt"


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
    """Writes X.json (+ X.labels.txt) beside `model_path`, and the model file itself when `model_content` (bytes or a
    function that writes the path it is given) is given: all land or none. Returns the JSON's path."""
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


_MODEL_EXTENSIONS = (".tflite", ".keras", ".h5", ".hdf5")


def _says_the_same(json_path: str, intended: Sidecar) -> bool:
    """Whether the sidecar at `json_path` already says what `intended` would (model name aside): the same labels and
    normalisation, so rewriting it changes nothing for the other model file that shares it."""
    try:
        data = _read_json(json_path)
        found = _from_json(data, json_path) if data is not None else None
    except ModelFileError:
        return False
    return found is not None and found.labels == intended.labels and found.normalization == intended.normalization


def foreign_outputs(model_path: "str | os.PathLike[str]", intended: Sidecar | None = None) -> list[str]:
    """Existing files that writing a model to `model_path` with its sidecar would replace although they are not
    outputs of ours for that path: the model file itself when no sidecar describes it (a file the user put there),
    and the sidecar JSON and labels when another model file (X.keras beside X.tflite) shares them and `intended` (the
    sidecar about to be written) would change what they say for it. Without `intended` (not known yet) shared
    sidecars are not judged. `--force` replaces them anyway; `io_utils.check_destination` refuses them otherwise."""
    model_path = os.fspath(model_path)
    base, ext = os.path.splitext(model_path)
    json_path, labels_path = sidecar_paths(model_path)
    owners = [base + e for e in _MODEL_EXTENSIONS if e != ext.lower() and os.path.exists(base + e)]
    shared = owners and intended is not None and not _says_the_same(json_path, intended)
    foreign = [p for p in (json_path, labels_path) if shared and os.path.lexists(p)]
    if os.path.lexists(model_path) and not os.path.exists(json_path):
        foreign.insert(0, model_path)
    return foreign


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
    labels, labels_file = data.get("labels"), None
    if isinstance(labels, list):  # X.meta.json of earlier versions: the names inline
        labels = _check_labels(labels, path)
    elif labels is not None:
        labels_file = labels
        labels = read_labels(_labels_file_inside(folder, labels, path))
    extra = {k: v for k, v in data.items() if k not in ("model", "input_size", "normalization", "labels")}
    return Sidecar(model=model, normalization=_normalization(data, path), labels=labels,
                   input_size=_input_size(data, path), extra=extra, path=path, labels_file=labels_file)


def _from_training_run(model_path: str) -> Sidecar | None:
    """A `train`/`finetune` run folder of earlier versions: train_config.json + labels.txt beside model.keras."""
    from edgetpu_models.preprocessing import normalization_of

    folder = os.path.dirname(os.path.abspath(model_path))
    run = _read_json(os.path.join(folder, "train_config.json"))
    labels_path = os.path.join(folder, "labels.txt")
    labels = read_labels(labels_path) if os.path.isfile(labels_path) else None
    if run is None and labels is None:
        return None
    ref = run.get("model") if run else None
    name = os.path.splitext(os.path.basename(model_path))[0]
    try:
        norm = normalization_of(ref, run.get("variant")) if isinstance(ref, str) else None
    except Exception:  # noqa: BLE001 - the spec moved or was renamed: the model still loads, with defaults
        norm = None
    source = f"spec {ref}" if norm is not None else "default (no spec found beside the model file)"
    norm = norm or Normalization()
    return Sidecar(model=str(ref or name), normalization=norm, labels=labels, path=source)


def read_sidecar(model_path: "str | os.PathLike[str]") -> Sidecar | None:
    """The metadata beside a model file, or None when there is none. ModelFileError when it is malformed."""
    model_path = os.fspath(model_path)
    base = os.path.splitext(model_path)[0]
    candidates = [base + ".json", base + ".meta.json"]
    if base.endswith("_edgetpu"):  # the compiler writes X_edgetpu.tflite beside X.tflite
        base = base[: -len("_edgetpu")]
        candidates.append(base + ".json")
    whole = re.sub(r"_segment_\d+_of_\d+$", "", base)  # a pipeline segment (`partition`): the whole model's
    if whole != base:
        candidates.append(whole + ".json")
    for path in candidates:
        data = _read_json(path)
        if data is not None:
            return _from_json(data, path)
    if model_path.lower().endswith((".keras", ".h5", ".hdf5")):
        return _from_training_run(model_path)
    return None


def require_sidecar(model_path: "str | os.PathLike[str]") -> Sidecar:
    """`read_sidecar`, but a model file without metadata is a ModelFileError naming the file it looked for."""
    found = read_sidecar(model_path)
    if found is None:
        raise ModelFileError(f"{sidecar_paths(model_path)[0]}: no such metadata file (written by `edgetpu-models "
                             f"export` and `quantize`)")
    return found
