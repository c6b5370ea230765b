"""EfficientNet-EdgeTPU-S/M/L: keras.applications-style constructors over `searched_archs/efficientnet_edgetpu.yaml`."""

from __future__ import annotations

from typing import Any

from edgetpu_models.builder import build_model
from edgetpu_models.preprocessing import normalize


def _factory(zoo_name: str, display: str):
    def constructor(include_top: bool = True, weights: Any = None, input_tensor: Any = None,
                    input_shape: tuple | None = None, pooling: str | None = None, classes: int = 1000,
                    classifier_activation: str | None = "softmax", **kwargs: Any):
        return build_model(zoo_name, include_top=include_top, weights=weights, input_tensor=input_tensor,
                           input_shape=input_shape, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation, **kwargs)

    constructor.__name__ = constructor.__qualname__ = display.replace("-", "")
    constructor.__doc__ = (f"Instantiates {display}. Arguments as in keras.applications; the model expects input "
                           "already passed through `preprocess_input`.")
    return constructor


EfficientNetEdgeTPUS = _factory("efficientnet_edgetpu_s", "EfficientNet-EdgeTPU-S")
EfficientNetEdgeTPUM = _factory("efficientnet_edgetpu_m", "EfficientNet-EdgeTPU-M")
EfficientNetEdgeTPUL = _factory("efficientnet_edgetpu_l", "EfficientNet-EdgeTPU-L")


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """uint8-range pixels -> model input: (x - 127) / 128 per channel."""
    return normalize(x, "efficientnet_edgetpu_s")


def decode_predictions(preds: Any, top: int = 5) -> list:
    """ImageNet (WordNet id, class name, score) of the top predictions, from the class list shipped with the package
    (no download); accepts 1000- and 1001-class (background first) scores."""
    from edgetpu_models.imagenet import decode_predictions as _decode

    return _decode(preds, top=top)
