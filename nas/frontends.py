"""Front ends of the latency models: a spec, a Keras model (or .keras/.h5 file) or an int8 .tflite -> `LayerGraph`.

All three describe what an int8 converter produces: convolutions carry their BatchNormalization and activation (the
TFLite converter folds them), a standalone BatchNormalization is one per-channel affine `mul`, reshapes and dropout
are free, and a softmax classifier is a `dense` followed by a `softmax`. The quantize ops that convert the graph's
uint8 input and output are part of the host transfer, not layers. So the same network gives the same graph, and the
same estimate, through any front end.

The spec and .tflite front ends never import TensorFlow (the .tflite one reads the flatbuffer with the project's
one reader, `edgetpu_models.deploy.tflite_reader`); only the Keras front end does, and only when given a file.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

from edgetpu_models.errors import ModelFileError
from edgetpu_models.layer_graph import Layer, LayerGraph, arch_to_graph
from edgetpu_models.spec import Spec, resolve
from edgetpu_models.zoo import resolve_model_ref

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


# ---------------------------------------------------------------------------------------------------------------------
# Spec (the fast path)

def spec_graph(model: "str | os.PathLike[str] | Spec", variant: str | None = None,
               resolution: int | None = None, classes: int = 1000) -> LayerGraph:
    """The graph of a spec as `build_model` builds it (softmax classifier) and the converter lowers it. TF-free."""
    spec, variant = resolve_model_ref(model, variant)
    graph = arch_to_graph(resolve(spec, variant, resolution), include_top=True, classes=classes)
    last = graph.layers[-1]
    softmax = Layer(name="classifier_softmax", op="softmax", inputs=(last.name,), input_shape=last.output_shape,
                    output_shape=last.output_shape)
    return LayerGraph(graph.name, graph.input_shape, graph.layers + (softmax,))


# ---------------------------------------------------------------------------------------------------------------------
# .tflite

_TFLITE_ACTS = {"NONE": None, "RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1", "TANH": "tanh"}
_ELEMENTWISE = {"RELU": "activation", "RELU6": "activation", "RELU_N1_TO_1": "activation", "LOGISTIC": "activation",
                "TANH": "activation", "HARD_SWISH": "activation", "LEAKY_RELU": "activation", "PRELU": "activation",
                "ADD": "add", "SUB": "add", "MUL": "mul", "MAXIMUM": "add", "MINIMUM": "add",
                "CONCATENATION": "concat", "PAD": "pad", "PADV2": "pad", "MIRROR_PAD": "pad", "SOFTMAX": "softmax",
                "QUANTIZE": "quantize", "DEQUANTIZE": "quantize", "RESHAPE": "reshape", "SQUEEZE": "reshape",
                "EXPAND_DIMS": "reshape"}
_WEIGHT_DTYPES = ("INT8", "UINT8")


def _short(name: str, index: int) -> str:
    """A readable layer name from a TFLite tensor name (last meaningful path parts)."""
    parts = [p for p in re.split(r"[/;]", name.split(";")[0]) if p and not p.startswith(("serving_default", "Stateful"))]
    base = "/".join(parts[-2:]) if parts else ""
    return base or f"op{index}"


def tflite_graph(path_or_bytes: "str | os.PathLike[str] | bytes", name: str | None = None) -> LayerGraph:
    """The layer graph of an int8 .tflite (what the Edge TPU compiler sees). Raises ModelFileError for a file that
    is not a TFLite flatbuffer, has more than one subgraph, dynamic shapes, or float weights/activations."""
    from edgetpu_models.deploy.tflite_reader import read_tflite

    m = read_tflite(path_or_bytes)
    src = m.source
    if m.subgraph_count != 1:
        raise ModelFileError(f"{src}: expected one subgraph, found {m.subgraph_count}")
    if len(m.inputs) != 1:
        raise ModelFileError(f"{src}: expected one input tensor (an image), found {len(m.inputs)}")
    t_in = m.tensor(m.inputs[0])
    if len(t_in.shape) != 4 or t_in.shape[0] != 1 or any(d < 0 for d in t_in.shape_signature[1:]):
        raise ModelFileError(f"{src}: input {t_in.name!r}: expected a static shape [1, H, W, C], got "
                             f"{list(t_in.shape_signature)}")
    producers: dict[int, str] = {m.inputs[0]: "input"}
    layers: list[Layer] = []
    used: set[str] = set()
    graph_outputs = set(m.outputs)
    for op in m.operators:
        ins = [m.tensor(i) for i in op.inputs if i >= 0]
        outs = [m.tensor(i) for i in op.outputs if i >= 0]
        acts = [t for t in ins if not t.is_constant]
        consts = [t for t in ins if t.is_constant]
        if not outs:
            continue
        out = outs[0]
        if op.opcode not in ("QUANTIZE", "DEQUANTIZE"):
            for t in acts + outs:
                if t.dtype.startswith(("FLOAT", "COMPLEX")):
                    raise ModelFileError(f"{src}: operator {op.index} ({op.opcode}) tensor {t.name!r} is {t.dtype}: "
                                         f"expected a fully int8-quantized model")
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and consts \
                and consts[0].dtype not in _WEIGHT_DTYPES:
            raise ModelFileError(f"{src}: operator {op.index} ({op.opcode}) has {consts[0].dtype} weights: expected an "
                                 f"int8-quantized model")
        if any(d < 0 for d in out.shape_signature[1:]):  # a dynamic batch runs as batch 1
            raise ModelFileError(f"{src}: tensor {out.name!r} has a dynamic shape {list(out.shape_signature)}")
        # io quantize ops (uint8 <-> int8) belong to the host transfer
        if op.opcode == "QUANTIZE" and acts and (op.inputs[0] in m.inputs or op.outputs[0] in graph_outputs):
            producers[op.outputs[0]] = producers.get(op.inputs[0], "input")
            continue
        lname = _short(out.name, op.index)
        if lname in used:
            lname = f"{lname}_{op.index}"
        used.add(lname)
        inputs = tuple(producers.get(i, "input") for i in op.inputs if i >= 0 and not m.tensor(i).is_constant)
        in_shape = tuple(acts[0].shape[1:]) if acts else tuple(out.shape[1:])
        out_shape = tuple(out.shape[1:])
        opts = op.options
        act = _TFLITE_ACTS.get(str(opts.get("fused_activation_function", "NONE")), None)
        kw: dict[str, Any] = {}
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = consts[0] if consts else None
            if w is None or len(w.shape) != 4:
                raise ModelFileError(f"{src}: operator {op.index} ({op.opcode}) has no constant 4-D filter")
            kh, kw_ = w.shape[1], w.shape[2]
            kind = "conv2d" if op.opcode == "CONV_2D" else "depthwise_conv2d"
            kw = dict(kernel=max(kh, kw_), kernel_hw=None if kh == kw_ else (kh, kw_),
                      stride=int(opts.get("stride_h", 1)), activation=act,
                      weight_params=sum(_elems(t.shape) for t in consts))
        elif op.opcode == "FULLY_CONNECTED":
            kind = "dense"
            in_shape = (_elems(acts[0].shape[1:]),)
            out_shape = (_elems(out.shape[1:]),)
            kw = dict(activation=act, weight_params=sum(_elems(t.shape) for t in consts))
        elif op.opcode in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            kind = "max_pool2d" if op.opcode == "MAX_POOL_2D" else "avg_pool2d"
            fh, fw = int(opts.get("filter_height", 1)), int(opts.get("filter_width", 1))
            kw = dict(kernel=max(fh, fw), kernel_hw=None if fh == fw else (fh, fw),
                      stride=int(opts.get("stride_h", 1)), activation=act)
        elif op.opcode in ("MEAN", "REDUCE_MAX", "SUM"):
            kind = "global_max_pool" if op.opcode == "REDUCE_MAX" else "global_avg_pool"
            out_shape = tuple(d for d in out.shape[1:] if d != 1) or (1,)
        else:
            kind = _ELEMENTWISE.get(op.opcode, op.opcode.lower())
            kw = dict(activation=act, weight_params=sum(_elems(t.shape) for t in consts)
                      if kind in ("add", "mul") else -1)
        layers.append(Layer(name=lname, op=kind, inputs=inputs or ("input",), input_shape=in_shape,
                            output_shape=out_shape, **kw))
        for i in op.outputs:
            if i >= 0:
                producers[i] = lname
    if not layers:
        raise ModelFileError(f"{src}: no operators to estimate")
    base = name or (os.path.splitext(os.path.basename(src))[0] if src != "<bytes>" else "tflite_model")
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


def load_keras_model(path: "str | os.PathLike[str]"):
    """Loads a .keras/.h5 file with tf_keras (TensorFlow is imported here), as ModelFileError on failure."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such file")
    import tf_keras as keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(f"{path}: not a loadable Keras model ({msg[:200]})") from None


