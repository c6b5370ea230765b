"""The zoo CLI: list/profile/build output and one-line errors with a non-zero exit."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from edgetpu_models.cli import main
from edgetpu_models.zoo import searched_archs_dir


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgetpu_models.cli", *args], capture_output=True, text=True)


def test_list_prints_exact_counts(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for figure in ("5,438,392", "1,788,731,008", "6,899,496", "3,013,321,088", "10,589,712", "7,936,082,848",
                   "4,091,432", "990,669,184"):
        assert figure in out


def test_profile_json_totals(capsys):
    assert main(["profile", "efficientnet_edgetpu_m", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["params"], data["macs"]) == (6_899_496, 3_013_321_088)
    assert data["layers"][0] == {"name": "stem_conv", "op": "conv2d", "kernel": 3, "stride": 2,
                                 "output_shape": [120, 120, 32], "params": 928, "macs": 12_441_600}


@pytest.mark.slow  # converts or builds full-size models
def test_build_writes_keras_file(tmp_path, capsys):
    out = tmp_path / "tiny.keras"
    assert main(["build", "mobilenet_edgetpu", "--resolution", "64", "--classes", "4", "--out", str(out)]) == 0
    assert out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    import tf_keras as keras

    model = keras.models.load_model(out)
    assert model.output_shape == (None, 4)


def _bad_spec(tmp_path, **stage_changes):
    with open(os.path.join(searched_archs_dir(), "mobilenet_edgetpu.yaml")) as f:
        data = yaml.safe_load(f)
    data["stages"][2].update(stage_changes)
    data["stages"][2] = {k: v for k, v in data["stages"][2].items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("changes, expected", [
    ({"block": "mbconv_se"}, "stages[2].block: expected one of fused_ibn, ibn, conv, got 'mbconv_se'"),
    ({"stride": -2}, "stages[2].stride: expected 1 or 2, got -2"),
    ({"expansion": None}, "stages[2].expansion: missing field"),
])
def test_bad_spec_is_one_line_error(tmp_path, changes, expected):
    path = _bad_spec(tmp_path, **changes)
    for command in ("profile", "build"):
        result = run_cli(command, path)
        assert result.returncode == 1  # a bad file: the job failed
        assert result.stdout == ""
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert f"{path}: {expected}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, expected, code", [
    (["profile", "resnet9000"], "resnet9000: not a zoo model", 2),
    (["build", "efficientnet_edgetpu_s", "--out", "model.onnx"], "expected a .keras or .h5 file name", 2),
    (["profile", "efficientnet_edgetpu_s", "--resolution", "abc"], "expected an integer from 32 to 4096, got 'abc'", 2),
    (["profile", "efficientnet_edgetpu_s", "--resolution", "16"], "expected an integer from 32 to 4096, got '16'", 2),
    (["profile", "efficientnet_edgetpu_s", "--variant", "XXL"], "no variant 'XXL'", 1),
    (["frobnicate"], "invalid choice: 'frobnicate'", 2),
])
def test_cli_errors_are_one_line(args, expected, code):
    result = run_cli(*args)
    assert result.returncode == code
    assert expected in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
