"""THE way to resolve, open and save a model, for every command and library entry that takes one.

- `resolve_model(ref)`: any model reference -> `ModelRef` saying which of three kinds it is (spec, keras, tflite) and
  carrying what that kind needs. A reference is a zoo name, a spec file (.yaml/.yml), a `Spec` or spec mapping, a Keras
  model file (.keras/.h5/.hdf5) or an in-memory tf_keras model, or an int8 TFLite model (.tflite path or its bytes).
  Resolving imports no TensorFlow. References that must be specs resolve through `zoo.resolve_spec`, which this
  uses for them too (it lives in the core, below the builder, which needs it).
- `open_model(ref)`: a tf_keras model with what using it needs (`OpenedModel`: normalisation, class names, where the
  normalisation came from): built from a zoo name or spec (random weights), or loaded from a .keras/.h5 file with the
  normalisation and class names of that file's own sidecar (`sidecar.py`).
- `save_model(model, path, sidecar)`: the one saver: the Keras file (plain or quantization-aware) and its sidecar,
  written as one unit. `load_keras(path)` reads a Keras file alone.

Reading a Keras file runs no code from it unless the user says so: Keras' safe mode protects only the `.keras` format;
an `.h5` file can carry a `Lambda` layer's marshalled Python bytecode, which `load_model` runs. So before anything is
deserialised, the file's model config is read as plain JSON and every class it names is checked: built-in tf_keras
classes, tfmot's quantization classes and this package's registered objects load; a `Lambda` layer or any other
custom object is refused unless `trust_code=True` (`--trust-model-code` on the command line).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading
import zipfile
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Mapping

from edgetpu_models.builder import build_model
from edgetpu_models.errors import ModelFileError, UsageError
from edgetpu_models.seg_graph import is_segmentation
from edgetpu_models.sidecar import Sidecar, read_sidecar, write_sidecar
from edgetpu_models.spec import Normalization, Spec
from edgetpu_models.zoo import (
    KERAS_SUFFIXES,
    MODEL_FILE_SUFFIXES,
    TFLITE_SUFFIXES,
    ZOO,
    normalization_of,
    resolve_spec,
)

CODE_LAYERS = frozenset({"Lambda"})
"""Layers whose config holds serialised Python (marshalled bytecode or source)."""
_ALWAYS_SAFE = frozenset({"Functional", "Sequential", "Model", "InputLayer", "__tensor__", "__numpy__", "__lambda__",
                          "TFOpLambda", "SlicingOpLambda", "__typespec__", "TensorShape", "DTypePolicy", "Policy"})
_TRUST_HINT = "pass --trust-model-code (trust_code=True) only if you trust where the file came from"


def _config_text(path: str) -> str | None:
    """The model config JSON stored in a .keras zip or an HDF5 file (None when the file has none)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return z.read("config.json").decode("utf-8") if "config.json" in z.namelist() else None
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        return None
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _class_names(node: Any) -> Iterator[str]:
    """Every class a model config names: its registered name (`package>Class`) where it has one."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name, registered = item.get("class_name"), item.get("registered_name")
            if isinstance(registered, str) and registered.startswith("edgetpu_models>"):
                yield registered
            elif isinstance(name, str):
                yield name
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _is_known_class(name: str) -> bool:
    """A class tf_keras, tfmot or this package provides (never code from the file)."""
    if name in _ALWAYS_SAFE or name.startswith("edgetpu_models>"):
        return True
    import tf_keras as keras

    modules = (keras.layers, keras.initializers, keras.regularizers, keras.constraints, keras.optimizers,
               keras.losses, keras.metrics, keras.optimizers.schedules, keras.activations)
    if any(isinstance(getattr(m, name, None), type) for m in modules):
        return True
    import tensorflow_model_optimization as tfmot

    q = tfmot.quantization.keras
    return any(isinstance(getattr(m, name, None), type) for m in (q, q.quantizers, q.default_8bit)) or name in (
        "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer", "QuantizeAwareActivation", "NoOpActivation",
        "Default8BitQuantizeConfig", "Default8BitConvQuantizeConfig", "Default8BitOutputQuantizeConfig",
        "NoOpQuantizeConfig", "Default8BitActivationQuantizeConfig")


def check_no_code(path: str) -> None:
    """Raises ModelFileError when the file's model config names a Lambda layer or an unknown custom class."""
    try:
        text = _config_text(path)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path}: not a readable Keras model ({str(e).splitlines()[0][:200]})") from None
    if text is None:
        return  # a weights-only file: nothing to deserialise, Keras reports what it is
    try:
        config = json.loads(text)
    except ValueError:
        raise ModelFileError(f"{path}: not a readable Keras model (its model config is not JSON)") from None
    for name in _class_names(config):
        if name in CODE_LAYERS:
            raise ModelFileError(f"{path}: holds a {name} layer, i.e. serialised Python code that loading would "
                                 f"run; {_TRUST_HINT}")
        if not _is_known_class(name):
            raise ModelFileError(f"{path}: uses custom object {name[:80]!r}, which is not part of tf_keras, tfmot or "
                                 f"edgetpu_models; loading it could run code from the file; {_TRUST_HINT}")


