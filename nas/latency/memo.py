"""Memoised Edge TPU estimates from a spec: a search that changes one block pays for that block only.

An estimate is the sum of per-layer rows (`apm.layer_row`), and a layer's row depends only on the layer and on whether
the memory plan caches or streams its parameters. So the graph is built and costed piece by piece (stem, each block,
head: `layer_graph.piece_layers`), and each piece is memoised, per target, on what determines its layers: the block's
arguments (its name included, so the rows carry the right names), its input shape, the activation and padding. A piece
stores, per layer, its parameter bytes and activation working set in the chip's layout (for the memory plan) and its
two possible rows (parameters cached, parameters streamed). An estimate is then: resolve the spec, look the pieces up,
run the memory plan's first fit over the stored byte counts (`memory.first_fit`, the same rule as the uncached path)
and pick each layer's row. The rows, their order and their sum are those of `apm.cost_graph` on `spec_graph`: a
memoised estimate equals the uncached one to the last bit (tests/test_latency_apm.py checks it).

The memo is bounded (`MAX_PIECES` per target; cleared when full) and safe to share between threads (a race can only
compute the same piece twice).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

from edgetpu_models.layer_graph import Layer, LayerGraph, add_block, add_head, add_stem, lowered, piece_layers
from edgetpu_models.nas.latency.apm import EdgeTPUConstants, io_rows, layer_row
from edgetpu_models.nas.latency.frontends import classifier_softmax
from edgetpu_models.nas.latency.memory import (
    DEFAULT,
    MemoryConstants,
    cache_budget,
    first_fit,
    layer_activation_bytes,
    layer_param_bytes,
)
from edgetpu_models.nas.latency.types import LatencyEstimate, LayerLatency
from edgetpu_models.spec import Arch

MAX_PIECES = 200_000
"""Pieces and layer costs kept per target (a piece is a few hundred bytes per layer); cleared when full."""


class LayerEntry(NamedTuple):
    """One layer of a memoised piece: what the memory plan needs and its two possible costs."""

    suffix: str
    """The layer's name after its block's name (the block's name is not part of the memo key)."""
    op: str
    output_shape: tuple[int, ...]
    macs: int
    param_bytes: int
    act_bytes: int
    cached: tuple[float, str]
    """(ms, bound) when the layer's parameters are cached on chip."""
    streamed: tuple[float, str]
    """(ms, bound) when they are streamed over the host link."""


class Piece(NamedTuple):
    layers: tuple[LayerEntry, ...]
    output_shape: tuple[int, ...]
    param_bytes: tuple[int, ...]
    act_peak: int
    named: dict[Any, tuple[LayerLatency, ...]]
    """Rows per name prefix (block name) they were asked for: with every parameter cached (the common case), key the
    prefix; with some streamed, key (prefix, cached bytes per layer)."""


_MEMO: dict[EdgeTPUConstants, dict[Any, Any]] = {}


def memory_constants(c: EdgeTPUConstants) -> MemoryConstants:
    """The memory model's constants for a target (its parameter SRAM), as `apm.memory_plan` uses them."""
    if c.param_cache_bytes == DEFAULT.sram_bytes:
        return DEFAULT
    return MemoryConstants(sram_bytes=c.param_cache_bytes, reserved_bytes=DEFAULT.reserved_bytes,
                           narrow_bytes=DEFAULT.narrow_bytes, channel_pad=DEFAULT.channel_pad,
                           channel_overhead_bytes=DEFAULT.channel_overhead_bytes)


def layer_signature(layer: Layer) -> tuple[Any, ...]:
    """Everything of a layer its cost and memory bytes depend on (not its name, block or rates)."""
    return (layer.op, layer.input_shape, layer.output_shape, layer.kernel, layer.kernel_hw, layer.stride,
            layer.groups, layer.padding, layer.weight_params, len(layer.inputs))


def _layer_costs(memo: dict[Any, Any], layer: Layer, c: EdgeTPUConstants) -> tuple[Any, ...]:
    """(macs, param bytes, activation bytes, cached (ms, bound), streamed (ms, bound)), memoised on the signature."""
    key = ("layer", layer_signature(layer))
    costs = memo.get(key)
    if costs is None:
        mc = memory_constants(c)
        pb = layer_param_bytes(layer, mc)
        rc, rs = layer_row(layer, pb, 0, c), layer_row(layer, 0, pb, c)
        costs = (rc.macs, pb, layer_activation_bytes(layer), (rc.ms, rc.bound), (rs.ms, rs.bound))
        memo[key] = costs
    return costs


def entries(memo: dict[Any, Any], layers: tuple[Layer, ...], prefix: str,
            c: EdgeTPUConstants) -> tuple[LayerEntry, ...]:
    """The memo entries of a piece's layers as the chip runs them (`lowered`)."""
    out = []
    for layer in lowered(LayerGraph("piece", (1, 1, 1), layers)).layers:
        macs, pb, act, cached, streamed = _layer_costs(memo, layer, c)
        out.append(LayerEntry(layer.name[len(prefix):], layer.op, layer.output_shape, macs, pb, act, cached,
                              streamed))
    return tuple(out)


def _piece(memo: dict[Any, Any], key: Any, prefix: str, shape: tuple[int, ...], padding: str, add: Any,
           c: EdgeTPUConstants) -> Piece:
    piece = memo.get(key)
    if piece is None:
        layers, out_shape = piece_layers(shape, padding, add)
        es = entries(memo, layers, prefix, c)
        piece = Piece(es, out_shape, tuple(e.param_bytes for e in es), max((e.act_bytes for e in es), default=0), {})
        if len(memo) >= MAX_PIECES:
            memo.clear()
        memo[key] = piece
    return piece


def _add_head_softmax(wk: Any, arch: Arch, classes: int) -> None:
    """The head as `frontends.spec_graph` ends a classifier: `add_head` then a softmax."""
    add_head(wk, arch, True, classes)
    wk.layers.append(classifier_softmax(wk.shape))


def arch_pieces(arch: Arch, c: EdgeTPUConstants,
                classes: int = 1000) -> tuple[list[tuple[str, Piece]], tuple[int, ...]]:
    """The pieces of the classifier graph of `arch` (stem, blocks, head), each with its name prefix, in graph order,
    and the graph's output shape. A block's key is what its layers depend on: not its name or drop-connect rate."""
    memo = _MEMO.get(c)
    if memo is None:
        memo = _MEMO.setdefault(c, {})
    act, pad = arch.activation, arch.padding
    shape: tuple[int, ...] = (arch.resolution, arch.resolution, 3)
    piece = _piece(memo, ("stem", arch.stem, shape, act, pad), "", shape, pad, partial(add_stem, arch=arch), c)
    out = [("", piece)]
    shape = piece.output_shape
    for b in arch.blocks:
        key = (b.block, b.kernel, b.stride, b.input_filters, b.expand_filters, b.output_filters, b.residual, b.groups,
               shape, act, pad)
        piece = memo.get(key) or _piece(memo, key, b.name, shape, pad, partial(add_block, b=b, act=act), c)
        out.append((b.name, piece))
        shape = piece.output_shape
    key = ("head", arch.head_filters, arch.dropout, classes, shape, act, pad)
    piece = _piece(memo, key, "", shape, pad, partial(_add_head_softmax, arch=arch, classes=classes), c)
    out.append(("", piece))
    return out, piece.output_shape


def estimate_arch(arch: Arch, c: EdgeTPUConstants, target: str, classes: int = 1000) -> LatencyEstimate:
    """The memoised estimate of `arch`'s classifier on an Edge TPU target (equal to `cost_graph` of its graph)."""
    pieces, out_shape = arch_pieces(arch, c, classes)
    pbytes: list[int] = []
    for _, piece in pieces:
        pbytes += piece.param_bytes
    peak = max(piece.act_peak for _, piece in pieces)
    total = sum(pbytes)
    budget = cache_budget(peak, memory_constants(c))
    # first fit caches every layer when they all fit (most searched models): no layer-by-layer plan is needed then
    cached = pbytes if total <= budget else first_fit(pbytes, budget)[0]
    first, last = io_rows((arch.resolution, arch.resolution, 3), out_shape, c)
    rows = [first]
    i = 0
    for prefix, piece in pieces:
        k = len(piece.layers)
        part = None if cached is pbytes else tuple(cached[i:i + k])
        key = prefix if part is None or part == piece.param_bytes else (prefix, part)  # rows of this caching
        named = piece.named.get(key)
        if named is None:
            if len(piece.named) >= 256:
                piece.named.clear()
            named = piece.named[key] = tuple(_rows(prefix, piece.layers, piece.param_bytes if part is None else part))
        rows += named
        i += k
    rows.append(last)
    on_chip = total if cached is pbytes else sum(cached)
    return LatencyEstimate(sum([r.ms for r in rows]), target, on_chip, total - on_chip, tuple(rows))


def _rows(prefix: str, layers: tuple[LayerEntry, ...], cached: Any) -> list[LayerLatency]:
    """The rows of a piece's layers, each the cached or the streamed cost as the memory plan decided."""
    out = []
    for e, cb in zip(layers, cached):
        ms, bound = e.streamed if e.param_bytes and not cb else e.cached
        out.append(LayerLatency(prefix + e.suffix, e.op, e.output_shape, e.macs, ms, bound))
    return out


def clear() -> None:
    """Forgets every memoised piece (tests; a recalibrated target gets new constants, hence a new memo, anyway)."""
    _MEMO.clear()
