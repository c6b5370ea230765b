"""The public `edgetpu_compiler` logs kept as calibration data (the `.txt` files and `index.yaml` beside this module,
each with its source), and the memory model checked against them (`benchmarks/latency.py` prints the errors).

Each log has "On-chip memory used for caching model parameters", "On-chip memory remaining for caching model
parameters" (compiler 2.0: "available", from which the parser derives what remains) and "Off-chip memory used for
streaming uncached model parameters"; `deploy.compiler` parses them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Sequence

from edgetpu_models.deploy.compiler import parse_compiler_summaries
from edgetpu_models.errors import TargetError
from edgetpu_models.layer_graph import Layer, LayerGraph
from edgetpu_models.nas.latency.memory import DEFAULT, MemoryConstants, plan_models


def logs_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class LoggedModel:
    """One model block of a published compiler log."""

    log: str
    source: str
    model: str
    graph: str | None
    input_size_bytes: int | None
    cached_bytes: int
    remaining_bytes: int
    streamed_bytes: int
    block: int
    blocks: int


def load_logs(directory: str | None = None) -> list[LoggedModel]:
    """Every model block of every log listed in compiler_logs/index.yaml, parsed with deploy.compiler's parser."""
    import yaml

    directory = directory or logs_dir()
    index = os.path.join(directory, "index.yaml")
    with open(index, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    out = []
    for i, entry in enumerate(data.get("logs") or []):
        path = os.path.join(directory, str(entry.get("file", "")))
        if not os.path.isfile(path):
            raise TargetError(f"{index}: logs[{i}].file: {entry.get('file')!r} not found")
        with open(path, encoding="utf-8") as f:
            blocks = parse_compiler_summaries(f.read())
        for b, s in enumerate(blocks):
            for key in ("on_chip_used_bytes", "on_chip_remaining_bytes", "off_chip_used_bytes"):
                if key not in s:
                    raise TargetError(f"{path}: model {b + 1}: no {key.replace('_bytes', '')} line")
            out.append(LoggedModel(entry["file"], str(entry.get("source", "")), str(entry.get("model", "")),
                                   entry.get("graph"), s.get("input_size_bytes"), s["on_chip_used_bytes"],
                                   s["on_chip_remaining_bytes"], s["off_chip_used_bytes"], b, len(blocks)))
    return out


_DENSE = re.compile(r"^dense:(\d+):(\d+)$")


def log_graph(ref: str) -> LayerGraph:
    """The layer graph a log's `graph` field names: `dense:IN:OUT` (one int8 Dense layer without bias), a zoo model
    name, or `keras:App:SIZE`."""
    m = _DENSE.match(ref)
    if m:
        n_in, n_out = int(m.group(1)), int(m.group(2))
        layer = Layer("dense", "dense", ("input",), (n_in,), (n_out,), weight_params=n_in * n_out)
        return LayerGraph(ref, (1, 1, n_in), (layer,))
    from edgetpu_models.nas.latency.frontends import spec_graph

    return spec_graph(ref)


@dataclass(frozen=True)
class LogCheck:
    logged: LoggedModel
    predicted_cached: int
    predicted_streamed: int
    predicted_remaining: int
    basis: str
    """'graph' (the model's layer graph was rebuilt) or 'size-only' (parameters = the published .tflite size)."""


def check_logs(logs: Sequence[LoggedModel] | None = None, c: MemoryConstants = DEFAULT) -> list[LogCheck]:
    """Predicted against published numbers for every logged model. Co-compiled blocks are predicted together."""
    logs = list(load_logs() if logs is None else logs)
    out: list[LogCheck] = []
    i = 0
    while i < len(logs):
        group = logs[i:i + logs[i].blocks]
        i += len(group)
        if all(m.graph for m in group):
            plans = plan_models([log_graph(str(m.graph)) for m in group], c)
            out += [LogCheck(m, p.cached_bytes, p.streamed_bytes, p.remaining_bytes, "graph")
                    for m, p in zip(group, plans)]
            continue
        left = c.sram_bytes - c.reserved_bytes
        for m in group:
            size = m.input_size_bytes or (m.cached_bytes + m.streamed_bytes)
            cached = min(size, left)  # no layer sizes: the parameters count as divisible
            left -= cached
            out.append(LogCheck(m, cached, size - cached, 0, "size-only"))
        out[-len(group):] = [LogCheck(x.logged, x.predicted_cached, x.predicted_streamed, left, x.basis)
                             for x in out[-len(group):]]
    return out
