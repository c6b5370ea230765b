"""The one builder: walks a spec's layer graph and creates a tf_keras functional model from plain Keras layers.

tf_keras (Keras 2), not Keras 3: tensorflow-model-optimization's quantization-aware training only wraps Keras 2
models. Only stock layers are used (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Add, Dropout, pooling, Dense;
ZeroPadding2D for symmetric padding, and tf.split + Concatenate for grouped convolutions, see GROUPED_CONV_LOWERING)
so QAT and the int8 converter need no custom-layer handling (QAT leaves the split unwrapped: quantize/qat.py).
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from edgetpu_models.errors import SpecError
from edgetpu_models.layer_graph import Layer, LayerGraph, Op, arch_to_graph, group_parts
from edgetpu_models.spec import Arch, Spec, resolve
from edgetpu_models.zoo import ZOO, resolve_spec

GROUPED_CONV_LOWERING = "split"
"""How a grouped convolution (MobilenetEdgeTPU-V2's fused block) is built: "split", the lowering that
layer_graph.group_parts describes (tf.split along channels, one Conv2D + BatchNormalization + ReLU per group,
Concatenate). Why not Keras' native `Conv2D(groups=g)`: the TFLite int8 converter (TF 2.21, checked) turns that into
one CONV_2D whose filter depth is in_channels / groups, a form Coral's op table does not list and the last Edge TPU
compiler (v16) predates, so deploy/edgetpu_check.py counts it as unmapped rather than risk a CPU fallback from the
middle of the network; SPLIT, CONV_2D and CONCATENATION all map (shared/reference/edgetpu_hardware.md).
tensorflow/models builds it the same way. Each group keeps its own BN so the converter folds it into that group's
conv; the split is annotated for QAT (quantize/qat.py); weights.py slices timm's single grouped tensor into the
per-group layers."""

# keras.applications' EfficientNet initialisers.
CONV_KERNEL_INITIALIZER = {"class_name": "VarianceScaling",
                           "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
DENSE_KERNEL_INITIALIZER = {"class_name": "VarianceScaling",
                            "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def _check_head_args(weights: Any, include_top: bool, classes: int, pooling: str | None) -> None:
    if pooling not in (None, "avg", "max"):
        raise SpecError(f"pooling: expected None, 'avg' or 'max', got {pooling!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise SpecError(f"classes: expected an integer >= 1, got {classes!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise SpecError(f"classes: weights='imagenet' with include_top=True needs classes=1000, got {classes}")


def resolve_arch(spec_or_path: "str | os.PathLike[str] | Spec", variant: str | None = None,
                 resolution: int | None = None) -> Arch:
    """Zoo name, spec file or Spec -> resolved architecture (variant applied)."""
    spec, variant = resolve_spec(spec_or_path, variant)
    return resolve(spec, variant, resolution)


def _input_shape(arch: Arch, input_shape: tuple | None) -> tuple[int, int, int]:
    if input_shape is None:
        return (arch.resolution, arch.resolution, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3 or not all(isinstance(d, int) and d >= 32 for d in shape[:2]):
        raise SpecError(f"input_shape: expected (height, width, 3) with height, width >= 32, got {input_shape!r}")
    return shape  # type: ignore[return-value]


def _conv_bn_act(keras: Any, x: Any, layer: Layer, padding: str, bn_args: dict, relu_max: float | None) -> Any:
    if layer.op == Op.CONV2D:
        x = keras.layers.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride, padding=padding,
                                use_bias=layer.use_bias, dilation_rate=layer.dilation,
                                kernel_initializer=CONV_KERNEL_INITIALIZER, name=layer.name)(x)
    else:
        x = keras.layers.DepthwiseConv2D(layer.kernel, strides=layer.stride, padding=padding,
                                         use_bias=layer.use_bias, dilation_rate=layer.dilation,
                                         depthwise_initializer=CONV_KERNEL_INITIALIZER, name=layer.name)(x)
    if layer.batch_norm:
        x = keras.layers.BatchNormalization(name=layer.batch_norm, **bn_args)(x)
    if layer.activation:
        relu_max = 6.0 if layer.activation == "relu6" else relu_max  # a head may use ReLU6 on a ReLU backbone
        x = keras.layers.ReLU(max_value=relu_max, name=f"{layer.name}_{layer.activation}")(x)
    return x


def _grouped_conv(keras: Any, x: Any, layer: Layer, padding: str, bn_args: dict, relu_max: float | None) -> Any:
    """layer_graph.group_parts, built (see GROUPED_CONV_LOWERING for why this form)."""
    import tensorflow as tf

    assert GROUPED_CONV_LOWERING == "split"
    parts = group_parts(layer)
    xs = tf.split(x, len(parts), axis=-1, name=parts[0].inputs[0])
    outs = [_conv_bn_act(keras, xi, part, padding, bn_args, relu_max) for xi, part in zip(xs, parts)]
    return keras.layers.Concatenate(name=f"{layer.name}_concat")(outs)


def _conv(keras: Any, layer: Layer, x: Any, ctx: dict[str, Any]) -> Any:
    padding = "same"
    if layer.padding == "symmetric":  # PyTorch's padding, explicit (a PAD op, which the Edge TPU maps)
        x = keras.layers.ZeroPadding2D((layer.kernel - 1) // 2, name=f"{layer.name}_pad")(x)
        padding = "valid"
    if layer.groups > 1:
        return _grouped_conv(keras, x, layer, padding, ctx["bn_args"], ctx["relu_max"])
    return _conv_bn_act(keras, x, layer, padding, ctx["bn_args"], ctx["relu_max"])


def _add(keras: Any, layer: Layer, x: Any, ctx: dict[str, Any]) -> Any:
    if layer.rate > 0:  # drop-connect: drops the whole residual branch per sample; identity at inference
        x = keras.layers.Dropout(layer.rate, noise_shape=(None, 1, 1, 1), name=f"{layer.block}_drop")(x)
    return keras.layers.Add(name=layer.name)([x, ctx["tensors"][layer.inputs[1]]])


def _dense(keras: Any, layer: Layer, x: Any, ctx: dict[str, Any]) -> Any:
    return keras.layers.Dense(layer.out_channels, activation=ctx["classifier_activation"],
                              kernel_initializer=DENSE_KERNEL_INITIALIZER, name=layer.name)(x)


def _resize(keras: Any, layer: Layer, x: Any, ctx: dict[str, Any]) -> Any:
    """Bilinear: UpSampling2D for whole factors (a layer QAT knows), else Resizing. Nearest on a class map (a
    finaliser after argmax): each index repeated by reshape + tile, because the TFLite converter has no integer
    RESIZE_NEAREST_NEIGHBOR (TF 2.21: "tf.ResizeNearestNeighbor op is neither a custom op nor a flex op" for int32
    and uint8); whole factors only (`seg_graph` checks)."""
    import tensorflow as tf

    (h, w), (oh, ow) = layer.input_shape[:2], layer.output_shape[:2]
    if layer.op == Op.RESIZE_NEAREST:
        sy, sx = oh // h, ow // w
        x = tf.reshape(tf.cast(x, tf.int32), (-1, h, 1, w, 1))
        x = tf.reshape(tf.tile(x, (1, 1, sy, 1, sx)), (-1, oh, ow))
        return tf.cast(x, tf.uint8, name=layer.name)
    if oh % h == 0 and ow % w == 0:
        return keras.layers.UpSampling2D((oh // h, ow // w), interpolation="bilinear", name=layer.name)(x)
    return keras.layers.Resizing(oh, ow, interpolation="bilinear", name=layer.name)(x)


def _argmax(keras: Any, layer: Layer, x: Any, ctx: dict[str, Any]) -> Any:
    """Class index per pixel as uint8 (TFLite ARG_MAX + CAST; a finaliser, applied after training): the class map an
    int8 model hands back, <= 255 classes (segmentation models allow no more)."""
    import tensorflow as tf

    return tf.cast(tf.math.argmax(x, axis=-1, output_type=tf.int32, name=layer.name), tf.uint8)


def _avg_pool(keras: Any, layer: Layer, x: Any, ctx: dict[str, Any]) -> Any:
    """ASPP's image pooling (VALID, window = stride) or BiFPN's downsampling (SAME, window = stride + 1)."""
    padding = "valid" if layer.kernel == layer.stride else "same"
    return keras.layers.AveragePooling2D(layer.kernel, layer.stride, padding=padding, name=layer.name)(x)


_BUILDERS: dict[Op, Callable[[Any, Layer, Any, dict[str, Any]], Any]] = {
    Op.CONV2D: _conv,
    Op.DEPTHWISE_CONV2D: _conv,
    Op.ADD: _add,
    Op.GLOBAL_AVG_POOL: lambda keras, layer, x, ctx: keras.layers.GlobalAveragePooling2D(name=layer.name)(x),
    Op.GLOBAL_MAX_POOL: lambda keras, layer, x, ctx: keras.layers.GlobalMaxPooling2D(name=layer.name)(x),
    Op.DROPOUT: lambda keras, layer, x, ctx: keras.layers.Dropout(layer.rate, name=layer.name)(x),
    Op.DENSE: _dense,
    Op.AVG_POOL2D: _avg_pool,
    Op.CONCAT: lambda keras, layer, x, ctx: keras.layers.Concatenate(name=layer.name)(
        [ctx["tensors"][n] for n in layer.inputs]),
    Op.RESIZE_BILINEAR: _resize,
    Op.RESIZE_NEAREST: _resize,
    Op.ARGMAX: _argmax,
}
"""The ops of a spec's graph (`layer_graph.SPEC_OPS`) and how each becomes Keras layers. Graphs imported from Keras
or .tflite files may hold other ops; `build_graph_model` refuses those by name."""


def build_graph_model(graph: LayerGraph, arch: Arch, input_tensor: Any = None,
                      classifier_activation: str | None = "softmax", model_name: str | None = None):
    """Creates the tf_keras model for a layer graph (one Keras layer, or conv+BN+ReLU, per graph layer).

    SpecError when the graph has an op the builder cannot build (graphs from Keras or .tflite front ends can)."""
    unbuildable = next((layer for layer in graph if layer.op not in _BUILDERS), None)
    if unbuildable is not None:
        raise SpecError(f"{graph.name}: layer {unbuildable.name}: op {unbuildable.op.value!r} cannot be built from a "
                        f"spec (the builder builds {', '.join(sorted(_BUILDERS))})")
    import tf_keras as keras

    if input_tensor is None:
        img_input = keras.layers.Input(shape=graph.input_shape, name="input")
    elif keras.backend.is_keras_tensor(input_tensor):
        img_input = input_tensor
    else:
        img_input = keras.layers.Input(tensor=input_tensor, shape=graph.input_shape, name="input")
    ctx = {"bn_args": {"momentum": arch.batch_norm.momentum, "epsilon": arch.batch_norm.epsilon},
           "relu_max": 6.0 if arch.activation == "relu6" else None, "tensors": {"input": img_input},
           "classifier_activation": classifier_activation}
    x = img_input
    for layer in graph:
        x = _BUILDERS[layer.op](keras, layer, ctx["tensors"][layer.inputs[0]], ctx)
        ctx["tensors"][layer.name] = x
    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    return keras.Model(inputs, x, name=model_name or graph.name)


def build_model(spec_or_path: "str | os.PathLike[str] | Spec", variant: str | None = None, *,
                include_top: bool = True, weights: str | os.PathLike[str] | None = None, input_tensor: Any = None,
                input_shape: tuple | None = None, pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | None = "softmax", resolution: int | None = None):
    """Builds any spec (a Spec, a zoo name or a YAML path) as a tf_keras model, keras.applications-style.

    The model takes normalised input (see each module's `preprocess_input`). `weights`: None, "imagenet" (timm's
    ports of the official checkpoints, zoo models that have them) or a `.safetensors` / `.h5` file.
    """
    _check_head_args(weights, include_top, classes, pooling)
    spec, variant = resolve_spec(spec_or_path, variant)
    arch = resolve(spec, variant, resolution)
    if input_tensor is not None and input_shape is None:
        shape = tuple(getattr(input_tensor, "shape", ())[1:])
        if len(shape) == 3 and all(isinstance(d, int) for d in shape):
            input_shape = shape
    graph = arch_to_graph(arch, include_top=include_top, classes=classes, pooling=pooling,
                          input_shape=_input_shape(arch, input_shape))
    name = spec_or_path if isinstance(spec_or_path, str) and spec_or_path in ZOO else graph.name
    model = build_graph_model(graph, arch, input_tensor, classifier_activation, re.sub(r"[^A-Za-z0-9_]", "_", name))
    if weights is not None:
        from edgetpu_models.weights import load_weights
        load_weights(model, weights, spec_or_path if isinstance(spec_or_path, str) else None)
    return model
