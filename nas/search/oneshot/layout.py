"""The super-network's layout and the per-architecture settings of its blocks, read from a search space (TF-free).

A *position* is one block slot of the super-network: slot `i` of the space, repeat `j`, for every repeat any point
can have (`slot.repeats + max(repeats_delta)`). Each position holds the largest tensors any point needs there
(`in_width`, `expand_width`, `out_width`, `kernel`); a point uses a corner of them. The settings of a point at each
position (`BlockChoice`) are not worked out here a second time: they come from the point's decoded spec, resolved by
`edgetpu_models.spec.resolve` (the same expansion widths, identity-skip and group rules the builder uses), laid onto
the positions in order. So the super-network computes exactly the network the builder builds for that spec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from edgetpu_models.nas.search.space import Point, SearchSpace, slot_filters, whole_groups
from edgetpu_models.spec import BlockArgs, Spec, Variant, make_divisible, resolve, round_filters

BRANCHES = ("ibn", "ibn_e1", "fused_ibn", "fused_ibn_e1")
"""Block types with their own weights: a depthwise kernel of an expanded tensor and a full k x k convolution are
different operators, so they do not share weights (TuNAS keeps separate weights per operation too). Within a branch,
kernel sizes share one largest kernel (a 3x3 is its centre), and widths share one largest tensor (a narrower choice
is its first channels)."""


@dataclass(frozen=True)
class Position:
    slot: int
    repeat: int
    stride: int
    in_width: int        # channels of the incoming super-network tensor
    expand_width: int    # largest expansion width any point uses here
    out_width: int       # channels of the outgoing super-network tensor (running maximum: a skipped block pads)
    kernel: int          # largest kernel
    kernels: tuple[int, ...]  # the kernel sizes a point may choose here
    branches: tuple[str, ...]
    optional: bool       # some point leaves this block out
    grouped: bool        # some point groups the fused expansion here


@dataclass(frozen=True)
class Layout:
    """The positions of a space at one width, plus the fixed stem and head widths."""

    stem_width: int
    head_width: int
    positions: tuple[Position, ...]
    width: float
    resolution: int


@dataclass(frozen=True)
class BlockChoice:
    """What one point runs at one position (None fields: the block is left out)."""

    active: bool
    branch: str | None = None
    kernel: int = 0
    in_width: int = 0
    expand_width: int = 0
    out_width: int = 0
    residual: bool = False
    groups: int = 1
    name: str = ""       # the child's block name (blocks_<stage>_<block>), for slicing weights


def search_variant(spec: Spec, width: float, resolution: int) -> Spec:
    """The network the super-network trains for `spec`: its widths scaled by `width` (as a variant's width scales
    them), resolution `resolution`, depth 1 (positions are blocks). Written out as a spec of its own (scaled stages,
    width 1), so that a grouped stage's group size is scaled with its widths (the same number of groups as at full
    size) and a group size that no longer splits the scaled widths decodes to a full convolution, as `decode` does
    at full size."""
    scale = lambda f: None if not f else round_filters(f, width)
    stages = tuple(dataclasses.replace(st, filters=scale(st.filters), expansion_input=scale(st.expansion_input),
                                       group_size=scale(st.group_size)) for st in spec.stages)
    stem = dataclasses.replace(spec.stem, filters=scale(spec.stem.filters))
    head = dataclasses.replace(spec.head, filters=scale(spec.head.filters) if spec.head.scaled else spec.head.filters)
    return dataclasses.replace(spec, stem=stem, head=head, stages=tuple(whole_groups(stages, stem.filters)),
                               variants={"oneshot": Variant(width=1.0, depth=1.0, resolution=resolution,
                                                            dropout=spec.dropout)},
                               default_variant="oneshot")


def make_layout(space: SearchSpace, width: float = 1.0, resolution: int = 224) -> Layout:
    template = space.template()
    stem = round_filters(template.stem.filters, width)
    head = round_filters(template.head.filters, width if template.head.scaled else 1.0)
    positions: list[Position] = []
    running = stem
    for i, slot in enumerate(space.slots):
        ch = slot.choices
        out_max = max(round_filters(slot_filters(slot.filters, m), width) for m in ch["width_multiplier"])
        exps = [e for e in ch["expansion"] if e != 1]
        blocks = ch["block"]
        branches = tuple(b for b in BRANCHES if b.split("_e1")[0] in blocks
                         and ((b.endswith("_e1") and 1 in ch["expansion"]) or (not b.endswith("_e1") and exps)))
        for j in range(slot.repeats + max(ch["repeats_delta"])):
            base = max(running, out_max) if j == 0 and "output" in ch.get("expansion_from", ()) else running
            expand = make_divisible(base * max(exps)) if exps else running
            out_width = max(running, out_max)
            optional = j >= slot.repeats + min(ch["repeats_delta"])
            grouped = any(g for g in ch.get("group_size", ())) and "fused_ibn" in blocks
            positions.append(Position(i, j, slot.stride if j == 0 else 1, running, expand, out_width,
                                      max(ch["kernel"]), tuple(sorted(ch["kernel"])), branches, optional, grouped))
            running = out_width
    return Layout(stem, head, tuple(positions), width, resolution)


def child_spec(space: SearchSpace, point: Sequence[int], name: str | None = None) -> Spec:
    """The spec `nas search` writes for a point (template's variants, full size)."""
    return space.decode(point, name=name)


def block_choices(space: SearchSpace, layout: Layout, point: Sequence[int]) -> list[BlockChoice]:
    """The point's block at every position, from its resolved spec (`resolve` at the layout's width)."""
    spec = search_variant(child_spec(space, point), layout.width, layout.resolution)
    blocks = list(resolve(spec).blocks)
    reps = [0 if st is None else st.repeats for st in space.slot_stages(point)]
    out: list[BlockChoice] = []
    for pos in layout.positions:
        if pos.repeat >= reps[pos.slot]:
            out.append(BlockChoice(active=False))
            continue
        out.append(_choice(blocks.pop(0)))
    assert not blocks, "decoded blocks and super-network positions disagree"
    return out


def _choice(b: BlockArgs) -> BlockChoice:
    expands = b.expand_filters != b.input_filters
    branch = b.block if expands else f"{b.block}_e1"
    return BlockChoice(True, branch, b.kernel, b.input_filters, b.expand_filters, b.output_filters, b.residual,
                       b.groups, b.name)


def widest(space: SearchSpace, point: Sequence[int]) -> Point:
    """The point with every width decision (width multiplier, expansion) at its largest value: TuNAS's "all filters
    enabled" warm-up sample."""
    out = list(point)
    for k, d in enumerate(space.decisions):
        if d.key in ("width_multiplier", "expansion"):
            out[k] = max(range(len(d.choices)), key=lambda c: d.choices[c])
    return tuple(out)


def op_decisions(space: SearchSpace) -> list[int]:
    """Indices of the decisions that pick an operation (block type, kernel): averaged in TuNAS's "all ops" warm-up."""
    return [k for k, d in enumerate(space.decisions) if d.key in ("block", "kernel")]


def supernet_macs(layout: Layout, classes: int = 1000) -> int:
    """Multiply-accumulates of one forward pass of the super-network per image: every branch of every position runs
    at its largest width and kernel (masks zero channels, they do not skip them), which is what a search step costs."""
    size = -(-layout.resolution // 2)
    macs = size * size * 9 * 3 * layout.stem_width
    kinds = {"pw": lambda p: p.in_width * p.expand_width, "dw": lambda p: p.kernel ** 2 * p.expand_width,
             "full": lambda p: p.kernel ** 2 * p.in_width * p.expand_width,
             "pwl": lambda p: p.expand_width * p.out_width,
             "pw_in": lambda p: p.in_width * p.out_width, "dw_in": lambda p: p.kernel ** 2 * p.in_width}
    roles = {"ibn": ("pw", "dw", "pwl"), "ibn_e1": ("dw_in", "pw_in"), "fused_ibn": ("full", "pwl"),
             "fused_ibn_e1": ("pw_in",)}
    for pos in layout.positions:
        out = -(-size // pos.stride)
        for branch in pos.branches:
            for kind in roles[branch]:
                at = size if kind in ("pw",) else out  # the 1x1 expansion runs before the strided layer
                macs += at * at * kinds[kind](pos)
        size = out
    last = layout.positions[-1].out_width if layout.positions else layout.stem_width
    return macs + size * size * last * layout.head_width + layout.head_width * classes
