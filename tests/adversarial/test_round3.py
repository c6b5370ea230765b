"""Round 3 of the adversarial suite (issue 20): honest scores, no lost runs, no silent rewrites, secured servers usable
from the command line, bounded work before the server's gate, machine-readable --json, ranges that fit the types."""

from __future__ import annotations

import numpy as np
import pytest

from edgetpu_models.metrics import keras_topk_metric, topk_accuracy, topk_credit
from tests.helpers.cli import assert_one_line_error, run_cli


def test_a_tie_never_earns_a_hit_in_class_index_order():
    """An all-zero 1000-class output (a quantised softmax often ties) earns chance, whatever the label."""
    scores = np.zeros((2, 1000), np.float32)
    truth = np.array([0, 1])
    assert topk_accuracy(scores, truth, 1) == pytest.approx(1 / 1000)
    assert topk_accuracy(scores, truth, 5) == pytest.approx(5 / 1000)
    one_tie = np.array([[0.5, 0.5, 0.1]], np.float32)  # the true class shares first place with one other
    assert topk_credit(one_tie, np.array([1]), 1)[0] == pytest.approx(0.5)
    assert topk_credit(one_tie, np.array([1]), 2)[0] == pytest.approx(1.0)
    nan = np.array([[np.nan, 1.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    assert topk_credit(nan, np.array([0]), 5)[0] == 0.0


def test_all_zero_outputs_do_not_agree_perfectly():
    from edgetpu_models.metrics import top1_agreement

    assert top1_agreement(np.zeros((2, 1000)), np.zeros((2, 1000))) == pytest.approx([1e-3, 1e-3])
    assert top1_agreement([[0.1, 0.9]], [[0.2, 0.8]]) == pytest.approx([1.0])


def test_top5_with_five_classes_or_fewer_is_not_applicable():
    assert topk_accuracy(np.random.rand(4, 3), np.array([0, 1, 2, 0]), 5) is None


def test_the_keras_metric_uses_the_same_rule():
    scores = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0.2, 0.1]], np.float32)
    truth = np.array([0, 1, 1])
    metric = keras_topk_metric(2, "top2")
    metric.update_state(np.eye(4, dtype=np.float32)[truth], scores)
    assert float(metric.result()) == pytest.approx(float(np.mean(topk_credit(scores, truth, 2))))


def _ray_tree_after_kill9(tmp_path) -> list[int]:
    """Starts a local Ray the way `nas search` does, kill -9s the driver, and returns the pids of Ray's head processes
    and their children (the agents) that the driver had."""
    import json
    import subprocess
    import sys

    script = tmp_path / "driver.py"
    script.write_text(
        "import json, os, time, ray\n"
        "ray.init(address='local', num_cpus=1, num_gpus=0, include_dashboard=False, logging_level='ERROR',"
        " object_store_memory=96 * 1024 * 1024)\n"
        "from edgetpu_models.nas.search.ray_watchdog import bind_to_driver, ray_head_pids\n"
        "bind_to_driver(ray)\n"
        "time.sleep(4)\n"
        "heads = ray_head_pids(ray)\n"
        "kids = [int(n) for n in os.listdir('/proc') if n.isdigit() and os.path.exists(f'/proc/{n}/stat') and"
        " int(open(f'/proc/{n}/stat').read().rsplit(')', 1)[1].split()[1]) in heads]\n"
        "print(json.dumps(heads + kids), flush=True)\n"
        "os.kill(os.getpid(), 9)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kill9_of_the_search_driver_ends_rays_processes(tmp_path):
    import os
    import time

    pids = _ray_tree_after_kill9(tmp_path)
    assert len(pids) >= 5

    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    while any(running(p) for p in pids):  # the suite's hang guard bounds this wait
        time.sleep(0.5)
    assert not [p for p in pids if running(p) and os.path.exists(f"/proc/{p}")]


def test_atomic_writes_respect_the_umask(tmp_path):
    """Exported models, sidecars and fits go through write_group_atomic: they get the umask's mode, not 0600."""
    import os
    import stat

    from edgetpu_models.io_utils import write_bytes_atomic, write_group_atomic

    old = os.umask(0o027)
    try:
        write_group_atomic({str(tmp_path / "m.tflite"): b"x", str(tmp_path / "m.json"): "{}"})
        write_bytes_atomic(tmp_path / "fit.json", b"{}")
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("m.tflite", "m.json", "fit.json")}
    assert modes == {"m.tflite": 0o640, "m.json": 0o640, "fit.json": 0o640}


