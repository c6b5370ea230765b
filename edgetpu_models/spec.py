"""The one description of an architecture: a YAML spec loaded into typed, validated dataclasses.

A spec holds a searched base network (stem, stages of blocks, head) and a compound-scaling table of named variants.
`resolve()` applies a variant (width, depth, resolution, dropout) and expands the stages into concrete per-block
arguments (`BlockArgs`), the plain data that the builder, the profiler, the latency model and the NAS all read.

This module must stay free of TensorFlow: it is on the hot path of latency estimation and search.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import reprlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Tuple

import yaml

from edgetpu_models.errors import SpecError

BLOCK_TYPES = ("fused_ibn", "ibn", "conv")
"""fused_ibn: k x k conv expand + 1x1 linear projection; ibn: 1x1 expand + k x k depthwise + 1x1 linear projection;
conv: a single k x k conv + BN + activation (no projection, no residual)."""

MAX_CHANNELS = 100_000
MAX_KERNEL = 31
MAX_BLOCKS = 1000
"""The most blocks a spec may resolve to (after depth scaling): the latency server's limit, and the CLI's."""
MAX_EXPANSION = 64
MAX_MULTIPLIER = 100.0
MIN_RESOLUTION = 32
"""The smallest input a spec accepts (five stride-2 stages leave a 1x1 map)."""
MAX_RESOLUTION = 4096
PADDINGS = ("same", "symmetric")
"""How a strided convolution pads: "same" is TensorFlow's SAME (the extra row/column of an even input goes at the
bottom/right); "symmetric" pads (kernel - 1) // 2 on every side, as PyTorch and timm's non-`tf_` models do. Both give
the same output size; stride-1 convolutions with odd kernels are identical either way."""

ACTIVATIONS = ("relu", "relu6")
"""Only activations that map well onto the Edge TPU; swish and squeeze-excite are deliberately not expressible."""


@dataclass(frozen=True)
class BatchNorm:
    momentum: float = 0.99
    epsilon: float = 1e-3


@dataclass(frozen=True)
class Normalization:
    """Input normalisation for uint8 pixels: (x - mean) / std, per channel."""

    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class Stem:
    filters: int
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True)
class Stage:
    block: str
    repeats: int
    kernel: int
    stride: int
    expansion: float
    filters: int
    skip: bool = True
    expansion_input: int | None = None
    """Forces the width the expansion is computed from for the stage's first block (timm's `fc`): the S spec's first
    block expands 24 * 4 = 96 channels although its real input is the 32-channel stem."""
    group_size: int | None = None
    """fused_ibn only: the k x k expansion convolution is grouped, each group producing `group_size` channels (timm's
    `gs`, tensorflow/models' `group_base_size`): groups = expansion width / group_size. None: a full convolution."""
    continue_stage: bool = False
    """Number the blocks as a continuation of the previous stage (timm lists differently configured blocks inside one
    stage, `blocks.1.0`, `blocks.1.1`; the names must match for timm weights to load)."""


@dataclass(frozen=True)
class Head:
    filters: int
    scaled: bool = True
    """Whether the width multiplier scales the head conv. MobilenetEdgeTPU keeps it at 1280 for every depth multiplier
    (slim's finegrain_classification_mode), which gives the published 2.9M params / 624M MACs at 0.75."""


@dataclass(frozen=True)
class Variant:
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    # Overrides of the base network, for families whose members are not compound-scaled copies of one base
    # (MobilenetEdgeTPU-V2's variants differ in stem, head, stage widths and group size). None: the base's.
    stem: Stem | None = None
    head: Head | None = None
    stages: tuple[Stage, ...] | None = None
    stage_filters: tuple[int, ...] | None = None
    """Output width of every numbered stage, in order (a `continue_stage` stage shares the width of the stage it
    continues): replaces the stages' `filters`."""
    group_size: int | None = None
    """Replaces the group size of every grouped stage."""
    padding: str | None = None
    drop_connect: float | None = None
    batch_norm: BatchNorm | None = None
    normalization: Normalization | None = None


@dataclass(frozen=True)
class Spec:
    name: str
    stem: Stem
    stages: tuple[Stage, ...]
    head: Head
    activation: str = "relu"
    padding: str = "same"
    batch_norm: BatchNorm = BatchNorm()
    normalization: Normalization = Normalization()
    dropout: float = 0.2
    drop_connect: float = 0.2
    resolution: int = 224
    variants: Mapping[str, Variant] = field(default_factory=dict)
    default_variant: str | None = None
    expansion_divisor: int = 8
    """Expansion widths are rounded to a multiple of this (EfficientNet's rule). 1: the exact input x expansion, as
    tensorflow/models builds its searched Autoseg-EdgeTPU backbones (36 x 3 = 108 stays 108)."""
    source: str | None = field(default=None, compare=False)
    """Path the spec was read from (for messages); not part of the architecture."""

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, in the same layout as the YAML files (round-trips through `spec_from_dict`)."""
        out: dict[str, Any] = {"name": self.name, "activation": self.activation,
                               "batch_norm": dataclasses.asdict(self.batch_norm),
                               "normalization": {"mean": list(self.normalization.mean),
                                                 "std": list(self.normalization.std)},
                               "stem": dataclasses.asdict(self.stem), "stages": [],
                               "head": dataclasses.asdict(self.head),
                               "dropout": self.dropout, "drop_connect": self.drop_connect,
                               "resolution": self.resolution}
        out["stages"] = [_stage_dict(st) for st in self.stages]
        if self.padding != "same":  # written only where it differs, so existing specs serialise as before
            out["padding"] = self.padding
        if self.default_variant is not None:
            out["default_variant"] = self.default_variant
        if self.expansion_divisor != 8:
            out["expansion_divisor"] = self.expansion_divisor
        if self.variants:
            out["variants"] = {k: _variant_dict(v) for k, v in self.variants.items()}
        return out


def _stage_dict(st: Stage) -> dict[str, Any]:
    d = dataclasses.asdict(st)
    for optional in ("expansion_input", "group_size"):
        if d[optional] is None:
            del d[optional]
    if not d["continue_stage"]:
        del d["continue_stage"]
    if isinstance(d["expansion"], float) and d["expansion"].is_integer():
        d["expansion"] = int(d["expansion"])
    return d


def _variant_dict(v: Variant) -> dict[str, Any]:
    out: dict[str, Any] = {"width": v.width, "depth": v.depth, "resolution": v.resolution, "dropout": v.dropout}
    for key in ("stem", "head", "batch_norm"):
        if getattr(v, key) is not None:
            out[key] = dataclasses.asdict(getattr(v, key))
    if v.normalization is not None:
        out["normalization"] = {"mean": list(v.normalization.mean), "std": list(v.normalization.std)}
    if v.stages is not None:
        out["stages"] = [_stage_dict(st) for st in v.stages]
    if v.stage_filters is not None:
        out["stage_filters"] = list(v.stage_filters)
    for key in ("group_size", "padding", "drop_connect"):
        if getattr(v, key) is not None:
            out[key] = getattr(v, key)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Validation: a small declarative schema, so every error names file, field and what is allowed.

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool) and math.isfinite(v)


def short_repr(value: Any, limit: int = 60) -> str:
    """A value for an error message, never longer than `limit` characters however large the value (reprlib does not
    walk all of a huge or deeply nested structure)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxset = 2, 4, 4, 4, 4
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


Field = Tuple[bool, Optional[Callable[[Any], bool]], str]  # typing spelling: evaluated at import, on Python 3.9 too
"""One field's rule in a field table (field name -> Field): (required, check of its value or None for any value,
what is allowed: the text of the error message)."""
_POS_INT: Field = (True, lambda v: _is_int(v) and 1 <= v <= MAX_CHANNELS, f"an integer from 1 to {MAX_CHANNELS}")
_KERNEL: Field = (True, lambda v: _is_int(v) and 1 <= v <= MAX_KERNEL and v % 2 == 1,
                  f"an odd integer from 1 to {MAX_KERNEL}")
_STRIDE: Field = (True, lambda v: v in (1, 2) and _is_int(v), "1 or 2")
_RATE: Field = (True, lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
_RESOLUTION: Field = (False, lambda v: _is_int(v) and MIN_RESOLUTION <= v <= MAX_RESOLUTION,
                      f"an integer from {MIN_RESOLUTION} to {MAX_RESOLUTION}")
_MULTIPLIER: Field = (False, lambda v: _is_num(v) and 0 < v <= MAX_MULTIPLIER, f"a number > 0 and <= {MAX_MULTIPLIER}")

_SCHEMAS: dict[str, dict[str, Field]] = {
    "spec": {
        "name": (True, lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
        "stem": (True, None, "a mapping"), "stages": (True, None, "a non-empty list"),
        "head": (True, None, "a mapping"),
        "activation": (False, lambda v: v in ACTIVATIONS, "one of " + ", ".join(ACTIVATIONS)),
        "padding": (False, lambda v: v in PADDINGS, "one of " + ", ".join(PADDINGS)),
        "batch_norm": (False, None, "a mapping"), "normalization": (False, None, "a mapping"),
        "dropout": (False, *_RATE[1:]), "drop_connect": (False, *_RATE[1:]),
        "resolution": _RESOLUTION,
        "variants": (False, None, "a mapping"),
        "default_variant": (False, lambda v: isinstance(v, str), "a variant name"),
        "expansion_divisor": (False, lambda v: _is_int(v) and 1 <= v <= 64, "an integer from 1 to 64"),
    },
    "batch_norm": {"momentum": (False, lambda v: _is_num(v) and 0 < v < 1, "a number in (0, 1)"),
                   "epsilon": (False, lambda v: _is_num(v) and v > 0, "a number > 0")},
    "normalization": {
        "mean": (True, lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_num, v)), "a list of 3 numbers"),
        "std": (True, lambda v: isinstance(v, list) and len(v) == 3 and all(_is_num(x) and x > 0 for x in v),
                "a list of 3 numbers > 0")},
    "stem": {"filters": _POS_INT, "kernel": (False, *_KERNEL[1:]), "stride": (False, *_STRIDE[1:])},
    "stage": {"block": (True, lambda v: v in BLOCK_TYPES, "one of " + ", ".join(BLOCK_TYPES)),
              "repeats": (True, lambda v: _is_int(v) and 1 <= v <= MAX_BLOCKS, f"an integer from 1 to {MAX_BLOCKS}"),
              "kernel": _KERNEL, "stride": _STRIDE,
              "expansion": (True, lambda v: _is_num(v) and 1 <= v <= MAX_EXPANSION,
                            f"a number from 1 to {MAX_EXPANSION}"),
              "filters": _POS_INT, "skip": (False, lambda v: isinstance(v, bool), "true or false"),
              "expansion_input": (False, *_POS_INT[1:]),
              "group_size": (False, lambda v: _is_int(v) and 1 <= v <= MAX_CHANNELS,
                             f"an integer from 1 to {MAX_CHANNELS} (channels per group)"),
              "continue_stage": (False, lambda v: isinstance(v, bool), "true or false")},
    "head": {"filters": _POS_INT, "scaled": (False, lambda v: isinstance(v, bool), "true or false")},
    "variant": {"width": (False, *_MULTIPLIER[1:]),
                "depth": (False, *_MULTIPLIER[1:]),
                "resolution": _RESOLUTION,
                "dropout": (False, *_RATE[1:]),
                "stem": (False, None, "a mapping"), "head": (False, None, "a mapping"),
                "stages": (False, None, "a non-empty list"),
                "stage_filters": (False, lambda v: isinstance(v, list) and v and all(
                    _is_int(x) and 1 <= x <= MAX_CHANNELS for x in v), f"a list of integers from 1 to {MAX_CHANNELS}, "
                                  "one per stage"),
                "group_size": (False, lambda v: _is_int(v) and 1 <= v <= MAX_CHANNELS,
                               f"an integer from 1 to {MAX_CHANNELS} (channels per group)"),
                "padding": (False, lambda v: v in PADDINGS, "one of " + ", ".join(PADDINGS)),
                "drop_connect": (False, *_RATE[1:]),
                "batch_norm": (False, None, "a mapping"), "normalization": (False, None, "a mapping")},
}


def check_fields(fields: Mapping[str, Field], data: Any, path: str, where: str, *,
                 error: type[Exception] = SpecError, root: str = "spec",
                 unknown: Callable[[str, str], object] | None = None) -> dict[str, Any]:
    """Validates one mapping of a data file against its field table and returns it as a dict.

    Every error is one line of type `error` naming the file (`where`), the field's path (`path`, "" at the top level,
    which is called `root`) and what is allowed. `unknown(key, key_path)` may raise a more telling error for a field
    the table does not have; otherwise such a field is refused with the list of allowed ones. Used for spec files
    and search-space files alike.
    """
    if not isinstance(data, Mapping):
        raise error(f"{where}: {path or root}: expected a mapping, got {type(data).__name__}")
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in fields:
            if unknown is not None:
                unknown(key, f"{prefix}{key}")
            raise error(f"{where}: {prefix}{key}: unknown field (allowed: {', '.join(fields)})")
    for key, (required, ok, allowed) in fields.items():
        if key not in data:
            if required:
                raise error(f"{where}: {prefix}{key}: missing field (expected {allowed})")
            continue
        if ok is not None and not ok(data[key]):
            raise error(f"{where}: {prefix}{key}: expected {allowed}, got {short_repr(data[key])}")
    return dict(data)


def _check(kind: str, data: Any, path: str, where: str) -> dict[str, Any]:
    return check_fields(_SCHEMAS[kind], data, path, where)


_VALID: dict[tuple[Any, ...], Any] = {}
_VALID_MAX = 20_000
"""Records (stages, stems, heads, ...) that passed validation, keyed on their kind and their fields with each value's
type: a search sends thousands of specs that share most stages, and checking each field again was a quarter of the
latency server's time. Only valid records are kept, so every error is still raised, with its path, where it occurs."""


def _record_key(kind: str, raw: Any) -> tuple[Any, ...] | None:
    """`raw`'s memo key (each value's type is part of it: `1` is not `true`, `6` is not `6.0`; a list of numbers is a
    tuple of them, typed too), or None when it has none (not a plain dict, or a field holds a mapping or a nested
    list)."""
    if type(raw) is not dict:
        return None
    values = tuple(raw.values())
    types = tuple(map(type, values))
    if list in types:  # normalization's mean and std: their items and the items' types
        values = tuple((tuple(v), tuple(map(type, v))) if t is list else v for v, t in zip(values, types))
    key = (kind, tuple(raw), types, values)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _parse_record(kind: str, cls: Callable[..., Any], raw: Any, path: str, where: str,
                  rules: Callable[[dict[str, Any], str], None] | None = None) -> Any:
    """`cls(**raw)` after `raw` passed the field table of `kind` (and `rules(fields, path)`, checks of the record
    alone), reused when an equal record (`_record_key`) passed before."""
    key = _record_key(kind, raw)
    hit = _VALID.get(key) if key is not None else None
    if hit is not None:
        return hit
    fields = _check(kind, raw, path, where)
    if rules is not None:
        rules(fields, path)
    out = cls(**fields)
    if key is not None:
        if len(_VALID) >= _VALID_MAX:
            _VALID.clear()
        _VALID[key] = out
    return out


def _stage_rules(where: str) -> Callable[[dict[str, Any], str], None]:
    def rules(st: dict[str, Any], path: str) -> None:
        if st["block"] == "conv" and st["expansion"] != 1:
            raise SpecError(f"{where}: {path}.expansion: a 'conv' block has no expansion; expected 1")
        if st.get("group_size") is not None and (st["block"] != "fused_ibn" or st["expansion"] == 1):
            raise SpecError(f"{where}: {path}.group_size: only a fused_ibn block with expansion > 1 has a grouped "
                            f"convolution; remove group_size or use block: fused_ibn")
    return rules


def _parse_stages(raw_stages: Any, path: str, where: str) -> tuple[Stage, ...]:
    if not isinstance(raw_stages, list) or not raw_stages:
        raise SpecError(f"{where}: {path}: expected a non-empty list of stages")
    stages = []
    rules = _stage_rules(where)
    for i, raw in enumerate(raw_stages):
        st = _parse_record("stage", Stage, raw, f"{path}[{i}]", where, rules)
        if st.continue_stage and i == 0:
            raise SpecError(f"{where}: {path}[0].continue_stage: the first stage has no previous stage to continue")
        stages.append(st)
    return tuple(stages)


def _normalization(mean: list[float], std: list[float]) -> Normalization:
    return Normalization(tuple(map(float, mean)), tuple(map(float, std)))  # type: ignore[arg-type]


def _parse_normalization(raw: Any, path: str, where: str) -> Normalization:
    return _parse_record("normalization", _normalization, raw, path, where)


_SCALAR_VARIANT_FIELDS = frozenset(("width", "depth", "resolution", "dropout", "padding", "drop_connect"))
"""A variant's fields that are checked on their own (not mappings, not against the base network's stages)."""


def _parse_variant(name: str, raw: Any, base_stages: tuple[Stage, ...], where: str) -> Variant:
    path = f"variants.{name}"
    if type(raw) is dict and raw.keys() <= _SCALAR_VARIANT_FIELDS:
        # scalar fields only, none checked against the base network: the record alone decides
        return _parse_record("variant", Variant, raw, path, where)
    v = _check("variant", raw, path, where)
    if "stem" in v:
        v["stem"] = Stem(**_check("stem", v["stem"], f"{path}.stem", where))
    if "head" in v:
        v["head"] = Head(**_check("head", v["head"], f"{path}.head", where))
    if "stages" in v:
        v["stages"] = _parse_stages(v["stages"], f"{path}.stages", where)
    if "batch_norm" in v:
        v["batch_norm"] = BatchNorm(**_check("batch_norm", v["batch_norm"], f"{path}.batch_norm", where))
    if "normalization" in v:
        v["normalization"] = _parse_normalization(v["normalization"], f"{path}.normalization", where)
    if "stage_filters" in v:
        n = sum(not st.continue_stage for st in v.get("stages") or base_stages)
        if len(v["stage_filters"]) != n:
            raise SpecError(f"{where}: {path}.stage_filters: expected {n} widths (one per numbered stage), "
                            f"got {len(v['stage_filters'])}")
        v["stage_filters"] = tuple(v["stage_filters"])
    if "group_size" in v and not any(st.group_size for st in v.get("stages") or base_stages):
        raise SpecError(f"{where}: {path}.group_size: no stage has a grouped convolution to resize")
    return Variant(**v)


def spec_from_dict(data: Any, source: str | None = None) -> Spec:
    """Validates plain data (as parsed from YAML) and returns a `Spec`. Raises `SpecError` naming field and rule."""
    where = source or "<spec>"
    d = _check("spec", data, "", where)
    stem = _parse_record("stem", Stem, d["stem"], "stem", where)
    head = _parse_record("head", Head, d["head"], "head", where)
    stages = _parse_stages(d["stages"], "stages", where)
    bn = _parse_record("batch_norm", BatchNorm, d.get("batch_norm", {}), "batch_norm", where)
    norm = _parse_normalization(d["normalization"], "normalization", where) if "normalization" in d else Normalization()
    variants_raw = d.get("variants", {}) or {}
    if not isinstance(variants_raw, Mapping):
        raise SpecError(f"{where}: variants: expected a mapping of name -> {{width, depth, resolution, dropout}}")
    variants = {str(k): _parse_variant(str(k), v, stages, where) for k, v in variants_raw.items()}
    default_variant = d.get("default_variant")
    if default_variant is not None and default_variant not in variants:
        raise SpecError(f"{where}: default_variant: expected one of {', '.join(variants) or '(no variants defined)'}, "
                        f"got {default_variant!r}")
    return Spec(name=d["name"], stem=stem, stages=stages, head=head,
                activation=d.get("activation", "relu"), padding=d.get("padding", "same"), batch_norm=bn,
                normalization=norm,
                dropout=float(d.get("dropout", 0.2)), drop_connect=float(d.get("drop_connect", 0.2)),
                resolution=int(d.get("resolution", 224)), variants=variants, default_variant=default_variant,
                expansion_divisor=d.get("expansion_divisor", 8), source=source)


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Reads and validates a YAML spec file."""
    from edgetpu_models.io_utils import read_yaml

    path = os.fspath(path)
    data = read_yaml(path, "spec file", SpecError)
    return spec_from_dict(data, source=path)


def save_spec(spec: Spec, path: str | os.PathLike[str]) -> None:
    """Writes a spec as YAML atomically (temp file, then rename), in the `searched_archs/` layout."""
    from edgetpu_models.io_utils import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=120))


# ----------------------------------------------------------------------------------------------------------------------
# Resolution: variant scaling and expansion of stages into per-block arguments.

def make_divisible(value: float, divisor: int = 8) -> int:
    """EfficientNet's round_filters / MobileNet's _make_divisible: nearest multiple of `divisor`, never below 90%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def round_filters(filters: int, width: float) -> int:
    return make_divisible(filters * width) if width != 1.0 else filters


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class BlockArgs:
    """One concrete block after scaling: plain data, like keras.applications' DEFAULT_BLOCKS_ARGS."""

    name: str               # e.g. "blocks_3_0" (stage 3, block 0), also the prefix of its Keras layer names
    block: str              # one of BLOCK_TYPES
    kernel: int
    stride: int
    input_filters: int
    expand_filters: int     # width after the expansion; == input_filters when the block has no expansion layer
    output_filters: int
    residual: bool          # identity shortcut (skip, stride 1 and input == output width)
    drop_rate: float        # drop-connect rate of the residual branch (training only)
    groups: int = 1         # groups of the fused_ibn expansion convolution (1: a full convolution)


@dataclass(frozen=True)
class Arch:
    """A spec with a variant applied: everything needed to build or cost the network."""

    name: str
    variant: str | None
    resolution: int
    stem: Stem
    blocks: tuple[BlockArgs, ...]
    head_filters: int
    dropout: float
    activation: str
    batch_norm: BatchNorm
    normalization: Normalization
    padding: str = "same"


def pick_variant(spec: Spec, variant: str | None) -> tuple[str | None, Variant]:
    if variant is None:
        variant = spec.default_variant
    if variant is None:
        return None, Variant(1.0, 1.0, spec.resolution, spec.dropout)
    if variant not in spec.variants:
        allowed = ", ".join(spec.variants) or "none are defined"
        raise SpecError(f"{spec.source or spec.name}: variants: no variant {short_repr(variant)} "
                        f"(available: {allowed})")
    return variant, spec.variants[variant]


def _apply_overrides(spec: Spec, v: Variant) -> Spec:
    """The base network with a variant's overrides (stem, head, stages, widths, group size, padding) applied."""
    if v.stages is None and v.stage_filters is None and v.group_size is None and v.stem is None and v.head is None \
            and v.padding is None and v.drop_connect is None and v.batch_norm is None and v.normalization is None:
        return spec  # a plain compound-scaling variant (the common case): nothing to replace
    stages = v.stages if v.stages is not None else spec.stages
    if v.stage_filters is not None:
        numbered = list(itertools.accumulate(0 if st.continue_stage else 1 for st in stages))
        stages = tuple(dataclasses.replace(st, filters=v.stage_filters[n - 1]) for st, n in zip(stages, numbered))
    if v.group_size is not None:
        stages = tuple(dataclasses.replace(st, group_size=v.group_size) if st.group_size else st for st in stages)
    return dataclasses.replace(spec, stem=v.stem or spec.stem, head=v.head or spec.head, stages=stages,
                               padding=v.padding or spec.padding,
                               drop_connect=spec.drop_connect if v.drop_connect is None else v.drop_connect,
                               batch_norm=v.batch_norm or spec.batch_norm,
                               normalization=v.normalization or spec.normalization)


def _groups(spec: Spec, index: int, st: Stage, in_filters: int, expand: int) -> int:
    """Groups of a block's expansion convolution; the widths (after scaling) must split into whole groups."""
    if st.group_size is None:
        return 1
    where = f"{spec.source or spec.name}: stages[{index}].group_size"
    if expand % st.group_size:
        raise SpecError(f"{where}: the expansion width {expand} is not a multiple of group_size {st.group_size}")
    groups = expand // st.group_size
    if in_filters % groups:
        raise SpecError(f"{where}: {groups} groups do not divide the block's {in_filters} input channels")
    return groups


def _checked_repeats(spec: Spec, v: Variant) -> list[int]:
    """Each stage's blocks after depth scaling; SpecError past MAX_BLOCKS in all (before anything is expanded)."""
    repeats = [round_repeats(st.repeats, v.depth) for st in spec.stages]
    if sum(repeats) > MAX_BLOCKS:
        raise SpecError(f"{spec.source or spec.name}: stages: {sum(repeats)} blocks after depth scaling; at most "
                        f"{MAX_BLOCKS} are supported")
    return repeats


def block_count(spec: Spec, variant: str | None = None) -> int:
    """How many blocks a spec resolves to (depth scaling and the variant's own stages applied); what a request costs.
    SpecError past MAX_BLOCKS, the one limit the CLI and the latency server share."""
    _, v = pick_variant(spec, variant)
    return sum(_checked_repeats(_apply_overrides(spec, v), v))


_STAGE_BLOCKS: dict[tuple[Any, ...], tuple[BlockArgs, ...]] = {}
_STAGE_BLOCKS_MAX = 200_000
"""Blocks kept in `_STAGE_BLOCKS` in all (a few hundred bytes each); it is cleared when full."""
_stage_blocks_held = [0]


def _stage_blocks(spec: Spec, s: int, reps: int, width: float, in_filters: int, numbers: tuple[int, int],
                  start: int, total: int) -> tuple[BlockArgs, ...]:
    """The blocks of stage `s` (`reps` of them after depth scaling), its first named `blocks_{numbers}` and the
    `start`-th of `total`. Kept for equal arguments: a search resolves the same stages over and over, and building
    frozen dataclasses was most of `resolve`'s time."""
    st = spec.stages[s]
    key = (st, reps, width, in_filters, numbers, start, total, spec.drop_connect, spec.drop_connect.__class__,
           spec.expansion_divisor)
    hit = _STAGE_BLOCKS.get(key)
    if hit is not None:
        return hit
    out_filters = round_filters(st.filters, width)
    stage_index, block_index = numbers
    blocks = []
    for b in range(reps):
        first = b == 0
        stride = st.stride if first else 1
        base_in = round_filters(st.expansion_input, width) if first and st.expansion_input is not None else in_filters
        # A block has an expansion layer only when it widens: expansion 1 (and 'conv') means none.
        expand = in_filters if st.block == "conv" or st.expansion == 1 else make_divisible(base_in * st.expansion,
                                                                                   spec.expansion_divisor)
        residual = st.block != "conv" and st.skip and stride == 1 and in_filters == out_filters
        blocks.append(BlockArgs(name=f"blocks_{stage_index}_{block_index + b}", block=st.block, kernel=st.kernel,
                                stride=stride, input_filters=in_filters, expand_filters=expand,
                                output_filters=out_filters, residual=residual,
                                drop_rate=spec.drop_connect * (start + b) / total,
                                groups=_groups(spec, s, st, in_filters, expand)))
        in_filters = out_filters
    if _stage_blocks_held[0] + reps > _STAGE_BLOCKS_MAX:
        _STAGE_BLOCKS.clear()
        _stage_blocks_held[0] = 0
    _STAGE_BLOCKS[key] = out = tuple(blocks)
    _stage_blocks_held[0] += reps
    return out


def resolve(spec: Spec, variant: str | None = None, resolution: int | None = None) -> Arch:
    """Applies compound scaling and expands stages into blocks. `resolution` overrides the variant's."""
    variant, v = pick_variant(spec, variant)
    spec = _apply_overrides(spec, v)
    where = spec.source or spec.name
    if resolution is not None and (not _is_int(resolution) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise SpecError(f"{where}: resolution: expected an integer from {MIN_RESOLUTION} to {MAX_RESOLUTION}, got "
                        f"{short_repr(resolution)}")
    stem = Stem(round_filters(spec.stem.filters, v.width), spec.stem.kernel, spec.stem.stride)
    repeats = _checked_repeats(spec, v)
    total = sum(repeats)
    blocks: list[BlockArgs] = []
    in_filters = stem.filters
    stage_index, block_index = -1, 0
    for s, reps in enumerate(repeats):
        if not spec.stages[s].continue_stage:
            stage_index, block_index = stage_index + 1, 0
        if reps:
            blocks += _stage_blocks(spec, s, reps, v.width, in_filters, (stage_index, block_index), len(blocks), total)
            in_filters = blocks[-1].output_filters
        block_index += reps
    return Arch(name=spec.name, variant=variant, resolution=resolution or v.resolution, stem=stem,
                blocks=tuple(blocks),
                head_filters=round_filters(spec.head.filters, v.width if spec.head.scaled else 1.0), dropout=v.dropout,
                activation=spec.activation, batch_norm=spec.batch_norm, normalization=spec.normalization,
                padding=spec.padding)
