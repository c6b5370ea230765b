"""One-shot (TuNAS) search benchmark on this machine: exactness of child extraction, the latency target hit in one
run, and whether the super-network's ranking of networks is real.

    python benchmarks/oneshot.py                  # the full benchmark (32 px, width 0.25, digits-hard)
    python benchmarks/oneshot.py --smoke          # seconds-scale run of every part (a small 3-slot space)

Prints:
(a) exactness: `child_model` against the super-network (inference mode, random weights and batch-norm statistics)
    for N random architectures of each shipped space: the largest absolute and relative output difference;
(b) target: two one-shot searches, T0 = EfficientNet-EdgeTPU-S's predicted coral-usb latency and 0.6 x T0, same
    beta: the most likely network's predicted latency and its error against the target;
(c) ranking: 12 networks spread over the latency range, super-network accuracy (the T0 run's shared weights) and
    stand-alone accuracy (one recipe: the proxy trainer, longer): Kendall's tau;
(c2) the same ranking in a 3-slot space whose super-network trains within this budget, from shared weights trained
    on uniformly sampled children (the default space's 27 positions do not train in a few hundred steps: see
    the README's one-shot section);
(c3) the winners' table, in the 3-slot space (where stand-alone accuracy is far from chance, so it can tell methods
    apart): a one-shot search for T0 (600 steps, a minute and a half: this space's steps are cheap) against the best
    of `nas search --controller random` and `evolution` (per-trial search, killed after the same wall-clock time as
    the one-shot search), each winner trained stand-alone with the same recipe;
(d) wall time of the whole benchmark (20-minute budget).

Every part trains and scores on digits-hard (edgetpu_models/hard_digits.py: the bundled digits moved, turned,
cluttered and noised, built offline into the work folder): on the plain digits every network scores 0.88-0.98 and
stand-alone accuracies differ by less than their noise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

BUDGET_S = 20 * 60
SMALL_SPACE = """\
name: small
template: efficientnet_edgetpu_s
activation: relu
choices: {block: [ibn, fused_ibn], kernel: [3, 5], expansion: [4, 8], width_multiplier: [0.5, 1.0],
          repeats_delta: [-1, 0, 1], skip: [true, false]}
stages:
  - {name: s0, stride: 1, filters: 16, repeats: 1, repeats_delta: [0]}
  - {name: s1, stride: 2, filters: 24, repeats: 1, repeats_delta: [0]}
  - {name: s2, stride: 1, filters: 24, repeats: 1}
