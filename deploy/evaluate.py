"""Accuracy of classifiers on a labelled image folder: top-1, top-5, per class, speed; float against int8.

    report = evaluate(["run/model_float.tflite", "run/model_int8.tflite"], "digits/", split="val")
    report.models[1].top1, report.comparisons[0].agreement

Models: `.tflite` (float or integer; a compiled `_edgetpu.tflite` runs through pycoral when a device is present, see
`interpreter.make_interpreter`) with its exporter's X.tflite.json, and `.keras`/`.h5` (normalisation and labels from
`model_io`). Each model gets its own preprocessing (`eval_data.Preprocess`); models that share one share the decoded
images. Images are decoded by a thread pool while the interpreter runs the previous batch; a LiteRT model runs
`batch` images per invoke (its batch-1 input resized) on `threads` threads.

With a float model and quantized ones, each quantized model is compared with the (first) float one: agreement (same
top-1), the classes whose top-1 drops most, and the mean / max absolute difference of the de-quantized scores.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edgetpu_models.deploy.eval_data import (
    LabelledImages,
    Preprocess,
    class_index_map,
    default_preprocess,
    read_dataset,
)
from edgetpu_models.errors import DatasetError, ModelFileError
from edgetpu_models.imagenet import is_imagenet_head
from edgetpu_models.metrics import top1_agreement, topk_applicable, topk_credit

TOP_K = 5
LOSING_CLASSES = 5


class _TFLiteModel:
    """A .tflite through `runtime.Runner` (sidecar, labels, backend), `batch` images per invoke when it can."""

    kind = "tflite"

    def __init__(self, path: str, threads: int | None, batch: int) -> None:
        from edgetpu_models.deploy.classify import Classifier

        self.runner = runner = Classifier(path, threads=threads)
        self.path, self.backend, self.labels = path, runner.backend, runner.labels
        self.num_outputs = runner.output.shape[-1]
        self.quantized = runner.input.dtype != np.float32
        self.preprocess = runner.preprocessing
        self.batch = runner.set_batch(batch)
        self.normalization_source = runner.sidecar.path if runner.sidecar else None

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.runner.predict(x)


class _KerasModel:
    """A .keras/.h5 model through `model_io.open_model` (normalisation and labels from its sidecar)."""

    kind = "keras"

    def __init__(self, path: str, threads: int | None, batch: int) -> None:
        from edgetpu_models.model_io import open_model
        from edgetpu_models.sidecar import read_sidecar

        if threads:
            _tf_threads(threads)
        loaded = open_model(path)
        self.model, self.path, self.labels, self.batch = loaded.model, path, loaded.labels, batch
        self.normalization_source = loaded.normalization_source
        shape = loaded.model.input_shape
        if isinstance(shape, list) or len(shape) != 4 or shape[3] != 3 or not shape[1] or not shape[2]:
            raise ModelFileError(f"{path}: input shape {shape}, expected [batch, H, W, 3] with a fixed H and W")
        self.batch = int(shape[0]) if shape[0] else batch  # a model saved with a fixed batch size keeps it
        self.num_outputs = int(loaded.model.output_shape[-1])
        self.quantized = any("quantize" in type(layer).__name__.lower() for layer in loaded.model.layers)
        self.backend = "tensorflow (keras" + (", QAT fake-quant)" if self.quantized else ")")
        self.quantized = False  # fake-quant runs in float: compared as a float model
        meta = read_sidecar(path)
        self.preprocess = default_preprocess((int(shape[1]), int(shape[2])), loaded.normalization,
                                             is_imagenet_head(self.num_outputs), meta.to_dict() if meta else None,
                                             (meta.path if meta else None) or path)

    def scores(self, x: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(x), self.batch):
            chunk = x[start:start + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(np.asarray(self.model(chunk, training=False), np.float32)[:n])
        return np.concatenate(out)


def _tf_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process: keep its pool
        pass


def open_runner(path: "str | os.PathLike[str]", threads: int | None = None, batch: int = 1) -> Any:
    """A scorer for one model file: .tflite, or .keras/.h5 (ModelFileError for anything else)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    if path.endswith(".tflite"):
        return _TFLiteModel(path, threads, batch)
    if path.endswith((".keras", ".h5")):
        return _KerasModel(path, threads, batch)
    raise ModelFileError(f"{path}: expected a .tflite, .keras or .h5 model file")


