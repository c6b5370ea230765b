"""One one-shot search run: shared weights and controller trained in alternation, into an output folder.

Each step: the controller samples a child (replaced by a warm-up sample early on); the shared weights take one
optimizer step on a training batch for it; then, once the controller is on, `controller_samples` children (the first
is the step's own, when it was not replaced) are scored on a validation batch, rewarded with accuracy and the latency
penalty (latency from the latency model in process, cached per network) and the controller takes a REINFORCE step.

The folder: config.json (method "oneshot"), search_space.yaml (the run's own copy), steps.jsonl (one line per step:
sampled architecture, latency, accuracy, reward, controller entropy; probabilities every `log_every` steps),
checkpoints/ (shared weights, optimizer, step and controller state in one TF checkpoint), and at the end
best_spec.yaml (the most likely network), top_k.csv + top/ (the k most likely distinct networks with their
latencies), summary.json, latency.png and probabilities.png. `resume=True` continues from the last checkpoint after a
kill -9 (the log is cut back to it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from edgetpu_models.errors import OneShotError
from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.nas.search.oneshot.controller import LatencyCache, OneShotController, Schedule
from edgetpu_models.nas.search.reward import Reward
from edgetpu_models.nas.search.space import SearchSpace, arch_string, load_space

CONFIG_NAME = "config.json"
SPACE_NAME = "search_space.yaml"
LOG_NAME = "steps.jsonl"
CKPT_DIR = "checkpoints"
METHOD = "oneshot"


@dataclass
class OneShotConfig:
    """Everything a one-shot search depends on (stored in config.json; a resumed run keeps it)."""

    latency_target_ms: float
    target: str = "coral-usb"
    reward: str = "tunas"
    alpha: float | None = None
    beta: float | None = -0.5
    space: str | None = None
    data_dir: str | None = None
    steps: int = 400
    batch_size: int = 64
    resolution: int = 32
    width: float = 0.5
    learning_rate: float = 3e-3
    controller_learning_rate: float = 0.2
    baseline_decay: float = 0.95
    controller_samples: int = 4
    ops_warmup: float = 0.25
    filters_warmup: float = 0.25
    controller_delay: float = 0.25
    validation_split: float = 0.2
    seed: int = 0
    strategy: str = "default"
    checkpoint_every: int = 50
    log_every: int = 10
    top_k: int = 5
    latency_server: str | None = None
    method: str = METHOD
    target_sha256: str | None = field(default=None)

    RUNTIME_FIELDS = ("strategy", "latency_server")

    def validate(self) -> None:
        for name in ("steps", "batch_size", "controller_samples", "checkpoint_every", "log_every", "top_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise OneShotError(f"{name}: expected an integer >= 1, got {v!r}")
        if not (isinstance(self.width, (int, float)) and 0 < self.width <= 4):
            raise OneShotError(f"width: expected a number in (0, 4], got {self.width!r}")
        if not (isinstance(self.resolution, int) and 32 <= self.resolution <= 1024):
            raise OneShotError(f"resolution: expected an integer from 32 to 1024, got {self.resolution!r}")
        self.schedule()
        self.make_reward()

    def schedule(self) -> Schedule:
        return Schedule(self.steps, self.ops_warmup, self.filters_warmup, self.controller_delay)

    def make_reward(self) -> Reward:
        return Reward.make(self.reward, self.latency_target_ms, self.alpha, self.beta)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = CONFIG_NAME) -> "OneShotConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown or data.get("method") != METHOD:
            raise OneShotError(f"{where}: not a one-shot search config (unknown fields {unknown[:3]}, method "
                               f"{data.get('method')!r})")
        return cls(**dict(data))


@dataclass
class OneShotResult:
    out_dir: str
    best_point: tuple[int, ...]
    best_latency_ms: float
    steps_done: int
    top: list[dict[str, Any]]


def is_oneshot_dir(out_dir: str) -> bool:
    try:
        with open(os.path.join(out_dir, CONFIG_NAME), encoding="utf-8") as f:
            return json.load(f).get("method") == METHOD
    except (OSError, ValueError, AttributeError):
        return False


def load_oneshot(out_dir: str) -> tuple[OneShotConfig, list[dict[str, Any]]]:
    """Config and logged steps of a one-shot folder (finished or not)."""
    path = os.path.join(out_dir, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = OneShotConfig.from_dict(json.load(f), path)
    except (OSError, ValueError) as e:
        raise OneShotError(f"{path}: unreadable one-shot config ({e})") from None
    return cfg, read_steps(os.path.join(out_dir, LOG_NAME))


def read_summary(out_dir: str) -> dict[str, Any] | None:
    from edgetpu_models.nas.search.results import SUMMARY

    try:
        with open(os.path.join(out_dir, SUMMARY), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_steps(path: str) -> list[dict[str, Any]]:
    """The logged steps; a torn last line (killed while writing) is dropped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                break
    return out


