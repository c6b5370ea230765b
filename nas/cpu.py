"""CPU latency: a kernel-level predictor in the style of nn-Meter (`cpu`) and real LiteRT timings (`cpu-measured`).

nn-Meter's observation is that a model's latency on a CPU is close to the sum of its *kernels'* latencies, where a
kernel is what runs after the converter's fusions (conv + BN + activation is one kernel, not three). So:

- Kernels are the layers of the fused layer graph (see `frontends`); each gets a kernel type from its op, kernel size
  and stride (XNNPACK picks a different micro-kernel for 1x1 convs, k x k convs, depthwise 3x3 / 5x5, strides...).
- Per kernel type a small linear regressor on shape features (padded MACs, input/output elements, weight bytes),
  fitted with non-negative least squares on relative error, predicts the kernel's time. Types never seen in training
  fall back to their family (conv, depthwise, elementwise, ...).
- Training data (`edgetpu-models calibrate --target cpu`): kernel configurations sampled from the layer graphs of
  random architectures around the zoo specs (nn-Meter's prior-based sampling), each built as a one-kernel tf_keras
  model, converted to int8 and timed with LiteRT on this machine.

`cpu-measured` builds the int8 .tflite of the model and times it: warm-up runs, then the median of N runs. With one
thread it reads the calling thread's CPU time rather than the wall clock: LiteRT runs a one-thread model on the
calling thread, so this is the model's latency with the core to itself, and it does not count time the thread spends
descheduled while other processes share the cores (wall-clock medians on a shared machine vary by 2-4x).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

from edgetpu_models.errors import EdgeTPUModelsError, ModelFileError, TargetError
from edgetpu_models.layer_graph import Layer, LayerGraph, lowered
from edgetpu_models.spec import Spec, spec_from_dict, make_divisible

from .apm import param_bytes
from .latency import LatencyEstimate, LayerLatency, Target, load_target, targets_dir

THREADS_ENV = "EDGETPU_MODELS_CPU_THREADS"
FEATURES = ("const", "macs", "in_elems", "out_elems", "weight_bytes")
FREE = frozenset({"reshape", "dropout", "quantize"})


# ---------------------------------------------------------------------------------------------------------------------
# Kernels and features

def kernel_family(layer: Layer) -> str:
    op = layer.op
    if op == "conv2d":
        return "conv"
    if op == "depthwise_conv2d":
        return "dwconv"
    if op == "dense":
        return "fc"
    if op in ("global_avg_pool", "global_max_pool"):
        return "gpool"
    if op in ("max_pool2d", "avg_pool2d"):
        return "pool"
    if op == "softmax":
        return "softmax"
    if op == "concat":
        return "concat"
    return "elementwise"  # add, mul, pad, activation, unknown ops


def kernel_key(layer: Layer) -> str:
    """The kernel type: family plus what selects a different micro-kernel."""
    fam = kernel_family(layer)
    if fam in ("conv", "dwconv", "pool"):
        k = f"{layer.kernel_hw[0]}x{layer.kernel_hw[1]}" if layer.kernel_hw else f"{layer.kernel}x{layer.kernel}"
        if fam == "conv" and layer.kernel == 1 and not layer.kernel_hw:
            return f"conv1x1s{layer.stride}"
        return f"{fam}{k}s{layer.stride}"
    if fam == "elementwise":
        return f"elementwise_{layer.op}_{len(layer.inputs)}"
    return fam


def _prod(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def kernel_features(layer: Layer) -> list[float]:
    """[1, padded MACs, input elements, output elements, weight bytes] in millions (XNNPACK packs output channels in
    groups of 8 and input channels in groups of 4 for int8 GEMMs, so MACs are counted on padded channel counts)."""
    out_e = _prod(layer.output_shape)
    in_e = _prod(layer.input_shape) * (len(layer.inputs) if layer.op in ("add", "mul") else 1)
    if layer.op == "concat":
        in_e = out_e
    macs = layer.macs
    if layer.op in ("conv2d", "dense"):
        cin, cout = layer.in_channels, layer.out_channels
        pad = (math.ceil(cin / 4) * 4 / cin) * (math.ceil(cout / 8) * 8 / cout)
        macs = macs * pad
    elif layer.op == "depthwise_conv2d":
        macs = macs * math.ceil(layer.out_channels / 8) * 8 / layer.out_channels
    elif layer.op in ("max_pool2d", "avg_pool2d"):
        macs = out_e * layer.kernel_area
    return [1.0, macs / 1e6, in_e / 1e6, out_e / 1e6, param_bytes(layer) / 1e6]


# ---------------------------------------------------------------------------------------------------------------------
# Predictor

@dataclass(frozen=True)
class Predictor:
    kernels: dict[str, list[float]]
    """kernel type or family -> coefficients over FEATURES (ms)."""
    invoke_ms: float
    threads: int
    meta: dict[str, Any]
    composition: float = 1.0
    """Whole-model time / sum of isolated kernel times, fitted on a few training architectures (kernels timed alone
    run with warm caches; in a model each kernel's weights and inputs are colder)."""

    def kernel_ms(self, layer: Layer) -> tuple[float, str]:
        key = kernel_key(layer)
        coef = self.kernels.get(key)
        if coef is None:
            key = kernel_family(layer)
            coef = self.kernels.get(key) or self.kernels["elementwise"]
        return max(0.0, sum(c * f for c, f in zip(coef, kernel_features(layer)))) * self.composition, key

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "threads": self.threads, "invoke_ms": self.invoke_ms,
                "composition": self.composition, "kernels": self.kernels, "meta": self.meta}


