"""CLI: `export` (int8 TFLite + metadata), `check` (Edge TPU compatibility, no compiler), `compile` (edgetpu_compiler,
or the check when it is not installed)."""

from __future__ import annotations

import argparse
import json
import os

from edgetpu_models.cli.args import add_model_args, bounded_int, classes_arg
from edgetpu_models.errors import EdgeTPUModelsError


def _summary_line(report) -> str:
    pct = 100.0 * report.fraction_on_edgetpu
    return (f"Edge TPU: {report.on_edgetpu} of {report.total} ops mapped ({pct:.1f}%)"
            + ("" if report.fully_mapped else f"; {report.on_cpu} on the CPU"))


def cmd_export(args: argparse.Namespace) -> int:
    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.keras_models import load_model_ref

    if not args.out.endswith(".tflite"):
        raise EdgeTPUModelsError(f"--out {args.out}: expected a .tflite file name")
    if args.int8 and not args.data and not args.random_calibration:
        raise EdgeTPUModelsError("int8 export needs calibration images: --data DIR (>= 100 real images), or "
                                 "--random-calibration to calibrate on random pixels (less accurate)")
    if args.data and args.random_calibration:
        raise EdgeTPUModelsError("--data and --random-calibration exclude each other")
    loaded = load_model_ref(args.model, args.variant, args.resolution, args.classes)
    size = int(loaded.model.input_shape[1])
    representative, labels = None, loaded.labels
    if args.labels:
        try:
            with open(args.labels, encoding="utf-8") as f:
                labels = [ln.strip() for ln in f if ln.strip()]
        except OSError as e:
            raise EdgeTPUModelsError(f"--labels {args.labels}: cannot read ({e.strerror or e})") from None
    if args.int8 and args.data:
        from edgetpu_models.quantize.ptq import calibration_set

        representative = calibration_set(args.data, size, loaded.normalization, count=args.calibration_images)
        outputs = int(loaded.model.output_shape[-1])
        if labels is None and len(representative.class_names) == outputs:
            labels = representative.class_names
    result = export_tflite(loaded.model, args.out, int8=args.int8, io_dtype=args.io, representative=representative,
                           random_calibration=args.random_calibration, model_name=loaded.name,
                           normalization=loaded.normalization, labels=labels)
    size_text = (f"{result.size_bytes / 2**20:.2f} MiB" if result.size_bytes >= 2**20
                 else f"{result.size_bytes / 1024:.1f} KiB")
    print(f"wrote {os.path.abspath(result.path)} ({size_text}, "
          f"{'int8, ' + args.io + ' input/output' if args.int8 else 'float32'}, 1x{size}x{size}x3)")
    print(f"wrote {os.path.abspath(result.metadata_path)}"
          + (f" and {os.path.abspath(result.labels_path)}" if result.labels_path else " (no labels)"))
    if result.calibration == "random":
        print("calibration: RANDOM pixels (--random-calibration), not real images: activation ranges may not fit "
              "real data and int8 accuracy can drop; use --data DIR for a deployable model")
    elif result.calibration == "dataset":
        print(f"calibration: {result.calibration_images} real images from {args.data}")
    if loaded.path and loaded.normalization_source.startswith("default"):
        print(f"normalisation: {loaded.normalization_source}: mean {list(loaded.normalization.mean)}, "
              f"std {list(loaded.normalization.std)}")
    if args.int8:
        print(_summary_line(check_tflite(result.path)) + f"  (details: edgetpu-models check {args.out})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from edgetpu_models.deploy.edgetpu_check import check_tflite

    report = check_tflite(args.file)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.format())
    return 0 if report.fully_mapped else 1


def cmd_compile(args: argparse.Namespace) -> int:
    from edgetpu_models.deploy.compiler import compile_tflite

    result = compile_tflite(args.file, args.out_dir, timeout_s=args.timeout)
    if not result.compiled:
        print(result.message)
    if args.json:
        print(json.dumps({"compiled": result.compiled, "output_path": result.output_path,
                          "log_path": result.log_path, "report": result.report.to_dict()}, indent=1))
    else:
        print(result.report.format())
        if result.output_path:
            print(f"\nwrote {os.path.abspath(result.output_path)}")
    return 0 if result.report.fully_mapped else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="int8 TFLite for the Edge TPU (+ X.json metadata and X.labels.txt)")
    add_model_args(p)
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                   help="full-integer quantization (default); --no-int8 writes a float32 model")
    p.add_argument("--io", choices=("uint8", "int8"), default="uint8", help="input/output type (default uint8, "
                                                                           "as Coral's models)")
    p.add_argument("--data", help="dataset folder: real calibration images (>= 100)")
    p.add_argument("--random-calibration", action="store_true",
                   help="calibrate on random pixels instead of images (explicitly less accurate)")
    p.add_argument("--calibration-images", type=bounded_int(1, 1_000_000), default=200)
    p.add_argument("--classes", type=classes_arg,
                   help="classifier outputs when building a zoo model/spec (default 1000)")
    p.add_argument("--labels", help="text file with one class name per line (default: from the model or --data)")
    p.add_argument("--out", required=True, metavar="FILE.tflite")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("check", help="Edge TPU compatibility of a .tflite without the compiler (exit 1 if not "
                                     "fully mapped)")
    p.add_argument("file", metavar="FILE.tflite")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("compile", help="run edgetpu_compiler (or, without it, the compatibility check)")
    p.add_argument("file", metavar="FILE.tflite")
    p.add_argument("--out-dir", help="output folder (default: beside the model)")
    p.add_argument("--timeout", type=bounded_int(1, 86_400), default=180, help="compiler timeout in seconds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compile)
