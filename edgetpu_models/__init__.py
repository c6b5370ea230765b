"""edgetpu-models: EfficientNet-EdgeTPU and MobilenetEdgeTPU from searched specs, for the Edge TPU.

    from edgetpu_models import efficientnet_edgetpu
    model = efficientnet_edgetpu.EfficientNetEdgeTPUS(weights=None)

Importing the package does not import TensorFlow; building a model does.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edgetpu_models.errors import EdgeTPUModelsError, SpecError, UnknownModelError, WeightsError
from edgetpu_models.spec import Spec, load_spec, resolve, save_spec, spec_from_dict
from edgetpu_models.zoo import ZOO

__version__ = "0.1.0"
__all__ = ["build_model", "efficientnet_edgetpu", "mobilenet_edgetpu", "mobilenet_edgetpu_v2", "load_spec", "save_spec",
           "spec_from_dict", "resolve", "Spec", "ZOO", "profile", "EdgeTPUModelsError", "SpecError",
           "UnknownModelError", "WeightsError"]


def build_model(spec_or_path: Any, variant: str | None = None, **kwargs: Any):
    """Builds any spec (Spec, zoo name or YAML path) as a tf_keras model; see `edgetpu_models.builder.build_model`."""
    from edgetpu_models.builder import build_model as _build

    return _build(spec_or_path, variant, **kwargs)


def profile(spec_or_path: Any, variant: str | None = None, **kwargs: Any):
    """Per-layer shapes, params and MACs of a spec without TensorFlow; see `edgetpu_models.profiler.profile`."""
    from edgetpu_models.profiler import profile as _profile

    return _profile(spec_or_path, variant, **kwargs)


def __getattr__(name: str) -> Any:  # lazy submodules keep `import edgetpu_models` free of TensorFlow
    if name in ("efficientnet_edgetpu", "mobilenet_edgetpu", "mobilenet_edgetpu_v2"):
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
