"""The whole road in one command (`edgetpu-models demo`, `make demo`), on data that ships with the package.

Steps, each announced as "[i/N] ..." with progress bars where they take a while, all outputs in one run folder:

 1. data        the bundled handwritten digits (or --data), seeded 80/20 split
 2. train       EfficientNet-EdgeTPU-S (or --model) for a few epochs: fine-tuned from ImageNet weights when they are
                in the local Keras cache, else from scratch (this machine has no network for them)
 3. QAT         quantization-aware fine-tuning (tfmot, batch norm folded as the converter folds it)
 4. export      full-integer int8 TFLite (uint8 in/out) with X.json/X.labels.txt, and a float TFLite to compare
 5. check       Edge TPU compatibility of every op (our rules, the compiler's layout)
 6. latency     predicted coral-usb latency of the int8 file
 7. compile     edgetpu_compiler, when it is installed
 8. classify    held-out images on the CPU interpreter; int8 top-1 over the whole validation split
 9. benchmark   measured CPU latency of both TFLite files
 10. summary    float vs int8 top-1, file size, ops on Edge TPU, predicted Edge TPU ms, measured CPU ms

Like the command modules, this is an orchestration layer above `nas`, `quantize` and `deploy` (imported inside
`run_demo`); nothing in the core library imports it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import EdgeTPUModelsError
from .io_utils import write_text_atomic
from .tables import format_table

STEPS = ("data", "train", "QAT", "export", "Edge TPU check", "latency estimate", "compile", "classify", "benchmark",
         "summary")


@dataclass(frozen=True)
class DemoConfig:
    model: str = "efficientnet_edgetpu_s"
    data: str | None = None
    """Image folder; None: the bundled digits."""
    out: str | None = None
    """Run folder; None: runs/demo_<UTC time>."""
    weights: str | None = None
    """None: ImageNet weights if cached locally, else from scratch; 'scratch', 'imagenet' or a file to force."""
    epochs: int | None = None
    qat_epochs: int | None = None
    resolution: int | None = None
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 0.016
    classify_images: int = 10
    benchmark_runs: int = 50

    # Chosen so the default run takes a few minutes on 2 CPU cores and reaches ~98% on the digits.
    DEFAULT_EPOCHS = 6
    DEFAULT_QAT_EPOCHS = 1
    DEFAULT_RESOLUTION = 64


@dataclass
class DemoResult:
    out_dir: str
    summary: dict[str, Any] = field(default_factory=dict)
    table: str = ""
    seconds: float = 0.0


def _cached_imagenet(model: str) -> bool:
    from .weights import imagenet_cache_path

    path = imagenet_cache_path(model)
    return path is not None and os.path.exists(path)


def _fmt_size(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


def _tflite_top1(clf: Any, val: Any, bar: Any) -> float:
    """Top-1 of a TFLite classifier on the same normalised validation tensors the Keras model was scored on."""
    hits = total = 0
    for images, labels in val:
        for x, y in zip(images.numpy(), labels.numpy()):
            scores, _ = clf.scores(clf.preprocess(x))
            hits += int(np.argmax(scores) == int(y))
            total += 1
            bar.update(1)
    return hits / max(total, 1)


def run_demo(config: DemoConfig = DemoConfig(), log: Callable[[str], None] | None = None) -> DemoResult:
    """Runs every step; returns the summary (also written to OUT/summary.json and OUT/summary.txt)."""
    from tqdm.auto import tqdm

    say = log or (lambda _msg: None)
    t_start = time.time()
    epochs = config.epochs or DemoConfig.DEFAULT_EPOCHS
    qat_epochs = config.qat_epochs if config.qat_epochs is not None else DemoConfig.DEFAULT_QAT_EPOCHS
    resolution = config.resolution or DemoConfig.DEFAULT_RESOLUTION
    out = config.out or os.path.join("runs", time.strftime("demo_%Y%m%d_%H%M%S", time.gmtime()))
    if os.path.exists(os.path.join(out, "summary.json")):
        raise EdgeTPUModelsError(f"{out}: holds a finished demo run already; choose another --out")
    os.makedirs(out, exist_ok=True)
    out = os.path.abspath(out)
    n_steps = len(STEPS)
    step_no = iter(range(1, n_steps + 1))
    timings: dict[str, float] = {}

    def step(name: str, detail: str) -> None:
        now = time.time()
        say(f"[{next(step_no)}/{n_steps}] {name}: {detail}  (t={now - t_start:.0f}s)")
        timings[name] = now

    # 1. data ----------------------------------------------------------------------------------------------------------
    from .data import default_dataset_dir, load_image_folder
    from .preprocessing import normalization_of

    data_dir = config.data or default_dataset_dir()
    bundled = config.data is None
    norm = normalization_of(config.model)
    step("data", f"{data_dir}{' (bundled handwritten digits)' if bundled else ''} at {resolution}x{resolution}")
    data = load_image_folder(data_dir, resolution, norm, batch_size=config.batch_size, validation_split=0.2,
                             seed=config.seed, augment=True, flip=not bundled)  # a mirrored digit is no digit
    say(f"      {data.num_train} train / {data.num_val} held-out images, {data.num_classes} classes"
        + (f", {data.skipped} unreadable file(s) skipped" if data.skipped else ""))

    # 2. train ---------------------------------------------------------------------------------------------------------
    from .train import TrainConfig, train

    if config.weights in (None, "auto"):
        weights = "imagenet" if _cached_imagenet(config.model) else None
    else:
        weights = None if config.weights == "scratch" else config.weights
    how = (f"fine-tuning from {weights} weights" if weights else
           "from scratch (no ImageNet weights in the local Keras cache; this machine is offline)")
    step("train", f"{config.model}, {epochs} epochs, {how}")
    tcfg = TrainConfig(epochs=epochs, batch_size=config.batch_size, resolution=resolution,
                       learning_rate=config.learning_rate if weights is None else config.learning_rate / 4,
                       warmup_epochs=1.0 if epochs > 2 else 0.0, bn_momentum=0.9, seed=config.seed,
                       flip=not bundled)
    trained = train(config.model, data_dir, os.path.join(out, "train"), tcfg, weights=weights, data=data, log=say)
    float_model = trained.model
    say(f"      float top-1 {trained.top1:.4f} on {trained.num_val} held-out images")

    # 3. QAT ------------------------------------------------------------------------------------------------------------
    from .quantize.qat import qat_finetune, quantize_model, save_model

    qat_steps = qat_epochs * data.steps_per_epoch()
    step("QAT", f"quantization-aware fine-tuning, {qat_steps} steps ({qat_epochs} epoch(s))")
    qat_model = quantize_model(float_model)
    qat_scores = qat_finetune(qat_model, data.train, qat_steps, learning_rate=1e-4, val=data.val)
    save_model(qat_model, os.path.join(out, "model_qat.keras"))
    say(f"      QAT model (fake-quantized, Keras) top-1 {qat_scores.get('val_accuracy', float('nan')):.4f}")

    # 4. export ---------------------------------------------------------------------------------------------------------
    from .deploy.export import export_tflite

    step("export", "int8 TFLite (uint8 input/output) calibrated on training images, and a float TFLite")
    calibration = data.train_plain.unbatch().batch(1).take(min(200, data.num_train))
    int8 = export_tflite(qat_model, os.path.join(out, "model_int8.tflite"), representative=calibration,
                         model_name=config.model, normalization=norm, labels=data.class_names)
    flt = export_tflite(float_model, os.path.join(out, "model_float.tflite"), int8=False, model_name=config.model,
                        normalization=norm, labels=data.class_names)
    say(f"      {int8.path} ({_fmt_size(int8.size_bytes)}), {flt.path} ({_fmt_size(flt.size_bytes)})")

    # 5. check ----------------------------------------------------------------------------------------------------------
    from .deploy.edgetpu_check import check_tflite

    step("Edge TPU check", "which ops the Edge TPU runs")
    report = check_tflite(int8.path)
    write_text_atomic(os.path.join(out, "edgetpu_check.txt"), report.format() + "\n")
    write_text_atomic(os.path.join(out, "edgetpu_check.json"), json.dumps(report.to_dict(), indent=1) + "\n")
    say(f"      {report.on_edgetpu}/{report.total} ops on the Edge TPU"
        + ("" if report.fully_mapped else f"; first on CPU: {report.first_cpu_op}"))

    # 6. latency ---------------------------------------------------------------------------------------------------------
    from .nas.latency import estimate

    step("latency estimate", "coral-usb, from the int8 file")
    est = estimate(int8.path, "coral-usb")
    write_text_atomic(os.path.join(out, "latency_coral-usb.json"), json.dumps(est.to_dict(), indent=1) + "\n")
    say(f"      predicted {est.latency_ms:.3f} ms on a Coral USB Accelerator "
        f"({est.on_chip_param_bytes} B parameters on chip, {est.off_chip_param_bytes} B streamed)")

    # 7. compile ---------------------------------------------------------------------------------------------------------
    from .deploy.compiler import compile_tflite, find_compiler

    compiled_path = None
    if find_compiler():
        step("compile", "edgetpu_compiler")
        result = compile_tflite(int8.path, out)
        compiled_path = result.output_path
        write_text_atomic(os.path.join(out, "edgetpu_compiler.txt"), result.report.format() + "\n")
        say(f"      {result.message}: {compiled_path}")
    else:
        step("compile", "skipped: edgetpu_compiler is not installed (Coral's Debian package; see README, Coral)")

    # 8. classify ---------------------------------------------------------------------------------------------------------
    from .deploy.classify import Classifier

    step("classify", f"{config.classify_images} held-out images, then all {data.num_val}, on the CPU interpreter")
    clf = Classifier(int8.path)
    clf_float = Classifier(flt.path)
    picks = _held_out_picks(data, config.classify_images, config.seed)
    rows = []
    for path, label in picks:
        r = clf.classify(path, top_k=1)
        p = r.predictions[0]
        rows.append([os.path.relpath(path, data_dir), data.class_names[label], p.label, f"{p.score:.3f}",
                     "ok" if p.index == label else "WRONG"])
    table = format_table(["held-out image", "true", "int8 says", "score", ""], rows, right=(3,))
    write_text_atomic(os.path.join(out, "classify.txt"), table + "\n")
    for line in table.splitlines():
        say("      " + line)
    with tqdm(total=data.num_val * 2, desc="scoring TFLite files on the validation split", unit="img",
              leave=False) as bar:
        int8_top1 = _tflite_top1(clf, data.val, bar)
        float_tflite_top1 = _tflite_top1(clf_float, data.val, bar)
    say(f"      int8 TFLite top-1 {int8_top1:.4f}, float TFLite top-1 {float_tflite_top1:.4f} ({clf.backend})")

    # 9. benchmark ---------------------------------------------------------------------------------------------------------
    from .deploy.benchmark import benchmark

    step("benchmark", f"{config.benchmark_runs} runs of each file on the CPU")
    with tqdm(total=2 * config.benchmark_runs, desc="benchmark", unit="run", leave=False) as bar:
        b_int8 = benchmark(int8.path, runs=config.benchmark_runs, on_run=lambda _i: bar.update(1))
        b_float = benchmark(flt.path, runs=config.benchmark_runs, on_run=lambda _i: bar.update(1))

    # 10. summary ---------------------------------------------------------------------------------------------------------
    step("summary", out)
    seconds = time.time() - t_start
    summary = {
        "model": config.model, "resolution": resolution, "data": data_dir, "classes": data.num_classes,
        "train_images": data.num_train, "held_out_images": data.num_val, "epochs": epochs, "qat_epochs": qat_epochs,
        "weights": weights or "scratch",
        "float": {"top1": trained.top1, "tflite_top1": float_tflite_top1, "file": flt.path,
                  "size_bytes": flt.size_bytes, "cpu_ms_median": b_float.median_ms, "cpu_ms_p90": b_float.p90_ms},
        "int8": {"top1": int8_top1, "qat_keras_top1": qat_scores.get("val_accuracy"), "file": int8.path,
                 "size_bytes": int8.size_bytes, "ops_on_edgetpu": report.on_edgetpu, "ops_total": report.total,
                 "predicted_edgetpu_ms": est.latency_ms, "target": "coral-usb", "cpu_ms_median": b_int8.median_ms,
                 "cpu_ms_p90": b_int8.p90_ms, "compiled": compiled_path},
        "top1_drop_points": 100.0 * (trained.top1 - int8_top1),
        "cpu_backend": b_int8.backend, "seconds": seconds,
        "step_started_s": {k: v - t_start for k, v in timings.items()},
    }
    table = format_table(
        ["", "float", "int8 (QAT)"],
        [["top-1 (held-out)", f"{100 * trained.top1:.2f}%", f"{100 * int8_top1:.2f}%"],
         ["TFLite file size", _fmt_size(flt.size_bytes), _fmt_size(int8.size_bytes)],
         ["ops on Edge TPU", "0 (float)", f"{report.on_edgetpu}/{report.total}"],
         ["predicted Edge TPU ms (coral-usb)", "-", f"{est.latency_ms:.3f}"],
         [f"measured CPU ms (median, {b_int8.backend})", f"{b_float.median_ms:.3f}", f"{b_int8.median_ms:.3f}"]],
        right=(1, 2))
    header = (f"{config.model} at {resolution}x{resolution} on {data.num_classes} classes "
              f"({data.num_train} train / {data.num_val} held-out images), {epochs}+{qat_epochs} epochs, "
              f"{seconds / 60:.1f} min; int8 - float top-1: {-summary['top1_drop_points']:+.2f} points")
    write_text_atomic(os.path.join(out, "summary.txt"), header + "\n" + table + "\n")
    write_text_atomic(os.path.join(out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    say("")
    say(header)
    say(table)
    say(f"all outputs: {out}")
    return DemoResult(out_dir=out, summary=summary, table=table, seconds=seconds)


def _held_out_picks(data: Any, n: int, seed: int) -> list[tuple[str, int]]:
    """n validation images, spread over the classes (round robin), seeded."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[str]] = {}
    for path, label in zip(data.val_files, data.val_labels):
        by_class.setdefault(label, []).append(path)
    for files in by_class.values():
        rng.shuffle(files)
    picks: list[tuple[str, int]] = []
    while len(picks) < n and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(picks) < n:
                picks.append((by_class[label].pop(), label))
    return picks

