"""CPU kernels and their features (nn-Meter's view: a model's CPU latency is the sum of its fused kernels').

A kernel is a layer of the fused layer graph; its type comes from op, kernel size and stride (XNNPACK picks a
different micro-kernel for 1x1 convs, k x k convs, depthwise 3x3 / 5x5, strides...), its family is the coarser
fallback for types never seen in training, and its features are what the per-type regressors are linear in.
"""

from __future__ import annotations

import math

from edgetpu_models.layer_graph import Layer, Op, numel
from edgetpu_models.nas.latency.apm import param_bytes

FEATURES = ("const", "macs", "in_elems", "out_elems", "weight_bytes")


FREE = frozenset({Op.RESHAPE, Op.DROPOUT, Op.QUANTIZE})
FAMILIES = ("conv", "dwconv", "fc", "gpool", "pool", "softmax", "concat", "elementwise")


def kernel_family(layer: Layer) -> str:
    op = layer.op
    if op == Op.CONV2D:
        return "conv"
    if op == Op.DEPTHWISE_CONV2D:
        return "dwconv"
    if op == Op.DENSE:
        return "fc"
    if op in (Op.GLOBAL_AVG_POOL, Op.GLOBAL_MAX_POOL):
        return "gpool"
    if op in (Op.MAX_POOL2D, Op.AVG_POOL2D):
        return "pool"
    if op == Op.SOFTMAX:
        return "softmax"
    if op == Op.CONCAT:
        return "concat"
    return "elementwise"  # add, mul, pad, activation, unknown ops


def kernel_key(layer: Layer) -> str:
    """The kernel type: family plus what selects a different micro-kernel."""
    fam = kernel_family(layer)
    if fam in ("conv", "dwconv", "pool"):
        k = f"{layer.kernel_hw[0]}x{layer.kernel_hw[1]}" if layer.kernel_hw else f"{layer.kernel}x{layer.kernel}"
        if fam == "conv" and layer.kernel == 1 and not layer.kernel_hw:
            return f"conv1x1s{layer.stride}"
        return f"{fam}{k}s{layer.stride}"
    if fam == "elementwise":
        return f"elementwise_{layer.op}_{len(layer.inputs)}"
    return fam


def kernel_features(layer: Layer) -> list[float]:
    """[1, padded MACs, input elements, output elements, weight bytes] in millions (XNNPACK packs output channels in
    groups of 8 and input channels in groups of 4 for int8 GEMMs, so MACs are counted on padded channel counts)."""
    out_e = numel(layer.output_shape)
    in_e = numel(layer.input_shape) * (len(layer.inputs) if layer.op in (Op.ADD, Op.MUL) else 1)
    if layer.op == Op.CONCAT:
        in_e = out_e
    macs = layer.macs
    if layer.op in (Op.CONV2D, Op.DENSE):
        cin, cout = layer.in_channels, layer.out_channels
        pad = (math.ceil(cin / 4) * 4 / cin) * (math.ceil(cout / 8) * 8 / cout)
        macs = macs * pad
    elif layer.op == Op.DEPTHWISE_CONV2D:
        macs = macs * math.ceil(layer.out_channels / 8) * 8 / layer.out_channels
    elif layer.op in (Op.MAX_POOL2D, Op.AVG_POOL2D):
        macs = out_e * layer.kernel_area
    return [1.0, macs / 1e6, in_e / 1e6, out_e / 1e6, param_bytes(layer) / 1e6]
