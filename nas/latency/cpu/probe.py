"""The short probe that adapts the `cpu` predictor to a CPU it was not fitted on (see `cpu.host`).

The probe times a shipped set of one-kernel int8 models (`PROBE_KERNELS_FILE`: for each kernel type of the probe
models' graphs, `PROBE_MODELS`, its kernels at the quartiles of MACs, plus a near-empty model for the invoke overhead)
with LiteRT on this CPU, and compares each kernel's time (less the invoke overhead) with the predictor's time for it as
fitted: the median of those ratios, weighted by each kernel type's share of the probe models' time, is the CPU's
factor. Nothing is built or converted, so TensorFlow is never imported and the
probe takes seconds. The kernels are made once, with TensorFlow, by `build_probe_kernels`.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any, Callable, Iterable, NamedTuple

from edgetpu_models.errors import TargetError
from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.layer_graph import Layer, LayerGraph, lowered
from edgetpu_models.nas.latency.apm import param_bytes
from edgetpu_models.nas.latency.cpu.features import FREE, kernel_key
from edgetpu_models.nas.latency.cpu.fit import KERNEL_MODEL_OPS
from edgetpu_models.nas.latency.cpu.host import PROBE_MODELS, cpu_fingerprint, probe_path, read_probes

PROBE_KERNELS_FILE = "cpu_probe_kernels.npz"
"""In the targets folder: `graphs` (JSON: the kernels' layer graphs, the invoke-overhead model first) and `k0`, `k1`,
... (each kernel's int8 .tflite bytes)."""
MAX_KERNEL_PARAM_BYTES = 160 * 1024
"""Kernels with more parameters are not picked (they would make the shipped file large, and the probe no faster)."""


class ProbeRow(NamedTuple):
    kernel: str
    """The kernel type and its input shape, e.g. 'dwconv5x5s2 28x28x144'."""
    measured_ms: float
    """Median over runs, less this CPU's invoke overhead."""
    spread: float
    predicted_ms: float
    """By the predictor as fitted (before this probe's scale; no composition factor: the kernel runs alone)."""


class ProbeResult(NamedTuple):
    cpu: str
    scale: float
    rows: tuple[ProbeRow, ...]
    seconds: float
    invoke_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "probed": datetime.date.today().isoformat(), "seconds": round(self.seconds, 1),
                "invoke_ms": self.invoke_ms, "rows": [r._asdict() for r in self.rows]}


def _probe_graphs() -> list[LayerGraph]:
    from edgetpu_models.nas.latency.frontends import spec_graph

    return [lowered(spec_graph(name, None, res)) for name, res in PROBE_MODELS]


def probe_kernel_layers() -> list[Layer]:
    """For each kernel type in the lowered graphs of PROBE_MODELS, its kernels at the quartiles of MACs (the median
    and the two quartiles, fewer where the type has fewer) among those with at most MAX_KERNEL_PARAM_BYTES of
    parameters, in type order."""
    by_type: dict[str, dict[tuple[Any, ...], Layer]] = {}
    for graph in _probe_graphs():
        for layer in graph.layers:
            if layer.op not in KERNEL_MODEL_OPS or param_bytes(layer) > MAX_KERNEL_PARAM_BYTES:
                continue
            sig = (layer.op, layer.kernel, layer.kernel_hw, layer.stride, layer.input_shape, layer.output_shape,
                   len(layer.inputs), layer.activation is not None)
            by_type.setdefault(kernel_key(layer), {}).setdefault(sig, layer)
    out = []
    for key in sorted(by_type):
        layers = sorted(by_type[key].values(), key=lambda layer: (layer.macs, layer.name))
        picks = sorted({(len(layers) - 1) * q // 4 for q in (1, 2, 3)})
        out += [layers[i] for i in picks]
    return out


def type_shares(pred: Any) -> dict[str, float]:
    """Each kernel type's share of the predicted time of PROBE_MODELS (what the probe weighs its kernels by)."""
    totals: dict[str, float] = {}
    for graph in _probe_graphs():
        for layer in graph.layers:
            if layer.op not in FREE:
                totals[kernel_key(layer)] = totals.get(kernel_key(layer), 0.0) + pred.kernel_ms(layer)[0]
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}


def weighted_median(pairs: Iterable[tuple[float, float]]) -> float:
    """The value at half the total weight of (value, weight) pairs (the lower one on a tie)."""
    items = sorted((v, w) for v, w in pairs if w > 0)
    half, acc = sum(w for _, w in items) / 2, 0.0
    for v, w in items:
        acc += w
        if acc >= half:
            return v
    raise ValueError("no positive weight")


def build_probe_kernels(path: str) -> int:
    """Converts the probe kernels (`probe_kernel_layers`) and the invoke-overhead model to int8 .tflite (TensorFlow)
    and writes them to `path` (.npz), atomically; returns how many kernels."""
    import numpy as np

    from edgetpu_models.nas.latency.cpu.fit import baseline_layer, kernel_tflite_bytes
    from edgetpu_models.nas.latency.frontends import graph_to_dict

    layers = [baseline_layer(), *probe_kernel_layers()]
    arrays = {f"k{i}": np.frombuffer(kernel_tflite_bytes(layer), dtype=np.uint8) for i, layer in enumerate(layers)}
    graphs = json.dumps([graph_to_dict(LayerGraph("k", (1, 1, 1), (layer,))) for layer in layers])
    tmp = f"{path}.tmp.npz"
    np.savez_compressed(tmp, graphs=np.array(graphs), **arrays)
    os.replace(tmp, path)
    return len(layers) - 1


def load_probe_kernels(path: str | None = None) -> list[tuple[Layer, bytes]]:
    """(layer, int8 .tflite bytes) of the shipped probe kernels, the invoke-overhead model first."""
    import numpy as np

    from edgetpu_models.nas.latency.frontends import graph_from_dict
    from edgetpu_models.nas.latency.targets import targets_dir

    path = path or os.path.join(targets_dir(), PROBE_KERNELS_FILE)
    try:
        with np.load(path, allow_pickle=False) as data:
            graphs = json.loads(str(data["graphs"]))
            return [(graph_from_dict(g).layers[0], data[f"k{i}"].tobytes()) for i, g in enumerate(graphs)]
    except (OSError, ValueError, KeyError) as e:
        raise TargetError(f"{path}: not a valid probe kernel file ({e}); reinstall the package") from None


def run_probe(target: Any, runs: int = 9,
              progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> ProbeResult:
    """Times the probe kernels here (median of `runs`, thread CPU time) against the predictor as fitted. The factor is
    the weighted median of (measured - this CPU's invoke overhead) / predicted, each kernel weighted by its type's
    share of the probe models' time (`type_shares`) over the kernels of that type."""
    from edgetpu_models.nas.latency.cpu.predictor import load_predictor
    from edgetpu_models.nas.latency.cpu.timing import time_tflite_runs

    t0 = time.perf_counter()
    pred = load_predictor(target)
    kernels = load_probe_kernels()
    (_, tiny), kernels = kernels[0], kernels[1:]
    invoke = time_tflite_runs(tiny, threads=pred.threads, runs=2 * runs + 1).median_ms
    rows, types = [], []
    for layer, data in (progress(kernels) if progress else kernels):
        timing = time_tflite_runs(data, threads=pred.threads, runs=runs)
        predicted = pred.kernel_ms(layer)[0] / pred.composition
        types.append(kernel_key(layer))
        rows.append(ProbeRow(f"{types[-1]} {'x'.join(map(str, layer.input_shape))}",
                             max(timing.median_ms - invoke, 1e-4), timing.spread, predicted))
    shares = type_shares(pred)
    weights = [shares.get(k, 0.0) / types.count(k) for k in types]
    scale = weighted_median((r.measured_ms / r.predicted_ms, w) for r, w in zip(rows, weights) if r.predicted_ms > 0)
    return ProbeResult(cpu_fingerprint(), float(scale), tuple(rows), time.perf_counter() - t0, invoke)


def write_probe(result: ProbeResult) -> str:
    """Adds (or replaces) this CPU's probe in the user's probe file, atomically; returns its path."""
    data = read_probes()
    data[result.cpu] = result.to_dict()
    path = probe_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path
