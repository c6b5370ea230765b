"""What a finished one-shot run leaves: the most likely network as best_spec.yaml, the top-k distinct networks with
their latencies, a summary, and the plots (sampled latency against the target; each decision's probabilities)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.nas.search.results import BEST_SPEC, SUMMARY, write_spec, write_summary
from edgetpu_models.nas.search.space import SearchSpace, arch_key, arch_string
from edgetpu_models.spec import Spec

TOP_CSV = "top_k.csv"
TOP_DIR = "top"
LATENCY_PLOT = "latency.png"
PROBABILITY_PLOT = "probabilities.png"


SEARCH_VARIANT = "search"


def with_search_variant(spec: Spec, width: float, resolution: int) -> Spec:
    """`spec` plus a `search` variant: the super-network's width and resolution, depth 1 (a grouped stage's group
    size scaled with its widths, as the super-network scales it)."""
    import dataclasses

    from edgetpu_models.spec import Variant, round_filters

    sizes = {st.group_size for st in spec.stages if st.group_size}
    group = round_filters(sizes.pop(), width) if len(sizes) == 1 and width != 1.0 else None
    variant = Variant(width=width, depth=1.0, resolution=resolution, dropout=spec.dropout, group_size=group)
    return dataclasses.replace(spec, variants={**spec.variants, SEARCH_VARIANT: variant})


def write_results(out_dir: str, cfg: Any, space: SearchSpace, controller: Any, latency: Any,
                  best_accuracy: float | None, steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    best = controller.most_likely()
    write_spec(out_dir, with_search_variant(space.decode(best, name=f"{space.name}_oneshot"), cfg.width,
                                            cfg.resolution), BEST_SPEC)
    top = []
    os.makedirs(os.path.join(out_dir, TOP_DIR), exist_ok=True)
    for rank, (pt, prob) in enumerate(controller.top_k(cfg.top_k), 1):
        spec = space.decode(pt, name=f"{space.name}_oneshot_top{rank}")
        write_spec(out_dir, spec, os.path.join(TOP_DIR, f"rank_{rank:02d}.yaml"))
        top.append({"rank": rank, "probability": prob, "latency_ms": latency(pt), "arch": arch_string(spec),
                    "key": arch_key(spec), "point": list(pt)})
    rows = ["rank,probability,latency_ms,arch,key"] + [
        f"{t['rank']},{t['probability']:.6g},{t['latency_ms']:.4f},{t['arch']},{t['key']}" for t in top]
    write_text_atomic(os.path.join(out_dir, TOP_CSV), "\n".join(rows) + "\n")
    summary = {"method": "oneshot", "steps": len(steps), "target": cfg.target,
               "latency_target_ms": cfg.latency_target_ms, "reward": cfg.make_reward().describe(),
               "best": {"latency_ms": latency(best), "supernet_accuracy": best_accuracy,
                        "arch": arch_string(space.decode(best)), "point": list(best),
                        "relative_error": latency(best) / cfg.latency_target_ms - 1.0},
               "entropy": controller.entropy(), "top_k": top}
    write_summary(out_dir, summary)
    plot_latency(os.path.join(out_dir, LATENCY_PLOT), steps, cfg.latency_target_ms)
    plot_probabilities(os.path.join(out_dir, PROBABILITY_PLOT), steps, space)
    return summary


def plot_latency(path: str, steps: Sequence[dict[str, Any]], target_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgetpu_models.io_utils import atomic_path

    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = [s["step"] for s in steps if "controller_latency_ms" in s for _ in s["controller_latency_ms"]]
    ys = [v for s in steps if "controller_latency_ms" in s for v in s["controller_latency_ms"]]
    ax.scatter(xs, ys, s=4, alpha=0.3, label="controller samples")
    warm = [s for s in steps if "controller_latency_ms" not in s]
    ax.scatter([s["step"] for s in warm], [s["latency_ms"] for s in warm], s=4, alpha=0.3, color="grey",
               label="warm-up samples (shared weights only)")
    likely = [s for s in steps if "likely_latency_ms" in s]
    ax.plot([s["step"] for s in likely], [s["likely_latency_ms"] for s in likely], color="C1",
            label="most likely network")
    ax.axhline(target_ms, color="C3", ls="--", label=f"target {target_ms:.3g} ms")
    ax.set_xlabel("step")
    ax.set_ylabel("predicted latency (ms)")
    ax.legend(fontsize=8)
    ax.set_title("one-shot search: sampled latency against the target")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_probabilities(path: str, steps: Sequence[dict[str, Any]], space: SearchSpace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgetpu_models.io_utils import atomic_path

    logged = [s for s in steps if "probabilities" in s]
    shown = [k for k, d in enumerate(space.decisions) if len(d.choices) > 1]
    cols = 6
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 1.6), squeeze=False, sharex=True, sharey=True)
    x = [s["step"] for s in logged]
    for ax, k in zip(axes.flat, shown):
        d = space.decisions[k]
        for c, value in enumerate(d.choices):
            ax.plot(x, [s["probabilities"][k][c] for s in logged], lw=1, label=str(value))
        ax.set_title(d.name, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="upper left")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle("controller: probability of each choice over the steps", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


__all__ = ["write_results", "plot_latency", "plot_probabilities", "BEST_SPEC", "SUMMARY"]
