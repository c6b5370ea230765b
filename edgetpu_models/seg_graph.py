"""Segmentation models as data: a backbone spec plus a head from `searched_archs/segmentation.yaml`, expanded into one
`LayerGraph` (backbone layers, head layers, optional finaliser) that the builder, profiler and latency models read.

Heads (references in the YAML): DeepLabV3+ (ASPP decoder + deeplabv3+ fusion head, Chen et al. 2018, "Encoder-Decoder
with Atrous Separable Convolution for Semantic Image Segmentation") and the Autoseg-EdgeTPU BiFPN head (Tan et al.
2020, "EfficientDet", as tensorflow/models' edgetpu project configures it). TF-free: profiling and latency estimation
of a segmentation model never import TensorFlow.

Finalisers (what the exported model outputs), chosen at build/export time, in the reference exporter's syntax:
  ``logits``                       logits at the head's stride (DeepLabV3+ 16, Autoseg 8: 32 or 64 square at 512)
  ``resize512,argmax``             bilinear resize of the logits to 512, then argmax: a 512 x 512 class map
  ``resize256,argmax,resize512``   resize to 256, argmax, nearest-neighbour resize of the class map to 512 (cheaper)
  ``argmax,resize512``             argmax at the head's stride, nearest resize to 512 (cheapest)
A model reference may carry one after ``@``: ``autoseg_edgetpu_s@resize512,argmax``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from edgetpu_models.errors import SpecError, UnknownModelError
from edgetpu_models.layer_graph import Layer, LayerGraph, Op, arch_to_graph
from edgetpu_models.spec import BatchNorm, check_fields, load_spec, resolve

SEG_SPEC_FILE = "segmentation.yaml"
FINALISERS = ("logits", "resize512,argmax", "resize256,argmax,resize512", "argmax,resize512")
"""The finalisers every command accepts by name; any `resizeN`/`argmax` sequence of the same grammar also parses."""


@dataclass(frozen=True)
class SegHead:
    type: str
    params: Mapping[str, Any]
    batch_norm: BatchNorm
    activation: str


@dataclass(frozen=True)
class SegModel:
    """A zoo segmentation model: which backbone spec/variant, which head, classes and resolution."""

    name: str
    backbone: str
    variant: str
    head: SegHead
    classes: int
    resolution: int
    display_name: str
    reference: Mapping[str, float] = field(default_factory=dict)
    """Published figures of tensorflow/models' README: params (millions), Pixel 6 latency (ms) default / fused."""


_HEAD_FIELDS = {
    "deeplabv3plus": ("level", "low_level", "aspp_filters", "dilation_rates", "pool_size", "dropout", "num_convs",
                      "filters", "low_level_filters"),
    "bifpn": ("min_level", "max_level", "filters", "repeats"),
}
_MODEL_FIELDS = {"backbone": (True, lambda v: isinstance(v, str), "a spec file in searched_archs/"),
                 "variant": (True, lambda v: isinstance(v, str), "a variant of the backbone spec"),
                 "head": (True, lambda v: isinstance(v, str), "a head of this file"),
                 "classes": (True, lambda v: isinstance(v, int) and 1 <= v <= 255, "an integer from 1 to 255"),
                 "resolution": (True, lambda v: isinstance(v, int) and 64 <= v <= 4096, "an integer from 64 to 4096"),
                 "display_name": (True, lambda v: isinstance(v, str), "a string"),
                 "reference_params_m": (False, None, "a number"), "pixel6_ms": (False, None, "a number"),
                 "pixel6_fused_ms": (False, None, "a number")}


def _parse_head(name: str, raw: Any, where: str) -> SegHead:
    if not isinstance(raw, Mapping) or raw.get("type") not in _HEAD_FIELDS:
        raise SpecError(f"{where}: heads.{name}.type: expected one of {', '.join(_HEAD_FIELDS)}")
    need = _HEAD_FIELDS[raw["type"]]
    fields = {k: (True, None, "a value") for k in need}
    fields.update({"type": (True, None, "a head type"), "activation": (True, lambda v: v in ("relu", "relu6"),
                                                                        "relu or relu6"),
                   "batch_norm": (False, lambda v: isinstance(v, Mapping), "a mapping")})
    d = check_fields(fields, raw, f"heads.{name}", where)
    return SegHead(d["type"], {k: d[k] for k in need}, BatchNorm(**d.get("batch_norm", {})), d["activation"])


