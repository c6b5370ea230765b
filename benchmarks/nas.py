"""NAS benchmark: a real search (proxy training on the bundled dataset) on this machine, and where the published
EfficientNet-EdgeTPU-S falls against the front it finds.

    python benchmarks/nas.py                      # 50 trials, 2 workers, evolution, target = S's latency on coral-usb
    python benchmarks/nas.py --trials 80 --controller reinforce --out /tmp/nas_bench

Prints: wall time (and whether it met the 20-minute budget), trials per minute, the best trial, the Pareto front,
EfficientNet-EdgeTPU-S (and MobilenetEdgeTPU) scored with the very same proxy (same steps, resolution, width, data,
seed) and latency model, and whether the front dominates them. Writes the search folder and a plot with the
references marked (trials_with_references.png).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

BUDGET_S = 20 * 60


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--controller", default="evolution", choices=("reinforce", "evolution", "random"))
    p.add_argument("--target", default="coral-usb")
    p.add_argument("--latency-target-ms", type=float, default=None,
                   help="default: EfficientNet-EdgeTPU-S's latency on the target (the search looks for S-class nets)")
    p.add_argument("--steps", type=int, default=60, help="proxy training steps per candidate")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="search folder (default: a new folder under the temp dir)")
    p.add_argument("--resume", action="store_true", help="resume the search in --out")
    return p.parse_args(argv)


def _search_config(args: argparse.Namespace, target_ms: float) -> Any:
    from edgetpu_models.nas.search.loop import SearchConfig

    proxy = {"steps": args.steps, "resolution": args.resolution, "width": args.width, "seed": args.seed}
    return SearchConfig(target=args.target, latency_target_ms=target_ms, controller=args.controller,
                        trials=args.trials, seed=args.seed, proxy=proxy, workers=args.workers,
                        controller_options={"population": 12, "sample": 4} if args.controller == "evolution" else {})


def _print_run_figures(args: argparse.Namespace, result: Any, wall: float, ok: list[dict[str, Any]],
                       proxy_name: str) -> None:
    """Wall time against the budget, trial rate, median trial time and CPU time of the trained trials."""
    train_s = sorted(r.get("train_seconds", r["seconds"]) for r in ok if r.get("cached_from") is None)
    print(f"\nwall time {wall:.0f} s for {result.trials - result.resumed_from} trials "
          f"({60 * (result.trials - result.resumed_from) / wall:.1f} trials/min); budget {BUDGET_S} s: "
          f"{'met' if wall < BUDGET_S else 'MISSED'}; failed trials: {result.failed}; "
          f"median trial {train_s[len(train_s) // 2] if train_s else float('nan'):.1f} s (build + train + eval)")
    cpu = [r["cpu_seconds"] for r in ok if "cpu_seconds" in r]
    if cpu:
        load = os.getloadavg()[1]
        print(f"CPU time of the {len(cpu)} trained trials: {sum(cpu):.0f} s (median {sorted(cpu)[len(cpu) // 2]:.1f} "
              f"s per trial) -> on {args.workers} otherwise idle cores about {sum(cpu) / args.workers:.0f} s of trial "
              f"work; load average during the run: {load:.1f} on {os.cpu_count()} cores")
    print(f"accuracy proxy: {proxy_name} on the bundled dataset's held-out split")


def _score_references(cfg: Any) -> list[Any]:
    """The published models scored with the search's own proxy and latency model."""
    from edgetpu_models.nas.search.loop import reference_point
    from edgetpu_models.zoo import resolve_spec

    refs = []
    for name in ("efficientnet_edgetpu_s", "mobilenet_edgetpu"):
        t = time.perf_counter()
        spec, _ = resolve_spec(name)
        refs.append(reference_point(spec, cfg, label=name))
        print(f"scored {name} at the same proxy setting in {time.perf_counter() - t:.0f} s", flush=True)
    return refs


def _print_front(result: Any) -> None:
    from edgetpu_models.tables import format_table

    print("\nPareto front (latency on the target model, proxy accuracy):")
    print(format_table(("trial", "latency ms", "accuracy", "reward"),
                       [(r["trial"], f"{r['latency_ms']:.3f}", f"{r['accuracy']:.4f}", f"{r['reward']:.4f}")
                        for r in result.front], right=(0, 1, 2, 3)))
    best = result.best
    if best is not None:
        print(f"best reward: trial {best['trial']}: {best['latency_ms']:.3f} ms, accuracy {best['accuracy']:.4f}, "
              f"reward {best['reward']:.4f}\n  {best['arch']}")


def _print_references(front: list[dict[str, Any]], refs: list[Any]) -> None:
    """Whether the found front dominates each reference, and by how much accuracy / latency."""
    from edgetpu_models.nas.search.results import relation_to_front
    from edgetpu_models.tables import format_table

    print("\nreferences against the found front:")
    rows = []
    for ref in refs:
        rel = relation_to_front(front, ref.latency_ms, ref.accuracy)
        gap = "-" if rel["accuracy_gap"] is None else f"{rel['accuracy_gap']:+.4f}"
        ratio = "-" if rel["latency_ratio"] is None else f"{rel['latency_ratio']:.2f}x"
        rows.append((ref.label, f"{ref.latency_ms:.3f}", f"{ref.accuracy:.4f}",
                     "yes (by trials " + ", ".join(map(str, rel["dominated_by"])) + ")" if rel["dominated"] else "no",
                     gap, ratio))
    print(format_table(("model", "latency ms", "accuracy", "dominated by the front", "acc - front acc at <= its "
                        "latency", "its latency / front latency at >= its acc"), rows, right=(1, 2, 4, 5)))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parse_args(argv)

    from edgetpu_models.nas.latency.estimator import estimate
    from edgetpu_models.nas.search.loop import load_search, run_search
    from edgetpu_models.nas.search.results import PLOT, Reference, plot_trials
    from edgetpu_models.zoo import resolve_spec

    s_spec, s_variant = resolve_spec("efficientnet_edgetpu_s")
    target_ms = args.latency_target_ms or round(estimate(s_spec, args.target, variant=s_variant).latency_ms, 3)
    out = args.out or tempfile.mkdtemp(prefix="nas_benchmark_")
    cfg = _search_config(args, target_ms)
    print(f"search: {args.trials} trials, {args.workers} workers, controller {args.controller}, target "
          f"{args.target} at {target_ms:g} ms, {os.cpu_count()} CPU cores, out {out}", flush=True)
    t0 = time.perf_counter()
    result = run_search(cfg, out, resume=args.resume, progress=True)
    wall = time.perf_counter() - t0
    cfg, results = load_search(out)
    ok = [r for r in results if r["status"] == "ok"]
    proxy_name = ok[0]["accuracy_proxy"] if ok else "?"
    _print_run_figures(args, result, wall, ok, proxy_name)
    refs = _score_references(cfg)
    _print_front(result)
    _print_references(result.front, refs)
    plot = plot_trials(os.path.join(out, "trials_with_references.png"), results, cfg.latency_target_ms,
                       title=f"{cfg.controller}, {len(results)} trials on {cfg.target} ({proxy_name})",
                       references=[Reference(r.label, r.latency_ms, r.accuracy) for r in refs],
                       accuracy_label=f"accuracy ({proxy_name})")
    print(f"\nplot: {plot}\n(search plot without references: {os.path.join(out, PLOT)}; best spec: "
          f"{result.best_spec_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
