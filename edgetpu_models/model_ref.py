"""THE answer to "what is MODEL?": one resolver for every command and library entry that takes a model.

A model reference is a zoo name, a spec file (.yaml/.yml), a `Spec` or spec mapping, a Keras model file
(.keras/.h5/.hdf5) or an in-memory tf_keras model, or an int8 TFLite model (.tflite path or its bytes). `resolve_model`
turns any of them into a `ModelRef` that says which of the three kinds it is (spec, keras, tflite) and carries what
that kind needs; consumers dispatch on `ref.kind`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from edgetpu_models.errors import ModelFileError, SpecError, UnknownModelError
from edgetpu_models.keras_io import KERAS_SUFFIXES
from edgetpu_models.spec import Spec, load_spec, spec_from_dict
from edgetpu_models.zoo import ZOO, zoo_spec

SPEC_SUFFIXES = (".yaml", ".yml")
TFLITE_SUFFIXES = (".tflite",)
MODEL_FILE_SUFFIXES = SPEC_SUFFIXES + KERAS_SUFFIXES + TFLITE_SUFFIXES
Kind = Literal["spec", "keras", "tflite"]


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference. `spec`/`variant` for kind "spec"; `path` and/or `keras_model` for "keras";
    `path` and/or `data` for "tflite". `zoo_name` is set when the reference was a zoo name."""

    kind: Kind
    spec: Spec | None = None
    variant: str | None = None
    path: str | None = None
    data: bytes | None = None
    keras_model: Any = None
    zoo_name: str | None = None

    @property
    def is_file(self) -> bool:
        """A saved model file (Keras or .tflite): its shapes are fixed."""
        return self.kind != "spec" and self.path is not None

    @property
    def name(self) -> str:
        """What to call the model in messages and outputs."""
        if self.zoo_name:
            return self.zoo_name
        if self.path is not None:
            return os.path.splitext(os.path.basename(self.path))[0]
        if self.spec is not None:
            return self.spec.name
        return getattr(self.keras_model, "name", "model")

    def no_overrides(self, resolution: int | None, variant: str | None) -> None:
        """A saved model has fixed shapes: --resolution/--variant apply to specs only."""
        if self.kind != "spec" and (resolution is not None or variant is not None):
            raise ModelFileError(f"{self.path or self.name}: --resolution/--variant apply to specs only; a model file "
                                 f"has fixed shapes")

    def tflite_bytes(self) -> bytes:
        """The .tflite flatbuffer (read from the file for a path)."""
        if self.kind != "tflite":
            raise ModelFileError(f"{self.name}: not a .tflite model")
        if self.data is not None:
            return self.data
        try:
            with open(self.path, "rb") as f:  # type: ignore[arg-type]
                return f.read()
        except OSError as e:
            raise ModelFileError(f"{self.path}: cannot read .tflite file ({e.strerror})") from None


def _is_keras_model(obj: Any) -> bool:
    return hasattr(obj, "layers") and hasattr(obj, "input_shape")


def _resolve_path(path: str, variant: str | None) -> ModelRef:
    low = path.lower()
    if path in ZOO:
        spec, zoo_variant = zoo_spec(path)
        return ModelRef("spec", spec=spec, variant=variant or zoo_variant, zoo_name=path)
    if low.endswith(TFLITE_SUFFIXES + KERAS_SUFFIXES):
        if not os.path.isfile(path):
            raise ModelFileError(f"{path}: no such file")
        return ModelRef("tflite" if low.endswith(TFLITE_SUFFIXES) else "keras", path=path)
    if low.endswith(SPEC_SUFFIXES) or os.path.sep in path or os.path.exists(path):
        if not os.path.exists(path):
            raise SpecError(f"{path}: no such spec file")
        return ModelRef("spec", spec=load_spec(path), variant=variant, path=path)
    raise UnknownModelError(f"{path}: not a zoo model (available: {', '.join(ZOO)}) nor a model file "
                            f"({', '.join(MODEL_FILE_SUFFIXES)})")


def resolve_model(ref: Any, variant: str | None = None) -> ModelRef:
    """Any model reference -> ModelRef. An explicit `variant` wins over a zoo entry's own.

    Raises UnknownModelError for a name that is neither a zoo model nor a file, SpecError for a bad spec,
    ModelFileError for a missing model file or an object that is no model."""
    if isinstance(ref, ModelRef):
        return ref
    if isinstance(ref, Spec):
        return ModelRef("spec", spec=ref, variant=variant)
    if isinstance(ref, Mapping):
        return ModelRef("spec", spec=spec_from_dict(ref), variant=variant)
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return ModelRef("tflite", data=bytes(ref))
    if isinstance(ref, (str, os.PathLike)):
        return _resolve_path(os.fspath(ref), variant)
    if _is_keras_model(ref):
        return ModelRef("keras", keras_model=ref)
    raise ModelFileError(f"{type(ref).__name__}: expected a zoo name, spec, Keras model, "
                         f"{'/'.join(MODEL_FILE_SUFFIXES)} file or .tflite bytes")


def resolve_spec(ref: Any, variant: str | None = None) -> tuple[Spec, str | None]:
    """The spec and variant of a reference that must be a spec (zoo name, spec file, Spec or mapping)."""
    resolved = resolve_model(ref, variant)
    if resolved.kind != "spec":
        raise SpecError(f"{resolved.path or resolved.name}: expected a zoo name or spec file (.yaml), got a "
                        f"{resolved.kind} model")
    return resolved.spec, resolved.variant  # type: ignore[return-value]
