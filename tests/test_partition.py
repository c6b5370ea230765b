"""partition: cut points from the latency model, segment files, and the segments run as a pipeline give exactly the
whole model's output (CPU interpreters in threads; pycoral's runner needs Edge TPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgetpu_models.deploy.partition import PartitionError, cut_points, plan_partition, write_segments
from edgetpu_models.tflite_reader import read_tflite
from tests.helpers.tflite_models import convert

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset


def _residual_net():
    """conv -> [conv, conv + skip] -> conv stride 2 -> [conv + skip] -> pool -> dense(10): cuts only between blocks."""
    import tf_keras as keras

    i = keras.Input((24, 24, 3), batch_size=1)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(i)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(32, 1, activation="relu")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10)(x)
    return keras.Model(i, x)


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("partition") / "resnet_tiny.tflite"
    path.write_bytes(convert(_residual_net()))
    return str(path)


def test_cut_points_skip_residual_branches(net):
    m = read_tflite(net)
    cuts = cut_points(m)
    assert cuts, "a sequential model has cut points"
    add_ops = [op.index for op in m.operators if op.opcode == "ADD"]
    for k, tensor in cuts.items():
        # inside a residual block two tensors are live: never a cut there
        first_conv_of_block = [op.index for op in m.operators if op.opcode == "CONV_2D"][1]
        assert not (first_conv_of_block < k <= add_ops[0])
        assert tensor not in m.inputs


@pytest.mark.parametrize("n", [2, 3])
def test_segments_reproduce_the_whole_model_exactly(net, tmp_path, n):
    from edgetpu_models.deploy.pipeline import PipelineInterpreter, open_interpreter

    plan = plan_partition(net, n)
    assert len(plan.segments) == n and plan.segments[0].first_op == 0
    assert plan.pipeline_ms == max(s.latency_ms for s in plan.segments) and plan.throughput_gain > 0
    paths = write_segments(plan, tmp_path)
    assert [os.path.basename(p) for p in paths] == [f"resnet_tiny_segment_{i}_of_{n}.tflite" for i in range(n)]
    # each segment keeps only its own weights
    weights = lambda path: sum(t.buffer_size for t in read_tflite(path).tensors if t.is_constant)  # noqa: E731
    assert sum(weights(p) for p in paths) == weights(net)
    whole, _ = open_interpreter(net)
    pipe, backend = open_interpreter(paths)
    assert isinstance(pipe, PipelineInterpreter) and "pipeline of" in backend
    d_in, d_out = whole.get_input_details()[0], whole.get_output_details()[0]
    rng = np.random.default_rng(1)
    xs = [rng.integers(0, 256, size=d_in["shape"], dtype=np.uint8) for _ in range(6)]
    expected = []
    for x in xs:
        whole.set_tensor(d_in["index"], x)
        whole.invoke()
        expected.append(whole.get_tensor(d_out["index"]).copy())
    assert len({e.tobytes() for e in expected}) > 1  # the inputs give different outputs
    streamed = [y[0] for y in pipe.run_stream([[x] for x in xs])]
    for x, e, s in zip(xs, expected, streamed):
        pipe.set_tensor(pipe.get_input_details()[0]["index"], x)
        pipe.invoke()
        assert np.array_equal(pipe.get_tensor(pipe.get_output_details()[0]["index"]), e)
        assert np.array_equal(s, e)


def test_segments_out_of_order_and_too_many(net, tmp_path):
    from edgetpu_models.deploy.pipeline import open_interpreter
    from edgetpu_models.errors import ModelFileError

    paths = write_segments(plan_partition(net, 2), tmp_path)
    with pytest.raises(ModelFileError, match="give the segment files in order"):
        open_interpreter(paths[::-1])
    with pytest.raises(PartitionError, match="cut points"):
        plan_partition(net, 50)
    with pytest.raises(PartitionError, match="Edge TPU target"):
        plan_partition(net, 2, target="cpu")


def test_cli_partition_then_benchmark_the_pipeline(net, tmp_path):
    out = tmp_path / "segs"
    r = subprocess.run([sys.executable, "-m", "edgetpu_models.cli", "partition", net, "--segments", "2", "--out",
                        str(out), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert len(d["segments"]) == 2 and len(d["files"]) == 2 and d["throughput_gain"] > 0
    assert all(os.path.exists(f) for f in d["files"])
    r = subprocess.run([sys.executable, "-m", "edgetpu_models.cli", "benchmark", *d["files"], "--runs", "5",
                        "--warmup", "1", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert "pipeline of 2 segments" in b["backend"] and b["pipelined_ms"] > 0
    r = subprocess.run([sys.executable, "-m", "edgetpu_models.cli", "partition", net, "--segments", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_partition_compares_cut_points_with_the_compiler(net, tmp_path, monkeypatch, capsys):
    from edgetpu_models import cli
    from tests.test_compiler import _fake_multi_compiler

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_multi_compiler(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["partition", net, "--segments", "2", "--out", str(tmp_path / "o"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    args = (bin_dir / "args.txt").read_text().split()
    assert args[args.index("--num_segments") + 1] == "2"
    compiled = d["edgetpu_compiler"]
    assert len(compiled) == 2 and compiled[0]["on_chip_used"] == "2.27MiB"
    assert compiled[1]["ours"] == d["segments"][1]["input"] and isinstance(compiled[1]["same_cut"], bool)
