"""Helpers for the NAS tests: cheap, deterministic, TF-free trial evaluators (importable by Ray workers with the
checkout on PYTHONPATH) and a hidden-target objective for comparing controllers."""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Mapping

from edgetpu_models.profiler import profile
from edgetpu_models.spec import spec_from_dict

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The checkout: on a Ray worker's PYTHONPATH, `tests.helpers.nas` imports there too."""


@dataclass(frozen=True)
class CapacityEvaluator:
    """accuracy = a saturating function of the candidate's parameter count (deterministic, no training).

    `delay_s` makes each trial take a while (so a kill lands mid-search); with `die_once_dir` the worker process
    SIGKILLs itself the first time it runs trial `die_trial` (a marker file remembers it), to exercise Ray's retry.
    """

    delay_s: float = 0.0
    die_once_dir: str | None = None
    die_trial: int = 1
    delays: tuple[float, ...] = ()
    """Extra per-trial sleep, cycled by trial number: changes which worker finishes first."""
    calls_file: str | None = None
    """Each call appends its trial number here: shows which trials ran (and how often)."""
    name: str = "capacity-test-proxy"

    def __call__(self, spec_dict: Mapping[str, Any], trial: int) -> dict[str, Any]:
        if self.calls_file is not None:
            with open(self.calls_file, "a") as f:
                f.write(f"{trial}\n")
        if self.die_once_dir is not None and trial == self.die_trial:
            marker = os.path.join(self.die_once_dir, f"died_{trial}")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        if self.delay_s or self.delays:
            time.sleep(self.delay_s + (self.delays[trial % len(self.delays)] if self.delays else 0.0))
        params = profile(spec_from_dict(spec_dict), include_top=False).params
        return {"accuracy": 1.0 - math.exp(-params / 3e6)}


def hidden_target_objective(point, hidden) -> float:
    """Fraction of decisions equal to a hidden point: cheap, deterministic, with structure a learner can exploit."""
    return sum(int(a == b) for a, b in zip(point, hidden)) / len(hidden)
