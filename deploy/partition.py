"""Cut an int8 .tflite into N segments for a pipeline of N Edge TPUs, without the hardware.

Coral's pipelining (`edgetpu_compiler --num_segments N`, pycoral's PipelinedModelRunner) runs segment i of every
input on Edge TPU i, so the pipeline delivers one result per slowest segment. Coral's profiling partitioner times
candidate cuts on real devices; this one costs them with the latency model (`nas.apm`), each segment alone on its
own chip, so each gets its own ~8 MiB parameter cache (`nas.memory`): a model that streams parameters on one chip can
cache them all on several.

Cuts are taken only where exactly one tensor crosses (between blocks, not inside a residual or an Inception branch),
so a segment has one input and one output and the segments chain exactly. Among those, dynamic programming picks the
cut points that minimise the slowest segment (ties: the smallest total).

The segment files are written with LiteRT's flatbuffer object API (`ai_edge_litert.tools.flatbuffer_utils`, no
TensorFlow import): the operators of the segment, the tensors and buffers they use (renumbered), the crossing tensor
as input/output; signatures are dropped (they name tensors of the whole model).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from edgetpu_models.errors import ModelFileError, PartitionError
from edgetpu_models.layer_graph import Layer, LayerGraph
from edgetpu_models.tflite_reader import TFLiteModel, read_tflite


@dataclass(frozen=True)
class SegmentEstimate:
    index: int
    first_op: int
    end_op: int
    """Operators [first_op, end_op) of the model."""
    input_tensor: str
    output_tensor: str
    latency_ms: float
    cached_bytes: int
    streamed_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "ops": [self.first_op, self.end_op], "input": self.input_tensor,
                "output": self.output_tensor, "latency_ms": self.latency_ms, "cached_bytes": self.cached_bytes,
                "streamed_bytes": self.streamed_bytes}


@dataclass(frozen=True)
class PartitionPlan:
    model: str
    target: str
    segments: tuple[SegmentEstimate, ...]
    single_ms: float
    """The whole model on one Edge TPU."""
    single_cached_bytes: int
    single_streamed_bytes: int

    @property
    def pipeline_ms(self) -> float:
        """Time between results of the pipeline in steady state: its slowest segment."""
        return max(s.latency_ms for s in self.segments)

    @property
    def latency_ms(self) -> float:
        """One input through every segment (first result)."""
        return sum(s.latency_ms for s in self.segments)

    @property
    def throughput_gain(self) -> float:
        return self.single_ms / self.pipeline_ms

    @property
    def cuts(self) -> tuple[int, ...]:
        return tuple(s.first_op for s in self.segments[1:])

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "single_ms": self.single_ms,
                "single_cached_bytes": self.single_cached_bytes, "single_streamed_bytes": self.single_streamed_bytes,
                "pipeline_ms": self.pipeline_ms, "latency_ms": self.latency_ms,
                "throughput_gain": self.throughput_gain, "segments": [s.to_dict() for s in self.segments]}


def _op_layers(m: TFLiteModel, graph: LayerGraph) -> list[Layer | None]:
    """The layer each operator became in `tflite_graph` (None for the host-side io quantize ops)."""
    graph_outputs = set(m.outputs)
    out: list[Layer | None] = []
    layers = iter(graph.layers)
    for op in m.operators:
        outs = [i for i in op.outputs if i >= 0]
        acts = [i for i in op.inputs if i >= 0 and not m.tensor(i).is_constant]
        io_quant = op.opcode == "QUANTIZE" and acts and (op.inputs[0] in m.inputs or op.outputs[0] in graph_outputs)
        out.append(None if not outs or io_quant else next(layers))
    if next(layers, None) is not None:
        raise ModelFileError(f"{m.source}: operators and layers do not line up")
    return out


def cut_points(m: TFLiteModel) -> dict[int, int]:
    """{k: tensor}: cutting before operator k leaves exactly one activation tensor crossing (0 < k < ops)."""
    ops = m.operators
    last_use: dict[int, int] = {}
    for op in ops:
        for i in op.inputs:
            if i >= 0 and not m.tensor(i).is_constant:
                last_use[i] = op.index
    for i in m.outputs:
        last_use[i] = len(ops)
    live: set[int] = set(m.inputs)
    cuts: dict[int, int] = {}
    for k, op in enumerate(ops):
        if k > 0:
            crossing = {t for t in live if last_use.get(t, -1) >= k}
            live = crossing
            if len(crossing) == 1:
                (t,) = crossing
                if t not in m.inputs:
                    cuts[k] = t
        live |= {i for i in op.outputs if i >= 0}
    return cuts


class _Coster:
    """Latency of op ranges [a, b) as a model of its own on one chip (cached per range)."""

    def __init__(self, m: TFLiteModel, graph: LayerGraph, target: str):
        from edgetpu_models.nas.latency.estimator import load_target

        self.m, self.graph = m, graph
        self.target = load_target(target)
        if self.target.kind != "edgetpu":
            raise PartitionError(f"--target {target}: expected an Edge TPU target (a pipeline of Edge TPUs)")
        self.op_layers = _op_layers(m, graph)
        self.cost = lru_cache(maxsize=None)(self._cost)

    def _cost(self, a: int, b: int) -> tuple[float, int, int]:
        from edgetpu_models.nas.latency.estimator import estimate_graph

        layers = tuple(x for x in self.op_layers[a:b] if x is not None)
        first = self.m.operators[a]
        in_t = next((i for i in first.inputs if i >= 0 and not self.m.tensor(i).is_constant), self.m.inputs[0])
        shape = tuple(self.m.tensor(in_t).shape[1:]) or (1,)
        if not layers:
            return 0.0, 0, 0
        sub = LayerGraph(f"{self.graph.name}[{a}:{b}]", shape, layers)  # type: ignore[arg-type]
        e = estimate_graph(sub, self.target)
        return e.latency_ms, e.on_chip_param_bytes, e.off_chip_param_bytes


def plan_partition(path: "str | os.PathLike[str]", segments: int, target: str = "coral-usb") -> PartitionPlan:
    """Cut points for `segments` Edge TPUs that minimise the slowest segment's predicted latency."""
    from edgetpu_models.nas.latency.frontends import tflite_graph

    path = os.fspath(path)
    if not isinstance(segments, int) or segments < 1:
        raise PartitionError(f"--segments: expected an integer >= 1, got {segments!r}")
    m = read_tflite(path)
    graph = tflite_graph(path)
    coster = _Coster(m, graph, target)
    cuts = cut_points(m)
    n_ops = len(m.operators)
    if len(cuts) < segments - 1:
        raise PartitionError(f"{path}: only {len(cuts)} single-tensor cut points, cannot make {segments} segments")
    points = [0] + sorted(cuts) + [n_ops]
    bounds = _best_bounds(points, segments, lambda a, b: coster.cost(a, b)[0])
    single_ms, single_cached, single_streamed = coster.cost(0, n_ops)
    segs = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        ms, cached, streamed = coster.cost(a, b)
        segs.append(SegmentEstimate(i, a, b, m.tensor(cuts[a]).name if a else m.tensor(m.inputs[0]).name,
                                    m.tensor(cuts[b]).name if b < n_ops else m.tensor(m.outputs[0]).name,
                                    ms, cached, streamed))
    return PartitionPlan(path, coster.target.name, tuple(segs), single_ms, single_cached, single_streamed)


