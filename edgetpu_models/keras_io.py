"""The one way a Keras model file is read and written: plain and quantization-aware (tfmot) models, `.keras` and
`.h5`/`.hdf5`, and no code runs from the file unless the user says so.

Keras' safe mode protects only the `.keras` format; an `.h5` file can carry a `Lambda` layer's marshalled Python
bytecode, which `load_model` runs. So before anything is deserialised, the file's model config is read as plain JSON
and every class it names is checked: built-in tf_keras classes, tfmot's quantization classes and this package's
registered objects load; a `Lambda` layer or any other custom object is refused unless `trust_code=True`
(`--trust-model-code` on the command line).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading
import zipfile
from typing import Any, Iterator

from edgetpu_models.errors import ModelFileError
from edgetpu_models.io_utils import atomic_path

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
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


def save_keras(model: Any, path: "str | os.PathLike[str]") -> None:
    """Saves a plain or quantization-aware model atomically (.keras or .h5)."""
    path = os.fspath(path)
    if not path.lower().endswith(KERAS_SUFFIXES):
        raise ModelFileError(f"{path}: expected a Keras model file name ({', '.join(KERAS_SUFFIXES)})")
    with atomic_path(path) as tmp:
        if is_qat_model(model):
            with tfmot_serialization():
                model.save(tmp)
        else:
            model.save(tmp)
