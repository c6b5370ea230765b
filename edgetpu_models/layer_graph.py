"""The layer graph: one TF-free list of layers (ops with shapes, parameters and MACs) for a network.

It is the intermediate representation shared by the Keras builder (which walks it to create layers), the profiler
(which sums it), and the latency models (which cost it). Front ends other than specs (Keras models, .tflite files)
produce the same `LayerGraph` so every consumer sees one structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable, Iterable, Iterator

from edgetpu_models.spec import Arch, BlockArgs


class Op(StrEnum):
    """The layer graph's op vocabulary: every op a front end may emit and a consumer must handle. A StrEnum, so a
    layer's op compares equal to (and serialises as) its name, e.g. `Op.CONV2D == "conv2d"`."""

    CONV2D = "conv2d"
    DEPTHWISE_CONV2D = "depthwise_conv2d"
    ADD = "add"
    GLOBAL_AVG_POOL = "global_avg_pool"
    GLOBAL_MAX_POOL = "global_max_pool"
    DROPOUT = "dropout"
    DENSE = "dense"
    # Ops that Keras-applications networks and converted .tflite files add (the latency front ends emit them):
    MAX_POOL2D = "max_pool2d"
    AVG_POOL2D = "avg_pool2d"
    CONCAT = "concat"
    PAD = "pad"
    MUL = "mul"
    ACTIVATION = "activation"
    RESHAPE = "reshape"
    SOFTMAX = "softmax"
    QUANTIZE = "quantize"
    SPLIT = "split"
    """The channel split of a grouped convolution as the builder lowers it (`lowered`)."""
    RESIZE_BILINEAR = "resize_bilinear"
    """Bilinear resize to `output_shape` (segmentation heads and finalisers; TFLite RESIZE_BILINEAR)."""
    RESIZE_NEAREST = "resize_nearest"
    """Nearest-neighbour resize to `output_shape` (a class map's final upsampling; RESIZE_NEAREST_NEIGHBOR)."""
    ARGMAX = "argmax"
    """Index of the largest channel per pixel, (H, W, C) -> (H, W) (a segmentation finaliser; TFLite ARG_MAX)."""
    OTHER = "other"
    """A .tflite op none of the above describes: costed as element-wise work."""


OPS = tuple(Op)
"""`kernel`/`stride` also describe the window of max_pool2d/avg_pool2d; a `mul` or `add` with one input works against
constants (a standalone BatchNormalization is one per-channel affine `mul`); `reshape` (flatten, squeeze) moves no
data."""
SPEC_OPS = frozenset({Op.CONV2D, Op.DEPTHWISE_CONV2D, Op.ADD, Op.GLOBAL_AVG_POOL, Op.GLOBAL_MAX_POOL, Op.DROPOUT,
                      Op.DENSE, Op.AVG_POOL2D, Op.CONCAT, Op.RESIZE_BILINEAR, Op.RESIZE_NEAREST, Op.ARGMAX})
"""The ops a spec's graph is made of: what the Keras builder can build (the last five for segmentation heads)."""
WEIGHTED_OPS = frozenset({Op.CONV2D, Op.DEPTHWISE_CONV2D, Op.DENSE})


def numel(shape: Iterable[int]) -> int:
    """Elements of a tensor of `shape` (1 for a scalar): the one product of a shape."""
    return int(math.prod(shape))


