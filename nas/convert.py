"""int8 .tflite bytes for latency work (calibration models, the `cpu-measured` target, CPU predictor training).

Latency does not depend on how good the quantization ranges are, only on the graph the converter produces, so a few
random calibration images suffice. The conversion itself is helper `edgetpu_models.deploy.export.convert` (the
project's one converter setup); this module only feeds it. Imports TensorFlow (through the converter).
"""

from __future__ import annotations

from typing import Any

from edgetpu_models.spec import Normalization

LATENCY_CALIBRATION_IMAGES = 4


def int8_tflite_bytes(model: Any, normalization: Normalization | None = None,
                      images: int = LATENCY_CALIBRATION_IMAGES, seed: int = 0) -> bytes:
    """Fully int8 (uint8 I/O) .tflite of a tf_keras model, calibrated on `images` random images."""
    from edgetpu_models.deploy.export import convert, random_representative
    from edgetpu_models.errors import ModelFileError

    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else ()
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ModelFileError(f"model {model.name}: expected one image input with a fixed (H, W, C), got "
                             f"{model.input_shape}")
    rep = random_representative(shape, normalization or Normalization(), count=images, seed=seed)
    return convert(model, int8=True, io_dtype="uint8", representative=rep)
