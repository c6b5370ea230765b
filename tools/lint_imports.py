"""Check the layer contract in pyproject.toml ([tool.importlinter]) with import-linter.

Why a wrapper: setup.py installs the top-level folders nas/, deploy/ and quantize/ as edgetpu_models.nas, ... through
package_dir, so the source tree has no edgetpu_models/nas folder and import-linter (which walks the root package's
folder) would not see them. This script lays out the installed package shape with symbolic links in a temporary
folder and runs import-linter there with that folder first on PYTHONPATH; nothing is written in the checkout.
Usage: `python tools/lint_imports.py` (exit status: import-linter's, 0 when every contract is kept).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPACKAGE_DIRS = ("nas", "quantize", "deploy", "searched_archs")  # as setup.py's SUBPACKAGE_DIRS


def _mirror(into: str) -> None:
    package = os.path.join(into, "edgetpu_models")
    os.mkdir(package)
    for name in os.listdir(os.path.join(ROOT, "edgetpu_models")):
        os.symlink(os.path.join(ROOT, "edgetpu_models", name), os.path.join(package, name))
    for name in SUBPACKAGE_DIRS:
        os.symlink(os.path.join(ROOT, name), os.path.join(package, name))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="lint-imports-") as tmp:
        _mirror(tmp)
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [os.path.join(os.path.dirname(sys.executable), "lint-imports"), "--no-cache",
                   "--config", os.path.join(ROOT, "pyproject.toml")]
        return subprocess.run(command, cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
