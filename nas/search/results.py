"""What a search leaves in its folder: trials CSV, latency/accuracy Pareto front, best spec, plot, summary.

Everything is derived from the trial log, so `nas show DIR` and a resumed search rebuild the same files. Written
atomically (io_utils). TF-free; matplotlib (Agg) is imported only to draw the plot.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

from edgetpu_models.io_utils import atomic_path, write_text_atomic
from edgetpu_models.spec import Spec, save_spec

TRIALS_CSV = "trials.csv"
FRONT_CSV = "pareto_front.csv"
BEST_SPEC = "best_spec.yaml"
PLOT = "trials.png"
SUMMARY = "summary.json"
FRONT_DIR = "front"
CSV_FIELDS = ("trial", "status", "reward", "accuracy", "latency_ms", "on_front", "arch", "key", "accuracy_proxy",
              "latency_source", "cached_from", "seconds", "error", "point")


@dataclass(frozen=True)
class Reference:
    """An extra point for the plot and the front comparison (e.g. EfficientNet-EdgeTPU-S at the same proxy)."""

    label: str
    latency_ms: float
    accuracy: float


def ok_results(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r.get("status") == "ok"]


def pareto_front(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials not dominated in (lower latency, higher accuracy), sorted by latency; one per (latency, accuracy)."""
    pts = sorted(ok_results(results), key=lambda r: (r["latency_ms"], -r["accuracy"], r["trial"]))
    front: list[dict[str, Any]] = []
    best_acc = float("-inf")
    for r in pts:
        if r["accuracy"] > best_acc:
            front.append(r)
            best_acc = r["accuracy"]
    return front


def best_result(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    ok = ok_results(results)
    return max(ok, key=lambda r: (r["reward"], -r["trial"])) if ok else None


def relation_to_front(front: Sequence[dict[str, Any]], latency_ms: float, accuracy: float) -> dict[str, Any]:
    """Where a point falls against a front: dominated by (faster-and-at-least-as-accurate trials), or beyond it.

    `accuracy_gap` is the point's accuracy minus the best front accuracy at no more than its latency (negative: the
    front does better at that latency); `latency_ratio` the point's latency over the fastest front latency reaching
    its accuracy (> 1: the front reaches that accuracy faster).
    """
    dominated_by = [r["trial"] for r in front if r["latency_ms"] <= latency_ms and r["accuracy"] >= accuracy
                    and (r["latency_ms"] < latency_ms or r["accuracy"] > accuracy)]
    at_latency = [r["accuracy"] for r in front if r["latency_ms"] <= latency_ms]
    reaching = [r["latency_ms"] for r in front if r["accuracy"] >= accuracy]
    return {"dominated": bool(dominated_by), "dominated_by": dominated_by,
            "accuracy_gap": (accuracy - max(at_latency)) if at_latency else None,
            "latency_ratio": (latency_ms / min(reaching)) if reaching else None}


def _row(r: dict[str, Any], on_front: set[int]) -> list[Any]:
    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    return [r["trial"], r.get("status", ""), num(r.get("reward"), ".6f"), num(r.get("accuracy"), ".6f"),
            num(r.get("latency_ms"), ".4f"), int(r["trial"] in on_front), r.get("arch", ""), r.get("key", ""),
            r.get("accuracy_proxy", ""), r.get("latency_source", ""),
            "" if r.get("cached_from") is None else r["cached_from"], num(r.get("seconds"), ".2f"),
            r.get("error") or "", " ".join(map(str, r.get("point", [])))]


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    w.writerows(rows)
    return buf.getvalue()


def write_tables(out_dir: str, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """trials.csv (every trial, in trial order) and pareto_front.csv; returns the front."""
    front = pareto_front(results)
    on_front = {r["trial"] for r in front}
    write_text_atomic(os.path.join(out_dir, TRIALS_CSV),
                      _csv_text([_row(r, on_front) for r in sorted(results, key=lambda r: r["trial"])]))
    write_text_atomic(os.path.join(out_dir, FRONT_CSV), _csv_text([_row(r, on_front) for r in front]))
    return front


def write_spec(out_dir: str, spec: Spec, name: str) -> str:
    path = os.path.join(out_dir, name)
    save_spec(spec, path)
    return path


def plot_trials(path: str, results: Sequence[dict[str, Any]], target_ms: float | None, *, title: str = "",
                references: Sequence[Reference] = (), accuracy_label: str = "proxy accuracy") -> str:
    """Scatter of every trial (latency vs accuracy, coloured by trial order), the Pareto front, the latency target and
    the best trial; `references` are drawn as labelled diamonds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = ok_results(results)
    front = pareto_front(results)
    best = best_result(results)
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    if ok:
        sc = ax.scatter([r["latency_ms"] for r in ok], [r["accuracy"] for r in ok], c=[r["trial"] for r in ok],
                        cmap="viridis", s=22, alpha=0.8, label=f"trials ({len(ok)})")
        fig.colorbar(sc, ax=ax, label="trial")
        ax.step([r["latency_ms"] for r in front], [r["accuracy"] for r in front], where="post", color="tab:red",
                lw=1.5, label="Pareto front")
        ax.scatter([r["latency_ms"] for r in front], [r["accuracy"] for r in front], facecolors="none",
                   edgecolors="tab:red", s=70, lw=1.5)
    if best is not None:
        ax.scatter([best["latency_ms"]], [best["accuracy"]], marker="*", s=260, color="gold", edgecolors="black",
                   zorder=5, label=f"best reward (trial {best['trial']})")
    for ref, colour in zip(references, ("tab:orange", "tab:cyan", "tab:pink", "tab:brown", "tab:olive")):
        ax.scatter([ref.latency_ms], [ref.accuracy], marker="D", s=70, color=colour, edgecolors="black",
                   zorder=6, label=ref.label)
    if target_ms is not None:
        ax.axvline(target_ms, color="gray", ls="--", lw=1.2, label=f"target {target_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(accuracy_label)
    ax.set_title(title or "NAS trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_summary(out_dir: str, summary: dict[str, Any]) -> str:
    path = os.path.join(out_dir, SUMMARY)
    write_text_atomic(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path
