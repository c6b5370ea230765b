"""The short probe that adapts the `cpu` predictor to a CPU it was not fitted on (see `cpu.host`).

The probe times a shipped set of int8 models (`PROBE_KERNELS_FILE`) with LiteRT on this CPU: one whole zoo model
at a small resolution (`PROBE_WHOLE_MODEL`), whose measured time over the predictor's (as fitted) is the CPU's factor,
and one-kernel models (for each kernel type of the probe models' graphs, `PROBE_MODELS`, its kernels at the quartiles
of MACs, plus a near-empty model for the invoke overhead), whose ratios, weighted by each kernel type's share of the
probe models' time, say how fast the kernels themselves run here. The two differ where kernels compose into a model
differently than on the CPU the predictor was fitted on (caches), which only the whole model shows. Nothing is
built or converted, so TensorFlow is never imported and the probe takes seconds. The files are made once, with
TensorFlow, by `build_probe_kernels` (the whole model with constant weights: its file compresses to kilobytes).
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
PROBE_WHOLE_MODEL = ("efficientnet_edgetpu_s", 128)
"""The whole model the probe times too: kernels in a model run slower or faster than alone (caches), by a factor of
its own on every CPU (the predictor's `composition`), which only a whole model shows."""
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
    """What this CPU's kernel times take over the predictor's: the whole model's measured / predicted time."""
    rows: tuple[ProbeRow, ...]
    seconds: float
    invoke_ms: float
    kernel_scale: float
    """The kernels' own factor (time-weighted median, `weighted_median`): scale / kernel_scale is how differently
    kernels compose into a model on this CPU than on the one the predictor was fitted on."""
    model: ProbeRow

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "kernel_scale": self.kernel_scale, "probed": datetime.date.today().isoformat(),
                "seconds": round(self.seconds, 1), "invoke_ms": self.invoke_ms, "model": self.model._asdict(),
                "rows": [r._asdict() for r in self.rows]}


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


def probe_model_tflite() -> bytes:
    """The int8 .tflite of PROBE_WHOLE_MODEL with every weight set to one constant (the CPU's int8 kernels take as long
    whatever the values, and the file compresses to a few kilobytes)."""
    import numpy as np

    from edgetpu_models.builder import build_model
    from edgetpu_models.quantize.convert import int8_tflite_bytes
    from edgetpu_models.zoo import zoo_spec

    name, res = PROBE_WHOLE_MODEL
    spec, variant = zoo_spec(name)
    model = build_model(spec, variant, resolution=res)
    model.set_weights([np.full_like(w, 0.02 if w.ndim > 1 else 1.0) for w in model.get_weights()])
    return int8_tflite_bytes(model, spec.normalization)


def build_probe_kernels(path: str) -> int:
    """Converts the probe kernels (`probe_kernel_layers`), the invoke-overhead model and PROBE_WHOLE_MODEL to int8
    .tflite (TensorFlow) and writes them to `path` (.npz), atomically; returns how many kernels."""
    import numpy as np

    from edgetpu_models.nas.latency.cpu.fit import baseline_layer, kernel_tflite_bytes
    from edgetpu_models.nas.latency.frontends import graph_to_dict

    layers = [baseline_layer(), *probe_kernel_layers()]
    arrays = {f"k{i}": np.frombuffer(kernel_tflite_bytes(layer), dtype=np.uint8) for i, layer in enumerate(layers)}
    arrays["model"] = np.frombuffer(probe_model_tflite(), dtype=np.uint8)
    graphs = json.dumps([graph_to_dict(LayerGraph("k", (1, 1, 1), (layer,))) for layer in layers])
    tmp = f"{path}.tmp.npz"
    np.savez_compressed(tmp, graphs=np.array(graphs), **arrays)
    os.replace(tmp, path)
    return len(layers) - 1


def load_probe_kernels(path: str | None = None) -> tuple[list[tuple[Layer, bytes]], bytes]:
    """(layer, int8 .tflite bytes) of the shipped probe kernels, the invoke-overhead model first, and the .tflite
    bytes of PROBE_WHOLE_MODEL."""
    import numpy as np

    from edgetpu_models.nas.latency.frontends import graph_from_dict
    from edgetpu_models.nas.latency.targets import targets_dir

    path = path or os.path.join(targets_dir(), PROBE_KERNELS_FILE)
    try:
        with np.load(path, allow_pickle=False) as data:
            graphs = json.loads(str(data["graphs"]))
            kernels = [(graph_from_dict(g).layers[0], data[f"k{i}"].tobytes()) for i, g in enumerate(graphs)]
            return kernels, data["model"].tobytes()
    except (OSError, ValueError, KeyError) as e:
        raise TargetError(f"{path}: not a valid probe kernel file ({e}); reinstall the package") from None


def run_probe(target: Any, runs: int = 9,
              progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> ProbeResult:
    """Times the probe kernels and PROBE_WHOLE_MODEL here (median of `runs`, thread CPU time) against the predictor as
    fitted. The factor is the whole model's (measured - this CPU's invoke overhead) / predicted kernel time; the
    kernels' own factor (each kernel's ratio, weighted by its type's share of the probe models' time, `type_shares`)
    is reported beside it."""
    from edgetpu_models.nas.latency.cpu.predictor import load_predictor, predict_kernels
    from edgetpu_models.nas.latency.cpu.timing import time_tflite_runs
    from edgetpu_models.nas.latency.frontends import spec_graph

    t0 = time.perf_counter()
    pred = load_predictor(target)
    kernels, model = load_probe_kernels()
    (_, tiny), kernels = kernels[0], kernels[1:]
    invoke = time_tflite_runs(tiny, threads=pred.threads, runs=2 * runs + 1).median_ms
    rows, types = [], []
    for layer, data in (progress(kernels) if progress else kernels):
        timing = time_tflite_runs(data, threads=pred.threads, runs=runs)
        types.append(kernel_key(layer))
        rows.append(ProbeRow(f"{types[-1]} {'x'.join(map(str, layer.input_shape))}",
                             max(timing.median_ms - invoke, 1e-4), timing.spread,
                             pred.kernel_ms(layer)[0] / pred.composition))
    shares = type_shares(pred)
    weights = [shares.get(k, 0.0) / types.count(k) for k in types]
    kernel_scale = weighted_median((r.measured_ms / r.predicted_ms, w) for r, w in zip(rows, weights)
                                   if r.predicted_ms > 0)
    name, res = PROBE_WHOLE_MODEL
    timing = time_tflite_runs(model, threads=pred.threads, runs=runs)
    predicted = sum(ms for _, ms, _ in predict_kernels(spec_graph(name, None, res), pred, 1.0))
    whole = ProbeRow(f"{name} {res}x{res}x3 (whole model)", max(timing.median_ms - invoke, 1e-4), timing.spread,
                     predicted)
    return ProbeResult(cpu_fingerprint(), float(whole.measured_ms / whole.predicted_ms), tuple(rows),
                       time.perf_counter() - t0, invoke, float(kernel_scale), whole)


def write_probe(result: ProbeResult) -> str:
    """Adds (or replaces) this CPU's probe in the user's probe file, atomically; returns its path."""
    data = read_probes()
    data[result.cpu] = result.to_dict()
    path = probe_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path
