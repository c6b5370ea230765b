"""Export benchmark: int8 TFLite export of the zoo models, Edge TPU check, file size and LiteRT CPU latency.

    python benchmarks/export.py                               # S, M, L, MobilenetEdgeTPU (+ 0.75), V2 Tiny..L
    python benchmarks/export.py --models efficientnet_edgetpu_s
    python benchmarks/export.py --qat --qat-steps 2           # also: QAT wrap + train + export + check, every model
    python benchmarks/export.py --segmentation                # the segmentation zoo at 512, fused resize512,argmax

Each model runs in its own child process, so the peak memory (max RSS: TensorFlow, the model, the converter and the
calibration images) is that model's alone. Calibration: real images from the bundled dataset (default 100). Export
time is the `export_tflite` call (conversion with calibration, verification, atomic writes); the model build is
timed separately. Latency: LiteRT on the CPU, 2 threads, median of 50 invocations after 5 warm-up runs.
The machine may be shared: the load average at the start of each model is printed beside it, and the export's CPU
time (all threads of the process) is printed too, a figure that other processes on the machine do not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ("efficientnet_edgetpu_s", "efficientnet_edgetpu_m", "efficientnet_edgetpu_l", "mobilenet_edgetpu",
          "mobilenet_edgetpu_075", "mobilenet_edgetpu_v2_tiny", "mobilenet_edgetpu_v2_xs", "mobilenet_edgetpu_v2_s",
          "mobilenet_edgetpu_v2_m", "mobilenet_edgetpu_v2_l")
LIMIT_S = {"efficientnet_edgetpu_s": (120.0, 3.0)}  # must-show: export of S <= 2 minutes, <= 3 GiB peak


def _latency_ms(path: str, runs: int, threads: int) -> float:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, size=inp["shape"], dtype=np.uint8).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    for _ in range(5):
        interp.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _segmentation_calibration(name: str, size: int, count: int, out_dir: str) -> tuple:
    """A segmentation model's normalisation and calibration batches: images of the offline synthetic set."""
    from edgetpu_models.seg_data import load_segmentation, make_synthetic_segmentation
    from edgetpu_models.segmentation import preprocess_normalization

    norm = preprocess_normalization(name)
    folder = make_synthetic_segmentation(os.path.join(out_dir, "synthetic"), count, size)
    x, _ = load_segmentation(folder, size, norm, classes=4)
    return norm, [x[i:i + 1] for i in range(len(x))]