@lru_cache(maxsize=None)
def seg_zoo() -> dict[str, SegModel]:
    """The segmentation zoo, read from the shipped `segmentation.yaml`."""
    from edgetpu_models.io_utils import read_yaml
    from edgetpu_models.zoo import searched_archs_dir

    path = os.path.join(searched_archs_dir(), SEG_SPEC_FILE)
    data = read_yaml(path, "segmentation spec file", SpecError)
    heads = {k: _parse_head(k, v, path) for k, v in data["heads"].items()}
    out = {}
    for name, raw in data["models"].items():
        d = check_fields(_MODEL_FIELDS, raw, f"models.{name}", path)
        if d["head"] not in heads:
            raise SpecError(f"{path}: models.{name}.head: expected one of {', '.join(heads)}, got {d['head']!r}")
        ref = {k: float(d[k]) for k in ("reference_params_m", "pixel6_ms", "pixel6_fused_ms") if k in d}
        out[name] = SegModel(name, d["backbone"], d["variant"], heads[d["head"]], d["classes"], d["resolution"],
                             d["display_name"], ref)
    return out


def split_ref(ref: str) -> tuple[str, str]:
    """``name@finaliser`` -> (name, finaliser); no ``@``: the logits."""
    name, _, fin = ref.partition("@")
    return name, fin or "logits"


def is_segmentation(ref: Any) -> bool:
    """Whether a model reference names a zoo segmentation model (optionally with ``@finaliser``)."""
    return isinstance(ref, str) and split_ref(ref)[0] in seg_zoo()


def seg_model(name: str) -> SegModel:
    zoo = seg_zoo()
    if name not in zoo:
        raise UnknownModelError(f"{name}: not a segmentation model (available: {', '.join(zoo)})")
    return zoo[name]


def parse_finaliser(text: str) -> tuple[tuple[str, int], ...]:
    """``resize256,argmax,resize512`` -> (("resize", 256), ("argmax", 0), ("resize", 512)). SpecError names the rule."""
    if text == "logits":
        return ()
    steps, seen_argmax = [], False
    for part in text.split(","):
        m = re.fullmatch(r"resize(\d{1,4})", part.strip())
        if part.strip() == "argmax" and not seen_argmax:
            steps.append(("argmax", 0))
            seen_argmax = True
        elif m and 8 <= int(m.group(1)) <= 4096:
            steps.append(("resize", int(m.group(1))))
        else:
            raise SpecError(f"finaliser {text!r}: {part!r}: expected 'resizeN' (N from 8 to 4096) or one 'argmax' "
                            f"(known forms: {', '.join(FINALISERS)})")
    return tuple(steps)


class _Graph:
    """Appends layers to a multi-input graph; every layer names its inputs (tensors are layer names)."""

    def __init__(self, layers: tuple[Layer, ...], input_shape: tuple[int, int, int]):
        self.layers = list(layers)
        self.shapes = {"input": input_shape, **{layer.name: layer.output_shape for layer in layers}}

    def add(self, name: str, op: Op, inputs: tuple[str, ...], out: tuple[int, ...], **kw: Any) -> str:
        self.layers.append(Layer(name, op, inputs, self.shapes[inputs[0]], tuple(out), **kw))
        self.shapes[name] = tuple(out)
        return name

    def conv(self, name: str, x: str, filters: int, kernel: int = 1, bn: bool = True, act: str | None = None,
             depthwise: bool = False, **kw: Any) -> str:
        h, w, c = self.shapes[x]
        op = Op.DEPTHWISE_CONV2D if depthwise else Op.CONV2D
        return self.add(name, op, (x,), (h, w, c if depthwise else filters), kernel=kernel,
                        batch_norm=f"{name}_bn" if bn else None, activation=act, **kw)

    def resize(self, name: str, x: str, hw: tuple[int, int], nearest: bool = False) -> str:
        shape = self.shapes[x]
        if tuple(shape[:2]) == tuple(hw):
            return x
        op = Op.RESIZE_NEAREST if nearest else Op.RESIZE_BILINEAR
        return self.add(name, op, (x,), (*hw, *shape[2:]))

    def concat(self, name: str, xs: list[str]) -> str:
        h, w, _ = self.shapes[xs[0]]
        return self.add(name, Op.CONCAT, tuple(xs), (h, w, sum(self.shapes[x][-1] for x in xs)))

    def add_n(self, name: str, xs: list[str]) -> str:
        """Pairwise adds, as the reference's add_n (tf.add_n does not map to the Edge TPU)."""
        out = xs[0]
        for i, x in enumerate(xs[1:]):
            out = self.add(f"{name}_add{i}" if len(xs) > 2 else f"{name}_add", Op.ADD, (out, x), self.shapes[out])
        return out


