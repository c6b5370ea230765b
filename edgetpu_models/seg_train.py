"""Training and scoring segmentation models: a cross-entropy that ignores label 255 on logits upsampled to the label
size (tensorflow/models' `use_groundtruth_dimension`), a small fit loop, and the metrics (mIoU, per-class IoU, pixel
accuracy) computed from one confusion matrix. The metrics are numpy-only; training imports TensorFlow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetpu_models.errors import DatasetError
from edgetpu_models.seg_data import IGNORE_LABEL


@dataclass(frozen=True)
class SegScores:
    miou: float
    pixel_accuracy: float
    per_class_iou: tuple[float | None, ...]
    """None for a class absent from both labels and predictions (left out of the mean)."""

    def to_dict(self) -> dict[str, Any]:
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy, "per_class_iou": list(self.per_class_iou)}


def confusion(labels: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """[classes, classes] counts (rows: label, columns: prediction); label 255 (and any >= classes) is ignored."""
    labels, pred = np.asarray(labels).ravel().astype(np.int64), np.asarray(pred).ravel().astype(np.int64)
    if labels.shape != pred.shape:
        raise DatasetError(f"labels and predictions differ in size: {labels.size} vs {pred.size}")
    keep = labels < classes
    idx = labels[keep] * classes + np.clip(pred[keep], 0, classes - 1)
    return np.bincount(idx, minlength=classes * classes).reshape(classes, classes)


def scores(cm: np.ndarray) -> SegScores:
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    ious = tuple(float(t / u) if u > 0 else None for t, u in zip(tp, union))
    present = [v for v in ious if v is not None]
    total = cm.sum()
    return SegScores(float(np.mean(present)) if present else 0.0, float(tp.sum() / total) if total else 0.0, ious)


def masked_loss(y_true: Any, y_pred: Any) -> Any:
    """Sparse cross-entropy of logits [B, h, w, C] against labels [B, H, W] (bilinear upsampling of the logits to
    H x W), averaged over the pixels whose label is not 255."""
    import tensorflow as tf

    labels = tf.cast(tf.reshape(y_true, tf.shape(y_true)[:3]), tf.int32)
    logits = tf.image.resize(y_pred, tf.shape(labels)[1:3], method="bilinear")
    valid = tf.not_equal(labels, IGNORE_LABEL)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    w = tf.cast(valid, ce.dtype)
    return tf.reduce_sum(ce * w) / tf.maximum(tf.reduce_sum(w), 1.0)


def fit_segmentation(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int = 8,
                     learning_rate: float = 1e-3, verbose: int = 0, seed: int = 0) -> dict[str, float]:
    """Trains a logits model (or its QAT wrapper) with Adam on arrays; returns the last epoch's loss. Horizontal
    flips as the only augmentation (the reference's aug_rand_hflip)."""
    import tensorflow as tf
    import tf_keras as keras

    if epochs < 1 or batch_size < 1 or not (math.isfinite(learning_rate) and learning_rate > 0):
        raise DatasetError(f"training: epochs, batch size >= 1 and a learning rate > 0 expected, got {epochs}, "
                           f"{batch_size}, {learning_rate}")
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).shuffle(len(x), seed=seed)

    def flip(img: Any, lab: Any) -> tuple[Any, Any]:
        do = tf.random.uniform(()) < 0.5
        return tf.cond(do, lambda: (img[:, ::-1], lab[:, ::-1]), lambda: (img, lab))

    ds = ds.map(flip).batch(batch_size).prefetch(2)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=masked_loss)
    hist = model.fit(ds, epochs=epochs, verbose=verbose)
    recalibrate_batch_norm(model, x[:64])
    return {"loss": float(hist.history["loss"][-1]), "epochs": epochs}


def recalibrate_batch_norm(model: Any, x: np.ndarray) -> int:
    """Sets every BatchNormalization's moving statistics to those of one training-mode pass over `x`: after a short
    run (a few hundred steps) momentum 0.99 has not yet forgotten the initial statistics, and inference-mode
    predictions lag far behind the training loss. Returns how many layers were reset (0 for a QAT model, whose
    batch norms are folded)."""
    import tf_keras as keras

    bns = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    if bns:
        model(x, training=True)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    return len(bns)


def predict_classes(model: Any, x: np.ndarray, label_size: int, batch_size: int = 8) -> np.ndarray:
    """Class maps [N, label_size, label_size] from a logits model: bilinear upsampling, then argmax."""
    import tensorflow as tf

    out = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size], training=False)
        up = tf.image.resize(logits, (label_size, label_size), method="bilinear")
        out.append(np.asarray(tf.argmax(up, axis=-1), np.uint8))
    return np.concatenate(out)
