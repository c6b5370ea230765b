"""Latency of a .tflite on this machine's runtime: warm-up runs, then timed invoke() calls; median, p90, p99 ms."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from edgetpu_models.errors import EdgeTPUModelsError


@dataclass(frozen=True)
class BenchmarkResult:
    model: str
    backend: str
    threads: int | None
    runs: int
    warmup: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    pipelined_ms: float | None = None
    """Segment files: ms per result with the segments overlapped in a stream of `runs` inputs (the pipeline's
    steady-state rate); the other figures time one input through all segments."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _random_input(detail: dict, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    shape = [int(d) for d in detail["shape"]]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def benchmark(path: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]", runs: int = 100, warmup: int = 10,
              threads: int | None = None, *,
              prefer: str | None = None, on_run: Callable[[int], None] | None = None) -> BenchmarkResult:
    """Times `runs` invoke() calls on random input after `warmup` untimed ones. `on_run(i)` is called after each
    timed run (for a progress bar)."""
    if not isinstance(runs, int) or runs < 1:
        raise EdgeTPUModelsError(f"runs: expected an integer >= 1, got {runs!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise EdgeTPUModelsError(f"warmup: expected an integer >= 0, got {warmup!r}")
    from .pipeline import PipelineInterpreter, open_interpreter

    interp, backend = open_interpreter(path, threads, prefer=prefer)
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], _random_input(detail, rng))
    for _ in range(warmup):
        interp.invoke()
    times = np.empty(runs, np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times[i] = (time.perf_counter() - t0) * 1000.0
        if on_run is not None:
            on_run(i)
    pipelined = None
    if isinstance(interp, PipelineInterpreter):
        x = [_random_input(d, rng) for d in interp.get_input_details()]
        t0 = time.perf_counter()
        n = sum(1 for _ in interp.run_stream([x] * runs))
        pipelined = (time.perf_counter() - t0) * 1000.0 / n
    model = os.fspath(path) if isinstance(path, (str, os.PathLike)) else " ".join(os.fspath(p) for p in path)
    return BenchmarkResult(model=model, pipelined_ms=pipelined, backend=backend, threads=threads, runs=runs,
                           warmup=warmup,
                           median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)),
                           p99_ms=float(np.percentile(times, 99)), mean_ms=float(times.mean()),
                           min_ms=float(times.min()))