def test_sizes_that_do_not_fit_the_types_are_one_line():
    import argparse

    from edgetpu_models.cli.args import size_arg
    from edgetpu_models.counts import INT32_MAX

    for value in ("2G", "4294967296", "1e400", "nan", "-1", "9" * 400, "64MB.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a byte size"):
            size_arg(1024, INT32_MAX)(value)
    result = run_cli("latency-server", "--port", "0", "--max-message-bytes", "2G", timeout=60)
    assert_one_line_error(result, "--max-message-bytes", code=2)


def test_the_size_parser():
    from edgetpu_models.counts import INT32_MAX, parse_count

    assert parse_count("64M", lo=1024, hi=INT32_MAX, units=True) == 64 << 20
    assert parse_count("6.03MiB", units=True) == round(6.03 * (1 << 20))
    assert parse_count("1048576", units=True) == 1048576
    for bad in ("2G", "1.5", "", "0x10", "1_000"):
        with pytest.raises(ValueError, match="expected"):
            parse_count(bad, lo=0, hi=INT32_MAX, units=True)


def test_a_compiler_summary_with_a_non_numeric_count_is_a_compiler_error():
    from edgetpu_models.deploy.compiler import CompilerError, parse_compiler_output

    text = ("Edge TPU Compiler version 16.0.384591198\nModel compiled successfully in 10 ms.\n"
            "Number of operations that will run on Edge TPU: lots\n\n"
            "Operator                       Count      Status\n\n"
            "CONV_2D                        3          Mapped to Edge TPU\n")
    with pytest.raises(CompilerError, match="ops_on_edgetpu: expected a count"):
        parse_compiler_output(text)
    big = text.replace("lots", "9" * 30)
    with pytest.raises(CompilerError):
        parse_compiler_output(big)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """A tiny int8 .tflite (4 classes) with its sidecar, written by the real export."""
    from edgetpu_models.deploy.export import export_tflite
    from tests.helpers.tflite_models import tiny_keras

    folder = tmp_path_factory.mktemp("model")
    path = folder / "tiny.tflite"
    export_tflite(tiny_keras(size=32), str(path), random_calibration=True, model_name="tiny",
                  labels=["a", "b", "c", "d"])
    return path


@pytest.mark.parametrize("command", ["compile", "check"])
def test_json_is_one_document_on_stdout(int8_model, command, tmp_path):
    """Without edgetpu_compiler, `compile --json` used to print a sentence before the JSON."""
    import json

    extra = ["--out-dir", str(tmp_path / "out")] if command == "compile" else []
    result = run_cli(command, str(int8_model), "--json", *extra)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    json.loads(result.stdout)  # the whole of stdout is one document


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    """An in-process latency server that wants a bearer token, and the token file a client is given."""
    from edgetpu_models.nas.service.server import LatencyServer, ServerConfig

    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text("s3cret-token\n")
    with LatencyServer(ServerConfig(port=0, threads=2, token="s3cret-token", grace_s=1)) as srv:
        yield srv, token_file