@dataclass
class ModelEval:
    model: str
    kind: str
    backend: str
    quantized: bool
    preprocessing: dict[str, Any]
    images: int
    top1: float
    top5: float | None
    """None when the model has 5 classes or fewer (top-5 would be 100% whatever it does)."""
    per_class: dict[str, dict[str, Any]]
    images_per_s: float
    """Images over the seconds spent in this model's inference (decoding excluded: it overlaps)."""
    inference_s: float
    batch: int
    threads: int | None
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))
    truth: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "kind": self.kind, "backend": self.backend, "quantized": self.quantized,
                "preprocessing": self.preprocessing, "images": self.images, "top1": self.top1, "top5": self.top5,
                "images_per_s": self.images_per_s, "inference_s": self.inference_s, "batch": self.batch,
                "threads": self.threads, "per_class": self.per_class}


@dataclass
class Comparison:
    reference: str
    quantized: str
    agreement: float
    """Fraction of images where both models give the same top-1 class."""
    losing_classes: list[dict[str, Any]]
    mean_abs_score_diff: float | None
    max_abs_score_diff: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EvalReport:
    data: str
    layout: str
    split: str
    images: int
    skipped: int
    classes: int
    models: list[ModelEval]
    comparisons: list[Comparison]
    wall_s: float
    decode_s: float
    """Seconds the decoding threads worked, summed over threads (it overlaps inference)."""
    workers: int

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout, "split": self.split, "images": self.images,
                "skipped": self.skipped, "classes": self.classes, "wall_s": self.wall_s, "decode_s": self.decode_s,
                "workers": self.workers, "models": [m.to_dict() for m in self.models],
                "comparisons": [c.to_dict() for c in self.comparisons]}


def decoded_batches(files: Sequence[str], preprocess: Preprocess, batch: int, workers: int,
                    timer: list[float], failed: set[int] | None = None) -> Iterator[tuple[np.ndarray, list[int]]]:
    """(normalised float32 batch [B,H,W,3], the indices of its files) of `files` in order, decoded by `workers`
    threads, two batches ahead. A file that fails to decode (cut short, changed since it was listed) is left out of
    its batch and its index added to `failed`: one bad file never loses a run."""
    def load(path: str) -> np.ndarray | None:
        t0 = time.perf_counter()
        try:
            return preprocess.load(path)
        except DatasetError:
            return None
        finally:
            timer[0] += time.perf_counter() - t0

    def gather(start: int, futures: list) -> tuple[np.ndarray, list[int]]:
        got = [(start + i, f.result()) for i, f in enumerate(futures)]
        if failed is not None:
            failed.update(i for i, x in got if x is None)
        kept = [(i, x) for i, x in got if x is not None]
        return (np.stack([x for _, x in kept]) if kept else np.zeros((0, 0, 0, 3), np.float32)), [i for i, _ in kept]

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for start in range(0, len(files), batch):
            pending.append((start, [pool.submit(load, f) for f in files[start:start + batch]]))
            if len(pending) > 2:
                yield gather(*pending.popleft())
        while pending:
            yield gather(*pending.popleft())


def _metrics(scores: np.ndarray, truth: np.ndarray, keys: Sequence[str], names: dict[str, str]) -> tuple:
    """(top-1, top-5 or None when the model has 5 classes or fewer, per class): tie-aware (`edgetpu_models.metrics`),
    so a tie never earns a hit in class-index order."""
    hit1 = topk_credit(scores, truth, 1)
    hit5 = topk_credit(scores, truth, TOP_K) if topk_applicable(TOP_K, scores.shape[1]) else None
    per_class: dict[str, dict[str, Any]] = {}
    keys_arr = np.asarray(keys)
    for key in sorted(set(keys)):
        mask = keys_arr == key
        per_class[key] = {"name": names.get(key, key), "images": int(mask.sum()), "top1": float(hit1[mask].mean()),
                          "top5": None if hit5 is None else float(hit5[mask].mean())}
    return float(hit1.mean()), None if hit5 is None else float(hit5.mean()), per_class


