"""The latency room's shared vocabulary: a target, an estimate and its rows. Every other latency module imports
this one, and it imports none of them, so the room has no import cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

KINDS = ("edgetpu", "cpu", "measured")


class LayerLatency(NamedTuple):
    """One row of an estimate (a NamedTuple because ~100 are made per estimate)."""

    name: str
    op: str
    output_shape: tuple[int, ...]
    macs: int
    ms: float
    bound: str
    """What limits the layer: compute, activations, weights, param_stream, overhead, host_link (Edge TPU); the
    kernel type for the CPU predictor; 'host_cpu' for a layer of a partly mapped model that runs on the host CPU;
    'measured: <statistic and spread of the runs>' for a timed model."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "output_shape": list(self.output_shape), "macs": self.macs,
                "ms": self.ms, "bound": self.bound}


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
    constants: Any = None
    """The Edge TPU model's `apm.EdgeTPUConstants` (Edge TPU targets only; typed loosely so that this module imports
    nothing of the room)."""
