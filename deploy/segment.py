"""Segmentation with an exported .tflite: class maps and coloured overlays per image, and the float-vs-int8 scores.

    seg = Segmenter("run/autoseg_int8.tflite")
    classes = seg.segment("street.jpg")        # [H, W] uint8 class map at the model's input size
    save_outputs("street.jpg", classes, "out/")  # out/street_classes.png, out/street_overlay.png

The runtime is the one the classifier uses (`interpreter.make_interpreter`): pycoral on a Coral device when its
guarded import and a device are present, else LiteRT on the CPU. A model exported with an argmax finaliser hands
back the class map itself; a logits model is de-quantized, upsampled (bilinear) to the input size and argmaxed here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from edgetpu_models.data import normalize_pixels, read_rgb
from edgetpu_models.deploy.runtime import Runner, dequantize_output, quantize_input
from edgetpu_models.errors import ModelFileError
from edgetpu_models.seg_data import SegFolder, load_pair
from edgetpu_models.seg_train import SegScores, confusion, scores

PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
                    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0),
                    (255, 215, 180), (0, 0, 128), (128, 128, 128), (255, 255, 255)], np.uint8)
"""Distinct colours for the first classes (Sasha Trubetskoy's list); classes beyond repeat them, 255 is black."""


def colourise(class_map: np.ndarray) -> np.ndarray:
    """[H, W] class indices -> [H, W, 3] uint8 colours (ignore 255 -> black)."""
    cm = np.asarray(class_map)
    out = PALETTE[cm.astype(np.int64) % len(PALETTE)]
    out[cm == 255] = 0
    return out


def overlay(image_rgb: np.ndarray, class_map: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with the coloured class map blended over it (class map resized nearest to the image)."""
    from PIL import Image

    img = np.asarray(image_rgb, np.uint8)
    cm = np.asarray(Image.fromarray(np.asarray(class_map, np.uint8)).resize(img.shape[1::-1], Image.NEAREST))
    return np.round(img * (1 - alpha) + colourise(cm) * alpha).astype(np.uint8)


class Segmenter:
    """A segmentation .tflite through the one runner (`runtime.Runner`: pycoral on a Coral, else tflite_runtime or
    LiteRT) plus the normalisation of its sidecar. TensorFlow-free, so it runs on a device's base install."""

    def __init__(self, model_path: str, threads: Optional[int] = None, prefer: Optional[str] = None) -> None:
        self.runner = Runner(model_path, threads=threads, prefer=prefer)
        self.model_path, self.backend = model_path, self.runner.backend
        self.normalization = self.runner.normalization  # a one-line error when the sidecar is missing
        shape = list(self.runner.input.shape)
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise ModelFileError(f"{model_path}: input shape {shape}, expected [1, N, N, 3]")
        self.size = shape[1]
        self.last_ms = 0.0

    def classes_of(self, x: np.ndarray) -> np.ndarray:
        """A normalised float image [N, N, 3] -> [N, N] uint8 class map (an argmax finaliser's map is resized to the
        input by nearest neighbour; logits bilinearly, then argmax, as the reference's `resize512,argmax`)."""
        (y, *_), self.last_ms = self.runner.run(quantize_input(x, self.runner.input)[None])
        y = y[0]
        if y.ndim == 2:  # argmax finaliser: already a class map
            return _resized(y.astype(np.float32), self.size, Image.NEAREST).astype(np.uint8)
        logits = dequantize_output(y, self.runner.output)
        up = np.stack([_resized(logits[..., c], self.size, Image.BILINEAR) for c in range(logits.shape[-1])], -1)
        return np.argmax(up, axis=-1).astype(np.uint8)

    def segment(self, image: str) -> np.ndarray:
        rgb = read_rgb(image).resize((self.size, self.size), Image.BILINEAR)
        return self.classes_of(normalize_pixels(np.asarray(rgb), self.normalization))


def _resized(plane: np.ndarray, size: int, resample: int) -> np.ndarray:
    """One float32 plane [H, W] -> [size, size] with Pillow (mode "F"): no TensorFlow on the device."""
    if plane.shape == (size, size):
        return plane
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, np.float32), mode="F").resize((size, size), resample))


def save_outputs(image: str, class_map: np.ndarray, out_dir: "str | os.PathLike[str]") -> tuple[str, str]:
    """Writes <stem>_classes.png (8-bit class indices) and <stem>_overlay.png (at the image's own size)."""
    from PIL import Image

    from edgetpu_models.data import read_rgb
    from edgetpu_models.io_utils import atomic_path

    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(image))[0]
    paths = (os.path.join(out_dir, f"{stem}_classes.png"), os.path.join(out_dir, f"{stem}_overlay.png"))
    pictures = (np.asarray(class_map, np.uint8), overlay(np.asarray(read_rgb(image)), class_map))
    for path, pixels in zip(paths, pictures):
        with atomic_path(path) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
    return paths


@dataclass(frozen=True)
class SegEvaluation:
    float_scores: SegScores | None
    int8_scores: SegScores
    agreement: float | None
    """Fraction of pixels where the float model and the int8 model predict the same class."""
    images: int
    class_names: tuple[str, ...]


def evaluate_segmentation(tflite: str, folder: SegFolder, classes: int, *, float_model: Any = None,
                          class_names: Sequence[str] | None = None, prefer: str | None = None) -> SegEvaluation:
    """mIoU, per-class IoU and pixel accuracy of the .tflite (and of `float_model`, a logits Keras model, with the
    pixel agreement between the two) on every pair of `folder`, at the model's input size."""
    from edgetpu_models.seg_train import predict_classes

    seg = Segmenter(tflite, prefer=prefer)
    cm_int8, cm_float = np.zeros((classes, classes), np.int64), np.zeros((classes, classes), np.int64)
    same = total = 0
    for img, mask in zip(folder.images, folder.masks):
        x, y = load_pair(img, mask, seg.size, seg.normalization, folder.layout, classes)
        p8 = seg.classes_of(x)
        cm_int8 += confusion(y, p8, classes)
        if float_model is not None:
            pf = predict_classes(float_model, x[None], seg.size)[0]
            cm_float += confusion(y, pf, classes)
            same, total = same + int((pf == p8).sum()), total + pf.size
    names = tuple(class_names or (str(i) for i in range(classes)))
    return SegEvaluation(scores(cm_float) if float_model is not None else None, scores(cm_int8),
                         same / total if total else None, len(folder), names)