def child(name: str, out_dir: str, calibration_images: int, runs: int, threads: int, qat_steps: int | None) -> dict:
    """One model: build, export (timed), check, size, latency. Printed as one JSON line."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    from edgetpu_models.builder import build_model
    from edgetpu_models.data import default_dataset_dir
    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.quantize.ptq import calibration_set
    from edgetpu_models.seg_graph import is_segmentation
    from edgetpu_models.segmentation import build_segmentation_model
    from edgetpu_models.zoo import normalization_of

    t_import = time.perf_counter() - t0
    t = time.perf_counter()
    segmentation = is_segmentation(name)
    model = build_segmentation_model(name) if segmentation else build_model(name)
    t_build = time.perf_counter() - t
    size = int(model.input_shape[1])
    if segmentation:
        norm, cal = _segmentation_calibration(name, size, calibration_images, out_dir)
    else:
        norm = normalization_of(name)
        cal = calibration_set(default_dataset_dir(), size, norm, count=calibration_images)
    t, c = time.perf_counter(), time.process_time()
    result = export_tflite(model, os.path.join(out_dir, f"{name}.tflite"), representative=cal, model_name=name,
                           normalization=norm)
    t_export, cpu_export = time.perf_counter() - t, time.process_time() - c
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    report = check_tflite(result.path)
    row = {"model": name, "resolution": size, "load_avg": load, "import_s": t_import, "build_s": t_build,
           "export_s": t_export, "export_cpu_s": cpu_export, "peak_gib": peak_gib, "size_bytes": result.size_bytes,
           "calibration_images": result.calibration_images, "edgetpu_ops": report.on_edgetpu,
           "total_ops": report.total, "fully_mapped": report.fully_mapped,
           "cpu_ops": [f"{o.operator} ({o.reason or o.status})" for o in report.ops if not o.on_edgetpu],
           "cpu_ms": _latency_ms(result.path, runs, threads)}
    if qat_steps is not None:
        import tensorflow as tf

        from edgetpu_models.quantize.qat import qat_finetune, quantize_model

        t = time.perf_counter()
        qat = quantize_model(model)
        images = next(iter(cal))[:8]
        ds = tf.data.Dataset.from_tensor_slices((images, tf.zeros([len(images)], tf.int32))).batch(4)
        stats = qat_finetune(qat, ds, qat_steps, progress=False)
        qres = export_tflite(qat, os.path.join(out_dir, f"{name}_qat.tflite"), representative=cal, model_name=name,
                             normalization=norm)
        qrep = check_tflite(qres.path)
        row.update({"qat_s": time.perf_counter() - t, "qat_loss": stats.get("loss"), "qat_edgetpu_ops": qrep.on_edgetpu,
                    "qat_total_ops": qrep.total, "qat_fully_mapped": qrep.fully_mapped})
    return row


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--calibration-images", type=int, default=100)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qat", action="store_true", help="also wrap for QAT, train a few steps, export and check")
    ap.add_argument("--qat-steps", type=int, default=2)
    ap.add_argument("--out-dir", help="keep the .tflite files here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--segmentation", action="store_true",
                    help="the segmentation zoo at 512 with the fused resize512,argmax finaliser instead")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.segmentation:
        from edgetpu_models.seg_graph import seg_zoo

        args.models = [f"{name}@resize512,argmax" for name in seg_zoo()]
    return args


def _child_command(args: argparse.Namespace, name: str, out_dir: str) -> list[str]:
    """This script again, as the child process that measures model `name`."""
    return [sys.executable, os.path.abspath(__file__), "--child", name, "--out-dir", out_dir,
            "--calibration-images", str(args.calibration_images), "--runs", str(args.runs),
            "--threads", str(args.threads), "--qat-steps", str(args.qat_steps)] + (["--qat"] if args.qat else [])


def _measure_all(args: argparse.Namespace) -> list[dict]:
    """One child process per model; the rows of those that succeeded (a line printed per model as it ends)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or tmp
        os.makedirs(out_dir, exist_ok=True)
        for name in args.models:
            proc = subprocess.run(_child_command(args, name, out_dir), capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{name}: failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(line[4:])
            rows.append(row)
            print(f"{name}: export {row['export_s']:.1f} s, peak {row['peak_gib']:.2f} GiB, "
                  f"{row['edgetpu_ops']}/{row['total_ops']} ops on the Edge TPU", flush=True)
    return rows


def _mapped(on_edgetpu: int, total: int, fully_mapped: bool) -> str:
    return f"{on_edgetpu}/{total}" + (" (100%)" if fully_mapped else " NOT FULLY MAPPED")


def _print_tables(args: argparse.Namespace, rows: list[dict]) -> None:
    from edgetpu_models.tables import format_table

    headers = ["model", "res", "build s", "export s", "export CPU s", "peak GiB", "int8 MiB", "Edge TPU ops",
               "CPU ms (2 thr)", "load avg"]
    table = [(r["model"], r["resolution"], f"{r['build_s']:.1f}", f"{r['export_s']:.1f}",
              f"{r.get('export_cpu_s', float('nan')):.1f}", f"{r['peak_gib']:.2f}",
              f"{r['size_bytes'] / 2**20:.2f}", _mapped(r["edgetpu_ops"], r["total_ops"], r["fully_mapped"]),
              f"{r['cpu_ms']:.1f}", f"{r['load_avg']:.1f}") for r in rows]
    print()
    source = "synthetic segmentation set" if args.segmentation else "bundled dataset"
    print(f"int8 export, calibration on {args.calibration_images} real images ({source}); LiteRT CPU latency "
          f"median of {args.runs} at {args.threads} threads")
    print(format_table(headers, table, right=(1, 2, 3, 4, 5, 6, 8, 9)))
    for r in rows:
        if r.get("cpu_ops"):
            print(f"{r['model']}: on the CPU: {'; '.join(r['cpu_ops'])}")
    if args.qat:
        print()
        print(format_table(["model", "QAT wrap+train+export s", "QAT loss", "Edge TPU ops (QAT export)"],
                           [(r["model"], f"{r['qat_s']:.1f}", f"{r['qat_loss']:.3f}",
                             _mapped(r["qat_edgetpu_ops"], r["qat_total_ops"], r["qat_fully_mapped"]))
                            for r in rows],
                           right=(1, 2)))


def _print_limits(rows: list[dict]) -> None:
    """The must-show limits (LIMIT_S) of the models that have them: within or over."""
    for r in rows:
        if r["model"] in LIMIT_S:
            max_s, max_gib = LIMIT_S[r["model"]]
            ok = r["export_s"] <= max_s and r["peak_gib"] <= max_gib
            print(f"\n{r['model']}: export {r['export_s']:.1f} s wall, {r.get('export_cpu_s', float('nan')):.1f} s "
                  f"CPU (limit {max_s:.0f} s), peak memory "
                  f"{r['peak_gib']:.2f} GiB (limit {max_gib:.0f} GiB): {'within' if ok else 'OVER'} the limits")


def main() -> int:
    args = _parse_args()
    if args.child:
        row = child(args.child, args.out_dir, args.calibration_images, args.runs, args.threads,
                    args.qat_steps if args.qat else None)
        print("ROW " + json.dumps(row), flush=True)
        return 0

    rows = _measure_all(args)
    _print_tables(args, rows)
    _print_limits(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0 if rows and all(r["fully_mapped"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
