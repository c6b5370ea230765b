"""CLI: `edgetpu-models estimate` and `edgetpu-models calibrate` (thin: the work is in latency / calibrate / cpu)."""

from __future__ import annotations

import argparse
import json
import os

from edgetpu_models.errors import EdgeTPUModelsError
from edgetpu_models.tables import fmt_int, format_table
from edgetpu_models.zoo_commands import add_model_args


def cmd_estimate(args: argparse.Namespace) -> int:
    if args.server:
        result = _estimate_remote(args)
    else:
        from .latency import estimate

        if args.threads is not None:
            os.environ["EDGETPU_MODELS_CPU_THREADS"] = str(args.threads)
        result = estimate(args.model, args.target, resolution=args.resolution, variant=args.variant).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model} on {result['target']}: {result['latency_ms']:.3f} ms")
    print(f"on-chip parameter bytes:  {fmt_int(result['on_chip_param_bytes'])}")
    print(f"off-chip parameter bytes: {fmt_int(result['off_chip_param_bytes'])} (streamed every inference)")
    rows = [(r["name"], r["op"], "x".join(map(str, r["output_shape"])), fmt_int(r["macs"]), f"{r['ms']:.4f}", r["bound"])
            for r in result["layers"]]
    print(format_table(("layer", "op", "output", "MACs", "ms", "bound"), rows, right=(3, 4)))
    return 0


def _estimate_remote(args: argparse.Namespace) -> dict:
    """Asks a running latency server (helper module `client`, gRPC; imported only when asked for)."""
    from .client import LatencyClient

    if args.threads is not None:
        raise EdgeTPUModelsError("--threads applies to estimates made here, not with --server")
    with LatencyClient(args.server) as client:
        return client.estimate(args.model, target=args.target, resolution=args.resolution, variant=args.variant)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .latency import load_target

    t = load_target(args.target)
    if t.kind == "cpu":
        from .cpu import train_from_cli

        return train_from_cli(args, t)
    if t.kind != "edgetpu":
        raise EdgeTPUModelsError(f"{args.target}: a measured target has nothing to calibrate")
    from .calibrate import rows_graphs, run_calibration, target_rows, write_calibration

    rows = target_rows(args.target)
    graphs = rows_graphs(rows, rebuild=not args.reuse_graphs, work_dir=args.work_dir,
                         progress=lambda it: tqdm(it, desc="calibration models", unit="model"))
    result = run_calibration(args.target, rows, graphs)
    path = write_calibration(result)
    print(f"{args.target}: fitted " + ", ".join(f"{k}={v:.4g}" for k, v in result.constants.items()))
    table = [(r.model, f"{r.measured_ms:.2f}", f"{r.predicted_ms:.2f}", f"{r.error * 100:+.1f}%")
             for r in result.loo_rows]
    print("leave-one-out (each model predicted by constants fitted to the others):")
    print(format_table(("model", "measured ms", "predicted ms", "error"), table, right=(1, 2, 3)))
    print(f"Spearman {result.spearman:.3f}, median absolute error {result.median_abs_error * 100:.1f}%")
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="latency of a model on a target (Edge TPU model, CPU predictor or measured)")
    add_model_args(p)
    for action in p._actions:  # estimate also takes model files
        if action.dest == "model":
            action.help = "zoo name, spec file (.yaml), Keras model (.keras/.h5) or int8 .tflite"
    p.add_argument("--target", default="coral-usb",
                   help="coral-usb, coral-usb-std, coral-devboard, pixel4, pixel6, cpu, cpu-measured "
                        "(default coral-usb)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for cpu-measured (default: the target file's; sets EDGETPU_MODELS_CPU_THREADS)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--server", metavar="HOST:PORT", help="ask a running latency server instead of estimating here")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("calibrate", help="fit a target's free constants to measurements and rewrite its file")
    p.add_argument("--target", required=True, help="coral-usb, coral-devboard, pixel4, pixel6 or cpu")
    p.add_argument("--reuse-graphs", action="store_true",
                   help="fit from the stored calibration graphs instead of rebuilding and converting the models")
    p.add_argument("--work-dir", help="where converted .tflite files are kept (resume); default ~/.cache/edgetpu_models")
    p.add_argument("--samples", type=int, default=None, help="cpu: number of kernel configurations to time")
    p.add_argument("--threads", type=int, default=None, help="cpu: threads to time with (default: the target's)")
    p.set_defaults(func=cmd_calibrate)