@dataclass(frozen=True)
class Layer:
    """One op. Shapes are (H, W, C) for feature maps and (C,) after pooling. Conv layers carry their BN and activation,
    which inference fuses into them (as the TFLite converter and the Edge TPU do)."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernel: int = 1
    stride: int = 1
    batch_norm: str | None = None     # name of the BatchNormalization layer that follows, if any
    activation: str | None = None     # activation fused after BN, if any
    rate: float = 0.0                 # dropout rate ('dropout'), drop-connect rate of the residual branch ('add')
    block: str | None = None          # the block this layer belongs to, e.g. "blocks_3_0"
    weight_params: int = field(default=-1, compare=False)
    """Weights stored for inference, override for front ends that know them exactly (-1: derive from shapes)."""
    kernel_hw: tuple[int, int] | None = None
    """(height, width) of a non-square kernel or window (Inception's 1x7 / 7x1); None: kernel x kernel."""
    groups: int = 1
    """conv2d only: a grouped convolution, each output channel seeing in_channels / groups inputs."""
    padding: str = "same"
    """"same" (TensorFlow) or "symmetric" ((kernel - 1) // 2 on every side, PyTorch); set only where they differ."""
    source_op: int = field(default=-1, compare=False)
    """The operator index in the .tflite this layer was read from (-1: not from a .tflite)."""
    dilation: int = 1
    """conv2d / depthwise_conv2d: atrous rate (ASPP); the kernel's taps and MACs are unchanged."""
    use_bias: bool = False
    """conv2d / depthwise_conv2d: a trained bias (a head's final conv); counted in `params`."""

    def __post_init__(self) -> None:
        if not isinstance(self.op, Op):
            try:
                object.__setattr__(self, "op", Op(self.op))
            except ValueError:
                raise ValueError(f"layer {self.name}: unknown op {str(self.op)[:40]!r} (expected one of "
                                 f"{', '.join(OPS)})") from None

    @property
    def kernel_area(self) -> int:
        return self.kernel_hw[0] * self.kernel_hw[1] if self.kernel_hw else self.kernel * self.kernel

    @property
    def in_channels(self) -> int:
        return self.input_shape[-1]

    @property
    def out_channels(self) -> int:
        return self.output_shape[-1]

    @property
    def params(self) -> int:
        """Trainable parameters: kernels, BN gamma and beta, dense weights and bias (BN moving statistics excluded)."""
        bn = 2 * self.out_channels if self.batch_norm else 0
        if self.use_bias:
            bn += self.out_channels
        if self.op == Op.CONV2D:
            return self.kernel_area * self.in_channels // self.groups * self.out_channels + bn
        if self.op == Op.DEPTHWISE_CONV2D:
            return self.kernel_area * self.in_channels + bn
        if self.op == Op.DENSE:
            return self.in_channels * self.out_channels + self.out_channels
        return 0

    @property
    def macs(self) -> int:
        """Multiply-accumulates for one image (convolutions and the classifier; adds and pooling count zero)."""
        if self.op == Op.CONV2D:
            h, w, c = self.output_shape
            return h * w * c * self.kernel_area * self.in_channels // self.groups
        if self.op == Op.DEPTHWISE_CONV2D:
            h, w, c = self.output_shape
            return h * w * c * self.kernel_area
        if self.op == Op.DENSE:
            return self.in_channels * self.out_channels
        return 0

    @property
    def inference_params(self) -> int:
        """Parameters after BN folding (what an int8 model stores): kernel + one bias per output channel."""
        if self.weight_params >= 0:
            return self.weight_params
        if self.op == Op.CONV2D:
            return self.kernel_area * self.in_channels // self.groups * self.out_channels + self.out_channels
        if self.op == Op.DEPTHWISE_CONV2D:
            return self.kernel_area * self.in_channels + self.out_channels
        if self.op == Op.DENSE:
            return self.in_channels * self.out_channels + self.out_channels
        return 0


@dataclass(frozen=True)
class LayerGraph:
    name: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].output_shape


