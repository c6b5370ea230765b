"""Front ends of the latency models: a spec, a Keras model (or .keras/.h5 file) or an int8 .tflite -> `LayerGraph`.

All three describe what an int8 converter produces: convolutions carry their BatchNormalization and activation (the
TFLite converter folds them), a standalone BatchNormalization is one per-channel affine `mul`, reshapes and dropout
are free, and a softmax classifier is a `dense` followed by a `softmax`. The quantize ops that convert the graph's
uint8 input and output are part of the host transfer, not layers. So the same network gives the same graph, and the
same estimate, through any front end.

The spec and .tflite front ends never import TensorFlow (the .tflite one reads the flatbuffer with the project's
one reader, `edgetpu_models.tflite_reader`); only the Keras front end does, and only when given a file.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

from edgetpu_models.errors import ModelFileError
from edgetpu_models.layer_graph import Layer, LayerGraph, Op, arch_to_graph
from edgetpu_models.model_io import load_keras, resolve_model
from edgetpu_models.seg_graph import is_segmentation, segmentation_graph
from edgetpu_models.spec import Arch, Spec, resolve
from edgetpu_models.zoo import resolve_spec

# ---------------------------------------------------------------------------------------------------------------------
# Spec (the fast path)

def spec_arch(model: "str | os.PathLike[str] | Spec", variant: str | None = None,
              resolution: int | None = None) -> Arch:
    """A spec (or zoo name, or spec file) with its variant and resolution applied."""
    spec, variant = resolve_spec(model, variant)
    return resolve(spec, variant, resolution)


def classifier_softmax(shape: tuple[int, ...], after: str = "classifier") -> Layer:
    """The softmax `build_model` ends a classifier with (the converter keeps it as an op of its own)."""
    return Layer(name="classifier_softmax", op=Op.SOFTMAX, inputs=(after,), input_shape=shape, output_shape=shape)


def arch_graph(arch: Arch, classes: int = 1000) -> LayerGraph:
    graph = arch_to_graph(arch, include_top=True, classes=classes)
    last = graph.layers[-1]
    return LayerGraph(graph.name, graph.input_shape, graph.layers + (classifier_softmax(last.output_shape, last.name),))


def spec_graph(model: "str | os.PathLike[str] | Spec", variant: str | None = None,
               resolution: int | None = None, classes: int = 1000) -> LayerGraph:
    """The graph of a spec as `build_model` builds it (softmax classifier) and the converter lowers it. TF-free."""
    return arch_graph(spec_arch(model, variant, resolution), classes)


# ---------------------------------------------------------------------------------------------------------------------
# .tflite

_TFLITE_ACTS = {"NONE": None, "RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1", "TANH": "tanh"}
_ELEMENTWISE = {"RELU": Op.ACTIVATION, "RELU6": Op.ACTIVATION, "RELU_N1_TO_1": Op.ACTIVATION, "LOGISTIC": Op.ACTIVATION,
                "TANH": Op.ACTIVATION, "HARD_SWISH": Op.ACTIVATION, "LEAKY_RELU": Op.ACTIVATION, "PRELU": Op.ACTIVATION,
                "ADD": Op.ADD, "SUB": Op.ADD, "MUL": Op.MUL, "MAXIMUM": Op.ADD, "MINIMUM": Op.ADD,
                "CONCATENATION": Op.CONCAT, "PAD": Op.PAD, "PADV2": Op.PAD, "MIRROR_PAD": Op.PAD, "SOFTMAX": Op.SOFTMAX,
                "QUANTIZE": Op.QUANTIZE, "DEQUANTIZE": Op.QUANTIZE, "RESHAPE": Op.RESHAPE, "SQUEEZE": Op.RESHAPE,
                "EXPAND_DIMS": Op.RESHAPE}
_WEIGHT_DTYPES = ("INT8", "UINT8")


def _short(name: str, index: int) -> str:
    """A readable layer name from a TFLite tensor name (last meaningful path parts)."""
    parts = [p for p in re.split(r"[/;]", name.split(";")[0])
             if p and not p.startswith(("serving_default", "Stateful"))]
    base = "/".join(parts[-2:]) if parts else ""
    return base or f"op{index}"


def _check_tflite_input(m: Any) -> Any:
    """The one static [1, H, W, C] input tensor of a one-subgraph model (ModelFileError otherwise)."""
    src = m.source
    if m.subgraph_count != 1:
        raise ModelFileError(f"{src}: expected one subgraph, found {m.subgraph_count}")
    if len(m.inputs) != 1:
        raise ModelFileError(f"{src}: expected one input tensor (an image), found {len(m.inputs)}")
    t_in = m.tensor(m.inputs[0])
    if len(t_in.shape) != 4 or t_in.shape[0] != 1 or any(d < 0 for d in t_in.shape_signature[1:]):
        raise ModelFileError(f"{src}: input {t_in.name!r}: expected a static shape [1, H, W, C], got "
                             f"{list(t_in.shape_signature)}")
    return t_in


def _check_tflite_op(src: str, op: Any, acts: list, consts: list, out: Any) -> None:
    """An operator of a fully int8 model with static shapes (ModelFileError otherwise)."""
    if op.opcode not in ("QUANTIZE", "DEQUANTIZE"):
        for t in acts + [out]:
            if t.dtype.startswith(("FLOAT", "COMPLEX")):
                raise ModelFileError(f"{src}: operator {op.index} ({op.opcode}) tensor {t.name!r} is {t.dtype}: "
                                     f"expected a fully int8-quantized model")
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and consts \
            and consts[0].dtype not in _WEIGHT_DTYPES:
        raise ModelFileError(f"{src}: operator {op.index} ({op.opcode}) has {consts[0].dtype} weights: expected an "
                             f"int8-quantized model")
    if any(d < 0 for d in out.shape_signature[1:]):  # a dynamic batch runs as batch 1
        raise ModelFileError(f"{src}: tensor {out.name!r} has a dynamic shape {list(out.shape_signature)}")


def _window(kh: int, kw: int) -> dict[str, Any]:
    return {"kernel": max(kh, kw), "kernel_hw": None if kh == kw else (kh, kw)}


def _tflite_layer_args(src: str, op: Any, acts: list, consts: list, out: Any) -> tuple[Op, dict[str, Any]]:
    """(graph op, Layer keyword arguments beyond name and inputs) of one TFLite operator."""
    opts = op.options
    act = _TFLITE_ACTS.get(str(opts.get("fused_activation_function", "NONE")), None)
    in_shape = tuple(acts[0].shape[1:]) if acts else tuple(out.shape[1:])
    shapes = {"input_shape": in_shape, "output_shape": tuple(out.shape[1:])}
    weights = sum(_elems(t.shape) for t in consts)
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w = consts[0] if consts else None
        if w is None or len(w.shape) != 4:
            raise ModelFileError(f"{src}: operator {op.index} ({op.opcode}) has no constant 4-D filter")
        kind = Op.CONV2D if op.opcode == "CONV_2D" else Op.DEPTHWISE_CONV2D
        return kind, {**shapes, **_window(w.shape[1], w.shape[2]), "stride": int(opts.get("stride_h", 1)),
                      "activation": act, "weight_params": weights}
    if op.opcode == "FULLY_CONNECTED":
        return Op.DENSE, {"input_shape": (_elems(acts[0].shape[1:]),), "output_shape": (_elems(out.shape[1:]),),
                          "activation": act, "weight_params": weights}
    if op.opcode in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        window = _window(int(opts.get("filter_height", 1)), int(opts.get("filter_width", 1)))
        return (Op.MAX_POOL2D if op.opcode == "MAX_POOL_2D" else Op.AVG_POOL2D,
                {**shapes, **window, "stride": int(opts.get("stride_h", 1)), "activation": act})
    if op.opcode in ("MEAN", "REDUCE_MAX", "SUM"):
        out_shape = tuple(d for d in out.shape[1:] if d != 1) or (1,)
        return (Op.GLOBAL_MAX_POOL if op.opcode == "REDUCE_MAX" else Op.GLOBAL_AVG_POOL,
                {"input_shape": in_shape, "output_shape": out_shape})
    kind = _ELEMENTWISE.get(op.opcode, Op.OTHER)
    return kind, {**shapes, "activation": act, "weight_params": weights if kind in (Op.ADD, Op.MUL) else -1}


def tflite_graph(path_or_bytes: "str | os.PathLike[str] | bytes", name: str | None = None) -> LayerGraph:
    """The layer graph of an int8 .tflite (what the Edge TPU compiler sees). Raises ModelFileError for a file that
    is not a TFLite flatbuffer, has more than one subgraph, dynamic shapes, or float weights/activations."""
    from edgetpu_models.tflite_reader import read_tflite

    m = read_tflite(path_or_bytes)
    t_in = _check_tflite_input(m)
    producers: dict[int, str] = {m.inputs[0]: "input"}
    layers: list[Layer] = []
    used: set[str] = set()
    for op in m.operators:
        ins = [m.tensor(i) for i in op.inputs if i >= 0]
        outs = [m.tensor(i) for i in op.outputs if i >= 0]
        if not outs:
            continue
        acts, consts = [t for t in ins if not t.is_constant], [t for t in ins if t.is_constant]
        _check_tflite_op(m.source, op, acts, consts, outs[0])
        # io quantize ops (uint8 <-> int8) belong to the host transfer
        if op.opcode == "QUANTIZE" and acts and (op.inputs[0] in m.inputs or op.outputs[0] in set(m.outputs)):
            producers[op.outputs[0]] = producers.get(op.inputs[0], "input")
            continue
        lname = _short(outs[0].name, op.index)
        lname = f"{lname}_{op.index}" if lname in used else lname
        used.add(lname)
        inputs = tuple(producers.get(i, "input") for i in op.inputs if i >= 0 and not m.tensor(i).is_constant)
        kind, kw = _tflite_layer_args(m.source, op, acts, consts, outs[0])
        layers.append(Layer(name=lname, op=kind, inputs=inputs or ("input",), source_op=op.index, **kw))
        producers.update((i, lname) for i in op.outputs if i >= 0)
    if not layers:
        raise ModelFileError(f"{m.source}: no operators to estimate")
    base = name or (os.path.splitext(os.path.basename(m.source))[0] if m.source != "<bytes>" else "tflite_model")
    return LayerGraph(base, tuple(t_in.shape[1:]), tuple(layers))  # type: ignore[arg-type]


def _elems(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ---------------------------------------------------------------------------------------------------------------------
# Keras

def _shape(s: Any) -> tuple[int, ...]:
    if isinstance(s, list):
        s = s[0]
    return tuple(int(d) for d in tuple(s)[1:])


_IDENTITY_LAYERS = ("Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "ActivityRegularization")
_ELEMENTWISE_LAYERS = {"Add": Op.ADD, "Subtract": Op.ADD, "Maximum": Op.ADD, "Minimum": Op.ADD, "Multiply": Op.MUL,
                       "Concatenate": Op.CONCAT, "Flatten": Op.RESHAPE, "Reshape": Op.RESHAPE}


class _KerasGraph:
    """Walks a functional tf_keras model layer by layer and emits graph layers, applying the converter's fusions."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.consumers: dict[str, list[Any]] = {}
        for layer in model.layers:
            for src in _inbound(layer):
                self.consumers.setdefault(src, []).append(layer)
        self.tensor: dict[str, str] = {}   # keras layer name -> graph layer name carrying its output
        self.out: dict[str, Layer] = {}    # graph layers by name, in order

    def emit(self, layer: Layer) -> None:
        self.out[layer.name] = layer

    def alias(self, keras_name: str, graph_name: str) -> None:
        self.tensor[keras_name] = graph_name

    def fusable(self, srcs: list[str], kinds: tuple[Op, ...]) -> Layer | None:
        """The graph layer producing the only input, if it is of `kinds`, has no other consumer and no activation."""
        if not srcs:
            return None
        g = self.out.get(self.tensor.get(srcs[0], ""))
        if g is not None and g.op in kinds and len(self.consumers.get(srcs[0], ())) == 1 and g.activation is None:
            return g
        return None

    def add(self, layer: Any) -> None:
        cls = type(layer).__name__
        if cls == "InputLayer":
            self.alias(layer.name, "input")
            return
        srcs = _inbound(layer)
        ins = tuple(self.tensor.get(s, "input") for s in srcs)
        try:
            shapes = (_shape(layer.input_shape), _shape(layer.output_shape))
        except (AttributeError, TypeError, ValueError):
            raise ModelFileError(f"{self.model.name}: layer {layer.name} has no static shape") from None
        handler = _KERAS_HANDLERS.get(cls)
        if cls in _IDENTITY_LAYERS:
            self.alias(layer.name, ins[0])  # identity at inference
            return
        if handler is None and cls not in _ELEMENTWISE_LAYERS:
            raise ModelFileError(f"{self.model.name}: layer {layer.name}: {cls} is not supported by the latency "
                                 f"front end")
        before = len(self.out)
        if handler is None:
            self.emit(Layer(layer.name, _ELEMENTWISE_LAYERS[cls], ins, *shapes))
        else:
            handler(self, layer, srcs, ins, *shapes)
        if len(self.out) > before:
            self.alias(layer.name, next(reversed(self.out)))

    def conv(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        cfg = layer.get_config()
        kh, kw = tuple(cfg["kernel_size"])
        self.emit(Layer(layer.name, Op.CONV2D if type(layer).__name__ == "Conv2D" else Op.DEPTHWISE_CONV2D, ins,
                        i_shape, o_shape, kernel=max(kh, kw), kernel_hw=None if kh == kw else (kh, kw),
                        stride=int(tuple(cfg["strides"])[0]), activation=_keras_activation(layer)))

    def dense(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        act = _keras_activation(layer)
        self.emit(Layer(layer.name, Op.DENSE, ins, (_elems(i_shape),), (_elems(o_shape),),
                        activation=None if act == "softmax" else act))
        if act == "softmax":
            self.emit(Layer(f"{layer.name}_softmax", Op.SOFTMAX, (layer.name,), o_shape, o_shape))

    def batch_norm(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        prev = self.fusable(srcs, (Op.CONV2D, Op.DEPTHWISE_CONV2D, Op.DENSE))
        if prev is not None and prev.batch_norm is None:
            self.out[prev.name] = _with(prev, batch_norm=layer.name)
            self.alias(layer.name, prev.name)
            return
        self.emit(Layer(layer.name, Op.MUL, ins, i_shape, o_shape, weight_params=2 * o_shape[-1]))  # per-channel affine

    def activation(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        act = _keras_activation(layer)
        if act is None:
            self.alias(layer.name, ins[0])
            return
        prev = self.fusable(srcs, (Op.CONV2D, Op.DEPTHWISE_CONV2D, Op.DENSE, Op.ADD, Op.MUL))
        if prev is not None and act in ("relu", "relu6"):
            self.out[prev.name] = _with(prev, activation=act)
            self.alias(layer.name, prev.name)
        elif act == "softmax":
            self.emit(Layer(layer.name, Op.SOFTMAX, ins, i_shape, o_shape))
        else:
            self.emit(Layer(layer.name, Op.ACTIVATION, ins, i_shape, o_shape, activation=act))

    def pad(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        if _pad_folds_into_conv(layer, self.consumers.get(layer.name, [])):
            self.alias(layer.name, ins[0])  # the converter turns pad + 'valid' conv into one 'same' conv
        else:
            self.emit(Layer(layer.name, Op.PAD, ins, i_shape, o_shape))

    def pool(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        cfg = layer.get_config()
        ph, pw = tuple(cfg["pool_size"])
        op = Op.MAX_POOL2D if type(layer).__name__.startswith("Max") else Op.AVG_POOL2D
        stride = int(tuple(cfg["strides"] or cfg["pool_size"])[0])
        self.emit(Layer(layer.name, op, ins, i_shape, o_shape, kernel=max(ph, pw),
                        kernel_hw=None if ph == pw else (ph, pw), stride=stride))

    def global_pool(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        op = Op.GLOBAL_AVG_POOL if "Average" in type(layer).__name__ else Op.GLOBAL_MAX_POOL
        self.emit(Layer(layer.name, op, ins, i_shape, tuple(d for d in o_shape if d != 1) or (1,)))

    def scaled_residual(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        # keras.applications uses Lambda for scaled residuals (x + scale * r): a mul fused into the add
        self.emit(Layer(layer.name, Op.ADD, ins, i_shape, o_shape, activation=_keras_activation(layer)))

    def tf_op(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        if layer.get_config().get("function") != "split":
            raise ModelFileError(f"{self.model.name}: layer {layer.name}: TensorFlow op "
                                 f"{str(layer.get_config().get('function'))[:40]} is not supported by the latency "
                                 f"front end")
        self.emit(Layer(layer.name, Op.SPLIT, ins, i_shape, i_shape))  # a grouped conv's split (builder.py)

    def rescaling(self, layer: Any, srcs: list[str], ins: tuple, i_shape: tuple, o_shape: tuple) -> None:
        self.emit(Layer(layer.name, Op.MUL, ins, i_shape, o_shape, weight_params=2 * o_shape[-1]))


_KERAS_HANDLERS = {
    "Conv2D": _KerasGraph.conv, "DepthwiseConv2D": _KerasGraph.conv, "Dense": _KerasGraph.dense,
    "BatchNormalization": _KerasGraph.batch_norm, "ReLU": _KerasGraph.activation, "Activation": _KerasGraph.activation,
    "LeakyReLU": _KerasGraph.activation, "PReLU": _KerasGraph.activation, "ZeroPadding2D": _KerasGraph.pad,
    "MaxPooling2D": _KerasGraph.pool, "AveragePooling2D": _KerasGraph.pool,
    "GlobalAveragePooling2D": _KerasGraph.global_pool, "GlobalMaxPooling2D": _KerasGraph.global_pool,
    "Lambda": _KerasGraph.scaled_residual, "CustomScaleLayer": _KerasGraph.scaled_residual,
    "Rescaling": _KerasGraph.rescaling, "Normalization": _KerasGraph.rescaling,
    "TFOpLambda": _KerasGraph.tf_op,
}


def keras_graph(model: Any, name: str | None = None) -> LayerGraph:
    """The layer graph of a tf_keras functional model, with the converter's fusions applied (conv + BN + activation
    become one layer; an activation after an add is fused into it)."""
    if isinstance(model, (str, os.PathLike)):
        model = load_keras(model)
    in_shape = _shape(model.input_shape)
    if len(in_shape) != 3 or any(d is None for d in in_shape):
        raise ModelFileError(f"{getattr(model, 'name', 'model')}: expected one static (H, W, C) image input, got "
                             f"{model.input_shape}")
    walker = _KerasGraph(model)
    for layer in model.layers:
        walker.add(layer)
    return LayerGraph(name or model.name, in_shape, tuple(walker.out.values()))  # type: ignore[arg-type]


def _pad_folds_into_conv(pad: Any, consumers: list[Any]) -> bool:
    """True when a ZeroPadding2D feeds only a 'valid' conv and pads exactly as TF 'same' padding would."""
    if len(consumers) != 1 or type(consumers[0]).__name__ not in ("Conv2D", "DepthwiseConv2D"):
        return False
    cfg = consumers[0].get_config()
    if cfg.get("padding") != "valid" or tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
        return False
    (top, bottom), (left, right) = pad.padding
    h, w = _shape(pad.input_shape)[:2]
    for size, k, s, lo, hi in ((h, cfg["kernel_size"][0], cfg["strides"][0], top, bottom),
                               (w, cfg["kernel_size"][1], cfg["strides"][1], left, right)):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        if (lo, hi) != (total // 2, total - total // 2):
            return False
    return True


def _with(layer: Layer, **changes: Any) -> Layer:
    from dataclasses import replace

    return replace(layer, **changes)


def _inbound(layer: Any) -> list[str]:
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if not nodes:
        return []
    inbound = nodes[0].inbound_layers
    if not isinstance(inbound, (list, tuple)):
        inbound = [inbound]
    return [lay.name for lay in inbound]


def _keras_activation(layer: Any) -> str | None:
    cls = type(layer).__name__
    if cls == "ReLU":
        mx = layer.get_config().get("max_value")
        return "relu6" if mx is not None and float(mx) == 6.0 else "relu"
    if cls in ("LeakyReLU", "PReLU"):
        return cls.lower()
    fn = getattr(layer, "activation", None)
    if fn is None:
        return None
    name = getattr(fn, "__name__", str(fn))
    return None if name == "linear" else name


# ---------------------------------------------------------------------------------------------------------------------
# Serialised graphs (precomputed calibration graphs are stored this way)

_LAYER_KEYS = ("name", "op", "inputs", "input_shape", "output_shape", "kernel", "stride", "batch_norm", "activation",
               "weight_params", "kernel_hw")


def graph_to_dict(graph: LayerGraph) -> dict[str, Any]:
    layers = []
    for layer in graph.layers:
        d = {}
        for k in _LAYER_KEYS:
            v = getattr(layer, k)
            if v in (None, -1) or (k in ("kernel", "stride") and v == 1):
                continue
            d[k] = list(v) if isinstance(v, tuple) else v
        layers.append(d)
    return {"name": graph.name, "input_shape": list(graph.input_shape), "layers": layers}


def graph_from_dict(data: dict[str, Any]) -> LayerGraph:
    layers = []
    for d in data["layers"]:
        kw = dict(d)
        for k in ("inputs", "input_shape", "output_shape", "kernel_hw"):
            if k in kw:
                kw[k] = tuple(kw[k])
        layers.append(Layer(**kw))
    return LayerGraph(data["name"], tuple(data["input_shape"]), tuple(layers))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch

def model_source(model: Any, *, resolution: int | None = None, variant: str | None = None) -> "Arch | LayerGraph":
    """Any model reference (see `edgetpu_models.model_io`) or a LayerGraph -> the resolved Arch of a spec (which the
    Edge TPU estimator costs piece by piece, memoised) or the LayerGraph of anything else."""
    if isinstance(model, LayerGraph):
        return model
    if is_segmentation(model):  # a zoo segmentation model, optionally "name@finaliser"
        return segmentation_graph(model, resolution)
    ref = resolve_model(model, variant)
    ref.no_overrides(resolution, variant)
    if ref.kind == "tflite":
        return tflite_graph(ref.data if ref.data is not None else ref.path)
    if ref.kind == "keras":
        return keras_graph(ref.keras_model if ref.keras_model is not None else ref.path)
    return spec_arch(ref.spec, ref.variant, resolution)


def model_graph(model: Any, *, resolution: int | None = None, variant: str | None = None) -> LayerGraph:
    """Any model reference (see `edgetpu_models.model_io`) or a LayerGraph -> LayerGraph."""
    src = model_source(model, resolution=resolution, variant=variant)
    return src if isinstance(src, LayerGraph) else arch_graph(src)
