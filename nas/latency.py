"""Latency estimates: one entry point over every target (Edge TPU APM, CPU predictor, CPU measured).

    estimate("efficientnet_edgetpu_s", "coral-usb")          # zoo name, spec path, Spec, LayerGraph, .keras/.h5,
    estimate("model.tflite", "cpu")                           # .tflite path or bytes
    estimate_spec(spec, "coral-usb")                          # the NAS / server fast path (TF-free)

Targets are YAML files in `edgetpu_models/nas/targets/` (`list_targets()`); an unknown name raises TargetError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


from edgetpu_models.errors import TargetError
from edgetpu_models.io_utils import read_yaml
from edgetpu_models.layer_graph import LayerGraph
from edgetpu_models.spec import Spec

from .apm import EdgeTPUConstants, LayerLatency, cost_graph

KINDS = ("edgetpu", "cpu", "measured")
__all__ = ["LatencyEstimate", "LayerLatency", "estimate", "estimate_spec", "estimate_graph", "list_targets",
           "load_target"]


@dataclass(frozen=True)
class LatencyEstimate:
    latency_ms: float
    target: str
    on_chip_param_bytes: int
    off_chip_param_bytes: int
    layers: tuple[LayerLatency, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "target": self.target,
                "on_chip_param_bytes": self.on_chip_param_bytes, "off_chip_param_bytes": self.off_chip_param_bytes,
                "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    path: str
    data: dict[str, Any]
    constants: EdgeTPUConstants | None = None


def targets_dir() -> str:
    return str(resources.files("edgetpu_models.nas.targets"))


def target_path(name: str) -> str:
    return os.path.join(targets_dir(), f"{name}.yaml")


def list_targets() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(targets_dir()) if f.endswith(".yaml"))


def load_target(name: str) -> Target:
    """Reads a target file (cached until the file changes, e.g. after `calibrate`)."""
    path = target_path(name) if isinstance(name, str) and "/" not in name else ""
    if not path or not os.path.exists(path):
        raise TargetError(f"{name}: unknown latency target (available: {', '.join(list_targets())})")
    return _load_target(name, path, os.stat(path).st_mtime_ns)


@lru_cache(maxsize=32)
def _load_target(name: str, path: str, _mtime: int) -> Target:
    data = read_yaml(path, "target file", TargetError)
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected a mapping")
    kind = data.get("kind")
    if kind not in KINDS:
        raise TargetError(f"{path}: kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "edgetpu":
        return Target(name, kind, path, data)
    constants = resolved_constants(name, data, path)
    return Target(name, kind, path, data, EdgeTPUConstants.from_mapping(constants, path))


def resolved_constants(name: str, data: dict[str, Any], path: str) -> dict[str, Any]:
    """A target's constants, following `inherits:` (coral-usb-std = coral-usb at a lower clock)."""
    own = data.get("constants") or {}
    if not isinstance(own, dict):
        raise TargetError(f"{path}: constants: expected a mapping of name -> number")
    parent = data.get("inherits")
    if parent is None:
        return dict(own)
    if parent == name:
        raise TargetError(f"{path}: inherits: a target cannot inherit from itself")
    base = load_target(parent)
    if base.kind != "edgetpu":
        raise TargetError(f"{path}: inherits: {parent} is not an Edge TPU target")
    merged = resolved_constants(parent, base.data, base.path)
    merged.update(own)
    return merged


# ---------------------------------------------------------------------------------------------------------------------

def estimate_graph(graph: LayerGraph, target: "str | Target" = "coral-usb") -> LatencyEstimate:
    """Estimate for a layer graph on an Edge TPU or the CPU predictor (not 'measured': that needs a real model)."""
    t = load_target(target) if isinstance(target, str) else target
    if t.kind == "edgetpu":
        assert t.constants is not None
        rows, on_chip, off_chip = cost_graph(graph, t.constants)
        return LatencyEstimate(sum(r.ms for r in rows), t.name, on_chip, off_chip, tuple(rows))
    if t.kind == "cpu":
        from .cpu import predict_graph

        return predict_graph(graph, t)
    raise TargetError(f"{t.name}: a measured target times a real model; give it a zoo name, spec, Keras model or "
                      f".tflite, not a layer graph")


def estimate_spec(spec: Spec, target: str = "coral-usb", resolution: int | None = None,
                  variant: str | None = None) -> LatencyEstimate:
    """The fast path (NAS, latency server): spec -> graph -> estimate, without TensorFlow for model targets."""
    from .frontends import spec_graph

    t = load_target(target)
    if t.kind == "measured":
        from .cpu import measure

        return measure(spec, t, resolution=resolution, variant=variant)
    return estimate_graph(spec_graph(spec, variant, resolution), t)


def estimate(model: Any, target: str = "coral-usb", *, resolution: int | None = None,
             variant: str | None = None) -> LatencyEstimate:
    """Latency of `model` (zoo name, spec path, Spec, LayerGraph, .keras/.h5 path or tf_keras model, .tflite path or
    bytes) on `target`. Raises TargetError for an unknown target, ModelFileError for a bad or float .tflite."""
    t = load_target(target)
    if isinstance(model, Spec):
        return estimate_spec(model, target, resolution, variant)
    if t.kind == "measured":
        from .cpu import measure

        return measure(model, t, resolution=resolution, variant=variant)
    from .frontends import model_graph

    return estimate_graph(model_graph(model, resolution=resolution, variant=variant), t)
