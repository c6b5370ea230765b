"""edgetpu-models: accelerator-aware networks for the Edge TPU, from searched specs to a file a Coral device runs.

The repository keeps the design card's top-level folders (edgetpu_models/, searched_archs/, nas/, quantize/,
deploy/); they install as one package, `edgetpu_models`, with the others as its sub-packages
(`edgetpu_models.nas`, ...), so nothing generic like `nas` or `deploy` lands at the top of site-packages.
"""

from __future__ import annotations  # so an older Python (a Dev Board's 3.7) reads this file and pip names the version

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
SUBPACKAGE_DIRS = ("searched_archs", "nas", "quantize", "deploy")
DATA_SUFFIXES = ("yaml", "proto", "json", "csv", "txt", "npz", "jpg", "png")
PACKAGE_DATA = [f"{d}*.{ext}" for d in ("", "**/") for ext in DATA_SUFFIXES]


def _packages() -> dict[str, str]:
    """{package name: folder} for edgetpu_models and every package folder below the sub-package folders."""
    found = {}
    for top in ("edgetpu_models", *SUBPACKAGE_DIRS):  # edgetpu_models' own sub-packages (cli, ...) included
        for root, dirs, files in os.walk(os.path.join(HERE, top)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            if "__init__.py" in files:
                rel = os.path.relpath(root, HERE)
                name = rel.replace(os.sep, ".")
                found[name if top == "edgetpu_models" else "edgetpu_models." + name] = rel.replace(os.sep, "/")
    return found


PACKAGES = _packages()

# The base install is what inference on a device needs (classify, benchmark, evaluate of a .tflite, check, the
# sidecar, labels, segment pipelines): ranges, not pins, so pip can pick wheels that exist for a board's Python and
# CPU (tflite-runtime 2.14 needs numpy < 2; a Raspberry Pi OS or Debian ships its own numpy). Python 3.9 is the
# floor: it is the newest Python Coral's own pycoral wheels are built for (google-coral/pycoral#85, #146).
BASE = [
    "numpy>=1.21",
    "pillow>=9.1",
    "PyYAML>=5.4",
    "tqdm>=4.60",
]
# A TFLite runtime comes from one of three places, so it is not in BASE: Coral's pycoral + libedgetpu (Coral's apt
# or wheel index; the PyPI project that shares the Python API's name is unrelated and must never be listed here),
# `tflite-runtime` (PyPI wheels up to 2.14, Python 3.9-3.11), or LiteRT (`ai-edge-litert`, no 32-bit ARM wheels).
LITERT = ["ai-edge-litert>=1.2"]
# The workstation: train, QAT, export, compile, NAS, the latency server. Pinned to the versions tested together
# (tfmot 0.8.1 needs tf_keras 2.x beside TensorFlow 2.21); numpy 2.4 and TensorFlow 2.21 need Python 3.11, so
# this extra installs on 3.11 only (pip says "no matching distribution" elsewhere).
WORKSTATION = [
    "numpy==2.4.6",
    "PyYAML==6.0.4",
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorflow-model-optimization==0.8.1",
    "tensorboard==2.21.0",
    "ai-edge-litert==2.3.0",
    "flatbuffers==25.12.19",
    "safetensors==0.8.0",
    "pillow==13.0.0",
    "scipy==1.17.1",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
    "grpcio==1.85.3",
    "grpcio-health-checking==1.85.1",
    "grpcio-reflection==1.85.1",
    "protobuf==7.36.2",
    "ray[default]==2.60.0",
]

setup(
    name="edgetpu-models",
    version="0.1.0",
    description="EfficientNet-EdgeTPU and MobilenetEdgeTPU: searched specs, Keras builders, Edge TPU latency model, "
                "NAS, quantization and deployment",
    python_requires=">=3.9",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={name: PACKAGE_DATA for name in PACKAGES},
    install_requires=BASE,
    extras_require={
        "litert": LITERT,
        "full": WORKSTATION,
        "test": ["pytest==9.2.0", "grpcio-tools==1.85.1", "ruff==0.17.6", "vermin==1.9.2",
                 "import-linter==2.16"],
    },
    entry_points={"console_scripts": ["edgetpu-models=edgetpu_models.cli:main"]},
)
