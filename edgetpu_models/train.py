"""Training and fine-tuning of any zoo model or spec on an image folder, with the reference recipe and resumable runs.

Recipe (close to the EfficientNet-EdgeTPU reference): RMSprop (rho 0.9, momentum 0.9, epsilon 1e-3) or SGD with
momentum, a learning rate scaled from "per 256 images" to the batch, linear warm-up then cosine or exponential decay,
label smoothing, L2 weight decay on conv/dense kernels, and an optional exponential moving average (EMA) of weights.

A run lives in one folder (`out_dir`):
    train_config.json   what was asked (a resumed run must ask the same)
    checkpoints/        tf.train.Checkpoint of model, optimizer (its step count, slots, EMA) and epoch, every epoch
    logs/               TensorBoard event files (train/ and validation/)
    history.json        per-epoch loss/accuracy, written after every epoch
    model.keras         the final model (EMA weights when --ema), labels.txt and metrics.json (top-1/top-5)

Resuming: a run killed during epoch k restarts from the checkpoint written at the end of epoch k-1. Each epoch's
batches come from `ImageFolderData.train_epoch(epoch)` (order and augmentation seeded by the epoch), and the dropout
generators are re-seeded at every epoch start, so the resumed run computes the same epochs the uninterrupted run does.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any, Callable

from .errors import EdgeTPUModelsError, ModelFileError
from .io_utils import atomic_path, write_text_atomic

OPTIMIZERS = ("rmsprop", "sgd")
DECAYS = ("cosine", "exponential")
STRATEGIES = ("default", "mirrored", "multi-worker", "tpu")


class TrainError(EdgeTPUModelsError, ValueError):
    """A training run that cannot start: bad settings, or a resume that does not match the run folder."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    resolution: int | None = None
    """Input size; default: the model's (variant's) resolution."""
    optimizer: str = "rmsprop"
    learning_rate: float = 0.016
    """Per 256 images (the reference's 0.016 at batch 256); the optimizer gets learning_rate * batch_size / 256."""
    warmup_epochs: float = 1.0
    decay: str = "cosine"
    decay_epochs: float = 2.4
    """Exponential decay: multiply by `decay_rate` every `decay_epochs` epochs (the reference: 0.97 every 2.4)."""
    decay_rate: float = 0.97
    label_smoothing: float = 0.1
    weight_decay: float = 1e-5
    """L2 on conv/dense kernels (weight_decay * sum(w**2) / 2 added to the loss), as in the reference."""
    ema: float | None = None
    """Momentum of an exponential moving average of the weights (the reference: 0.9999); None: no EMA."""
    bn_momentum: float | None = None
    """Overrides the spec's batch-norm momentum (e.g. 0.9 for runs of a few hundred steps, whose moving statistics
    would otherwise still be near their initial values at the end); None keeps the spec's."""
    validation_split: float = 0.2
    seed: int = 0
    augment: bool = True
    flip: bool = True
    dropout_seeded: bool = True

    def validate(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise TrainError(f"epochs: expected an integer >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise TrainError(f"batch_size: expected an integer >= 1, got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.decay not in DECAYS:
            raise TrainError(f"decay: expected one of {', '.join(DECAYS)}, got {self.decay!r}")
        if not self.learning_rate > 0:
            raise TrainError(f"learning_rate: expected > 0, got {self.learning_rate!r}")
        if not 0 <= self.label_smoothing < 1:
            raise TrainError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing!r}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise TrainError(f"ema: expected a momentum in (0, 1), got {self.ema!r}")
        if self.bn_momentum is not None and not 0 < self.bn_momentum < 1:
            raise TrainError(f"bn_momentum: expected a value in (0, 1), got {self.bn_momentum!r}")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise TrainError("warmup_epochs and weight_decay must be >= 0")


@dataclass
class TrainResult:
    model: Any
    out_dir: str
    model_path: str
    top1: float
    top5: float
    top_k: int
    epochs: int
    initial_epoch: int
    """The epoch the run started from (0, or the checkpoint's epoch when resumed)."""
    class_names: list[str]
    history: list[dict] = field(default_factory=list)
    num_train: int = 0
    num_val: int = 0
    skipped: int = 0


@lru_cache(maxsize=None)
def _schedule_class():
    """The learning-rate schedule class, made once (it needs TensorFlow, which this module imports lazily)."""
    import tensorflow as tf
    import tf_keras as keras

    @keras.saving.register_keras_serializable("edgetpu_models")
    class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
        """Linear warm-up from 0 to base_lr over `warmup` steps, then cosine to 0 at `total` steps, or staircase
        exponential decay (x decay_rate every decay_steps)."""

        def __init__(self, base_lr, warmup, total, decay, decay_steps, decay_rate):
            self.base_lr, self.warmup, self.total = base_lr, warmup, total
            self.decay, self.decay_steps, self.decay_rate = decay, decay_steps, decay_rate

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = self.base_lr * (step + 1.0) / max(self.warmup, 1.0)
            after = tf.maximum(step - self.warmup, 0.0)
            if self.decay == "cosine":
                frac = tf.minimum(after / max(self.total - self.warmup, 1.0), 1.0)
                decayed = 0.5 * self.base_lr * (1.0 + tf.cos(math.pi * frac))
            else:
                decayed = self.base_lr * tf.pow(self.decay_rate, tf.floor(after / self.decay_steps))
            return tf.where(step < self.warmup, warm, decayed)

        def get_config(self):
            return {"base_lr": self.base_lr, "warmup": self.warmup, "total": self.total, "decay": self.decay,
                    "decay_steps": self.decay_steps, "decay_rate": self.decay_rate}

    return WarmupDecay


def warmup_decay_schedule(base_lr: float, steps_per_epoch: int, config: TrainConfig):
    """Linear warm-up from 0 to base_lr, then cosine (to 0 at the last step) or staircase exponential decay."""
    total = float(config.epochs * steps_per_epoch)
    warmup = float(min(config.warmup_epochs * steps_per_epoch, total))
    return _schedule_class()(base_lr, warmup, total, config.decay, max(config.decay_epochs * steps_per_epoch, 1.0),
                             config.decay_rate)


def make_strategy(name: str = "default", tpu: str | None = None):
    """tf.distribute strategy by name: default (one device), mirrored (all local GPUs), multi-worker (TF_CONFIG),
    tpu (a Cloud TPU: `tpu` is its name or grpc address; empty on a TPU VM)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainError("--strategy multi-worker: set TF_CONFIG (cluster spec and this worker's task) on every "
                             "worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise TrainError(f"--strategy tpu: no TPU found ({str(e).splitlines()[0]})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise TrainError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")


def _is_chief(strategy: Any) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def replace_head(model: Any, num_classes: int):
    """The same network with a new classifier (Dense + softmax, `num_classes` outputs) on its pooled features."""
    import tf_keras as keras

    from .builder import DENSE_KERNEL_INITIALIZER

    try:
        features = model.get_layer("classifier").input
    except ValueError:
        features = model.layers[-2].output if isinstance(model.layers[-1], keras.layers.Dense) else model.output
        if len(features.shape) != 2:
            raise ModelFileError(f"{model.name}: cannot find the classifier to replace (expected a layer "
                                 f"'classifier' or a final Dense layer on pooled features)") from None
    out = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=DENSE_KERNEL_INITIALIZER,
                             name="classifier")(features)
    return keras.Model(model.inputs, out, name=model.name)


def load_keras_model(path: str):
    """A .keras/.h5 model file -> tf_keras model (ModelFileError when missing or unreadable)."""
    import tf_keras as keras

    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: not a readable Keras model ({str(e).splitlines()[0][:200]})") from None


def build_for_training(model_ref: Any, num_classes: int, *, variant: str | None = None,
                       resolution: int | None = None, weights: str | None = None):
    """The network to train: from scratch (weights None), or fine-tuning from 'imagenet', a .safetensors/.h5 weights
    file, or a .keras model, with a new head sized to `num_classes`."""
    from .builder import build_model

    if weights is None:
        return build_model(model_ref, variant, resolution=resolution, classes=num_classes, weights=None)
    if isinstance(weights, str) and weights.endswith(".keras"):
        model = load_keras_model(weights)
        return replace_head(model, num_classes)
    base = build_model(model_ref, variant, resolution=resolution, classes=1000, weights=weights)
    return replace_head(base, num_classes)


def _kernels(model: Any) -> list:
    return [w for layer in model.layers for w in getattr(layer, "trainable_weights", [])
            if w.name.split("/")[-1].startswith(("kernel", "depthwise_kernel"))]


def _compile(model: Any, config: TrainConfig, steps_per_epoch: int, top_k: int) -> None:
    import tensorflow as tf
    import tf_keras as keras

    lr = warmup_decay_schedule(config.learning_rate * config.batch_size / 256.0, steps_per_epoch, config)
    ema = {"use_ema": True, "ema_momentum": config.ema, "ema_overwrite_frequency": None} if config.ema else {}
    if config.optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(lr, rho=0.9, momentum=0.9, epsilon=1e-3, **ema)
    else:
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **ema)
    if config.weight_decay > 0:
        kernels = _kernels(model)
        wd = config.weight_decay
        model.add_loss(lambda: wd * tf.add_n([tf.nn.l2_loss(k) for k in kernels]))
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                           keras.metrics.TopKCategoricalAccuracy(k=top_k, name="top5")])


def _random_generators(model: Any) -> list:
    """The tf.random.Generator of every dropout layer (those layers build one when the TF generator is enabled)."""
    gens = []
    for layer in model.layers:
        rg = getattr(layer, "_random_generator", None)
        gen = getattr(rg, "_generator", None)
        if gen is not None:
            gens.append(gen)
    return gens


def _progress_callback(keras: Any, steps: int, epochs: int):
    from tqdm.auto import tqdm

    class TqdmProgress(keras.callbacks.Callback):
        """One bar per epoch: steps done, loss and top-1 so far; validation figures when the epoch ends."""

        bar = None

        def on_epoch_begin(self, epoch, logs=None):
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=True,
                            dynamic_ncols=True)

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            self.bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", top1=f"{logs.get('top1', 0):.3f}", refresh=False)
            self.bar.update(1)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", top1=f"{logs.get('top1', 0):.3f}",
                                 val_top1=f"{logs.get('val_top1', float('nan')):.3f}")
            self.bar.close()

    return TqdmProgress()


def _config_json(config: TrainConfig, model_ref: Any, variant: str | None, weights: str | None, data_dir: str) -> dict:
    from .spec import Spec

    ref = model_ref.name if isinstance(model_ref, Spec) else os.fspath(model_ref)
    return {"model": ref, "variant": variant, "weights": weights, "data": os.path.abspath(data_dir),
            "config": asdict(config)}


def train(model_ref: Any, data_dir: str, out_dir: str, config: TrainConfig = TrainConfig(), *,
          variant: str | None = None, weights: str | None = None, resume: bool = False,
          strategy: str = "default", tpu: str | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None, data: Any = None) -> TrainResult:
    """Trains (weights None) or fine-tunes (weights 'imagenet' / file) `model_ref` on the image folder `data_dir`.

    `data`: an already loaded ImageFolderData (same resolution/batch/seed) to reuse instead of reading `data_dir`.
    `log` receives one-line notes (data summary, resume point); the library prints nothing itself.
    """
    config.validate()
    import tf_keras as keras

    # Dropout layers built while this is on hold a tf.random.Generator (re-seeded per epoch, for resumable runs);
    # the switch is process-wide, so it is put back as it was for whatever builds models next.
    was_on = keras.backend.experimental.is_tf_random_generator_enabled()
    try:
        return _train(model_ref, data_dir, out_dir, config, variant=variant, weights=weights, resume=resume,
                      strategy=strategy, tpu=tpu, progress=progress, log=log, data=data)
    finally:
        if not was_on:
            keras.backend.experimental.disable_tf_random_generator()


def _train(model_ref: Any, data_dir: str, out_dir: str, config: TrainConfig, *, variant: str | None,
           weights: str | None, resume: bool, strategy: str, tpu: str | None, progress: bool,
           log: Callable[[str], None] | None, data: Any) -> TrainResult:
    say = log or (lambda _msg: None)
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    cfg_path = os.path.join(out_dir, "train_config.json")
    want = _config_json(config, model_ref, variant, weights, data_dir)
    import tensorflow as tf

    has_ckpt = tf.train.latest_checkpoint(ckpt_dir) is not None
    if has_ckpt and not resume:
        raise TrainError(f"{out_dir}: holds a training run already (checkpoints/); pass --resume to continue it or "
                         f"choose another --out")
    if resume and has_ckpt and os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            have = json.load(f)
        if have != want:
            diff = sorted(k for k in set(have["config"]) | set(want["config"])
                          if have["config"].get(k) != want["config"].get(k))
            diff += [k for k in ("model", "variant", "weights", "data") if have.get(k) != want.get(k)]
            raise TrainError(f"{cfg_path}: --resume with different settings ({', '.join(diff)}); resume with the "
                             f"run's own settings or choose another --out")

    import tf_keras as keras

    from .builder import resolve_arch
    from .data import load_image_folder

    from_keras_file = isinstance(weights, str) and weights.endswith(".keras")
    arch = None if from_keras_file else resolve_arch(model_ref, variant, config.resolution)
    if config.dropout_seeded:
        keras.backend.experimental.enable_tf_random_generator()
    keras.utils.set_random_seed(config.seed)
    dist = make_strategy(strategy, tpu)
    base = None
    if from_keras_file:  # fine-tuning a trained .keras model: its input size is the default resolution
        with dist.scope():
            base = load_keras_model(weights)
    resolution = config.resolution or (arch.resolution if arch else int(base.input_shape[1]))
    if data is None:
        if arch is not None:
            norm = arch.normalization
        else:
            from .preprocessing import normalization_of

            norm = normalization_of(model_ref)
        data = load_image_folder(data_dir, resolution, norm, batch_size=config.batch_size,
                                 validation_split=config.validation_split, seed=config.seed, augment=config.augment,
                                 flip=config.flip)
    say(f"data: {data.num_train} train / {data.num_val} validation images, {data.num_classes} classes"
        + (f", {data.skipped} unreadable file(s) skipped" if data.skipped else ""))
    top_k = min(5, data.num_classes)
    steps = data.steps_per_epoch()
    with dist.scope():
        if base is not None:
            model = replace_head(base, data.num_classes)
        else:
            model = build_for_training(model_ref, data.num_classes, variant=variant, resolution=resolution,
                                       weights=weights)
        if model.input_shape[1] != data.image_size:
            raise TrainError(f"{weights}: the model takes {model.input_shape[1]}x{model.input_shape[2]} input, the data "
                             f"was prepared at {data.image_size}")
        if config.bn_momentum is not None:
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = config.bn_momentum
        _compile(model, config, steps, top_k)
        model.optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch_var)
    chief = _is_chief(dist)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir if chief else os.path.join(out_dir, ".worker_tmp"),
                                         max_to_keep=3)
    initial_epoch = 0
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        initial_epoch = int(epoch_var.numpy())
        say(f"resuming from {manager.latest_checkpoint} (epoch {initial_epoch}/{config.epochs} done, "
            f"step {int(model.optimizer.iterations.numpy())})")
    elif resume:
        say(f"{out_dir}: no checkpoint yet; starting from epoch 0")
    if chief:
        write_text_atomic(cfg_path, json.dumps(want, indent=1) + "\n")

    hist_path = os.path.join(out_dir, "history.json")
    history: list[dict] = []
    if initial_epoch and os.path.exists(hist_path):
        with open(hist_path, encoding="utf-8") as f:
            history = [h for h in json.load(f) if h["epoch"] <= initial_epoch]

    n_classes = data.num_classes

    def one_hot(x, y):
        return x, tf.one_hot(y, n_classes)

    generators = _random_generators(model)

    class EpochState(keras.callbacks.Callback):
        """Re-seeds dropout at each epoch start; checkpoints and appends the history at each epoch end."""

        def on_epoch_begin(self, epoch, logs=None):
            for i, gen in enumerate(generators):
                gen.reset_from_seed(config.seed * 1_000_003 + epoch * 1009 + i)

        def on_epoch_end(self, epoch, logs=None):
            epoch_var.assign(epoch + 1)
            manager.save(checkpoint_number=epoch + 1)
            history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
            if chief:
                write_text_atomic(hist_path, json.dumps(history, indent=1) + "\n")

    callbacks: list = [EpochState(), keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq="epoch",
                                                                 write_graph=False, profile_batch=0)]
    if progress:
        callbacks.append(_progress_callback(keras, steps, config.epochs))
    val = data.val.map(one_hot) if data.num_val else None
    if initial_epoch < config.epochs:
        stream = data.train_epoch(initial_epoch)
        for e in range(initial_epoch + 1, config.epochs):
            stream = stream.concatenate(data.train_epoch(e))
        model.fit(stream.map(one_hot), epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  validation_data=val, callbacks=callbacks, verbose=0)
    elif config.ema:  # a finished run resumed: the saved weights are the raw ones; swap in the moving averages
        model.optimizer.finalize_variable_values(model.trainable_variables)

    top1 = top5 = float("nan")
    if val is not None:
        scores = model.evaluate(val, verbose=0, return_dict=True)
        top1, top5 = float(scores["top1"]), float(scores["top5"])
    model_path = os.path.join(out_dir, "model.keras")
    if chief:
        with atomic_path(model_path) as tmp:
            model.save(tmp)
        write_text_atomic(os.path.join(out_dir, "labels.txt"), "\n".join(data.class_names) + "\n")
        write_text_atomic(os.path.join(out_dir, "metrics.json"), json.dumps(
            {"top1": top1, "top5": top5, "top_k": top_k, "epochs": config.epochs, "num_train": data.num_train,
             "num_val": data.num_val, "skipped": data.skipped, "classes": data.class_names}, indent=1) + "\n")
    return TrainResult(model=model, out_dir=out_dir, model_path=model_path, top1=top1, top5=top5, top_k=top_k,
                       epochs=config.epochs, initial_epoch=initial_epoch, class_names=list(data.class_names),
                       history=history, num_train=data.num_train, num_val=data.num_val, skipped=data.skipped)


def config_from_args(args: Any, **overrides: Any) -> TrainConfig:
    """TrainConfig from an argparse namespace (fields it lacks keep their defaults)."""
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(overrides)
    return TrainConfig(**values)