def level_endpoints(backbone: LayerGraph) -> dict[int, str]:
    """Feature level -> the output of the last block at stride 2**level (tensorflow/models' backbone levels: the
    stem, then the output of each stack before a stride-2 stack, and the last). Only block outputs count: the
    expansion inside a strided block is still at the previous stride."""
    h = backbone.input_shape[0]
    last = {}  # block (None: the stem) -> its output layer
    for layer in backbone:
        last[layer.block] = layer
    return {(h // layer.output_shape[0]).bit_length() - 1: layer.name for layer in last.values()}


def _trim(backbone: LayerGraph, last: str) -> tuple[Layer, ...]:
    """The backbone up to and including `last` (the deepest feature the head reads; later stages are dead code)."""
    names = [layer.name for layer in backbone]
    return backbone.layers[:names.index(last) + 1]


def _deeplab_head(g: _Graph, feats: dict[int, str], head: SegHead, classes: int) -> str:
    """ASPP on `level`, deeplabv3+ fusion with `low_level`, separable convs, 1x1 classifier (see the YAML)."""
    p, act = head.params, head.activation
    x = feats[p["level"]]
    h, w, _ = g.shapes[x]
    branches = [g.conv("aspp_conv0", x, p["aspp_filters"], act=act)]
    for i, rate in enumerate(p["dilation_rates"], 1):
        dw = g.conv(f"aspp_dw{i}", x, 0, 3, bn=False, depthwise=True, dilation=rate)
        branches.append(g.conv(f"aspp_conv{i}", dw, p["aspp_filters"], act=act))
    # AveragePooling2D(pool_size), stride = pool size, VALID; clamped to the map (below 512 input it is smaller)
    k = max(1, min(p["pool_size"], h, w))
    pooled = g.add("aspp_pool", Op.AVG_POOL2D, (x,), (h // k, w // k, g.shapes[x][-1]), kernel=k, stride=k)
    pooled = g.conv("aspp_pool_conv", pooled, p["aspp_filters"], act=act)
    branches.append(g.resize("aspp_pool_resize", pooled, (h, w)))
    x = g.conv("aspp_project", g.concat("aspp_concat", branches), p["aspp_filters"], act=act)
    x = g.add("aspp_dropout", Op.DROPOUT, (x,), g.shapes[x], rate=p["dropout"])
    low = g.conv("head_low_conv", feats[p["low_level"]], p["low_level_filters"], act=act)
    x = g.concat("head_concat", [g.resize("head_resize", x, g.shapes[low][:2]), low])
    for i in range(p["num_convs"]):
        x = g.conv(f"head_dw{i}", x, 0, 3, act=act, depthwise=True)
        x = g.conv(f"head_conv{i}", x, p["filters"], act=act)
    return g.conv("logits", x, classes, bn=False, use_bias=True)


def _bifpn_nodes(min_level: int, max_level: int) -> list[tuple[int, list[int]]]:
    """BiFPN's nodes as (level, input node ids): the reference's `bifpn_config` (top-down, then bottom-up)."""
    ids = {lv: [lv - min_level] for lv in range(min_level, max_level + 1)}
    nodes, count = [], max_level - min_level + 1
    for lv in range(max_level - 1, min_level - 1, -1):
        nodes.append((lv, [ids[lv][-1], ids[lv + 1][-1]]))
        ids[lv].append(count)
        count += 1
    for lv in range(min_level + 1, max_level + 1):
        nodes.append((lv, ids[lv] + [ids[lv - 1][-1]]))
        ids[lv].append(count)
        count += 1
    return nodes


def _resample(g: _Graph, name: str, x: str, hw: tuple[int, int]) -> str:
    """ResampleFeatureMap between same-width maps: average pool (kernel stride + 1, SAME) down, bilinear up."""
    h, w, c = g.shapes[x]
    if h > hw[0] and w > hw[1]:
        s = (h - 1) // hw[0] + 1
        return g.add(f"{name}_pool", Op.AVG_POOL2D, (x,), (-(-h // s), -(-w // s), c), kernel=s + 1, stride=s)
    return g.resize(f"{name}_up", x, hw)


def _sep_conv(g: _Graph, name: str, x: str, filters: int, act: str | None, bn: bool = True) -> str:
    """SeparableConv2D(3x3) as its two stock ops: depthwise (no BN, no bias) + pointwise (BN + act, or bias)."""
    dw = g.conv(f"{name}_dw", x, 0, 3, bn=False, depthwise=True)
    return g.conv(f"{name}_pw", dw, filters, bn=bn, act=act, use_bias=not bn)


def _bifpn_inputs(g: _Graph, feats: dict[int, str], p: Mapping[str, Any]) -> list[str]:
    """Levels min..max at `filters` channels: 1x1 conv (+bias) + BN on narrower backbone levels, and extra levels
    by 1x1 conv (if needed) + average pooling of the deepest (the reference's downsample / resample layers)."""
    f, top = p["filters"], max(feats)
    levels = {}
    for lv in range(p["min_level"], top + 1):
        x = feats[lv]
        if g.shapes[x][-1] != f:
            x = g.conv(f"resample_p{lv}_conv", x, f, bn=True, use_bias=True)
        levels[lv] = x
    x = feats[top]
    for lv in range(top + 1, p["max_level"] + 1):
        if g.shapes[x][-1] != f:
            x = g.conv(f"downsample_p{lv}_conv", x, f, bn=False, use_bias=True)
        h, w, c = g.shapes[x]
        x = levels[lv] = g.add(f"downsample_p{lv}_pool", Op.AVG_POOL2D, (x,), (-(-h // 2), -(-w // 2), c),
                               kernel=3, stride=2)
    return [levels[lv] for lv in range(p["min_level"], p["max_level"] + 1)]


def _bifpn_head(g: _Graph, feats: dict[int, str], head: SegHead, classes: int) -> str:
    p, act = head.params, head.activation
    lo, hi, f = p["min_level"], p["max_level"], p["filters"]
    level_feats = _bifpn_inputs(g, feats, p)
    config = _bifpn_nodes(lo, hi)
    for cell in range(p["repeats"]):
        nodes = list(level_feats)
        for i, (lv, offsets) in enumerate(config):
            hw = g.shapes[level_feats[lv - lo]][:2]
            name = f"cell{cell}_node{i}"
            ins = [_resample(g, f"{name}_in{j}", nodes[o], hw) for j, o in enumerate(offsets)]
            nodes.append(_sep_conv(g, name, g.add_n(name, ins), f, act))
        level_feats = [next(nodes[len(level_feats) + i] for i in reversed(range(len(config))) if config[i][0] == lv)
                       for lv in range(lo, hi + 1)]
    hw = g.shapes[level_feats[0]][:2]
    ins = [_resample(g, f"seg_fusion_in{j}", x, hw) for j, x in enumerate(level_feats)]
    x = _sep_conv(g, "seg_fusion", g.add_n("seg_fusion", ins), f, act)
    return _sep_conv(g, "logits", x, classes, None, bn=False)


_HEADS = {"deeplabv3plus": _deeplab_head, "bifpn": _bifpn_head}


def _finalise(g: _Graph, x: str, finaliser: str) -> str:
    argmaxed = False
    for i, (step, size) in enumerate(parse_finaliser(finaliser)):
        if step == "argmax":
            h, w, _ = g.shapes[x]
            x = g.add("argmax", Op.ARGMAX, (x,), (h, w))
            argmaxed = True
        else:
            h = g.shapes[x][0]
            if argmaxed and size % h:
                raise SpecError(f"finaliser {finaliser!r}: resize{size} after argmax must be a whole multiple of the "
                                f"{h} x {h} class map")
            x = g.resize(f"final_resize{i}", x, (size, size), nearest=argmaxed)
    return x


def backbone_graph(model: SegModel, resolution: int | None = None) -> LayerGraph:
    from edgetpu_models.zoo import searched_archs_dir

    spec = load_spec(os.path.join(searched_archs_dir(), model.backbone))
    arch = resolve(spec, model.variant, resolution or model.resolution)
    return arch_to_graph(arch, backbone_only=True)


def segmentation_graph(ref: str, resolution: int | None = None, classes: int | None = None) -> LayerGraph:
    """The layer graph of a segmentation model reference (``name`` or ``name@finaliser``): backbone up to the deepest
    level its head reads, the head, and the finaliser. Every layer is one the builder can build. TF-free."""
    name, finaliser = split_ref(ref)
    model = seg_model(name)
    res = resolution or model.resolution
    if res % 32:
        raise SpecError(f"{name}: resolution: expected a multiple of 32 (the backbone's stride), got {res}")
    bb = backbone_graph(model, res)
    ends = level_endpoints(bb)
    need = [lv for lv in ends if lv >= 3]
    deepest = max(need) if model.head.type == "bifpn" else model.head.params["level"]
    g = _Graph(_trim(bb, ends[deepest]), bb.input_shape)
    x = _HEADS[model.head.type](g, ends, model.head, classes or model.classes)
    _finalise(g, x, finaliser)
    suffix = "" if finaliser == "logits" else "_" + re.sub(r"[^a-z0-9]+", "_", finaliser)
    return LayerGraph(name + suffix, bb.input_shape, tuple(g.layers))
