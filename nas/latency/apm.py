"""Analytical performance model (APM) of the Edge TPU: a roofline with extra ceilings, costed layer by layer.

Per layer the model takes the largest of the on-chip ceilings, adds the time to stream parameters that are not
cached and a fixed per-layer overhead:

- compute: MACs over the effective rate of the 16 tiles x 64 cells x 4-MAC array. The rate is lost to how the layer
  maps onto it: output feature-map positions are spread over a 4 x 4 grid of tiles (small maps leave tiles idle),
  output channels over the 64 cells of a tile (padded to a multiple of 64), and each output's reduction (k*k*Cin)
  over the 4 MAC lanes of a cell (padded to a multiple of 4), plus a fixed drain per output, so shallow reductions
  use the array poorly. A depthwise convolution reduces over no input channels: one lane, k*k cycles. Element-wise
  ops (add, mul, concat, pad, pooling) run on the cells' vector path at a fitted fraction of one element per cell
  per cycle.
- activations: bytes read and written in the tiles' narrow memory, over its bandwidth.
- weights: parameter bytes read from the on-chip parameter cache.
- param_stream: parameters that did not fit in the ~8 MiB cache are streamed over the host link on every inference.
  A layer cannot start before its parameters have arrived, so link time adds to the layer's on-chip time (the bound
  reported is param_stream when it is the larger part).

Input and output tensors cross the host link too (plus a fixed invoke overhead); they are reported as two extra rows
so the rows always add up to the total. The free constants (marked `calibrated` in the target files) are fitted to
measured latencies by `edgetpu_models.nas.latency.calibrate`; the rest are the chip's published structure.

Pure Python on purpose: it is the NAS hot path and must stay TF-free and well under a millisecond per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from edgetpu_models.errors import TargetError
from edgetpu_models.layer_graph import WEIGHTED_OPS, Layer, LayerGraph, Op, lowered, numel
from edgetpu_models.nas.latency.types import LayerLatency

if TYPE_CHECKING:
    from edgetpu_models.nas.latency.memory import MemoryPlan

CALIBRATED = ("compute_efficiency", "vector_efficiency", "act_bytes_per_cycle", "link_mb_per_s", "layer_overhead_us",
              "invoke_overhead_us", "weight_bytes_per_cycle", "transfer_overhead_us")
"""The free constants fitted to measurements; every other field is a hardware fact or a written-down assumption."""

FREE_OPS = frozenset({Op.RESHAPE, Op.DROPOUT})
"""Ops the compiler folds away: no data moves, no instruction is issued."""


@dataclass(frozen=True)
class EdgeTPUConstants:
    clock_mhz: float
    tiles: int = 16
    tile_grid: int = 4
    """Tiles form a tile_grid x tile_grid array; output positions are split over it."""
    cells_per_tile: int = 64
    macs_per_cell: int = 4
    depthwise_lanes: int = 1
    """MAC lanes per cell a depthwise convolution can use (it has no input-channel reduction to spread over lanes)."""
    drain_cycles: int = 64
    """Cycles to move a finished output out of a tile's 64-cell chain; paid once per output, however long its
    reduction (k*k*Cin / 4 cycles). Shallow reductions (1x1 or few input channels, depthwise) therefore use the
    array poorly, and a larger kernel costs less than its MAC ratio there (the paper's Fig. 4)."""
    param_cache_bytes: int = 8 * 1024 * 1024
    weight_bytes_per_cycle: float = 256.0
    """Bandwidth from the parameter SRAM to the cells. Weights travel once per spatial pass (`weight_passes`), so this
    bounds full convolutions at high resolution; fitted (calibrated) on the Coral targets."""
    # calibrated
    compute_efficiency: float = 0.5
    """Fraction of the mapped MAC rate that convolutions sustain."""
    vector_efficiency: float = 1.0
    """Fraction of one element per cell per cycle that element-wise ops (add, mul, concat, pad, pooling) sustain."""
    act_bytes_per_cycle: float = 32.0
    layer_overhead_us: float = 10.0
    # the host link (target file section `link:`): does not scale with the chip clock
    link_mb_per_s: float = 400.0
    """Sustained bandwidth of the host link for parameters streamed at every inference and for the input/output."""
    transfer_overhead_us: float = 1e-3
    """Fixed cost of one transfer over the link (USB bulk / PCIe DMA set-up and completion, handled by the host):
    paid by the input, the output and every layer whose parameters are streamed."""
    # the host (target file section `host:`)
    invoke_overhead_us: float = 300.0
    """Host CPU time per inference in the driver (set-up, synchronisation); scales with the host CPU, not the chip."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> "EdgeTPUConstants":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TargetError(f"{where}: unknown constant(s) {', '.join(unknown)} "
                              f"(allowed: {', '.join(sorted(known))})")
        if "clock_mhz" not in data:
            raise TargetError(f"{where}: clock_mhz: missing (expected the core clock in MHz)")
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise TargetError(f"{where}: {key}: expected a number > 0, got {value!r}")
        return cls(**dict(data))

    def with_values(self, **values: float) -> "EdgeTPUConstants":
        return replace(self, **values)

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.tiles * self.cells_per_tile * self.macs_per_cell


def param_bytes(layer: Layer) -> int:
    """Bytes of parameters an int8 model stores for a layer: int8 kernel plus an int32 bias per output channel."""
    n = layer.inference_params
    if layer.op in WEIGHTED_OPS and n > 0:
        return n + 3 * layer.out_channels
    return max(n, 0)


def _weighted_terms(layer: Layer, c: EdgeTPUConstants, in_elems: int, out_elems: int) -> tuple[int, float, int, int]:
    """`layer_terms` of a convolution or dense layer: on the MAC array."""
    op, out_shape, in_shape = layer.op, layer.output_shape, layer.input_shape
    cells = c.cells_per_tile
    cout, cin = out_shape[-1], in_shape[-1]
    ka = layer.kernel_area
    if op == Op.CONV2D:
        macs, kparams = out_elems * ka * cin, ka * cin * cout
        reduction: float = -(-(ka * cin) // c.macs_per_cell)
    elif op == Op.DEPTHWISE_CONV2D:  # no reduction over input channels: k*k taps on one lane
        macs, kparams = out_elems * ka, ka * cin
        reduction = ka / c.depthwise_lanes
    else:
        macs = kparams = cin * cout
        reduction = -(-cin // c.macs_per_cell)
    if len(out_shape) == 3:  # positions over the tile grid, output channels over the cells of a tile
        grid = c.tile_grid
        rounds = -(-out_shape[0] // grid) * -(-out_shape[1] // grid) * -(-cout // cells)
    else:  # a vector (dense): output channels over every cell of every tile
        rounds = -(-cout // (c.tiles * cells))
    wp = layer.weight_params
    pbytes = (wp if wp >= 0 else kparams + cout) + 3 * cout
    return macs, rounds * (reduction + c.drain_cycles), in_elems + out_elems, pbytes


def layer_terms(layer: Layer, c: EdgeTPUConstants) -> tuple[int, float, int, int]:
    """(MACs, compute cycles at efficiency 1, activation bytes moved, parameter bytes) of one layer: cycles on the MAC
    array for convolutions and dense layers (MACs > 0), cycles on the cells' vector path for other ops. These
    depend only on the chip's structure, not on the calibrated constants. (Inlined arithmetic: NAS hot path.)"""
    op = layer.op
    out_elems = numel(layer.output_shape)
    in_elems = numel(layer.input_shape)
    if op in WEIGHTED_OPS:
        return _weighted_terms(layer, c, in_elems, out_elems)
    if op == Op.MAX_POOL2D or op == Op.AVG_POOL2D:
        work = out_elems * layer.kernel_area
    elif op == Op.GLOBAL_AVG_POOL or op == Op.GLOBAL_MAX_POOL:
        work = in_elems
    elif op == Op.SOFTMAX:
        work = 4 * out_elems
    else:
        work = out_elems
    pbytes = 0
    if op == Op.CONCAT:
        act_bytes = 2 * out_elems
    elif op == Op.ADD or op == Op.MUL:
        act_bytes = len(layer.inputs) * in_elems + out_elems
        pbytes = max(layer.weight_params, 0)
    else:
        act_bytes = in_elems + out_elems
    return 0, work / (c.tiles * c.cells_per_tile), act_bytes, pbytes


def weight_passes(layer: Layer, c: EdgeTPUConstants) -> int:
    """How many extra times a convolution's cached weights travel from the parameter SRAM to the cells. Output
    positions are spread over the tile grid and each tile works through its positions one round at a time, all
    tiles with the same weights (broadcast); a cell holds only the current round's reduction, so the weights are
    fetched again for every round after the first (the first load overlaps the previous layer). At high resolution
    this traffic, not the MACs, bounds a full convolution with many weights: the fused blocks of EfficientNet-EdgeTPU
    at 112-150 px. Dense layers and 1-position maps load their weights once."""
    shape = layer.output_shape
    if layer.op not in (Op.CONV2D, Op.DEPTHWISE_CONV2D) or len(shape) != 3:
        return 0
    grid = c.tile_grid
    return -(-shape[0] // grid) * -(-shape[1] // grid) - 1


def memory_plan(graph: LayerGraph, c: EdgeTPUConstants, cache_bytes: int | None = None) -> "MemoryPlan":
    """Which parameters the compiler caches and which it streams (`nas.memory`): the target's SRAM less the reserve
    and the activations that overflow the narrow memory; whole layers, first fit in graph order, in the chip's padded
    layout. `cache_bytes` replaces the SRAM size (co-compiled models get what earlier ones left)."""
    from edgetpu_models.nas.latency.memory import plan_model

    return plan_model(graph, cache_bytes=c.param_cache_bytes if cache_bytes is None else cache_bytes)


def layer_parts(compute_cycles: Any, vector_cycles: Any, act_bytes: Any, weight_bytes: Any, streamed: Any,
                c: EdgeTPUConstants) -> tuple[Any, Any, Any, Any]:
    """THE per-layer Edge TPU cost, in ms, as its four parts: MAC array + vector path, activation traffic, cached
    weight traffic (all three on chip: they scale with the clock) and the parameter stream over the host link (does
    not). Works on floats (one layer, `layer_row`) and on numpy arrays (every layer of a graph, `terms_latency_ms`)."""
    cycle_ms = 1e-3 / c.clock_mhz
    return (compute_cycles * (cycle_ms / c.compute_efficiency) + vector_cycles * (cycle_ms / c.vector_efficiency),
            act_bytes * (cycle_ms / c.act_bytes_per_cycle),
            weight_bytes * (cycle_ms / c.weight_bytes_per_cycle),
            streamed / (c.link_mb_per_s * 1e3) + (streamed > 0) * (c.transfer_overhead_us * 1e-3))


def layer_ms(parts: tuple[Any, Any, Any, Any], c: EdgeTPUConstants, maximum: Any = max) -> Any:
    """A layer's time from its parts: the largest on-chip ceiling, plus the stream (a layer cannot start before its
    parameters have arrived), plus the fixed per-layer overhead. `maximum`: max for floats, numpy.maximum for arrays."""
    return maximum(maximum(parts[0], parts[1]), parts[2]) + parts[3] + c.layer_overhead_us * 1e-3


_BOUNDS = ("compute", "activations", "weights", "param_stream")


def layer_row(layer: Layer, cached: int, streamed: int, c: EdgeTPUConstants) -> LayerLatency:
    """One layer's row: its cost (`layer_parts`, `layer_ms`) and what bounds it."""
    if layer.op in FREE_OPS:
        return LayerLatency(layer.name, layer.op, layer.output_shape, 0, 0.0, "free")
    macs, cycles, act_bytes, _ = layer_terms(layer, c)
    weighted = layer.op in WEIGHTED_OPS
    parts = layer_parts(cycles if weighted else 0.0, 0.0 if weighted else cycles, act_bytes,
                        cached * weight_passes(layer, c), streamed, c)
    i = max(range(4), key=parts.__getitem__)
    bound = _BOUNDS[i] if parts[i] >= c.layer_overhead_us * 1e-3 else "overhead"
    return LayerLatency(layer.name, layer.op, layer.output_shape, macs, layer_ms(parts, c), bound)


def io_rows(input_shape: tuple[int, ...], output_shape: tuple[int, ...],
            c: EdgeTPUConstants) -> tuple[LayerLatency, LayerLatency]:
    """The input and output transfers over the host link (one transfer each), the host's invoke with the input."""
    per_byte = 1.0 / (c.link_mb_per_s * 1e3)
    transfer = c.transfer_overhead_us * 1e-3
    return (LayerLatency("<input>", "transfer", tuple(input_shape), 0,
                         c.invoke_overhead_us * 1e-3 + transfer + numel(input_shape) * per_byte, "host_link"),
            LayerLatency("<output>", "transfer", tuple(output_shape), 0, transfer + numel(output_shape) * per_byte,
                         "host_link"))


def cost_graph(graph: LayerGraph, c: EdgeTPUConstants,
               plan: "MemoryPlan | None" = None) -> tuple[list[LayerLatency], int, int]:
    """Per-layer costs (transfer rows first and last), on-chip and off-chip parameter bytes. `plan`: the cache
    allotment to cost with (default: this model alone on the chip; co-compiled models pass theirs)."""
    graph = lowered(graph)  # grouped convs as split + per-group convs + concat, explicit pads: what the chip runs
    plan = plan or memory_plan(graph, c)
    first, last = io_rows(graph.input_shape, graph.output_shape, c)
    rows = [first]
    rows += [layer_row(layer, cached, streamed, c)
             for layer, cached, streamed in zip(graph.layers, plan.layer_cached, plan.layer_streamed)]
    rows.append(last)
    return rows, plan.cached_bytes, plan.streamed_bytes


# ---------------------------------------------------------------------------------------------------------------------
# Vectorised form for calibration: the fit evaluates the same model thousands of times over fixed graphs.

class GraphTerms(NamedTuple):
    """The constant-independent part of a graph's cost, one array entry per costed layer (see `terms_latency_ms`;
    `cost_graph` is the reference and the tests check that both agree)."""

    compute_cycles: Any      # MAC array, at compute_efficiency 1
    vector_cycles: Any       # vector path, at vector_efficiency 1
    act_bytes: Any
    cached_bytes: Any
    streamed_bytes: Any
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    on_chip: int
    off_chip: int


def graph_terms(graph: LayerGraph, c: EdgeTPUConstants) -> GraphTerms:
    import numpy as np

    graph = lowered(graph)
    comp, vec, act, cached_l, stream = [], [], [], [], []
    plan = memory_plan(graph, c)
    for layer, cached, streamed in zip(graph.layers, plan.layer_cached, plan.layer_streamed):
        if layer.op in FREE_OPS:
            continue
        _, cycles, act_bytes, _ = layer_terms(layer, c)
        conv = layer.op in WEIGHTED_OPS
        comp.append(cycles if conv else 0.0)
        vec.append(0.0 if conv else cycles)
        act.append(act_bytes)
        cached_l.append(cached * weight_passes(layer, c))
        stream.append(streamed)
    return GraphTerms(np.array(comp, float), np.array(vec, float), np.array(act, float), np.array(cached_l, float),
                      np.array(stream, float), tuple(graph.input_shape), tuple(graph.output_shape),
                      int(sum(cached_l)), int(sum(stream)))


def terms_latency_ms(t: GraphTerms, c: EdgeTPUConstants) -> float:
    """`cost_graph`'s total from precomputed terms: `layer_parts` and `layer_ms` over arrays (the fit's inner loop)."""
    import numpy as np

    per_layer = layer_ms(layer_parts(t.compute_cycles, t.vector_cycles, t.act_bytes, t.cached_bytes,
                                     t.streamed_bytes, c), c, np.maximum)
    first, last = io_rows(t.input_shape, t.output_shape, c)
    return float(first.ms + per_layer.sum() + last.ms)