def _same_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded op (TensorFlow convention)."""
    return -(-size // stride)


class _Walker:
    """Appends layers while tracking the current tensor name and shape."""

    def __init__(self, input_shape: tuple[int, int, int], padding: str = "same"):
        self.padding = padding
        self.layers: list[Layer] = []
        self.tensor = "input"
        self.shape: tuple[int, ...] = input_shape

    def add(self, name: str, op: str, out_shape: tuple[int, ...], inputs: tuple[str, ...] | None = None,
            **kw) -> None:
        layer = Layer(name=name, op=op, inputs=inputs or (self.tensor,), input_shape=self.shape,
                      output_shape=out_shape, **kw)
        self.layers.append(layer)
        self.tensor, self.shape = name, out_shape

    def conv(self, name: str, filters: int, kernel: int, stride: int, bn: str, act: str | None,
             block: str | None = None, depthwise: bool = False, groups: int = 1) -> None:
        h, w, c = self.shape
        out = (_same_out(h, stride), _same_out(w, stride), c if depthwise else filters)
        # Symmetric padding gives the same output size; it differs from SAME only for strided, wider than 1 kernels.
        padding = self.padding if stride > 1 and kernel > 1 else "same"
        self.add(name, Op.DEPTHWISE_CONV2D if depthwise else Op.CONV2D, out, kernel=kernel, stride=stride,
                 batch_norm=bn, activation=act, block=block, groups=groups, padding=padding)


def _block_layers(wk: _Walker, b: BlockArgs, act: str) -> None:
    """Layer names follow timm's state-dict names (dots -> underscores) so timm weights map by name."""
    p, block_input = b.name, wk.tensor
    expands = b.expand_filters != b.input_filters
    if b.block == "conv":
        wk.conv(f"{p}_conv", b.output_filters, b.kernel, b.stride, f"{p}_bn1", act, p)
        return
    if b.block == "fused_ibn":
        if expands:
            wk.conv(f"{p}_conv_exp", b.expand_filters, b.kernel, b.stride, f"{p}_bn1", act, p, groups=b.groups)
            wk.conv(f"{p}_conv_pwl", b.output_filters, 1, 1, f"{p}_bn2", None, p)
        else:  # expansion 1: nothing to fuse, only the linear projection (MobilenetEdgeTPU's first block)
            wk.conv(f"{p}_conv_pwl", b.output_filters, 1, b.stride, f"{p}_bn1", None, p)
    elif expands:  # ibn
        wk.conv(f"{p}_conv_pw", b.expand_filters, 1, 1, f"{p}_bn1", act, p)
        wk.conv(f"{p}_conv_dw", 0, b.kernel, b.stride, f"{p}_bn2", act, p, depthwise=True)
        wk.conv(f"{p}_conv_pwl", b.output_filters, 1, 1, f"{p}_bn3", None, p)
    else:  # ibn with expansion 1: depthwise-separable (timm's DepthwiseSeparableConv naming)
        wk.conv(f"{p}_conv_dw", 0, b.kernel, b.stride, f"{p}_bn1", act, p, depthwise=True)
        wk.conv(f"{p}_conv_pw", b.output_filters, 1, 1, f"{p}_bn2", None, p)
    if b.residual:
        wk.add(f"{p}_add", Op.ADD, wk.shape, inputs=(wk.tensor, block_input), rate=b.drop_rate, block=p)


def add_stem(wk: _Walker, arch: Arch) -> None:
    wk.conv("stem_conv", arch.stem.filters, arch.stem.kernel, arch.stem.stride, "stem_bn", arch.activation)


def add_block(wk: _Walker, b: BlockArgs, act: str) -> None:
    _block_layers(wk, b, act)


def add_head(wk: _Walker, arch: Arch, include_top: bool = True, classes: int = 1000,
             pooling: str | None = None) -> None:
    wk.conv("head_conv", arch.head_filters, 1, 1, "head_bn", arch.activation)
    c = wk.shape[-1]
    if include_top:
        wk.add("avg_pool", Op.GLOBAL_AVG_POOL, (c,))
        if arch.dropout > 0:
            wk.add("top_dropout", Op.DROPOUT, (c,), rate=arch.dropout)
        wk.add("classifier", Op.DENSE, (classes,))
    elif pooling in ("avg", "max"):
        wk.add(f"{pooling}_pool", f"global_{pooling}_pool", (c,))


