"""MobilenetEdgeTPU (keras.applications-style constructor over `searched_archs/mobilenet_edgetpu.yaml`)."""

from __future__ import annotations

from typing import Any

from edgetpu_models.builder import build_model
from edgetpu_models.preprocessing import normalize


def MobilenetEdgeTPU(include_top: bool = True, weights: Any = None, input_tensor: Any = None,
                     input_shape: tuple | None = None, pooling: str | None = None, classes: int = 1000,
                     classifier_activation: str | None = "softmax", depth_multiplier: float = 1.0, **kwargs: Any):
    """Instantiates MobilenetEdgeTPU (depth_multiplier 0.75, 1.0, 1.25 or 1.75). Arguments as in keras.applications;
    the model expects input already passed through `preprocess_input`."""
    variants = {1.0: "mobilenet_edgetpu", 0.75: "mobilenet_edgetpu_075", 1.25: "mobilenet_edgetpu_125",
                1.75: "mobilenet_edgetpu_175"}
    if depth_multiplier not in variants:
        from edgetpu_models.errors import SpecError
        raise SpecError(f"depth_multiplier: expected 0.75, 1.0, 1.25 or 1.75, got {depth_multiplier!r}")
    return build_model(variants[depth_multiplier], include_top=include_top, weights=weights,
                       input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, **kwargs)


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """uint8-range pixels -> model input: x / 127.5 - 1."""
    return normalize(x, "mobilenet_edgetpu")


def decode_predictions(preds: Any, top: int = 5) -> list:
    """ImageNet (WordNet id, class name, score) of the top predictions, offline; see `edgetpu_models.imagenet`."""
    from edgetpu_models.imagenet import decode_predictions as _decode

    return _decode(preds, top=top)
