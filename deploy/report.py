"""One self-contained HTML page about int8 .tflite models on an Edge TPU target (`edgetpu-models report`).

    reports = write_report(["s_int8.tflite", "other_int8.tflite"], "coral-usb", "report.html")

Per model: the predicted latency of every layer as an SVG bar chart coloured by what bounds it (compute, memory,
host link; `nas.apm`), the ops that run on the Edge TPU and, for each op that does not, the compatibility check's
reason (`edgetpu_check`), where the graph falls back to the CPU, the parameter bytes cached on chip and streamed per
inference against the chip's parameter memory, and model facts (parameters, MACs, file size, input/output
quantization). Several models also get a side-by-side table. No JavaScript, no external file, no network: inline CSS
and SVG only, so the page opens on an air-gapped machine. TF-free (the flatbuffer reader and the latency model).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from edgetpu_models.deploy.edgetpu_check import CompatibilityReport, check_model
from edgetpu_models.errors import EdgeTPUModelsError, ModelFileError, TargetError
from edgetpu_models.io_utils import check_destination, write_text_atomic
from edgetpu_models.tflite_reader import TFLiteModel, read_tflite

BOUND_GROUPS = {"compute": "compute", "activations": "memory", "weights": "memory", "param_stream": "host link",
                "host_link": "host link", "overhead": "overhead", "free": "free", "host_cpu": "host cpu"}
"""The APM's bounds grouped as the page shows them (activations and parameter-cache reads are on-chip memory)."""
COLOURS = {"compute": "#3b6fb6", "memory": "#e08a1e", "host link": "#c8372d", "overhead": "#8c8c8c", "free": "#cfcfcf",
           "host cpu": "#7b3fa0"}
CPU_COLOUR = "#7b3fa0"


@dataclass
class ModelReport:
    path: str
    name: str
    size_bytes: int
    check: CompatibilityReport
    latency_ms: float | None
    layers: list[dict[str, Any]] = field(default_factory=list)
    """Per layer: name, op, ms, bound, group, macs, params, op_index, on_edgetpu."""
    cached_bytes: int = 0
    streamed_bytes: int = 0
    cache_bytes: int = 0
    params: int = 0
    macs: int = 0
    io: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu_segments: list[dict[str, Any]] = field(default_factory=list)
    latency_note: str = ""
    """Why there is no latency chart (e.g. a compiled file), empty when there is one."""


def _io(m: TFLiteModel) -> dict[str, dict[str, Any]]:
    def one(t: Any) -> dict[str, Any]:
        q = {"scale": t.scale[0], "zero_point": t.zero_point[0]} if t.is_quantized else {}
        return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype.lower(), **q}

    return {"input": one(m.input_tensors()[0]), "output": one(m.output_tensors()[0])}


def _cpu_segments(check: CompatibilityReport) -> list[dict[str, Any]]:
    """Runs of consecutive ops that stay on the CPU, in graph order."""
    segments: list[dict[str, Any]] = []
    for op in check.ops:
        if op.on_edgetpu:
            continue
        if segments and segments[-1]["last"] == op.index - 1:
            segments[-1]["last"] = op.index
            segments[-1]["ops"] += 1
        else:
            segments.append({"first": op.index, "last": op.index, "ops": 1, "operator": op.operator,
                             "reason": op.reason or op.status})
    return segments


