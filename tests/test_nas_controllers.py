"""Rewards (MnasNet soft/hard, TuNAS absolute) and controllers (seeded; REINFORCE and evolution beat random)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetpu_models.nas.search.controllers import ControllerError, make_controller
from edgetpu_models.nas.search.reward import Reward, RewardError, mnas_reward, tunas_reward
from edgetpu_models.nas.search.space import load_space
from tests.helpers.nas import hidden_target_objective


def test_mnas_soft_reward():
    r = Reward.make("mnas-soft", 10.0)
    assert r(0.8, 10.0) == pytest.approx(0.8)
    assert r(0.8, 5.0) == pytest.approx(0.8 * 0.5 ** -0.07)   # faster than the target: a small bonus
    assert r(0.8, 20.0) == pytest.approx(0.8 * 2.0 ** -0.07)  # slower: the same exponent
    assert mnas_reward(0.8, 20.0, 10.0) == r(0.8, 20.0)


def test_mnas_hard_reward():
    r = Reward.make("mnas-hard", 10.0)
    assert r(0.8, 5.0) == pytest.approx(0.8)                  # alpha = 0: no bonus under the target
    assert r(0.8, 20.0) == pytest.approx(0.8 * 0.5)           # beta = -1: ACC * T / LAT above it
    assert (r.alpha, r.beta) == (0.0, -1.0)


def test_tunas_absolute_reward_and_user_exponents():
    r = Reward.make("tunas", 10.0, beta=-0.5)
    assert r(0.8, 12.0) == pytest.approx(0.8 - 0.5 * 0.2)
    assert r(0.8, 8.0) == pytest.approx(0.8 - 0.5 * 0.2)      # penalised on both sides of the target
    assert tunas_reward(0.8, 10.0, 10.0) == pytest.approx(0.8)
    custom = Reward.make("mnas-soft", 10.0, alpha=-0.2)
    assert custom.kind == "mnas" and custom(1.0, 5.0) == pytest.approx(0.5 ** -0.2)
    for bad in (lambda: Reward.make("mnas-soft", 0.0), lambda: Reward.make("nope", 5.0),
                lambda: Reward.make("mnas-soft", 5.0, beta=0.5)):
        with pytest.raises(RewardError):
            bad()


@pytest.mark.parametrize("name", ["reinforce", "evolution", "random"])
def test_controllers_are_seeded_and_reproducible(name):
    sizes = load_space().sizes

    def run(seed):
        c = make_controller(name, sizes, seed=seed)
        pts = []
        for i in range(60):
            p = c.ask()
            pts.append(p)
            c.tell(p, float(sum(p)) / len(p) if i % 7 else None)  # None: a failed trial
        return pts

    assert run(3) == run(3)
    assert run(3) != run(4)
    with pytest.raises(ControllerError):
        make_controller("bayes", sizes)


def test_reinforce_and_evolution_beat_random_search_at_equal_budget():
    """Mean over seeds of the best objective found in 150 trials, on a cheap deterministic objective (the fraction of
    the default space's 73 decisions that match a hidden point)."""
    sizes = load_space().sizes
    budget, seeds = 150, range(5)
    best: dict[str, list[float]] = {"random": [], "reinforce": [], "evolution": []}
    for seed in seeds:
        hidden = tuple(int(x) for x in (np.random.default_rng(1000 + seed).integers(s) for s in sizes))
        for name in best:
            c = make_controller(name, sizes, seed=seed)
            top = 0.0
            for _ in range(budget):
                p = c.ask()
                r = hidden_target_objective(p, hidden)
                c.tell(p, r)
                top = max(top, r)
            best[name].append(top)
    mean = {k: float(np.mean(v)) for k, v in best.items()}
    assert mean["reinforce"] > mean["random"] + 0.05, mean
    assert mean["evolution"] > mean["random"] + 0.05, mean
