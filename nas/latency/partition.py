"""Models the Edge TPU runs only in part: cost the graph as the compiler partitions it.

The compiler maps ops in graph order until the first one it cannot map; that op and every op after it run on the
host CPU (one Edge TPU segment: "More than one subgraph is not supported"). Which op that is is decided by the
compatibility check (`deploy/edgetpu_check.py`, a room above this one), so it is passed in: `cpu_from_op`, the operator
index of the first op that stays on the CPU. The estimate is then

- the Edge TPU segment, costed by the APM, its input over the host link as usual;
- the segment's output tensor back to the host over the link (`<to host>`: one transfer, bandwidth and per-transfer
  cost of the target's link);
- the CPU segment, costed by the target's host CPU predictor (`host.cpu_target` of the target file, scaled by
  `host.cpu_scale`): the same kernel predictor as the `cpu` target, with no second invoke (the interpreter runs both
  segments in one invoke).

TF-free, like the rest of the estimator.
"""

from __future__ import annotations

from typing import Any

from edgetpu_models.errors import TargetError
from edgetpu_models.layer_graph import LayerGraph
from edgetpu_models.nas.latency.apm import cost_graph
from edgetpu_models.nas.latency.types import LatencyEstimate, LayerLatency, Target


def host_cpu(t: Target) -> tuple[str, float]:
    """(CPU predictor target, slowdown factor) of an Edge TPU target's host, following `inherits:`."""
    from edgetpu_models.nas.latency.targets import load_target

    host: dict[str, Any] = {}
    chain = [t]
    while chain[-1].data.get("inherits"):
        chain.append(load_target(chain[-1].data["inherits"]))
    for link in reversed(chain):
        host.update(link.data.get("host") or {})
    name, scale = host.get("cpu_target", "cpu"), host.get("cpu_scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise TargetError(f"{t.path}: host.cpu_scale: expected a number > 0, got {scale!r}")
    return str(name), float(scale)


def split_graph(graph: LayerGraph, cpu_from_op: int) -> tuple[LayerGraph, LayerGraph | None]:
    """(Edge TPU segment, CPU segment or None): layers read from operators before `cpu_from_op`, and the rest."""
    cut = next((i for i, layer in enumerate(graph.layers) if layer.source_op >= cpu_from_op), None)
    if cut is None:
        return graph, None
    if cut == 0:
        raise TargetError(f"{graph.name}: the first operator already runs on the CPU: no Edge TPU segment to cost "
                          f"(estimate it on the `cpu` target)")
    tpu = LayerGraph(graph.name, graph.input_shape, graph.layers[:cut])
    return tpu, LayerGraph(f"{graph.name}_cpu", graph.layers[cut - 1].output_shape, graph.layers[cut:])  # type: ignore


def estimate_partitioned(graph: LayerGraph, t: Target, cpu_from_op: int | None) -> LatencyEstimate:
    """The estimate of `graph` on Edge TPU target `t` when the ops from operator `cpu_from_op` on run on the host CPU
    (None: every op is mapped; the plain estimate)."""
    from edgetpu_models.nas.latency.cpu.predictor import predict_graph
    from edgetpu_models.nas.latency.targets import load_target

    tpu, cpu = split_graph(graph, cpu_from_op) if cpu_from_op is not None else (graph, None)
    rows, on_chip, off_chip = cost_graph(tpu, t.constants)
    if cpu is None:
        return LatencyEstimate(sum(r.ms for r in rows), t.name, on_chip, off_chip, tuple(rows))
    back = rows[-1]
    rows[-1] = LayerLatency("<to host>", "transfer", back.output_shape, 0, back.ms, "host_link")
    cpu_target, scale = host_cpu(t)
    cpu_est = predict_graph(cpu, load_target(cpu_target))
    rows += [LayerLatency(r.name, r.op, r.output_shape, r.macs, r.ms * scale, "host_cpu")
             for r in cpu_est.layers if r.op != "invoke"]
    return LatencyEstimate(sum(r.ms for r in rows), t.name, on_chip, off_chip, tuple(rows))
