"""Where int8 accuracy goes: per-layer error between the int8 model and its float original.

TensorFlow's QuantizationDebugger runs the float and the quantized model side by side on the same images and, for
every quantized op, compares its dequantized int8 output with the float one. We rank layers by RMSE / scale (the error
measured in quantization steps: ~0.29 is the floor of rounding alone, much more means the range or the weights do
not fit 8 bits) and map TFLite tensor names back to the Keras layer names users know.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

ROUNDING_FLOOR = 1.0 / math.sqrt(12.0)
"""RMSE / scale of pure rounding (uniform error in [-0.5, 0.5] steps)."""


@dataclass(frozen=True)
class LayerQuantRow:
    layer: str
    """Keras layer the op comes from (best match of the TFLite tensor name), or the tensor name."""
    op: str
    tensor: str
    rmse: float
    max_abs_error: float
    scale: float
    rmse_per_scale: float
    """RMSE in units of the int8 step; ROUNDING_FLOOR (0.29) is the best possible."""

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "op": self.op, "tensor": self.tensor, "rmse": self.rmse,
                "max_abs_error": self.max_abs_error, "scale": self.scale, "rmse_per_scale": self.rmse_per_scale}


@dataclass(frozen=True)
class QuantReport:
    model: str
    images: int
    layers: tuple[LayerQuantRow, ...]
    """In graph order."""
    top1_agreement: float
    """Fraction of the report's images on which the int8 and float models pick the same class."""
    output_mean_abs_error: float

    def worst(self, n: int = 5) -> list[LayerQuantRow]:
        return sorted(self.layers, key=lambda e: -e.rmse_per_scale)[:n]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "images": self.images, "top1_agreement": self.top1_agreement,
                "output_mean_abs_error": self.output_mean_abs_error,
                "worst": [e.layer for e in self.worst()], "layers": [e.to_dict() for e in self.layers]}

    def format(self, n: int = 10) -> str:
        from edgetpu_models.tables import format_table

        rows = [(e.layer, e.op, f"{e.rmse_per_scale:.2f}", f"{e.rmse:.4g}", f"{e.max_abs_error:.4g}",
                 f"{e.scale:.4g}") for e in self.worst(n)]
        head = (f"{self.model}: int8 vs float on {self.images} images: top-1 agreement "
                f"{100 * self.top1_agreement:.1f}%, mean |output error| {self.output_mean_abs_error:.4g}\n"
                f"Layers losing the most accuracy (RMSE in int8 steps; {ROUNDING_FLOOR:.2f} = rounding alone):")
        return head + "\n" + format_table(("layer", "op", "RMSE/scale", "RMSE", "max |err|", "scale"), rows,
                                          right=(2, 3, 4, 5))


def keras_layer_of(tensor_name: str, layer_names: Iterable[str]) -> str:
    """The Keras layer a TFLite tensor name comes from. Fused ops are named "act/Relu;conv/Conv2D": the segments are
    read from the last (the op that computes the tensor) to the first, and in the first segment that names a layer
    the longest matching path component wins."""
    names = list(layer_names)
    for segment in reversed(tensor_name.split(";")):
        parts = set(re.split(r"[/:]", segment))
        best = max((n for n in names if n in parts or f"quant_{n}" in parts), key=len, default="")
        if best:
            return best
    return tensor_name


def _single(representative: Iterable[np.ndarray], limit: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for batch in representative:
        for image in np.asarray(batch, np.float32):
            if len(out) >= limit:
                return out
            out.append(image[None])
    return out


def quantization_report(model: Any, representative: Iterable[np.ndarray], *, images: int = 32,
                        model_name: str | None = None) -> QuantReport:
    """Per-layer int8-vs-float error of `model` (tf_keras) under full-integer post-training quantization calibrated on
    `representative` (normalised float32 batches); the first `images` images are also the debug set."""
    import tensorflow as tf

    from edgetpu_models.quantize.convert import ExportError, static_input_shape

    shape = static_input_shape(model)
    samples = _single(representative, images)
    if not samples:
        raise ExportError("quantization report: no images")
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([1, *shape], tf.float32, name="input")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=lambda: ([s] for s in samples))
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    names = [layer.name for layer in model.layers]
    output_layer = model.layers[-1].name
    layers = []
    for row in csv.DictReader(buf):
        scale = float(row.get("scale") or 0.0)
        rmse = math.sqrt(max(float(row.get("mean_squared_error") or 0.0), 0.0))
        tensor = row.get("tensor_name", "")
        layer = keras_layer_of(tensor, names)
        if layer == tensor and tensor.startswith("StatefulPartitionedCall"):  # the graph's output keeps no layer name
            layer = output_layer
        layers.append(LayerQuantRow(layer=layer, op=row.get("op_name", ""), tensor=tensor,
                                 rmse=rmse, max_abs_error=float(row.get("max_abs_error") or 0.0), scale=scale,
                                 rmse_per_scale=rmse / scale if scale > 0 else float("inf")))

    # End to end: the non-debug quantized model against the float model on the same images.
    quant = debugger.get_nondebug_quantized_model()
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=quant, num_threads=2)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    from edgetpu_models.metrics import top1_agreement

    agree, errs = 0.0, []
    for s in samples:
        interp.set_tensor(inp["index"], s)
        interp.invoke()
        q = interp.get_tensor(out["index"]).astype(np.float32)
        f = np.asarray(model(s, training=False), np.float32)
        agree += float(top1_agreement(q.reshape(1, -1), f.reshape(1, -1))[0])  # tie-aware
        errs.append(float(np.mean(np.abs(q - f))))
    return QuantReport(model=model_name or model.name, images=len(samples), layers=tuple(layers),
                       top1_agreement=agree / len(samples), output_mean_abs_error=float(np.mean(errs)))
