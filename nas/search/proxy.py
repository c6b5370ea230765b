"""Accuracy proxy of the search: build a candidate with the zoo builder, train it K steps, score it on held-out images.

MnasNet trained each candidate 5 epochs on ImageNet; on a CPU we train K steps at reduced resolution and width (the
spec's own compound-scaling mechanism: a "proxy" variant with width `width` and input `resolution`) on an image
folder (default: the dataset shipped with the project), and report top-1 accuracy on its seeded validation split.
The proxy's settings are part of its name (`ProxyConfig.name`), which every output of a search shows.

For a measured latency target (`cpu-measured`: hardware in the loop, as MnasNet measured phones) the worker also
times the full-size candidate with the latency module's measured path (int8 TFLite on this machine's CPU).

TensorFlow is imported inside the functions: this module runs in the search's Ray workers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

from edgetpu_models.errors import ProxyError
from edgetpu_models.spec import MAX_RESOLUTION, MIN_RESOLUTION, BatchNorm, Spec, Variant, spec_from_dict

_DATA_CACHE: dict[tuple, Any] = {}


@dataclass(frozen=True)
class ProxyConfig:
    steps: int = 100
    resolution: int = 64
    width: float = 0.5
    batch_size: int = 32
    learning_rate: float = 0.005
    data_dir: str | None = None
    validation_split: float = 0.2
    seed: int = 0
    threads: int = 1
    """TensorFlow intra-op threads per trial (one per core a trial is given)."""

    def __post_init__(self) -> None:
        checks = [("steps", self.steps >= 1, "an integer >= 1"),
                  ("resolution", MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION,
                   f"an integer from {MIN_RESOLUTION} to {MAX_RESOLUTION}"),
                  ("width", 0 < self.width <= 4, "a number in (0, 4]"),
                  ("batch_size", self.batch_size >= 1, "an integer >= 1"),
                  ("learning_rate", self.learning_rate > 0, "a number > 0"),
                  ("validation_split", 0 < self.validation_split < 1, "a number in (0, 1)"),
                  ("threads", self.threads >= 1, "an integer >= 1")]
        for field, ok, what in checks:
            if not ok:
                raise ProxyError(f"proxy {field}: expected {what}, got {getattr(self, field)!r}")

    @property
    def name(self) -> str:
        return f"train{self.steps}-r{self.resolution}-w{self.width:g}-b{self.batch_size}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "name": self.name}


def proxy_spec(spec: Spec, cfg: ProxyConfig) -> Spec:
    """The candidate as the proxy trains it: a 'proxy' variant (width, resolution), no dropout or drop-connect, and
    batch-norm statistics that settle within K steps (momentum 0.9; at 0.99 a 100-step run evaluates with
    moving averages still near their initial values)."""
    return dataclasses.replace(spec, variants={"proxy": Variant(width=cfg.width, depth=1.0, resolution=cfg.resolution,
                                                                dropout=0.0)},
                               default_variant="proxy", drop_connect=0.0,
                               batch_norm=BatchNorm(momentum=0.9, epsilon=spec.batch_norm.epsilon))


def _configure_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # already initialised in this process: keep what it has
        pass


def _dataset(cfg: ProxyConfig, normalization: Any):
    from edgetpu_models.data import default_dataset_dir, load_image_folder

    directory = cfg.data_dir or default_dataset_dir()
    key = (os.path.abspath(directory), cfg.resolution, cfg.batch_size, cfg.validation_split, cfg.seed, normalization)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_image_folder(directory, cfg.resolution, normalization, batch_size=cfg.batch_size,
                                             validation_split=cfg.validation_split, seed=cfg.seed, augment=False)
    return _DATA_CACHE[key]


def train_proxy(spec: "Spec | Mapping[str, Any]", cfg: ProxyConfig) -> dict[str, Any]:
    """Builds `spec` at the proxy setting, trains `cfg.steps` steps, returns accuracy and loss on the held-out split."""
    if not isinstance(spec, Spec):
        spec = spec_from_dict(spec)
    _configure_threads(cfg.threads)
    import tf_keras as keras

    from edgetpu_models.builder import build_model

    t0 = time.perf_counter()
    data = _dataset(cfg, spec.normalization)
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(proxy_spec(spec, cfg), "proxy", classes=data.num_classes, weights=None)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    train = data.train_epoch(0).repeat()
    hist = model.fit(train, steps_per_epoch=cfg.steps, epochs=1, verbose=0)
    loss, acc = model.evaluate(data.val, verbose=0)
    out = {"accuracy": float(acc), "val_loss": float(loss), "train_loss": float(hist.history["loss"][-1]),
           "proxy_params": int(model.count_params()), "train_seconds": time.perf_counter() - t0}
    del model
    keras.backend.clear_session()
    return out


@dataclass(frozen=True)
class ProxyEvaluator:
    """The search's default trial evaluator (picklable, runs in a Ray worker): proxy accuracy, and latency too when
    the target is `cpu-measured`."""

    cfg: ProxyConfig
    measure_target: str | None = None
    """A measured latency target (`cpu-measured`): the worker also times the full-size int8 model on its CPU."""

    @property
    def name(self) -> str:
        return self.cfg.name

    def __call__(self, spec_dict: Mapping[str, Any], trial: int) -> dict[str, Any]:
        out = train_proxy(spec_dict, self.cfg)
        if self.measure_target:
            from edgetpu_models.nas.latency.estimator import estimate

            out["latency_ms"] = float(estimate(spec_from_dict(spec_dict), self.measure_target).latency_ms)
        return out