def _best_bounds(points: Sequence[int], segments: int, cost: Any) -> list[int]:
    """Boundaries (op indices, first 0, last the op count) through `points` minimising (max cost, total cost)."""
    n = len(points)
    inf = (float("inf"), float("inf"))
    # best[s][j]: (slowest, total) covering points[0]..points[j] with s segments; back[s][j]: previous point index
    best = [[inf] * n for _ in range(segments + 1)]
    back = [[-1] * n for _ in range(segments + 1)]
    best[0][0] = (0.0, 0.0)
    for s in range(1, segments + 1):
        for j in range(1, n):
            for i in range(s - 1, j):
                if best[s - 1][i] == inf:
                    continue
                c = cost(points[i], points[j])
                cand = (max(best[s - 1][i][0], c), best[s - 1][i][1] + c)
                if cand < best[s][j]:
                    best[s][j], back[s][j] = cand, i
    bounds, j = [points[-1]], n - 1
    for s in range(segments, 0, -1):
        j = back[s][j]
        bounds.append(points[j])
    return bounds[::-1]


# ---------------------------------------------------------------------------------------------------------------------
# Writing the segment files

def _segment_model(model: Any, a: int, b: int, in_tensor: int | None, out_tensor: int | None) -> Any:
    """A copy of the ModelT with operators [a, b) only, `in_tensor`/`out_tensor` as its input/output (None: the
    model's own), unused tensors and buffers dropped and the rest renumbered."""
    seg = copy.copy(model)
    sg = copy.deepcopy(model.subgraphs[0])
    sg.operators = sg.operators[a:b]
    sg.inputs = list(model.subgraphs[0].inputs) if in_tensor is None else [in_tensor]
    sg.outputs = list(model.subgraphs[0].outputs) if out_tensor is None else [out_tensor]
    used: list[int] = []
    seen: set[int] = set()
    for t in list(sg.inputs) + [i for op in sg.operators for i in list(op.inputs) + list(op.outputs)
                                + list(op.intermediates if op.intermediates is not None else [])] + list(sg.outputs):
        if t >= 0 and t not in seen:
            seen.add(t)
            used.append(t)
    remap = {old: new for new, old in enumerate(used)}
    tensors = [copy.deepcopy(sg.tensors[t]) for t in used]
    buffers = [model.buffers[0]]
    buf_map = {0: 0}
    for t in tensors:
        if t.buffer not in buf_map:
            buf_map[t.buffer] = len(buffers)
            buffers.append(model.buffers[t.buffer])
        t.buffer = buf_map[t.buffer]
    metadata = []
    for md in model.metadata or []:
        md = copy.copy(md)
        if md.buffer not in buf_map:
            buf_map[md.buffer] = len(buffers)
            buffers.append(model.buffers[md.buffer])
        md.buffer = buf_map[md.buffer]
        metadata.append(md)
    for op in sg.operators:
        op.inputs = [remap[i] if i >= 0 else i for i in op.inputs]
        op.outputs = [remap[i] for i in op.outputs]
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = [remap[i] for i in op.intermediates]
    sg.inputs = [remap[i] for i in sg.inputs]
    sg.outputs = [remap[i] for i in sg.outputs]
    sg.tensors = tensors
    seg.subgraphs = [sg]
    seg.buffers = buffers
    seg.metadata = metadata or None
    seg.signatureDefs = None
    return seg


