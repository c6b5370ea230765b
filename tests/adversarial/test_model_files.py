"""Model files as an attacker writes them: code in a Keras file, a flatbuffer that reuses its tables, a sidecar that
points outside the model's folder, an export whose last file cannot be written."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.crafted import reused_table_tflite

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset


@pytest.fixture(scope="module")
def evil_h5(tmp_path_factory):
    """An .h5 whose Lambda layer, when deserialised, creates a marker file."""
    import tf_keras as keras

    folder = tmp_path_factory.mktemp("evil")
    marker = folder / "code_ran"
    i = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t, m=str(marker): (open(m, "w").close(), t)[1])(i)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = folder / "evil.h5"
    keras.Model(i, x).save(path)
    if marker.exists():
        marker.unlink()  # saving traced the function once; what matters is what loading does
    return path, marker


@pytest.mark.parametrize("command", ["estimate", "export", "quantize"])
def test_no_code_runs_from_a_keras_file(evil_h5, command, tmp_path):
    path, marker = evil_h5
    extra = {"export": ["--random-calibration", "--out", str(tmp_path / "x.tflite")],
             "quantize": ["--data", str(tmp_path), "--out", str(tmp_path / "q.keras")]}.get(command, [])
    result = run_cli(command, str(path), *extra)
    assert_one_line_error(result, "evil.h5", "Lambda", "--trust-model-code")
    assert not marker.exists(), "code from the model file ran"
    assert not (tmp_path / "x.tflite").exists()


def test_unknown_custom_object_is_refused(tmp_path):
    import h5py

    from edgetpu_models.errors import ModelFileError
    from edgetpu_models.model_io import load_keras

    path = tmp_path / "custom.h5"
    config = {"class_name": "Functional", "config": {"layers": [{"class_name": "EvilLayer", "config": {}}]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ModelFileError, match="custom object 'EvilLayer'.*--trust-model-code"):
        load_keras(path)


def test_trusting_the_file_loads_it(evil_h5):
    from edgetpu_models.model_io import load_keras, trusting_model_code

    path, marker = evil_h5
    with trusting_model_code():
        model = load_keras(path)
    assert model.layers[1].__class__.__name__ == "Lambda"


def test_flatbuffer_reusing_one_table_is_bounded_work(tmp_path):
    path = tmp_path / "reused.tflite"
    path.write_bytes(reused_table_tflite(2000))
    assert path.stat().st_size < 32_000
    result = run_cli("check", str(path))  # unbounded work would hit the suite's hang guard (time_bound)
    assert_one_line_error(result, "reused.tflite", "repeat far more data than the file holds")


def test_reused_table_reader_budget_leaves_real_models_alone():
    from edgetpu_models.tflite_reader import read_tflite
    from tests.helpers.tflite_models import convert, tiny_keras

    m = read_tflite(convert(tiny_keras()))
    assert m.operators and m.tensors


def test_sidecar_cannot_name_a_file_outside_the_models_folder(tmp_path):
    from edgetpu_models.errors import ModelFileError
    from edgetpu_models.sidecar import read_sidecar

    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.tflite").write_bytes(b"x")
    for name in (str(secret), "../secret.txt", "sub/../../secret.txt"):
        (folder / "m.tflite.json").write_text(json.dumps({"model": "m", "normalization": {"mean": [0, 0, 0],
                                                                                   "std": [1, 1, 1]},
                                                   "labels": name}))
        with pytest.raises(ModelFileError, match="'labels' must name a file in the model's folder"):
            read_sidecar(folder / "m.tflite")
    (folder / "m.tflite.json").write_text(json.dumps({"model": 5, "normalization": {}}))
    with pytest.raises(ModelFileError, match="'model' must be a string"):
        read_sidecar(folder / "m.tflite")


def test_export_writes_model_and_sidecars_as_one_unit(tmp_path):
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.errors import EdgeTPUModelsError
    from tests.helpers.tflite_models import tiny_keras

    out = tmp_path / "X.tflite"
    out.mkdir()  # the model file's name is taken by a folder: the last write must fail
    with pytest.raises(EdgeTPUModelsError, match="X.tflite"):
        export_tflite(tiny_keras(), out, random_calibration=True, labels=["a", "b", "c", "d"])
    assert sorted(os.listdir(tmp_path)) == ["X.tflite"]  # no X.tflite.json / X.tflite.labels.txt beside it
