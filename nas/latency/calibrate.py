"""Calibration of the latency targets: fit each target's few free constants to measured latencies.

Edge TPU targets (coral-usb, coral-devboard) are fitted to the published Coral benchmark table
(`targets/coral_benchmarks.csv`): the rows whose architecture tf_keras.applications can build are built with
`weights=None`, converted to int8 .tflite with random calibration images, read back through the .tflite front end
and costed. Their layer graphs are kept as JSON in `targets/calibration/` so the fit (and the tests) can be rerun
without TensorFlow. The fit minimises squared log errors (relative error, every model weighs the same) over the
target's `calibration.free` constants; the leave-one-out table refits without each model in turn and predicts it.

`pixel4` is fitted to the published Pixel 4 latencies listed in its own file (zoo models, spec front end); the
`cpu` predictor is trained by `edgetpu_models.nas.latency.cpu.predictor.train`.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from edgetpu_models.errors import TargetError
from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.layer_graph import LayerGraph
from edgetpu_models.nas.latency.apm import CALIBRATED, EdgeTPUConstants, graph_terms, terms_latency_ms
from edgetpu_models.nas.latency.frontends import graph_from_dict, graph_to_dict
from edgetpu_models.nas.latency.targets import load_target, targets_dir, user_targets_dir
from edgetpu_models.nas.latency.types import Target

BOUNDS = {"compute_efficiency": (0.01, 1.0), "vector_efficiency": (0.001, 1.0), "act_bytes_per_cycle": (1.0, 4096.0),
          "link_mb_per_s": (10.0, 20000.0), "weight_bytes_per_cycle": (8.0, 1024.0),
          "layer_overhead_us": (0.05, 500.0), "invoke_overhead_us": (1.0, 20000.0),
          "transfer_overhead_us": (0.001, 2000.0)}


@dataclass(frozen=True)
class CalibrationRow:
    model: str
    """Name in the benchmark table (e.g. 'ResNet-50 V1')."""
    keras_app: str | None
    """tf_keras.applications constructor, or None for a zoo model (pixel4)."""
    resolution: int
    measured_ms: float

    @property
    def key(self) -> str:
        return f"{self.keras_app}_{self.resolution}" if self.keras_app else self.model


@dataclass(frozen=True)
class LooRow:
    model: str
    measured_ms: float
    predicted_ms: float

    @property
    def error(self) -> float:
        """Relative error of the prediction (+ = predicted slower than measured)."""
        return self.predicted_ms / self.measured_ms - 1.0


@dataclass(frozen=True)
class CalibrationResult:
    target: str
    constants: dict[str, float]
    """The fitted free constants (all rows)."""
    fit_rows: tuple[LooRow, ...]
    """In-sample predictions with the constants fitted to every row."""
    loo_rows: tuple[LooRow, ...]
    spearman: float
    median_abs_error: float


def benchmarks_csv() -> str:
    return os.path.join(targets_dir(), "coral_benchmarks.csv")


def calibration_dir() -> str:
    return os.path.join(targets_dir(), "calibration")


def benchmark_rows(column: str, path: str | None = None) -> list[CalibrationRow]:
    """Rows of the Coral table that keras.applications can build, with a measurement in `column`."""
    path = path or benchmarks_csv()
    with open(path, encoding="utf-8") as f:
        reader = csv.DictReader(line for line in f if not line.startswith("#"))
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise TargetError(f"{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
        rows = []
        for r in reader:
            app = (r.get("keras_app") or "-").strip()
            value = (r.get(column) or "").strip()
            if app == "-" or not value:
                continue
            rows.append(CalibrationRow(r["model"], app, int(r["input"]), float(value)))
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Calibration graphs

def graph_json_path(row: CalibrationRow) -> str:
    return os.path.join(calibration_dir(), f"{row.key}.json")


def load_graph_json(path: str) -> LayerGraph:
    with open(path, encoding="utf-8") as f:
        return graph_from_dict(json.load(f))


def build_calibration_graph(row: CalibrationRow, work_dir: str) -> LayerGraph:
    """Builds the keras.applications model (weights=None), converts it to int8 .tflite (kept in `work_dir`, so an
    interrupted calibration resumes) and reads its layer graph back through the .tflite front end."""
    from edgetpu_models.io_utils import write_bytes_atomic
    from edgetpu_models.nas.latency.frontends import tflite_graph

    tflite_path = os.path.join(work_dir, f"{row.key}.tflite")
    if not os.path.exists(tflite_path):
        import tf_keras as keras

        from edgetpu_models.quantize.convert import int8_tflite_bytes

        ctor = getattr(keras.applications, row.keras_app or "", None)
        if ctor is None:
            raise TargetError(f"{benchmarks_csv()}: keras_app {row.keras_app!r} is not in tf_keras.applications")
        model = ctor(weights=None, input_shape=(row.resolution, row.resolution, 3))
        write_bytes_atomic(tflite_path, int8_tflite_bytes(model))
        keras.backend.clear_session()
    return tflite_graph(tflite_path, name=row.key)


def calibration_graphs(rows: Sequence[CalibrationRow], rebuild: bool = False, work_dir: str | None = None,
                       progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> list[LayerGraph]:
    """Layer graphs of the calibration models: the stored JSON, or (rebuild=True) built and converted for real, in
    which case the JSON files are rewritten."""
    graphs = []
    work_dir = work_dir or os.path.join(os.path.expanduser("~"), ".cache", "edgetpu_models", "calibration")
    it = progress(rows) if progress else rows
    for row in it:
        path = graph_json_path(row)
        if rebuild or not os.path.exists(path):
            if not rebuild:
                raise TargetError(f"{path}: missing calibration graph; run `edgetpu-models calibrate` without "
                                  f"--reuse-graphs to build it")
            os.makedirs(work_dir, exist_ok=True)
            d = graph_to_dict(build_calibration_graph(row, work_dir))
            d["source"] = ("int8 .tflite (tf_keras.applications, weights=None, random calibration) via the .tflite "
                           "front end")
            write_text_atomic(path, json.dumps(d, separators=(",", ":")) + "\n")
        graphs.append(load_graph_json(path))
    return graphs


# ---------------------------------------------------------------------------------------------------------------------
# Fitting

def fit_constants(terms: Sequence[Any], measured: Sequence[float], base: EdgeTPUConstants, free: Sequence[str],
                  multistart: bool = True, bounds: Mapping[str, tuple[float, float]] | None = None,
                  predict: Callable[[Any, EdgeTPUConstants], float] = terms_latency_ms) -> EdgeTPUConstants:
    """Least squares on log latency over the `free` constants (in log space, within `bounds`, default BOUNDS), from
    the base values and (multistart) a few other starts across the bounds. `predict(term, constants)` is what a row
    measured (default: a graph's latency from its GraphTerms)."""
    import numpy as np
    from scipy.optimize import least_squares

    free = list(free)
    bounds = BOUNDS if bounds is None else bounds
    lo = np.log([bounds[k][0] for k in free])
    hi = np.log([bounds[k][1] for k in free])
    target = np.log(np.asarray(measured, float))

    def residuals(x: Any) -> Any:
        c = base.with_values(**{k: float(math.exp(v)) for k, v in zip(free, x)})
        return np.log([predict(t, c) for t in terms]) - target

    x0 = np.clip(np.log([getattr(base, k) for k in free]), lo + 1e-6, hi - 1e-6)
    starts = [x0, (lo + hi) / 2, lo + (hi - lo) * 0.3, lo + (hi - lo) * 0.7] if multistart else [x0]
    best = None
    for start in starts:
        r = least_squares(residuals, start, bounds=(lo, hi), method="trf", x_scale=1.0, max_nfev=400)
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    return base.with_values(**{k: float(math.exp(v)) for k, v in zip(free, best.x)})


def fit_leave_one_out(terms: Sequence[Any], measured: Sequence[float], base: EdgeTPUConstants, free: Sequence[str],
                      loo_multistart: bool = False, **fit: Any) -> tuple[EdgeTPUConstants, list[float]]:
    """(constants fitted to every row, each row's prediction by the constants fitted without it). The leave-one-out
    fits start from the full fit; `fit`: `bounds` and `predict`, as for `fit_constants`."""
    predict = fit.get("predict", terms_latency_ms)
    full = fit_constants(terms, measured, base, free, **fit)
    preds = []
    for i in range(len(terms)):
        keep = [j for j in range(len(terms)) if j != i]
        c = fit_constants([terms[j] for j in keep], [measured[j] for j in keep], full, free, loo_multistart, **fit)
        preds.append(predict(terms[i], c))
    return full, preds


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run_calibration(target: str, rows: Sequence[CalibrationRow], graphs: Sequence[LayerGraph]) -> CalibrationResult:
    """Fits target's free constants to all rows, and leave-one-out."""
    import numpy as np

    t = load_target(target)
    if t.kind != "edgetpu" or t.constants is None:
        raise TargetError(f"{target}: not an Edge TPU target")
    free = _free(t)
    base = t.constants
    terms = [graph_terms(g, base) for g in graphs]
    measured = [r.measured_ms for r in rows]
    full, preds = fit_leave_one_out(terms, measured, base, free)
    fit_rows = tuple(LooRow(r.model, r.measured_ms, terms_latency_ms(tm, full)) for r, tm in zip(rows, terms))
    loo = [LooRow(r.model, r.measured_ms, p) for r, p in zip(rows, preds)]
    rho = spearman([x.measured_ms for x in loo], [x.predicted_ms for x in loo]) if len(loo) > 2 else float("nan")
    mae = float(np.median([abs(x.error) for x in loo]))
    return CalibrationResult(target, {k: getattr(full, k) for k in free}, fit_rows, tuple(loo), rho, mae)


def _free(t: Target) -> list[str]:
    cal = t.data.get("calibration")
    if not isinstance(cal, dict):
        if t.data.get("inherits"):
            raise TargetError(f"{t.name}: has no measurements of its own; it inherits the calibrated constants of "
                              f"{t.data['inherits']} (calibrate that target)")
        raise TargetError(f"{t.path}: calibration: missing (expected source/column or measurements, and free)")
    free = cal.get("free") or []
    bad = [k for k in free if k not in CALIBRATED]
    if not free or bad:
        raise TargetError(f"{t.path}: calibration.free: expected a list drawn from {', '.join(CALIBRATED)}")
    return list(free)


def target_rows(target: str) -> list[CalibrationRow]:
    """The measurements a target is fitted to: a column of the Coral table, or the file's own list."""
    t = load_target(target)
    _free(t)
    cal = t.data["calibration"]
    if "column" in cal:
        return benchmark_rows(str(cal["column"]))
    meas = cal.get("measurements")
    if not isinstance(meas, list) or not meas:
        raise TargetError(f"{t.path}: calibration: expected `column` (of coral_benchmarks.csv) or `measurements`")
    rows = []
    for i, m in enumerate(meas):
        if not isinstance(m, dict) or "model" not in m or "ms" not in m:
            raise TargetError(f"{t.path}: calibration.measurements[{i}]: expected {{model: zoo name, ms: number}}")
        rows.append(CalibrationRow(str(m["model"]), None, int(m.get("resolution", 0)), float(m["ms"])))
    return rows


def rows_graphs(rows: Sequence[CalibrationRow], rebuild: bool, work_dir: str | None = None,
                progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> list[LayerGraph]:
    if all(r.keras_app is None for r in rows):
        from edgetpu_models.nas.latency.frontends import spec_graph

        return [spec_graph(r.model, None, r.resolution or None) for r in rows]
    return calibration_graphs(rows, rebuild=rebuild, work_dir=work_dir, progress=progress)


def write_calibration(result: CalibrationResult, out: "str | os.PathLike[str] | None" = None) -> str:
    """Writes the target with the fitted constants and the leave-one-out table, atomically, to `out` or the user's
    targets folder (where it overrides the shipped target of the same name); never into the installed package."""
    t = load_target(result.target)
    data = dict(t.data)
    for k, v in result.constants.items():  # back into the section (constants / link / host) that holds it
        section = next((sec for sec in ("link", "host") if k in (data.get(sec) or {})), "constants")
        values = dict(data.get(section) or {})
        values[k] = float(f"{v:.5g}")
        data[section] = values
    cal = dict(data.get("calibration") or {})
    cal["fitted"] = datetime.date.today().isoformat()
    cal["leave_one_out"] = {
        "spearman": round(result.spearman, 4), "median_abs_error": round(result.median_abs_error, 4),
        "rows": [{"model": r.model, "measured_ms": r.measured_ms, "predicted_ms": round(r.predicted_ms, 3),
                  "error": round(r.error, 4)} for r in result.loo_rows]}
    data["calibration"] = cal
    path = os.fspath(out) if out is not None else os.path.join(user_targets_dir(), f"{result.target}.yaml")
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120))
    return path
