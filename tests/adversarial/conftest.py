"""The adversarial suite: every input a careless user or an attacker tried, replayed with small generated inputs.

Each test runs under a hard time bound (SIGALRM), so unbounded work fails the test instead of hanging the suite.
"""

import os
import signal
import subprocess
import sys

import pytest

TIME_BOUND_S = 60


@pytest.fixture(autouse=True)
def time_bound(request):
    bound = getattr(request.node.get_closest_marker("time_bound"), "args", (TIME_BOUND_S,))[0]

    def expired(signum, frame):
        raise TimeoutError(f"{request.node.name}: still running after {bound} s (unbounded work?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(bound)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def run_cli(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh process (what a user runs), with a time bound."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgetpu_models.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 1) -> None:
    """Exit `code` (1: the job failed; 2: usage), one line on stderr naming what was wrong, no traceback."""
    err = result.stderr.strip()
    assert result.returncode == code, (result.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert len(err.splitlines()) == 1, err[-2000:]
    for needle in needles:
        assert needle in err, err