def compare(ref: ModelEval, quant: ModelEval) -> Comparison:
    """Float `ref` against quantized `quant` on the same images."""
    agree = float(np.mean(top1_agreement(ref.scores, quant.scores)))  # ties never agree in class-index order
    drops = [{"class": key, "name": rc["name"], "images": rc["images"], "float_top1": rc["top1"],
              "quantized_top1": quant.per_class[key]["top1"], "drop": rc["top1"] - quant.per_class[key]["top1"]}
             for key, rc in ref.per_class.items()]
    losing = sorted((d for d in drops if d["drop"] > 0), key=lambda d: (-d["drop"], d["class"]))[:LOSING_CLASSES]
    mean_diff = max_diff = None
    if ref.scores.shape == quant.scores.shape:
        diff = np.abs(ref.scores - quant.scores)
        mean_diff, max_diff = float(diff.mean()), float(diff.max())
    return Comparison(ref.model, quant.model, agree, losing, mean_diff, max_diff)


def _class_names(data: LabelledImages) -> dict[str, str]:
    if not data.wordnet:
        return {k: k for k in data.classes}
    from edgetpu_models.imagenet import class_names, wordnet_ids

    return dict(zip(wordnet_ids(1000), class_names(1000)))


def evaluate(models: Sequence["str | os.PathLike[str]"], data: "str | os.PathLike[str]", *,
             ground_truth: str | None = None, split: str = "all", validation_split: float = 0.2, seed: int = 0,
             threads: int | None = None, batch: int = 16, workers: int | None = None,
             pipeline: str | None = None, crop_fraction: float | None = None, limit: int | None = None,
             on_images: Callable[[int, int], None] | None = None) -> EvalReport:
    """Scores every model on the labelled images of `data` (see the module docstring; `pipeline`/`crop_fraction`
    override every model's preprocessing, `limit` keeps the first N images, `on_images(n, total)` reports progress:
    n more model-images scored out of total)."""
    if not models:
        raise ModelFileError("evaluate: no model given")
    if batch < 1 or (threads is not None and threads < 1) or (limit is not None and limit < 1):
        raise DatasetError("batch, threads and limit: expected integers >= 1")
    dataset = read_dataset(data, ground_truth, split, validation_split, seed)
    if limit is not None:
        dataset = LabelledImages(dataset.directory, dataset.layout, dataset.files[:limit], dataset.keys[:limit],
                                 sorted(set(dataset.keys[:limit])), dataset.skipped)
    if not dataset.files:
        raise DatasetError(f"{dataset.directory}: no images in split {split!r}")
    runners = [open_runner(m, threads, batch) for m in models]
    for r in runners:
        r.preprocess = _override(r.preprocess, pipeline, crop_fraction)
    truths = [np.asarray([class_index_map(dataset, r.labels, r.num_outputs, r.path)[k] for k in dataset.keys])
              for r in runners]
    workers = workers or min(8, os.cpu_count() or 1)
    decode = [0.0]
    t0 = time.perf_counter()
    scores, seconds, kept = _run_groups(runners, dataset.files, batch, workers, decode, on_images)
    wall = time.perf_counter() - t0
    if not kept:
        raise DatasetError(f"{dataset.directory}: none of the {len(dataset.files)} images could be decoded")
    undecodable = len(dataset.files) - len(kept)
    keys = [dataset.keys[i] for i in kept]
    names = _class_names(dataset)
    evals = []
    for r, truth, s, sec in zip(runners, truths, scores, seconds):
        truth = truth[kept]
        top1, top5, per_class = _metrics(s, truth, keys, names)
        pre = {**r.preprocess.to_dict(), "normalization_from": r.normalization_source}
        evals.append(ModelEval(r.path, r.kind + (" int8" if r.quantized else " float"), r.backend, r.quantized, pre,
                               len(s), top1, top5, per_class, len(s) / max(sec, 1e-9), sec, r.batch, threads, s,
                               truth))
    floats = [e for e in evals if not e.quantized]
    comparisons = [compare(floats[0], e) for e in evals if e.quantized and floats]
    return EvalReport(dataset.directory, dataset.layout, split, len(kept), len(dataset.skipped) + undecodable,
                      len(dataset.classes), evals, comparisons, wall, decode[0], workers)


