"""Latency estimates: one entry point over every target (Edge TPU APM, CPU predictor, CPU measured).

    estimate("efficientnet_edgetpu_s", "coral-usb")          # any model reference (see edgetpu_models.model_io)
    estimate("model.tflite", "cpu")                           # .tflite path or bytes
    estimate(spec, "coral-usb")                               # the NAS / server fast path (TF-free)

Targets are YAML files (`edgetpu_models.nas.latency.targets`); an unknown name raises TargetError.
"""

from __future__ import annotations

from typing import Any

from edgetpu_models.errors import TargetError
from edgetpu_models.layer_graph import LayerGraph
from edgetpu_models.nas.latency.apm import cost_graph
from edgetpu_models.nas.latency.targets import list_targets, load_target
from edgetpu_models.nas.latency.types import LatencyEstimate, LayerLatency, Target

__all__ = ["LatencyEstimate", "LayerLatency", "Target", "estimate", "estimate_graph", "list_targets",
           "load_target"]


def estimate_graph(graph: LayerGraph, target: "str | Target" = "coral-usb") -> LatencyEstimate:
    """Estimate for a layer graph on an Edge TPU or the CPU predictor (not 'measured': that needs a real model)."""
    t = load_target(target) if isinstance(target, str) else target
    if t.kind == "edgetpu":
        assert t.constants is not None
        rows, on_chip, off_chip = cost_graph(graph, t.constants)
        return LatencyEstimate(sum(r.ms for r in rows), t.name, on_chip, off_chip, tuple(rows))
    if t.kind == "cpu":
        from edgetpu_models.nas.latency.cpu.predictor import predict_graph

        return predict_graph(graph, t)
    raise TargetError(f"{t.name}: a measured target times a real model; give it a zoo name, spec, Keras model or "
                      f".tflite, not a layer graph")


def estimate(model: Any, target: "str | Target" = "coral-usb", *, resolution: int | None = None,
             variant: str | None = None, threads: int | None = None, cpu_from_op: int | None = None) -> LatencyEstimate:
    """Latency of `model` (any model reference, see `edgetpu_models.model_io`, or a LayerGraph) on `target`.

    `threads` applies to the measured CPU target (default: the target file's). `cpu_from_op` (Edge TPU targets, a
    .tflite or its graph): the operator index where the compiler's Edge TPU segment ends, as the compatibility check
    finds it (`deploy.edgetpu_check`): that op and all after it are costed on the host CPU (`latency.partition`).
    `target` may be a loaded `Target` (the server passes the one it checked, saving a file look-up per estimate).
    Raises TargetError for an unknown target, ModelFileError for a bad or float .tflite."""
    t = load_target(target) if isinstance(target, str) else target
    if t.kind == "measured":
        from edgetpu_models.nas.latency.cpu.timing import measure

        return measure(model, t, resolution=resolution, variant=variant, threads=threads)
    from edgetpu_models.nas.latency.frontends import arch_graph, model_source

    src = model_source(model, resolution=resolution, variant=variant)
    if isinstance(src, LayerGraph):
        if cpu_from_op is not None and t.kind == "edgetpu":
            from edgetpu_models.nas.latency.partition import estimate_partitioned

            return estimate_partitioned(src, t, cpu_from_op)
        return estimate_graph(src, t)
    if t.kind == "edgetpu":
        from edgetpu_models.nas.latency.memo import estimate_arch

        return estimate_arch(src, t.constants, t.name)
    return estimate_graph(arch_graph(src), t)