def test_estimate_reaches_a_token_server_with_token_file(token_server):
    import json

    srv, token_file = token_server
    refused = run_cli("estimate", "efficientnet_edgetpu_s", "--server", srv.address)
    assert_one_line_error(refused, srv.address)
    result = run_cli("estimate", "efficientnet_edgetpu_s", "--server", srv.address, "--token-file", str(token_file),
                     "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["latency_ms"] > 0


@pytest.mark.parametrize("address", ["host:0", "host:65536", "host:99999999999999999999999", ":50051", "host",
                                     "::1:50051", "ho st:1", "http://h:1", "h:-1", "[::1]:0"])
def test_every_host_port_is_parsed_in_one_place(address):
    from edgetpu_models.counts import parse_host_port
    from edgetpu_models.nas.service.client import LatencyClient, LatencyServerError

    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_host_port(address)
    with pytest.raises(LatencyServerError, match="expected HOST:PORT"):
        LatencyClient(address)
    assert parse_host_port("[::1]:50051") == ("[::1]", 50051) and parse_host_port("a-b.c:1") == ("a-b.c", 1)


def test_both_server_flags_use_the_one_parser(tmp_path):
    for args in (["estimate", "efficientnet_edgetpu_s", "--server", "host:65536"],
                 ["nas", "search", "--latency-server", "host:65536", "--out", str(tmp_path / "s"),
                  "--latency-target-ms", "5"]):
        assert_one_line_error(run_cli(*args), "HOST:PORT", code=2)
    assert not (tmp_path / "s").exists()


def test_credentials_are_checked_before_work(tmp_path):
    missing = str(tmp_path / "nope")
    assert_one_line_error(run_cli("estimate", "efficientnet_edgetpu_s", "--server", "127.0.0.1:9",
                                  "--token-file", missing), "nope")
    bad_pem = tmp_path / "ca.pem"
    bad_pem.write_text("not a certificate")
    assert_one_line_error(run_cli("nas", "search", "--latency-server", "127.0.0.1:9", "--tls-ca", str(bad_pem),
                                  "--out", str(tmp_path / "s"), "--latency-target-ms", "5"), "ca.pem", "--tls-ca")
    assert_one_line_error(run_cli("estimate", "efficientnet_edgetpu_s", "--token-file", missing), "--server")
    assert not (tmp_path / "s").exists()


def test_export_never_rewrites_another_models_sidecar(tmp_path):
    """`export model.keras --out model.tflite --labels other.txt` used to rewrite the Keras model's model.json and
    model.labels.txt: each model file now has its own sidecar, so the Keras model's stays as it was."""
    from edgetpu_models.model_io import save_model
    from edgetpu_models.sidecar import Sidecar, read_sidecar
    from edgetpu_models.spec import Normalization
    from tests.helpers.tflite_models import tiny_keras

    save_model(tiny_keras(size=32), tmp_path / "model.keras",
               Sidecar(model="tiny", normalization=Normalization((0.5,) * 3, (0.5,) * 3), labels=("a", "b", "c", "d")))
    (tmp_path / "other.txt").write_text("w\nx\ny\nz\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = ["export", str(tmp_path / "model.keras"), "--random-calibration", "--out", str(tmp_path / "model.tflite"),
            "--labels", str(tmp_path / "other.txt")]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert read_sidecar(tmp_path / "model.tflite").labels == ("w", "x", "y", "z")
    assert read_sidecar(tmp_path / "model.keras").labels == ("a", "b", "c", "d")


def test_a_user_file_at_the_output_is_refused_and_an_earlier_export_is_replaced(int8_model, tmp_path):
    import shutil

    user_file = tmp_path / "mine.tflite"
    user_file.write_bytes(b"my own file")
    assert_one_line_error(run_cli("export", "efficientnet_edgetpu_s", "--random-calibration", "--classes", "4",
                                  "--resolution", "32", "--out", str(user_file)), "mine.tflite", "--force")
    assert user_file.read_bytes() == b"my own file"
    ours = tmp_path / "seg"
    first = run_cli("partition", str(int8_model), "--segments", "2", "--out", str(ours))
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli("partition", str(int8_model), "--segments", "2", "--out", str(ours))
    assert again.returncode == 0, again.stderr[-2000:]  # our own segments (with their sidecars) are replaced
    shutil.copy(user_file, ours / "tiny_segment_0_of_2.tflite")
    (ours / "tiny_segment_0_of_2.tflite.json").unlink()
    assert_one_line_error(run_cli("partition", str(int8_model), "--segments", "2", "--out", str(ours)),
                          "tiny_segment_0_of_2.tflite", "--force")


@pytest.mark.parametrize("command", ["report", "partition", "compile"])
def test_an_output_of_the_wrong_kind_is_one_line(int8_model, command, tmp_path):
    folder = tmp_path / "page.html"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    args = {"report": ["report", str(int8_model), "--out", str(folder)],
            "partition": ["partition", str(int8_model), "--segments", "2", "--out", str(a_file)],
            "compile": ["compile", str(int8_model), "--out-dir", str(a_file)]}[command]
    assert_one_line_error(run_cli(*args), "exists and is not a")
    assert a_file.read_text() == "keep me" and folder.is_dir() and not list(folder.iterdir())


def test_segments_in_another_folder_classify_and_a_partial_pipeline_is_one_line(int8_model, tmp_path):
    import json

    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "segments"
    assert run_cli("partition", str(int8_model), "--segments", "2", "--out", str(out)).returncode == 0
    segs = [str(out / f"tiny_segment_{i}_of_2.tflite") for i in range(2)]
    both = run_cli("classify", *segs, str(image), "--json")
    assert both.returncode == 0, both.stderr[-2000:]
    whole = run_cli("classify", str(int8_model), str(image), "--json")
    top = [json.loads(r.stdout)["results"][0]["predictions"][0]["label"] for r in (both, whole)]
    assert top[0] == top[1] and top[0] in "abcd"
    for partial in ([segs[0]], [segs[1]], segs[::-1]):
        assert_one_line_error(run_cli("classify", *partial, str(image)), "give the segment files in order, all 2")


def _fake_compiler(folder, body: str) -> str:
    import os
    import sys

    script = folder / "edgetpu_compiler"
    script.write_text(f"#!{sys.executable}\nimport os, subprocess, sys, time\n{body}\n")
    os.chmod(script, 0o755)
    return str(script)


def test_a_compiler_that_prints_without_end_is_stopped_with_a_bound(int8_model, tmp_path, monkeypatch):
    from edgetpu_models.deploy import compiler as comp

    monkeypatch.setattr(comp, "MAX_OUTPUT_BYTES", 1 << 20)
    fake = _fake_compiler(tmp_path, "line = b'x' * 65535 + b'\\n'\nwhile True:\n    sys.stdout.buffer.write(line)")
    with pytest.raises(comp.CompilerError, match="printed more than 1048576 bytes"):
        comp.compile_models([str(int8_model)], str(tmp_path / "out"), compiler=fake)


def test_a_compiler_timeout_ends_its_children_too(int8_model, tmp_path, monkeypatch):
    import os
    import time

    from edgetpu_models.deploy import compiler as comp

    monkeypatch.setattr(comp, "TIMEOUT_GRACE_S", 0)
    pid_file = tmp_path / "child.pid"
    fake = _fake_compiler(tmp_path, f"child = subprocess.Popen(['sleep', '1000'])\n"
                                    f"open({str(pid_file)!r}, 'w').write(str(child.pid))\ntime.sleep(1000)")
    with pytest.raises(comp.CompilerError, match="did not finish within 1 s"):
        comp.compile_models([str(int8_model)], str(tmp_path / "out"), compiler=fake, timeout_s=1)
    child = int(pid_file.read_text())
    while os.path.exists(f"/proc/{child}") and open(f"/proc/{child}/stat").read().split(")")[1].split()[0] != "Z":
        time.sleep(0.1)  # the suite's hang guard bounds this wait


def test_a_failing_compiler_comparison_keeps_the_partition_plan(int8_model, tmp_path):
    import json
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_compiler(bin_dir, "print('Edge TPU Compiler version 16.0'); print('Internal compiler error'); sys.exit(1)")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("partition", str(int8_model), "--segments", "2", "--out", str(tmp_path / "seg"), "--json",
                     env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout)["files"]) == 2
    assert "comparison skipped" in result.stderr


