"""Multi-objective rewards of accelerator-aware NAS: accuracy traded against latency on the target device.

MnasNet (Tan et al., 2019): ACC * (LAT / T) ** w, with w = alpha when LAT <= T and w = beta otherwise.
  soft constraint: alpha = beta = -0.07 (a 2x faster model may lose ~5% relative accuracy for the same reward);
  hard constraint: alpha = 0, beta = -1 (no bonus under the target, a steep penalty above it).
TuNAS (Bender et al., 2020) "absolute" reward: ACC + beta * |LAT / T - 1|, beta < 0, which pulls the search to the
  target from both sides and does not reward ever-faster models.
TF-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgetpu_models.errors import RewardError

REWARD_KINDS = ("mnas-soft", "mnas-hard", "mnas", "tunas")
MNAS_SOFT = (-0.07, -0.07)
MNAS_HARD = (0.0, -1.0)
TUNAS_BETA = -0.07


def mnas_reward(accuracy: float, latency_ms: float, target_ms: float, alpha: float = MNAS_SOFT[0],
                beta: float = MNAS_SOFT[1]) -> float:
    """MnasNet's ACC * (LAT/T)^w, w = alpha if LAT <= T else beta."""
    _check(latency_ms, target_ms)
    w = alpha if latency_ms <= target_ms else beta
    return float(accuracy) * (latency_ms / target_ms) ** w


def tunas_reward(accuracy: float, latency_ms: float, target_ms: float, beta: float = TUNAS_BETA) -> float:
    """TuNAS's absolute reward ACC + beta * |LAT/T - 1|."""
    _check(latency_ms, target_ms)
    return float(accuracy) + beta * abs(latency_ms / target_ms - 1.0)


def _check(latency_ms: float, target_ms: float) -> None:
    if not (isinstance(target_ms, (int, float)) and math.isfinite(target_ms) and target_ms > 0):
        raise RewardError(f"latency target: expected a number of milliseconds > 0, got {target_ms!r}")
    if not (math.isfinite(latency_ms) and latency_ms > 0):
        raise RewardError(f"latency: expected a number of milliseconds > 0, got {latency_ms!r}")


@dataclass(frozen=True)
class Reward:
    """A reward function with its parameters fixed; `Reward.make` fills in each kind's published defaults."""

    kind: str
    target_ms: float
    alpha: float | None = None
    beta: float | None = None

    @classmethod
    def make(cls, kind: str, target_ms: float, alpha: float | None = None, beta: float | None = None) -> "Reward":
        if kind not in REWARD_KINDS:
            raise RewardError(f"reward: expected one of {', '.join(REWARD_KINDS)}, got {kind!r}")
        _check(1.0, target_ms)
        if kind == "tunas":
            if alpha is not None:
                raise RewardError("reward: tunas has no alpha (only beta, the weight of |LAT/T - 1|)")
            beta = TUNAS_BETA if beta is None else beta
        else:
            default = {"mnas-soft": MNAS_SOFT, "mnas-hard": MNAS_HARD, "mnas": MNAS_SOFT}[kind]
            alpha = default[0] if alpha is None else alpha
            beta = default[1] if beta is None else beta
        for name, v in (("alpha", alpha), ("beta", beta)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v <= 0):
                raise RewardError(f"reward {name}: expected a number <= 0, got {v!r}")
        presets = {"mnas-soft": MNAS_SOFT, "mnas-hard": MNAS_HARD}
        if kind in presets and (alpha, beta) != presets[kind]:
            kind = "mnas"  # user-chosen exponents: no longer the named preset
        return cls(kind, float(target_ms), None if alpha is None else float(alpha), float(beta))

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        if self.kind == "tunas":
            return tunas_reward(accuracy, latency_ms, self.target_ms, self.beta)  # type: ignore[arg-type]
        return mnas_reward(accuracy, latency_ms, self.target_ms, self.alpha, self.beta)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.kind == "tunas":
            return f"tunas: ACC + {self.beta:g} * |LAT/{self.target_ms:g}ms - 1|"
        return f"{self.kind}: ACC * (LAT/{self.target_ms:g}ms)^w, w = {self.alpha:g} if LAT <= T else {self.beta:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
