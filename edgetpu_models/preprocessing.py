"""Input normalisation read from a spec (so a NAS-found spec carries its own), usable on numpy arrays or tensors."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgetpu_models.spec import Normalization, Spec
from edgetpu_models.zoo import normalization_of


def normalize(x: Any, model_ref: "str | os.PathLike[str] | Spec | Normalization") -> Any:
    """(x - mean) / std with the spec's constants; numpy in, numpy out (float32); tensors stay tensors."""
    norm = model_ref if isinstance(model_ref, Normalization) else normalization_of(model_ref)
    mean = np.asarray(norm.mean, np.float32)
    std = np.asarray(norm.std, np.float32)
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        return (np.asarray(x, np.float32) - mean) / std
    return (x - mean) / std  # tf.Tensor and friends broadcast the same way
