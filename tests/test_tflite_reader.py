"""The TF-free TFLite flatbuffer reader: operators, options, tensors, quantization, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgetpu_models.errors import ModelFileError
from edgetpu_models.tflite_reader import read_tflite
from tests.helpers.tflite_models import convert, tiny_keras


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("reader") / "tiny_int8.tflite"
    path.write_bytes(convert(tiny_keras(), int8=True, io="uint8"))
    return str(path)


def test_operators_and_options(tiny_int8):
    m = read_tflite(tiny_int8)
    assert m.subgraph_count == 1
    assert [op.opcode for op in m.operators] == ["QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN",
                                                 "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"]
    conv = m.operators[1]
    assert conv.options["stride_w"] == conv.options["stride_h"] == 2
    assert conv.options["padding"] == "SAME"
    assert conv.options["fused_activation_function"] == "RELU6"
    assert conv.options["dilation_w_factor"] == 1
    dw = m.operators[2]
    assert dw.options["depth_multiplier"] == 1 and dw.options["fused_activation_function"] == "NONE"
    assert m.op_counts()["QUANTIZE"] == 2
    # wiring: each op reads what the previous one wrote
    producers = m.producers()
    for op in m.operators[1:]:
        assert producers[op.inputs[0]] == op.index - 1


def test_tensors_shapes_dtypes_quantization(tiny_int8):
    m = read_tflite(tiny_int8)
    (inp,) = m.input_tensors()
    (out,) = m.output_tensors()
    assert inp.shape == inp.shape_signature == (1, 16, 16, 3)
    assert inp.dtype == "UINT8" and out.dtype == "UINT8" and out.shape == (1, 4)
    assert inp.scale and inp.scale[0] > 0 and inp.buffer_size == 0 and not inp.is_dynamic
    conv = m.operators[1]
    weights = m.tensor(conv.inputs[1])
    assert weights.shape == (8, 3, 3, 3) and weights.dtype == "INT8"
    assert weights.buffer_size == 8 * 3 * 3 * 3
    assert len(weights.scale) == 8  # per-channel
    bias = m.tensor(conv.inputs[2])
    assert bias.dtype == "INT32" and bias.buffer_size == 8 * 4
    assert m.buffer_bytes >= weights.buffer_size + bias.buffer_size


def test_bytes_and_path_give_the_same_model(tiny_int8):
    with open(tiny_int8, "rb") as f:
        data = f.read()
    a, b = read_tflite(tiny_int8), read_tflite(data)
    assert a.operators == b.operators and a.tensors == b.tensors
    assert b.source == "<bytes>" and a.source == tiny_int8


def test_dynamic_batch_shape_signature(tmp_path):
    m = read_tflite(convert(tiny_keras(batch=None), int8=False))
    (inp,) = m.input_tensors()
    assert inp.shape_signature[0] == -1 and inp.is_dynamic
    assert inp.dtype == "FLOAT32" and not inp.is_quantized


@pytest.mark.parametrize("content, words", [
    (b"", "only 0 bytes"),
    (b"hello world, this is not a model at all", "file identifier"),
    (b"\x00" * 4 + b"TFL3" + b"\xff" * 8, "truncated or corrupt"),
])
def test_garbage_is_one_line_error_naming_file(tmp_path, content, words):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as e:
        read_tflite(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and words in msg and "\n" not in msg


def test_truncated_file(tiny_int8, tmp_path):
    data = open(tiny_int8, "rb").read()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 400):
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="not a TFLite flatbuffer"):
            read_tflite(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        read_tflite(tmp_path / "nope.tflite")


def test_reader_does_not_import_tensorflow(tiny_int8):
    code = ("import sys; from edgetpu_models.tflite_reader import read_tflite; "
            f"m = read_tflite({tiny_int8!r}); assert len(m.operators) == 7; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_constant_values(tiny_int8):
    m = read_tflite(tiny_int8)
    mean = next(op for op in m.operators if op.opcode == "MEAN")
    assert m.constant(mean.inputs[1]).tolist() == [1, 2]  # global average pool reduces H and W
    fc = next(op for op in m.operators if op.opcode == "FULLY_CONNECTED")
    w = m.constant(fc.inputs[1])
    assert w.shape == (4, 8) and w.dtype.name == "int8" and w.any()
    assert m.constant(m.inputs[0]) is None  # activations have no value


def test_every_truncation_and_random_corruption_is_a_model_file_error(tiny_int8):
    """Cut at every byte: always ModelFileError. Random byte flips: parse or ModelFileError, never another error."""
    import random

    data = open(tiny_int8, "rb").read()
    for cut in range(len(data)):
        with pytest.raises(ModelFileError):
            read_tflite(data[:cut])
    rng = random.Random(0)
    for _ in range(500):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(8, len(b))] = rng.randrange(256)
        try:
            read_tflite(bytes(b))
        except ModelFileError:
            pass
