"""Fitting the CPU predictor: sample kernels from architectures around the zoo specs (nn-Meter's prior-based
sampling), build each as a one-kernel tf_keras model, convert it to int8, time it with LiteRT, and fit the per-type
regressors (non-negative least squares on relative error); then time a few whole architectures for the composition
factor, and others, never seen in training, for the held-out evaluation in `benchmarks/latency.py`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from edgetpu_models.errors import TargetError
from edgetpu_models.layer_graph import Layer, LayerGraph, Op, numel
from edgetpu_models.nas.latency.cpu.features import (
    FAMILIES,
    FEATURES,
    FREE,
    kernel_family,
    kernel_features,
    kernel_key,
)
from edgetpu_models.nas.latency.cpu.host import cpu_fingerprint
from edgetpu_models.nas.latency.cpu.predictor import Predictor, predict_graph
from edgetpu_models.nas.latency.cpu.timing import time_tflite, time_tflite_runs
from edgetpu_models.nas.latency.targets import load_target
from edgetpu_models.spec import Spec, make_divisible, spec_from_dict

RESOLUTIONS = (128, 160, 192, 224)


def random_spec(rng: random.Random, resolutions: Sequence[int] = RESOLUTIONS) -> tuple[Spec, int]:
    """A random point of a search space around the zoo specs: per stage the block type, kernel, expansion, width and
    depth are perturbed; the input resolution is drawn from `resolutions`."""
    from edgetpu_models.zoo import zoo_spec

    base, _ = zoo_spec(rng.choice(["efficientnet_edgetpu_s", "mobilenet_edgetpu"]))
    d = base.to_dict()
    d.pop("variants", None)
    d.pop("default_variant", None)
    stages = []
    for i, st in enumerate(d["stages"]):
        st = dict(st)
        if i > 0:
            st["block"] = rng.choice(["fused_ibn", "ibn"])
            st["kernel"] = rng.choice([3, 5])
            st["expansion"] = rng.choice([4, 6, 8])
            st["filters"] = make_divisible(st["filters"] * rng.choice([0.75, 1.0, 1.25]))
            st["repeats"] = max(1, st["repeats"] + rng.choice([-1, 0, 1]))
        stages.append(st)
    d["stages"] = stages
    res = rng.choice(list(resolutions))
    d["resolution"] = res
    d["name"] = f"random_{rng.randrange(10**6):06d}"
    return spec_from_dict(d), res


def random_specs(n: int, seed: int, resolutions: Sequence[int] = RESOLUTIONS) -> list[tuple[Spec, int]]:
    rng = random.Random(seed)
    return [random_spec(rng, resolutions) for _ in range(n)]


TRAIN_SEED = 1


COMPOSITION_SEED = 2


HELD_OUT_SEED = 1000


def _layer_sig(layer: Layer) -> tuple:
    return (layer.op, layer.kernel, layer.kernel_hw, layer.stride, layer.input_shape, layer.output_shape,
            len(layer.inputs), layer.activation is not None)


def sample_kernels(samples: int, seed: int = TRAIN_SEED) -> list[Layer]:
    """Distinct kernels drawn from random architectures' graphs, spread evenly over kernel types, plus a few
    pooling / concat / pad / mul kernels (keras.applications networks use them)."""
    from edgetpu_models.nas.latency.frontends import spec_graph

    rng = random.Random(seed)
    by_key: dict[str, dict[tuple, Layer]] = {}
    for spec, res in random_specs(max(8, samples // 10), seed):
        for layer in spec_graph(spec, None, res).layers:
            if layer.op in FREE:
                continue
            by_key.setdefault(kernel_key(layer), {}).setdefault(_layer_sig(layer), layer)
    for h, c in ((56, 64), (28, 128), (14, 256), (112, 32), (7, 512), (35, 96), (17, 192)):
        by_key.setdefault("pool3x3s2", {})[("mp", h, c)] = Layer(
            f"maxpool_{h}_{c}", Op.MAX_POOL2D, ("input",), (h, h, c), ((h + 1) // 2, (h + 1) // 2, c), kernel=3,
            stride=2)
        by_key.setdefault("concat", {})[("cat", h, c)] = Layer(
            f"concat_{h}_{c}", Op.CONCAT, ("input", "input"), (h, h, c), (h, h, 2 * c))
        by_key.setdefault("elementwise_mul_1", {})[("mul", h, c)] = Layer(
            f"mul_{h}_{c}", "mul", ("input",), (h, h, c), (h, h, c), activation="relu", weight_params=2 * c)
        by_key.setdefault("elementwise_pad_1", {})[("pad", h, c)] = Layer(
            f"pad_{h}_{c}", Op.PAD, ("input",), (h, h, c), (h + 2, h + 2, c))
    keys = sorted(by_key)
    pools = {k: list(v.values()) for k, v in by_key.items()}
    for v in pools.values():
        rng.shuffle(v)
    chosen: list[Layer] = []
    while len(chosen) < samples and any(pools.values()):
        for k in keys:
            if pools[k] and len(chosen) < samples:
                chosen.append(pools[k].pop())
    return chosen


KERNEL_MODEL_OPS = frozenset({Op.CONV2D, Op.DEPTHWISE_CONV2D, Op.DENSE, Op.SOFTMAX, Op.GLOBAL_AVG_POOL,
                              Op.GLOBAL_MAX_POOL, Op.MAX_POOL2D, Op.AVG_POOL2D, Op.ADD, Op.CONCAT, Op.MUL, Op.PAD})
"""The ops `kernel_keras_model` can build a one-kernel model of."""


def kernel_keras_model(layer: Layer):
    """A one-kernel tf_keras model whose int8 conversion is exactly that kernel (fused BN and activation). Vector
    kernels (dense, softmax) take a 1x1xC image reshaped to C (the converter's input must be an image)."""
    import tf_keras as keras

    L = keras.layers
    shape = tuple(layer.input_shape)
    x = inp = keras.Input(shape=shape if len(shape) == 3 else (1, 1, numel(shape)), batch_size=1)
    if len(shape) != 3:
        x = L.Reshape(shape)(x)
    op = layer.op
    act = (lambda t: L.ReLU(6.0 if layer.activation == "relu6" else None)(t)) if layer.activation else (lambda t: t)
    if op == Op.CONV2D:
        x = L.Conv2D(layer.out_channels, layer.kernel_hw or layer.kernel, layer.stride, padding="same",
                     use_bias=False)(x)
        x = act(L.BatchNormalization()(x))
    elif op == Op.DEPTHWISE_CONV2D:
        x = L.DepthwiseConv2D(layer.kernel_hw or layer.kernel, layer.stride, padding="same", use_bias=False)(x)
        x = act(L.BatchNormalization()(x))
    elif op == Op.DENSE:
        x = act(L.Dense(layer.out_channels)(x))
    elif op == Op.SOFTMAX:
        x = L.Softmax()(x)
    elif op in (Op.GLOBAL_AVG_POOL, Op.GLOBAL_MAX_POOL):
        x = (L.GlobalAveragePooling2D() if op == Op.GLOBAL_AVG_POOL else L.GlobalMaxPooling2D())(x)
    elif op in (Op.MAX_POOL2D, Op.AVG_POOL2D):
        pool = L.MaxPooling2D if op == Op.MAX_POOL2D else L.AveragePooling2D
        x = pool(layer.kernel_hw or layer.kernel, layer.stride, padding="same")(x)
    elif op == Op.ADD:
        x = act(L.Add()([x, x]))
    elif op == Op.CONCAT:
        x = L.Concatenate()([x, x])
    elif op == Op.MUL:
        x = act(L.BatchNormalization(beta_initializer="ones", gamma_initializer="random_uniform")(x))
    elif op == Op.PAD:
        x = L.ZeroPadding2D(1)(x)
    else:
        raise TargetError(f"no kernel model for op {op!r}")
    return keras.Model(inp, x)


def kernel_tflite_bytes(layer: Layer) -> bytes:
    import numpy as np

    from edgetpu_models.quantize.convert import convert

    model = kernel_keras_model(layer)
    shape = tuple(model.input_shape[1:])
    rep = [np.random.default_rng(i).standard_normal((1, *shape)).astype(np.float32) for i in range(2)]
    return convert(model, int8=True, io_dtype="int8", representative=rep)


def baseline_layer() -> Layer:
    """The model of an invoke that does (almost) nothing: one add on a tiny tensor."""
    return Layer("tiny", Op.ADD, ("input", "input"), (1, 1, 8), (1, 1, 8))


def _baseline_ms(threads: int) -> float:
    """Cost of an invoke that does (almost) nothing (`baseline_layer`)."""
    return time_tflite(kernel_tflite_bytes(baseline_layer()), threads=threads, runs=31)


def _median_spread(records: Sequence[dict[str, Any]]) -> float | None:
    """The noise of the kernel timings: median over kernels of each one's IQR/2 over its median (None: the cached
    timings predate spread recording)."""
    spreads = [r["spread"] for r in records if isinstance(r.get("spread"), (int, float))]
    return round(statistics.median(spreads), 4) if spreads else None


def fit_predictor(samples: int = 300, threads: int = 1, seed: int = TRAIN_SEED, cache_path: str | None = None,
          progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
          composition_models: int = 5) -> dict[str, Any]:
    """Times `samples` kernels (resumable: timings are appended to `cache_path`), fits the regressors, then times
    `composition_models` whole training architectures to fit the composition factor. Returns the predictor data
    (what `predictor_path` holds). None of these architectures is in the held-out set."""
    cache_path = cache_path or os.path.join(os.path.expanduser("~"), ".cache", "edgetpu_models",
                                            f"cpu_kernels_t{threads}.jsonl")
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    from edgetpu_models.io_utils import read_jsonl_records
    from edgetpu_models.nas.latency.frontends import graph_from_dict, graph_to_dict

    done = read_jsonl_records(cache_path, "sig")  # a line cut short by an interruption is skipped
    baseline = done.get("__baseline__", {}).get("ms")
    if baseline is None:
        baseline = _baseline_ms(threads)
        _append(cache_path, {"sig": "__baseline__", "ms": baseline})
    layers = sample_kernels(samples, seed)
    it = progress(layers) if progress else layers
    records = []
    for layer in it:
        sig = repr(_layer_sig(layer))
        if sig not in done:
            timing = time_tflite_runs(kernel_tflite_bytes(layer), threads=threads, runs=9)
            rec = {"sig": sig, "ms": timing.median_ms, "spread": timing.spread,
                   "graph": graph_to_dict(LayerGraph("k", (1, 1, 1), (layer,)))}
            _append(cache_path, rec)
            done[sig] = rec
        records.append(done[sig])
    timed = [(graph_from_dict(r["graph"]).layers[0], max(r["ms"] - baseline, 1e-4)) for r in records]
    kernels = fit_kernels(timed)
    data = {"features": list(FEATURES), "threads": threads, "invoke_ms": baseline, "composition": 1.0,
            "kernels": kernels,
            "meta": {"trained": datetime.date.today().isoformat(), "cpu": cpu_fingerprint(), "samples": len(timed),
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "cpu_count": os.cpu_count(), "clock": "thread CPU time" if threads == 1 else "wall clock",
                     "timing": "median of 9 runs per kernel", "spread_median": _median_spread(records)}}
    if composition_models > 0:
        measured = measure_held_out(composition_models, threads=threads, seed=COMPOSITION_SEED, progress=progress)
        data["composition"], data["meta"]["composition_models"] = fit_composition(data, measured, composition_models)
    return data


def fit_composition(data: dict[str, Any], measured: dict[str, float], n: int) -> tuple[float, int]:
    """Median of (measured - invoke) / (sum of kernel predictions) over the composition architectures."""
    from edgetpu_models.nas.latency.frontends import spec_graph

    pred = Predictor(data["kernels"], data["invoke_ms"], data["threads"], {}, 1.0)
    ratios = []
    for spec, res in random_specs(n, COMPOSITION_SEED):
        if spec.name not in measured:
            continue
        g = spec_graph(spec, None, res)
        kernel_sum = sum(pred.kernel_ms(layer)[0] for layer in g.layers if layer.op not in FREE)
        ratios.append((measured[spec.name] - pred.invoke_ms) / kernel_sum)
    return (float(statistics.median(ratios)), len(ratios)) if ratios else (1.0, 0)


def _append(path: str, rec: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def fit_kernels(timed: Sequence[tuple[Layer, float]]) -> dict[str, list[float]]:
    """Non-negative least squares per kernel type and per family, on relative error (rows divided by the time)."""
    import numpy as np
    from scipy.optimize import nnls

    groups: dict[str, list[tuple[list[float], float]]] = {}
    for layer, ms in timed:
        f = kernel_features(layer)
        groups.setdefault(kernel_key(layer), []).append((f, ms))
        groups.setdefault(kernel_family(layer), []).append((f, ms))
    out: dict[str, list[float]] = {}
    for key, rows in groups.items():
        A = np.array([r[0] for r in rows])
        y = np.array([r[1] for r in rows])
        if len(rows) < 2 * len(FEATURES) and key not in FAMILIES:
            continue  # too few samples for its own regressor: the family's is used
        w = 1.0 / y
        coef, _ = nnls(A * w[:, None], y * w)
        out[key] = [float(c) for c in coef]
    if "elementwise" not in out:
        out["elementwise"] = [0.0, 0.0, 1e-3, 1e-3, 0.0]
    return out


@dataclass(frozen=True)
class HeldOutRow:
    name: str
    resolution: int
    macs: int
    measured_ms: float
    predicted_ms: float

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1.0


def held_out_specs(n: int = 32, seed: int = HELD_OUT_SEED) -> list[tuple[Spec, int]]:
    """Architectures the predictor never saw (a seed disjoint from training's), at several resolutions."""
    return random_specs(n, seed)


def measure_held_out(n: int = 32, threads: int = 1, seed: int = HELD_OUT_SEED, cache_path: str | None = None,
                     progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> dict[str, float]:
    """Builds, converts and times the held-out architectures; {spec name: measured ms}, cached in `cache_path`
    (resumable: already measured architectures are not rebuilt)."""
    from edgetpu_models.builder import build_model
    from edgetpu_models.io_utils import read_jsonl_records
    from edgetpu_models.quantize.convert import int8_tflite_bytes

    name = f"cpu_held_out_t{threads}.jsonl" if seed == HELD_OUT_SEED else f"cpu_models_s{seed}_t{threads}.jsonl"
    cache_path = cache_path or os.path.join(os.path.expanduser("~"), ".cache", "edgetpu_models", name)
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    done = {k: float(r["ms"]) for k, r in read_jsonl_records(cache_path, "name").items() if "ms" in r}
    specs = random_specs(n, seed)
    for spec, res in (progress(specs) if progress else specs):
        if spec.name in done:
            continue
        import tf_keras as keras

        data = int8_tflite_bytes(build_model(spec, resolution=res), spec.normalization)
        keras.backend.clear_session()
        ms = time_tflite(data, threads=threads, warmup=3, runs=15)
        _append(cache_path, {"name": spec.name, "resolution": res, "ms": ms})
        done[spec.name] = ms
    return done


def held_out_rows(measured: dict[str, float], target: str = "cpu", n: int = 32,
                  seed: int = HELD_OUT_SEED) -> list[HeldOutRow]:
    from edgetpu_models.nas.latency.frontends import spec_graph

    t = load_target(target)
    rows = []
    for spec, res in held_out_specs(n, seed):
        if spec.name not in measured:
            continue
        g = spec_graph(spec, None, res)
        rows.append(HeldOutRow(spec.name, res, g.macs, measured[spec.name], predict_graph(g, t).latency_ms))
    return rows
