"""Runs one `edgetpu-models` command with the workstation packages made unimportable, then prints (as the last
line) the JSON list of this package's modules it imported. Used by tests/test_runtime.py:

    python tests/runtime_probe.py classify model.tflite image.png

A command that reaches for TensorFlow (or Ray, grpcio, matplotlib, scipy, ...) fails here with ImportError, as it
would on a board with only the base install.
"""

from __future__ import annotations

import importlib.abc
import json
import sys

WORKSTATION_ONLY = {"tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tensorboard", "ray", "grpc",
                    "grpc_tools", "matplotlib", "scipy", "safetensors", "h5py"}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ARG002 - the finder protocol
        if name.split(".")[0] in WORKSTATION_ONLY:
            raise ModuleNotFoundError(f"{name} is blocked: a workstation-only package (runtime_probe.py)", name=name)
        return None


def main(argv: list[str]) -> int:
    sys.meta_path.insert(0, _Blocker())
    from edgetpu_models.cli import main as cli_main

    code = cli_main(argv)
    sys.stdout.flush()
    print(json.dumps(sorted(m for m in sys.modules if m == "edgetpu_models" or m.startswith("edgetpu_models."))))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
