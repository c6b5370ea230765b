"""`cpu-measured`: real LiteRT timings of a model's int8 .tflite on this machine.

Warm-up runs, then the median of N runs. With one thread it reads the calling thread's CPU time rather than the wall
clock: LiteRT runs a one-thread model on the calling thread, so this is the model's latency with the core to itself,
and it does not count time the thread spends descheduled while other processes share the cores (wall-clock medians on
a shared machine vary by 2-4x).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, NamedTuple

from edgetpu_models.errors import EdgeTPUModelsError, ModelFileError, TargetError
from edgetpu_models.layer_graph import LayerGraph
from edgetpu_models.nas.latency.apm import param_bytes
from edgetpu_models.nas.latency.types import LatencyEstimate, LayerLatency, Target

MAX_THREADS = 256


class Timing(NamedTuple):
    """Repeated timings of one model: the median (robust to a loaded machine: descheduled or slowed runs are the
    tail, not the middle) and the spread of the runs, as half the interquartile range over the median."""

    median_ms: float
    spread: float
    runs: int

    def describe(self) -> str:
        return f"median of {self.runs} runs, spread +-{self.spread * 100:.1f}% (IQR/2)"


def robust_spread(samples: "list[float]") -> float:
    """Half the interquartile range over the median: how far a typical run is from the median."""
    if len(samples) < 4:
        return 0.0
    q = statistics.quantiles(samples, n=4)
    med = statistics.median(samples)
    return (q[2] - q[0]) / 2 / med if med > 0 else 0.0


def time_tflite(model: "str | bytes", threads: int = 1, warmup: int = 3, runs: int = 15,
                min_batch_ms: float = 5.0) -> float:
    """Median latency in ms of one inference (random input); see `time_tflite_runs`."""
    return time_tflite_runs(model, threads, warmup, runs, min_batch_ms).median_ms


def time_tflite_runs(model: "str | bytes", threads: int = 1, warmup: int = 3, runs: int = 15,
                     min_batch_ms: float = 5.0) -> Timing:
    """Median and spread of one inference's latency in ms (random input). threads == 1: the calling thread's CPU time
    (see the module docstring); otherwise the wall clock. Very short models are invoked in batches of back-to-back
    calls lasting at least `min_batch_ms`, and each batch gives one per-inference sample."""
    it = _interpreter(model, threads)
    clock = time.thread_time if threads == 1 else time.perf_counter
    for _ in range(max(1, warmup)):
        it.invoke()
    t0 = clock()
    it.invoke()
    single = max(clock() - t0, 1e-6) * 1e3
    batch = max(1, min(1000, int(min_batch_ms / single)))
    samples = []
    for _ in range(max(1, runs)):
        t0 = clock()
        for _ in range(batch):
            it.invoke()
        samples.append((clock() - t0) * 1e3 / batch)
    return Timing(float(statistics.median(samples)), robust_spread(samples), len(samples))


def _interpreter(model: "str | bytes", threads: int) -> Any:
    """A LiteRT interpreter with its tensors allocated and random inputs set."""
    import numpy as np

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:  # pragma: no cover - ai-edge-litert is an install requirement
        raise EdgeTPUModelsError(f"cpu-measured needs the ai-edge-litert package ({e})") from None
    try:
        if isinstance(model, (bytes, bytearray)):
            it = Interpreter(model_content=bytes(model), num_threads=threads)
        else:
            it = Interpreter(model_path=os.fspath(model), num_threads=threads)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"{model if isinstance(model, str) else '<bytes>'}: LiteRT cannot load it "
                             f"({str(e).splitlines()[0][:200]})") from None
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        dt = np.dtype(d["dtype"])
        info = np.iinfo(dt) if dt.kind in "iu" else None
        data = (rng.integers(info.min, info.max, size=d["shape"], endpoint=True).astype(dt) if info is not None
                else rng.standard_normal(d["shape"]).astype(dt))
        it.set_tensor(d["index"], data)
    return it


def target_threads(target: Target, threads: int | None = None) -> int:
    """The thread count to time with: `threads` when given, else the target file's (default 1)."""
    value = threads if threads is not None else target.data.get("threads", 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS:
        raise TargetError(f"{target.name}: threads: expected an integer from 1 to {MAX_THREADS}, got {str(value)[:20]}")
    return value


def model_tflite_bytes(model: Any, resolution: int | None = None, variant: str | None = None) -> bytes:
    """int8 .tflite bytes of any model reference (a .tflite is read as is; specs and Keras models are converted)."""
    if isinstance(model, LayerGraph):
        raise TargetError("cpu-measured times a real model; a layer graph has no weights to run")
    from edgetpu_models.model_io import resolve_model
    from edgetpu_models.quantize.convert import int8_tflite_bytes

    ref = resolve_model(model, variant)
    ref.no_overrides(resolution, variant)
    if ref.kind == "tflite":
        from edgetpu_models.tflite_reader import read_tflite

        data = ref.tflite_bytes()
        read_tflite(data)  # a clear error for a non-flatbuffer
        return data
    if ref.kind == "keras":
        from edgetpu_models.model_io import load_keras

        return int8_tflite_bytes(ref.keras_model if ref.keras_model is not None else load_keras(ref.path))
    from edgetpu_models.builder import build_model

    return int8_tflite_bytes(build_model(ref.spec, ref.variant, resolution=resolution), ref.spec.normalization)


def measure(model: Any, target: Target, *, resolution: int | None = None, variant: str | None = None,
            threads: int | None = None) -> LatencyEstimate:
    """`cpu-measured`: builds the int8 .tflite (unless given one) and times it with LiteRT."""
    data = model_tflite_bytes(model, resolution, variant)
    from edgetpu_models.nas.latency.frontends import tflite_graph

    graph = tflite_graph(data)
    threads = target_threads(target, threads)
    timing = time_tflite_runs(data, threads=threads, warmup=int(target.data.get("warmup", 3)),
                              runs=int(target.data.get("runs", 15)))
    pbytes = sum(param_bytes(layer) for layer in graph.layers)
    row = LayerLatency("<model>", "tflite", graph.output_shape, graph.macs, timing.median_ms,
                       f"measured: {timing.describe()}")
    return LatencyEstimate(timing.median_ms, target.name, 0, pbytes, (row,))
