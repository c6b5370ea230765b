"""CLI: `edgetpu-models estimate` and `edgetpu-models calibrate` (thin: the work is in latency / calibrate / cpu)."""

from __future__ import annotations

import argparse
import json
import os

import yaml
from tqdm import tqdm

from edgetpu_models.cli.args import (
    add_client_credential_args,
    add_model_args,
    address_arg,
    bounded_int,
    client_credential_paths,
    print_json,
    threads_arg,
)
from edgetpu_models.cli.commands import command_help
from edgetpu_models.deploy.edgetpu_check import check_tflite
from edgetpu_models.errors import UsageError
from edgetpu_models.io_utils import write_group_atomic
from edgetpu_models.nas.latency.calibrate import rows_graphs, run_calibration, target_rows, write_calibration
from edgetpu_models.nas.latency.cocompile import estimate_cocompiled
from edgetpu_models.nas.latency.cpu.fit import fit_predictor
from edgetpu_models.nas.latency.cpu.timing import target_threads
from edgetpu_models.nas.latency.estimator import estimate
from edgetpu_models.nas.latency.targets import is_user_target, load_target, user_targets_dir
from edgetpu_models.nas.service.client import LatencyClient, client_credentials
from edgetpu_models.tables import fmt_int, format_table


def cmd_estimate(args: argparse.Namespace) -> int:
    if not args.server:
        client_credential_paths(args, None, "--server")  # credentials without a server: one line, not ignored
    if args.more:
        return _estimate_cocompiled(args)
    if args.server:
        result = _estimate_remote(args)
    else:
        result = estimate(args.model, args.target, resolution=args.resolution, variant=args.variant,
                          threads=args.threads, cpu_from_op=_cpu_split(args.model, args.target)).to_dict()
    if args.json:
        print_json(json.dumps(result))
        return 0
    print(f"{args.model} on {result['target']}: {result['latency_ms']:.3f} ms")
    if not args.server:
        _say_user_target(args.target)
    print(f"on-chip parameter bytes:  {fmt_int(result['on_chip_param_bytes'])}")
    print(f"off-chip parameter bytes: {fmt_int(result['off_chip_param_bytes'])} (streamed every inference)")
    on_cpu = [r for r in result["layers"] if r["bound"] == "host_cpu"]
    if on_cpu:
        print(f"partitioned as the compiler does: {len(on_cpu)} layers from {on_cpu[0]['name']} on run on the host CPU "
              f"({sum(r['ms'] for r in on_cpu):.3f} ms), after the tensor goes back over the link (<to host>)")
    rows = [(r["name"], r["op"], "x".join(map(str, r["output_shape"])), fmt_int(r["macs"]), f"{r['ms']:.4f}",
             r["bound"])
            for r in result["layers"]]
    print(format_table(("layer", "op", "output", "MACs", "ms", "bound"), rows, right=(3, 4)))
    return 0


def _cpu_split(model: str, target: str) -> int | None:
    """Where the compiler's Edge TPU segment of a .tflite ends (first op left on the CPU), for an Edge TPU target."""
    if not str(model).endswith(".tflite") or load_target(target).kind != "edgetpu":
        return None
    first = check_tflite(model).first_cpu_op
    return None if first is None else first.index


def _estimate_cocompiled(args: argparse.Namespace) -> int:
    """Several models co-compiled for one Edge TPU, in the order given."""
    if args.server:
        raise UsageError("--server: co-compiled estimates are made here; drop --server or give one model")
    models = [args.model] + list(args.more)
    results = estimate_cocompiled(models, args.target, resolution=args.resolution, variant=args.variant)
    if args.json:
        print_json(json.dumps({"target": args.target, "models": [
            {"model": m, "latency_ms": e.latency_ms, "cached_bytes": p.cached_bytes,
             "streamed_bytes": p.streamed_bytes, "cache_budget_bytes": p.cache_budget_bytes}
            for m, (e, p) in zip(models, results)]}))
        return 0
    mib = 1024 * 1024
    rows = [(str(i), m, f"{p.cache_budget_bytes / mib:.2f}", f"{p.cached_bytes / mib:.2f}",
             f"{p.streamed_bytes / mib:.2f}", f"{e.latency_ms:.3f}") for i, (m, (e, p)) in
            enumerate(zip(models, results))]
    print(f"co-compiled for one Edge TPU ({args.target}), parameters cached in this order:")
    print(format_table(("#", "model", "cache left MiB", "cached MiB", "streamed MiB", "ms"), rows,
                       right=(2, 3, 4, 5)))
    print(f"cache remaining after all: {results[-1][1].remaining_bytes / mib:.2f} MiB")
    return 0


def _say_user_target(name: str) -> None:
    """A target the user calibrated overrides the shipped one: say so, and which file it is."""
    path = load_target(name).path
    if is_user_target(path):
        print(f"target {name} from {path} (your calibration; overrides the shipped one)")


def _estimate_remote(args: argparse.Namespace) -> dict:
    """Asks a running latency server (helper module `client`, gRPC; imported only when asked for)."""
    if args.threads is not None:
        raise UsageError("--threads applies to estimates made here, not with --server")
    credentials = client_credentials(**client_credential_paths(args, args.server, "--server"))
    with LatencyClient(args.server, **credentials) as client:
        return client.estimate(args.model, target=args.target, resolution=args.resolution, variant=args.variant)


