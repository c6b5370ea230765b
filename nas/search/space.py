"""The NAS search space: a data file (`search_space.yaml`) of stage slots, and the map between points and specs.

A point is a tuple of choice indices, one per decision (`SearchSpace.decisions`: "s3.kernel", "s3.skip", ...). `decode`
turns a point into a `Spec` in the one spec format (stem, head, normalisation and scaling table from the space's
template spec), so a searched network is written, built, profiled and exported like the zoo models. `encode` is the
inverse for any spec the space can express; EfficientNet-EdgeTPU-S and MobilenetEdgeTPU are points of the default
space.

Decoding yields a canonical spec: neighbouring slots with equal settings (the second one stride 1) are one stage of
the spec, and a slot with 0 repeats is left out. TF-free: the controller and the search driver import this.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator, Mapping, Sequence

from edgetpu_models.errors import EdgeTPUModelsError, SearchSpaceError
from edgetpu_models.io_utils import read_yaml
from edgetpu_models.spec import Field, Spec, Stage, check_fields, make_divisible
from edgetpu_models.zoo import resolve_spec

SEARCH_BLOCKS = ("ibn", "fused_ibn")
SEARCH_ACTIVATIONS = ("relu",)
CHOICE_KEYS = ("block", "kernel", "expansion", "width_multiplier", "repeats_delta", "skip", "expansion_from",
               "group_size")
"""Per-stage decisions, in the order they appear in a point."""
OPTIONAL_KEYS = ("expansion_from", "group_size")
"""Decisions a space may leave out. `group_size` is the switch for MobilenetEdgeTPU-V2's grouped fused block: a space
lists it (e.g. `group_size: [0, 64]`, see search_space_grouped.yaml) to search it; 0 is a full convolution."""
EXPANSION_FROM = ("input", "output")

Point = tuple[int, ...]


def default_space_path() -> str:
    return str(resources.files("edgetpu_models.nas.search").joinpath("search_space.yaml"))


@dataclass(frozen=True)
class Decision:
    name: str                   # "<stage>.<key>", e.g. "s3.kernel"
    stage: int
    key: str                    # one of CHOICE_KEYS
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class SlotSpec:
    """One stage slot: fixed stride and base width, and the allowed values of each per-stage decision."""

    name: str
    stride: int
    filters: int
    repeats: int
    choices: Mapping[str, tuple[Any, ...]]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_CHOICE_RULES: dict[str, tuple[Any, str]] = {
    "block": (lambda v: v in SEARCH_BLOCKS, "one of " + ", ".join(SEARCH_BLOCKS)),
    "kernel": (lambda v: _is_int(v) and v >= 1 and v % 2 == 1, "odd integers >= 1"),
    "expansion": (lambda v: _is_num(v) and v >= 1, "numbers >= 1"),
    "width_multiplier": (lambda v: _is_num(v) and v > 0, "numbers > 0"),
    "repeats_delta": (_is_int, "integers"),
    "skip": (lambda v: isinstance(v, bool), "true or false"),
    "expansion_from": (lambda v: v in EXPANSION_FROM, "'input' or 'output'"),
    "group_size": (lambda v: _is_int(v) and v >= 0, "integers >= 0 (0: a full convolution)"),
}
_NON_EMPTY_STR = lambda v: isinstance(v, str) and v.strip() != ""
_POS_INT = lambda v: _is_int(v) and v >= 1

# The search-space file: field -> (required, check, what is allowed), checked by the spec format's validator.
_SPACE_FIELDS: dict[str, Field] = {
    "name": (True, _NON_EMPTY_STR, "a non-empty string"),
    "template": (True, _NON_EMPTY_STR, "a zoo model name or spec file"),
    "activation": (False, lambda v: v in SEARCH_ACTIVATIONS,
                   "relu (swish and other activations are not expressible in an Edge TPU search space)"),
    "choices": (False, lambda v: not v or isinstance(v, Mapping), "a mapping of decision -> list of values"),
    "stages": (True, lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of stage slots"),
    "description": (False, None, "text"),
}
_SLOT_NAME = "a unique name without '.'"
_SLOT_FIELDS: dict[str, Field] = {
    "name": (False, lambda v: isinstance(v, str) and v != "" and "." not in v, _SLOT_NAME),
    "stride": (True, lambda v: v in (1, 2) and _is_int(v), "1 or 2"),
    "filters": (True, _POS_INT, "an integer >= 1"),
    "repeats": (True, _POS_INT, "an integer >= 1"),
    **{key: (False, None, f"a non-empty list of {what}") for key, (_, what) in _CHOICE_RULES.items()},
}
"""A stage slot: fixed stride, base width and repeats, and any per-stage decision (overriding `choices`)."""

_NOT_EXPRESSIBLE = {"se_ratio": "squeeze-excite", "se": "squeeze-excite", "squeeze_excite": "squeeze-excite",
                    "swish": "swish", "activation": "per-stage activations"}


class SearchSpace:
    """A loaded, validated search space. Build with `load_space(path)` or `SearchSpace.from_dict(data)`."""

    def __init__(self, name: str, template_ref: str, slots: Sequence[SlotSpec], source: str | None = None):
        self.name = name
        self.template_ref = template_ref
        self.slots = tuple(slots)
        self.source = source
        self.decisions: tuple[Decision, ...] = tuple(
            Decision(f"{slot.name}.{key}", i, key, slot.choices[key])
            for i, slot in enumerate(self.slots) for key in CHOICE_KEYS if key in slot.choices)
        self._index = {d.name: j for j, d in enumerate(self.decisions)}

    # -- construction -------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> "SearchSpace":
        """Validates plain data (as parsed from YAML) against the field tables; raises SearchSpaceError naming file,
        field and rule."""
        where = source or "<search space>"
        d = check_fields(_SPACE_FIELDS, data, "", where, error=SearchSpaceError, root="search space")
        defaults = {k: _check_choices(v, f"choices.{k}", k, where) for k, v in (d.get("choices") or {}).items()
                    if _known_choice(k, f"choices.{k}", where)}
        slots = [_slot(raw, i, defaults, where) for i, raw in enumerate(d["stages"])]
        _check_unique_names(slots, where)
        if not any(s.stride == 2 or min(s.choices["repeats_delta"]) + s.repeats >= 1 for s in slots):
            raise SearchSpaceError(f"{where}: stages: every point must keep at least one stage")
        space = cls(d["name"], d["template"], slots, source)
        space.template()  # fail early on an unknown template
        return space

    # -- properties ---------------------------------------------------------------------------------------------------
    def template(self, template: "Spec | str | None" = None) -> Spec:
        ref = template if template is not None else self.template_ref
        try:
            spec, _ = resolve_spec(ref)
        except EdgeTPUModelsError as e:
            raise SearchSpaceError(f"{self.source or self.name}: template: {e}") from None
        if spec.activation not in SEARCH_ACTIVATIONS:
            raise SearchSpaceError(f"{self.source or self.name}: template: activation {spec.activation!r} is not "
                                   f"expressible (expected relu)")
        return spec

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(d.choices) for d in self.decisions)

    def cardinality(self) -> int:
        """Number of points (distinct choice tuples; several may decode to the same network)."""
        return math.prod(self.sizes)

    def check_point(self, point: Sequence[int]) -> Point:
        point = tuple(int(i) for i in point)
        if len(point) != len(self.decisions):
            raise SearchSpaceError(f"point: expected {len(self.decisions)} decisions for space {self.name}, "
                                   f"got {len(point)}")
        for d, i in zip(self.decisions, point):
            if not 0 <= i < len(d.choices):
                raise SearchSpaceError(f"point: {d.name}: index {i} out of range 0..{len(d.choices) - 1}")
        return point

    def values(self, point: Sequence[int]) -> dict[str, Any]:
        """{decision name: chosen value}."""
        point = self.check_point(point)
        return {d.name: d.choices[i] for d, i in zip(self.decisions, point)}

    def point_from_values(self, values: Mapping[str, Any]) -> Point:
        out = []
        for d in self.decisions:
            if d.name not in values:
                raise SearchSpaceError(f"point: {d.name}: missing")
            try:
                out.append(d.choices.index(values[d.name]))
            except ValueError:
                raise SearchSpaceError(f"point: {d.name}: {values[d.name]!r} is not one of {list(d.choices)}") from None
        return tuple(out)

    # -- decode -------------------------------------------------------------------------------------------------------
    def slot_stages(self, point: Sequence[int]) -> list[Stage | None]:
        """One `Stage` per slot (None where the slot has 0 repeats), before neighbouring slots are merged."""
        vals = self.values(point)
        out: list[Stage | None] = []
        for slot in self.slots:
            v = {key: vals[f"{slot.name}.{key}"] for key in CHOICE_KEYS if key in slot.choices}
            repeats = slot.repeats + v["repeats_delta"]
            if repeats <= 0:
                out.append(None)
                continue
            filters = slot_filters(slot.filters, v["width_multiplier"])
            expansion = v["expansion"]
            expansion_input = (filters if v.get("expansion_from", "input") == "output" and expansion != 1 else None)
            group_size = v.get("group_size") if v["block"] == "fused_ibn" and expansion != 1 else None
            out.append(Stage(block=v["block"], repeats=repeats, kernel=v["kernel"], stride=slot.stride,
                             expansion=expansion, filters=filters, skip=v["skip"], expansion_input=expansion_input,
                             group_size=group_size or None))
        return out

    def decode(self, point: Sequence[int], template: "Spec | str | None" = None, name: str | None = None) -> Spec:
        """The spec of a point, in the one spec format (stem, head, normalisation, variants from the template)."""
        stages: list[Stage] = []
        for st in self.slot_stages(point):
            if st is None:
                continue
            if stages and _mergeable(stages[-1], st):
                stages[-1] = dataclasses.replace(stages[-1], repeats=stages[-1].repeats + st.repeats)
            else:
                stages.append(st)
        base = self.template(template)
        stages = whole_groups(stages, base.stem.filters)
        spec = dataclasses.replace(base, name=name or base.name, stages=tuple(stages), source=None)
        return spec

    # -- encode -------------------------------------------------------------------------------------------------------
    def encode(self, spec: "Spec | str") -> Point:
        """The point whose decoding (with `spec` as template) is `spec`; SearchSpaceError if there is none."""
        if not isinstance(spec, Spec):
            spec, _ = resolve_spec(spec)
        where = spec.source or spec.name
        if spec.activation not in SEARCH_ACTIVATIONS:
            raise SearchSpaceError(f"{where}: activation {spec.activation!r} is not in space {self.name} (relu only)")
        for i, st in enumerate(spec.stages):
            if st.block not in SEARCH_BLOCKS:
                raise SearchSpaceError(f"{where}: stages[{i}].block: {st.block!r} is not in space {self.name} "
                                       f"(allowed: {', '.join(SEARCH_BLOCKS)})")
        tried = 0
        for assignment in self._assignments(spec.stages):
            tried += 1
            point = self._point_for(assignment)
            if point is not None and self.decode(point, template=spec, name=spec.name) == spec:
                return point
            if tried > 10000:
                break
        raise SearchSpaceError(f"{where}: not a point of search space {self.name} (no assignment of its "
                               f"{len(spec.stages)} stages to the space's {len(self.slots)} stage slots fits the "
                               f"allowed strides, widths, repeats and choices)")

    def _assignments(self, stages: Sequence[Stage]) -> Iterator[list[tuple[Stage | None, int]]]:
        """Every way to lay the spec's blocks onto the slots: per slot (stage, repeats) or (None, 0)."""
        n = len(self.slots)

        def rec(i: int, j: int, used: int) -> Iterator[list[tuple[Stage | None, int]]]:
            if i == n:
                if j == len(stages):
                    yield []
                return
            slot = self.slots[i]
            reps = sorted({slot.repeats + d for d in slot.choices["repeats_delta"]})
            if 0 in reps and used == 0:
                for rest in rec(i + 1, j, 0):
                    yield [(None, 0)] + rest
            if j == len(stages):
                return
            st = stages[j]
            stride = st.stride if used == 0 else 1
            if stride != slot.stride:
                return
            for r in reps:
                if r <= 0 or used + r > st.repeats:
                    continue
                piece = st if used == 0 else dataclasses.replace(st, stride=1, expansion_input=None)
                nj, nused = (j + 1, 0) if used + r == st.repeats else (j, used + r)
                for rest in rec(i + 1, nj, nused):
                    yield [(piece, r)] + rest

        yield from rec(0, 0, 0)

    def _point_for(self, assignment: Sequence[tuple[Stage | None, int]]) -> Point | None:
        values: dict[str, Any] = {}
        for slot, (st, r) in zip(self.slots, assignment):
            ch = slot.choices
            if st is None:  # a left-out slot: its other decisions do not matter; take the first choice
                values.update({f"{slot.name}.{key}": ch[key][0] for key in CHOICE_KEYS if key in ch})
                values[f"{slot.name}.repeats_delta"] = -slot.repeats
                continue
            mult = next((m for m in ch["width_multiplier"] if slot_filters(slot.filters, m) == st.filters), None)
            if mult is None:
                return None
            if st.expansion_input is None:
                allowed = ch.get("expansion_from", ("input",))
                exp_from = "input" if "input" in allowed or st.expansion != 1 else "output"
            else:
                exp_from = "output" if st.expansion_input == st.filters else None
            v = {"block": st.block, "kernel": st.kernel, "expansion": st.expansion, "width_multiplier": mult,
                 "repeats_delta": r - slot.repeats, "skip": st.skip}
            if "expansion_from" in ch:
                v["expansion_from"] = exp_from
            elif exp_from != "input":
                return None
            if st.group_size and "group_size" not in ch:
                return None
            if "group_size" in ch:
                v["group_size"] = st.group_size or 0
            for key, val in v.items():
                match = [c for c in ch[key] if c == val and isinstance(c, bool) == isinstance(val, bool)]
                if val is None or not match:
                    return None
                values[f"{slot.name}.{key}"] = match[0]
        return self.point_from_values(values)

    # -- helpers ------------------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "template": self.template_ref, "source": self.source,
                "decisions": len(self.decisions), "points": self.cardinality()}


