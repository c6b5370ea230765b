"""The committed gRPC stubs are what `python -m edgetpu_models.nas.service.gen_latency_proto` writes; they import."""

import os
import subprocess
import sys

import pytest

from edgetpu_models.nas.service import gen_latency_proto

pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) regenerates the stubs")


def test_regenerated_stubs_equal_the_committed_ones(tmp_path):
    # a fresh process, as a developer runs it (protoc in a process that loaded TensorFlow's protobuf can crash)
    out = subprocess.run([sys.executable, "-m", "edgetpu_models.nas.service.gen_latency_proto", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(os.path.basename(p) for p in out.stdout.split()) == sorted(gen_latency_proto.OUTPUTS)
    for name in gen_latency_proto.OUTPUTS:
        fresh = (tmp_path / name).read_text()
        with open(os.path.join(gen_latency_proto.HERE, name)) as f:
            assert fresh == f.read(), f"{name}: committed stub differs from a fresh generation; rerun the generator"


def test_stubs_import_inside_the_package():
    from edgetpu_models.nas.service import latency_pb2, latency_pb2_grpc

    assert latency_pb2_grpc.LatencyEstimatorStub and latency_pb2.EstimateRequest(target="cpu").target == "cpu"
    assert latency_pb2.DESCRIPTOR.name == "edgetpu_models/nas/service/latency.proto"  # what server reflection reports
