"""CLI: `edgetpu-models nas search ...` and `edgetpu-models nas show DIR`. Thin: the work is in nas.search."""

from __future__ import annotations

import argparse
import os

from edgetpu_models.cli.args import (
    add_client_credential_args,
    address_arg,
    bounded_float,
    bounded_int,
    client_credential_paths,
    resolution_arg,
    seed_arg,
)
from edgetpu_models.cli.commands import command_help
from edgetpu_models.errors import OneShotError, SearchError, UsageError
from edgetpu_models.nas.search.loop import SearchConfig, load_search, run_search
from edgetpu_models.nas.search.oneshot.run import (
    OneShotConfig,
    is_oneshot_dir,
    load_oneshot,
    read_summary,
    run_oneshot,
)
from edgetpu_models.nas.search.results import BEST_SPEC, PLOT, best_result, pareto_front, plot_trials
from edgetpu_models.tables import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    nas = subparsers.add_parser("nas", help=command_help("nas"),
                                description="Accelerator-aware NAS over the Edge TPU search space.")
    sub = nas.add_subparsers(dest="nas_command", metavar="SUBCOMMAND", parser_class=type(nas))
    sub.required = True

    p = sub.add_parser("search", help="run or resume a search; writes the best spec, trials CSV, front and plot",
                       description="Search the space for the best accuracy/latency trade-off on a target. Every "
                                   "trial is logged as it finishes; --resume continues a killed search.")
    p.add_argument("--target", default=None,
                   help="latency target device (default coral-usb; `edgetpu-models estimate --help` "
                        "lists them; cpu-measured times each candidate on the CPU)")
    p.add_argument("--latency-target-ms", type=bounded_float(0.0, 1e6, low_open=True), default=None, metavar="T",
                   help="latency target T in ms (required for a new search)")
    p.add_argument("--controller", choices=("reinforce", "evolution", "random"), default=None,
                   help="search controller (default reinforce)")
    p.add_argument("--trials", type=bounded_int(1, 1_000_000), default=None, metavar="N",
                   help="number of trials (default 50)")
    p.add_argument("--proxy-steps", type=bounded_int(1, 10_000_000), default=None, metavar="K",
                   help="training steps per candidate (default 100)")
    p.add_argument("--proxy-resolution", type=resolution_arg, default=None, metavar="PX",
                   help="input size of the proxy training (default 64)")
    p.add_argument("--proxy-width", type=bounded_float(0.0, 4.0, low_open=True), default=None, metavar="W",
                   help="width multiplier of the proxy training (default 0.5)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="image folder (one sub-folder per class) for proxy training (default: the bundled dataset)")
    p.add_argument("--reward", choices=("mnas-soft", "mnas-hard", "tunas"), default=None,
                   help="mnas-soft: ACC*(LAT/T)^-0.07; mnas-hard: alpha=0, beta=-1; tunas: ACC+beta*|LAT/T-1|")
    p.add_argument("--alpha", type=bounded_float(-10.0, 10.0), default=None,
                   help="MnasNet exponent when LAT <= T (overrides the preset)")
    p.add_argument("--beta", type=bounded_float(-10.0, 10.0), default=None,
                   help="MnasNet exponent when LAT > T, or TuNAS's weight")
    p.add_argument("--space", default=None, metavar="YAML", help="search-space file (default: the shipped one)")
    p.add_argument("--seed", type=seed_arg, default=None, help="controller and proxy seed (default 0)")
    p.add_argument("--workers", type=bounded_int(1, 256), default=2, metavar="W", help="trials in parallel (default 2)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="join an existing Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray")
    p.add_argument("--latency-server", default=None, metavar="HOST:PORT", type=address_arg,
                   help="get latencies from a latency server instead of the in-process model (same numbers)")
    add_client_credential_args(p, "--latency-server")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (with --resume: the folder to resume)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out after an interruption")
    p.add_argument("--method", choices=("trials", "oneshot"), default=None,
                   help="trials: train every candidate (default); oneshot: TuNAS weight-sharing super-network and "
                        "REINFORCE controller in one run (--proxy-resolution/--proxy-width set the super-network's)")
    p.add_argument("--steps", type=bounded_int(1, 100_000_000), default=None, metavar="N",
                   help="oneshot: super-network training steps (default 400)")
    p.add_argument("--strategy", choices=("default", "mirrored", "multi-worker", "tpu"), default=None,
                   help="oneshot: tf.distribute strategy, as for train (default: one device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_search)

    s = sub.add_parser("show", help="summary of a search folder: best trial and the Pareto front",
                       description="Prints the latency/accuracy Pareto front of a (finished or interrupted) search.")
    s.add_argument("dir", metavar="DIR", help="search output folder")
    s.add_argument("--plot", action="store_true", help="also (re)draw DIR/trials.png")
    s.set_defaults(func=cmd_show)


_SEARCH_FLAGS = ("target", "latency_target_ms", "controller", "trials", "reward", "alpha", "beta", "space", "seed")
_PROXY_FLAGS = {"proxy_steps": "steps", "proxy_resolution": "resolution", "proxy_width": "width", "seed": "seed"}
_RUNTIME_FLAGS = ("workers", "address", "latency_server")


def _config_from_args(args: argparse.Namespace) -> SearchConfig:
    """The flags given -> SearchConfig; what was not given keeps SearchConfig's (and ProxyConfig's) defaults."""
    runtime = {n: getattr(args, n) for n in _RUNTIME_FLAGS}
    runtime["latency_auth"] = client_credential_paths(args, args.latency_server, "--latency-server")
    if args.resume:
        given = [f"--{n.replace('_', '-')}" for n in (*_SEARCH_FLAGS, *_PROXY_FLAGS, "data")
                 if getattr(args, n) is not None]
        if given:
            raise UsageError(f"--resume continues the search stored in {args.out}; it does not take "
                             f"{', '.join(dict.fromkeys(given))} (only --workers, --address, --latency-server)")
        return SearchConfig(**runtime)
    if args.latency_target_ms is None:
        raise UsageError("--latency-target-ms: required for a new search (the latency target T in ms)")
    proxy = {field: getattr(args, flag) for flag, field in _PROXY_FLAGS.items() if getattr(args, flag) is not None}
    if args.data is not None:
        if not os.path.isdir(args.data):
            raise SearchError(f"--data: {args.data}: no such folder (expected an image folder, one sub-folder per "
                              f"class)")
        proxy["data_dir"] = os.path.abspath(args.data)
    search = {n: getattr(args, n) for n in _SEARCH_FLAGS if getattr(args, n) is not None}
    if args.space:
        search["space"] = os.path.abspath(args.space)
    return SearchConfig(**search, proxy=proxy, **runtime)


def _oneshot_config(args: argparse.Namespace) -> OneShotConfig:
    if args.resume:
        given = [f"--{n}" for n, v in (("target", args.target), ("latency-target-ms", args.latency_target_ms),
                                       ("reward", args.reward), ("alpha", args.alpha), ("beta", args.beta),
                                       ("steps", args.steps), ("proxy-resolution", args.proxy_resolution),
                                       ("proxy-width", args.proxy_width), ("seed", args.seed), ("space", args.space),
                                       ("data", args.data)) if v is not None]
        if given:
            raise UsageError(f"--resume continues the one-shot search stored in {args.out}; it does not take "
                             f"{', '.join(given)} (only --strategy, --latency-server)")
        return OneShotConfig(latency_target_ms=1.0, strategy=args.strategy or "default",
                             latency_server=args.latency_server)  # the stored run's settings are read back
    if args.latency_target_ms is None:
        raise OneShotError("--latency-target-ms: required for a new search (the latency target T in ms)")
    if args.data is not None and not os.path.isdir(args.data):
        raise OneShotError(f"--data: {args.data}: no such folder (expected an image folder, one sub-folder per class)")
    given = {k: v for k, v in (("target", args.target), ("reward", args.reward), ("alpha", args.alpha),
                               ("beta", args.beta), ("steps", args.steps), ("resolution", args.proxy_resolution),
                               ("width", args.proxy_width), ("seed", args.seed),
                               ("strategy", args.strategy), ("latency_server", args.latency_server),
                               ("space", os.path.abspath(args.space) if args.space else None),
                               ("data_dir", os.path.abspath(args.data) if args.data else None)) if v is not None}
    cfg = OneShotConfig(latency_target_ms=args.latency_target_ms, **given)
    cfg.validate()
    return cfg


def _print_oneshot(out_dir: str) -> None:
    cfg, steps = load_oneshot(out_dir)
    summary = read_summary(out_dir)
    print(f"{out_dir}: one-shot search, {len(steps)}/{cfg.steps} steps, target {cfg.target} at "
          f"{cfg.latency_target_ms:g} ms, reward {cfg.make_reward().describe()}")
    if summary is None:
        print("not finished: continue it with --resume")
        return
    rows = [(t["rank"], f"{t['probability']:.3g}", f"{t['latency_ms']:.3f}", t["arch"]) for t in summary["top_k"]]
    print(format_table(("rank", "probability", "latency ms", "architecture"), rows, right=(0, 1, 2)))
    best = summary["best"]
    print(f"best spec: {os.path.join(out_dir, 'best_spec.yaml')} ({best['latency_ms']:.3f} ms, "
          f"{100 * best['relative_error']:+.1f}% of the target; super-network accuracy "
          f"{best['supernet_accuracy']:.4f})")


def cmd_search(args: argparse.Namespace) -> int:
    if args.method == "oneshot" or (args.resume and args.method is None and is_oneshot_dir(args.out)):
        run_oneshot(_oneshot_config(args), args.out, resume=args.resume, progress=not args.no_progress)
        _print_oneshot(args.out)
        return 0
    cfg = _config_from_args(args)
    result = run_search(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    _print_summary(result.out_dir)
    return 0


def _print_summary(out_dir: str) -> None:
    cfg, results = load_search(out_dir)
    front = pareto_front(results)
    best = best_result(results)
    ok = [r for r in results if r.get("status") == "ok"]
    proxy = ok[0]["accuracy_proxy"] if ok else "-"
    print(f"{out_dir}: {len(results)}/{cfg.trials} trials ({len(results) - len(ok)} failed), controller "
          f"{cfg.controller}, target {cfg.target} at {cfg.latency_target_ms:g} ms, reward {cfg.reward}")
    print(f"accuracy: {proxy}")
    rows = [(r["trial"], f"{r['latency_ms']:.3f}", f"{r['accuracy']:.4f}", f"{r['reward']:.4f}",
             "*" if best is not None and r["trial"] == best["trial"] else "", r["arch"]) for r in front]
    if best is not None and best["trial"] not in {r["trial"] for r in front}:
        rows.append((best["trial"], f"{best['latency_ms']:.3f}", f"{best['accuracy']:.4f}", f"{best['reward']:.4f}",
                     "*", best["arch"]))
    print(format_table(("trial", "latency ms", "accuracy", "reward", "best", "architecture"), rows,
                       right=(0, 1, 2, 3)))
    if best is not None:
        print(f"best spec: {os.path.join(out_dir, BEST_SPEC)}   plot: {os.path.join(out_dir, PLOT)}")


def cmd_show(args: argparse.Namespace) -> int:
    if is_oneshot_dir(args.dir):
        _print_oneshot(args.dir)
        return 0
    if args.plot:
        cfg, results = load_search(args.dir)
        plot_trials(os.path.join(args.dir, PLOT), results, cfg.latency_target_ms,
                    title=f"{cfg.controller} on {cfg.target}, {len(results)} trials")
    _print_summary(args.dir)
    return 0