def piece_layers(input_shape: tuple[int, ...], padding: str,
                 add: Callable[[_Walker], None]) -> tuple[tuple[Layer, ...], tuple[int, ...]]:
    """The layers one of `add_stem` / `add_block` / `add_head` appends at `input_shape`, and the shape after them:
    how the latency estimator memoises a graph piece by piece (`arch_to_graph` is these pieces in order)."""
    wk = _Walker(tuple(input_shape), padding)  # type: ignore[arg-type]
    add(wk)
    return tuple(wk.layers), wk.shape


def arch_to_graph(arch: Arch, include_top: bool = True, classes: int = 1000, pooling: str | None = None,
                  input_shape: tuple[int, int, int] | None = None, backbone_only: bool = False) -> LayerGraph:
    """Expands a resolved architecture into its layer graph (keras.applications semantics for the head arguments).
    `backbone_only`: stem and blocks only, no head conv (a feature extractor, as segmentation models use)."""
    if input_shape is None:
        input_shape = (arch.resolution, arch.resolution, 3)
    wk = _Walker(tuple(input_shape), arch.padding)
    add_stem(wk, arch)
    for b in arch.blocks:
        add_block(wk, b, arch.activation)
    if not backbone_only:
        add_head(wk, arch, include_top, classes, pooling)
    return LayerGraph(name=arch.name if arch.variant is None else f"{arch.name}_{arch.variant}",
                      input_shape=tuple(input_shape), layers=tuple(wk.layers))


def group_parts(layer: Layer) -> list[Layer]:
    """The lowering of a grouped conv2d, described once (the builder builds it, `lowered` costs it): the input is split
    along channels into `groups` parts (a `<conv>_split`), part i goes through its own conv2d `<conv>_g<i>` with its own
    batch norm `<bn>_g<i>` and activation, making out_channels / groups channels, and the parts are concatenated. Why
    this form and not a native grouped Conv2D: builder.GROUPED_CONV_LOWERING."""
    g, (h, w, cin), (oh, ow, cout) = layer.groups, layer.input_shape, layer.output_shape
    return [replace(layer, name=f"{layer.name}_g{i}", inputs=(f"{layer.name}_split",), input_shape=(h, w, cin // g),
                    output_shape=(oh, ow, cout // g), groups=1,
                    batch_norm=f"{layer.batch_norm}_g{i}" if layer.batch_norm else None) for i in range(g)]


def lowered(graph: LayerGraph) -> LayerGraph:
    """The graph in the ops the builder emits and the int8 converter keeps, for latency costing: a grouped conv2d
    becomes split + one conv2d per group + concat (`group_parts`; per-group MACs and weights, plus the data the split
    and concatenation move), and a symmetric-padded conv gets its explicit pad. Same params and MACs."""
    if all(layer.groups == 1 and layer.padding == "same" for layer in graph.layers):
        return graph
    out: list[Layer] = []
    for layer in graph.layers:
        if layer.padding == "symmetric":
            p = (layer.kernel - 1) // 2
            h, w, c = layer.input_shape
            pad = Layer(f"{layer.name}_pad", Op.PAD, layer.inputs, layer.input_shape, (h + 2 * p, w + 2 * p, c),
                        block=layer.block)
            out.append(pad)
            layer = replace(layer, inputs=(pad.name,), padding="same")  # same costs once the pad is explicit
        if layer.groups == 1:
            out.append(layer)
            continue
        parts = group_parts(layer)
        split = Layer(parts[0].inputs[0], Op.SPLIT, layer.inputs, layer.input_shape, layer.input_shape,
                      block=layer.block)
        out += [split, *parts, Layer(layer.name, Op.CONCAT, tuple(p.name for p in parts), parts[0].output_shape,
                                     layer.output_shape, block=layer.block)]
    return replace(graph, layers=tuple(out))
