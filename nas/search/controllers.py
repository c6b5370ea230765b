"""Search controllers: propose points of a search space (`ask`) and learn from their rewards (`tell`).

All three are seeded and deterministic: the same seed and the same sequence of ask/tell calls give the same points.
The search driver relies on that to resume: it replays the logged asks and tells and checks each replayed proposal
against the log. Asks and tells may interleave (several trials in flight on parallel workers).

- `ReinforceController`: the MnasNet / TuNAS reinforcement-learning controller reduced to its core, REINFORCE over
  independent categorical decisions (one softmax per decision) with an exponential-moving-average reward baseline,
  updated with Adam.
- `EvolutionController`: regularized (aging) evolution (Real et al., 2019): tournament selection from the newest
  `population` results, one-decision mutation, the oldest member dies.
- `RandomController`: uniform random search, the baseline every search method must beat.

TF-free (numpy only).
"""

from __future__ import annotations

import abc
import collections
from typing import Any, Sequence

import numpy as np

from edgetpu_models.errors import ControllerError

CONTROLLERS = ("reinforce", "evolution", "random")
Point = tuple[int, ...]


class Controller(abc.ABC):
    """Base class: `ask()` -> point (tuple of choice indices), `tell(point, reward)`; reward None = failed trial."""

    name = "base"

    def __init__(self, sizes: Sequence[int], seed: int = 0):
        if not sizes or any(int(s) < 1 for s in sizes):
            raise ControllerError(f"sizes: expected a non-empty list of choice counts >= 1, got {list(sizes)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    @abc.abstractmethod
    def ask(self) -> Point:
        """The next point to evaluate."""

    @abc.abstractmethod
    def tell(self, point: Sequence[int], reward: float | None) -> None:
        """Feeds back the reward of an evaluated point (None: the trial failed)."""

    def _random_point(self) -> Point:
        return tuple(int(self.rng.integers(s)) for s in self.sizes)

    def config(self) -> dict[str, Any]:
        return {"controller": self.name, "seed": self.seed}


class RandomController(Controller):
    name = "random"

    def ask(self) -> Point:
        return self._random_point()

    def tell(self, point: Sequence[int], reward: float | None) -> None:
        pass


class ReinforceController(Controller):
    """REINFORCE with a moving-average baseline over independent categorical decisions.

    Gradient of log p(point) w.r.t. a decision's logits is onehot(choice) - softmax(logits); the update scales it by
    the advantage (reward - baseline). Adam keeps the step size independent of the reward's scale.
    """

    name = "reinforce"

    def __init__(self, sizes: Sequence[int], seed: int = 0, learning_rate: float = 0.1,
                 baseline_decay: float = 0.9, entropy_weight: float = 0.0):
        super().__init__(sizes, seed)
        if not 0 < learning_rate:
            raise ControllerError(f"learning_rate: expected > 0, got {learning_rate}")
        if not 0 <= baseline_decay < 1:
            raise ControllerError(f"baseline_decay: expected a number in [0, 1), got {baseline_decay}")
        self.learning_rate = float(learning_rate)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.logits = [np.zeros(s) for s in self.sizes]
        self._m = [np.zeros(s) for s in self.sizes]
        self._v = [np.zeros(s) for s in self.sizes]
        self._t = 0
        self.baseline: float | None = None

    @staticmethod
    def _softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max())
        return e / e.sum()

    def probabilities(self) -> list[np.ndarray]:
        return [self._softmax(z) for z in self.logits]

    def ask(self) -> Point:
        return tuple(int(self.rng.choice(len(p), p=p)) for p in self.probabilities())

    def tell(self, point: Sequence[int], reward: float | None) -> None:
        if reward is None:
            return
        reward = float(reward)
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self._t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for d, (z, choice) in enumerate(zip(self.logits, point)):
            p = self._softmax(z)
            grad = -p
            grad[int(choice)] += 1.0
            grad *= advantage  # ascent direction on E[reward]
            if self.entropy_weight:
                logp = np.log(p + 1e-12)
                grad += self.entropy_weight * (-p * (logp - (p * logp).sum()))
            self._m[d] = b1 * self._m[d] + (1 - b1) * grad
            self._v[d] = b2 * self._v[d] + (1 - b2) * grad * grad
            m_hat = self._m[d] / (1 - b1 ** self._t)
            v_hat = self._v[d] / (1 - b2 ** self._t)
            self.logits[d] = z + self.learning_rate * m_hat / (np.sqrt(v_hat) + eps)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "learning_rate": self.learning_rate, "baseline_decay": self.baseline_decay,
                "entropy_weight": self.entropy_weight}


class EvolutionController(Controller):
    """Regularized evolution: random points until `population` results exist, then tournament + mutation."""

    name = "evolution"

    def __init__(self, sizes: Sequence[int], seed: int = 0, population: int = 20, sample: int = 5):
        super().__init__(sizes, seed)
        if population < 2 or not 1 <= sample <= population:
            raise ControllerError(f"evolution: expected population >= 2 and 1 <= sample <= population, "
                                  f"got population={population}, sample={sample}")
        self.population_size = int(population)
        self.sample_size = int(sample)
        self.population: collections.deque[tuple[Point, float]] = collections.deque(maxlen=self.population_size)
        self._mutable = [d for d, s in enumerate(self.sizes) if s > 1]

    def ask(self) -> Point:
        if len(self.population) < self.population_size or not self._mutable:
            return self._random_point()
        idx = self.rng.choice(len(self.population), size=self.sample_size, replace=False)
        parent = max((self.population[int(i)] for i in idx), key=lambda pr: pr[1])[0]
        child = list(parent)
        d = self._mutable[int(self.rng.integers(len(self._mutable)))]
        new = int(self.rng.integers(self.sizes[d] - 1))
        child[d] = new if new < child[d] else new + 1  # any value but the parent's
        return tuple(child)

    def tell(self, point: Sequence[int], reward: float | None) -> None:
        if reward is None:
            return
        self.population.append((tuple(int(i) for i in point), float(reward)))  # the oldest member dies

    def config(self) -> dict[str, Any]:
        return {**super().config(), "population": self.population_size, "sample": self.sample_size}


def make_controller(name: str, sizes: Sequence[int], seed: int = 0, **options: Any) -> Controller:
    """`reinforce`, `evolution` or `random`; options are the controller's keyword settings."""
    classes = {"reinforce": ReinforceController, "evolution": EvolutionController, "random": RandomController}
    if name not in classes:
        raise ControllerError(f"controller: expected one of {', '.join(CONTROLLERS)}, got {name!r}")
    try:
        return classes[name](sizes, seed, **options)
    except TypeError as e:
        raise ControllerError(f"controller {name}: bad option ({e})") from None