def cmd_calibrate(args: argparse.Namespace) -> int:
    t = load_target(args.target)
    if t.kind == "cpu" and args.probe:
        return _probe_cpu(t)
    if args.probe:
        raise UsageError(f"--probe: only the cpu predictor is probed; {args.target} is a {t.kind} target")
    if t.kind == "cpu":
        return _calibrate_cpu(args, t)
    if t.kind != "edgetpu":
        raise UsageError(f"{args.target}: a measured target has nothing to calibrate")

    rows = target_rows(args.target)
    graphs = rows_graphs(rows, rebuild=not args.reuse_graphs, work_dir=args.work_dir,
                         progress=lambda it: tqdm(it, desc="calibration models", unit="model"))
    result = run_calibration(args.target, rows, graphs)
    path = write_calibration(result, args.out)
    print(f"{args.target}: fitted " + ", ".join(f"{k}={v:.4g}" for k, v in result.constants.items()))
    table = [(r.model, f"{r.measured_ms:.2f}", f"{r.predicted_ms:.2f}", f"{r.error * 100:+.1f}%")
             for r in result.loo_rows]
    print("leave-one-out (each model predicted by constants fitted to the others):")
    print(format_table(("model", "measured ms", "predicted ms", "error"), table, right=(1, 2, 3)))
    print(f"Spearman {result.spearman:.3f}, median absolute error {result.median_abs_error * 100:.1f}%")
    print(f"wrote {path}")
    return 0


def _probe_cpu(target) -> int:
    """`calibrate --target cpu --probe`: a short timing of shipped one-kernel models scales the predictor to this
    CPU."""
    from tqdm import tqdm

    from edgetpu_models.nas.latency.cpu.probe import run_probe, write_probe

    result = run_probe(target, progress=lambda it: tqdm(it, desc="probe", unit="kernel"))
    rows = [(r.kernel, f"{r.measured_ms:.4f}", f"+-{r.spread * 100:.1f}%", f"{r.predicted_ms:.4f}")
            for r in (*result.rows, result.model)]
    print(format_table(("kernel (type, input)", "measured ms (median)", "spread (IQR/2)", "predicted as fitted ms"),
                       rows, right=(1, 2, 3)))
    print(f"{target.name}: this CPU ({result.cpu}) runs models {result.scale:.3f}x the predictor's times (kernels "
          f"alone {result.kernel_scale:.3f}x); probe took {result.seconds:.1f} s")
    print(f"wrote {write_probe(result)}")
    return 0


def _calibrate_cpu(args: argparse.Namespace, target) -> int:
    """`calibrate --target cpu`: times kernels here, fits the predictor, and writes it with a copy of the target file
    to the user's targets folder (or beside --out)."""


    threads = target_threads(target, args.threads)
    data = fit_predictor(samples=args.samples or int(target.data.get("train_samples", 300)), threads=threads,
                         progress=lambda it: tqdm(it, desc="timing", unit="item"),
                         composition_models=int(target.data.get("composition_models", 5)))
    yaml_path = args.out or os.path.join(user_targets_dir(), f"{target.name}.yaml")
    path = os.path.join(os.path.dirname(os.path.abspath(yaml_path)), str(target.data["predictor"]))
    write_group_atomic({path: json.dumps(data, indent=1) + "\n",
                        yaml_path: yaml.safe_dump(dict(target.data), sort_keys=False, width=120)})
    print(f"{target.name}: {len(data['kernels'])} kernel regressors from {data['meta']['samples']} timed kernels "
          f"({threads} thread(s)); invoke overhead {data['invoke_ms']:.4f} ms; composition factor "
          f"{data['composition']:.3f} from {data['meta'].get('composition_models', 0)} whole models; timing noise: "
          f"median spread {data['meta'].get('spread_median')} (IQR/2 over the median of 9 runs per kernel)")
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help=command_help("estimate"))
    add_model_args(p, help="zoo name, spec file (.yaml), Keras model (.keras/.h5) or int8 .tflite")
    p.add_argument("more", nargs="*", metavar="MODEL",
                   help="further models co-compiled after the first: each gets the parameter cache the ones before "
                        "it left (Edge TPU targets)")
    p.add_argument("--target", default="coral-usb",
                   help="coral-usb, coral-usb-std, coral-devboard, pixel4, pixel6, cpu, cpu-measured "
                        "(default coral-usb)")
    p.add_argument("--threads", type=threads_arg, help="CPU threads for cpu-measured (default: the target file's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--server", metavar="HOST:PORT", type=address_arg,
                   help="ask a running latency server instead of estimating here")
    add_client_credential_args(p, "--server")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("calibrate", help=command_help("calibrate"))
    p.add_argument("--target", required=True, help="coral-usb, coral-devboard, pixel4, pixel6 or cpu")
    p.add_argument("--reuse-graphs", action="store_true",
                   help="fit from the stored calibration graphs instead of rebuilding and converting the models")
    p.add_argument("--work-dir",
                   help="where converted .tflite files are kept (resume); default ~/.cache/edgetpu_models")
    p.add_argument("--samples", type=bounded_int(10, 100_000), default=None,
                   help="cpu: number of kernel configurations to time")
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="cpu: threads to time with (default: the target's)")
    p.add_argument("--probe", action="store_true",
                   help="cpu: a short probe (about 2 s) that scales the predictor to this CPU instead of the full "
                        "calibration")
    p.add_argument("--out", metavar="FILE.yaml",
                   help="where to write the fitted target (default: ~/.config/edgetpu_models/targets/TARGET.yaml, "
                        "which overrides the shipped target)")
    p.set_defaults(func=cmd_calibrate)