def model_report(path: "str | os.PathLike[str]", target: str = "coral-usb") -> ModelReport:
    """Everything the page shows about one .tflite on an Edge TPU target."""
    from edgetpu_models.nas.latency.estimator import load_target
    from edgetpu_models.nas.latency.frontends import tflite_graph
    from edgetpu_models.nas.latency.partition import estimate_partitioned

    t = load_target(target)
    if t.kind != "edgetpu":
        raise TargetError(f"{target}: not an Edge TPU target (the report needs one, e.g. coral-usb)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    if not path.endswith(".tflite"):
        raise ModelFileError(f"{path}: expected an int8 .tflite (make one with `edgetpu-models export`)")
    m = read_tflite(path)
    check = check_model(m, os.path.basename(path))
    rep = ModelReport(path, os.path.basename(path), os.path.getsize(path), check, None, io=_io(m),
                      cache_bytes=t.constants.param_cache_bytes, cpu_segments=_cpu_segments(check))
    try:
        graph = tflite_graph(path)
    except EdgeTPUModelsError as e:  # e.g. already compiled (edgetpu-custom-op) or float: no per-layer estimate
        rep.latency_note = str(e)
        return rep
    first_cpu = check.first_cpu_op  # the compiler's split: that op and all after it cost on the host CPU
    est = estimate_partitioned(graph, t, first_cpu.index if first_cpu is not None else None)
    on_tpu = {op.index: op.on_edgetpu for op in check.ops}
    op_of = {layer.name: layer.source_op for layer in graph.layers if layer.source_op >= 0}
    params = {layer.name: layer.inference_params for layer in graph.layers}
    for row in est.layers:
        idx = op_of.get(row.name)
        rep.layers.append({"name": row.name, "op": row.op, "ms": row.ms, "bound": row.bound,
                           "group": BOUND_GROUPS.get(row.bound, row.bound), "macs": row.macs,
                           "params": max(params.get(row.name, 0), 0), "op_index": idx,
                           "on_edgetpu": on_tpu.get(idx, True) if idx is not None else True})
    rep.latency_ms, rep.cached_bytes, rep.streamed_bytes = est.latency_ms, est.on_chip_param_bytes, \
        est.off_chip_param_bytes
    rep.params = sum(v["params"] for v in rep.layers)
    rep.macs = sum(v["macs"] for v in rep.layers)
    return rep


# ---------------------------------------------------------------------------------------------------------------------
# HTML

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(int(n))


def latency_svg(rep: ModelReport, width: int = 900) -> str:
    """Horizontal bars, one per layer, coloured by bound; CPU-side layers outlined and labelled."""
    row_h, label_w, top = 15, 300, 6
    longest = max((v["ms"] for v in rep.layers), default=0.0) or 1.0
    bar_w = width - label_w - 90
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + row_h * len(rep.layers) + 6}" '
             f'role="img" aria-label="{_e("per-layer predicted latency of " + rep.name)}" class="chart">']
    for i, v in enumerate(rep.layers):
        y = top + i * row_h
        w = max(1.0, bar_w * v["ms"] / longest)
        colour = COLOURS.get(v["group"], "#999")
        cpu = not v["on_edgetpu"]
        tip = (f"{v['name']} ({v['op']}): {v['ms']:.4f} ms, bound: {v['bound']}, {_count(v['macs'])} MACs"
               + (", runs on the CPU" if cpu else ""))
        stroke = f' stroke="{CPU_COLOUR}" stroke-width="2" stroke-dasharray="4 2"' if cpu else ""
        parts.append(f'<g><title>{_e(tip)}</title>'
                     f'<text x="{label_w - 6}" y="{y + 11}" text-anchor="end" class="lbl">{_e(v["name"][-44:])}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 4}" fill="{colour}"{stroke}/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 11}" class="val">{v["ms"]:.3f}'
                     f'{" CPU" if cpu else ""}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def memory_svg(rep: ModelReport, width: int = 900) -> str:
    """The chip's parameter memory as a bar: cached bytes inside it, streamed bytes as a red overflow."""
    total = max(rep.cache_bytes, rep.cached_bytes + rep.streamed_bytes, 1)
    scale = (width - 20) / total
    cached_w, streamed_w, cache_w = rep.cached_bytes * scale, rep.streamed_bytes * scale, rep.cache_bytes * scale
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="46" role="img" '
            f'aria-label="parameter memory" class="chart">'
            f'<rect x="10" y="8" width="{cache_w:.1f}" height="20" fill="#f2f2f2" stroke="#555"/>'
            f'<rect x="10" y="8" width="{cached_w:.1f}" height="20" fill="{COLOURS["compute"]}">'
            f'<title>cached on chip: {_e(_mb(rep.cached_bytes))}</title></rect>'
            f'<rect x="{10 + cached_w:.1f}" y="8" width="{streamed_w:.1f}" height="20" fill="{COLOURS["host link"]}">'
            f'<title>streamed every inference: {_e(_mb(rep.streamed_bytes))}</title></rect>'
            f'<text x="10" y="42" class="lbl">0</text>'
            f'<text x="{10 + cache_w:.1f}" y="42" text-anchor="end" class="lbl">'
            f'{_e(_mb(rep.cache_bytes))} parameter memory</text></svg>')


