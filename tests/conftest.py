"""Shared test settings: quiet TensorFlow, deterministic seeds, and the path to the read-only shared test data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("EDGETPU_MODELS_SHARED", os.path.join(os.path.dirname(REPO), "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> str:
    """../shared beside the repository (CI lays a copy there). A plain clone has none: the few tests that need timm's
    EfficientNet-ES weights (22 MB, too large to commit) skip, saying so; the committed MobilenetEdgeTPU-V2-XS vector in
    tests/data covers the same timm cross-check."""
    if not os.path.isfile(os.path.join(SHARED, "testdata", "tf_efficientnet_es.safetensors")):
        pytest.skip(f"{SHARED}/testdata/tf_efficientnet_es.safetensors not found (timm weights, not in the repository; "
                    f"set EDGETPU_MODELS_SHARED to a folder that holds testdata/)")
    return SHARED

# A user's own calibrated targets (~/.config/edgetpu_models/targets) must not change what the tests see.
os.environ["EDGETPU_MODELS_CONFIG"] = os.path.join(
    os.environ.get("PYTEST_TMPDIR", "/tmp"), f"edgetpu_models_test_config_{os.getpid()}")


def _declare_this_cpu_probed() -> None:
    """The shipped `cpu` predictor refuses a CPU it was not fitted on or probed on (nas/latency/cpu/host.py). Tests
    check the predictor's behaviour, not this machine's speed: they run it as fitted (a probe of factor 1)."""
    import json

    from edgetpu_models.nas.latency.cpu.host import cpu_fingerprint, probe_path

    os.makedirs(os.path.dirname(probe_path()), exist_ok=True)
    with open(probe_path(), "w", encoding="utf-8") as f:
        json.dump({cpu_fingerprint(): {"scale": 1.0, "source": "tests: the predictor as fitted"}}, f)


_declare_this_cpu_probed()
