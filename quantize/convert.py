"""The project's one TFLite converter setup: post-training int8 quantization of a tf_keras model (plain, fine-tuned
or tfmot-QAT) with a batch-1, static-shape signature, calibrated on representative images.

`deploy.export` turns it into an Edge TPU file with its sidecar; latency work (calibration models, the `cpu-measured`
target, CPU predictor training) uses `int8_tflite_bytes`, where a few random calibration images suffice: latency
depends on the graph the converter produces, not on how good the quantization ranges are. Imports TensorFlow when
converting.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from edgetpu_models.errors import ExportError, ModelFileError
from edgetpu_models.spec import Normalization

LATENCY_CALIBRATION_IMAGES = 4
IO_DTYPES = ("uint8", "int8")
MIN_CALIBRATION_IMAGES = 100
RANDOM_CALIBRATION_IMAGES = 100


def random_representative(shape: Sequence[int], normalization: Normalization, count: int = RANDOM_CALIBRATION_IMAGES,
                          seed: int = 0) -> Iterator[np.ndarray]:
    """Uniform random uint8 pixels, normalised: only a stand-in when no images are at hand (ranges, not accuracy)."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(normalization.mean, np.float32)
    std = np.asarray(normalization.std, np.float32)
    for _ in range(count):
        pixels = rng.integers(0, 256, size=(1, *shape), dtype=np.uint8).astype(np.float32)
        yield (pixels - mean) / std


def _single_images(batches: Iterable[Any], shape: tuple[int, int, int],
                   counter: list[int]) -> Iterator[list[np.ndarray]]:
    """Splits float batches [N,H,W,3] into the [1,H,W,3] inputs the converter's calibration expects."""
    for batch in batches:
        if isinstance(batch, tuple) and len(batch) == 2:
            batch = batch[0]  # (images, labels) from a tf.data pipeline
        arr = np.asarray(batch, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
            raise ExportError(f"representative data: expected float32 batches [N,{shape[0]},{shape[1]},{shape[2]}], "
                              f"got shape {list(arr.shape)}")
        for image in arr:
            counter[0] += 1
            yield [image[None]]


def static_input_shape(model: Any) -> tuple[int, int, int]:
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ExportError(f"model {model.name}: expected one image input [batch, H, W, C] with known H, W, C, "
                          f"got {model.input_shape}; build it with a fixed resolution")
    return shape  # type: ignore[return-value]


def convert(model: Any, *, int8: bool = True, io_dtype: str = "uint8", representative: Iterable[Any] | None = None,
            counter: list[int] | None = None) -> bytes:
    """Runs the TFLite converter on a tf_keras model with a batch-1, static-shape signature."""
    import tensorflow as tf

    shape = static_input_shape(model)
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([1, *shape], tf.float32, name="input")])
    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if int8:
        counter = counter if counter is not None else [0]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _single_images(representative or (), shape, counter)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io_dtype)
    try:
        return converter.convert()
    except ExportError:
        raise
    except Exception as e:  # the converter raises ConverterError / RuntimeError with long multi-line logs
        lines = str(e).splitlines()
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
        raise ExportError(f"model {model.name}: the TFLite converter failed: {first.strip()[:300]}") from None


def int8_tflite_bytes(model: Any, normalization: Normalization | None = None,
                      images: int = LATENCY_CALIBRATION_IMAGES, seed: int = 0) -> bytes:
    """Fully int8 (uint8 I/O) .tflite of a tf_keras model, calibrated on `images` random images."""
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else ()
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ModelFileError(f"model {model.name}: expected one image input with a fixed (H, W, C), got "
                             f"{model.input_shape}")
    rep = random_representative(shape, normalization or Normalization(), count=images, seed=seed)
    return convert(model, int8=True, io_dtype="uint8", representative=rep)
