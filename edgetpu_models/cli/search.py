"""CLI: `edgetpu-models nas search ...` and `edgetpu-models nas show DIR`. Thin: the work is in nas.search."""

from __future__ import annotations

import argparse
import os

from edgetpu_models.cli.args import bounded_float, bounded_int, seed_arg
from edgetpu_models.tables import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    nas = subparsers.add_parser("nas", help="accelerator-aware architecture search (search, show)",
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
    p.add_argument("--proxy-resolution", type=bounded_int(16, 1024), default=None, metavar="PX",
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
    p.add_argument("--latency-server", default=None, metavar="HOST:PORT",
                   help="get latencies from a latency server instead of the in-process model (same numbers)")
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


def _config_from_args(args: argparse.Namespace):
    from edgetpu_models.nas.search.loop import SearchConfig, SearchError

    if args.resume:
        given = [f"--{n.replace('_', '-')}" for n in ("target", "latency_target_ms", "controller", "trials",
                                                         "proxy_steps", "proxy_resolution", "proxy_width", "data",
                                                         "reward", "alpha", "beta", "space", "seed")
                 if getattr(args, n) is not None]
        if given:
            raise SearchError(f"--resume continues the search stored in {args.out}; it does not take "
                              f"{', '.join(given)} (only --workers, --address, --latency-server)")
        return SearchConfig(workers=args.workers, address=args.address, latency_server=args.latency_server)
    if args.latency_target_ms is None:
        raise SearchError("--latency-target-ms: required for a new search (the latency target T in ms)")
    proxy = {k: v for k, v in (("steps", args.proxy_steps), ("resolution", args.proxy_resolution),
                               ("width", args.proxy_width), ("seed", args.seed)) if v is not None}
    if args.data is not None:
        if not os.path.isdir(args.data):
            raise SearchError(f"--data: {args.data}: no such folder (expected an image folder, one sub-folder per "
                              f"class)")
        proxy["data_dir"] = os.path.abspath(args.data)
    from edgetpu_models.nas.search.proxy import ProxyConfig

    ProxyConfig(**proxy)  # bad proxy settings fail here, before anything is written
    return SearchConfig(target=args.target or "coral-usb", latency_target_ms=args.latency_target_ms,
                        controller=args.controller or "reinforce", trials=args.trials or 50, seed=args.seed or 0,
                        reward=args.reward or "mnas-soft", alpha=args.alpha, beta=args.beta,
                        space=os.path.abspath(args.space) if args.space else None, proxy=proxy,
                        workers=args.workers, address=args.address, latency_server=args.latency_server)


def _oneshot_config(args: argparse.Namespace):
    from edgetpu_models.nas.search.oneshot.run import OneShotConfig, OneShotError

    if args.resume:
        return OneShotConfig(latency_target_ms=1.0, strategy=args.strategy or "default",
                             latency_server=args.latency_server)
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
    from edgetpu_models.nas.search.oneshot.run import load_oneshot, read_summary

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
    from edgetpu_models.nas.search.loop import run_search
    from edgetpu_models.nas.search.oneshot.run import is_oneshot_dir, run_oneshot

    if args.method == "oneshot" or (args.resume and args.method is None and is_oneshot_dir(args.out)):
        run_oneshot(_oneshot_config(args), args.out, resume=args.resume, progress=not args.no_progress)
        _print_oneshot(args.out)
        return 0
    cfg = _config_from_args(args)
    result = run_search(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    _print_summary(result.out_dir)
    return 0


def _print_summary(out_dir: str) -> None:
    from edgetpu_models.nas.search.loop import load_search
    from edgetpu_models.nas.search.results import BEST_SPEC, PLOT, best_result, pareto_front

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
    from edgetpu_models.nas.search.loop import load_search
    from edgetpu_models.nas.search.oneshot.run import is_oneshot_dir

    if is_oneshot_dir(args.dir):
        _print_oneshot(args.dir)
        return 0
    if args.plot:
        from edgetpu_models.nas.search.results import PLOT, plot_trials

        cfg, results = load_search(args.dir)
        plot_trials(os.path.join(args.dir, PLOT), results, cfg.latency_target_ms,
                    title=f"{cfg.controller} on {cfg.target}, {len(results)} trials")
    _print_summary(args.dir)
    return 0
