"""Training and fine-tuning of any zoo model or spec on an image folder, with the reference recipe and resumable runs.

Recipe (close to the EfficientNet-EdgeTPU reference): RMSprop (rho 0.9, momentum 0.9, epsilon 1e-3) or SGD with
momentum, a learning rate scaled from "per 256 images" to the batch, linear warm-up then cosine or exponential decay,
label smoothing, L2 weight decay on conv/dense kernels, and an optional exponential moving average (EMA) of weights.

A run lives in one folder (`out_dir`):
    train_config.json   what was asked (a resumed run must ask the same)
    checkpoints/        tf.train.Checkpoint of model, optimizer (its step count, slots, EMA) and epoch, every epoch
    logs/               TensorBoard event files (train/ and validation/)
    history.json        per-epoch loss/accuracy, written after every epoch
    model.keras         the final model (EMA weights when --ema), with its sidecar model.keras.json (+ .labels.txt)
    metrics.json        top-1/top-5

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

from edgetpu_models.errors import ModelFileError, TrainError
from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.metrics import keras_topk_metric, topk_applicable
from edgetpu_models.model_io import keras_model_file, open_model, save_model
from edgetpu_models.sidecar import Sidecar

OPTIMIZERS = ("rmsprop", "sgd")
DECAYS = ("cosine", "exponential")
STRATEGIES = ("default", "mirrored", "multi-worker", "tpu")


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
        self._check_finite()
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

    def _check_finite(self) -> None:
        """NaN and infinity pass most range checks (and `nan > 0` is merely False): refuse them first, by name."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainError(f"{f.name}: expected a finite number, got {value!r}")


@dataclass
class TrainResult:
    model: Any
    out_dir: str
    model_path: str
    top1: float
    top5: float | None
    """None with 5 classes or fewer: top-5 is then not applicable (it would be 100%)."""
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

    from edgetpu_models.builder import DENSE_KERNEL_INITIALIZER

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


def build_for_training(model_ref: Any, num_classes: int, *, variant: str | None = None,
                       resolution: int | None = None, weights: str | None = None):
    """The network to train: from scratch (weights None), or fine-tuning from 'imagenet', a .safetensors/.h5 weights
    file, or a .keras model, with a new head sized to `num_classes`."""
    from edgetpu_models.builder import build_model

    if weights is None:
        return build_model(model_ref, variant, resolution=resolution, classes=num_classes, weights=None)
    if keras_model_file(weights):
        return replace_head(open_model(weights).model, num_classes)
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
    metrics = [keras_topk_metric(1, "top1")]  # tie-aware: a tie never earns a hit (edgetpu_models.metrics)
    if topk_applicable(top_k, int(model.outputs[0].shape[-1])):
        metrics.append(keras_topk_metric(top_k, "top5"))
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=metrics)


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


def _model_name(model_ref: Any) -> str:
    from edgetpu_models.spec import Spec

    return model_ref.name if isinstance(model_ref, Spec) else os.fspath(model_ref)


