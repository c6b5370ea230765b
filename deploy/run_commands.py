"""CLI subcommands that run a .tflite: classify, benchmark."""

from __future__ import annotations

import argparse
import json
import os

from ..cli_args import positive_int
from ..tables import format_table


def cmd_classify(args: argparse.Namespace) -> int:
    from ..data import load_image
    from .classify import Classifier

    models = [args.model]
    while args.images and args.images[0].lower().endswith(".tflite"):  # segment files, in pipeline order
        models.append(args.images.pop(0))
    if not args.images:
        from ..errors import EdgeTPUModelsError

        raise EdgeTPUModelsError("classify: expected image files after the model (or segment) files")
    clf = Classifier(models if len(models) > 1 else args.model, labels=args.labels, threads=args.threads)
    # read every image before printing anything: a bad argument is one error line, not a half-printed table
    inputs = [(path, load_image(path, clf.size[0], clf.normalization)) for path in args.images]
    results = [(path, clf.classify(x, top_k=args.top_k)) for path, x in inputs]
    if args.json:
        print(json.dumps({"model": args.model, "backend": clf.backend, "results": [
            {"image": path, "ms": r.ms, "predictions": [{"label": p.label, "index": p.index, "score": p.score}
                                                        for p in r.predictions]} for path, r in results]}, indent=1))
        return 0
    print(f"{' + '.join(os.path.basename(m) for m in models)} on {clf.backend}; input {clf.size[0]}x{clf.size[1]} "
          f"{clf._in['dtype'].__name__}")
    rows = []
    for path, r in results:
        top = r.predictions[0]
        rest = ", ".join(f"{p.label} {p.score:.3f}" for p in r.predictions[1:])
        rows.append([path, top.label, f"{top.score:.3f}", rest, f"{r.ms:.2f}"])
    headers = ["image", "class", "score", f"next {args.top_k - 1}" if args.top_k > 1 else "", "ms"]
    print(format_table(headers, rows, right=(2, 4)))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .benchmark import benchmark

    with tqdm(total=args.runs, desc="benchmark", unit="run", leave=False, disable=args.json, delay=0.5) as bar:
        result = benchmark(args.model if len(args.model) > 1 else args.model[0], runs=args.runs, warmup=args.warmup,
                           threads=args.threads,
                           on_run=lambda _i: bar.update(1))
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify images with an exported .tflite (labels/normalisation from X.json); "
                                        "segment files in order run as a pipeline")
    p.add_argument("model", metavar="MODEL.tflite [SEGMENT.tflite ...]")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top-k", type=positive_int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--labels", metavar="FILE", help="class names, one a line (default: the one X.json names)")
    p.add_argument("--threads", type=positive_int, help="CPU interpreter threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("benchmark", help="time a .tflite on this machine (median, p90, p99 ms); segment files in "
                                         "order run as a pipeline")
    p.add_argument("model", metavar="MODEL.tflite", nargs="+")
    p.add_argument("--runs", type=positive_int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=positive_int, help="CPU interpreter threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_benchmark)