def test_the_server_admits_by_size_before_parsing_and_parses_once(monkeypatch):
    """Specs padded with comments used to be parsed (twice) before the gate for expensive calls."""
    import json

    from edgetpu_models.nas.service import server as srv_mod
    from edgetpu_models.nas.service.client import LatencyClient
    from edgetpu_models.zoo import zoo_spec

    parses = []
    real = srv_mod.spec_from_dict
    holder = []

    def counting(data, source=None):
        gate = holder[0].service.expensive
        parses.append(gate._free._value < gate.slots)  # is a turn among the expensive calls held?
        return real(data, source=source)

    monkeypatch.setattr(srv_mod, "spec_from_dict", counting)
    monkeypatch.setattr(srv_mod, "_PARSED", type(srv_mod._PARSED)())  # texts parsed by earlier tests are kept parsed
    small = json.dumps(zoo_spec("efficientnet_edgetpu_s")[0].to_dict())
    padded = "# " + "x" * 200_000 + "\n" + small  # YAML: a long comment, then the spec
    with srv_mod.LatencyServer(srv_mod.ServerConfig(port=0, threads=4, grace_s=1)) as server:
        holder.append(server)
        with LatencyClient(server.address, timeout_s=60) as client:
            plain = client.estimate(json.loads(small))
            assert parses == [False]  # small: parsed once, no expensive turn
            parses.clear()
            req = srv_mod.latency_pb2.EstimateRequest(spec=padded, target="coral-usb")
            resp = client._call(client._rpc.Estimate, req, "Estimate")
            assert parses == [True]  # large by size: parsed once, and only after its turn came
    assert resp.latency_ms == pytest.approx(plain["latency_ms"])