def _config_json(config: TrainConfig, model_ref: Any, variant: str | None, weights: str | None, data_dir: str) -> dict:

    return {"model": _model_name(model_ref), "variant": variant, "weights": weights, "data": os.path.abspath(data_dir),
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


@dataclass(frozen=True)
class _RunFolder:
    """The files of one run folder (see the module docstring)."""

    path: str

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpoints(self) -> str:
        return self._file("checkpoints")

    @property
    def worker_checkpoints(self) -> str:
        """Where a non-chief worker of a multi-worker run writes its (discarded) checkpoints."""
        return self._file(".worker_tmp")

    @property
    def config(self) -> str:
        return self._file("train_config.json")

    @property
    def history(self) -> str:
        return self._file("history.json")

    @property
    def logs(self) -> str:
        return self._file("logs")

    @property
    def model(self) -> str:
        return self._file("model.keras")

    @property
    def metrics(self) -> str:
        return self._file("metrics.json")


@dataclass(frozen=True)
class _Request:
    """What one `train` call asked for."""

    model_ref: Any
    data_dir: str
    folder: _RunFolder
    config: TrainConfig
    variant: str | None
    weights: str | None
    resume: bool
    strategy: str
    tpu: str | None
    progress: bool

    @property
    def from_keras_file(self) -> bool:
        """Fine-tuning a trained .keras model (whose input size is then the default resolution)."""
        return keras_model_file(self.weights) is not None


@dataclass(frozen=True)
class _Source:
    """Where the network comes from (a zoo/spec architecture, or a loaded .keras model) and the input it takes."""

    arch: Any
    base: Any
    resolution: int
    normalization: Any


@dataclass(frozen=True)
class _RunState:
    """The compiled model and what checkpoints it: the epoch counter, the checkpoint and its manager."""

    model: Any
    epoch: Any
    checkpoint: Any
    manager: Any
    chief: bool


def _train(model_ref: Any, data_dir: str, out_dir: str, config: TrainConfig, *, variant: str | None,
           weights: str | None, resume: bool, strategy: str, tpu: str | None, progress: bool,
           log: Callable[[str], None] | None, data: Any) -> TrainResult:
    say = log or (lambda _msg: None)
    req = _Request(model_ref, data_dir, _RunFolder(out_dir), config, variant, weights, resume, strategy, tpu,
                   progress)
    want = _config_json(config, model_ref, variant, weights, data_dir)
    _check_run_folder(req.folder, want, resume)
    dist, source = _start(req)
    if data is None:
        data = _load_data(req, source)
    say(_data_summary(data))
    top_k = 5  # top-5 is measured only with more than 5 classes (edgetpu_models.metrics.topk_applicable)
    state = _build_state(req, dist, source, data, top_k)
    initial_epoch = _restore(req, state, say)
    if state.chief:
        write_text_atomic(req.folder.config, json.dumps(want, indent=1) + "\n")
    history = _past_history(req.folder.history, initial_epoch)
    callbacks = _callbacks(req, state, data, history)
    val = data.val.map(_one_hot_labels(data.num_classes)) if data.num_val else None
    _fit(req, state, data, val, initial_epoch, callbacks)
    top1, top5 = _evaluate(state.model, val)
    if state.chief:
        _save_outputs(req, state.model, source, data, {"top1": top1, "top5": top5, "top_k": top_k})
    return TrainResult(model=state.model, out_dir=out_dir, model_path=req.folder.model, top1=top1, top5=top5,
                       top_k=top_k, epochs=config.epochs, initial_epoch=initial_epoch,
                       class_names=list(data.class_names), history=history, num_train=data.num_train,
                       num_val=data.num_val, skipped=data.skipped)


def _check_run_folder(folder: _RunFolder, want: dict, resume: bool) -> None:
    """A folder with checkpoints is only reused by --resume, and only with the settings it was started with."""
    import tensorflow as tf

    has_ckpt = tf.train.latest_checkpoint(folder.checkpoints) is not None
    if has_ckpt and not resume:
        raise TrainError(f"{folder.path}: holds a training run already (checkpoints/); pass --resume to continue it "
                         f"or choose another --out")
    if resume and has_ckpt and os.path.exists(folder.config):
        with open(folder.config, encoding="utf-8") as f:
            have = json.load(f)
        if have != want:
            raise TrainError(f"{folder.config}: --resume with different settings "
                             f"({', '.join(_changed_settings(have, want))}); resume with the run's own settings or "
                             f"choose another --out")


def _changed_settings(have: dict, want: dict) -> list[str]:
    """The names that differ between two `_config_json` records: config fields first (sorted), then the rest."""
    diff = sorted(k for k in set(have["config"]) | set(want["config"])
                  if have["config"].get(k) != want["config"].get(k))
    return diff + [k for k in ("model", "variant", "weights", "data") if have.get(k) != want.get(k)]


def _start(req: _Request) -> tuple[Any, _Source]:
    """Seeds the run and opens the distribution strategy; a .keras model to fine-tune is loaded in its scope."""
    import tf_keras as keras

    from edgetpu_models.builder import resolve_arch

    config = req.config
    arch = None if req.from_keras_file else resolve_arch(req.model_ref, req.variant, config.resolution)
    if config.dropout_seeded:
        keras.backend.experimental.enable_tf_random_generator()
    keras.utils.set_random_seed(config.seed)
    dist = make_strategy(req.strategy, req.tpu)
    if arch is not None:
        return dist, _Source(arch, None, config.resolution or arch.resolution, arch.normalization)
    with dist.scope():  # fine-tuning a saved model: its normalisation is the one its sidecar says
        opened = open_model(req.weights)
    base = opened.model
    return dist, _Source(None, base, config.resolution or int(base.input_shape[1]), opened.normalization)


def _load_data(req: _Request, source: _Source) -> Any:
    from edgetpu_models.data import load_image_folder

    config = req.config
    return load_image_folder(req.data_dir, source.resolution, source.normalization, batch_size=config.batch_size,
                             validation_split=config.validation_split, seed=config.seed, augment=config.augment,
                             flip=config.flip)


def _data_summary(data: Any) -> str:
    return (f"data: {data.num_train} train / {data.num_val} validation images, {data.num_classes} classes"
            + (f", {data.skipped} unreadable file(s) skipped" if data.skipped else ""))


def _build_state(req: _Request, dist: Any, source: _Source, data: Any, top_k: int) -> _RunState:
    """The compiled model with its optimizer built, an epoch counter and the checkpoint of all three."""
    import tensorflow as tf

    steps = data.steps_per_epoch()
    with dist.scope():
        model = _training_model(req, source, data)
        _compile(model, req.config, steps, top_k)
        model.optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    chief = _is_chief(dist)
    manager = tf.train.CheckpointManager(ckpt, req.folder.checkpoints if chief else req.folder.worker_checkpoints,
                                         max_to_keep=3)
    return _RunState(model=model, epoch=epoch, checkpoint=ckpt, manager=manager, chief=chief)


def _training_model(req: _Request, source: _Source, data: Any) -> Any:
    """The network with a head for the data's classes, checked against the data's image size."""
    if source.base is not None:
        model = replace_head(source.base, data.num_classes)
    else:
        model = build_for_training(req.model_ref, data.num_classes, variant=req.variant,
                                   resolution=source.resolution, weights=req.weights)
    if model.input_shape[1] != data.image_size:
        raise TrainError(f"{req.weights}: the model takes {model.input_shape[1]}x{model.input_shape[2]} input, "
                         f"the data was prepared at {data.image_size}")
    if req.config.bn_momentum is not None:
        _set_bn_momentum(model, req.config.bn_momentum)
    return model


def _set_bn_momentum(model: Any, momentum: float) -> None:
    import tf_keras as keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _remove_partial_checkpoints(folder: str) -> None:
    """Removes the `ckpt-N_temp` folders a run killed while saving left (TF writes a checkpoint there, then renames
    it); the checkpoint index never names them, so nothing else would."""
    import glob
    import shutil

    for partial in glob.glob(os.path.join(glob.escape(folder), "ckpt-*_temp")):
        if os.path.isdir(partial) and not os.path.islink(partial):
            shutil.rmtree(partial, ignore_errors=True)


def _restore(req: _Request, state: _RunState, say: Callable[[str], None]) -> int:
    """The epoch to start from: the latest checkpoint's when resuming (restored into the model), else 0."""
    manager = state.manager
    if req.resume and state.chief:
        _remove_partial_checkpoints(req.folder.checkpoints)
    if req.resume and manager.latest_checkpoint:
        state.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        initial_epoch = int(state.epoch.numpy())
        say(f"resuming from {manager.latest_checkpoint} (epoch {initial_epoch}/{req.config.epochs} done, "
            f"step {int(state.model.optimizer.iterations.numpy())})")
        return initial_epoch
    if req.resume:
        say(f"{req.folder.path}: no checkpoint yet; starting from epoch 0")
    return 0


def _past_history(path: str, initial_epoch: int) -> list[dict]:
    """The history of the epochs a resumed run keeps (those up to its checkpoint)."""
    if not (initial_epoch and os.path.exists(path)):
        return []
    with open(path, encoding="utf-8") as f:
        return [h for h in json.load(f) if h["epoch"] <= initial_epoch]


def _one_hot_labels(num_classes: int) -> Callable:
    """A dataset map from (image, class index) to (image, one-hot label), as the categorical loss takes them."""
    import tensorflow as tf

    return lambda x, y: (x, tf.one_hot(y, num_classes))


@lru_cache(maxsize=None)
def _epoch_state_class():
    """The per-epoch callback class, made once (it needs tf_keras, which this module imports lazily)."""
    import tf_keras as keras

    class EpochState(keras.callbacks.Callback):
        """Re-seeds dropout at each epoch start; checkpoints and appends the history at each epoch end."""

        def __init__(self, state: _RunState, generators: list, config: TrainConfig, history: list[dict],
                     history_path: str):
            super().__init__()
            self._state, self._generators, self._config = state, generators, config
            self._history, self._history_path = history, history_path

        def on_epoch_begin(self, epoch, logs=None):
            for i, gen in enumerate(self._generators):
                gen.reset_from_seed(self._config.seed * 1_000_003 + epoch * 1009 + i)

        def on_epoch_end(self, epoch, logs=None):
            _check_loss(epoch + 1, (logs or {}).get("loss"), self._config.learning_rate)
            self._state.epoch.assign(epoch + 1)
            self._state.manager.save(checkpoint_number=epoch + 1)
            self._history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
            if self._state.chief:
                write_text_atomic(self._history_path, _json(self._history))

    return EpochState


def _callbacks(req: _Request, state: _RunState, data: Any, history: list[dict]) -> list:
    """Epoch state (seeds, checkpoint, history), TensorBoard logs, and the progress bars unless turned off."""
    import tf_keras as keras

    epoch_state = _epoch_state_class()(state, _random_generators(state.model), req.config, history,
                                       req.folder.history)
    callbacks: list = [epoch_state, keras.callbacks.TensorBoard(req.folder.logs, update_freq="epoch",
                                                                write_graph=False, profile_batch=0)]
    if req.progress:
        callbacks.append(_progress_callback(keras, data.steps_per_epoch(), req.config.epochs))
    return callbacks


def _fit(req: _Request, state: _RunState, data: Any, val: Any, initial_epoch: int, callbacks: list) -> None:
    """Trains the epochs left; a finished run resumed with EMA gets the moving averages swapped in instead."""
    config, model = req.config, state.model
    if initial_epoch < config.epochs:
        stream = data.train_epoch(initial_epoch)
        for e in range(initial_epoch + 1, config.epochs):
            stream = stream.concatenate(data.train_epoch(e))
        model.fit(stream.map(_one_hot_labels(data.num_classes)), epochs=config.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=data.steps_per_epoch(), validation_data=val, callbacks=callbacks, verbose=0)
    elif config.ema:  # the saved weights are the raw ones; the moving averages are what the run delivers
        model.optimizer.finalize_variable_values(model.trainable_variables)


def _evaluate(model: Any, val: Any) -> tuple[float, float | None]:
    """(top-1, top-k) on the validation split; NaN without one; top-k None when not applicable (k >= classes)."""
    if val is None:
        return float("nan"), float("nan")
    scores = model.evaluate(val, verbose=0, return_dict=True)
    return float(scores["top1"]), float(scores["top5"]) if "top5" in scores else None


def _save_outputs(req: _Request, model: Any, source: _Source, data: Any, scores: dict) -> None:
    """model.keras with its sidecar (normalisation, labels, input size), and metrics.json (`scores`, then the run's
    figures)."""
    meta = Sidecar(model=_model_name(req.model_ref), normalization=source.normalization,
                   labels=tuple(data.class_names), input_size=(data.image_size, data.image_size),
                   extra={"origin": "train"})
    save_model(model, req.folder.model, meta)
    write_text_atomic(req.folder.metrics, _json(
        {**scores, "epochs": req.config.epochs, "num_train": data.num_train, "num_val": data.num_val,
         "skipped": data.skipped, "classes": data.class_names}))


def _check_loss(epoch: int, loss: Any, learning_rate: float) -> None:
    """A loss that became NaN or infinite ends the run before anything is saved from it (checkpoint, model)."""
    if loss is not None and not math.isfinite(float(loss)):
        raise TrainError(f"epoch {epoch}: the training loss became {float(loss)} (the weights diverged); nothing was "
                         f"saved from this epoch; try a lower learning rate (--lr) than {learning_rate:g}")


def _json(value: Any) -> str:
    """Strict JSON text (NaN and infinity, which JSON has no words for, written as null), with a final newline."""
    return json.dumps(_finite_or_none(value), indent=1, allow_nan=False) + "\n"


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def config_from_args(args: Any, **overrides: Any) -> TrainConfig:
    """TrainConfig from an argparse namespace (fields it lacks keep their defaults)."""
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(overrides)
    return TrainConfig(**values)