def _facts(rep: ModelReport) -> str:
    def quant(d: dict[str, Any]) -> str:
        q = f", scale {d['scale']:.6g}, zero point {d['zero_point']}" if "scale" in d else " (not quantized)"
        return f"{d['dtype']} {d['shape']}{q}"

    rows = [("file size", _mb(rep.size_bytes)), ("parameters", _count(rep.params) if rep.layers else "-"),
            ("MACs per image", _count(rep.macs) if rep.layers else "-"),
            ("predicted latency", f"{rep.latency_ms:.3f} ms" if rep.latency_ms is not None else "-"),
            ("ops on the Edge TPU", f"{rep.check.on_edgetpu} of {rep.check.total}"),
            ("input", quant(rep.io["input"])), ("output", quant(rep.io["output"]))]
    return "<table class='facts'>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _ops_section(rep: ModelReport) -> str:
    c = rep.check
    rows = "".join(f"<tr class='{'tpu' if r.status.startswith('Mapped') else 'cpu'}'><td>{_e(r.operator)}</td>"
                   f"<td class='num'>{r.count}</td><td>{_e(r.status)}</td></tr>" for r in c.rows)
    out = [f"<p>{c.on_edgetpu} of {c.total} ops run on the Edge TPU"
           + ("" if c.on_cpu == 0 else f", {c.on_cpu} on the CPU") + ".</p>",
           f"<table><tr><th>operator</th><th>count</th><th>status</th></tr>{rows}</table>"]
    out += [f"<p class='issue'>Model problem: {_e(i)}</p>" for i in c.issues]
    cpu_ops = [o for o in c.ops if not o.on_edgetpu]
    if cpu_ops:
        out.append("<h4>Ops that do not run on the Edge TPU, and why</h4><table><tr><th>#</th><th>operator</th>"
                   "<th>reason</th></tr>" + "".join(f"<tr class='cpu'><td class='num'>{o.index}</td><td>"
                   f"{_e(o.operator)}</td><td>{_e(o.reason or o.status)}</td></tr>" for o in cpu_ops) + "</table>")
    if rep.cpu_segments:
        segs = "".join(f"<li>ops #{s['first']}&ndash;#{s['last']} ({s['ops']} ops) on the CPU, starting at "
                       f"{_e(s['operator'])}: {_e(s['reason'])}</li>" for s in rep.cpu_segments)
        out.append(f"<h4>Where the graph splits</h4><p>The Edge TPU runs ops #0&ndash;#"
                   f"{rep.cpu_segments[0]['first'] - 1} as one segment; then:</p><ul>{segs}</ul>")
    else:
        out.append("<p>The whole graph is one Edge TPU segment: no CPU fallback.</p>")
    return "".join(out)


def _legend() -> str:
    items = [(COLOURS[k], k) for k in ("compute", "memory", "host link", "overhead")]
    spans = "".join(f"<span><i style='background:{c}'></i>{_e(k)}</span>" for c, k in items)
    return (f"<div class='legend'>{spans}<span><i style='border:2px dashed {CPU_COLOUR}'></i>runs on the CPU "
            f"(bar: its host CPU estimate, after the tensor's transfer back over the link)</span></div>")