"""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="every part at toy size (seconds to a minute)")
    p.add_argument("--learnability", action="store_true",
                   help="only the super-network's training loss when some decisions vary (default space, about 5 min)")
    p.add_argument("--learn-steps", type=int, default=200, help="training steps per --learnability mode")
    p.add_argument("--steps", type=int, default=200, help="one-shot steps per search")
    p.add_argument("--controller-samples", type=int, default=3, help="children the controller scores per step")
    p.add_argument("--controller-lr", type=float, default=0.5,
                   help="the controller's learning rate (a 200-step run must end with a settled policy: its most "
                        "likely network is the result)")
    p.add_argument("--small-steps", type=int, default=400, help="one-shot steps of the small-space ranking (c2)")
    p.add_argument("--small-search-steps", type=int, default=600,
                   help="one-shot steps of the small-space search in the winners' table (c3; its wall-clock time is "
                        "the per-trial searches' budget)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--beta", type=float, default=-2.0,
                   help="the absolute reward's latency weight, the same for both targets")
    p.add_argument("--exact", type=int, default=20, help="random architectures per space for (a)")
    p.add_argument("--archs", type=int, default=12, help="networks for the ranking (c)")
    p.add_argument("--standalone-steps", type=int, default=150, help="stand-alone recipe: training steps")
    p.add_argument("--baseline-proxy-steps", type=int, default=60, help="per-trial search: proxy steps per trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="work folder (default: a new temp folder)")
    return p.parse_args(argv)


def _say(*a: Any) -> None:
    print(*a, flush=True)


def random_point(space: Any, rng: np.random.Generator) -> tuple[int, ...]:
    """A point of the space drawn uniformly, decision by decision."""
    return tuple(int(rng.integers(n)) for n in space.sizes)


# -- (a) exactness ----------------------------------------------------------------------------------------------------
def exactness(n: int, width: float, resolution: int, seed: int) -> dict[str, tuple[float, float]]:
    import tensorflow as tf

    from edgetpu_models.nas.search.oneshot.child import child_model
    from edgetpu_models.nas.search.oneshot.layout import block_choices, make_layout
    from edgetpu_models.nas.search.oneshot.supernet import SuperNet, arch_masks, randomise_statistics
    from edgetpu_models.nas.search.space import default_space_path, load_space

    out = {}
    rng = np.random.default_rng(seed)
    x = tf.random.stateless_normal([4, resolution, resolution, 3], seed=[seed, 1])
    for path in (default_space_path(), os.path.join(os.path.dirname(default_space_path()),
                                                    "search_space_grouped.yaml")):
        space = load_space(path)
        net = SuperNet(space, make_layout(space, width, resolution), 10, seed=seed)
        randomise_statistics(net, rng)
        worst_abs = worst_rel = 0.0
        for _ in range(n):
            pt = random_point(space, rng)
            ref = net(x, arch_masks(net.layout, block_choices(space, net.layout, pt)), training=False).numpy()
            got = child_model(net, pt, classifier_activation=None)(x, training=False).numpy()
            diff = float(np.abs(ref - got).max())
            worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / float(np.abs(ref).max()))
            tf.keras.backend.clear_session()
        out[space.name] = (worst_abs, worst_rel)
    return out


# -- (b) searches -----------------------------------------------------------------------------------------------------
def search(args: argparse.Namespace, target_ms: float, out: str, space: str | None, steps: int | None = None,
           **overrides: Any) -> tuple[Any, Any, float]:
    from edgetpu_models.nas.search.oneshot.run import OneShotConfig, OneShotRun

    steps = steps or args.steps
    cfg = OneShotConfig(latency_target_ms=target_ms, steps=steps, resolution=args.resolution, width=args.width,
                        beta=args.beta, seed=args.seed, space=space, batch_size=64,
                        controller_samples=args.controller_samples, checkpoint_every=max(steps // 4, 1),
                        data_dir=args.data, controller_learning_rate=args.controller_lr, **overrides)
    t0 = time.perf_counter()
    run = OneShotRun(cfg, out)
    result = run.run()
    return run, result, time.perf_counter() - t0


# -- (c) ranking and baselines ----------------------------------------------------------------------------------------
def spread_points(space: Any, latency: Any, n: int, seed: int) -> list[tuple[int, ...]]:
    """n random networks at evenly spaced latency quantiles of 400 random samples."""
    rng = np.random.default_rng(seed + 7)
    pool = [random_point(space, rng) for _ in range(400)]
    pool.sort(key=latency)
    return [pool[int(round(q))] for q in np.linspace(0, len(pool) - 1, n)]


def standalone(spec: Any, args: argparse.Namespace) -> float:
    from edgetpu_models.nas.search.proxy import ProxyConfig, train_proxy

    cfg = ProxyConfig(steps=args.standalone_steps, resolution=args.resolution, width=args.width, seed=args.seed,
                      threads=2, data_dir=args.data)
    return float(train_proxy(spec, cfg)["accuracy"])


def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def baseline(controller: str, target_ms: float, budget_s: float, args: argparse.Namespace, out: str,
             space: str | None) -> dict[str, Any] | None:
    """`nas search --controller C`, killed (with its Ray workers) after `budget_s`: its best completed trial."""
    from edgetpu_models.nas.search.loop import load_search
    from edgetpu_models.nas.search.results import best_result

    cmd = [sys.executable, "-m", "edgetpu_models.cli", "nas", "search", "--controller", controller, "--trials",
           "10000", "--latency-target-ms", f"{target_ms}", "--proxy-steps", str(args.baseline_proxy_steps),
           "--proxy-resolution", str(args.resolution), "--proxy-width", str(args.width), "--reward", "tunas",
           "--beta", str(args.beta), "--seed", str(args.seed), "--out", out, "--no-progress", "--workers", "2",
           "--data", args.data]
    if space:
        cmd += ["--space", space]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        _, results = load_search(out)
    except Exception:  # noqa: BLE001 - no trial finished in the budget
        return None
    best = best_result(results)
    return None if best is None else {**best, "trials": len(results)}


def ranking(run: Any, args: argparse.Namespace) -> dict[str, Any]:
    space, trainer = run.space, run.trainer
    points = spread_points(space, run.latency, args.archs, args.seed)
    from edgetpu_models.nas.search.oneshot.run import mixed_validation

    val = trainer.distribute(mixed_validation(run.data))
    sup, alone, lats = [], [], []
    for k, pt in enumerate(points):
        sup.append(trainer.accuracy(val, pt))
        alone.append(standalone(space.decode(pt), args))
        lats.append(run.latency(pt))
        _say(f"  arch {k + 1:2d}: {lats[-1]:6.3f} ms  super-network {sup[-1]:.3f}  stand-alone {alone[-1]:.3f}")
    return {"tau": kendall_tau(sup, alone), "supernet": sup, "standalone": alone, "latency_ms": lats}


def small_space_ranking(args: argparse.Namespace, out: str, path: str) -> dict[str, Any]:
    """(c2) The ranking in SMALL_SPACE (3 slots), whose super-network trains within this budget. Its shared weights
    are trained as a ranking study trains them: children sampled uniformly (TuNAS's warm-ups, the controller held
    back for the whole run), since a controller that settles on the target trains the children near it far more
    than the others and the super-network's accuracy then measures how often a child was trained."""
    from edgetpu_models.nas.search.oneshot.controller import LatencyCache
    from edgetpu_models.nas.search.space import load_space

    space = load_space(path)
    latency = LatencyCache(space, "coral-usb")
    rng = np.random.default_rng(args.seed + 11)
    median = float(np.median([latency(random_point(space, rng)) for _ in range(400)]))
    run, result, secs = search(args, median, os.path.join(out, "search_small"), path, steps=args.small_steps,
                               controller_delay=1.0)
    _say(f"(c2) ranking in the small space ({len(space.sizes)} decisions, 3 slots): super-network trained on uniformly "
         f"sampled children, {args.small_steps} steps in {secs:.0f} s")
    return {**ranking(run, args), "target_ms": median, "seconds": secs}


