"""The whole road in one command (`edgetpu-models demo`, `make demo`), on data that ships with the package.

Steps, each announced as "[i/N] ..." with progress bars where they take a while, all outputs in one run folder:

 1. data        the bundled handwritten digits (or --data), seeded 80/20 split
 2. train       EfficientNet-EdgeTPU-S (or --model) for a few epochs: fine-tuned from ImageNet weights when they are
                in the local Keras cache, else from scratch (this machine has no network for them)
 3. QAT         quantization-aware fine-tuning (tfmot, batch norm folded as the converter folds it)
 4. export      full-integer int8 TFLite (uint8 in/out) with its sidecar, and a float TFLite to compare
 5. check       Edge TPU compatibility of every op (our rules, the compiler's layout)
 6. latency     predicted coral-usb latency of the int8 file
 7. compile     edgetpu_compiler, when it is installed
 8. classify    held-out images on the CPU interpreter; int8 top-1 over the whole validation split
 9. benchmark   measured CPU latency of both TFLite files
 10. summary    float vs int8 top-1, file size, ops on Edge TPU, predicted Edge TPU ms, measured CPU ms

The demo workflow (`run_demo(DemoConfig)`) crosses training, quantize, latency and deploy, so it lives in the deploy
room, the lowest that may import all four; the CLI's `demo` command only parses its flags into a DemoConfig and calls
it. The steps import TensorFlow-backed modules inside their functions, so importing this module stays light.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgetpu_models.errors import EdgeTPUModelsError, UsageError
from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.tables import format_table

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
    from edgetpu_models.weights import imagenet_cache_path

    path = imagenet_cache_path(model)
    return path is not None and os.path.exists(path)


def _fmt_size(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


def _tflite_top1(clf: Any, val: Any, bar: Any) -> float:
    """Top-1 of a TFLite classifier on the same normalised validation tensors the Keras model was scored on."""
    from edgetpu_models.metrics import topk_credit

    hits = 0.0
    total = 0
    for images, labels in val:
        for x, y in zip(images.numpy(), labels.numpy()):
            scores, _ = clf.scores(clf.preprocess(x))
            hits += float(topk_credit(np.asarray(scores).reshape(1, -1), np.array([int(y)]), 1)[0])  # tie-aware
            total += 1
            bar.update(1)
    return hits / max(total, 1)


def run_demo(config: DemoConfig = DemoConfig(), log: Callable[[str], None] | None = None) -> DemoResult:
    """Runs every step; returns the summary (also written to OUT/summary.json and OUT/summary.txt)."""
    return _DemoRun(config, log or (lambda _msg: None)).run()


class _DemoRun:
    """One demo run: the resolved settings, the run folder, the step announcements, and what each step hands on.

    The steps run in STEPS order; each one announces itself, does its work and keeps its products as attributes
    for the later steps and the summary.
    """

    # Set by the steps, in order: data, train, QAT, export, check, latency, compile, classify, benchmark.
    data_dir: str
    bundled: bool
    norm: Any
    data: Any
    weights: str | None
    trained: Any
    qat_model: Any
    qat_scores: dict
    int8: Any
    flt: Any
    report: Any
    est: Any
    compiled_path: str | None
    int8_top1: float
    float_tflite_top1: float
    b_int8: Any
    b_float: Any

    def __init__(self, config: DemoConfig, say: Callable[[str], None]):
        self.config, self.say = config, say
        self.t_start = time.time()
        self.epochs = config.epochs if config.epochs is not None else DemoConfig.DEFAULT_EPOCHS
        self.qat_epochs = config.qat_epochs if config.qat_epochs is not None else DemoConfig.DEFAULT_QAT_EPOCHS
        self.resolution = config.resolution or DemoConfig.DEFAULT_RESOLUTION
        _check_counts(self.epochs, self.qat_epochs)
        self.out, self.created = _new_run_folder(config.out)
        self.timings: dict[str, float] = {}
        """When each step started (time.time())."""

    def run(self) -> DemoResult:
        """All the steps; a run that fails before writing any file removes the run folder it created."""
        try:
            return self._steps()
        except BaseException:
            if self.created:
                _remove_if_no_files(self.out)
            raise

    def _steps(self) -> DemoResult:
        self.load_data()
        self.train_float()
        self.fine_tune_qat()
        self.export()
        self.check()
        self.estimate_latency()
        self.compile_edgetpu()
        self.classify()
        self.benchmark_cpu()
        return self.summarise()

    def step(self, name: str, detail: str) -> None:
        """Announces step `name` (one of STEPS) as "[i/N] name: detail  (t=...s)" and records when it started."""
        now = time.time()
        self.say(f"[{STEPS.index(name) + 1}/{len(STEPS)}] {name}: {detail}  (t={now - self.t_start:.0f}s)")
        self.timings[name] = now

    def file(self, name: str) -> str:
        return os.path.join(self.out, name)

    def write_json(self, name: str, obj: Any) -> None:
        write_text_atomic(self.file(name), json.dumps(obj, indent=1) + "\n")

    # 1. data
    def load_data(self) -> None:
        from edgetpu_models.data import default_dataset_dir, load_image_folder
        from edgetpu_models.zoo import normalization_of

        config, res = self.config, self.resolution
        self.data_dir = config.data or default_dataset_dir()
        self.bundled = config.data is None
        self.norm = normalization_of(config.model)
        self.step("data", f"{self.data_dir}{' (bundled handwritten digits)' if self.bundled else ''} at {res}x{res}")
        self.data = load_image_folder(self.data_dir, res, self.norm, batch_size=config.batch_size,
                                      validation_split=0.2, seed=config.seed, augment=True,
                                      flip=not self.bundled)  # a mirrored digit is no digit
        data = self.data
        self.say(f"      {data.num_train} train / {data.num_val} held-out images, {data.num_classes} classes"
                 + (f", {data.skipped} unreadable file(s) skipped" if data.skipped else ""))
        from edgetpu_models.quantize.ptq import require_calibration_images

        # step 4 calibrates the int8 export on the training split: say so now, not after training
        require_calibration_images(data.num_train, f"{self.data_dir} (training split)",
                                   " (step 4, export); give a folder with more images")

    # 2. train
    def train_float(self) -> None:
        from edgetpu_models.train import TrainConfig, train

        config = self.config
        self.weights = _initial_weights(config)
        how = (f"fine-tuning from {self.weights} weights" if self.weights else
               "from scratch (no ImageNet weights in the local Keras cache; this machine is offline)")
        self.step("train", f"{config.model}, {self.epochs} epochs, {how}")
        tcfg = TrainConfig(epochs=self.epochs, batch_size=config.batch_size, resolution=self.resolution,
                           learning_rate=config.learning_rate if self.weights is None else config.learning_rate / 4,
                           warmup_epochs=1.0 if self.epochs > 2 else 0.0, bn_momentum=0.9, seed=config.seed,
                           flip=not self.bundled)
        self.trained = train(config.model, self.data_dir, self.file("train"), tcfg, weights=self.weights,
                             data=self.data, log=self.say)
        self.say(f"      float top-1 {self.trained.top1:.4f} on {self.trained.num_val} held-out images")

    # 3. QAT
    def fine_tune_qat(self) -> None:
        from edgetpu_models.model_io import save_model
        from edgetpu_models.quantize.qat import qat_finetune, quantize_model
        from edgetpu_models.sidecar import Sidecar

        qat_steps = self.qat_epochs * self.data.steps_per_epoch()
        self.step("QAT", f"quantization-aware fine-tuning, {qat_steps} steps ({self.qat_epochs} epoch(s))")
        self.qat_model = quantize_model(self.trained.model)
        self.qat_scores = qat_finetune(self.qat_model, self.data.train, qat_steps, learning_rate=1e-4,
                                       val=self.data.val)
        res = self.resolution
        save_model(self.qat_model, self.file("model_qat.keras"),
                   Sidecar(model=self.config.model, normalization=self.norm, labels=tuple(self.data.class_names),
                           input_size=(res, res)))
        self.say(f"      QAT model (fake-quantized, Keras) top-1 "
                 f"{self.qat_scores.get('val_accuracy', float('nan')):.4f}")

    # 4. export
    def export(self) -> None:
        from edgetpu_models.deploy.export import export_tflite

        data, model = self.data, self.config.model
        self.step("export", "int8 TFLite (uint8 input/output) calibrated on training images, and a float TFLite")
        calibration = data.train_plain.unbatch().batch(1).take(min(200, data.num_train))
        self.int8 = export_tflite(self.qat_model, self.file("model_int8.tflite"), representative=calibration,
                                  model_name=model, normalization=self.norm, labels=data.class_names)
        self.flt = export_tflite(self.trained.model, self.file("model_float.tflite"), int8=False, model_name=model,
                                 normalization=self.norm, labels=data.class_names)
        self.say(f"      {self.int8.path} ({_fmt_size(self.int8.size_bytes)}), "
                 f"{self.flt.path} ({_fmt_size(self.flt.size_bytes)})")

    # 5. check
    def check(self) -> None:
        from edgetpu_models.deploy.edgetpu_check import check_tflite

        self.step("Edge TPU check", "which ops the Edge TPU runs")
        report = self.report = check_tflite(self.int8.path)
        write_text_atomic(self.file("edgetpu_check.txt"), report.format() + "\n")
        self.write_json("edgetpu_check.json", report.to_dict())
        self.say(f"      {report.on_edgetpu}/{report.total} ops on the Edge TPU"
                 + ("" if report.fully_mapped else f"; first on CPU: {report.first_cpu_op}"))

    # 6. latency
    def estimate_latency(self) -> None:
        from edgetpu_models.nas.latency.estimator import estimate

        self.step("latency estimate", "coral-usb, from the int8 file")
        est = self.est = estimate(self.int8.path, "coral-usb")
        self.write_json("latency_coral-usb.json", est.to_dict())
        self.say(f"      predicted {est.latency_ms:.3f} ms on a Coral USB Accelerator "
                 f"({est.on_chip_param_bytes} B parameters on chip, {est.off_chip_param_bytes} B streamed)")

    # 7. compile
    def compile_edgetpu(self) -> None:
        from edgetpu_models.deploy.compiler import compile_tflite, find_compiler

        self.compiled_path = None
        if not find_compiler():
            self.step("compile",
                      "skipped: edgetpu_compiler is not installed (Coral's Debian package; see README, Coral)")
            return
        self.step("compile", "edgetpu_compiler")
        result = compile_tflite(self.int8.path, self.out)
        self.compiled_path = result.output_path
        write_text_atomic(self.file("edgetpu_compiler.txt"), result.report.format() + "\n")
        self.say(f"      {result.message}: {self.compiled_path}")

    # 8. classify
    def classify(self) -> None:
        from tqdm.auto import tqdm

        from edgetpu_models.deploy.classify import Classifier

        data = self.data
        self.step("classify",
                  f"{self.config.classify_images} held-out images, then all {data.num_val}, on the CPU interpreter")
        clf = Classifier(self.int8.path)
        clf_float = Classifier(self.flt.path)
        self.classify_examples(clf)
        with tqdm(total=data.num_val * 2, desc="scoring TFLite files on the validation split", unit="img",
                  leave=False) as bar:
            self.int8_top1 = _tflite_top1(clf, data.val, bar)
            self.float_tflite_top1 = _tflite_top1(clf_float, data.val, bar)
        self.say(f"      int8 TFLite top-1 {self.int8_top1:.4f}, float TFLite top-1 {self.float_tflite_top1:.4f} "
                 f"({clf.backend})")

    def classify_examples(self, clf: Any) -> None:
        """A few held-out images through the int8 file, one table row each (printed and in classify.txt)."""
        data = self.data
        rows = []
        for path, label in _held_out_picks(data, self.config.classify_images, self.config.seed):
            p = clf.classify(path, top_k=1).predictions[0]
            rows.append([os.path.relpath(path, self.data_dir), data.class_names[label], p.label, f"{p.score:.3f}",
                         "ok" if p.index == label else "WRONG"])
        table = format_table(["held-out image", "true", "int8 says", "score", ""], rows, right=(3,))
        write_text_atomic(self.file("classify.txt"), table + "\n")
        for line in table.splitlines():
            self.say("      " + line)

    # 9. benchmark
    def benchmark_cpu(self) -> None:
        from tqdm.auto import tqdm

        from edgetpu_models.deploy.benchmark import benchmark

        runs = self.config.benchmark_runs
        self.step("benchmark", f"{runs} runs of each file on the CPU")
        with tqdm(total=2 * runs, desc="benchmark", unit="run", leave=False) as bar:
            self.b_int8 = benchmark(self.int8.path, runs=runs, on_run=lambda _i: bar.update(1))
            self.b_float = benchmark(self.flt.path, runs=runs, on_run=lambda _i: bar.update(1))

    # 10. summary
    def summarise(self) -> DemoResult:
        self.step("summary", self.out)
        seconds = time.time() - self.t_start
        summary = _summary(self, seconds)
        table = _summary_table(self)
        header = _summary_header(self, seconds, summary["top1_drop_points"])
        write_text_atomic(self.file("summary.txt"), header + "\n" + table + "\n")
        self.write_json("summary.json", summary)
        self.say("")
        self.say(header)
        self.say(table)
        self.say(f"all outputs: {self.out}")
        return DemoResult(out_dir=self.out, summary=summary, table=table, seconds=seconds)


# The summary of a finished run: summary.json's fields, the float vs int8 table and its header line.

def _summary(run: _DemoRun, seconds: float) -> dict[str, Any]:
    data, flt, int8, b_float, b_int8 = run.data, run.flt, run.int8, run.b_float, run.b_int8
    return {
        "model": run.config.model, "resolution": run.resolution, "data": run.data_dir,
        "classes": data.num_classes, "train_images": data.num_train, "held_out_images": data.num_val,
        "epochs": run.epochs, "qat_epochs": run.qat_epochs, "weights": run.weights or "scratch",
        "float": {"top1": run.trained.top1, "tflite_top1": run.float_tflite_top1, "file": flt.path,
                  "size_bytes": flt.size_bytes, "cpu_ms_median": b_float.median_ms, "cpu_ms_p90": b_float.p90_ms},
        "int8": {"top1": run.int8_top1, "qat_keras_top1": run.qat_scores.get("val_accuracy"), "file": int8.path,
                 "size_bytes": int8.size_bytes, "ops_on_edgetpu": run.report.on_edgetpu,
                 "ops_total": run.report.total, "predicted_edgetpu_ms": run.est.latency_ms,
                 "target": "coral-usb", "cpu_ms_median": b_int8.median_ms, "cpu_ms_p90": b_int8.p90_ms,
                 "compiled": run.compiled_path},
        "top1_drop_points": 100.0 * (run.trained.top1 - run.int8_top1),
        "cpu_backend": b_int8.backend, "seconds": seconds,
        "step_started_s": {k: v - run.t_start for k, v in run.timings.items()},
    }


def _summary_table(run: _DemoRun) -> str:
    flt, int8, report = run.flt, run.int8, run.report
    return format_table(
        ["", "float", "int8 (QAT)"],
        [["top-1 (held-out)", f"{100 * run.trained.top1:.2f}%", f"{100 * run.int8_top1:.2f}%"],
         ["TFLite file size", _fmt_size(flt.size_bytes), _fmt_size(int8.size_bytes)],
         ["ops on Edge TPU", "0 (float)", f"{report.on_edgetpu}/{report.total}"],
         ["predicted Edge TPU ms (coral-usb)", "-", f"{run.est.latency_ms:.3f}"],
         [f"measured CPU ms (median, {run.b_int8.backend})", f"{run.b_float.median_ms:.3f}",
          f"{run.b_int8.median_ms:.3f}"]],
        right=(1, 2))


def _summary_header(run: _DemoRun, seconds: float, drop_points: float) -> str:
    data = run.data
    return (f"{run.config.model} at {run.resolution}x{run.resolution} on {data.num_classes} classes "
            f"({data.num_train} train / {data.num_val} held-out images), {run.epochs}+{run.qat_epochs} epochs, "
            f"{seconds / 60:.1f} min; int8 - float top-1: {-drop_points:+.2f} points")


def _check_counts(epochs: int, qat_epochs: int) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"epochs: expected an integer >= 1, got {epochs!r}")
    if not isinstance(qat_epochs, int) or qat_epochs < 0:
        raise UsageError(f"qat_epochs: expected an integer >= 0, got {qat_epochs!r}")


def _new_run_folder(out: str | None) -> tuple[str, bool]:
    """The run folder, created (absolute path), and whether this call created it; runs/demo_<UTC time> by default; a
    finished run is not reused."""
    out = out or os.path.join("runs", time.strftime("demo_%Y%m%d_%H%M%S", time.gmtime()))
    if os.path.exists(os.path.join(out, "summary.json")):
        raise EdgeTPUModelsError(f"{out}: holds a finished demo run already; choose another --out")
    created = not os.path.lexists(out)
    os.makedirs(out, exist_ok=True)
    return os.path.abspath(out), created


def _remove_if_no_files(folder: str) -> None:
    """Removes `folder` when it holds nothing but (empty) sub-folders; anything else in it keeps all of it."""
    empty_dirs = []
    for root, dirs, files in os.walk(folder, topdown=False):
        if files or any(os.path.islink(os.path.join(root, d)) for d in dirs):
            return
        empty_dirs.append(root)
    for path in empty_dirs:  # bottom-up: children before their parents
        try:
            os.rmdir(path)
        except OSError:
            return


def _initial_weights(config: DemoConfig) -> str | None:
    """The weights to start training from: ImageNet when cached locally (unless forced otherwise), else None."""
    if config.weights in (None, "auto"):
        return "imagenet" if _cached_imagenet(config.model) else None
    return None if config.weights == "scratch" else config.weights


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