def _model_section(rep: ModelReport, target: str) -> str:
    mem = (f"<p>{_mb(rep.cached_bytes)} of parameters cached in the {_mb(rep.cache_bytes)} on-chip parameter memory, "
           f"{_mb(rep.streamed_bytes)} streamed over the host link on every inference.</p>{memory_svg(rep)}")
    if rep.layers:
        chart = (f"<p>Predicted on {_e(target)}: {rep.latency_ms:.3f} ms in all, {len(rep.layers)} rows (host "
                 f"transfers first and last). Hover a bar for its figures.</p>{_legend()}{latency_svg(rep)}")
    else:
        chart = f"<p class='issue'>No per-layer estimate: {_e(rep.latency_note)}</p>"
    return (f"<section id='{_e(rep.name)}'><h2>{_e(rep.name)}</h2><h3>Model</h3>{_facts(rep)}"
            f"<h3>Ops on the Edge TPU</h3>{_ops_section(rep)}<h3>Parameter memory</h3>{mem}"
            f"<h3>Per-layer latency</h3>{chart}</section>")


def _comparison(reports: Sequence[ModelReport]) -> str:
    longest = max((r.latency_ms or 0.0 for r in reports), default=0.0) or 1.0
    rows = []
    for r in reports:
        bar = (f"<svg xmlns='http://www.w3.org/2000/svg' width='200' height='12' class='chart'><rect width='"
               f"{200 * (r.latency_ms or 0) / longest:.1f}' height='12' fill='{COLOURS['compute']}'/></svg>")
        rows.append(f"<tr><td><a href='#{_e(r.name)}'>{_e(r.name)}</a></td><td class='num'>"
                    f"{'-' if r.latency_ms is None else f'{r.latency_ms:.3f}'}</td><td>{bar}</td>"
                    f"<td class='num'>{_e(_mb(r.size_bytes))}</td><td class='num'>{r.check.on_edgetpu}/"
                    f"{r.check.total}</td><td class='num'>{_e(_count(r.params))}</td><td class='num'>"
                    f"{_e(_count(r.macs))}</td><td class='num'>{_e(_mb(r.streamed_bytes))}</td></tr>")
    return ("<section><h2>Side by side</h2><table><tr><th>model</th><th>predicted ms</th><th></th><th>file size</th>"
            "<th>ops on Edge TPU</th><th>params</th><th>MACs</th><th>streamed</th></tr>" + "".join(rows)
            + "</table></section>")


_CSS = """body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:19px;border-bottom:2px solid #3b6fb6;padding-bottom:2px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:14px;margin:12px 0 4px}table{border-collapse:collapse;margin:4px 0}
th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right}tr.cpu td{background:#f6eefa}.issue{color:#a0281e}.chart{display:block;margin:6px 0}
.chart .lbl,.chart .val{font:11px monospace;fill:#333}.legend span{margin-right:16px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
table.facts th{width:180px}"""


def render_html(reports: Sequence[ModelReport], target: str) -> str:
    """The page: title, a side-by-side table when there are several models, one section per model."""
    names = ", ".join(r.name for r in reports)
    body = [f"<h1>Edge TPU report: {_e(names)}</h1><p>Target <b>{_e(target)}</b>. Latency predicted by the "
            f"analytical model (edgetpu_models.nas.latency.apm); op mapping by the compatibility check "
            f"(no compiler).</p>"]
    if len(reports) > 1:
        body.append(_comparison(reports))
    body += [_model_section(r, target) for r in reports]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{GENERATOR}"
            f"<title>Edge TPU report: {_e(names)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


GENERATOR = "<meta name='generator' content='edgetpu-models report'>"


def _is_our_report(path: str) -> bool:
    """Whether an existing file is a page this command wrote (it carries GENERATOR near its start)."""
    try:
        with open(path, "rb") as f:
            return GENERATOR.encode() in f.read(4096)
    except OSError:
        return False


def write_report(models: Sequence["str | os.PathLike[str]"], target: str, out: "str | os.PathLike[str]",
                 force: bool = False) -> list[ModelReport]:
    """Builds every model's report first (a bad file is an error before anything is written), then writes the page
    atomically."""
    if not models:
        raise ModelFileError("report: no model given")
    out = os.fspath(out)
    if not out.endswith((".html", ".htm")):
        raise ModelFileError(f"{out}: expected an .html output file name")
    check_destination(out, foreign=[out] if os.path.lexists(out) and not _is_our_report(out) else [], force=force)
    reports = [model_report(m, target) for m in models]
    write_text_atomic(out, render_html(reports, target))
    return reports
