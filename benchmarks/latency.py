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
   resolutions, and the fraction within +-10%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgetpu_models.nas.latency import calibrate as cal  # noqa: E402
from edgetpu_models.nas.latency.cpu.fit import held_out_rows, measure_held_out, random_specs  # noqa: E402
from edgetpu_models.nas.latency.estimator import estimate  # noqa: E402
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

    from edgetpu_models.nas.latency.apm import graph_terms, terms_latency_ms
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
            terms = [graph_terms(g, base) for g in graphs]
            measured = [r.measured_ms for r in rows]
            free = cal._free(t)
            full = cal.fit_constants(terms, measured, base, free)
            errs = []
            for i in range(len(rows)):
                keep = [j for j in range(len(rows)) if j != i]
                c = cal.fit_constants([terms[j] for j in keep], [measured[j] for j in keep], full, free,
                                      multistart=False)
                errs.append(abs(terms_latency_ms(terms[i], c) / measured[i] - 1))
            meds.append(statistics.median(errs))
        chosen = "  <- targets" if wb == data[0][3].constants.weight_bytes_per_cycle else ""
        table.append((str(wb), f"{meds[0] * 100:.1f}%", f"{meds[1] * 100:.1f}%", f"{sum(meds) * 100:.1f}%" + chosen))
    print("== weight_bytes_per_cycle: leave-one-out median |error| on the Coral table for each value")
    print(format_table(("B/cycle", "coral-usb", "coral-devboard", "sum"), table, right=(1, 2)))
    print()


def bench_heldout() -> None:
    """Coral's own published latencies of models not in the fitted table (nas/latency/targets/coral_models_page.csv)."""
    import csv

    from edgetpu_models.nas.latency.frontends import spec_graph

    path = os.path.join(os.path.dirname(cal.benchmarks_csv()), "coral_models_page.csv")
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    table = []
    for r in rows:
        graph_json = os.path.join(cal.calibration_dir(), f"{r['keras_app']}_{r['input']}.json")
        if r["zoo"] != "-":
            graph = spec_graph(r["zoo"])
        elif r["keras_app"] != "-" and os.path.exists(graph_json):
            graph = cal.load_graph_json(graph_json)
        else:
            continue
        e = estimate(graph, "coral-usb")
        m = float(r["usb_ms"])
        table.append((r["model"], r["input"], f"{m:.1f}", f"{e.latency_ms:.2f}",
                      f"{(e.latency_ms / m - 1) * 100:+.1f}%",
                      f"{e.on_chip_param_bytes / 2**20:.2f}", f"{e.off_chip_param_bytes / 2**20:.2f}"))
    print("== coral-usb vs Coral's models page (held out: never fitted)")
    print(format_table(("model", "input", "published ms", "predicted ms", "error", "cached MiB", "streamed MiB"),
                       table, right=(1, 2, 3, 4, 5, 6)))


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


def bench_zoo() -> None:
    targets = ("coral-usb", "coral-usb-std", "coral-devboard", "pixel4", "pixel6", "cpu")
    rows = []
    for name in ZOO:
        ests = [estimate(name, t) for t in targets]
        rows.append([name] + [f"{e.latency_ms:.2f}" for e in ests] + [f"{ests[0].off_chip_param_bytes:,}"])
    for key, label in (("ResNet50_299", "ResNet-50 (299)"), ("MobileNetV2_224", "MobileNet v2 (224)")):
        g = cal.load_graph_json(os.path.join(cal.calibration_dir(), f"{key}.json"))
        ests = [estimate(g, t) for t in targets]
        rows.append([label] + [f"{e.latency_ms:.2f}" for e in ests] + [f"{ests[0].off_chip_param_bytes:,}"])
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--held-out", type=int, default=32, help="held-out architectures for the CPU check (0: skip)")
    p.add_argument("--cached-only", action="store_true", help="CPU check from cached timings only")
    args = p.parse_args(argv)
    bench_spec_path()
    bench_memory()
    bench_calibration()
    bench_weight_bandwidth()
    bench_heldout()
    bench_pixel6_held_out()
    bench_zoo()
    bench_cpu(args.held_out, args.cached_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