def _short_idat_png(path, size: int = 32) -> None:
    """A PNG whose chunks and checksums are all valid but whose pixel data stops halfway (listing passes it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rng = np.random.default_rng(1)
    rows = b"".join(b"\0" + rng.integers(0, 255, 3 * size, dtype=np.uint8).tobytes() for _ in range(size))
    data = zlib.compress(rows)
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data[: len(data) // 2])
                     + chunk(b"IEND", b""))


def _labelled_folder(root, per_class: int = 6):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg", quality=90)
    return root


def test_one_bad_file_never_loses_an_evaluation(int8_model, tmp_path):
    """A JPEG cut to 60% passed the listing (headers only) and then aborted `evaluate` with no result."""
    import json

    data = _labelled_folder(tmp_path / "data")
    jpeg = data / "a" / "0.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: int(jpeg.stat().st_size * 0.6)])
    _short_idat_png(data / "b" / "short.png")  # valid checksums: only decoding finds it
    result = run_cli("evaluate", str(int8_model), "--data", str(data), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["images"] == 11 and report["skipped"] == 2
    assert report["models"][0]["top5"] is None  # 4 classes: not applicable


def test_a_truncated_jpeg_is_skipped_and_counted_at_listing(tmp_path):
    from edgetpu_models.data import list_image_folder

    data = _labelled_folder(tmp_path / "data")
    jpeg = data / "a" / "0.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: int(jpeg.stat().st_size * 0.6)])
    listing = list_image_folder(str(data))
    assert len(listing.files) == 11 and listing.skipped == [str(jpeg)]


@pytest.mark.parametrize("command", ["demo", "quantize"])
def test_too_few_calibration_images_fail_before_training(command, tmp_path):
    """`demo --data` on 96 images failed at step 4 (export), after training; `quantize` ran QAT first."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in "ab":
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(48):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    out = tmp_path / ("run" if command == "demo" else "q.keras")
    model = ["efficientnet_edgetpu_s"] if command == "quantize" else []
    result = run_cli(command, *model, "--data", str(tmp_path / "data"), "--out", str(out))
    assert_one_line_error(result, "at least 100")
    assert not out.exists()
