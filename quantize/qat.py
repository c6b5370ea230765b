"""Quantization-aware training with tensorflow-model-optimization, batch norm folded the way the converter folds it.

The TFLite converter folds every BatchNormalization that follows a convolution into that convolution's kernel and
bias (w * gamma / sqrt(var + eps), beta - mean * gamma / sqrt(var + eps)) and only then quantizes the kernel, per
output channel. `quantize_model` does the same folding first (`fold_batch_norms`), so the fake-quantized kernels that
QAT trains are exactly the int8 kernels the exported file will hold; tfmot's default 8-bit scheme then wraps every
layer (conv + ReLU fused, activations quantized after the activation, as the converter fuses them).

QAT models are saved and loaded like any other through `edgetpu_models.model_io` (`save_model`/`load_keras`), which
makes tfmot's wrappers round-trip through the `.keras` format. `run_qat` is the whole `quantize` job (open the model,
load the images, a new head when the classes differ, wrap, fine-tune with checkpoints, save with its sidecar), with
its settings and their limits in `QATConfig`.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgetpu_models.errors import QATError
from edgetpu_models.model_io import is_qat_model, open_model, save_model
from edgetpu_models.sidecar import Sidecar

_FOLDABLE = ("Conv2D", "DepthwiseConv2D")


def _inbounds(layer_cfg: dict) -> list[list]:
    """The [layer, node, tensor, kwargs] entries of a layer's inbound nodes. A TF-op layer (tf.split, which the grouped
    convolution uses) stores its one node flat: [layer, node, tensor, kwargs]."""
    out = []
    for node in layer_cfg.get("inbound_nodes", []):
        out.extend([node] if node and isinstance(node[0], str) else [e for e in node if isinstance(e, list)])
    return out


def _inbound_names(layer_cfg: dict) -> list[str]:
    return [inbound[0] for inbound in _inbounds(layer_cfg)]


def _fold_pairs(model: Any) -> dict[str, str]:
    """{batch norm layer name: conv layer name} for every BN fed only by a conv that feeds only that BN."""
    config = model.get_config()
    by_name = {lc["name"]: lc for lc in config["layers"]}
    consumers: dict[str, list[str]] = {}
    for lc in config["layers"]:
        for src in _inbound_names(lc):
            consumers.setdefault(src, []).append(lc["name"])
    outputs = {o[0] for o in config["output_layers"]}
    pairs = {}
    for lc in config["layers"]:
        if lc["class_name"] != "BatchNormalization":
            continue
        src = _inbound_names(lc)
        if len(src) != 1 or len(lc.get("inbound_nodes", [])) != 1:
            continue
        conv = by_name.get(src[0])
        if conv is None or conv["class_name"] not in _FOLDABLE or len(conv.get("inbound_nodes", [])) != 1:
            continue
        if consumers.get(conv["name"]) != [lc["name"]] or conv["name"] in outputs:
            continue
        axis = lc["config"].get("axis", -1)
        if axis not in (-1, 3, [3], [-1]):
            continue
        pairs[lc["name"]] = conv["name"]
    return pairs


def fold_batch_norms(model: Any) -> Any:
    """The same function with every conv -> BatchNormalization pair replaced by one conv with bias (inference BN).

    Returns `model` itself when it has nothing to fold. Works on functional tf_keras models of stock layers.
    """
    import tf_keras as keras

    pairs = _fold_pairs(model)
    if not pairs:
        return model
    config = copy.deepcopy(model.get_config())
    convs = set(pairs.values())
    layers = []
    for lc in config["layers"]:
        if lc["name"] in pairs:
            continue
        if lc["name"] in convs:
            lc["config"]["use_bias"] = True
        for inbound in _inbounds(lc):
            inbound[0] = pairs.get(inbound[0], inbound[0])
        layers.append(lc)
    config["layers"] = layers
    for out in config["output_layers"]:
        out[0] = pairs.get(out[0], out[0])
    folded = keras.Model.from_config(config)
    bn_of = {conv: bn for bn, conv in pairs.items()}
    for layer in folded.layers:
        old = model.get_layer(layer.name)
        if layer.name not in bn_of:
            layer.set_weights(old.get_weights())
            continue
        bn = model.get_layer(bn_of[layer.name])
        kernel = old.get_weights()[0]
        bias = old.get_weights()[1] if old.use_bias else np.zeros(bn.moving_mean.shape, np.float32)
        gamma = bn.gamma.numpy() if bn.scale else np.ones(bn.moving_mean.shape, np.float32)
        beta = bn.beta.numpy() if bn.center else np.zeros(bn.moving_mean.shape, np.float32)
        scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        if isinstance(old, keras.layers.DepthwiseConv2D):  # kernel [kh, kw, in, mult]; output channel = c * mult + m
            new_kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
        else:  # kernel [kh, kw, in, out]
            new_kernel = kernel * scale
        new_bias = (bias - bn.moving_mean.numpy()) * scale + beta
        layer.set_weights([new_kernel.astype(np.float32), new_bias.astype(np.float32)])
    return folded


def _is_split(layer: Any) -> bool:
    return type(layer).__name__ == "TFOpLambda" and layer.get_config().get("function") == "split"


def _annotate(model: Any) -> Any:
    """tfmot's quantize_annotate_model, except that tf.split (the builder's grouped convolution) stays unwrapped: tfmot
    has no config for TF-op layers, and a split moves int8 values without changing them, so there is nothing to
    fake-quantize (its input is quantized where it is produced; the converter quantizes the op itself)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    if not any(_is_split(layer) for layer in model.layers):
        return tfmot.quantization.keras.quantize_annotate_model(model)

    def clone(layer: Any) -> Any:
        fresh = layer.__class__.from_config(layer.get_config())
        if _is_split(layer) or isinstance(layer, keras.layers.InputLayer):
            return fresh
        return tfmot.quantization.keras.quantize_annotate_layer(fresh)

    cloned = keras.models.clone_model(model, clone_function=clone)
    cloned.set_weights(model.get_weights())
    return cloned


