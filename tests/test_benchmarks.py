"""Every script in benchmarks/ runs clean at its smallest setting (a smoke run: no figure is checked, only that the
script still works: `latency_server.py` once broke unnoticed when a model joined the zoo). Slow: each builds, converts,
trains or serves something; `make test` runs them, the fast subset (`pytest -m "not slow"`) does not."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(f for f in os.listdir(os.path.join(REPO, "benchmarks")) if f.endswith(".py"))


def _smallest(script: str, tmp: str) -> list[str] | None:
    """The arguments of each script's smallest run."""
    return {
        "evaluate.py": ["--resolution", "64", "--images", "4", "--repeats", "1", "--batch", "2", "--workers", "1"],
        "export.py": ["--models", "mobilenet_edgetpu_v2_tiny", "--runs", "1", "--out-dir", tmp],
        "latency.py": ["--held-out", "0"],
        "latency_server.py": ["--smoke"],
        "nas.py": ["--trials", "2", "--workers", "1", "--steps", "1", "--resolution", "32", "--out",
                   os.path.join(tmp, "search")],
        "oneshot.py": None,  # tests/test_oneshot.py runs its --smoke and checks what it prints
        "partition.py": ["--smoke"],
        "quant_fidelity.py": ["--resolution", "32", "--epochs", "1", "--qat-steps", "1", "--calibration-images", "100",
                              "--work-dir", tmp, "--smoke"],
        "segmentation.py": [],
        "server_soak.py": ["--seconds", "2", "--threads", "2", "--grace", "1"],
    }[script]


def test_every_script_has_a_smoke_run(tmp_path):
    for script in SCRIPTS:
        _smallest(script, str(tmp_path))  # KeyError: a new script without a smoke run


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke_run(script, tmp_path):
    smallest = _smallest(script, str(tmp_path))
    if smallest is None:
        pytest.skip(f"{script}: its smoke run is a test of its own")
    argv = [sys.executable, os.path.join(REPO, "benchmarks", script), *smallest]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(argv, capture_output=True, text=True, cwd=str(tmp_path), env=env,
                            timeout=1800)  # a hang guard, not a speed claim
    assert result.returncode == 0, (script, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