def keras_graph(model: Any, name: str | None = None) -> LayerGraph:
    """The layer graph of a tf_keras functional model, with the converter's fusions applied (conv + BN + activation
    become one layer; an activation after an add is fused into it)."""
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    in_shape = _shape(model.input_shape)
    if len(in_shape) != 3 or any(d is None for d in in_shape):
        raise ModelFileError(f"{getattr(model, 'name', 'model')}: expected one static (H, W, C) image input, got "
                             f"{model.input_shape}")
    consumers: dict[str, int] = {}
    consumer_layers: dict[str, list[Any]] = {}
    for layer in model.layers:
        for src in _inbound(layer):
            consumers[src] = consumers.get(src, 0) + 1
            consumer_layers.setdefault(src, []).append(layer)
    tensor: dict[str, str] = {}       # keras layer name -> graph layer name carrying its output
    out: dict[str, Layer] = {}        # graph layers by name, in order
    order: list[str] = []

    def emit(layer: Layer) -> None:
        out[layer.name] = layer
        order.append(layer.name)

    def fusable(src_keras: str, kinds: tuple[str, ...]) -> Layer | None:
        g = out.get(tensor.get(src_keras, ""))
        if g is not None and g.op in kinds and consumers.get(src_keras, 0) == 1 and g.activation is None:
            return g
        return None

    for layer in model.layers:
        cls = type(layer).__name__
        srcs = _inbound(layer)
        if cls == "InputLayer":
            tensor[layer.name] = "input"
            continue
        ins = tuple(tensor.get(s, "input") for s in srcs)
        try:
            i_shape, o_shape = _shape(layer.input_shape), _shape(layer.output_shape)
        except (AttributeError, TypeError, ValueError):
            raise ModelFileError(f"{model.name}: layer {layer.name} has no static shape") from None
        act = _keras_activation(layer)
        if cls in ("Conv2D", "DepthwiseConv2D"):
            cfg = layer.get_config()
            kh, kwid = tuple(cfg["kernel_size"])
            emit(Layer(layer.name, "conv2d" if cls == "Conv2D" else "depthwise_conv2d", ins, i_shape, o_shape,
                       kernel=max(kh, kwid), kernel_hw=None if kh == kwid else (kh, kwid),
                       stride=int(tuple(cfg["strides"])[0]), activation=act))
        elif cls == "Dense":
            emit(Layer(layer.name, "dense", ins, (_elems(i_shape),), (_elems(o_shape),),
                       activation=None if act == "softmax" else act))
            if act == "softmax":
                emit(Layer(f"{layer.name}_softmax", "softmax", (layer.name,), o_shape, o_shape))
        elif cls == "BatchNormalization":
            prev = fusable(srcs[0], ("conv2d", "depthwise_conv2d", "dense")) if srcs else None
            if prev is not None and prev.batch_norm is None:
                out[prev.name] = _with(prev, batch_norm=layer.name)
                tensor[layer.name] = prev.name
                continue
            c = o_shape[-1]
            emit(Layer(layer.name, "mul", ins, i_shape, o_shape, weight_params=2 * c))  # per-channel affine
        elif cls in ("ReLU", "Activation", "LeakyReLU", "PReLU"):
            if act is None:
                tensor[layer.name] = ins[0]
                continue
            prev = fusable(srcs[0], ("conv2d", "depthwise_conv2d", "dense", "add", "mul")) if srcs else None
            if prev is not None and act in ("relu", "relu6"):
                out[prev.name] = _with(prev, activation=act)
                tensor[layer.name] = prev.name
                continue
            if act == "softmax":
                emit(Layer(layer.name, "softmax", ins, i_shape, o_shape))
            else:
                emit(Layer(layer.name, "activation", ins, i_shape, o_shape, activation=act))
        elif cls in ("Add", "Subtract", "Maximum", "Minimum"):
            emit(Layer(layer.name, "add", ins, i_shape, o_shape))
        elif cls == "Multiply":
            emit(Layer(layer.name, "mul", ins, i_shape, o_shape))
        elif cls == "Concatenate":
            emit(Layer(layer.name, "concat", ins, i_shape, o_shape))
        elif cls == "TFOpLambda" and layer.get_config().get("function") == "split":
            emit(Layer(layer.name, "split", ins, i_shape, i_shape))  # a grouped conv's split (builder.py)
        elif cls == "ZeroPadding2D":
            if _pad_folds_into_conv(layer, consumer_layers.get(layer.name, [])):
                tensor[layer.name] = ins[0]  # the converter turns pad + 'valid' conv into one 'same' conv
                continue
            emit(Layer(layer.name, "pad", ins, i_shape, o_shape))
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            cfg = layer.get_config()
            ph, pw = tuple(cfg["pool_size"])
            emit(Layer(layer.name, "max_pool2d" if cls.startswith("Max") else "avg_pool2d", ins, i_shape, o_shape,
                       kernel=max(ph, pw), kernel_hw=None if ph == pw else (ph, pw),
                       stride=int(tuple(cfg["strides"] or cfg["pool_size"])[0])))
        elif cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            emit(Layer(layer.name, "global_avg_pool" if "Average" in cls else "global_max_pool", ins, i_shape,
                       tuple(d for d in o_shape if d != 1) or (1,)))
        elif cls in ("Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "ActivityRegularization"):
            tensor[layer.name] = ins[0]  # identity at inference
            continue
        elif cls in ("Flatten", "Reshape"):
            emit(Layer(layer.name, "reshape", ins, i_shape, o_shape))
        elif cls in ("Lambda", "CustomScaleLayer") and len(ins) >= 1:
            # keras.applications uses Lambda for scaled residuals (x + scale * r): a mul fused into the add
            emit(Layer(layer.name, "add", ins, i_shape, o_shape, activation=act))
        elif cls in ("Rescaling", "Normalization"):
            emit(Layer(layer.name, "mul", ins, i_shape, o_shape, weight_params=2 * o_shape[-1]))
        else:
            raise ModelFileError(f"{model.name}: layer {layer.name}: {cls} is not supported by the latency "
                                 f"front end")
        tensor[layer.name] = order[-1]
    layers = tuple(out[n] for n in order)
    return LayerGraph(name or model.name, in_shape, layers)  # type: ignore[arg-type]


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

def model_graph(model: Any, *, resolution: int | None = None, variant: str | None = None) -> LayerGraph:
    """Any model reference -> LayerGraph: LayerGraph, Spec, zoo name, spec path, .keras/.h5 path, tf_keras model,
    .tflite path or bytes."""
    if isinstance(model, LayerGraph):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        return tflite_graph(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        low = path.lower()
        if low.endswith(".tflite"):
            _no_override(path, resolution, variant)
            return tflite_graph(path)
        if low.endswith(KERAS_SUFFIXES):
            _no_override(path, resolution, variant)
            return keras_graph(path)
        return spec_graph(path, variant, resolution)
    if isinstance(model, Spec):
        return spec_graph(model, variant, resolution)
    if hasattr(model, "layers") and hasattr(model, "input_shape"):
        return keras_graph(model)
    raise ModelFileError(f"{type(model).__name__}: expected a zoo name, spec, LayerGraph, Keras model, .keras/.h5 or "
                         f".tflite file")


def _no_override(path: str, resolution: int | None, variant: str | None) -> None:
    if resolution is not None or variant is not None:
        raise ModelFileError(f"{path}: --resolution/--variant apply to specs only; a model file has fixed shapes")
