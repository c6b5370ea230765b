"""A tf_keras model for any model reference, with what using it needs: built from a zoo name or spec (random or
given weights), or loaded from a .keras/.h5 file with the normalisation and class names of its sidecar."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from edgetpu_models.errors import ModelFileError
from edgetpu_models.keras_io import load_keras
from edgetpu_models.model_ref import resolve_model
from edgetpu_models.preprocessing import normalization_of
from edgetpu_models.seg_graph import is_segmentation
from edgetpu_models.sidecar import Sidecar, read_sidecar
from edgetpu_models.spec import Normalization
from edgetpu_models.zoo import ZOO


@dataclass
class LoadedModel:
    model: Any
    name: str
    normalization: Normalization
    labels: list[str] | None
    path: str | None = None
    """The model file, when MODEL was one."""
    normalization_source: str = "spec"


def _file_sidecar(path: str, model: Any) -> Sidecar:
    """The sidecar of a model file; without one, a zoo model's own normalisation (its Keras name) or the default."""
    found = read_sidecar(path)
    if found is not None:
        return found
    name = os.path.splitext(os.path.basename(path))[0]
    if model.name in ZOO:  # a zoo model saved without metadata: its own (variant's) normalisation
        return Sidecar(model=name, normalization=normalization_of(model.name), path=f"spec {model.name}")
    return Sidecar(model=name, path="default (no spec found beside the model file)")


def _loaded_file(path: str, resolution: int | None, trust_code: bool | None) -> LoadedModel:
    model = load_keras(path, trust_code=trust_code)
    if resolution is not None and tuple(model.input_shape[1:3]) != (resolution, resolution):
        raise ModelFileError(f"{path}: the model takes {model.input_shape[1]}x{model.input_shape[2]} images, "
                             f"--resolution {resolution} cannot change a saved model")
    meta = _file_sidecar(path, model)
    labels = list(meta.labels) if meta.labels is not None else None
    outputs = model.output_shape[-1] if not isinstance(model.output_shape, list) else None
    if labels is not None and outputs is not None and len(labels) != outputs:
        labels = None
    name = meta.model if meta.path and meta.path.endswith(".json") else os.path.splitext(os.path.basename(path))[0]
    return LoadedModel(model, name, meta.normalization, labels, path=path,
                       normalization_source=meta.path or "default")


def load_model_ref(ref: Any, variant: str | None = None, resolution: int | None = None,
                   classes: int | None = None, *, trust_code: bool | None = None) -> LoadedModel:
    """Builds (zoo name / spec, random weights) or loads (.keras/.h5/.hdf5) a tf_keras model."""
    if is_segmentation(ref):  # zoo segmentation model, "name" or "name@finaliser"
        from edgetpu_models.segmentation import build_segmentation_model, preprocess_normalization

        model = build_segmentation_model(ref, classes=classes, resolution=resolution)
        return LoadedModel(model, ref.replace("@", "_").replace(",", "_"), preprocess_normalization(ref), None,
                           normalization_source=f"segmentation spec {ref}")
    resolved = resolve_model(ref, variant)
    if resolved.kind == "keras" and resolved.path is not None:
        return _loaded_file(resolved.path, resolution, trust_code)
    if resolved.kind != "spec":
        raise ModelFileError(f"{resolved.path or resolved.name}: expected a zoo name, spec or Keras model file, "
                             f"got a {resolved.kind} model")
    from edgetpu_models.builder import build_model
    spec = resolved.spec
    model = build_model(resolved, resolution=resolution, classes=classes or 1000)
    name = resolved.zoo_name or spec.name  # type: ignore[union-attr]
    norm = normalization_of(spec, resolved.variant)  # a variant may normalise differently (MobilenetEdgeTPU-V2-M)
    return LoadedModel(model, name, norm, None, normalization_source=f"spec {spec.name}")  # type: ignore[union-attr]
