"""Latency server and client: exact round trips, status codes, auth, cache, drain, and a kill/restart under load."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetpu_models.cli import main as cli_main
from edgetpu_models.errors import ModelFileError, SpecError, TargetError, UnknownModelError
from edgetpu_models.nas.latency import estimator as latency
from edgetpu_models.nas.service import latency_pb2, latency_pb2_grpc
from edgetpu_models.nas.service.client import LatencyClient, LatencyServerError, build_request
from edgetpu_models.nas.service.server import SERVICE_NAME, LatencyServer, ServerConfig, ServerError
from edgetpu_models.zoo import ZOO, zoo_spec
from tests.helpers.tflite_models import convert, tiny_keras

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MESSAGE = 256 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    srv = LatencyServer(ServerConfig(port=0, max_message_bytes=MAX_MESSAGE, threads=8, grace_s=5)).start()
    yield srv
    srv.drain(1.0)


@pytest.fixture(scope="module")
def client(server):
    with LatencyClient(server.address, timeout_s=20, retries=2) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield latency_pb2_grpc.LatencyEstimatorStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def tflite_models():
    """(int8 bytes, float bytes) of a tiny conv/depthwise/dense network, from the real TFLite converter."""
    model = tiny_keras(size=32)
    return convert(model, int8=True), convert(model, int8=False)


def _code(stub, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        stub.Estimate(request, timeout=20)
    return info.value.code(), info.value.details()


def test_round_trip_equals_in_process_for_every_zoo_model(client):
    names = list(ZOO)
    for name in names:
        expected = latency.estimate(name).to_dict()
        spec, variant = zoo_spec(name)
        assert client.estimate(name) == expected, name                              # zoo name
        assert client.estimate(spec, variant=variant) == expected, name             # Spec (sent as JSON)
        assert client.estimate(spec.to_dict(), variant=variant) == expected, name   # spec dict
        assert repr(client.estimate(spec, variant=variant)["latency_ms"]) == repr(expected["latency_ms"])
    specs = [zoo_spec(n)[0] for n in names]
    # batch, another target and a resolution override: still the in-process numbers, in order
    for target in ("coral-usb", "coral-devboard"):
        got = client.estimate_batch(specs, target, resolution=160)
        want = [latency.estimate(s, target, resolution=160).to_dict() for s in specs]
        assert got == want
        short = client.estimate_batch(specs, target, resolution=160, latency_only=True)  # what a search asks for
        assert [r["layers"] for r in short] == [[]] * len(specs)
        assert [{**r, "layers": []} for r in want] == short


def test_spec_file_and_tflite_round_trip(client, tflite_models, tmp_path):
    path = os.path.join(REPO, "searched_archs", "mobilenet_edgetpu.yaml")
    assert client.estimate(path, "coral-usb") == latency.estimate(path, "coral-usb").to_dict()
    int8, _ = tflite_models
    expected = latency.estimate(int8).to_dict()
    assert client.estimate(int8) == expected
    f = tmp_path / "tiny.tflite"
    f.write_bytes(int8)
    assert client.estimate(str(f)) == expected


def test_yaml_text_spec(stub):
    """A person (or grpcurl) may send the spec as YAML text, as in searched_archs/."""
    with open(os.path.join(REPO, "searched_archs", "mobilenet_edgetpu.yaml"), encoding="utf-8") as f:
        text = f.read()
    resp = stub.Estimate(latency_pb2.EstimateRequest(spec=text), timeout=20)
    assert resp.latency_ms == latency.estimate("mobilenet_edgetpu").latency_ms


def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(server, stub, client, tflite_models):
    _, float_tflite = tflite_models
    good_results, good_errors, stop = [], [], threading.Event()
    expected = latency.estimate("mobilenet_edgetpu_075").to_dict()
    huge = zoo_spec("mobilenet_edgetpu")[0].to_dict()
    huge["stages"][-1]["repeats"] = 10 ** 9
    many_blocks = zoo_spec("mobilenet_edgetpu")[0].to_dict()  # every field in range, 1000 blocks per stage in total
    for stage in many_blocks["stages"]:
        stage["repeats"] = 1000

    def well_behaved():  # another client, calling throughout
        with LatencyClient(server.address, timeout_s=20, retries=0) as c:
            while not stop.is_set():
                try:
                    good_results.append(c.estimate("mobilenet_edgetpu_075") == expected)
                except Exception as e:  # pragma: no cover - reported by the assertion below
                    good_errors.append(e)

    t = threading.Thread(target=well_behaved)
    t.start()
    try:
        cases = [
            (latency_pb2.EstimateRequest(tflite=b"\x00garbage bytes, not a flatbuffer" * 4),
             grpc.StatusCode.INVALID_ARGUMENT),
            (latency_pb2.EstimateRequest(tflite=float_tflite), grpc.StatusCode.INVALID_ARGUMENT),
            (latency_pb2.EstimateRequest(zoo_model="mobilenet_edgetpu", target="coral-nano"),
             grpc.StatusCode.NOT_FOUND),
            (latency_pb2.EstimateRequest(zoo_model="no_such_model"), grpc.StatusCode.NOT_FOUND),
            (latency_pb2.EstimateRequest(tflite=b"\x01" * (MAX_MESSAGE + 1)), grpc.StatusCode.RESOURCE_EXHAUSTED),
            (latency_pb2.EstimateRequest(spec='{"name": "x", "stem": {"filters": 32}, "head": {"filters": 8}}'),
             grpc.StatusCode.INVALID_ARGUMENT),
            (latency_pb2.EstimateRequest(spec="stem: [unclosed"), grpc.StatusCode.INVALID_ARGUMENT),
            (latency_pb2.EstimateRequest(target="coral-usb"), grpc.StatusCode.INVALID_ARGUMENT),
            (build_request(huge), grpc.StatusCode.INVALID_ARGUMENT),  # must not build a billion-block graph
            (build_request(many_blocks), grpc.StatusCode.INVALID_ARGUMENT),  # nor one of thousands of blocks
        ]
        details = []
        for request, want in cases:
            code, detail = _code(stub, request)
            assert code == want, (request.WhichOneof("model"), code, detail)
            details.append(detail)
            assert client.estimate("mobilenet_edgetpu_075") == expected  # still serving, right after
        assert "not a TFLite flatbuffer" in details[0]
        assert "int8" in details[1]                   # says the float model is not what the Edge TPU runs
        assert "coral-nano" in details[2] and "coral-usb" in details[2]
        assert "stages" in details[5]                 # names the missing field
        assert "no model" in details[7]
        assert "repeats" in details[8]                # since issue 14 the field itself is bounded (spec.MAX_BLOCKS)
        assert "blocks" in details[9]
        # batch: one bad spec fails the call and names its index
        with pytest.raises(grpc.RpcError) as info:
            stub.EstimateBatch(latency_pb2.EstimateBatchRequest(requests=[
                build_request("mobilenet_edgetpu"), latency_pb2.EstimateRequest(spec="{}")]), timeout=20)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "requests[1]" in info.value.details()
        # the client re-raises the library's typed errors, as in-process estimation would
        with pytest.raises(ModelFileError):
            client.estimate(b"garbage")
        with pytest.raises(ModelFileError):
            client.estimate(float_tflite)
        with pytest.raises(TargetError, match="coral-nano"):
            client.estimate("mobilenet_edgetpu", "coral-nano")
        with pytest.raises(SpecError, match="stages"):
            client.estimate({"name": "x", "stem": {"filters": 32}, "head": {"filters": 8}})
        with pytest.raises(LatencyServerError) as big:
            client.estimate(b"\x01" * (MAX_MESSAGE + 1))
        assert big.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(UnknownModelError):
            client.estimate("no_such_model")
    finally:
        stop.set()
        t.join(30)
    assert not good_errors and len(good_results) > 0 and all(good_results)
    assert client.health() == "SERVING"


def test_health_and_reflection_for_generic_tools(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
        service = db.FindFileContainingSymbol(SERVICE_NAME).service[0]
        assert {m.name for m in service.method} == {"Estimate", "EstimateBatch", "ListTargets"}
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_list_targets_and_measured_targets_off_by_default(client, stub):
    targets = client.list_targets()
    assert "coral-usb" in targets and set(targets) <= set(latency.list_targets())
    measured = [t for t in latency.list_targets() if latency.load_target(t).kind == "measured"]
    assert measured and not set(measured) & set(targets)
    code, detail = _code(stub, latency_pb2.EstimateRequest(zoo_model="mobilenet_edgetpu", target=measured[0]))
    assert code == grpc.StatusCode.NOT_FOUND and "measured target not served" in detail


def test_identical_requests_come_from_a_bounded_cache():
    with LatencyServer(ServerConfig(port=0, cache_size=3)) as srv, LatencyClient(srv.address) as c:
        first = c.estimate("mobilenet_edgetpu")
        before = srv.cache_info()
        assert c.estimate("mobilenet_edgetpu") == first
        after = srv.cache_info()
        assert after["hits"] == before["hits"] + 1 and after["misses"] == before["misses"]
        for r in range(160, 224, 8):  # 8 more distinct requests
            c.estimate("mobilenet_edgetpu", resolution=r)
        assert srv.cache_info()["size"] == 3


def test_token_is_checked_on_every_call():
    token = "s3cret-token"
    with LatencyServer(ServerConfig(port=0, token=token)) as srv:
        with LatencyClient(srv.address, token=token) as good:
            assert good.estimate("mobilenet_edgetpu") == latency.estimate("mobilenet_edgetpu").to_dict()
            assert good.health() == "SERVING"
        for bad_token in (None, "wrong"):
            with LatencyClient(srv.address, token=bad_token, retries=0) as bad:
                for call in (lambda: bad.estimate("mobilenet_edgetpu"), bad.list_targets, bad.health):
                    with pytest.raises(LatencyServerError) as info:
                        call()
                    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_non_loopback_needs_a_token_or_tls(tmp_path, capsys):
    with pytest.raises(ServerError, match="non-loopback"):
        LatencyServer(ServerConfig(host="0.0.0.0", port=0))
    assert cli_main(["latency-server", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0.0.0.0" in err[0] and "--token-file" in err[0]
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert cli_main(["latency-server", "--host", "0.0.0.0", "--token-file", str(empty)]) == 1
    assert "token file is empty" in capsys.readouterr().err


def test_drain_finishes_calls_in_flight_and_refuses_new_ones():
    srv = LatencyServer(ServerConfig(port=0, cache_size=0, grace_s=60)).start()
    many = [d.to_dict() for d in (zoo_spec(n)[0] for n in ("efficientnet_edgetpu_s", "efficientnet_edgetpu_m"))]
    release = threading.Event()  # the batch's first model waits for it: the call stays in flight as long as the test
    estimate_cached = srv.service._estimate_cached  # needs, however fast or slow the machine is

    def held_estimate(request, where, latency_only=False):
        release.wait(60)
        return estimate_cached(request, where, latency_only)

    srv.service._estimate_cached = held_estimate
    result: dict = {}

    def long_call():
        with LatencyClient(srv.address, timeout_s=90, retries=0) as c:
            result["batch"] = c.estimate_batch(many, resolution=224)

    t = threading.Thread(target=long_call)
    t.start()
    deadline = time.monotonic() + 20
    while srv.service.inflight == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert srv.service.inflight == 1
    drainer = threading.Thread(target=srv.drain)
    drainer.start()
    while not srv.service.draining.is_set():
        time.sleep(0.001)
    with LatencyClient(srv.address, retries=0) as late:
        with pytest.raises(LatencyServerError) as info:
            late.list_targets()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert late.health() == "NOT_SERVING"
    assert srv.service.inflight == 1 and not srv.wait_stopped(0)
    release.set()
    t.join(90)
    drainer.join(90)
    assert [r["latency_ms"] for r in result["batch"]] == [latency.estimate(s, resolution=224).latency_ms for s in many]
    assert srv.wait_stopped(0)


def _start_server_process(port: int, workers: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgetpu_models.cli", "latency-server", "--port", str(port),
                             "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_server_killed_and_restarted_loses_no_request():
    port = free_port()
    address = f"127.0.0.1:{port}"
    spec, variant = zoo_spec("efficientnet_edgetpu_s")
    resolutions = [96 + 2 * i for i in range(240)]
    expected = [latency.estimate(spec, resolution=r, variant=variant).to_dict() for r in resolutions]
    got: list = []
    failures: list = []
    stats: dict = {}
    proc = _start_server_process(port)
    procs = [proc]
    try:
        with LatencyClient(address, retries=0) as probe:
            probe.wait_ready(60)

        def run():
            with LatencyClient(address, timeout_s=10, retries=20, backoff_s=0.05, max_backoff_s=1.0) as c:
                for r in resolutions:
                    try:
                        got.append(c.estimate(spec, resolution=r, variant=variant))
                    except Exception as e:  # pragma: no cover - reported by the assertion below
                        failures.append(e)
                        break
                    time.sleep(0.005)
                stats.update(c.stats)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 60
        while len(got) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()  # no drain: calls in flight fail with UNAVAILABLE
        proc.wait(10)
        killed_at = len(got)
        time.sleep(0.3)
        proc = _start_server_process(port, workers=2)  # comes back as two worker processes sharing the port
        procs.append(proc)
        t.join(120)
        assert not t.is_alive()
        assert not failures, failures[:3]
        assert killed_at < len(resolutions), "the kill came after the run: nothing was tested"
        assert got == expected
        assert stats["calls"] == len(resolutions) and stats["retries"] > 0, stats  # the outage was seen and ridden out
        # graceful stop: SIGTERM drains and exits 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "drained" in proc.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            for stream in (p.stdout, p.stderr):
                stream.close()


def test_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not on PATH: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    config = ServerConfig(port=0, tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    with LatencyServer(config) as srv:
        with LatencyClient(srv.address, tls_ca=str(cert)) as c:
            assert c.estimate("mobilenet_edgetpu") == latency.estimate("mobilenet_edgetpu").to_dict()
        with LatencyClient(srv.address, retries=0, timeout_s=5) as plain:  # plaintext to a TLS port fails
            with pytest.raises(LatencyServerError):
                plain.list_targets()
    # off loopback, TLS alone (no token) is refused since issue 14: anyone could call it; client certificates (mutual
    # TLS) make a non-loopback bind acceptable
    with pytest.raises(ServerError, match="mutual TLS"):
        LatencyServer(dataclasses.replace(config, host="0.0.0.0"))
    LatencyServer(dataclasses.replace(config, host="0.0.0.0", tls_client_ca=cert.read_bytes()))


def test_spec_path_is_tensorflow_free():
    code = (
        "import sys\n"
        "from edgetpu_models.nas.service.server import LatencyServer, ServerConfig\n"
        "from edgetpu_models.nas.service.client import LatencyClient\n"
        "from edgetpu_models.zoo import zoo_spec\n"
        "with LatencyServer(ServerConfig(port=0)) as s, LatencyClient(s.address) as c:\n"
        "    spec, v = zoo_spec('efficientnet_edgetpu_m')\n"
        "    assert c.estimate(spec, variant=v)['latency_ms'] > 0\n"
        "    assert len(c.estimate_batch([spec, spec])) == 2\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_client_rejects_bad_addresses_and_unsendable_models(client):
    with pytest.raises(LatencyServerError, match="HOST:PORT"):
        LatencyClient("no-port-here")
    with pytest.raises(ModelFileError, match=".keras"):
        client.estimate("model.keras")
    with pytest.raises(TypeError):
        client.estimate(3.14)


def test_response_rows_encoded_once_equal_the_estimate():
    """to_response encodes each layer row once and reuses the bytes; the message must still be the estimate's dict."""
    from edgetpu_models.nas.latency.estimator import estimate
    from edgetpu_models.nas.service.server import to_response

    for name in ("efficientnet_edgetpu_s", "mobilenet_edgetpu_v2_s", "efficientnet_edgetpu_s"):
        est = estimate(name, "coral-usb")
        d = est.to_dict()
        resp = to_response(est)
        assert resp.latency_ms == d["latency_ms"] and resp.target == d["target"]
        assert resp.off_chip_param_bytes == d["off_chip_param_bytes"]
        assert [(r.name, r.op, list(r.output_shape), r.macs, r.ms, r.bound) for r in resp.layers] == [
            (r["name"], r["op"], r["output_shape"], r["macs"], r["ms"], r["bound"]) for r in d["layers"]]