def segment_paths(path: str, out_dir: str, n: int) -> list[str]:
    """Coral's naming: MODEL_segment_I_of_N.tflite."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return [os.path.join(out_dir, f"{stem}_segment_{i}_of_{n}.tflite") for i in range(n)]


def check_segment_destination(model: str, out_dir: "str | os.PathLike[str] | None", segments: int,
                              force: bool = False) -> str:
    """The folder the segments go to (default: beside the model), checked before any work (`check_destination`)."""
    from edgetpu_models.io_utils import check_destination
    from edgetpu_models.sidecar import foreign_outputs

    out_dir = os.fspath(out_dir) if out_dir is not None else (os.path.dirname(os.path.abspath(model)) or ".")
    foreign = [f for p in segment_paths(model, out_dir, segments) for f in foreign_outputs(p)]
    check_destination(out_dir, folder=True, foreign=foreign, force=force)
    return out_dir


def write_segments(plan: PartitionPlan, out_dir: "str | os.PathLike[str] | None" = None,
                   force: bool = False) -> list[str]:
    """Writes one .tflite per segment of `plan` (atomically), each with its own sidecar (derived from the model's,
    so `classify`/`evaluate` read the segments wherever they are), and returns their paths, in pipeline order."""
    from ai_edge_litert.tools import flatbuffer_utils

    from edgetpu_models.io_utils import write_bytes_atomic
    from edgetpu_models.sidecar import derived_sidecar, write_sidecar

    n = len(plan.segments)
    out_dir = check_segment_destination(plan.model, out_dir, n, force)
    os.makedirs(out_dir, exist_ok=True)
    model = flatbuffer_utils.read_model(plan.model)
    m = read_tflite(plan.model)
    cuts = cut_points(m)
    paths = segment_paths(plan.model, out_dir, len(plan.segments))
    for seg, path in zip(plan.segments, paths):
        in_t = cuts[seg.first_op] if seg.first_op > 0 else None
        out_t = cuts[seg.end_op] if seg.end_op < len(m.operators) else None
        segment = _segment_model(model, seg.first_op, seg.end_op, in_t, out_t)
        data = bytes(flatbuffer_utils.convert_object_to_bytearray(segment))
        sidecar = derived_sidecar(plan.model, segment=f"{seg.index}/{n}")
        if sidecar is None:
            write_bytes_atomic(path, data)
        else:
            write_sidecar(path, sidecar, model_content=data)
    return paths


def format_plan(plan: PartitionPlan) -> str:
    """The table `edgetpu-models partition` prints."""
    from edgetpu_models.tables import format_table

    mib = 1024 * 1024
    rows = [[str(s.index), f"{s.first_op}-{s.end_op - 1}", s.input_tensor[-40:], f"{s.latency_ms:.2f}",
             f"{s.cached_bytes / mib:.2f}", f"{s.streamed_bytes / mib:.2f}"] for s in plan.segments]
    n = len(plan.segments)
    lines = [format_table(["segment", "ops", "input tensor", "ms", "cached MiB", "streamed MiB"], rows,
                          right=(3, 4, 5)),
             f"one Edge TPU: {plan.single_ms:.2f} ms/inference ({plan.single_cached_bytes / mib:.2f} MiB cached, "
             f"{plan.single_streamed_bytes / mib:.2f} MiB streamed)",
             f"{n} Edge TPUs, pipelined: one result every {plan.pipeline_ms:.2f} ms (slowest segment), "
             f"{1000 / plan.pipeline_ms:.1f} inferences/s vs {1000 / plan.single_ms:.1f}: x{plan.throughput_gain:.2f}"
             f" throughput; first result after {plan.latency_ms:.2f} ms"]
    return "\n".join(lines)