def is_qat_model(model: Any) -> bool:
    return any(type(layer).__name__ in ("QuantizeWrapperV2", "QuantizeWrapper", "QuantizeLayer")
               for layer in getattr(model, "layers", ()))


_PATCH_LOCK = threading.Lock()


def _own_variables(wrapper: Any) -> list:
    """A wrapper's variables that its inner layer does not own (quantizer ranges, optimizer step), deduplicated."""
    inner = {id(v) for v in wrapper.layer.weights}
    seen: set[int] = set()
    out = []
    for v in list(wrapper._trainable_weights) + list(wrapper._non_trainable_weights):
        if id(v) in inner or id(v) in seen:
            continue
        seen.add(id(v))
        out.append(v)
    return out


@contextlib.contextmanager
def tfmot_serialization() -> Iterator[None]:
    """Makes tfmot's wrappers save and load their own variables consistently in the `.keras` format (the inner layer
    saves its own), and stops QuantizeLayer from being built twice on load."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    def save_own(self, store):
        for i, v in enumerate(_own_variables(self)):
            store[f"{i}"] = v.numpy()

    def load_own(self, store):
        own = _own_variables(self)
        if len(store.keys()) != len(own):
            raise ValueError(f"layer {self.name}: expected {len(own)} variables, the file has {len(store.keys())}")
        for i, v in enumerate(own):
            v.assign(store[f"{i}"])

    original_build = QuantizeLayer.build

    def build_once(self, input_shape):
        if self.built:
            return
        original_build(self, input_shape)
        self.built = True

    with _PATCH_LOCK:
        saved = (QuantizeWrapper.save_own_variables, QuantizeWrapper.load_own_variables, QuantizeLayer.build)
        QuantizeWrapper.save_own_variables, QuantizeWrapper.load_own_variables = save_own, load_own
        QuantizeLayer.build = build_once
        try:
            with tfmot.quantization.keras.quantize_scope():
                yield
        finally:
            QuantizeWrapper.save_own_variables, QuantizeWrapper.load_own_variables, QuantizeLayer.build = saved


_TRUST_MODEL_CODE = contextvars.ContextVar("trust_model_code", default=False)


@contextlib.contextmanager
def trusting_model_code(trust: bool = True) -> Iterator[None]:
    """Within the block, `load_keras` runs code stored in model files (the CLI's --trust-model-code)."""
    token = _TRUST_MODEL_CODE.set(trust)
    try:
        yield
    finally:
        _TRUST_MODEL_CODE.reset(token)


def load_keras(path: "str | os.PathLike[str]", *, trust_code: bool | None = None) -> Any:
    """Loads a .keras/.h5/.hdf5 model, plain or quantization-aware, without compiling it.

    ModelFileError when the file is missing, unreadable, or would run code from the file, unless `trust_code` (default:
    whether the caller is inside `trusting_model_code()`)."""
    trust_code = _TRUST_MODEL_CODE.get() if trust_code is None else trust_code
    path = os.fspath(path)
    if not path.lower().endswith(KERAS_SUFFIXES):
        raise ModelFileError(f"{path}: expected a Keras model file ({', '.join(KERAS_SUFFIXES)})")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    if not trust_code:
        check_no_code(path)
    import tf_keras as keras

    try:
        with tfmot_serialization():
            return keras.models.load_model(path, compile=False, safe_mode=not trust_code)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(f"{path}: not a readable Keras model ({first[:200]})") from None


def _write_keras(model: Any, path: str) -> None:
    """Writes a plain or quantization-aware model to `path` (a temporary name: `save_model` renames it in place)."""
    if is_qat_model(model):
        with tfmot_serialization():
            model.save(path)
    else:
        model.save(path)


# ---------------------------------------------------------------------------------------------------------------------
# Resolving

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
            raise UsageError(f"{self.path or self.name}: --resolution/--variant apply to specs only; a model file "
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
    if low.endswith(TFLITE_SUFFIXES + KERAS_SUFFIXES):
        if not os.path.isfile(path):
            raise ModelFileError(f"{path}: no such file")
        return ModelRef("tflite" if low.endswith(TFLITE_SUFFIXES) else "keras", path=path)
    spec, spec_variant = resolve_spec(path, variant)  # a zoo name or a spec file
    return ModelRef("spec", spec=spec, variant=spec_variant, zoo_name=path if path in ZOO else None,
                    path=None if path in ZOO else path)


def resolve_model(ref: Any, variant: str | None = None) -> ModelRef:
    """Any model reference -> ModelRef. An explicit `variant` wins over a zoo entry's own.

    Raises UnknownModelError for a name that is neither a zoo model nor a file, SpecError for a bad spec,
    ModelFileError for a missing model file or an object that is no model."""
    if isinstance(ref, ModelRef):
        return ref
    if isinstance(ref, (Spec, Mapping)):
        return ModelRef("spec", *resolve_spec(ref, variant))
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return ModelRef("tflite", data=bytes(ref))
    if isinstance(ref, (str, os.PathLike)):
        return _resolve_path(os.fspath(ref), variant)
    if _is_keras_model(ref):
        return ModelRef("keras", keras_model=ref)
    raise ModelFileError(f"{type(ref).__name__}: expected a zoo name, spec, Keras model, "
                         f"{'/'.join(MODEL_FILE_SUFFIXES)} file or .tflite bytes")


# ---------------------------------------------------------------------------------------------------------------------
# Opening and saving

@dataclass
class OpenedModel:
    """A tf_keras model and what using it needs."""

    model: Any
    name: str
    """The zoo name, the spec's name, or (a file) the model its sidecar names, else the file's stem."""
    normalization: Normalization
    labels: list[str] | None
    path: str | None = None
    """The model file, when the reference was one."""
    normalization_source: str = "spec"
    """Where the normalisation came from, for messages: "spec NAME", a sidecar's path, "zoo model NAME (no sidecar)"
    or "default (no sidecar)"."""


def _file_normalization(path: str, model: Any, meta: Sidecar | None) -> tuple[Normalization, str]:
    """A Keras file's normalisation and where it came from: its sidecar; without one, a zoo model's own (its Keras
    name is the zoo name), else the default, said as such (`export` prints it)."""
    if meta is not None:
        return meta.normalization, meta.path or path
    if model.name in ZOO:
        return normalization_of(model.name), f"zoo model {model.name} (no sidecar)"
    return Normalization(), "default (no sidecar)"


def _open_file(path: str, resolution: int | None, trust_code: bool | None) -> OpenedModel:
    model = load_keras(path, trust_code=trust_code)
    if resolution is not None and tuple(model.input_shape[1:3]) != (resolution, resolution):
        raise ModelFileError(f"{path}: the model takes {model.input_shape[1]}x{model.input_shape[2]} images, "
                             f"--resolution {resolution} cannot change a saved model")
    meta = read_sidecar(path)
    labels = list(meta.labels) if meta is not None and meta.labels is not None else None
    outputs = model.output_shape[-1] if not isinstance(model.output_shape, list) else None
    if labels is not None and outputs is not None and len(labels) != outputs:
        raise ModelFileError(f"{meta.path}: names {len(labels)} labels, the model has {outputs} outputs")
    norm, source = _file_normalization(path, model, meta)
    name = meta.model if meta is not None else os.path.splitext(os.path.basename(path))[0]
    return OpenedModel(model, name, norm, labels, path=path, normalization_source=source)


def open_model(ref: Any, variant: str | None = None, resolution: int | None = None,
               classes: int | None = None, *, trust_code: bool | None = None) -> OpenedModel:
    """Builds (zoo name / spec, random weights, `classes` outputs) or loads (.keras/.h5/.hdf5 with its sidecar) a
    tf_keras model. A built zoo model's Keras name is its zoo name, so a file saved from it finds its way back."""
    if is_segmentation(ref):  # zoo segmentation model, "name" or "name@finaliser"
        from edgetpu_models.segmentation import build_segmentation_model, preprocess_normalization

        model = build_segmentation_model(ref, classes=classes, resolution=resolution)
        return OpenedModel(model, ref.replace("@", "_").replace(",", "_"), preprocess_normalization(ref), None,
                           normalization_source=f"segmentation spec {ref}")
    resolved = resolve_model(ref, variant)
    if resolved.kind == "keras" and resolved.path is not None:
        return _open_file(resolved.path, resolution, trust_code)
    if resolved.kind != "spec":
        raise ModelFileError(f"{resolved.path or resolved.name}: expected a zoo name, spec or Keras model file, "
                             f"got a {resolved.kind} model")
    spec = resolved.spec
    model = build_model(resolved.zoo_name or spec, resolved.variant, resolution=resolution,  # type: ignore[arg-type]
                        classes=classes or 1000)
    name = resolved.zoo_name or spec.name  # type: ignore[union-attr]
    norm = normalization_of(spec, resolved.variant)  # a variant may normalise differently (MobilenetEdgeTPU-V2-M)
    return OpenedModel(model, name, norm, None, normalization_source=f"spec {spec.name}")  # type: ignore[union-attr]


def keras_model_file(weights: Any) -> str | None:
    """`weights` when it names a saved tf_keras model to start from (a .keras file), None for anything else ("imagenet",
    a .safetensors or .h5 weights file, None): how `train` tells "fine-tune this model" from "load these weights"."""
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).lower().endswith(".keras"):
        return os.fspath(weights)
    return None


def save_model(model: Any, path: "str | os.PathLike[str]", sidecar: Sidecar) -> str:
    """The one saver: a plain or quantization-aware tf_keras model as `path` (.keras or .h5) and its sidecar, written
    as one unit (both land or neither). Returns the sidecar's path."""
    path = os.fspath(path)
    if not path.lower().endswith(KERAS_SUFFIXES):
        raise ModelFileError(f"{path}: expected a Keras model file name ({', '.join(KERAS_SUFFIXES)})")
    return write_sidecar(path, sidecar, model_content=lambda tmp: _write_keras(model, tmp))
