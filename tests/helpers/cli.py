"""Running the real console entry point in a fresh process, and what a one-line error looks like."""

import os
import subprocess
import sys


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
