"""Latency benchmark: spec-path speed, calibration quality, zoo estimates, and the CPU predictor against real timings.

    python benchmarks/latency.py                     # everything (the CPU part builds, converts and times ~32 models
                                                     # the first time: tens of minutes; timings are cached, resumable)
    python benchmarks/latency.py --held-out 0        # skip the CPU measurements
    python benchmarks/latency.py --cached-only       # CPU part from cached timings only

Prints:
0. the memory model against the published edgetpu_compiler logs (MAE of cached and streamed MiB), and the
   coral-usb estimates of models Coral publishes on its models page (held out, never fitted);
1. estimates per second from specs (zoo and random search-space specs), ms per model (mean / worst);
2. the leave-one-out calibration table of each Coral target with Spearman rank correlation and median |error|, and
   pixel6's held-out error on the MobilenetEdgeTPU-V2 family;
3. the zoo on every target;
4. for `cpu`: predicted versus measured (`cpu-measured`, LiteRT) on held-out random architectures at several
   resolutions, and the fraction within +-10%; and the probe (`calibrate --target cpu --probe`): how long it takes and
   its error on six zoo models (`--cpu-probe-only` prints just that).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgetpu_models.nas.latency import calibrate as cal  # noqa: E402
from edgetpu_models.nas.latency.apm import graph_terms, terms_latency_ms  # noqa: E402
from edgetpu_models.nas.latency.cpu.fit import held_out_rows, measure_held_out, random_specs  # noqa: E402
from edgetpu_models.nas.latency.estimator import estimate, estimate_graph  # noqa: E402
from edgetpu_models.tables import format_table  # noqa: E402
from edgetpu_models.zoo import ZOO, zoo_spec  # noqa: E402


def bench_spec_path(n_random: int = 200, repeats: int = 5) -> None:
    """Per model, the fastest of `repeats` runs, by wall clock and by this thread's CPU time (the second is what the
    estimate costs; the first also counts time the thread waits for a core when the machine is shared)."""
    specs = [zoo_spec(name) for name in ZOO] + [(s, None) for s, _ in random_specs(n_random, seed=7)]
    for spec, variant in specs:  # warm caches (target file, zoo specs)
        estimate(spec, "coral-usb", variant=variant)
    wall = [float("inf")] * len(specs)
    cpu = [float("inf")] * len(specs)
    for _ in range(repeats):
        for i, (spec, variant) in enumerate(specs):
            w0, c0 = time.perf_counter(), time.thread_time()
            estimate(spec, "coral-usb", variant=variant)
            cpu[i] = min(cpu[i], time.thread_time() - c0)
            wall[i] = min(wall[i], time.perf_counter() - w0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== spec path (coral-usb): {len(specs)} specs ({len(ZOO)} zoo + {n_random} random), fastest of {repeats} "
          f"per model; load average {load:.1f} on {os.cpu_count()} cores")
    for label, t in (("CPU time", cpu), ("wall clock", wall)):
        print(f"   {label:10s}: {len(specs) / sum(t):,.0f} estimates/s; "
              f"ms per model: mean {1e3 * sum(t) / len(t):.3f}, "
              f"median {1e3 * statistics.median(t):.3f}, worst {1e3 * max(t):.3f}")
    print(f"   'tensorflow' imported: {'tensorflow' in sys.modules}")
    print()


def _neighbours(n: int, seed: int = 11) -> list:
    """`n` + 1 distinct specs of the search space, each differing from the one before in one decision of one stage
    (a random walk: what a search step changes), starting from a random point."""
    import random

    from edgetpu_models.nas.search.space import load_space

    space = load_space()
    rng = random.Random(seed)
    p = [rng.randrange(k) for k in space.sizes]
    points, seen = [p], {tuple(p)}
    free = [i for i, k in enumerate(space.sizes) if k > 1]
    for _ in range(100 * n):
        if len(points) > n:
            break
        q = list(p)
        i = rng.choice(free)
        q[i] = (q[i] + rng.randrange(1, space.sizes[i])) % space.sizes[i]
        p = q
        if tuple(q) not in seen:
            seen.add(tuple(q))
            points.append(q)
    return [space.decode(q) for q in points]


def bench_one_block(n: int = 2000, target: str = "coral-usb") -> None:
    """Estimates per second for specs that differ from one another in one block: memoised (every spec new to the
    estimator, its unchanged blocks costed before) and uncached (graph built and costed whole: the path every estimate
    took before the memo). CPU time of this thread, so a shared machine's waits are not counted; wall clock too."""
    from edgetpu_models.nas.latency.frontends import spec_graph

    try:
        from edgetpu_models.nas.latency import memo
    except ImportError:  # run against an older tree (before figures): no memo there
        memo = None
    specs = _neighbours(n)
    n_unc = min(len(specs), 400)
    if memo is not None:
        memo.clear()
    estimate(specs[0], target)  # the base point: its pieces are what the neighbours share
    runs = {}
    for label, fn, sel in (("memoised, new specs", lambda s: estimate(s, target), specs[1:]),
                           ("memoised, repeated", lambda s: estimate(s, target), specs[1:]),
                           ("uncached", lambda s: estimate_graph(spec_graph(s), target), specs[1:n_unc])):
        w0, c0 = time.perf_counter(), time.thread_time()
        for s in sel:
            fn(s)
        runs[label] = (len(sel) / (time.thread_time() - c0), len(sel) / (time.perf_counter() - w0), len(sel))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== in process, specs differing in one block ({target}, search space points); load average {load:.1f} on "
          f"{os.cpu_count()} cores")
    rows = [(label, str(k), f"{cpu:,.0f}", f"{wall:,.0f}", f"{1e3 / cpu:.3f}")
            for label, (cpu, wall, k) in runs.items()]
    print(format_table(("path", "specs", "estimates/s (CPU)", "estimates/s (wall)", "ms each (CPU)"), rows,
                       right=(1, 2, 3, 4)))
    print()


