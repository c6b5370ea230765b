"""Latency of models co-compiled for one Edge TPU: they share the parameter cache in the order given.

`edgetpu_compiler A.tflite B.tflite` lays the models' parameters into one cache: A is placed first, B gets what A left
and streams the rest on every inference (google-coral/edgetpu#518: the same pair in the other order swaps which model
streams). Each model is then costed with its own share (`nas.memory.plan_models`, `nas.apm.cost_graph`).
"""

from __future__ import annotations

from typing import Any, Sequence

from edgetpu_models.errors import TargetError
from edgetpu_models.nas.latency.apm import cost_graph
from edgetpu_models.nas.latency.estimator import LatencyEstimate, load_target
from edgetpu_models.nas.latency.memory import MemoryConstants, MemoryPlan, plan_models


def estimate_cocompiled(models: Sequence[Any], target: str = "coral-usb", *, resolution: int | None = None,
                        variant: str | None = None) -> list[tuple[LatencyEstimate, MemoryPlan]]:
    """(estimate, memory plan) of each model when all are co-compiled in this order for one Edge TPU target."""
    from edgetpu_models.nas.latency.frontends import model_graph

    t = load_target(target)
    if t.kind != "edgetpu" or t.constants is None:
        raise TargetError(f"--target {target}: co-compilation shares an Edge TPU's cache; expected an Edge TPU target")
    graphs = [model_graph(m, resolution=resolution, variant=variant) for m in models]
    plans = plan_models(graphs, MemoryConstants(sram_bytes=t.constants.param_cache_bytes))
    out = []
    for g, plan in zip(graphs, plans):
        rows, on_chip, off_chip = cost_graph(g, t.constants, plan)
        out.append((LatencyEstimate(sum(r.ms for r in rows), t.name, on_chip, off_chip, tuple(rows)), plan))
    return out
