"""Shared test settings: quiet TensorFlow, deterministic seeds, and the path to the read-only shared test data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("EDGETPU_MODELS_SHARED", os.path.join(os.path.dirname(REPO), "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> str:
    """../shared beside the repository (CI lays a copy there)."""
    if not os.path.isdir(SHARED):
        pytest.fail(f"shared test data not found at {SHARED} (set EDGETPU_MODELS_SHARED)")
    return SHARED

# A user's own calibrated targets (~/.config/edgetpu_models/targets) must not change what the tests see.
os.environ["EDGETPU_MODELS_CONFIG"] = os.path.join(
    os.environ.get("PYTEST_TMPDIR", "/tmp"), f"edgetpu_models_test_config_{os.getpid()}")
