"""Latency benchmark: spec-path speed, calibration quality, zoo estimates, and the CPU predictor against real timings.

    python benchmarks/latency.py                     # everything (the CPU part builds, converts and times ~32 models
                                                     # the first time: tens of minutes; timings are cached, resumable)
    python benchmarks/latency.py --held-out 0        # skip the CPU measurements
    python benchmarks/latency.py --cached-only       # CPU part from cached timings only

Prints:
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

from edgetpu_models.nas import calibrate as cal  # noqa: E402
from edgetpu_models.nas.cpu import held_out_rows, measure_held_out, random_specs  # noqa: E402
from edgetpu_models.nas.latency import estimate, estimate_spec  # noqa: E402
from edgetpu_models.tables import format_table  # noqa: E402
from edgetpu_models.zoo import ZOO, zoo_spec  # noqa: E402


def bench_spec_path(n_random: int = 200, repeats: int = 5) -> None:
    """Per model, the fastest of `repeats` runs, by wall clock and by this thread's CPU time (the second is what the
    estimate costs; the first also counts time the thread waits for a core when the machine is shared)."""
    specs = [zoo_spec(name) for name in ZOO] + [(s, None) for s, _ in random_specs(n_random, seed=7)]
    for spec, variant in specs:  # warm caches (target file, zoo specs)
        estimate_spec(spec, "coral-usb", variant=variant)
    wall = [float("inf")] * len(specs)
    cpu = [float("inf")] * len(specs)
    for _ in range(repeats):
        for i, (spec, variant) in enumerate(specs):
            w0, c0 = time.perf_counter(), time.thread_time()
            estimate_spec(spec, "coral-usb", variant=variant)
            cpu[i] = min(cpu[i], time.thread_time() - c0)
            wall[i] = min(wall[i], time.perf_counter() - w0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== spec path (coral-usb): {len(specs)} specs ({len(ZOO)} zoo + {n_random} random), fastest of {repeats} "
          f"per model; load average {load:.1f} on {os.cpu_count()} cores")
    for label, t in (("CPU time", cpu), ("wall clock", wall)):
        print(f"   {label:10s}: {len(specs) / sum(t):,.0f} estimates/s; ms per model: mean {1e3 * sum(t) / len(t):.3f}, "
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


def bench_pixel6_held_out() -> None:
    """pixel6 is fitted to MobilenetEdgeTPU V1 only; its file lists the V2 family's published latencies as held out."""
    from edgetpu_models.nas.latency import load_target

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
    bench_calibration()
    bench_pixel6_held_out()
    bench_zoo()
    bench_cpu(args.held_out, args.cached_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
