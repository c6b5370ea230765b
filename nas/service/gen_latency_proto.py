"""Regenerates the committed gRPC stubs `latency_pb2.py` and `latency_pb2_grpc.py` from `latency.proto`.

Run from anywhere: `python -m edgetpu_models.nas.service.gen_latency_proto [OUT_DIR]` (needs grpcio-tools, a test
extra; OUT_DIR defaults to this folder, where the committed stubs live).

protoc names generated imports after the .proto's path below its include root, so the .proto is copied into a
temporary folder laid out as the installed package (`edgetpu_models/nas/service/latency.proto`). The stubs then
import each other as `from edgetpu_models.nas.service import latency_pb2`, which works inside the package, and the
file registers in the protobuf descriptor pool under a package-qualified name (what server reflection reports).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from edgetpu_models.io_utils import atomic_path

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "latency.proto"
OUTPUTS = ("latency_pb2.py", "latency_pb2_grpc.py")
PACKAGE_DIR = os.path.join("edgetpu_models", "nas", "service")


def generate(out_dir: str = HERE) -> list[str]:
    """Runs protoc; returns the paths written. Raises RuntimeError if protoc fails."""
    from grpc_tools import protoc  # only needed when regenerating

    with tempfile.TemporaryDirectory() as tmp:
        pkg = os.path.join(tmp, PACKAGE_DIR)
        os.makedirs(pkg)
        shutil.copy(os.path.join(HERE, PROTO), pkg)
        rel = os.path.join(PACKAGE_DIR, PROTO)
        rc = protoc.main(["grpc_tools.protoc", f"-I{tmp}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                          os.path.join(tmp, rel)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {rc})")
        written = []
        for name in OUTPUTS:
            dst = os.path.join(out_dir, name)
            with atomic_path(dst) as tmp_dst:  # an interrupted run leaves the committed stubs whole
                shutil.copy(os.path.join(pkg, name), tmp_dst)
            written.append(dst)
        return written


if __name__ == "__main__":
    for path in generate(*sys.argv[1:2]):
        print(path)
    sys.exit(0)
