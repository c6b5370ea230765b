"""The short probe that adapts the `cpu` predictor to a CPU it was not fitted on (see `cpu.host`)."""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
from typing import Any, Callable, Iterable, NamedTuple

from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.nas.latency.cpu.host import PROBE_MODELS, cpu_fingerprint, probe_path, read_probes


class ProbeRow(NamedTuple):
    model: str
    resolution: int
    measured_ms: float
    spread: float
    predicted_ms: float
    """By the predictor as fitted (before this probe's scale)."""


class ProbeResult(NamedTuple):
    cpu: str
    scale: float
    rows: tuple[ProbeRow, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "probed": datetime.date.today().isoformat(), "seconds": round(self.seconds, 1),
                "rows": [r._asdict() for r in self.rows]}


def run_probe(target: Any, runs: int = 15,
              progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> ProbeResult:
    """Times PROBE_MODELS here (median of `runs`, thread CPU time) against the predictor as fitted."""
    from edgetpu_models.nas.latency.cpu.predictor import load_predictor, predict_kernels
    from edgetpu_models.nas.latency.cpu.timing import model_tflite_bytes, time_tflite_runs
    from edgetpu_models.nas.latency.frontends import spec_graph

    t0 = time.perf_counter()
    pred = load_predictor(target)
    rows = []
    for name, res in (progress(PROBE_MODELS) if progress else PROBE_MODELS):
        timing = time_tflite_runs(model_tflite_bytes(name, res, None), threads=pred.threads, runs=runs)
        predicted = sum(ms for _, ms, _ in predict_kernels(spec_graph(name, None, res), pred, 1.0))
        rows.append(ProbeRow(name, res, timing.median_ms, timing.spread, predicted + pred.invoke_ms))
    scale = statistics.median((r.measured_ms - pred.invoke_ms) / (r.predicted_ms - pred.invoke_ms) for r in rows)
    return ProbeResult(cpu_fingerprint(), float(scale), tuple(rows), time.perf_counter() - t0)


def write_probe(result: ProbeResult) -> str:
    """Adds (or replaces) this CPU's probe in the user's probe file, atomically; returns its path."""
    data = read_probes()
    data[result.cpu] = result.to_dict()
    path = probe_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path
