"""MODEL arguments of the quantize/export commands: a zoo name, a spec file, or a .keras/.h5 model file.

For a model file the normalisation and class names come from what was written beside it: `X.meta.json` (written by
`edgetpu-models quantize`) or the training run's `train_config.json` and `labels.txt` (written by `train`/`finetune`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ModelFileError
from ..spec import Normalization

MODEL_FILE_SUFFIXES = (".keras", ".h5")


@dataclass
class LoadedModel:
    model: Any
    name: str
    normalization: Normalization
    labels: list[str] | None
    path: str | None = None
    """The model file, when MODEL was one."""
    normalization_source: str = "spec"


def is_model_file(ref: Any) -> bool:
    return isinstance(ref, (str, os.PathLike)) and os.fspath(ref).endswith(MODEL_FILE_SUFFIXES)


def meta_path(model_path: "str | os.PathLike[str]") -> str:
    """X.meta.json beside X.keras."""
    return os.path.splitext(os.fspath(model_path))[0] + ".meta.json"


def write_model_meta(model_path: "str | os.PathLike[str]", name: str, normalization: Normalization,
                     labels: list[str] | None) -> str:
    from ..io_utils import write_text_atomic

    path = meta_path(model_path)
    write_text_atomic(path, json.dumps({"model": name, "normalization": {"mean": list(normalization.mean),
                                                                         "std": list(normalization.std)},
                                        "labels": labels}, indent=1) + "\n")
    return path


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable JSON file ({e})") from None
    return data if isinstance(data, dict) else None


def _normalization_from(data: dict, path: str) -> Normalization:
    try:
        norm = data["normalization"]
        return Normalization(mean=tuple(float(v) for v in norm["mean"]), std=tuple(float(v) for v in norm["std"]))
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{path}: 'normalization' must be {{'mean': [3 numbers], 'std': [3 numbers]}}") from None


def _file_context(path: str, model: Any) -> tuple[str, Normalization, list[str] | None, str]:
    """(name, normalization, labels, where the normalisation came from) for a model file."""
    from ..preprocessing import normalization_of
    from ..zoo import ZOO

    name = os.path.splitext(os.path.basename(path))[0]
    meta_file = meta_path(path)
    meta = _read_json(meta_file)
    if meta is not None:
        labels = meta.get("labels")
        return (str(meta.get("model") or name), _normalization_from(meta, meta_file),
                [str(x) for x in labels] if isinstance(labels, list) else None, meta_file)
    folder = os.path.dirname(os.path.abspath(path))
    labels = None
    labels_file = os.path.join(folder, "labels.txt")
    if os.path.exists(labels_file):
        with open(labels_file, encoding="utf-8") as f:
            labels = [ln.strip() for ln in f if ln.strip()]
    run = _read_json(os.path.join(folder, "train_config.json"))
    ref = run.get("model") if run else None
    if ref is None and model.name in ZOO:
        ref = model.name
    if ref is not None:
        try:
            return name, normalization_of(ref), labels, f"spec {ref}"
        except Exception:  # the spec moved or was renamed: fall through to the default
            pass
    return name, Normalization(), labels, "default (no spec found beside the model file)"


def load_model_ref(ref: "str | os.PathLike[str]", variant: str | None = None, resolution: int | None = None,
                   classes: int | None = None) -> LoadedModel:
    """Builds (zoo name / spec, random weights unless a file is given) or loads (.keras/.h5) a tf_keras model."""
    from ..quantize.qat import load_model

    if is_model_file(ref):
        path = os.fspath(ref)
        model = load_model(path)
        if resolution is not None and tuple(model.input_shape[1:3]) != (resolution, resolution):
            raise ModelFileError(f"{path}: the model takes {model.input_shape[1]}x{model.input_shape[2]} images, "
                                 f"--resolution {resolution} cannot change a saved model")
        name, norm, labels, source = _file_context(path, model)
        outputs = model.output_shape[-1] if not isinstance(model.output_shape, list) else None
        if labels is not None and outputs is not None and len(labels) != outputs:
            labels = None
        return LoadedModel(model, name, norm, labels, path=path, normalization_source=source)
    from ..builder import build_model
    from ..preprocessing import normalization_of
    from ..zoo import resolve_model_ref

    spec, chosen = resolve_model_ref(ref, variant)
    model = build_model(ref, variant, resolution=resolution, classes=classes or 1000)
    name = os.fspath(ref) if not os.fspath(ref).endswith((".yaml", ".yml")) else spec.name
    norm = normalization_of(spec, chosen)  # a variant may normalise differently (MobilenetEdgeTPU-V2-M)
    return LoadedModel(model, name, norm, None, normalization_source=f"spec {spec.name}")
