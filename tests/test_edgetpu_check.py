"""Edge TPU compatibility check: mapped models, and the cases the compiler rejects (float, TRANSPOSE, dynamic batch,
batch > 1, fused activation on a pool, ops downstream of an unmappable one)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgetpu_models.deploy.edgetpu_check import (
    MAPPED,
    NOT_SUPPORTED,
    SUBGRAPH,
    UNSPECIFIED,
    UNSUPPORTED_RANK,
    UNSUPPORTED_TYPE,
    check_tflite,
)
from edgetpu_models.errors import ModelFileError
from tests.helpers.tflite_models import convert, tiny_keras, transpose_block


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    import tf_keras as keras

    folder = tmp_path_factory.mktemp("check")
    made = {
        "int8": convert(tiny_keras()),
        "float": convert(tiny_keras(), int8=False),
        "transpose": convert(tiny_keras(extra=transpose_block)),
        "dynamic": convert(tiny_keras(batch=None)),
        "batch2": convert(tiny_keras(batch=2)),
        "pool_relu": convert(tiny_keras(extra=lambda x: keras.layers.ReLU()(
            keras.layers.AveragePooling2D(2, strides=1, padding="same")(x)))),
    }
    paths = {}
    for name, data in made.items():
        paths[name] = str(folder / f"{name}.tflite")
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths


@pytest.mark.slow  # converts or builds full-size models
def test_int8_model_fully_mapped_in_compiler_layout(models):
    r = check_tflite(models["int8"])
    assert r.fully_mapped and r.fraction_on_edgetpu == 1.0 and r.on_cpu == 0 and r.total == 7
    assert all(o.status == MAPPED for o in r.ops) and r.edgetpu_subgraphs == 1
    lines = r.format().splitlines()
    assert "Number of operations that will run on Edge TPU: 7" in lines
    assert "Number of operations that will run on CPU: 0" in lines
    header = lines.index("Operator                       Count      Status")
    assert lines[header + 2] == "QUANTIZE                       2          Mapped to Edge TPU"


def test_float_model_flagged(models):
    r = check_tflite(models["float"])
    assert not r.fully_mapped and r.on_edgetpu == 0 and r.edgetpu_subgraphs == 0
    assert r.ops[0].status == UNSUPPORTED_TYPE and "FLOAT32" in r.ops[0].reason
    assert all(o.status == SUBGRAPH for o in r.ops[1:])
    assert any("not fully 8-bit quantized" in issue for issue in r.issues)


def test_transpose_and_everything_downstream_on_cpu(models):
    r = check_tflite(models["transpose"])
    names = [o.operator for o in r.ops]
    t = names.index("TRANSPOSE")
    assert r.ops[t].status == NOT_SUPPORTED
    assert all(o.status == MAPPED for o in r.ops[:t])  # QUANTIZE, CONV_2D before it stay on the Edge TPU
    downstream = r.ops[t + 1:]
    assert downstream and all(o.status == SUBGRAPH for o in downstream)
    assert "DEPTHWISE_CONV_2D" in [o.operator for o in downstream]  # mappable by itself, but after the cut
    assert r.on_edgetpu == t and r.on_cpu == len(r.ops) - t
    assert r.first_cpu_op.operator == "TRANSPOSE"
    text = r.format()
    assert "TRANSPOSE                      1          Operation not supported" in text
    assert "DEPTHWISE_CONV_2D              1          More than one subgraph is not supported" in text
    assert "First op on the CPU: #" in text and "not all operations are supported by the Edge TPU" in text


def test_dynamic_batch_flagged(models):
    r = check_tflite(models["dynamic"])
    assert not r.fully_mapped
    assert any("static shape with batch 1" in issue for issue in r.issues)
    assert r.ops[0].status == UNSPECIFIED and "dynamic shape" in r.ops[0].reason


def test_batch_two_has_unsupported_rank(models):
    r = check_tflite(models["batch2"])
    assert not r.fully_mapped and r.ops[0].status == UNSUPPORTED_RANK


def test_pool_with_fused_activation_not_mapped(models):
    r = check_tflite(models["pool_relu"])
    pool = next(o for o in r.ops if o.operator == "AVERAGE_POOL_2D")
    assert pool.status == UNSPECIFIED and "fused activation" in pool.reason


def test_to_dict_is_json(models):
    d = json.loads(json.dumps(check_tflite(models["transpose"]).to_dict()))
    assert d["tool"] == "check" and d["on_cpu"] > 0 and 0 < d["fraction_on_edgetpu"] < 1
    assert {"operator", "count", "status"} == set(d["rows"][0])


def test_garbage_file(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="bad.tflite: not a TFLite flatbuffer"):
        check_tflite(str(bad))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgetpu_models.cli", *args], capture_output=True, text=True)


def test_cli_check_exit_codes_json_and_tf_free(models, tmp_path):
    ok = _cli("check", models["int8"])
    assert ok.returncode == 0 and "Number of operations that will run on CPU: 0" in ok.stdout
    bad = _cli("check", models["transpose"], "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["fully_mapped"] is False
    (tmp_path / "junk.tflite").write_text("not a model")
    junk = _cli("check", str(tmp_path / "junk.tflite"))
    assert junk.returncode == 1 and len(junk.stderr.strip().splitlines()) == 1 and "junk.tflite" in junk.stderr
    code = ("import sys; from edgetpu_models.deploy.edgetpu_check import check_tflite; "
            f"assert check_tflite({models['int8']!r}).fully_mapped; assert 'tensorflow' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow  # converts or builds full-size models
@pytest.mark.parametrize("name", ["efficientnet_edgetpu_s", "mobilenet_edgetpu_075"])
def test_zoo_models_export_fully_mapped(name, tmp_path):
    """One model of each family (M and L have S's block types), at a small resolution: the op types and wiring do
    not depend on it. Every zoo model at full size, and after QAT: benchmarks/export.py --qat."""
    from edgetpu_models.builder import build_model
    from edgetpu_models.deploy.export import export_tflite

    r = export_tflite(build_model(name, resolution=64, classes=10), tmp_path / f"{name}.tflite",
                      random_calibration=True)
    report = check_tflite(r.path)
    assert report.fully_mapped and report.on_edgetpu == report.total > 50, report.format()
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"} <= {row.operator for row in report.rows}
