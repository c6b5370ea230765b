"""Image classification with an exported .tflite: `Classifier`, a `runtime.Runner` that needs the file's sidecar.

    clf = Classifier("run/model_int8.tflite")
    for p in clf.classify("cat.jpg", top_k=3).predictions: ...

The image (a path, os.PathLike, PIL image, uint8 array of any size, or the model's normalised float input: see
`runtime`) is read with Pillow, cropped and resized the model's way (`eval_data.Preprocess`, from X.json: this
package's validation crop, or the ImageNet reference crop for an ImageNet head), normalised with the JSON's mean/std,
then quantized with the input tensor's own scale and zero point (uint8 or int8) or fed as float32 for a float model;
outputs are de-quantized the same way.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from edgetpu_models.deploy.runtime import ClassifyResult, Prediction, Runner, dequantize_output, quantize_input

__all__ = ["Classifier", "ClassifyResult", "Prediction", "quantize_input", "dequantize_output"]


class Classifier(Runner):
    """A `Runner` whose model must have its sidecar (X.json): a one-line ModelFileError at once when it is missing,
    rather than at the first image."""

    def __init__(self, model_path: "Union[str, os.PathLike[str], Sequence[Union[str, os.PathLike[str]]]]", *,
                 labels: "Union[str, Sequence[str], None]" = None, threads: Optional[int] = None,
                 prefer: Optional[str] = None) -> None:
        super().__init__(model_path, labels=labels, threads=threads, prefer=prefer)
        self._require_sidecar()