def slot_filters(base: int, multiplier: float) -> int:
    """Output width of a slot: base * multiplier rounded to a multiple of 8 (the Edge TPU's favourite)."""
    return base if multiplier == 1 else make_divisible(base * multiplier)


def _mergeable(a: Stage, b: Stage) -> bool:
    return (b.stride == 1 and b.expansion_input is None and a.block == b.block and a.kernel == b.kernel
            and a.expansion == b.expansion and a.filters == b.filters and a.skip == b.skip
            and a.group_size == b.group_size)


def whole_groups(stages: Sequence[Stage], stem_filters: int) -> list[Stage]:
    """Stages whose group size does not split their widths into whole groups get a full convolution instead (the
    same network a group_size of 0 gives), so every point decodes to a valid spec."""
    out, in_filters = [], stem_filters
    for st in stages:
        if st.group_size:
            ok = True
            for first in ([True, False] if st.repeats > 1 else [True]):
                cin = in_filters if first else st.filters
                base = st.expansion_input if first and st.expansion_input is not None else cin
                expand = make_divisible(base * st.expansion)
                ok = ok and expand % st.group_size == 0 and cin % (expand // st.group_size) == 0
            st = st if ok else dataclasses.replace(st, group_size=None)
        out.append(st)
        in_filters = st.filters
    return out


def _slot(raw: Any, i: int, defaults: Mapping[str, tuple[Any, ...]], where: str) -> SlotSpec:
    """Stage slot i of the file, its decisions completed from the space's `choices`."""
    at = f"stages[{i}]"
    s = check_fields(_SLOT_FIELDS, raw, at, where, error=SearchSpaceError,
                     unknown=lambda key, key_path: _known_choice(key, key_path, where))
    choices = {**defaults, **{key: _check_choices(s[key], f"{at}.{key}", key, where) for key in CHOICE_KEYS
                              if key in s}}
    for key in CHOICE_KEYS:
        if key not in choices and key not in OPTIONAL_KEYS:
            raise SearchSpaceError(f"{where}: {at}.{key}: missing (give it in the stage or in choices)")
    repeats, deltas = s["repeats"], choices["repeats_delta"]
    if any(repeats + d < 0 for d in deltas):
        raise SearchSpaceError(f"{where}: {at}.repeats_delta: repeats {repeats} + delta must be >= 0, "
                               f"got deltas {list(deltas)}")
    if s["stride"] == 2 and any(repeats + d < 1 for d in deltas):
        raise SearchSpaceError(f"{where}: {at}.repeats_delta: a stride-2 stage cannot be left out "
                               f"(repeats + delta must be >= 1)")
    return SlotSpec(s.get("name", f"s{i}"), s["stride"], s["filters"], repeats, choices)


def _check_unique_names(slots: Sequence[SlotSpec], where: str) -> None:
    seen: set[str] = set()
    for i, slot in enumerate(slots):
        if slot.name in seen:
            raise SearchSpaceError(f"{where}: stages[{i}].name: expected {_SLOT_NAME}, got {slot.name!r}")
        seen.add(slot.name)


def _known_choice(key: str, at: str, where: str) -> bool:
    if key in CHOICE_KEYS:
        return True
    if key in _NOT_EXPRESSIBLE:
        raise SearchSpaceError(f"{where}: {at}: {_NOT_EXPRESSIBLE[key]} is not expressible in an Edge TPU search space "
                               f"(allowed decisions: {', '.join(CHOICE_KEYS)})")
    raise SearchSpaceError(f"{where}: {at}: unknown decision (allowed: {', '.join(CHOICE_KEYS)})")


def _check_choices(values: Any, at: str, key: str, where: str) -> tuple[Any, ...]:
    ok, what = _CHOICE_RULES[key]
    if not isinstance(values, list) or not values:
        raise SearchSpaceError(f"{where}: {at}: expected a non-empty list of {what}, got {values!r}")
    for v in values:
        if not ok(v):
            raise SearchSpaceError(f"{where}: {at}: expected {what}, got {v!r}")
    if len(set(map(repr, values))) != len(values):
        raise SearchSpaceError(f"{where}: {at}: duplicate values in {values!r}")
    return tuple(values)


def load_space(path: "str | os.PathLike[str] | None" = None) -> SearchSpace:
    """Reads and validates a search-space YAML file (default: the shipped `search_space.yaml`)."""
    path = os.fspath(path) if path is not None else default_space_path()
    data = read_yaml(path, "search-space file", SearchSpaceError)
    return SearchSpace.from_dict(data, source=path)


def stage_string(st: Stage) -> str:
    """A stage in the reference code's block-string style: r2_k3_s2_e8_o32_c1 (c1 = fused), _noskip, _i24."""
    exp = int(st.expansion) if float(st.expansion).is_integer() else st.expansion
    s = f"r{st.repeats}_k{st.kernel}_s{st.stride}_e{exp}_o{st.filters}"
    if st.block == "fused_ibn":
        s += "_c1"
    if st.group_size:
        s += f"_gs{st.group_size}"
    if st.expansion_input is not None:
        s += f"_i{st.expansion_input}"
    if not st.skip:
        s += "_noskip"
    return s


def arch_string(spec: Spec) -> str:
    """The searched part of a spec as one line (stages joined by ' '): what the trials CSV shows."""
    return " ".join(stage_string(st) for st in spec.stages)


def arch_key(spec: Spec) -> str:
    """Short stable id of a spec's stages: equal networks (same canonical stages) get the same key."""
    return hashlib.sha1(arch_string(spec).encode()).hexdigest()[:12]


def _main() -> None:  # pragma: no cover - a small inspection aid
    space = load_space()
    print(space.describe())
    for ref in ("efficientnet_edgetpu_s", "mobilenet_edgetpu"):
        spec, _ = resolve_spec(ref)
        point = space.encode(spec)
        print(ref, {k: v for k, v in space.values(point).items() if not k.endswith("expansion_from")})


if __name__ == "__main__":  # pragma: no cover
    _main()
