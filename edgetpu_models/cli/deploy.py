"""CLI: `export` (int8 TFLite + metadata), `check` (Edge TPU compatibility, no compiler), `compile` (edgetpu_compiler,
or the check when it is not installed)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from edgetpu_models.cli.args import add_force_arg, add_model_args, bounded_int, classes_arg, print_json
from edgetpu_models.cli.commands import command_help
from edgetpu_models.deploy.compiler import compile_models, find_compiler, runtime_version_flag
from edgetpu_models.deploy.edgetpu_check import check_tflite
from edgetpu_models.deploy.export import export_tflite
from edgetpu_models.deploy.partition import check_segment_destination, format_plan, plan_partition, write_segments
from edgetpu_models.deploy.report import write_report
from edgetpu_models.errors import EdgeTPUModelsError, UsageError
from edgetpu_models.io_utils import check_destination
from edgetpu_models.model_io import open_model
from edgetpu_models.quantize.ptq import calibration_set
from edgetpu_models.seg_data import list_segmentation_folder, load_segmentation
from edgetpu_models.seg_graph import is_segmentation
from edgetpu_models.sidecar import foreign_outputs, read_labels
from edgetpu_models.tflite_reader import read_tflite


def _summary_line(report) -> str:
    pct = 100.0 * report.fraction_on_edgetpu
    return (f"Edge TPU: {report.on_edgetpu} of {report.total} ops mapped ({pct:.1f}%)"
            + ("" if report.fully_mapped else f"; {report.on_cpu} on the CPU"))


def _calibration(args: argparse.Namespace, loaded, size: int, labels):
    """(representative data, labels) from --data: a class-folder dataset, or for a segmentation model the images of
    a segmentation folder (images/ + masks/, or ADE20K's layout)."""
    if is_segmentation(args.model):
        x, _ = load_segmentation(list_segmentation_folder(args.data, limit=args.calibration_images), size,
                                 loaded.normalization)
        return [x[i:i + 1] for i in range(len(x))], labels
    representative = calibration_set(args.data, size, loaded.normalization, count=args.calibration_images)
    outputs = int(loaded.model.output_shape[-1])
    if labels is None and len(representative.class_names) == outputs:
        labels = representative.class_names
    return representative, labels


def cmd_export(args: argparse.Namespace) -> int:
    if not args.out.endswith(".tflite"):
        raise UsageError(f"--out {args.out}: expected a .tflite file name")
    if args.int8 and not args.data and not args.random_calibration:
        raise UsageError("int8 export needs calibration images: --data DIR (>= 100 real images), or "
                                 "--random-calibration to calibrate on random pixels (less accurate)")
    if args.data and args.random_calibration:
        raise UsageError("--data and --random-calibration exclude each other")
    # before loading anything
    check_destination(args.out, foreign=foreign_outputs(args.out), force=getattr(args, "force", False))
    loaded = open_model(args.model, args.variant, args.resolution, args.classes)
    size = int(loaded.model.input_shape[1])
    representative, labels = None, loaded.labels
    if args.labels:
        labels = list(read_labels(args.labels))
    if args.int8 and args.data:
        representative, labels = _calibration(args, loaded, size, labels)
    result = export_tflite(loaded.model, args.out, int8=args.int8, io_dtype=args.io, representative=representative,
                           random_calibration=args.random_calibration, model_name=loaded.name,
                           normalization=loaded.normalization, labels=labels, force=getattr(args, "force", False))
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


def cmd_compile(args: argparse.Namespace) -> int:
    files = [args.file] + list(args.more)
    runtime, source = runtime_version_flag(args.min_runtime)
    results = compile_models(files, args.out_dir, timeout_s=args.timeout, segments=args.segments,
                             min_runtime_version=runtime, force=getattr(args, "force", False))
    if not results[0].compiled:
        print(results[0].message)
    elif not args.json:
        print(f"--min_runtime_version: {runtime if runtime is not None else 'not passed'} ({source})")
    if args.json:
        print_json(json.dumps([{"compiled": r.compiled, "output_path": r.output_path, "log_path": r.log_path,
                           "min_runtime_version": runtime, "report": r.report.to_dict()} for r in results]
                         if len(results) > 1 else {"compiled": results[0].compiled,
                                                   "output_path": results[0].output_path,
                                                   "log_path": results[0].log_path, "min_runtime_version": runtime,
                                                   "report": results[0].report.to_dict()}, indent=1))
    else:
        for r in results:
            if len(results) > 1:
                print(f"\n== {os.path.basename(r.output_path or r.report.model)}")
            print(r.report.format())
            if r.output_path:
                print(f"\nwrote {os.path.abspath(r.output_path)}")
    return 0 if all(r.report.fully_mapped for r in results) else 1


def cmd_partition(args: argparse.Namespace) -> int:
    if args.segments > 1:
        check_segment_destination(args.file, args.out, args.segments, getattr(args, "force", False))
    plan = plan_partition(args.file, args.segments, args.target)
    paths = write_segments(plan, args.out, force=getattr(args, "force", False)) if args.segments > 1 else []
    compiled = _compiler_cuts(args, plan) if args.segments > 1 else None
    if args.json:
        d = plan.to_dict()
        d["files"] = paths
        if compiled is not None:
            d["edgetpu_compiler"] = compiled
        print_json(json.dumps(d, indent=1))
        return 0
    print(f"{os.path.basename(args.file)} on {args.segments} x {plan.target} (predicted by the latency model)")
    print(format_plan(plan))
    for path in paths:
        print(f"wrote {os.path.abspath(path)}")
    if compiled is not None:
        same = sum(1 for c in compiled[1:] if c["same_cut"])
        print(f"edgetpu_compiler --num_segments {args.segments}: {same} of {len(compiled) - 1} cut points the same "
              f"as ours")
        for i, c in enumerate(compiled):
            print(f"  segment {i}: compiler input {c['input_tensor']}, ours {c['ours']}; compiler "
                  f"{c['on_chip_used']} cached, {c['off_chip_used']} streamed")
    return 0


def _compiler_cuts(args: argparse.Namespace, plan) -> list | None:
    """What edgetpu_compiler --num_segments makes of the same model (None when it is not installed): per segment,
    its input tensor (the compiler's cut), ours, and the compiler's cached/streamed bytes."""


    if find_compiler() is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            results = compile_models([args.file], tmp, segments=args.segments)
            cuts = [read_tflite(r.output_path).input_tensors()[0].name if r.output_path else None for r in results]
        except (EdgeTPUModelsError, OSError) as e:  # the comparison is optional: the plan and segments stand
            print(f"edgetpu_compiler comparison skipped: {e}", file=sys.stderr)
            return None
    return [{"input_tensor": cut, "ours": ours.input_tensor, "same_cut": cut == ours.input_tensor,
             "on_chip_used": r.report.stats.get("on_chip_used"), "off_chip_used": r.report.stats.get("off_chip_used")}
            for r, cut, ours in zip(results, cuts, plan.segments)]


def cmd_report(args: argparse.Namespace) -> int:
    reports = write_report(args.models, args.target, args.out, force=getattr(args, "force", False))
    for r in reports:
        latency = f"{r.latency_ms:.3f} ms predicted" if r.latency_ms is not None else "no latency estimate"
        print(f"{r.name}: {latency} on {args.target}, {r.check.on_edgetpu}/{r.check.total} ops on the Edge TPU")
    print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=command_help("export"))
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
    add_force_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compile", help=command_help("compile"))
    p.add_argument("file", metavar="FILE.tflite")
    p.add_argument("more", nargs="*", metavar="FILE.tflite",
                   help="more models to co-compile with the first (they share the parameter cache in this order)")
    p.add_argument("--segments", type=bounded_int(1, 64), help="cut the model for a pipeline of N Edge TPUs "
                                                          "(edgetpu_compiler --num_segments N)")
    p.add_argument("--min-runtime", type=bounded_int(1, 1000), metavar="VERSION",
                   help="oldest Edge TPU runtime the file must run on (--min_runtime_version; default: the "
                        "installed runtime's version, from pycoral)")
    p.add_argument("--out-dir", help="output folder (default: beside the model)")
    p.add_argument("--timeout", type=bounded_int(1, 86_400), default=180, help="compiler timeout in seconds")
    p.add_argument("--json", action="store_true")
    add_force_arg(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("partition", help=command_help("partition"))
    p.add_argument("file", metavar="MODEL.tflite")
    p.add_argument("--segments", type=bounded_int(1, 64), required=True, help="number of Edge TPUs")
    p.add_argument("--target", default="coral-usb", help="Edge TPU target of each segment (default coral-usb)")
    p.add_argument("--out", metavar="DIR", help="folder for the segment files (default: beside the model)")
    add_force_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_partition)

    p = sub.add_parser("report", help=command_help("report"))
    p.add_argument("models", metavar="MODEL.tflite", nargs="+", help="int8 .tflite files (several: side by side)")
    p.add_argument("--target", default="coral-usb", help="Edge TPU latency target (default coral-usb)")
    p.add_argument("--out", required=True, metavar="FILE.html")
    add_force_arg(p)
    p.set_defaults(func=cmd_report)