def _write_small_space(out: str) -> str:
    from edgetpu_models.io_utils import write_text_atomic

    path = os.path.join(out, "small_space.yaml")
    write_text_atomic(path, SMALL_SPACE)
    return path


LEARNABILITY_MODES: dict[str, tuple[tuple[str, ...] | None, dict[str, Any]]] = {
    # mode: (the decision keys drawn at random per step (None: all), the values forced in every stage, over any
    # draw); every other decision stays at one random point, whose stages mostly have no identity skip
    "one fixed network": ((), {}),
    "fixed, every block ibn": ((), {"block": "ibn"}),
    "fixed, every block fused": ((), {"block": "fused_ibn"}),
    "fixed, skips on": ((), {"skip": True}),
    "block types random": (("block",), {}),
    "block types, skips on": (("block",), {"skip": True}),
    "depth random, skips on": (("repeats_delta",), {"skip": True}),
    "everything random": (None, {}),
    "everything random but skips on": (None, {"skip": True}),
}


def _learnability_point(space: Any, rng: np.random.Generator, fixed: tuple[int, ...], keys: tuple[str, ...] | None,
                        forced: dict[str, Any]) -> tuple[int, ...]:
    """`fixed` with the `keys` decisions drawn at random and the `forced` values set wherever a stage offers them."""
    out = []
    for n, d, f in zip(space.sizes, space.decisions, fixed):
        if d.key in forced and forced[d.key] in d.choices:
            out.append(d.choices.index(forced[d.key]))
        else:
            out.append(int(rng.integers(n)) if keys is None or d.key in keys else f)
    return tuple(out)