def bench_calibration() -> None:
    for target in ("coral-usb", "coral-devboard"):
        rows = cal.target_rows(target)
        result = cal.run_calibration(target, rows, cal.calibration_graphs(rows))
        print(f"== {target}: leave-one-out on the Coral table ({len(rows)} models; each predicted by constants "
              f"fitted to the others)")
        table = [(r.model, f"{r.measured_ms:.1f}", f"{f.predicted_ms:.2f}", f"{r.predicted_ms:.2f}",
                  f"{r.error * 100:+.1f}%") for r, f in zip(result.loo_rows, result.fit_rows)]
        print(format_table(("model", "measured ms", "fit (all) ms", "LOO ms", "LOO error"), table, right=(1, 2, 3, 4)))
        print(f"   Spearman {result.spearman:.3f}   median |error| {result.median_abs_error * 100:.1f}%   "
              f"fitted: " + ", ".join(f"{k}={v:.4g}" for k, v in result.constants.items()))
        print()


def bench_memory() -> None:
    """The memory model (nas/latency/memory.py) against the public edgetpu_compiler logs in deploy/compiler_logs."""
    from edgetpu_models.deploy.compiler_logs import check_logs

    checks = check_logs()
    mib = 2 ** 20
    print(f"== memory model vs {len(checks)} published edgetpu_compiler logs (cached / streamed / remaining MiB, "
          f"predicted / logged)")
    table = [(f"{c.logged.log}[{c.logged.block}]", c.basis,
              f"{c.predicted_cached / mib:.2f} / {c.logged.cached_bytes / mib:.2f}",
              f"{c.predicted_streamed / mib:.2f} / {c.logged.streamed_bytes / mib:.2f}",
              f"{c.predicted_remaining / mib:.2f} / {c.logged.remaining_bytes / mib:.2f}") for c in checks]
    print(format_table(("log", "basis", "cached", "streamed", "remaining"), table, right=(2, 3, 4)))
    for basis in ("graph", "size-only", None):
        sel = [c for c in checks if basis in (None, c.basis)]
        if not sel:
            continue
        mae_c = sum(abs(c.predicted_cached - c.logged.cached_bytes) for c in sel) / len(sel) / mib
        mae_s = sum(abs(c.predicted_streamed - c.logged.streamed_bytes) for c in sel) / len(sel) / mib
        print(f"   {basis or 'all':9s} ({len(sel):2d} models): mean absolute error cached {mae_c:.2f} MiB, "
              f"streamed {mae_s:.2f} MiB")
    print("   basis 'graph': the layer graph was rebuilt; 'size-only': the model is not public, its parameters are "
          "taken as the published .tflite size (activations unknown)")
    print()


def bench_weight_bandwidth(values: tuple[int, ...] = (56, 64, 72, 80, 88, 96, 112)) -> None:
    """How weight_bytes_per_cycle (a structural constant of the targets) was chosen: the value with the smallest
    sum of leave-one-out median errors of coral-usb and coral-devboard on the Coral table."""
    import dataclasses

    from edgetpu_models.nas.latency.estimator import load_target

    data = []
    for target in ("coral-usb", "coral-devboard"):
        rows = cal.target_rows(target)
        data.append((target, rows, cal.calibration_graphs(rows), load_target(target)))
    table = []
    for wb in values:
        meds = []
        for _target, rows, graphs, t in data:
            base = dataclasses.replace(t.constants, weight_bytes_per_cycle=float(wb))
            meds.append(_loo([graph_terms(g, base) for g in graphs], [r.measured_ms for r in rows], base,
                             cal._free(t))[1])
        chosen = "  <- targets" if wb == data[0][3].constants.weight_bytes_per_cycle else ""
        table.append((str(wb), f"{meds[0] * 100:.1f}%", f"{meds[1] * 100:.1f}%", f"{sum(meds) * 100:.1f}%" + chosen))
    print("== weight_bytes_per_cycle: leave-one-out median |error| on the Coral table for each value")
    print(format_table(("B/cycle", "coral-usb", "coral-devboard", "sum"), table, right=(1, 2)))
    print()


