"""Semantic segmentation models for the Edge TPU, keras.applications style: DeepLabV3+ on MobileNetEdgeTPU-V2 XS/S/M
and the searched Autoseg-EdgeTPU XS/S (tensorflow/models, official/projects/edgetpu/vision; 32 ADE20K classes at 512).

Backbone and head are data (`searched_archs/segmentation.yaml`, `autoseg_edgetpu.yaml`, `mobilenet_edgetpu_v2.yaml`),
expanded by `seg_graph.segmentation_graph` and built by the one builder from stock tf_keras layers, so QAT and the
int8 converter need no custom layers.

Arguments (every model function below takes the same ones):
  classes:     output classes (default 32, the reference's ADE20K subset; 255 in a label means "ignore").
  input_shape: (height, width, 3); height and width multiples of 32. None: the model's resolution (512).
  weights:     None (random init) or a `.h5` / `.safetensors` file saved from a model of the same name.
  finaliser:   what the model outputs: "logits" (at the head's stride, for training), "resize512,argmax" (a
               512 x 512 class map), or the cheaper "resize256,argmax,resize512" / "argmax,resize512" (`seg_graph`).

The models take normalised input: `preprocess_input(uint8 images)` -> (x - 127.5) / 127.5, as the reference trains.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from edgetpu_models.errors import SpecError
from edgetpu_models.seg_graph import backbone_graph, seg_model, seg_zoo, segmentation_graph, split_ref
from edgetpu_models.spec import Normalization

SEG_MODEL_NAMES = tuple(seg_zoo())


def _shape_resolution(input_shape: tuple | None) -> int | None:
    if input_shape is None:
        return None
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1] or not isinstance(shape[0], int) or shape[0] % 32:
        raise SpecError(f"input_shape: expected (n, n, 3) with n a multiple of 32, got {input_shape!r}")
    return shape[0]


def build_segmentation_model(ref: str, *, classes: int | None = None, input_shape: tuple | None = None,
                             weights: "str | os.PathLike[str] | None" = None, finaliser: str | None = None,
                             resolution: int | None = None):
    """Builds a zoo segmentation model (``name`` or ``name@finaliser``) as a tf_keras model (arguments: module doc)."""
    from edgetpu_models.builder import build_graph_model
    from edgetpu_models.spec import resolve
    from edgetpu_models.zoo import _load_shipped

    name, fin = split_ref(ref)
    fin = finaliser or fin
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool) or not 1 <= classes <= 255):
        raise SpecError(f"classes: expected an integer from 1 to 255, got {classes!r}")
    model = seg_model(name)
    res = _shape_resolution(input_shape) or resolution
    graph = segmentation_graph(f"{name}@{fin}", res, classes)
    arch = resolve(_load_shipped(model.backbone), model.variant, res or model.resolution)
    keras_model = build_graph_model(graph, arch, model_name=re.sub(r"[^A-Za-z0-9_]", "_", graph.name))
    if weights is not None:
        keras_model.load_weights(os.fspath(weights), by_name=True, skip_mismatch=False)
    return keras_model


def preprocess_input(images: Any, model: str = "autoseg_edgetpu_s") -> np.ndarray:
    """uint8 / float images in [0, 255] -> the model's normalised input ((x - mean) / std of its backbone spec)."""
    norm = preprocess_normalization(model)
    x = np.asarray(images, dtype=np.float32)
    return (x - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)


def apply_finaliser(model: Any, finaliser: str) -> Any:
    """A logits model (plain, fine-tuned or QAT-wrapped) with a finaliser appended (`seg_graph.parse_finaliser`):
    the deployment head is chosen at export time, after training, without rebuilding the network."""
    import tf_keras as keras

    from edgetpu_models.builder import _BUILDERS
    from edgetpu_models.layer_graph import Layer, Op
    from edgetpu_models.seg_graph import parse_finaliser

    x, shape = model.output, tuple(int(d) for d in model.output_shape[1:])
    argmaxed = False
    for i, (step, size) in enumerate(parse_finaliser(finaliser)):
        if step == "argmax":
            layer = Layer("argmax", Op.ARGMAX, ("x",), shape, shape[:2])
            argmaxed = True
        else:
            op = Op.RESIZE_NEAREST if argmaxed else Op.RESIZE_BILINEAR
            layer = Layer(f"final_resize{i}", op, ("x",), shape, (size, size, *shape[2:]))
        x, shape = _BUILDERS[layer.op](keras, layer, x, {}), layer.output_shape
    name = re.sub(r"[^A-Za-z0-9_]", "_", f"{model.name}_{finaliser}") if finaliser != "logits" else model.name
    return keras.Model(model.inputs, x, name=name)


def preprocess_normalization(ref: str) -> Normalization:
    """The input normalisation of a segmentation model: its backbone spec's (variant applied)."""
    from edgetpu_models.spec import resolve
    from edgetpu_models.zoo import _load_shipped

    m = seg_model(split_ref(ref)[0])
    return resolve(_load_shipped(m.backbone), m.variant).normalization


def output_stride(ref: str) -> int:
    """The stride of a model's logits (16 for DeepLabV3+, 8 for Autoseg-EdgeTPU)."""
    g = segmentation_graph(split_ref(ref)[0])
    return g.input_shape[0] // g.output_shape[0]


def _factory(name: str):
    def make(classes: int = 32, input_shape: tuple | None = None, weights: "str | os.PathLike[str] | None" = None,
             finaliser: str = "logits"):
        return build_segmentation_model(name, classes=classes, input_shape=input_shape, weights=weights,
                                        finaliser=finaliser)
    make.__name__ = make.__qualname__ = _PUBLIC[name]
    make.__doc__ = f"{seg_model(name).display_name} (arguments: `edgetpu_models.segmentation` module doc)."
    return make


_PUBLIC = {"deeplabv3plus_mobilenet_edgetpu_v2_xs": "DeepLabV3PlusMobilenetEdgeTPUV2XS",
           "deeplabv3plus_mobilenet_edgetpu_v2_s": "DeepLabV3PlusMobilenetEdgeTPUV2S",
           "deeplabv3plus_mobilenet_edgetpu_v2_m": "DeepLabV3PlusMobilenetEdgeTPUV2M",
           "autoseg_edgetpu_xs": "AutosegEdgeTPUXS", "autoseg_edgetpu_s": "AutosegEdgeTPUS"}
DeepLabV3PlusMobilenetEdgeTPUV2XS = _factory("deeplabv3plus_mobilenet_edgetpu_v2_xs")
DeepLabV3PlusMobilenetEdgeTPUV2S = _factory("deeplabv3plus_mobilenet_edgetpu_v2_s")
DeepLabV3PlusMobilenetEdgeTPUV2M = _factory("deeplabv3plus_mobilenet_edgetpu_v2_m")
AutosegEdgeTPUXS = _factory("autoseg_edgetpu_xs")
AutosegEdgeTPUS = _factory("autoseg_edgetpu_s")

__all__ = ["DeepLabV3PlusMobilenetEdgeTPUV2XS", "DeepLabV3PlusMobilenetEdgeTPUV2S", "DeepLabV3PlusMobilenetEdgeTPUV2M",
           "AutosegEdgeTPUXS", "AutosegEdgeTPUS", "build_segmentation_model", "preprocess_input", "output_stride",
           "backbone_graph", "SEG_MODEL_NAMES", "apply_finaliser", "preprocess_normalization"]