def _override(pre: Preprocess, pipeline: str | None, crop: float | None) -> Preprocess:
    from dataclasses import replace

    from edgetpu_models.deploy.eval_data import PIPELINES

    if pipeline is not None and pipeline not in PIPELINES:
        raise DatasetError(f"pipeline: expected one of {', '.join(PIPELINES)}, got {pipeline!r}")
    if crop is not None and not 0.0 < crop <= 1.0:
        raise DatasetError(f"crop: expected a fraction in (0, 1], got {crop!r}")
    return replace(pre, pipeline=pipeline or pre.pipeline, crop_fraction=crop or pre.crop_fraction)


def _run_groups(runners: list, files: Sequence[str], batch: int, workers: int, decode: list[float],
                on_images: Callable[[int], None] | None) -> tuple[list[np.ndarray], list[float], list[int]]:
    """(scores of every runner, seconds, indices of the files scored): runners with the same preprocessing share one
    pass over the decoded images; a file any pass could not decode is dropped from every runner's scores, so all are
    scored on the same images."""
    groups: dict[Preprocess, list[int]] = {}
    for i, r in enumerate(runners):
        groups.setdefault(r.preprocess, []).append(i)
    parts: list[list[np.ndarray]] = [[] for _ in runners]
    rows: list[list[int]] = [[] for _ in runners]
    seconds = [0.0] * len(runners)
    failed: set[int] = set()
    for pre, members in groups.items():
        for x, idx in decoded_batches(files, pre, batch, workers, decode, failed):
            for i in members:
                t0 = time.perf_counter()
                if len(idx):
                    parts[i].append(runners[i].scores(x))
                rows[i].extend(idx)
                seconds[i] += time.perf_counter() - t0
            if on_images:
                on_images(len(idx) * len(members), len(files) * len(runners))
    kept = [i for i in range(len(files)) if i not in failed]
    scores = []
    for p, r in zip(parts, rows):
        s = np.concatenate(p) if p else np.zeros((0, 1), np.float32)
        pos = {f: j for j, f in enumerate(r)}
        scores.append(s[[pos[i] for i in kept]] if len(r) != len(kept) else s)
    return scores, seconds, kept


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def format_report(report: EvalReport, worst: int = 10) -> str:
    """The text `edgetpu-models evaluate` prints: models, comparisons, and each model's weakest classes."""
    from edgetpu_models.tables import format_table

    lines = [f"{report.data}: {report.layout}, split {report.split}, {report.images} images, {report.classes} classes"
             + (f", {report.skipped} unreadable file(s) skipped" if report.skipped else "")]
    rows = [[os.path.basename(m.model), m.kind, m.backend, f"{m.preprocessing['pipeline']} "
             f"{m.preprocessing['crop_fraction']:.3f}", _pct(m.top1), _pct(m.top5), f"{m.images_per_s:.1f}"]
            for m in report.models]
    lines.append(format_table(["model", "kind", "backend", "crop", "top-1", "top-5", "images/s"], rows,
                              right=(4, 5, 6)))
    for c in report.comparisons:
        diff = "" if c.mean_abs_score_diff is None else (f"; |score difference| mean {c.mean_abs_score_diff:.4f}, "
                                                          f"max {c.max_abs_score_diff:.4f}")
        lines.append(f"{os.path.basename(c.quantized)} vs {os.path.basename(c.reference)}: agreement (same top-1) "
                     f"{_pct(c.agreement)}{diff}")
        if c.losing_classes:
            lines.append("  classes losing most: " + ", ".join(
                f"{d['name']} {_pct(d['float_top1'])} -> {_pct(d['quantized_top1'])}" for d in c.losing_classes))
    for m in report.models:
        classes = sorted(m.per_class.items(), key=lambda kv: (kv[1]["top1"], kv[0]))
        shown = classes if len(classes) <= worst else classes[:worst]
        title = "per-class top-1" if len(classes) <= worst else f"the {worst} weakest classes (top-1)"
        lines.append(f"{os.path.basename(m.model)}, {title}: " + ", ".join(
            f"{v['name']} {_pct(v['top1'])} ({v['images']})" for _k, v in shown))
    lines.append(f"{report.wall_s:.1f} s in all; decoding {report.decode_s:.1f} s over {report.workers} threads "
                 f"(overlapping inference)")
    return "\n".join(lines)
