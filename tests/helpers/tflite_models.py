"""Tiny .tflite models made with the real TFLite converter, shared by the reader, checker and export tests.

TensorFlow is imported inside the functions, so a test module can import this file and still check that its own
code path stays TF-free.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def tiny_keras(batch: int | None = 1, extra: Callable[[Any], Any] | None = None, size: int = 16) -> Any:
    """conv(stride 2, ReLU6) -> [extra] -> depthwise -> global average pool -> dense(softmax)."""
    import tf_keras as keras

    i = keras.Input((size, size, 3), batch_size=batch)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="conv")(i)
    if extra is not None:
        x = extra(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(4, activation="softmax", name="fc")(x)
    return keras.Model(i, x)


def convert(model: Any, int8: bool = True, io: str = "uint8") -> bytes:
    """The converter's full-integer path (as export.py uses it), or a plain float conversion."""
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        shape = [1] + [int(d) for d in model.input_shape[1:]]
        rng = np.random.default_rng(0)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([rng.random(shape, dtype=np.float32)] for _ in range(8))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.uint8 if io == "uint8" else tf.int8
    return c.convert()


def transpose_block(x: Any) -> Any:
    """A channel/row permutation: the converter emits TRANSPOSE, which the Edge TPU does not support."""
    import tf_keras as keras

    return keras.layers.Permute((2, 1, 3), name="permute")(x)