def _prepare_dir(cfg: OneShotConfig, out_dir: str, resume: bool) -> tuple[OneShotConfig, SearchSpace]:
    from edgetpu_models.nas.search.loop import target_file_digest

    cfg_path = os.path.join(out_dir, CONFIG_NAME)
    if resume:
        stored, _ = load_oneshot(out_dir) if os.path.exists(cfg_path) else (None, None)
        if stored is None:
            raise OneShotError(f"{out_dir}: nothing to resume (no {CONFIG_NAME}; start a search with --out)")
        for name in OneShotConfig.RUNTIME_FIELDS:
            setattr(stored, name, getattr(cfg, name))
        if stored.target_sha256 is not None and target_file_digest(stored.target) != stored.target_sha256:
            raise OneShotError(f"{out_dir}: the latency target {stored.target!r} changed since this search started; "
                               f"start a new search")
        return stored, load_space(os.path.join(out_dir, SPACE_NAME))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise OneShotError(f"{out_dir}: not empty (use --resume to continue a search there, or another --out)")
    cfg.validate()
    cfg.target_sha256 = target_file_digest(cfg.target)
    space = load_space(cfg.space)
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(space.source, os.path.join(out_dir, SPACE_NAME))
    write_text_atomic(cfg_path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return cfg, load_space(os.path.join(out_dir, SPACE_NAME))


def _load_data(cfg: OneShotConfig, space: SearchSpace):
    from edgetpu_models.data import default_dataset_dir, load_image_folder

    return load_image_folder(cfg.data_dir or default_dataset_dir(), cfg.resolution, space.template().normalization,
                             batch_size=cfg.batch_size, validation_split=cfg.validation_split, seed=cfg.seed,
                             augment=False)


def mixed_validation(data: Any, seed: int = 0) -> Any:
    """The validation split in shuffled batches: batch norm normalises with batch statistics while searching, so a
    batch must mix the classes (the plain validation stream is in class order)."""
    return data.val.unbatch().shuffle(4096, seed=seed, reshuffle_each_iteration=True).batch(data.batch_size)


class _Batches:
    """Endless training and validation batches (distributed), positioned at a step so a resumed run continues."""

    def __init__(self, trainer: Any, data: Any, start_step: int):
        self.trainer, self.data = trainer, data
        spe = data.steps_per_epoch()
        self.epoch, skip = divmod(start_step, spe)
        self._train = iter(trainer.distribute(data.train_epoch(self.epoch).skip(skip)))
        self._val = iter(trainer.distribute(mixed_validation(data, start_step).repeat()))

    def train(self) -> Any:
        try:
            return next(self._train)
        except StopIteration:
            self.epoch += 1
            self._train = iter(self.trainer.distribute(self.data.train_epoch(self.epoch)))
            return next(self._train)

    def val(self) -> Any:
        return next(self._val)


class OneShotRun:
    def __init__(self, cfg: OneShotConfig, out_dir: str, *, resume: bool = False, progress: bool = False):
        from edgetpu_models.nas.search.oneshot.layout import make_layout
        from edgetpu_models.nas.search.oneshot.trainer import Trainer, make_search_strategy

        self.out_dir = out_dir
        self.cfg, self.space = _prepare_dir(cfg, out_dir, resume)
        self.progress = progress
        self.schedule, self.reward = self.cfg.schedule(), self.cfg.make_reward()
        self.data = _load_data(self.cfg, self.space)
        layout = make_layout(self.space, self.cfg.width, self.cfg.resolution)
        self.trainer = Trainer(self.space, layout, self.data.num_classes,
                               strategy=make_search_strategy(self.cfg.strategy), learning_rate=self.cfg.learning_rate,
                               total_steps=self.cfg.steps, seed=self.cfg.seed)
        self.controller = OneShotController(self.space, self.cfg.seed, self.cfg.controller_learning_rate,
                                            self.cfg.baseline_decay)
        self.latency = LatencyCache(self.space, self.cfg.target, self.cfg.latency_server)
        self.start_step = self._restore()

    def _restore(self) -> int:
        step, state = self.trainer.restore(os.path.join(self.out_dir, CKPT_DIR))
        if state is not None:
            self.controller.load_state(state)
        kept = [s for s in read_steps(os.path.join(self.out_dir, LOG_NAME)) if s["step"] < step]
        write_text_atomic(os.path.join(self.out_dir, LOG_NAME), "".join(json.dumps(s) + "\n" for s in kept))
        return step

    def run(self, max_steps: int | None = None) -> OneShotResult | None:
        """Runs to `cfg.steps` (or `max_steps` more steps, leaving a resumable folder: returns None then)."""
        from tqdm.auto import tqdm

        end = self.cfg.steps if max_steps is None else min(self.cfg.steps, self.start_step + max_steps)
        batches = _Batches(self.trainer, self.data, self.start_step)
        with open(os.path.join(self.out_dir, LOG_NAME), "a", encoding="utf-8") as log, \
                tqdm(total=self.cfg.steps, initial=self.start_step, desc="oneshot", unit="step",
                     disable=not self.progress, dynamic_ncols=True) as bar:
            for step in range(self.start_step, end):
                record = self._step(step, batches)
                log.write(json.dumps(record) + "\n")
                log.flush()
                if (step + 1) % self.cfg.checkpoint_every == 0 or step + 1 == end:
                    os.fsync(log.fileno())
                    self.trainer.save(os.path.join(self.out_dir, CKPT_DIR), step + 1, self.controller.state())
                bar.update(1)
                bar.set_postfix(lat=f"{record.get('latency_ms', 0):.2f}", H=f"{record['entropy']:.1f}")
        try:
            return self._finish() if end >= self.cfg.steps else None
        finally:
            self.latency.close()

    def _finish(self) -> OneShotResult:
        from edgetpu_models.nas.search.oneshot.outputs import write_results

        best = self.controller.most_likely()
        accuracy = self.trainer.accuracy(self.trainer.distribute(mixed_validation(self.data)), best)
        steps = read_steps(os.path.join(self.out_dir, LOG_NAME))
        summary = write_results(self.out_dir, self.cfg, self.space, self.controller, self.latency, accuracy, steps)
        return OneShotResult(self.out_dir, best, summary["best"]["latency_ms"], len(steps), summary["top_k"])

    def _step(self, step: int, batches: _Batches) -> dict[str, Any]:
        t0 = time.perf_counter()
        sample = self.controller.sample(step, self.schedule)
        loss = self.trainer.train_step(batches.train(), sample.point, sample.mix_ops)
        rec: dict[str, Any] = {"step": step, "loss": loss, "mix_ops": sample.mix_ops, "replaced": sample.replaced,
                               "arch": arch_string(self.space.decode(sample.point)), "point": list(sample.point),
                               "latency_ms": self.latency(sample.point)}
        if self.schedule.controller_on(step):
            rec.update(self._controller_step(sample, batches.val()))
        rec["entropy"] = self.controller.entropy()
        if step % self.cfg.log_every == 0 or step + 1 == self.cfg.steps:
            rec["probabilities"] = [p.round(4).tolist() for p in self.controller.probabilities()]
            rec["likely_latency_ms"] = self.latency(self.controller.most_likely())
        rec["seconds"] = time.perf_counter() - t0
        return rec

    def _controller_step(self, sample: Any, val_batch: Any) -> dict[str, Any]:
        points = [] if sample.replaced else [sample.point]
        while len(points) < self.cfg.controller_samples:
            points.append(self.controller.ask())
        scored = []
        for pt in points:
            acc = self.trainer.accuracy([val_batch], pt)
            lat = self.latency(pt)
            reward = self.reward(acc, lat)
            self.controller.tell(pt, reward)
            scored.append((acc, lat, reward))
        return {"accuracy": scored[0][0], "reward": scored[0][2], "controller_latency_ms": [s[1] for s in scored],
                "baseline": self.controller.baseline}


def run_oneshot(cfg: OneShotConfig, out_dir: str, *, resume: bool = False, progress: bool = False,
                max_steps: int | None = None) -> OneShotResult | None:
    """Runs (or resumes) a one-shot search into `out_dir`; None when `max_steps` stopped it before the end."""
    return OneShotRun(cfg, out_dir, resume=resume, progress=progress).run(max_steps)
