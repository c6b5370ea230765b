"""On-chip memory as the Edge TPU compiler allots it: cached parameters, activations and the rest of the SRAM.

The compiler prints three numbers for every model ("On-chip memory used for caching model parameters", "... remaining
...", "Off-chip memory used for streaming uncached model parameters"). This module predicts them from a layer graph:

- Parameter bytes are counted in the chip's layout, not the .tflite's: output channels are padded to the 64 cells of
  a tile and every output channel carries 8 bytes of per-channel data (bias and requantisation). A Dense(256, 256)
  without bias is 4 x 64 x (256 + 8) = 67,584 bytes = 66.00 KiB, as the compiler reports (deploy/compiler_logs).
- The parameter cache is what is left of the SRAM after a fixed reserve (instructions, scratch; `reserved_bytes`)
  and after activations that do not fit the tiles' narrow memory (16 x 196,608 bytes = 3 MiB): the compiler then
  keeps them in the same wide SRAM, and the cache shrinks by that much. This is why a detector at high resolution
  gets 1-2 MiB of cache instead of ~7.9 MiB (google-coral/edgetpu#427, #572).
- Layers are cached whole, first fit in graph order; a layer that does not fit in what is left is streamed whole on
  every inference (a Dense(8192, 8192) caches 0 B and streams 64 MiB). Co-compiled models share the cache in the
  order given: later models get what the earlier ones left (#458, #518).

Activation working sets above the narrow memory also cost time: those bytes go through the wide memory instead of the
narrow one, at the wide memory's lower effective rate for activations (`nas.apm`, `spill_bytes`).

Pure Python; no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from edgetpu_models.layer_graph import WEIGHTED_OPS, Layer, LayerGraph, lowered, numel

MIB = 1024 * 1024


@dataclass(frozen=True)
class MemoryConstants:
    sram_bytes: int = 8 * MIB
    """Wide (parameter) SRAM of the chip."""
    reserved_bytes: int = 131072
    """Kept back from the parameter cache for instructions and scratch: a Dense(8192, 8192), whose activations are
    tiny, is reported with 7.88 MiB remaining and nothing cached (deploy/compiler_logs/libredgetpu-dense8192.txt)."""
    narrow_bytes: int = 16 * 196608
    """Tiles' narrow (activation) memory, 3 MiB (libedgetpu beagle_chip_structures.h)."""
    channel_pad: int = 64
    """Output channels are padded to the 64 cells of a tile."""
    channel_overhead_bytes: int = 8
    """Per output channel: int32 bias and int32 requantisation data."""


DEFAULT = MemoryConstants()


@dataclass(frozen=True)
class MemoryPlan:
    """What the compiler would print for one model (bytes), and the per-layer split (graph order)."""

    name: str
    cached_bytes: int
    streamed_bytes: int
    remaining_bytes: int
    """Cache left after this model (and, co-compiled, after every model before it)."""
    cache_budget_bytes: int
    """Cache this model could use: SRAM less the reserve, the activation spill, and earlier co-compiled models."""
    activation_peak_bytes: int
    spill_bytes: int
    """Activation bytes of the largest working set that do not fit the narrow memory."""
    layer_cached: tuple[int, ...]
    layer_streamed: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "cached_bytes": self.cached_bytes, "streamed_bytes": self.streamed_bytes,
                "remaining_bytes": self.remaining_bytes, "cache_budget_bytes": self.cache_budget_bytes,
                "activation_peak_bytes": self.activation_peak_bytes, "spill_bytes": self.spill_bytes}


def layer_param_bytes(layer: Layer, c: MemoryConstants = DEFAULT) -> int:
    """Bytes the compiled model stores for a layer's parameters, in the chip's padded layout."""
    if layer.op not in WEIGHTED_OPS:
        return max(layer.weight_params, 0)
    cout = layer.output_shape[-1]
    cin = layer.input_shape[-1]
    ka = layer.kernel_area
    per_channel = ka if layer.op == "depthwise_conv2d" else (cin if layer.op == "dense" else ka * cin)
    padded = c.channel_pad * -(-cout // c.channel_pad)
    return padded * (per_channel + c.channel_overhead_bytes)


def layer_activation_bytes(layer: Layer) -> int:
    """int8 bytes a layer holds at once: its input(s) and its output."""
    n_in = max(len(layer.inputs), 1) if layer.op in ("add", "mul", "concat") else 1
    if layer.op == "concat":
        return 2 * numel(layer.output_shape)
    return n_in * numel(layer.input_shape) + numel(layer.output_shape)


def spill_bytes(layer: Layer, c: MemoryConstants = DEFAULT) -> int:
    """Activation bytes of this layer that do not fit the narrow memory."""
    return max(0, layer_activation_bytes(layer) - c.narrow_bytes)


def activation_peak(graph: LayerGraph) -> int:
    return max((layer_activation_bytes(layer) for layer in graph.layers), default=0)


def cache_budget(peak: int, c: MemoryConstants = DEFAULT) -> int:
    """Parameter cache of a compile whose largest activation working set is `peak` bytes: the SRAM less the reserve
    and the activations that overflow the narrow memory."""
    return max(0, c.sram_bytes - c.reserved_bytes - max(0, peak - c.narrow_bytes))


def first_fit(param_bytes: Iterable[int], left: int) -> tuple[list[int], list[int], int]:
    """THE caching rule: whole layers, first fit in graph order; a layer that does not fit in what is left is streamed
    whole. Returns (cached per layer, streamed per layer, cache left)."""
    cached_l, streamed_l = [], []
    for pb in param_bytes:
        if pb <= left:
            left -= pb
            cached_l.append(pb)
            streamed_l.append(0)
        else:
            cached_l.append(0)
            streamed_l.append(pb)
    return cached_l, streamed_l, left


def plan_models(graphs: Sequence[LayerGraph], c: MemoryConstants = DEFAULT) -> list[MemoryPlan]:
    """Memory plans of models co-compiled in this order (one graph: a plain compile). Plans are per layer of each
    graph as the chip runs it (`layer_graph.lowered`: grouped convs split per group), which is what the APM costs."""
    graphs = [lowered(g) for g in graphs]
    peaks = [activation_peak(g) for g in graphs]
    left = cache_budget(max(peaks, default=0), c)
    staged = []
    for g, peak in zip(graphs, peaks):
        budget = left
        cached_l, streamed_l, left = first_fit((layer_param_bytes(layer, c) for layer in g.layers), left)
        staged.append((g, peak, budget, cached_l, streamed_l))
    return [MemoryPlan(g.name, sum(cl), sum(sl), left, budget, peak, max(0, peak - c.narrow_bytes), tuple(cl),
                       tuple(sl)) for g, peak, budget, cl, sl in staged]


def plan_model(graph: LayerGraph, c: MemoryConstants = DEFAULT, cache_bytes: int | None = None) -> MemoryPlan:
    """Memory plan of one model; `cache_bytes` overrides the SRAM size (e.g. a target's param_cache_bytes)."""
    if cache_bytes is not None and cache_bytes != c.sram_bytes:
        c = MemoryConstants(sram_bytes=cache_bytes, reserved_bytes=c.reserved_bytes, narrow_bytes=c.narrow_bytes,
                            channel_pad=c.channel_pad, channel_overhead_bytes=c.channel_overhead_bytes)
    return plan_models([graph], c)[0]
