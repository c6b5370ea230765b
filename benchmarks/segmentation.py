"""The segmentation zoo in one table: params (ours / tensorflow/models, counted from its code; README's rounded
figure), MACs at 512, predicted latency of the fused `resize512,argmax` model on coral-usb and pixel6 (and the
published Pixel 6 figure, held out), and - from a `benchmarks/export.py --segmentation --json FILE` run - Edge TPU
ops mapped, export time and peak memory at 512.

    python benchmarks/segmentation.py [--export-json /tmp/segexp.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys


def _reference_counts() -> dict[str, int]:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "seg_param_check.py")
    spec = importlib.util.spec_from_file_location("seg_param_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.reference_counts()


def main(argv: list[str] | None = None) -> int:
    from edgetpu_models.nas.latency.estimator import estimate
    from edgetpu_models.seg_graph import seg_zoo, segmentation_graph
    from edgetpu_models.tables import format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export-json", help="rows written by benchmarks/export.py --segmentation --json")
    args = ap.parse_args(argv)
    exports = {}
    if args.export_json and os.path.isfile(args.export_json):
        with open(args.export_json, encoding="utf-8") as f:
            exports = {r["model"].split("@")[0]: r for r in json.load(f)}
    ref = _reference_counts()
    rows = []
    for name, m in seg_zoo().items():
        fused = f"{name}@resize512,argmax"
        g = segmentation_graph(fused)
        e = exports.get(name)
        rows.append((name, f"{g.params:,} / {ref[name]:,} ({m.reference['reference_params_m']:.1f}M)",
                     f"{g.macs / 1e9:.2f}G", f"{e['edgetpu_ops']}/{e['total_ops']}" if e else "-",
                     f"{estimate(fused, 'coral-usb').latency_ms:.1f}",
                     f"{estimate(fused, 'pixel6').latency_ms:.2f} ({m.reference['pixel6_ms']:.1f})",
                     f"{e['export_s']:.0f} ({e['export_cpu_s']:.0f} CPU)" if e else "-",
                     f"{e['peak_gib']:.2f}" if e else "-"))
    print("Segmentation zoo at 512 x 512, 32 classes, fused resize512,argmax output")
    print(format_table(("model", "params ours / tensorflow/models (README)", "MACs", "int8 ops on Edge TPU",
                        "coral-usb ms", "pixel6 ms (published)", "export s", "peak GiB"), rows,
                       right=(2, 3, 4, 5, 6, 7)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
