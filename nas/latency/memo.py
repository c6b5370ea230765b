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
"""Pieces kept per target (a block's entry is a few hundred bytes per layer)."""


class LayerEntry(NamedTuple):
    param_bytes: int
    act_bytes: int
    cached: LayerLatency
    """The row when the layer's parameters are cached on chip."""
    streamed: LayerLatency
    """The row when they are streamed over the host link."""


class Piece(NamedTuple):
    layers: tuple[LayerEntry, ...]
    output_shape: tuple[int, ...]


_MEMO: dict[EdgeTPUConstants, dict[Any, Piece]] = {}


def memory_constants(c: EdgeTPUConstants) -> MemoryConstants:
    """The memory model's constants for a target (its parameter SRAM), as `apm.memory_plan` uses them."""
    if c.param_cache_bytes == DEFAULT.sram_bytes:
        return DEFAULT
    return MemoryConstants(sram_bytes=c.param_cache_bytes, reserved_bytes=DEFAULT.reserved_bytes,
                           narrow_bytes=DEFAULT.narrow_bytes, channel_pad=DEFAULT.channel_pad,
                           channel_overhead_bytes=DEFAULT.channel_overhead_bytes)


def entries(layers: tuple[Layer, ...], c: EdgeTPUConstants) -> tuple[LayerEntry, ...]:
    """The memo entries of some layers as the chip runs them (`lowered`)."""
    mc = memory_constants(c)
    out = []
    for layer in lowered(LayerGraph("piece", (1, 1, 1), layers)).layers:
        pb = layer_param_bytes(layer, mc)
        out.append(LayerEntry(pb, layer_activation_bytes(layer), layer_row(layer, pb, 0, c),
                              layer_row(layer, 0, pb, c)))
    return tuple(out)


def _piece(memo: dict[Any, Piece], key: Any, shape: tuple[int, ...], padding: str, add: Any,
           c: EdgeTPUConstants) -> Piece:
    piece = memo.get(key)
    if piece is None:
        layers, out_shape = piece_layers(shape, padding, add)
        piece = Piece(entries(layers, c), out_shape)
        if len(memo) >= MAX_PIECES:
            memo.clear()
        memo[key] = piece
    return piece


def _add_head_softmax(wk: Any, arch: Arch, classes: int) -> None:
    """The head as `frontends.spec_graph` ends a classifier: `add_head` then a softmax."""
    add_head(wk, arch, True, classes)
    wk.layers.append(classifier_softmax(wk.shape))


def arch_entries(arch: Arch, c: EdgeTPUConstants, classes: int = 1000) -> tuple[list[LayerEntry], tuple[int, ...]]:
    """Every layer entry of the classifier graph of `arch`, in graph order, and its output shape."""
    memo = _MEMO.get(c)
    if memo is None:
        memo = _MEMO.setdefault(c, {})
    act, pad = arch.activation, arch.padding
    shape: tuple[int, ...] = (arch.resolution, arch.resolution, 3)
    piece = _piece(memo, ("stem", arch.stem, shape, act, pad), shape, pad, partial(add_stem, arch=arch), c)
    out = list(piece.layers)
    shape = piece.output_shape
    for b in arch.blocks:
        piece = _piece(memo, (b, shape, act, pad), shape, pad, partial(add_block, b=b, act=act), c)
        out += piece.layers
        shape = piece.output_shape
    key = ("head", arch.head_filters, arch.dropout, classes, shape, act, pad)
    piece = _piece(memo, key, shape, pad, partial(_add_head_softmax, arch=arch, classes=classes), c)
    out += piece.layers
    return out, piece.output_shape


def estimate_arch(arch: Arch, c: EdgeTPUConstants, target: str, classes: int = 1000) -> LatencyEstimate:
    """The memoised estimate of `arch`'s classifier on an Edge TPU target (equal to `cost_graph` of its graph)."""
    layer_entries, out_shape = arch_entries(arch, c, classes)
    peak = max((e.act_bytes for e in layer_entries), default=0)
    cached, _, _ = first_fit([e.param_bytes for e in layer_entries],
                             cache_budget(peak, memory_constants(c)))
    first, last = io_rows((arch.resolution, arch.resolution, 3), out_shape, c)
    rows = [first]
    rows += [e.streamed if e.param_bytes and not cb else e.cached for e, cb in zip(layer_entries, cached)]
    rows.append(last)
    on_chip = sum(cached)
    off_chip = sum(e.param_bytes for e in layer_entries) - on_chip
    return LatencyEstimate(sum(r.ms for r in rows), target, on_chip, off_chip, tuple(rows))


def clear() -> None:
    """Forgets every memoised piece (tests; a recalibrated target gets new constants, hence a new memo, anyway)."""
    _MEMO.clear()
