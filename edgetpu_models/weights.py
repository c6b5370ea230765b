"""Weights: timm-named `.safetensors` files mapped onto our Keras models, `.h5` files, and "imagenet".

timm's state-dict names are the de-facto interchange format for these models. Our Keras layer names are timm's
module names with dots turned into underscores (plus explicit names for the stem and head), so the mapping is a
name translation and a layout transpose; no PyTorch is needed (safetensors' numpy API reads the file).
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

import numpy as np

from edgetpu_models.errors import WeightsError
from edgetpu_models.zoo import ZOO

_TOP_LEVEL = {"conv_stem": "stem_conv", "bn1": "stem_bn", "conv_head": "head_conv", "bn2": "head_bn",
              "classifier": "classifier"}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(\d+)\.(\w+)$")
_GROUP_PART = re.compile(r"^(\w+)_g(\d+)$")

HF_URL = "https://huggingface.co/timm/{name}.{tag}/resolve/main/model.safetensors"


def timm_to_keras_layer(module: str) -> str | None:
    """timm module path ('blocks.3.1.conv_dw', 'conv_stem') -> our Keras layer name, or None if not ours."""
    if module in _TOP_LEVEL:
        return _TOP_LEVEL[module]
    m = _BLOCK_KEY.match(module)
    return f"blocks_{m.group(1)}_{m.group(2)}_{m.group(3)}" if m else None


def _keras_weight_sources(layer: Any) -> list[tuple[str, str]] | None:
    """For one Keras layer with weights: [(timm tensor suffix, how to convert)] in the layer's weight order."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return [("weight", "conv")]
    if kind == "DepthwiseConv2D":
        return [("weight", "depthwise")]
    if kind == "BatchNormalization":
        return [("weight", "copy"), ("bias", "copy"), ("running_mean", "copy"), ("running_var", "copy")]
    if kind == "Dense":
        return [("weight", "dense"), ("bias", "copy")]
    return None


def _convert(array: np.ndarray, how: str) -> np.ndarray:
    if how == "conv":        # PyTorch OIHW -> Keras HWIO
        return array.transpose(2, 3, 1, 0)
    if how == "depthwise":   # PyTorch (C, 1, H, W) -> Keras (H, W, C, 1)
        return array.transpose(2, 3, 0, 1)
    if how == "dense":       # PyTorch (out, in) -> Keras (in, out)
        return array.T
    return array


def load_timm_safetensors(model: Any, path: str) -> None:
    """Maps a timm-named safetensors state dict onto `model`. Every tensor must match; the first one that does not
    (missing, wrong shape, or a tensor the model does not have) is named in the error."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    keras_to_timm = {}
    for key in tensors:
        module, _, _ = key.rpartition(".")
        name = timm_to_keras_layer(module)
        if name is not None:
            keras_to_timm[name] = module
    used: set[str] = set()
    for layer in model.layers:
        sources = _keras_weight_sources(layer)
        if sources is None or not layer.weights:
            continue
        group = _GROUP_PART.match(layer.name)  # one group of a grouped conv (builder.GROUPED_CONV_LOWERING)
        module = keras_to_timm.get(group.group(1) if group and group.group(1) in keras_to_timm else layer.name)
        if module is None:
            raise WeightsError(f"{path}: no tensors for layer {layer.name!r} (expected e.g. "
                               f"'{_timm_module_of(layer.name)}.{sources[0][0]}'): a different architecture?")
        values = []
        for (suffix, how), var in zip(sources, layer.weights):
            key = f"{module}.{suffix}"
            if key not in tensors:
                raise WeightsError(f"{path}: missing tensor {key!r} for layer {layer.name!r}")
            tensor = tensors[key]
            if group and module != keras_to_timm.get(layer.name):  # this group's slice of the output channels
                size = var.shape[-1] if how == "conv" else var.shape[0]
                tensor = tensor[int(group.group(2)) * size:(int(group.group(2)) + 1) * size]
            value = _convert(tensor, how)
            if tuple(value.shape) != tuple(var.shape):
                raise WeightsError(f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, which does not fit "
                                   f"layer {layer.name!r} (Keras shape {tuple(var.shape)}): a different model or "
                                   "number of classes?")
            values.append(value.astype(np.float32))
            used.add(key)
        layer.set_weights(values)
    extra = [k for k in tensors if k not in used and np.issubdtype(tensors[k].dtype, np.floating)]
    if extra:
        raise WeightsError(f"{path}: tensor {extra[0]!r} has no layer in this model "
                           f"({len(extra)} unused tensors): a different (larger) architecture?")


def _timm_module_of(keras_name: str) -> str:
    for timm_name, ours in _TOP_LEVEL.items():
        if ours == keras_name:
            return timm_name
    m = re.match(r"^blocks_(\d+)_(\d+)_(\w+)$", keras_name)
    return f"blocks.{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else keras_name


def imagenet_cache_path(model_name: str | None) -> str | None:
    """Where the Keras cache keeps a zoo model's ImageNet checkpoint (None: the model has no published one)."""
    entry = ZOO.get(model_name or "")
    if entry is None or entry.timm_name is None:
        return None
    home = os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))
    return os.path.join(home, "models", f"{entry.timm_name}.{entry.timm_tag}.safetensors")


def imagenet_weights_path(model_name: str | None) -> str:
    """Downloads (once, into the Keras cache) timm's port of the official ImageNet checkpoint for a zoo model."""
    cached = imagenet_cache_path(model_name)
    if cached is None:
        have = ", ".join(n for n, e in ZOO.items() if e.timm_name)
        raise WeightsError(f"weights='imagenet': no published ImageNet checkpoint for {model_name or 'this spec'} "
                           f"(available for: {have}); pass weights=None or a .safetensors/.h5 file")
    if os.path.exists(cached):
        return cached
    url = HF_URL.format(name=ZOO[model_name].timm_name, tag=ZOO[model_name].timm_tag)
    fname = os.path.basename(cached)
    hint = (f"download {url} on a machine with network access and pass it as weights='path/to/{fname}' "
            f"(or put it at {cached})")
    try:  # fail at once when offline instead of hanging in the downloader
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError:
        raise WeightsError(f"weights='imagenet': cannot reach huggingface.co (offline?); {hint}") from None
    import tf_keras as keras
    try:
        return keras.utils.get_file(fname, url, cache_subdir="models")
    except Exception as e:  # the downloader raises bare Exception subclasses of many kinds
        raise WeightsError(f"weights='imagenet': download of {url} failed ({e}); {hint}") from None


def load_weights(model: Any, weights: "str | os.PathLike[str]", model_name: str | None = None) -> None:
    """Loads `weights` ("imagenet", .safetensors in timm naming, .h5 / .weights.h5) into a built model."""
    if weights == "imagenet":
        load_timm_safetensors(model, imagenet_weights_path(model_name))
        return
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise WeightsError(f"{path}: no such weights file (expected None, 'imagenet', or a .safetensors/.h5 file)")
    if path.endswith(".safetensors"):
        load_timm_safetensors(model, path)
    elif path.endswith(".h5"):
        try:
            model.load_weights(path)
        except (ValueError, OSError) as e:
            raise WeightsError(f"{path}: does not fit this model ({str(e).splitlines()[0]})") from None
    else:
        raise WeightsError(f"{path}: unknown weights format (expected .safetensors in timm naming, .h5 or .weights.h5)")
