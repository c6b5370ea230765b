"""CLI subcommands that run or check a .tflite: classify, benchmark, evaluate, check. These are the runtime commands:
what this module imports runs on a base install (tools/runtime_modules.txt)."""

from __future__ import annotations

import argparse
import json
import os

from tqdm.auto import tqdm

from edgetpu_models.cli.args import (
    add_trust_arg,
    bounded_float,
    bounded_int,
    fraction_arg,
    print_json,
    seed_arg,
    threads_arg,
)
from edgetpu_models.cli.commands import command_help
from edgetpu_models.deploy.benchmark import benchmark
from edgetpu_models.deploy.classify import Classifier
from edgetpu_models.deploy.edgetpu_check import check_tflite
from edgetpu_models.deploy.evaluate import evaluate, format_report
from edgetpu_models.errors import UsageError
from edgetpu_models.tables import format_table


def cmd_classify(args: argparse.Namespace) -> int:
    models = [args.model]
    while args.images and args.images[0].lower().endswith(".tflite"):  # segment files, in pipeline order
        models.append(args.images.pop(0))
    if not args.images:
        raise UsageError("classify: expected image files after the model (or segment) files")
    clf = Classifier(models if len(models) > 1 else args.model, labels=args.labels, threads=args.threads)
    # read every image before printing anything: a bad argument is one error line, not a half-printed table
    inputs = [(path, clf.image_array(path)) for path in args.images]
    results = [(path, clf.classify(x, top_k=args.top_k)) for path, x in inputs]
    if args.json:
        print_json(json.dumps({"model": args.model, "backend": clf.backend, "results": [
            {"image": path, "ms": r.ms, "predictions": [{"label": p.label, "index": p.index, "score": p.score}
                                                        for p in r.predictions]} for path, r in results]}, indent=1))
        return 0
    print(f"{' + '.join(os.path.basename(m) for m in models)} on {clf.backend}; input {clf.size[0]}x{clf.size[1]} "
          f"{clf.input.dtype.name}")
    rows = []
    for path, r in results:
        top = r.predictions[0]
        rest = ", ".join(f"{p.label} {p.score:.3f}" for p in r.predictions[1:])
        rows.append([path, top.label, f"{top.score:.3f}", rest, f"{r.ms:.2f}"])
    headers = ["image", "class", "score", f"next {args.top_k - 1}" if args.top_k > 1 else "", "ms"]
    print(format_table(headers, rows, right=(2, 4)))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    with tqdm(total=args.runs, desc="benchmark", unit="run", leave=False, disable=args.json, delay=0.5) as bar:
        result = benchmark(args.model if len(args.model) > 1 else args.model[0], runs=args.runs, warmup=args.warmup,
                           threads=args.threads,
                           on_run=lambda _i: bar.update(1))
    if args.json:
        print_json(json.dumps(result.to_dict(), indent=1))
        return 0
    threads = result.threads if result.threads is not None else "default"
    names = " + ".join(os.path.basename(m) for m in args.model)
    print(f"{names} on {result.backend}, threads {threads}: {result.runs} runs after "
          f"{result.warmup} warm-up")
    print(format_table(["median ms", "p90 ms", "p99 ms", "mean ms", "min ms"],
                       [[f"{result.median_ms:.3f}", f"{result.p90_ms:.3f}", f"{result.p99_ms:.3f}",
                         f"{result.mean_ms:.3f}", f"{result.min_ms:.3f}"]], right=(0, 1, 2, 3, 4)))
    if result.pipelined_ms is not None:
        print(f"pipelined ({len(args.model)} segments overlapped over {result.runs} inputs): "
              f"{result.pipelined_ms:.3f} ms per result")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    with tqdm(desc="evaluate", unit="img", leave=False, delay=0.5) as bar:
        def progress(n: int, total: int) -> None:
            bar.total = total
            bar.update(n)

        report = evaluate(args.models, args.data, ground_truth=args.ground_truth, split=args.split,
                          validation_split=args.validation_split, seed=args.seed, threads=args.threads,
                          batch=args.batch, workers=args.workers, pipeline=args.pipeline, crop_fraction=args.crop,
                          limit=args.limit, on_images=progress)
    if args.json:
        print_json(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_report(report))
    return 0


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help=command_help("evaluate"))
    p.add_argument("models", metavar="MODEL", nargs="+", help=".tflite (with its X.tflite.json), .keras or .h5")
    p.add_argument("--data", required=True, metavar="DIR", help="class folders (as `train` reads them, or ImageNet "
                   "WordNet-id folders), or a flat ImageNet validation folder with --ground-truth")
    p.add_argument("--ground-truth", dest="ground_truth", metavar="FILE",
                   help="for a flat folder: lines 'FILE WNID' / 'FILE INDEX', or Kaggle's LOC_val_solution.csv")
    p.add_argument("--split", choices=("all", "train", "val"), default="all",
                   help="class folders: every image (default), or the train/val side of train's seeded split")
    p.add_argument("--validation-split", dest="validation_split", type=bounded_float(0.0, 0.9), default=0.2,
                   help="as train's")
    p.add_argument("--seed", type=seed_arg, default=0, help="as train's")
    p.add_argument("--threads", type=threads_arg, help="interpreter threads")
    p.add_argument("--batch", type=bounded_int(1, 1024), default=16, help="images per invoke (default 16)")
    p.add_argument("--workers", type=bounded_int(1, 64), help="image decoding threads (default: CPU count, at most 8)")
    p.add_argument("--pipeline", choices=("train", "reference"),
                   help="override the preprocessing: this package's validation crop, or the ImageNet reference one")
    p.add_argument("--crop", type=fraction_arg, help="override the centre-crop fraction (e.g. 0.875)")
    p.add_argument("--limit", type=bounded_int(1, 100_000_000), help="only the first N images")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_trust_arg(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_check(args: argparse.Namespace) -> int:
    report = check_tflite(args.file)
    if args.json:
        print_json(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.format())
    return 0 if report.fully_mapped else 1


def register(sub: argparse._SubParsersAction) -> None:
    _register_evaluate(sub)
    p = sub.add_parser("check", help=command_help("check"))
    p.add_argument("file", metavar="FILE.tflite")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_check)


    p = sub.add_parser("classify", help=command_help("classify"))
    p.add_argument("model", metavar="MODEL.tflite [SEGMENT.tflite ...]")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top-k", type=bounded_int(1, 100_000), default=3, help="classes to show per image (default 3)")
    p.add_argument("--labels", metavar="FILE", help="class names, one a line (default: the one X.tflite.json names)")
    p.add_argument("--threads", type=threads_arg, help="CPU interpreter threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("benchmark", help=command_help("benchmark"))
    p.add_argument("model", metavar="MODEL.tflite", nargs="+")
    p.add_argument("--runs", type=bounded_int(1, 1_000_000), default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=bounded_int(0, 100_000), default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=threads_arg, help="CPU interpreter threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_benchmark)