def quantize_model(model: Any, *, fold_bn: bool = True) -> Any:
    """Wraps a tf_keras model for quantization-aware training (tfmot's default 8-bit scheme), after folding batch
    norm into the convolutions as the converter will. The result trains like any Keras model and exports to int8."""
    import tensorflow_model_optimization as tfmot

    if is_qat_model(model):
        return model
    base = fold_batch_norms(model) if fold_bn else model
    try:
        annotated = _annotate(base)
        with tfmot.quantization.keras.quantize_scope():
            return tfmot.quantization.keras.quantize_apply(annotated)
    except (ValueError, RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise QATError(f"model {model.name}: tfmot cannot wrap it for quantization-aware training ({first[:200]})") \
            from None


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning

def _checkpoint_manager(model: Any, optimizer: Any, step: Any, checkpoint_dir: "str | os.PathLike[str] | None"):
    """A checkpoint manager for a resumable run (restoring the last checkpoint into model, optimizer and step), or
    None without a checkpoint folder."""
    import tensorflow as tf

    if checkpoint_dir is None:
        return None
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(ckpt, os.fspath(checkpoint_dir), max_to_keep=1)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
    return manager


def qat_finetune(qat_model: Any, train: Any, steps: int, *, learning_rate: float = 1e-4, val: Any = None,
                 progress: bool = True, checkpoint_dir: "str | os.PathLike[str] | None" = None,
                 checkpoint_every: int = 25) -> dict[str, float]:
    """Trains a QAT model for `steps` batches of `train` ((images, int labels) tf.data, repeated as needed) with Adam
    and sparse cross-entropy. Returns {"loss", "accuracy", "steps_done", "resumed_from"} (+ "val_accuracy" when `val`
    is given).

    With `checkpoint_dir`, model, optimizer and step count are saved every `checkpoint_every` steps, and a run
    started again with the same directory continues from the last checkpoint instead of step 0.
    """
    import tensorflow as tf
    import tf_keras as keras

    if steps < 0:
        raise QATError(f"qat steps: expected an integer >= 0, got {steps}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise QATError(f"learning rate: expected a finite number > 0, got {learning_rate}")
    optimizer = keras.optimizers.Adam(learning_rate)
    qat_model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    done = tf.Variable(0, dtype=tf.int64, trainable=False)
    manager = _checkpoint_manager(qat_model, optimizer, done, checkpoint_dir)
    resumed = int(done.numpy())
    out: dict[str, float] = {"resumed_from": float(resumed)}
    bar = None
    if progress and steps > resumed:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=resumed, desc="QAT", unit="step")
    stream = train.repeat()  # each chunk starts a fresh (reshuffled) pass
    chunk = max(1, checkpoint_every) if manager is not None else max(1, steps)
    while int(done.numpy()) < steps:
        n = min(chunk, steps - int(done.numpy()))
        hist = qat_model.fit(stream, steps_per_epoch=n, epochs=1, verbose=0)
        done.assign_add(n)
        out["loss"] = float(hist.history["loss"][-1])
        out["accuracy"] = float(hist.history["accuracy"][-1])
        if not math.isfinite(out["loss"]):
            raise QATError(f"QAT diverged (loss {out['loss']}) by step {int(done.numpy())}: lower the learning rate")
        if manager is not None:
            manager.save()
        if bar is not None:
            bar.update(n)
            bar.set_postfix(loss=f"{out['loss']:.3f}")
    if bar is not None:
        bar.close()
    out["steps_done"] = float(int(done.numpy()))
    if val is not None:
        out["val_accuracy"] = float(qat_model.evaluate(val, verbose=0, return_dict=True)["accuracy"])
    return out


# ----------------------------------------------------------------------------------------------------------------------
# The `quantize` job

MAX_QAT_STEPS = 10_000_000


@dataclass(frozen=True)
class QATConfig:
    """Settings of a quantization-aware fine-tuning run (`run_qat`); the CLI's defaults are these."""

    steps: int = 100
    """Fine-tuning steps with fake quantization (0: wrap only); checkpointed every 25 steps in OUT.ckpt/, and a rerun
    with the same output resumes there."""
    batch_size: int = 16
    learning_rate: float = 1e-4
    seed: int = 0
    validation_split: float = 0.2
    progress: bool = True

    def validate(self) -> None:
        checks = [("steps", isinstance(self.steps, int) and 0 <= self.steps <= MAX_QAT_STEPS,
                   f"an integer from 0 to {MAX_QAT_STEPS}"),
                  ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
                  ("learning_rate", math.isfinite(self.learning_rate) and self.learning_rate > 0, "a number > 0"),
                  ("validation_split", 0 <= self.validation_split < 1, "a number in [0, 1)")]
        for name, ok, what in checks:
            if not ok:
                raise QATError(f"{name}: expected {what}, got {getattr(self, name)!r}")


@dataclass
class QATResult:
    path: str
    model_name: str
    stats: dict[str, Any]
    """qat_finetune's: steps_done, resumed_from, loss, val_accuracy (when there are validation images)."""
    new_head: bool
    notes: list[str] = field(default_factory=list)


def run_qat(model_ref: Any, data_dir: str, out: str, config: QATConfig = QATConfig(), *, variant: str | None = None,
            resolution: int | None = None, log: Callable[[str], None] | None = None, force: bool = False) -> QATResult:
    """The `quantize` job: MODEL (zoo name, spec or Keras file) fine-tuned with fake quantization on the image folder
    `data_dir`, written to `out` (.keras) with its sidecar. `log` gets one line per stage. Refuses before any work to
    replace files that are not its own outputs (unless `force`) and a folder too small to calibrate the export."""
    from edgetpu_models.data import load_image_folder
    from edgetpu_models.io_utils import check_destination
    from edgetpu_models.quantize.ptq import require_calibration_images
    from edgetpu_models.sidecar import foreign_outputs
    from edgetpu_models.train import replace_head

    config.validate()
    if not out.endswith(".keras"):
        raise QATError(f"{out}: expected a .keras file name")
    check_destination(out, foreign=foreign_outputs(out), force=force)
    say = log or (lambda _msg: None)
    opened = open_model(model_ref, variant, resolution)
    model, size = opened.model, int(opened.model.input_shape[1])
    data = load_image_folder(data_dir, size, opened.normalization, batch_size=config.batch_size,
                             validation_split=config.validation_split, seed=config.seed, augment=True)
    # the QAT model is exported next (calibrated on this folder): refuse now rather than after QAT
    require_calibration_images(data.num_train + data.num_val, data_dir, " the export of the QAT model")
    outputs = int(model.output_shape[-1])
    new_head = outputs != data.num_classes
    if new_head:
        say(f"{opened.name}: {outputs} outputs, {data_dir} has {data.num_classes} classes: new classifier head")
        model = replace_head(model, data.num_classes)
    qat = quantize_model(model)
    say(f"{opened.name}: wrapped for quantization-aware training (batch norm folded, {len(qat.layers)} layers); "
        f"{data.num_train} training / {data.num_val} validation images, {config.steps} steps")
    ckpt_dir = out + ".ckpt"
    stats = qat_finetune(qat, data.train, config.steps, learning_rate=config.learning_rate,
                         val=data.val if data.num_val else None, progress=config.progress, checkpoint_dir=ckpt_dir)
    if stats["resumed_from"]:
        say(f"resumed from the checkpoint at step {int(stats['resumed_from'])} ({ckpt_dir})")
    meta = Sidecar(model=opened.name, normalization=opened.normalization, labels=tuple(data.class_names),
                   input_size=(size, size))
    save_model(qat, out, meta)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: the .keras holds everything
    return QATResult(os.path.abspath(out), opened.name, stats, new_head)