def predictor_path(target: Target) -> str:
    name = target.data.get("predictor")
    if not isinstance(name, str) or not name:
        raise TargetError(f"{target.path}: predictor: expected the predictor data file name")
    return os.path.join(targets_dir(), name)


def load_predictor(target: Target) -> Predictor:
    path = predictor_path(target)
    if not os.path.exists(path):
        raise TargetError(f"{path}: no trained CPU predictor; run `edgetpu-models calibrate --target {target.name}`")
    return _load_predictor(path, os.stat(path).st_mtime_ns)


@lru_cache(maxsize=4)
def _load_predictor(path: str, _mtime: int) -> Predictor:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if list(d["features"]) != list(FEATURES) or "elementwise" not in d["kernels"]:
            raise ValueError("features or kernel types do not match this version")
        return Predictor({k: [float(x) for x in v] for k, v in d["kernels"].items()}, float(d["invoke_ms"]),
                         int(d["threads"]), dict(d.get("meta", {})), float(d.get("composition", 1.0)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TargetError(f"{path}: not a valid CPU predictor file ({e})") from None


def predict_graph(graph: LayerGraph, target: Target) -> LatencyEstimate:
    graph = lowered(graph)  # grouped convs as the split + per-group kernels + concat that LiteRT runs
    pred = load_predictor(target)
    rows = [LayerLatency("<invoke>", "invoke", tuple(graph.input_shape), 0, pred.invoke_ms, "invoke")]
    pbytes = 0
    for layer in graph.layers:
        if layer.op in FREE:
            rows.append(LayerLatency(layer.name, layer.op, layer.output_shape, layer.macs, 0.0, "free"))
            continue
        ms, key = pred.kernel_ms(layer)
        pbytes += param_bytes(layer)
        rows.append(LayerLatency(layer.name, layer.op, layer.output_shape, layer.macs, ms, key))
    return LatencyEstimate(sum(r.ms for r in rows), target.name, 0, pbytes, tuple(rows))


# ---------------------------------------------------------------------------------------------------------------------
# Timing with LiteRT

def time_tflite(model: "str | bytes", threads: int = 1, warmup: int = 3, runs: int = 15,
                min_batch_ms: float = 5.0) -> float:
    """Median latency in ms of one inference (random input). threads == 1: the calling thread's CPU time (see the
    module docstring); otherwise the wall clock. Very short models are invoked in batches of back-to-back calls
    lasting at least `min_batch_ms`, and each batch gives one per-inference sample."""
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
    return float(statistics.median(samples))


def _threads(target: Target) -> int:
    env = os.environ.get(THREADS_ENV)
    value = env if env else target.data.get("threads", 1)
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise TargetError(f"{target.name}: threads: expected an integer >= 1, got {value!r}")
    return n


def model_tflite_bytes(model: Any, resolution: int | None = None, variant: str | None = None) -> bytes:
    """int8 .tflite bytes of any model reference (a .tflite is read as is; specs and Keras models are converted)."""
    from .frontends import KERAS_SUFFIXES, _no_override, load_keras_model

    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, LayerGraph):
        raise TargetError("cpu-measured times a real model; a layer graph has no weights to run")
    from .convert import int8_tflite_bytes

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if path.lower().endswith(".tflite"):
            _no_override(path, resolution, variant)
            from edgetpu_models.deploy.tflite_reader import read_tflite

            read_tflite(path)  # a clear error for a non-flatbuffer
            with open(path, "rb") as f:
                return f.read()
        if path.lower().endswith(KERAS_SUFFIXES):
            _no_override(path, resolution, variant)
            return int8_tflite_bytes(load_keras_model(path))
    if isinstance(model, (str, os.PathLike, Spec)):
        from edgetpu_models.builder import build_model
        from edgetpu_models.zoo import resolve_model_ref

        spec, _ = resolve_model_ref(model, variant)
        return int8_tflite_bytes(build_model(model, variant, resolution=resolution), spec.normalization)
    if hasattr(model, "layers") and hasattr(model, "input_shape"):
        return int8_tflite_bytes(model)
    raise ModelFileError(f"{type(model).__name__}: expected a zoo name, spec, Keras model, .keras/.h5 or .tflite")


def measure(model: Any, target: Target, *, resolution: int | None = None,
            variant: str | None = None) -> LatencyEstimate:
    """`cpu-measured`: builds the int8 .tflite (unless given one) and times it with LiteRT."""
    data = model_tflite_bytes(model, resolution, variant)
    from .frontends import tflite_graph

    graph = tflite_graph(data)
    threads = _threads(target)
    ms = time_tflite(data, threads=threads, warmup=int(target.data.get("warmup", 3)),
                     runs=int(target.data.get("runs", 15)))
    pbytes = sum(param_bytes(layer) for layer in graph.layers)
    row = LayerLatency("<model>", "tflite", graph.output_shape, graph.macs, ms, "measured")
    return LatencyEstimate(ms, target.name, 0, pbytes, (row,))


# ---------------------------------------------------------------------------------------------------------------------
# Architectures around the zoo specs (training kernels and held-out evaluation)

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


# ---------------------------------------------------------------------------------------------------------------------
# Training

def _layer_sig(layer: Layer) -> tuple:
    return (layer.op, layer.kernel, layer.kernel_hw, layer.stride, layer.input_shape, layer.output_shape,
            len(layer.inputs), layer.activation is not None)


def sample_kernels(samples: int, seed: int = TRAIN_SEED) -> list[Layer]:
    """Distinct kernels drawn from random architectures' graphs, spread evenly over kernel types, plus a few
    pooling / concat / pad / mul kernels (keras.applications networks use them)."""
    from .frontends import spec_graph

    rng = random.Random(seed)
    by_key: dict[str, dict[tuple, Layer]] = {}
    for spec, res in random_specs(max(8, samples // 10), seed):
        for layer in spec_graph(spec, None, res).layers:
            if layer.op in FREE:
                continue
            by_key.setdefault(kernel_key(layer), {}).setdefault(_layer_sig(layer), layer)
    for h, c in ((56, 64), (28, 128), (14, 256), (112, 32), (7, 512), (35, 96), (17, 192)):
        by_key.setdefault("pool3x3s2", {})[("mp", h, c)] = Layer(
            f"maxpool_{h}_{c}", "max_pool2d", ("input",), (h, h, c), ((h + 1) // 2, (h + 1) // 2, c), kernel=3,
            stride=2)
        by_key.setdefault("concat", {})[("cat", h, c)] = Layer(
            f"concat_{h}_{c}", "concat", ("input", "input"), (h, h, c), (h, h, 2 * c))
        by_key.setdefault("elementwise_mul_1", {})[("mul", h, c)] = Layer(
            f"mul_{h}_{c}", "mul", ("input",), (h, h, c), (h, h, c), activation="relu", weight_params=2 * c)
        by_key.setdefault("elementwise_pad_1", {})[("pad", h, c)] = Layer(
            f"pad_{h}_{c}", "pad", ("input",), (h, h, c), (h + 2, h + 2, c))
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


def kernel_keras_model(layer: Layer):
    """A one-kernel tf_keras model whose int8 conversion is exactly that kernel (fused BN and activation). Vector
    kernels (dense, softmax) take a 1x1xC image reshaped to C (the converter's input must be an image)."""
    import tf_keras as keras

    L = keras.layers
    shape = tuple(layer.input_shape)
    x = inp = keras.Input(shape=shape if len(shape) == 3 else (1, 1, _prod(shape)), batch_size=1)
    if len(shape) != 3:
        x = L.Reshape(shape)(x)
    op = layer.op
    act = (lambda t: L.ReLU(6.0 if layer.activation == "relu6" else None)(t)) if layer.activation else (lambda t: t)
    if op == "conv2d":
        x = L.Conv2D(layer.out_channels, layer.kernel_hw or layer.kernel, layer.stride, padding="same",
                     use_bias=False)(x)
        x = act(L.BatchNormalization()(x))
    elif op == "depthwise_conv2d":
        x = L.DepthwiseConv2D(layer.kernel_hw or layer.kernel, layer.stride, padding="same", use_bias=False)(x)
        x = act(L.BatchNormalization()(x))
    elif op == "dense":
        x = act(L.Dense(layer.out_channels)(x))
    elif op == "softmax":
        x = L.Softmax()(x)
    elif op in ("global_avg_pool", "global_max_pool"):
        x = (L.GlobalAveragePooling2D() if op == "global_avg_pool" else L.GlobalMaxPooling2D())(x)
    elif op in ("max_pool2d", "avg_pool2d"):
        pool = L.MaxPooling2D if op == "max_pool2d" else L.AveragePooling2D
        x = pool(layer.kernel_hw or layer.kernel, layer.stride, padding="same")(x)
    elif op == "add":
        x = act(L.Add()([x, x]) if len(layer.inputs) > 1 else L.Add()([x, x]))
    elif op == "concat":
        x = L.Concatenate()([x, x])
    elif op == "mul":
        x = act(L.BatchNormalization(beta_initializer="ones", gamma_initializer="random_uniform")(x))
    elif op == "pad":
        x = L.ZeroPadding2D(1)(x)
    else:
        raise TargetError(f"no kernel model for op {op!r}")
    return keras.Model(inp, x)


def kernel_tflite_bytes(layer: Layer) -> bytes:
    import numpy as np

    from edgetpu_models.deploy.export import convert


    model = kernel_keras_model(layer)
    shape = tuple(model.input_shape[1:])
    rep = [np.random.default_rng(i).standard_normal((1, *shape)).astype(np.float32) for i in range(2)]
    return convert(model, int8=True, io_dtype="int8", representative=rep)


def _baseline_ms(threads: int) -> float:
    """Cost of an invoke that does (almost) nothing: a one-op model on a tiny tensor."""
    tiny = Layer("tiny", "add", ("input", "input"), (1, 1, 8), (1, 1, 8))
    return time_tflite(kernel_tflite_bytes(tiny), threads=threads, runs=31)


def train(samples: int = 300, threads: int = 1, seed: int = TRAIN_SEED, cache_path: str | None = None,
          progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
          composition_models: int = 5) -> dict[str, Any]:
    """Times `samples` kernels (resumable: timings are appended to `cache_path`), fits the regressors, then times
    `composition_models` whole training architectures to fit the composition factor. Returns the predictor data
    (what `predictor_path` holds). None of these architectures is in the held-out set."""
    cache_path = cache_path or os.path.join(os.path.expanduser("~"), ".cache", "edgetpu_models",
                                            f"cpu_kernels_t{threads}.jsonl")
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    from .frontends import graph_from_dict, graph_to_dict

    done: dict[str, dict[str, Any]] = {}
    if os.path.exists(cache_path):
        with open(cache_path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    done[rec["sig"]] = rec
                except (ValueError, KeyError):
                    continue  # a line cut short by an interruption
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
            ms = time_tflite(kernel_tflite_bytes(layer), threads=threads, runs=9)
            rec = {"sig": sig, "ms": ms, "graph": graph_to_dict(LayerGraph("k", (1, 1, 1), (layer,)))}
            _append(cache_path, rec)
            done[sig] = rec
        records.append(done[sig])
    timed = [(graph_from_dict(r["graph"]).layers[0], max(r["ms"] - baseline, 1e-4)) for r in records]
    kernels = fit_kernels(timed)
    data = {"features": list(FEATURES), "threads": threads, "invoke_ms": baseline, "composition": 1.0,
            "kernels": kernels,
            "meta": {"trained": datetime.date.today().isoformat(), "samples": len(timed),
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "cpu_count": os.cpu_count(), "clock": "thread CPU time" if threads == 1 else "wall clock"}}
    if composition_models > 0:
        measured = measure_held_out(composition_models, threads=threads, seed=COMPOSITION_SEED, progress=progress)
        data["composition"], data["meta"]["composition_models"] = fit_composition(data, measured, composition_models)
    return data


def fit_composition(data: dict[str, Any], measured: dict[str, float], n: int) -> tuple[float, int]:
    """Median of (measured - invoke) / (sum of kernel predictions) over the composition architectures."""
    from .frontends import spec_graph

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
        if len(rows) < 2 * len(FEATURES) and key != kernel_family_of_key(key):
            continue  # too few samples for its own regressor: the family's is used
        w = 1.0 / y
        coef, _ = nnls(A * w[:, None], y * w)
        out[key] = [float(c) for c in coef]
    if "elementwise" not in out:
        out["elementwise"] = [0.0, 0.0, 1e-3, 1e-3, 0.0]
    return out


def kernel_family_of_key(key: str) -> str:
    for fam in ("conv", "dwconv", "fc", "gpool", "pool", "softmax", "concat", "elementwise"):
        if key == fam:
            return fam
    return ""


def train_from_cli(args: Any, target: Target) -> int:
    """`edgetpu-models calibrate --target cpu`."""
    from tqdm import tqdm

    from edgetpu_models.io_utils import write_text_atomic

    threads = args.threads or _threads(target)
    data = train(samples=args.samples or int(target.data.get("train_samples", 300)), threads=threads,
                 progress=lambda it: tqdm(it, desc="timing", unit="item"),
                 composition_models=int(target.data.get("composition_models", 5)))
    path = predictor_path(target)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    print(f"{target.name}: {len(data['kernels'])} kernel regressors from {data['meta']['samples']} timed kernels "
          f"({threads} thread(s)); invoke overhead {data['invoke_ms']:.4f} ms; composition factor "
          f"{data['composition']:.3f} from {data['meta'].get('composition_models', 0)} whole models")
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Held-out evaluation (benchmarks/latency.py)

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

    from .convert import int8_tflite_bytes

    name = f"cpu_held_out_t{threads}.jsonl" if seed == HELD_OUT_SEED else f"cpu_models_s{seed}_t{threads}.jsonl"
    cache_path = cache_path or os.path.join(os.path.expanduser("~"), ".cache", "edgetpu_models", name)
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    done: dict[str, float] = {}
    if os.path.exists(cache_path):
        with open(cache_path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    done[rec["name"]] = float(rec["ms"])
                except (ValueError, KeyError):
                    continue
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
    from .frontends import spec_graph

    t = load_target(target)
    rows = []
    for spec, res in held_out_specs(n, seed):
        if spec.name not in measured:
            continue
        g = spec_graph(spec, None, res)
        rows.append(HeldOutRow(spec.name, res, g.macs, measured[spec.name], predict_graph(g, t).latency_ms))
    return rows
