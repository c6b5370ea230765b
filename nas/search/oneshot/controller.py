"""The one-shot controller, its warm-up schedules and the cached latency of sampled children (TF-free).

One categorical distribution per decision of the space (`SearchSpace.decisions`), trained by REINFORCE with a
moving-average baseline (`controllers.ReinforceController`, the per-trial search's controller, reused). TuNAS's
schedules (google-research tunas/mobile_architecture_search.py): for the first `ops_warmup` fraction of the steps a
sample is replaced, with a probability that decays linearly from 1 to 0, by the average of all operations (block
types and kernel sizes); likewise for `filters_warmup` by the widest filters (largest width multiplier and
expansion); the controller's learning rate is 0 for the first `controller_delay` fraction (a replaced sample never
updates the controller).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from edgetpu_models.errors import OneShotError
from edgetpu_models.nas.search.controllers import ReinforceController
from edgetpu_models.nas.search.oneshot.layout import widest
from edgetpu_models.nas.search.space import Point, SearchSpace, arch_key


@dataclass(frozen=True)
class Schedule:
    """Fractions of the run's steps (TuNAS's defaults: 0.25 each)."""

    steps: int
    ops_warmup: float = 0.25
    filters_warmup: float = 0.25
    controller_delay: float = 0.25

    def __post_init__(self) -> None:
        for name in ("ops_warmup", "filters_warmup", "controller_delay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise OneShotError(f"{name}: expected a fraction in [0, 1], got {v!r}")

    @staticmethod
    def _decay(step: int, steps: float) -> float:
        return max(0.0, 1.0 - step / steps) if steps > 0 else 0.0

    def ops_probability(self, step: int) -> float:
        return self._decay(step, self.ops_warmup * self.steps)

    def filters_probability(self, step: int) -> float:
        return self._decay(step, self.filters_warmup * self.steps)

    def controller_on(self, step: int) -> bool:
        return step >= self.controller_delay * self.steps


@dataclass(frozen=True)
class Sample:
    point: Point          # the child the shared weights train on this step
    mix_ops: bool         # "all ops" warm-up: every block type / kernel of the point's kind averaged
    replaced: bool        # the controller's sample was replaced by a warm-up sample (no controller update)


class OneShotController(ReinforceController):
    """REINFORCE over the space's decisions, with TuNAS's warm-up sampling, entropy and the most likely children."""

    name = "oneshot-reinforce"

    def __init__(self, space: SearchSpace, seed: int = 0, learning_rate: float = 0.2, baseline_decay: float = 0.95):
        super().__init__(space.sizes, seed=seed, learning_rate=learning_rate, baseline_decay=baseline_decay)
        self.space = space

    def sample(self, step: int, schedule: Schedule) -> Sample:
        point = self.ask()
        mix = bool(self.rng.random() < schedule.ops_probability(step))
        wide = bool(self.rng.random() < schedule.filters_probability(step))
        if wide:
            point = widest(self.space, point)
        return Sample(point, mix, mix or wide)

    def entropy(self) -> float:
        return float(sum(-(p * np.log(p + 1e-12)).sum() for p in self.probabilities()))

    def log_prob(self, point: Sequence[int]) -> float:
        return float(sum(math.log(p[i] + 1e-300) for p, i in zip(self.probabilities(), point)))

    def most_likely(self) -> Point:
        return tuple(int(np.argmax(p)) for p in self.probabilities())

    def top_k(self, k: int, beam: int = 64) -> list[tuple[Point, float]]:
        """The k most likely distinct networks (points that decode to the same spec count once), with their
        probability: a beam search over the decisions, in their order."""
        logp = [np.log(p + 1e-300) for p in self.probabilities()]
        beams: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
        for lp in logp:
            beams = heapq.nlargest(max(beam, 4 * k), ((s + lp[i], pt + (i,)) for s, pt in beams
                                                      for i in range(len(lp))))
        out: list[tuple[Point, float]] = []
        seen: set[str] = set()
        for s, pt in beams:
            key = arch_key(self.space.decode(pt))
            if key not in seen:
                seen.add(key)
                out.append((pt, math.exp(s)))
            if len(out) == k:
                break
        return out

    def state(self) -> dict[str, Any]:
        return {"logits": [z.tolist() for z in self.logits], "m": [m.tolist() for m in self._m],
                "v": [v.tolist() for v in self._v], "t": self._t, "baseline": self.baseline,
                "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        sizes = [len(z) for z in state["logits"]]
        if sizes != list(self.sizes):
            raise OneShotError(f"controller state: decisions {sizes} do not match the space's {list(self.sizes)}")
        self.logits = [np.asarray(z, float) for z in state["logits"]]
        self._m = [np.asarray(z, float) for z in state["m"]]
        self._v = [np.asarray(z, float) for z in state["v"]]
        self._t, self.baseline = int(state["t"]), state["baseline"]
        self.rng.bit_generator.state = state["rng"]


class LatencyCache:
    """Predicted latency of a point's full-size spec on the target (the search's `LatencySource`: the latency model
    in process, any target, or a latency server), computed once per distinct network."""

    def __init__(self, space: SearchSpace, target: str, server: str | None = None):
        from edgetpu_models.nas.search.loop import LatencySource

        self.space = space
        self.source = LatencySource(target, server)
        self._cache: dict[str, float] = {}

    def __call__(self, point: Sequence[int]) -> float:
        spec = self.space.decode(point)
        key = arch_key(spec)
        if key not in self._cache:
            self._cache[key] = float(self.source(spec))
        return self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self.source.close()


def schedule_dict(schedule: Schedule) -> dict[str, Any]:
    return asdict(schedule)