def _read_table(name: str) -> list[dict[str, str]]:
    """A CSV shipped beside the targets (nas/latency/targets/NAME), '#' lines being its notes and sources."""
    import csv

    with open(os.path.join(os.path.dirname(cal.benchmarks_csv()), name), encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _reference(row: dict[str, str]) -> object:
    """What a published row measured, as our front ends build it: the zoo name, else the stored layer graph of its
    Keras-applications twin, else None (not buildable here)."""
    if row.get("zoo", "-") != "-":
        return row["zoo"]
    path = os.path.join(cal.calibration_dir(), f"{row['keras_app']}_{row['input']}.json")
    return cal.load_graph_json(path) if row["keras_app"] != "-" and os.path.exists(path) else None


def bench_heldout() -> None:
    """Coral's own published latencies of models not in the fitted table (nas/latency/targets/coral_models_page.csv)."""
    table = []
    for r in _read_table("coral_models_page.csv"):
        graph = _reference(r)
        if graph is None:
            continue
        e = estimate(graph, "coral-usb")
        m = float(r["usb_ms"])
        table.append((r["model"], r["input"], f"{m:.1f}", f"{e.latency_ms:.2f}",
                      f"{(e.latency_ms / m - 1) * 100:+.1f}%",
                      f"{e.on_chip_param_bytes / 2**20:.2f}", f"{e.off_chip_param_bytes / 2**20:.2f}"))
    print("== coral-usb vs Coral's models page (held out: never fitted)")
    print(format_table(("model", "input", "published ms", "predicted ms", "error", "cached MiB", "streamed MiB"),
                       table, right=(1, 2, 3, 4, 5, 6)))


def _published_rows() -> list[tuple[str, int, str, float, str, str, object]]:
    """Every published Coral latency the project has, as (model, input, target, ms, role, source, graph or zoo name)."""
    out: list[tuple[str, int, str, float, str, str, object]] = []
    bench = "coral.ai/docs/edgetpu/benchmarks Table 1"
    for r in _read_table("coral_benchmarks.csv"):
        model = _reference(r)
        for target, col in (("coral-usb", "usb_ms"), ("coral-devboard", "devboard_ms")):
            out.append((r["model"], int(r["input"]), target, float(r[col]), "fitted" if model else "no graph",
                        f"{bench} (coral_benchmarks.csv)", model))
    for r in _read_table("coral_benchmarks_efficientnet.csv"):
        for target, col in (("coral-usb", "usb_ms"), ("coral-devboard", "devboard_ms")):
            out.append((r["model"], int(r["input"]), target, float(r[col]), "held out", bench, r["zoo"]))
    others = [(r, "coral-usb", r["usb_ms"], "coral.ai/models/image-classification")
              for r in _read_table("coral_models_page.csv")]
    others += [(r, r["target"], r["ms"], r["source"]) for r in _read_table("published_other.csv")]
    for r, target, ms, source in others:
        model = _reference(r)
        out.append((r["model"], int(r["input"]), target, float(ms), "held out" if model is not None else "no graph",
                    source, model))
    return out


def bench_published() -> None:
    """Predicted against every published Coral number, by target; `fitted` rows are in the calibration fit (their
    leave-one-out error is in the calibration table), `held out` rows never were. coral-usb-std has no published
    numbers from Coral; its prediction of the held-out checks is printed beside coral-usb's, and the rows of
    published_other.csv (measured by others, on the std runtime) are held out too."""
    table, errs = [], {}
    for model, res, target, ms, role, source, ref in _published_rows():
        if ref is None:
            table.append((model, res, target, f"{ms:g}", "-", "-", role, source))
            continue
        pred = estimate(ref, target).latency_ms
        err = pred / ms - 1
        errs.setdefault((target, role), []).append(abs(err))
        std = ""
        if role == "held out" and target == "coral-usb":
            std = f" (std {estimate(ref, 'coral-usb-std').latency_ms:.1f})"
        table.append((model, res, target, f"{ms:g}", f"{pred:.2f}{std}", f"{err * 100:+.1f}%", role, source))
    print("== every published Edge TPU latency vs the prediction (shipped targets)")
    print(format_table(("model", "input", "target", "published ms", "predicted ms", "error", "role", "source"), table,
                       right=(1, 3, 4, 5)))
    for (target, role), e in sorted(errs.items()):
        print(f"   {target:15s} {role:9s}: {len(e):2d} rows, median |error| {statistics.median(e) * 100:.1f}%, "
              f"worst {max(e) * 100:.1f}%")
    print()


def bench_clock_split() -> None:
    """What scales with the chip clock and what does not, per EfficientNet-EdgeTPU model and Coral target: the rows'
    time by bound (compute, activations, weights: on chip, scale with the clock; param_stream, host_link: the link and
    the host, do not)."""
    from collections import defaultdict

    on_chip = ("compute", "activations", "weights", "overhead")
    rows = []
    for name in ("efficientnet_edgetpu_s", "efficientnet_edgetpu_m", "efficientnet_edgetpu_l"):
        for target in ("coral-usb", "coral-usb-std", "coral-devboard"):
            e = estimate(name, target)
            by = defaultdict(float)
            for r in e.layers:
                by[r.bound] += r.ms
            rows.append((name, target, f"{e.latency_ms:.2f}", f"{sum(by[b] for b in on_chip):.2f}",
                         f"{by['param_stream']:.2f}", f"{by['host_link']:.2f}",
                         f"{e.off_chip_param_bytes / 2**20:.2f}"))
    print("== clock-scaled (on chip) and clock-independent (link, host) time, ms")
    print(format_table(("model", "target", "total", "on chip", "param stream", "input/output + invoke",
                        "streamed MiB"), rows, right=(2, 3, 4, 5, 6)))
    print()


def _clock_sweep() -> dict[str, tuple[object, list[tuple[float, float]]]]:
    """coral_clock_sweep.csv as {model: (graph or zoo name or None, [(MHz, p95 ms), ...])}."""
    sweep: dict[str, tuple[object, list[tuple[float, float]]]] = {}
    for r in _read_table("coral_clock_sweep.csv"):
        if r["model"] not in sweep:  # one reference per model, not per clock (it may load a stored graph)
            sweep[r["model"]] = (_reference(r), [])
        sweep[r["model"]][1].append((float(r["tpu_mhz"]), float(r["p95_ms"])))
    return sweep


def _intercept_slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (a, b) of T = a + b / f: a does not scale with the clock, b / f does."""
    import numpy as np

    f = np.array([p[0] for p in points])
    design = np.c_[np.ones(len(f)), 1.0 / f]
    (a, b), *_ = np.linalg.lstsq(design, np.array([p[1] for p in points]), rcond=None)
    return float(a), float(b)


def bench_clock_sweep() -> None:
    """The one published measurement of what scales with the Edge TPU clock (a Coral Dev Board at 500, 250, 125 and
    62.5 MHz, coral_clock_sweep.csv) against coral-devboard at the same clocks. Per model, the measured latencies fit
    T = a + b / f to within a few percent, so b / 500 is the clock-scaled (on-chip) time at 500 MHz and a the rest;
    the measured a also holds Python and the 95th-percentile tail (about 1.2 ms on MobileNet v2 against Coral's C++
    2.6 ms). Evaluation only: never fitted."""
    import dataclasses

    from edgetpu_models.nas.latency.estimator import load_target
    from edgetpu_models.nas.latency.frontends import spec_graph

    dev = load_target("coral-devboard").constants
    assert dev is not None
    table, split = [], []
    for model, (ref, points) in _clock_sweep().items():
        a, b = _intercept_slope(points)
        fitted = {f: a + b / f for f, _ in points}
        if ref is None:
            split.append((model, f"{b / 500:.2f}", "-", "-", f"{a:.2f}", "-"))
            continue
        terms = graph_terms(spec_graph(ref) if isinstance(ref, str) else ref, dev)  # the same at every clock
        pred = [(f, terms_latency_ms(terms, dataclasses.replace(dev, clock_mhz=f))) for f, _ in points]
        pa, pb = _intercept_slope(pred)
        for (f, ms), (_, p) in zip(points, pred):
            table.append((model, f"{f:g}", f"{ms:.2f}", f"{fitted[f]:.2f}", f"{p:.2f}", f"{(p / ms - 1) * 100:+.1f}%"))
        split.append((model, f"{b / 500:.2f}", f"{pb / 500:.2f}", f"{(pb / b - 1) * 100:+.1f}%", f"{a:.2f}",
                      f"{pa:.2f}"))
    print("== Coral Dev Board at four Edge TPU clocks (p95 of pycoral invokes; evaluation only) vs coral-devboard")
    print(format_table(("model", "MHz", "measured ms", "a + b/f", "predicted ms", "error"), table,
                       right=(1, 2, 3, 4, 5)))
    print(format_table(("model", "clock-scaled ms at 500 MHz, measured", "predicted", "error",
                        "rest, measured (incl. Python, p95)", "rest, predicted"), split, right=(1, 2, 3, 4, 5)))
    print()


def bench_pixel6_held_out() -> None:
    """pixel6 is fitted to MobilenetEdgeTPU V1 only; its file lists the V2 family's published latencies as held out."""
    from edgetpu_models.nas.latency.targets import load_target

    held = load_target("pixel6").data["held_out"]["measurements"]
    rows = []
    for m in held:
        pred = estimate(m["model"], "pixel6").latency_ms
        rows.append((m["model"], f"{m['ms']:.2f}", f"{pred:.2f}", f"{(pred / m['ms'] - 1) * 100:+.1f}%"))
    print("== pixel6: held-out error on the MobilenetEdgeTPU-V2 family (fitted to V1 dm 1.0/1.25/1.75 only)")
    print(format_table(("model", "published ms", "predicted ms", "error"), rows, right=(1, 2, 3)))
    print()


SEG_FINALISERS = ("logits", "resize512,argmax", "resize256,argmax,resize512", "argmax,resize512")


def bench_segmentation() -> None:
    """Segmentation models: pixel6 predictions beside tensorflow/models' published Pixel 6 latencies (README;
    "default argmax" tflite = resize512,argmax; "fused argmax" = a resize-argmax-resize form). Held out: no target
    is fitted to these numbers. Then every finaliser on coral-usb and pixel6, and where the head's time goes."""
    from edgetpu_models.seg_graph import seg_zoo

    rows = []
    for name, m in seg_zoo().items():
        default = estimate(f"{name}@resize512,argmax", "pixel6").latency_ms
        fused = estimate(f"{name}@resize256,argmax,resize512", "pixel6").latency_ms
        pub, pub_fused = m.reference["pixel6_ms"], m.reference["pixel6_fused_ms"]
        rows.append((name, f"{pub:.1f}", f"{default:.2f}", f"{(default / pub - 1) * 100:+.0f}%",
                     f"{pub_fused:.1f}", f"{fused:.2f}", f"{(fused / pub_fused - 1) * 100:+.0f}%"))
    print("== segmentation: pixel6 predicted vs published Pixel 6 Edge TPU latency (held out, never fitted)")
    print(format_table(("model", "published default", "predicted", "error", "published fused", "predicted fused",
                        "error"), rows, right=tuple(range(1, 7))))
    print()
    rows = []
    for name in seg_zoo():
        for fin in SEG_FINALISERS:
            usb, p6 = estimate(f"{name}@{fin}", "coral-usb"), estimate(f"{name}@{fin}", "pixel6")
            rows.append((name, fin, f"{usb.latency_ms:.2f}", f"{p6.latency_ms:.2f}", _head_share(name, fin, usb)))
    print("== segmentation: every finaliser (ms) and the head's share on coral-usb (head = layers after the backbone)")
    print(format_table(("model", "finaliser", "coral-usb", "pixel6", "head / finaliser ms (usb)"), rows,
                       right=(2, 3)))
    print()


def _head_share(name: str, finaliser: str, est) -> str:
    from edgetpu_models.seg_graph import backbone_graph, seg_zoo

    backbone = {layer.name for layer in backbone_graph(seg_zoo()[name])}
    head = sum(r.ms for r in est.layers if r.name not in backbone and not r.name.startswith(("final_", "argmax")))
    final = sum(r.ms for r in est.layers if r.name.startswith(("final_", "argmax")))
    return f"{head:.2f} / {final:.2f}"


def bench_zoo() -> None:
    """The zoo on every target; `cpu` shows 'uncalibrated' on a CPU it was neither fitted nor probed on."""
    from edgetpu_models.errors import TargetError

    targets = ("coral-usb", "coral-usb-std", "coral-devboard", "pixel4", "pixel6", "cpu")

    def cells(model: object) -> list[str]:
        out = []
        for t in targets:
            try:
                out.append(f"{estimate(model, t).latency_ms:.2f}")
            except TargetError:
                out.append("uncalibrated")
        return out + [f"{estimate(model, targets[0]).off_chip_param_bytes:,}"]

    rows = [[name] + cells(name) for name in ZOO]
    for key, label in (("ResNet50_299", "ResNet-50 (299)"), ("MobileNetV2_224", "MobileNet v2 (224)")):
        rows.append([label] + cells(cal.load_graph_json(os.path.join(cal.calibration_dir(), f"{key}.json"))))
    print("== zoo estimates (ms)")
    print(format_table(("model",) + targets + ("off-chip bytes (usb)",), rows, right=tuple(range(1, len(targets) + 2))))
    print()


def bench_cpu(n: int, cached_only: bool) -> None:
    if n <= 0:
        return
    if cached_only:
        measured = measure_held_out(0)  # no architecture to build: only reads the cache
    else:
        from tqdm import tqdm

        measured = measure_held_out(n, progress=lambda it: tqdm(it, desc="cpu-measured", unit="model",
                                                                 file=sys.stderr))
    rows = held_out_rows(measured, "cpu", n=max(n, len(measured)))
    if not rows:
        print("== cpu: no held-out measurements cached yet")
        return
    within = [abs(r.error) <= 0.10 for r in rows]
    print(f"== cpu predictor vs cpu-measured (LiteRT, 1 thread) on {len(rows)} held-out architectures "
          f"(random points around the zoo specs; never used in training)")
    table = [(r.name, r.resolution, f"{r.macs / 1e6:,.0f}", f"{r.measured_ms:.2f}", f"{r.predicted_ms:.2f}",
              f"{r.error * 100:+.1f}%") for r in rows]
    print(format_table(("architecture", "res", "MMACs", "measured ms", "predicted ms", "error"), table,
                       right=(1, 2, 3, 4, 5)))
    errs = [abs(r.error) for r in rows]
    print(f"   within +-10%: {sum(within)}/{len(rows)} = {100 * sum(within) / len(rows):.0f}%   "
          f"median |error| {100 * statistics.median(errs):.1f}%   worst {100 * max(errs):.1f}%")


def _loo(terms: list, measured: list[float], base: object, free: list[str],
         **fit: object) -> tuple[object, float, float]:
    """(constants fitted to all, leave-one-out median |error|, Spearman) of one target (`cal.fit_leave_one_out`;
    `fit`: its options)."""
    full, preds = cal.fit_leave_one_out(terms, measured, base, free, **fit)
    med = statistics.median(abs(p / m - 1) for p, m in zip(preds, measured))
    return full, med, cal.spearman(measured, preds)


def _variant_row(label: str, wb: float, link: float | None, data: dict) -> tuple:
    """One variant of the Coral model: coral-usb fitted (link pinned when `link`), coral-devboard fitted on link and
    host with coral-usb's chip; their leave-one-out and the EfficientNet checks (never fitted). The terms are
    `_variant_data`'s: they depend on the chip's structure and cache, not on the bandwidth or the rule varied here."""
    import dataclasses

    from edgetpu_models.nas.latency.estimator import load_target

    usb, dev = load_target("coral-usb"), load_target("coral-devboard")
    out = []
    base = dataclasses.replace(usb.constants, weight_bytes_per_cycle=float(wb))
    for t, rows in ((usb, cal.target_rows("coral-usb")), (dev, cal.target_rows("coral-devboard"))):
        free = [k for k in cal._free(t) if link is None or k != "link_mb_per_s"]
        if t is dev:
            base = dataclasses.replace(out[0][0], invoke_overhead_us=dev.constants.invoke_overhead_us,
                                       link_mb_per_s=dev.constants.link_mb_per_s)
        base = base if link is None else dataclasses.replace(base, link_mb_per_s=float(link))
        out.append(_loo([data["keras"][r.model][0] for r in rows], [r.measured_ms for r in rows], base, free))
    (cu, mu, ru), (cd, md, rd) = out
    std = dataclasses.replace(cu, clock_mhz=cu.clock_mhz / 2)
    s, m, big = ([terms_latency_ms(data["eff"][k], c) for c in (cu, std, cd)] for k in "sml")
    return (label, f"{mu * 100:.1f}% / {ru:.3f}", f"{md * 100:.1f}% / {rd:.3f}", f"{s[0]:.2f}", f"{m[0]:.2f}",
            f"{m[2]:.2f}", f"{big[0]:.2f}", f"{big[1]:.2f} (x{big[1] / big[0]:.2f})", f"{cu.link_mb_per_s:.0f}")


def bench_variants(data: dict) -> None:
    """Issue 21's held-out checks under physical variants of the Coral model, none adopted (no written source): the
    weight bandwidth (B/cycle), the link pinned at the USB 3.0 payload bound (500 MB/s) or a realistic bulk rate (400),
    and parameter streaming overlapped with on-chip work instead of before it. Published: S 5.0-5.1, M 7.3-8.7 (Dev
    Board 10.6), L 21.3 ms at 500 MHz; L at 250 MHz measured about a third below the 41.1 ms predicted."""
    from edgetpu_models.nas.latency import apm

    serial = apm.layer_ms
    rows = []
    for rule, wb, link in (("serial", 72, None), ("serial", 72, 500), ("serial", 96, None), ("serial", 128, 500),
                           ("serial", 128, 400), ("overlap", 96, 500), ("overlap", 128, 500)):
        if rule == "overlap":  # a layer's stream overlaps its on-chip work: the larger of the two, not the sum
            apm.layer_ms = lambda p, c, maximum=max: maximum(maximum(maximum(p[0], p[1]), p[2]), p[3]) + \
                c.layer_overhead_us * 1e-3
        try:
            label = f"{rule}, {wb} B/cycle, link {'fitted' if link is None else link}"
            rows.append(_variant_row(label, wb, link, data))
        finally:
            apm.layer_ms = serial
    print("== issue 21 held-out checks under variants of the Coral model (first row: the shipped targets)")
    print(format_table(("variant", "usb LOO / rho", "devboard LOO / rho", "S usb", "M usb", "M devboard", "L usb",
                        "L usb-std", "usb link MB/s"), rows, right=(3, 4, 5, 6, 7, 8)))
    print()


def _latency(t: object, c: object, axi_mhz: float | None = None) -> float:
    """`terms_latency_ms`, or (`axi_mhz`) with the cached-weight traffic costing cycles of that AXI clock instead of
    the chip's: the weight bytes rescaled by chip clock / AXI clock, so the shipped formula (apm.layer_parts) holds."""
    if axi_mhz is not None:
        t = t._replace(cached_bytes=t.cached_bytes * (c.clock_mhz / axi_mhz))
    return terms_latency_ms(t, c)


def _on_chip_ms(t: object, c: object, axi_mhz: float | None = None) -> float:
    """The clock-scaled part of an estimate at c's clock: the time added when the clock halves."""
    import dataclasses

    return _latency(t, dataclasses.replace(c, clock_mhz=c.clock_mhz / 2), axi_mhz) - _latency(t, c, axi_mhz)


def _row_ms(row: tuple[object, str], c: object, axi_mhz: float | None = None) -> float:
    """What a variant's fitted row measured: the whole latency ('total') or its clock-scaled part ('on_chip')."""
    t, kind = row
    return _on_chip_ms(t, c, axi_mhz) if kind == "on_chip" else _latency(t, c, axi_mhz)


def _fit_rows(rows: list, base: object, free: list[str], link_cap: float,
              axi_mhz: float | None = None) -> tuple[object, float, float]:
    """`_loo` over rows (terms, ms, 'total' or 'on_chip'), the link held to at most `link_cap` MB/s, every fit from
    four starts."""
    bounds = dict(cal.BOUNDS, link_mb_per_s=(10.0, link_cap))
    return _loo([(t, kind) for t, _, kind in rows], [ms for _, ms, _ in rows], base, free, bounds=bounds,
                predict=functools.partial(_row_ms, axi_mhz=axi_mhz), loo_multistart=True)


def _variant_data() -> dict[str, object]:
    """What every chip variant is fitted and checked on, built once: the Table 1 graphs' terms and rows, the
    EfficientNet-EdgeTPU terms, every graph, and the sweep's clock-scaled times (terms do not depend on the fitted
    constants: they are taken at coral-usb's)."""
    from edgetpu_models.nas.latency.estimator import load_target
    from edgetpu_models.nas.latency.frontends import spec_graph

    base = load_target("coral-usb").constants
    rows = cal.target_rows("coral-usb")
    sweep = _clock_sweep()
    graphs = dict(zip((r.model for r in rows), cal.calibration_graphs(rows)))
    graphs.update({n[-1]: spec_graph(n) for n in
                   ("efficientnet_edgetpu_s", "efficientnet_edgetpu_m", "efficientnet_edgetpu_l")})
    usb_ms, dev_ms = _efficientnet_published()
    return {"keras": {r.model: (graph_terms(graphs[r.model], base), r) for r in rows},
            "eff": {k: graph_terms(graphs[k], base) for k in "sml"},
            "eff_usb_ms": usb_ms, "eff_dev_ms": dev_ms,
            "graphs": graphs,
            "mnv2_on": _intercept_slope(sweep["MobileNet v2 (iNat bird)"][1])[1] / 500,
            "l_on": _intercept_slope(sweep["EfficientNet-EdgeTPU-L"][1])[1] / 500}


def _efficientnet_published() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Coral's published EfficientNet-EdgeTPU latencies as (size letter, ms): the USB stick's (Table 1 and the models
    page) and the Dev Board's less M's, the held-out check the variants report."""
    usb, dev = [], []
    for r in _read_table("coral_benchmarks_efficientnet.csv") + _read_table("coral_models_page.csv"):
        if r["zoo"].startswith("efficientnet_edgetpu_"):
            k = r["zoo"][-1]
            usb.append((k, float(r["usb_ms"])))
            if r.get("devboard_ms") and k != "m":
                dev.append((k, float(r["devboard_ms"])))
    return sorted(usb, key=lambda row: "sml".index(row[0])), dev  # grouped by model (stable: table order within)


@functools.lru_cache(maxsize=None)
def _instruction_mib() -> dict[str, tuple[float, float]]:
    """{model: (low, high)} MiB of instructions in Coral's compiled classifier (coral_compiled_sizes.csv): the file,
    less its parameters, less the 0.03-0.05 MiB a compiled classifier holds besides. Parameters are our memory plan's
    count times 1.04: the plan counts 2.7-6.2% fewer bytes than the parsed MobileNet v1 0.5, 0.75 and 1.0 files hold."""
    out = {}
    for r in _read_table("coral_compiled_sizes.csv"):
        e = estimate(_reference(r), "coral-usb")
        params = 1.04 * (e.on_chip_param_bytes + e.off_chip_param_bytes) / 2**20
        out[r["model"]] = (float(r["file_mib_lo"]) - params - 0.05, float(r["file_mib"]) - params - 0.03)
    return out


def bench_instruction_stream() -> None:
    """What Coral's compiled classifiers carry besides their parameters: the instruction stream each inference
    sends over the link. The invoke overhead fitted on Table 1 holds a MobileNet-sized one; EfficientNet-EdgeTPU's
    is larger."""
    rows = []
    for model, (lo, hi) in _instruction_mib().items():
        rows.append((model, f"{lo:.2f}-{hi:.2f}", f"{lo * 2**20 / 500e3:.1f}-{hi * 2**20 / 500e3:.1f}"))
    print("== instructions in Coral's compiled classifiers (file less parameters; coral_compiled_sizes.csv)")
    print(format_table(("model", "instructions MiB", "ms at 500 MB/s"), rows, right=(1, 2)))
    print()


def _plus_link_bytes(t: object, n: float) -> object:
    """Terms `t` with `n` more bytes over the link at every inference (added to the input transfer)."""
    from edgetpu_models.layer_graph import numel

    return t._replace(input_shape=(numel(t.input_shape) + int(n),))


def _with_instructions(data: dict) -> dict:
    """`_variant_data` with each EfficientNet's instructions beyond MobileNet v2's sent over the link at every
    inference (the invoke overhead already holds MobileNet v2's); from the compiled files, not from the graph."""
    ins = {m: (lo + hi) / 2 for m, (lo, hi) in _instruction_mib().items()}
    return dict(data, eff={k: _plus_link_bytes(t, (ins[f"EfficientNet-EdgeTPU-{k.upper()}"] - ins["MobileNet v2"])
                                               * 2**20) for k, t in data["eff"].items()})


def _weight_blocks(graph: object) -> int:
    """64 x 64 weight blocks times kernel taps over a graph's convolutions and dense layers (a depthwise layer: 64
    channels per block): the one count from the layer graph that tracks the five Coral classifiers' instructions."""
    from edgetpu_models.layer_graph import WEIGHTED_OPS, Op, lowered
    from edgetpu_models.nas.latency.memory import DEFAULT

    pad = DEFAULT.channel_pad  # the 64 cells of a tile
    n = 0
    for layer in lowered(graph).layers:
        if layer.op in WEIGHTED_OPS:
            cin = 1 if layer.op == Op.DEPTHWISE_CONV2D else -(-layer.input_shape[-1] // pad)
            taps = 1 if layer.op == Op.DENSE else layer.kernel_area
            n += -(-layer.output_shape[-1] // pad) * cin * taps
    return n


def _with_block_instructions(data: dict, bytes_per_block: float) -> dict:
    """`_variant_data` with every graph sending `bytes_per_block` instruction bytes per weight block over the link at
    every inference: an instruction stream predicted from the graph, for Table 1 and EfficientNet alike."""
    g = data["graphs"]
    return dict(data, keras={m: (_plus_link_bytes(t, bytes_per_block * _weight_blocks(g[m])), r)
                             for m, (t, r) in data["keras"].items()},
                eff={k: _plus_link_bytes(t, bytes_per_block * _weight_blocks(g[k])) for k, t in data["eff"].items()})


def _chip_variant(label: str, data: dict, wb: float, axi: tuple[float, float] | None, extra: bool,
                  anchors: bool) -> tuple:
    """One row of bench_chip_variants: coral-usb fitted (links <= 500 MB/s), coral-devboard on link and host.
    `axi`: (AXI MHz at max, AXI MHz on PCIe and at libedgetpu1-std) when weights move on the AXI clock."""
    import dataclasses

    from edgetpu_models.nas.latency.estimator import load_target

    usb, dev = load_target("coral-usb"), load_target("coral-devboard")
    base = dataclasses.replace(usb.constants, weight_bytes_per_cycle=wb, link_mb_per_s=495.0)
    keras, eff = data["keras"], data["eff"]
    usb_rows = [(t, r.measured_ms, "total") for t, r in keras.values()]
    usb_rows += [(eff[k], ms, "total") for k, ms in data["eff_usb_ms"]] if extra else []
    usb_rows += [(eff["l"], data["l_on"], "on_chip"), (keras["MobileNet v2"][0], data["mnv2_on"], "on_chip")
                 ] if anchors else []
    dev_rows = [(keras[r.model][0], r.measured_ms, "total") for r in cal.target_rows("coral-devboard")]
    dev_rows += [(eff[k], ms, "total") for k, ms in data["eff_dev_ms"]] if extra else []
    axi_max, axi_low = axi if axi else (None, None)  # PCIe and libedgetpu1-std run the lower AXI clock
    cu, mu, ru = _fit_rows(usb_rows, base, cal._free(usb), 500.0, axi_max)
    s, m, big = (_latency(eff[k], cu, axi_max) for k in "sml")
    mnv2 = _latency(keras["MobileNet v2"][0], cu, axi_max)
    l_std = _latency(eff["l"], dataclasses.replace(cu, clock_mhz=cu.clock_mhz / 2), axi_low)
    based = dataclasses.replace(cu, link_mb_per_s=min(dev.constants.link_mb_per_s, 495.0),
                                invoke_overhead_us=dev.constants.invoke_overhead_us)
    cd, md, rd = _fit_rows(dev_rows, based, cal._free(dev), 500.0, axi_low)
    m_dev = _latency(eff["m"], cd, axi_low)
    l_dev_on = _intercept_slope([(f, _latency(eff["l"], dataclasses.replace(cd, clock_mhz=f), axi_low))
                                 for f in (500.0, 250.0, 125.0, 62.5)])[1] / 500
    return (label, f"{mu * 100:.1f}% / {ru:.3f}", f"{md * 100:.1f}% / {rd:.3f}", f"{s:.2f}", f"{m:.2f}",
            f"{big:.2f}", f"{mnv2:.2f}", f"{l_dev_on:.2f}", f"{m_dev:.2f}", f"{l_std:.2f}")


def bench_chip_variants(data: dict) -> None:
    """Issue 21's checks under eight further variants of the chip model, none adopted. Links are held to their
    payload bound (USB 3.0 and PCIe Gen2 x1: 5 Gb/s, 8b/10b: 500 MB/s); the leave-one-out runs over every fitted row.
    (1, 2) Cached-weight traffic on the chip's AXI clock, which libedgetpu sets to 250 MHz on a USB device at max,
    and to 125 MHz on PCIe (the Dev Board) and on USB at 'high' (libedgetpu1-std) [libedgetpu
    driver/beagle/beagle_top_level_handler.cc, QuitReset]: on the Table 1 rows alone, then with the published
    EfficientNet-EdgeTPU rows (USB S, M, L; Dev Board S) fitted too. 256 B per AXI cycle is shown because its
    clock-scaled time of L matches the sweep; the leave-one-out minimum over 160-384 is at 160, where it does not.
    (3) The chip clock for everything, fitted also to the clock-scaled times the Dev Board sweep measures
    (coral_clock_sweep.csv: L and MobileNet v2) and to the EfficientNet rows; 112 B/cycle is the leave-one-out
    minimum over 72-160 on those rows. (4, 5) The chip clock, with the EfficientNet rows fitted and each EfficientNet
    sending its instructions beyond MobileNet v2's over the link at every inference (`_with_instructions`,
    coral_compiled_sizes.csv). (6-8) The chip clock with every graph's instruction stream predicted from its weight
    blocks (`_weight_blocks`, 150 B each: the five Coral classifiers' files within 17%). Held out (never fitted): M on
    the Dev Board (10.6 ms) and L at 250 MHz."""
    axi = (250.0, 125.0)
    rows = [_chip_variant("weights on AXI, 256 B/AXI cycle, Table 1 only", data, 256.0, axi, False, False),
            _chip_variant("weights on AXI, 256 B/AXI cycle, + EfficientNet rows", data, 256.0, axi, True, False),
            _chip_variant("chip clock, 112 B/cycle, + EfficientNet rows + sweep", data, 112.0, None, True, True)]
    with_ins = _with_instructions(data)
    rows += [_chip_variant(f"chip clock, {wb} B/cycle, + EfficientNet rows and instructions", with_ins, float(wb),
                           None, True, False) for wb in (128, 160)]
    blocks = _with_block_instructions(data, 150.0)
    rows += [_chip_variant(f"chip clock, {wb} B/cycle, 150 B of instructions per weight block{rows_}", blocks,
                           float(wb), None, extra, False)
             for wb, extra, rows_ in ((96, False, ", Table 1 only"), (128, False, ", Table 1 only"),
                                      (128, True, " + EfficientNet rows"))]
    print("== issue 21's checks under chip-model variants (not adopted; shipped targets: see the table above)")
    print(format_table(("variant", "usb LOO / rho", "devboard LOO / rho", "S usb", "M usb", "L usb", "MobileNet v2 usb",
                        "L clock-scaled, sweep fit (measured 11.37)", "M devboard", "L usb-std"), rows,
                       right=(3, 4, 5, 6, 7, 8, 9)))
    print()


def bench_devboard_cache(data: dict, mib: tuple[float, ...] = (8.0, 7.5, 7.0, 6.5, 6.0)) -> None:
    """The Dev Board fitted (link and host, chip shared) with a smaller parameter cache than the USB stick's, for
    the record: its Table 1 leave-one-out is lowest at 7.0 MiB, where M is streamed in part and lands on the held-out
    10.6 ms. Not adopted: the two carry the same chip and the same compiled files, and no source gives the board less
    cache; one more whole layer streamed moves M by 2.5 ms, so the check would hang on a threshold."""
    import dataclasses

    from edgetpu_models.nas.latency.estimator import load_target

    dev = load_target("coral-devboard")
    rows = cal.target_rows("coral-devboard")
    graphs = [data["graphs"][r.model] for r in rows]  # Table 1's networks, built once for the variants
    table = []
    for size in mib:
        base = dataclasses.replace(dev.constants, param_cache_bytes=int(size * 2**20))
        full, med, rho = _loo([graph_terms(g, base) for g in graphs], [r.measured_ms for r in rows], base,
                              cal._free(dev))
        s, m = (terms_latency_ms(graph_terms(data["graphs"][k], full), full) for k in "sm")
        table.append((f"{size:.2f}", f"{med * 100:.1f}% / {rho:.3f}", f"{s:.2f}", f"{m:.2f}"))
    print("== coral-devboard with a smaller parameter cache (not adopted; published S 5.5, M 10.6 held out)")
    print(format_table(("cache MiB", "Table 1 LOO / rho", "S", "M"), table, right=(0, 1, 2, 3)))
    print()


PROBE_CHECK_MODELS = (("efficientnet_edgetpu_s", 224), ("efficientnet_edgetpu_m", 240), ("mobilenet_edgetpu", 224),
                      ("mobilenet_edgetpu_075", 224), ("mobilenet_edgetpu_v2_xs", 224), ("mobilenet_edgetpu_v2_s", 224))
"""Zoo models the probed `cpu` predictor is checked on (none of them at the probe models' resolutions)."""


def _measured_zoo(models: tuple[tuple[str, int], ...]) -> dict[str, tuple[float, float]]:
    """{"name@res": (median ms, spread)} of `cpu-measured` (LiteRT, 1 thread, thread CPU time), cached in
    ~/.cache/edgetpu_models/cpu_zoo_t1.jsonl (resumable)."""
    import json

    from edgetpu_models.io_utils import read_jsonl_records
    from edgetpu_models.nas.latency.cpu.timing import model_tflite_bytes, time_tflite_runs

    path = os.path.join(os.path.expanduser("~"), ".cache", "edgetpu_models", "cpu_zoo_t1.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    done = {k: (float(r["ms"]), float(r["spread"])) for k, r in read_jsonl_records(path, "key").items()
            if "ms" in r and "spread" in r}
    for name, res in models:
        key = f"{name}@{res}"
        if key not in done:
            timing = time_tflite_runs(model_tflite_bytes(name, res), threads=1, runs=15)
            done[key] = (timing.median_ms, timing.spread)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "ms": timing.median_ms, "spread": timing.spread}) + "\n")
    return done


def bench_cpu_probe(models: tuple[tuple[str, int], ...] = PROBE_CHECK_MODELS) -> None:
    """How long the `cpu` probe takes and how good it is: the probed predictor (and the predictor as fitted) against
    `cpu-measured` on zoo models. The probe's factor is applied here, not written to the user's config."""
    from edgetpu_models.nas.latency.cpu.predictor import load_predictor, predict_kernels
    from edgetpu_models.nas.latency.cpu.probe import run_probe
    from edgetpu_models.nas.latency.frontends import spec_graph
    from edgetpu_models.nas.latency.targets import load_target

    target = load_target("cpu")
    t0 = time.perf_counter()
    probe = run_probe(target)
    wall = time.perf_counter() - t0
    pred = load_predictor(target)
    measured = _measured_zoo(models)
    rows, errs, errs_fitted, errs_kernels = [], [], [], []
    for name, res in models:
        ms, spread = measured[f"{name}@{res}"]
        kernels = sum(k for _, k, _ in predict_kernels(spec_graph(name, None, res), pred, 1.0))
        fitted, probed = pred.invoke_ms + kernels, pred.invoke_ms + kernels * probe.scale
        by_kernels = pred.invoke_ms + kernels * probe.kernel_scale
        errs.append(abs(probed / ms - 1))
        errs_fitted.append(abs(fitted / ms - 1))
        errs_kernels.append(abs(by_kernels / ms - 1))
        rows.append((name, str(res), f"{ms:.2f}", f"+-{spread * 100:.1f}%", f"{fitted:.2f}", f"{by_kernels:.2f}",
                     f"{probed:.2f}", f"{(probed / ms - 1) * 100:+.1f}%"))
    print(f"== cpu probe: a whole model and {len(probe.rows)} one-kernel models, shipped, timed with LiteRT in "
          f"{probe.seconds:.1f} s ({wall:.1f} s wall, load average {os.getloadavg()[0]:.1f}); this CPU runs models "
          f"{probe.scale:.3f}x the predictor's times ({probe.model.kernel}: {probe.model.measured_ms:.3f} ms "
          f"+-{probe.model.spread * 100:.1f}% against {probe.model.predicted_ms:.3f}), kernels alone "
          f"{probe.kernel_scale:.3f}x")
    print(format_table(("model", "res", "cpu-measured ms", "spread (IQR/2)", "as fitted ms", "kernels' factor ms",
                        "probed ms", "probed error"), rows, right=(1, 2, 3, 4, 5, 6, 7)))
    print(f"   median |error|: probed {100 * statistics.median(errs):.1f}%, with the kernels' factor alone "
          f"{100 * statistics.median(errs_kernels):.1f}%, as fitted (another CPU's fit) "
          f"{100 * statistics.median(errs_fitted):.1f}%")
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--held-out", type=int, default=32, help="held-out architectures for the CPU check (0: skip)")
    p.add_argument("--cached-only", action="store_true", help="CPU check from cached timings only")
    p.add_argument("--speed-only", action="store_true", help="only the estimates-per-second figures")
    p.add_argument("--segmentation-only", action="store_true", help="only the segmentation tables (seconds)")
    p.add_argument("--variants-only", action="store_true",
                   help="only issue 21's table of Coral model variants (a minute: refits each)")
    p.add_argument("--clock-sweep-only", action="store_true",
                   help="only the Dev Board clock sweep against coral-devboard (seconds)")
    p.add_argument("--cpu-probe-only", action="store_true",
                   help="only the cpu probe check (the zoo models' cpu-measured timings are built the first time)")
    args = p.parse_args(argv)
    if args.segmentation_only:
        bench_segmentation()
        return 0
    if args.cpu_probe_only:
        bench_cpu_probe()
        return 0
    if args.variants_only:
        data = _variant_data()
        bench_variants(data)
        bench_instruction_stream()
        bench_chip_variants(data)
        bench_devboard_cache(data)
        return 0
    if args.clock_sweep_only:
        bench_clock_sweep()
        return 0
    bench_spec_path()
    bench_one_block()
    if args.speed_only:
        return 0
    bench_memory()
    bench_published()
    bench_clock_split()
    bench_clock_sweep()
    bench_calibration()
    bench_weight_bandwidth()
    bench_heldout()
    bench_pixel6_held_out()
    bench_zoo()
    bench_segmentation()
    bench_cpu(args.held_out, args.cached_only)
    if args.held_out > 0 and not args.cached_only:  # times zoo models with LiteRT (built the first time)
        bench_cpu_probe()
    return 0


if __name__ == "__main__":
    sys.exit(main())
