"""CPU latency: a kernel-level predictor in the style of nn-Meter (`cpu`) and real LiteRT timings (`cpu-measured`).

nn-Meter's observation is that a model's latency on a CPU is close to the sum of its *kernels'* latencies, where a
kernel is what runs after the converter's fusions (conv + BN + activation is one kernel, not three). So:

- Kernels are the layers of the fused layer graph (see `frontends`); each gets a kernel type from its op, kernel size
  and stride (XNNPACK picks a different micro-kernel for 1x1 convs, k x k convs, depthwise 3x3 / 5x5, strides...).
- Per kernel type a small linear regressor on shape features (padded MACs, input/output elements, weight bytes),
  fitted with non-negative least squares on relative error, predicts the kernel's time. Types never seen in training
  fall back to their family (conv, depthwise, elementwise, ...).
- Training data (`edgetpu-models calibrate --target cpu`): kernel configurations sampled from the layer graphs of
  random architectures around the zoo specs (nn-Meter's prior-based sampling), each built as a one-kernel tf_keras
  model, converted to int8 and timed with LiteRT on this machine.

`cpu-measured` builds the int8 .tflite of the model and times it: warm-up runs, then the median of N runs. With one
thread it reads the calling thread's CPU time rather than the wall clock: LiteRT runs a one-thread model on the
calling thread, so this is the model's latency with the core to itself, and it does not count time the thread spends
descheduled while other processes share the cores (wall-clock medians on a shared machine vary by 2-4x).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from edgetpu_models.errors import TargetError
from edgetpu_models.layer_graph import Layer, LayerGraph, lowered
from edgetpu_models.nas.latency.apm import param_bytes
from edgetpu_models.nas.latency.cpu.features import FEATURES, FREE, kernel_family, kernel_features, kernel_key
from edgetpu_models.nas.latency.types import LatencyEstimate, LayerLatency, Target


@dataclass(frozen=True)
class Predictor:
    kernels: dict[str, list[float]]
    """kernel type or family -> coefficients over FEATURES (ms)."""
    invoke_ms: float
    threads: int
    meta: dict[str, Any]
    composition: float = 1.0
    """Whole-model time / sum of isolated kernel times, fitted on a few training architectures (kernels timed alone
    run with warm caches; in a model each kernel's weights and inputs are colder)."""

    def kernel_ms(self, layer: Layer) -> tuple[float, str]:
        key = kernel_key(layer)
        coef = self.kernels.get(key)
        if coef is None:
            key = kernel_family(layer)
            coef = self.kernels.get(key) or self.kernels["elementwise"]
        return max(0.0, sum(c * f for c, f in zip(coef, kernel_features(layer)))) * self.composition, key

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "threads": self.threads, "invoke_ms": self.invoke_ms,
                "composition": self.composition, "kernels": self.kernels, "meta": self.meta}


def predictor_path(target: Target) -> str:
    name = target.data.get("predictor")
    if not isinstance(name, str) or not name:
        raise TargetError(f"{target.path}: predictor: expected the predictor data file name")
    return os.path.join(os.path.dirname(target.path), name)


def load_predictor(target: Target) -> Predictor:
    path = predictor_path(target)
    if not os.path.exists(path):
        raise TargetError(f"{path}: no trained CPU predictor; run `edgetpu-models calibrate --target {target.name}`")
    return _load_predictor(path, os.stat(path).st_mtime_ns)


@lru_cache(maxsize=4)
def _load_predictor(path: str, _mtime: int) -> Predictor:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if list(d["features"]) != list(FEATURES) or "elementwise" not in d["kernels"]:
            raise ValueError("features or kernel types do not match this version")
        return Predictor({k: [float(x) for x in v] for k, v in d["kernels"].items()}, float(d["invoke_ms"]),
                         int(d["threads"]), dict(d.get("meta", {})), float(d.get("composition", 1.0)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TargetError(f"{path}: not a valid CPU predictor file ({e})") from None


def predict_kernels(graph: LayerGraph, pred: Predictor, scale: float) -> list[tuple[Layer, float, str]]:
    """(layer, ms, kernel type) of every layer of the lowered graph, kernel times multiplied by `scale`."""
    out = []
    for layer in lowered(graph).layers:  # grouped convs as the split + per-group kernels + concat that LiteRT runs
        if layer.op in FREE:
            out.append((layer, 0.0, "free"))
            continue
        ms, key = pred.kernel_ms(layer)
        out.append((layer, ms * scale, key))
    return out


def predict_graph(graph: LayerGraph, target: Target) -> LatencyEstimate:
    """The predictor's estimate on this CPU: as fitted when this is the CPU it was fitted on, scaled by this CPU's
    probe otherwise; TargetError when neither (`cpu.host.host_scale`)."""
    from edgetpu_models.nas.latency.cpu.host import host_scale

    pred = load_predictor(target)
    scale = host_scale(pred.meta, target.name)
    rows = [LayerLatency("<invoke>", "invoke", tuple(graph.input_shape), 0, pred.invoke_ms, "invoke")]
    pbytes = 0
    for layer, ms, key in predict_kernels(graph, pred, scale):
        if key != "free":
            pbytes += param_bytes(layer)
        rows.append(LayerLatency(layer.name, layer.op, layer.output_shape, layer.macs, ms, key))
    return LatencyEstimate(sum(r.ms for r in rows), target.name, 0, pbytes, tuple(rows))
