"""edgetpu-models: accelerator-aware networks for the Edge TPU, from searched specs to a file a Coral device runs.

The repository keeps the design card's top-level folders (edgetpu_models/, searched_archs/, nas/, quantize/,
deploy/); they install as one package, `edgetpu_models`, with the others as its sub-packages
(`edgetpu_models.nas`, ...), so nothing generic like `nas` or `deploy` lands at the top of site-packages.
"""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
SUBPACKAGE_DIRS = ("searched_archs", "nas", "quantize", "deploy")
DATA_SUFFIXES = ("yaml", "proto", "json", "csv", "txt", "npz", "jpg", "png")
PACKAGE_DATA = [f"{d}*.{ext}" for d in ("", "**/") for ext in DATA_SUFFIXES]


def _packages() -> dict[str, str]:
    """{package name: folder} for edgetpu_models and every package folder below the sub-package folders."""
    found = {"edgetpu_models": "edgetpu_models"}
    for top in SUBPACKAGE_DIRS:
        for root, dirs, files in os.walk(os.path.join(HERE, top)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            if "__init__.py" in files:
                rel = os.path.relpath(root, HERE)
                found["edgetpu_models." + rel.replace(os.sep, ".")] = rel.replace(os.sep, "/")
    return found


PACKAGES = _packages()

setup(
    name="edgetpu-models",
    version="0.1.0",
    description="EfficientNet-EdgeTPU and MobilenetEdgeTPU: searched specs, Keras builders, Edge TPU latency model, "
                "NAS, quantization and deployment",
    python_requires=">=3.11,<3.12",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={name: PACKAGE_DATA for name in PACKAGES},
    # Pinned to the versions tested together (tfmot 0.8.1 needs tf_keras 2.x beside TensorFlow 2.21).
    # Coral's Python API, libedgetpu and edgetpu_compiler come from Coral's own repositories and are used when
    # present; the PyPI project that shares the Python API's name is unrelated and must never be listed here.
    install_requires=[
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
    ],
    extras_require={"test": ["pytest==9.2.0", "grpcio-tools==1.85.1", "ruff==0.17.6", "import-linter==2.16"]},
    entry_points={"console_scripts": ["edgetpu-models=edgetpu_models.cli:main"]},
)
