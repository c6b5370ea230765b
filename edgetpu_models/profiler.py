"""Spec-level profiler: per-layer output shape, parameters and MACs, and totals, without importing TensorFlow."""

from __future__ import annotations

import os
from typing import Any

from edgetpu_models.layer_graph import LayerGraph, arch_to_graph
from edgetpu_models.seg_graph import is_segmentation, segmentation_graph
from edgetpu_models.spec import Spec, resolve
from edgetpu_models.zoo import resolve_spec


def profile(spec_or_path: "str | os.PathLike[str] | Spec", variant: str | None = None, *,
            resolution: int | None = None, include_top: bool = True, classes: int = 1000,
            pooling: str | None = None) -> LayerGraph:
    """The layer graph of a spec: iterate it for per-layer figures; `.params` and `.macs` are the totals.
    A zoo segmentation model (``name`` or ``name@finaliser``) gives its backbone + head + finaliser graph."""
    if is_segmentation(spec_or_path):
        return segmentation_graph(spec_or_path, resolution, None if classes == 1000 else classes)
    spec, variant = resolve_spec(spec_or_path, variant)
    arch = resolve(spec, variant, resolution)
    return arch_to_graph(arch, include_top=include_top, classes=classes, pooling=pooling)


def profile_rows(graph: LayerGraph) -> list[dict[str, Any]]:
    """Plain rows (name, op, kernel, stride, output shape, params, MACs) for tables and JSON."""
    return [{"name": layer.name, "op": layer.op, "kernel": layer.kernel, "stride": layer.stride,
             "output_shape": list(layer.output_shape), "params": layer.params, "macs": layer.macs}
            for layer in graph]
