"""Latency of a .tflite on this machine's runtime: warm-up runs, then timed invoke() calls; median, p90, p99 ms."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgetpu_models.deploy.pipeline import PipelineInterpreter
from edgetpu_models.deploy.runtime import ModelPath, Runner, TensorInfo
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


def _random_input(info: TensorInfo, rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(info.dtype, np.integer):
        limits = np.iinfo(info.dtype)
        return rng.integers(limits.min, int(limits.max) + 1, size=info.shape, dtype=info.dtype)
    return rng.standard_normal(info.shape).astype(info.dtype)


def benchmark(path: "ModelPath | Sequence[ModelPath]", runs: int = 100, warmup: int = 10,
              threads: Optional[int] = None, *,
              prefer: Optional[str] = None, on_run: Optional[Callable[[int], None]] = None) -> BenchmarkResult:
    """Times `runs` invoke() calls on random input after `warmup` untimed ones (through `runtime.Runner`, so on the
    runtime classify uses). `on_run(i)` is called after each timed run (for a progress bar)."""
    if not isinstance(runs, int) or runs < 1:
        raise EdgeTPUModelsError(f"runs: expected an integer >= 1, got {runs!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise EdgeTPUModelsError(f"warmup: expected an integer >= 0, got {warmup!r}")
    runner = Runner(path, threads=threads, prefer=prefer)
    rng = np.random.default_rng(0)
    x = [_random_input(info, rng) for info in runner.inputs]
    for _ in range(warmup):
        runner.run(*x)
    times = np.empty(runs, np.float64)
    for i in range(runs):
        times[i] = runner.run(*x)[1]
        if on_run is not None:
            on_run(i)
    pipelined = None
    if isinstance(runner.interpreter, PipelineInterpreter):
        t0 = time.perf_counter()
        n = sum(1 for _ in runner.interpreter.run_stream([x] * runs))
        pipelined = (time.perf_counter() - t0) * 1000.0 / n
    model = " ".join(runner.paths)
    return BenchmarkResult(model=model, pipelined_ms=pipelined, backend=runner.backend, threads=threads, runs=runs,
                           warmup=warmup,
                           median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)),
                           p99_ms=float(np.percentile(times, 99)), mean_ms=float(times.mean()),
                           min_ms=float(times.min()))