def learnability(args: argparse.Namespace) -> dict[str, float]:
    """Why (c) cannot rank in the default space at this budget: the super-network's training loss (mean of the last
    50 steps, bundled digits) for one fixed network, for it with every block of one type or every identity skip on,
    and when per step some decisions are drawn at random. Chance is ln 10 = 2.30."""
    import tensorflow as tf

    from edgetpu_models.data import default_dataset_dir, load_image_folder
    from edgetpu_models.nas.search.oneshot.layout import make_layout
    from edgetpu_models.nas.search.oneshot.trainer import Trainer
    from edgetpu_models.nas.search.space import load_space

    space = load_space(None)
    data = load_image_folder(default_dataset_dir(), args.resolution, space.template().normalization, batch_size=64,
                             validation_split=0.2, seed=args.seed, augment=False)
    out = {}
    for mode, (keys, forced) in LEARNABILITY_MODES.items():
        rng = np.random.default_rng(args.seed)
        fixed = random_point(space, rng)
        trainer = Trainer(space, make_layout(space, args.width, args.resolution), data.num_classes,
                          strategy=tf.distribute.get_strategy(), learning_rate=3e-3, total_steps=args.learn_steps,
                          seed=args.seed)
        batches, losses = iter(data.train_epoch(0).repeat()), []
        for _ in range(args.learn_steps):
            point = _learnability_point(space, rng, fixed, keys, forced)
            losses.append(trainer.train_step(next(batches), point))
        out[mode] = float(np.mean(losses[-50:]))
        _say(f"    {mode:30s} training loss {out[mode]:.3f} after {args.learn_steps} steps")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    t_start = time.perf_counter()
    if args.learnability:
        _say(f"learnability: default space, {args.resolution} px, width {args.width}, bundled digits, batch 64, "
             f"Adam 3e-3 (chance: 2.303)")
        learnability(args)
        return 0
    out = args.out or tempfile.mkdtemp(prefix="oneshot_bench_")
    os.makedirs(out, exist_ok=True)
    small_space = _write_small_space(out)
    space = None
    if args.smoke:
        args.steps, args.small_steps, args.exact, args.archs, args.standalone_steps = 8, 8, 2, 3, 10
        args.small_search_steps = 8
        space = small_space
    from edgetpu_models.hard_digits import make_hard_digits

    args.data = make_hard_digits(os.path.join(out, "digits-hard"), seed=args.seed)
    report: dict[str, Any] = {"settings": vars(args)}
    report["exactness"] = _part_a(args)
    runs = _part_b(args, out, space, report)
    _part_c(args, runs, report)
    report["ranking_small_space"] = small = small_space_ranking(args, out, small_space)
    _say(f"    Kendall's tau in the small space (super-network vs stand-alone accuracy): {small['tau']:.3f}")
    _part_c3(args, out, small_space, report)
    report["wall_s"] = time.perf_counter() - t_start
    met = "met" if report["wall_s"] <= BUDGET_S else "MISSED"
    _say(f"(d) wall time {report['wall_s']:.0f} s (budget {BUDGET_S} s: {met}; load average at the end "
         f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
    _say(f"report: {os.path.join(out, 'report.json')}")
    return 0


def _part_a(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = exactness(args.exact, args.width, args.resolution, args.seed)
    for name, (a, r) in res.items():
        _say(f"(a) exactness, space {name}: {args.exact} random archs, max |child - supernet| = {a:.3g} "
             f"(relative to the largest output: {r:.3g})")
    _say(f"    ({time.perf_counter() - t0:.0f} s)")
    return res


def _part_b(args: argparse.Namespace, out: str, space: str | None, report: dict[str, Any]) -> list[Any]:
    from edgetpu_models.nas.latency.estimator import estimate
    from edgetpu_models.zoo import resolve_spec

    t0 = float(estimate(resolve_spec("efficientnet_edgetpu_s")[0], "coral-usb").latency_ms)
    runs, rows = [], []
    for factor in (1.0, 0.6):
        run, result, secs = search(args, t0 * factor, os.path.join(out, f"search_{factor:g}T0"), space)
        err = result.best_latency_ms / (t0 * factor) - 1
        rows.append({"target_ms": t0 * factor, "found_ms": result.best_latency_ms, "error": err, "seconds": secs})
        _say(f"(b) target {factor:g} x T0 = {t0 * factor:.3f} ms: most likely network {result.best_latency_ms:.3f} ms "
             f"({100 * err:+.1f}%, {'within' if abs(err) <= 0.05 else 'NOT within'} 5%), beta {args.beta}, "
             f"{args.steps} steps in {secs:.0f} s")
        runs.append((run, result, secs))
    report["target"] = rows
    return runs


def _part_c(args: argparse.Namespace, runs: list[Any], report: dict[str, Any]) -> None:
    run = runs[0][0]
    _say(f"(c) ranking: {args.archs} networks over the latency range, stand-alone recipe: proxy trainer, "
         f"{args.standalone_steps} steps, {args.resolution} px, width {args.width}, digits-hard")
    report["ranking"] = rank = ranking(run, args)
    _say(f"    Kendall's tau (super-network vs stand-alone accuracy): {rank['tau']:.3f}")


def _part_c3(args: argparse.Namespace, out: str, path: str, report: dict[str, Any]) -> None:
    """(c3) The winners' table in the small space, where stand-alone accuracy is far from chance and so can tell the
    methods apart: a one-shot search for T0 against `nas search --controller random` and `evolution`, each killed
    after the one-shot search's wall-clock time; every winner trained stand-alone with the same recipe."""
    target_ms = report["target"][0]["target_ms"]
    run, result, secs = search(args, target_ms, os.path.join(out, "search_small_T0"), path,
                               steps=args.small_search_steps)
    rows = [("one-shot (TuNAS)", result.best_latency_ms, standalone(run.space.decode(result.best_point), args),
             f"{args.small_search_steps} steps", secs)]
    for controller in () if args.smoke else ("random", "evolution"):
        t = time.perf_counter()
        best = baseline(controller, target_ms, secs, args, os.path.join(out, f"{controller}_small"), path)
        if best is None:
            rows.append((controller, float("nan"), float("nan"), "0 trials", time.perf_counter() - t))
            continue
        rows.append((controller, best["latency_ms"], standalone(run.space.decode(best["point"]), args),
                     f"{best['trials']} trials", time.perf_counter() - t))
    _say(f"(c3) winners in the small space, target T0 = {target_ms:.3f} ms, the same wall-clock time each")
    _say("    method            latency ms  stand-alone acc  budget used        wall s")
    for name, lat, acc, what, s in rows:
        _say(f"    {name:17s} {lat:10.3f}  {acc:15.3f}  {what:17s} {s:6.0f}")
    report["winners_small_space"] = rows


if __name__ == "__main__":
    sys.exit(main())
