"""MobilenetEdgeTPU-V2 Tiny/XS/S/M/L: keras.applications-style constructors over
`searched_archs/mobilenet_edgetpu_v2.yaml`.

The variants normalise their input differently (timm's pretrained configs: ImageNet mean/std for XS, S and L, 0.5/0.5
for M's published checkpoint; Tiny: ImageNet mean/std), so `preprocess_input(x, variant=...)` takes the variant.
"""

from __future__ import annotations

from typing import Any

from edgetpu_models.efficientnet_edgetpu import _factory, decode_predictions  # noqa: F401  (re-exported, keras.applications-style)
from edgetpu_models.preprocessing import normalize
from edgetpu_models.zoo import normalization_of

VARIANTS = ("tiny", "xs", "s", "m", "l")

MobilenetEdgeTPUV2Tiny = _factory("mobilenet_edgetpu_v2_tiny", "MobilenetEdgeTPU-V2-Tiny")
MobilenetEdgeTPUV2XS = _factory("mobilenet_edgetpu_v2_xs", "MobilenetEdgeTPU-V2-XS")
MobilenetEdgeTPUV2S = _factory("mobilenet_edgetpu_v2_s", "MobilenetEdgeTPU-V2-S")
MobilenetEdgeTPUV2M = _factory("mobilenet_edgetpu_v2_m", "MobilenetEdgeTPU-V2-M")
MobilenetEdgeTPUV2L = _factory("mobilenet_edgetpu_v2_l", "MobilenetEdgeTPU-V2-L")


def preprocess_input(x: Any, data_format: str | None = None, variant: str = "s") -> Any:
    """uint8-range pixels -> model input for `variant` (tiny, xs, s, m or l): (x - mean) / std with its constants."""
    if variant not in VARIANTS:
        from edgetpu_models.errors import SpecError
        raise SpecError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    return normalize(x, normalization_of(f"mobilenet_edgetpu_v2_{variant}"))
