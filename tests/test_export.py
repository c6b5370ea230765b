"""int8 TFLite export: integer-only ops, uint8/int8 I/O, batch 1 static shape, metadata JSON + labels, atomic writes,
calibration rules, and that the file with its JSON is all inference needs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgetpu_models.deploy.edgetpu_check import check_tflite
from edgetpu_models.deploy.export import ExportError, export_tflite
from edgetpu_models.sidecar import require_sidecar
from edgetpu_models.spec import Normalization
from edgetpu_models.tflite_reader import read_tflite
from tests.helpers.tflite_models import tiny_keras

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

NORM = Normalization(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
LABELS = ["cat", "dog", "bird", "fish"]


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (uint8 pixel values as float), so ranges and classes are not all noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.float32)
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)


def _norm(pixels: np.ndarray) -> np.ndarray:
    return (pixels - np.float32(127.0)) / np.float32(128.0)


@pytest.fixture(scope="module")
def model():
    import tf_keras as keras

    keras.utils.set_random_seed(0)  # the same untrained weights every run
    m = tiny_keras(batch=None)  # a dynamic-batch Keras model: the export must still give batch 1
    fc = m.get_layer("fc")
    kernel, bias = fc.get_weights()
    fc.set_weights([kernel * 40.0, bias])  # confident (untrained) decisions, so int8 agreement is meaningful
    return m


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny.tflite"
    batches = [_norm(_pixels(20, seed=s)) for s in range(6)]  # 120 images in batches of 20
    return export_tflite(model, out, representative=batches, model_name="tiny", normalization=NORM, labels=LABELS)


def test_files_and_metadata_contract(exported):
    assert exported.calibration == "dataset" and exported.calibration_images == 120
    assert os.path.getsize(exported.path) == exported.size_bytes
    meta = require_sidecar(exported.path).to_dict()
    assert set(meta) == {"model", "input_size", "normalization", "input", "output", "labels", "calibration"}
    assert meta["model"] == "tiny" and meta["input_size"] == [16, 16] and meta["calibration"] == "dataset"
    assert meta["normalization"] == {"mean": [127.0] * 3, "std": [128.0] * 3}
    assert meta["input"]["dtype"] == "uint8" and meta["output"]["dtype"] == "uint8"
    assert meta["input"]["scale"] > 0 and 0 <= meta["input"]["zero_point"] <= 255
    assert meta["labels"] == "tiny.tflite.labels.txt" == os.path.basename(exported.labels_path)
    with open(exported.labels_path, encoding="utf-8") as f:
        assert f.read().splitlines() == LABELS
    assert sorted(os.listdir(os.path.dirname(exported.path))) == ["tiny.tflite", "tiny.tflite.json",
                                                                  "tiny.tflite.labels.txt"]


def test_integer_only_batch_one_and_edgetpu_mapped(exported):
    m = read_tflite(exported.path)
    assert {t.dtype for t in m.tensors} <= {"INT8", "UINT8", "INT32"}
    (inp,) = m.input_tensors()
    assert inp.shape == inp.shape_signature == (1, 16, 16, 3) and inp.dtype == "UINT8"
    assert check_tflite(exported.path).fully_mapped


def test_file_and_json_are_enough_for_inference(exported, model):
    """Quantize raw pixels with the JSON's parameters, run LiteRT, dequantize: same class as the float model."""
    from ai_edge_litert.interpreter import Interpreter

    meta = require_sidecar(exported.path).to_dict()
    interp = Interpreter(model_path=exported.path, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    mean, std = np.asarray(meta["normalization"]["mean"]), np.asarray(meta["normalization"]["std"])
    s_in, z_in = meta["input"]["scale"], meta["input"]["zero_point"]
    s_out, z_out = meta["output"]["scale"], meta["output"]["zero_point"]
    pixels = _pixels(40, seed=99)
    agree = clear = 0
    for img in pixels:
        q = np.clip(np.round(((img - mean) / std) / s_in + z_in), 0, 255).astype(np.uint8)
        interp.set_tensor(inp["index"], q[None])
        interp.invoke()
        probs = (interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
        ref = np.asarray(model(_norm(img[None]), training=False))
        assert np.abs(probs - ref).max() < 0.1
        top2 = np.sort(ref.ravel())[-2:]
        if top2[1] - top2[0] > 0.05:  # a clear float decision must survive int8 (near-ties may flip)
            clear += 1
            agree += int(np.argmax(probs) == np.argmax(ref))
    assert clear >= 10 and agree == clear


def test_int8_io_and_random_calibration(model, tmp_path):
    r = export_tflite(model, tmp_path / "r.tflite", io_dtype="int8", random_calibration=True, normalization=NORM)
    meta = require_sidecar(r.path).to_dict()
    assert r.calibration == "random" == meta["calibration"] and meta["labels"] is None and r.labels_path is None
    assert meta["input"]["dtype"] == "int8" and read_tflite(r.path).input_tensors()[0].dtype == "INT8"
    assert not os.path.exists(tmp_path / "r.tflite.labels.txt")


def test_float_export(model, tmp_path):
    r = export_tflite(model, tmp_path / "f.tflite", int8=False)
    meta = require_sidecar(r.path).to_dict()
    assert r.calibration is None and meta["input"] == {"dtype": "float32", "scale": None, "zero_point": None}
    assert not check_tflite(r.path).fully_mapped


@pytest.mark.parametrize("kwargs, words", [
    ({}, "needs calibration images"),
    ({"representative": [np.zeros((50, 16, 16, 3), np.float32)]}, "50 images, need at least 100"),
    ({"random_calibration": True, "labels": ["a", "b"]}, "2 names for a model with 4 outputs"),
    ({"random_calibration": True, "io_dtype": "float32"}, "io_dtype"),
    ({"representative": [np.zeros((120, 8, 8, 3), np.float32)]}, "expected float32 batches [N,16,16,3]"),
])
def test_bad_requests_write_nothing(model, tmp_path, kwargs, words):
    with pytest.raises(ExportError) as e:
        export_tflite(model, tmp_path / "x.tflite", **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []  # nothing half-written, no temp files


def test_out_must_be_tflite(model, tmp_path):
    with pytest.raises(ExportError, match="expected a .tflite"):
        export_tflite(model, tmp_path / "x.bin", random_calibration=True)


def test_cli_export_keras_file_random_calibration(model, tmp_path, capsys):
    from edgetpu_models.cli import main

    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "m.tflite"
    assert main(["export", str(path), "--random-calibration", "--io", "int8", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "RANDOM" in stdout and "Edge TPU: 5 of 5 ops mapped (100.0%)" in stdout
    meta = json.loads((tmp_path / "m.tflite.json").read_text())
    assert meta["calibration"] == "random" and meta["input"]["dtype"] == "int8"
    assert main(["export", str(path), "--out", str(tmp_path / "n.tflite")]) == 2
    err = capsys.readouterr().err
    assert "--random-calibration" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "n.tflite").exists()


def test_model_reference_brings_its_name_and_normalisation(tmp_path):
    spec = os.path.join(os.path.dirname(__file__), "data", "tiny_edgetpu_spec.yaml")
    r = export_tflite(spec, tmp_path / "spec.tflite", random_calibration=True)
    meta = require_sidecar(r.path).to_dict()
    assert meta["model"] == "tiny_edgetpu" and meta["input_size"] == [64, 64]
    assert meta["normalization"] == {"mean": [127.0] * 3, "std": [128.0] * 3}
