"""`edgetpu-models demo`: every step runs and lands in one run folder, with the summary table (small settings here;
the full-size run is `make demo`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetpu_models import cli
from tests.helpers.train import digits_subset, tiny_spec

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset


def test_demo_runs_every_step_into_one_folder(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    data = digits_subset(tmp_path, classes=("0", "1", "7"), per_class=60)
    out = tmp_path / "run"
    code = cli.main(["demo", "--model", spec, "--data", data, "--out", str(out), "--resolution", "32",
                     "--epochs", "3", "--qat-epochs", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    for i, step in enumerate(("data", "train", "QAT", "export", "Edge TPU check", "latency estimate", "compile",
                              "classify", "benchmark", "summary"), start=1):
        assert f"[{i}/10] {step}:" in printed
    assert "compile: skipped: edgetpu_compiler is not installed" in printed
    for name in ("train/model.keras", "train/checkpoints/checkpoint", "model_qat.keras", "model_int8.tflite",
                 "model_int8.tflite.json", "model_int8.tflite.labels.txt", "model_qat.keras.json", "model_float.tflite",
                 "edgetpu_check.txt",
                 "latency_coral-usb.json", "classify.txt", "summary.txt", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["held_out_images"] == 36 and summary["classes"] == 3
    int8 = summary["int8"]
    assert int8["ops_total"] > 0 and int8["ops_on_edgetpu"] == int8["ops_total"]  # the tiny net maps fully
    assert int8["predicted_edgetpu_ms"] > 0 and int8["cpu_ms_median"] > 0
    assert int8["size_bytes"] < summary["float"]["size_bytes"]
    assert 0.0 <= int8["top1"] <= 1.0 and summary["float"]["top1"] > 0.5
    table = (out / "summary.txt").read_text()
    for row in ("top-1 (held-out)", "TFLite file size", "ops on Edge TPU", "predicted Edge TPU ms", "measured CPU ms"):
        assert row in table and row in printed
    # the held-out images were classified by the int8 file on the CPU interpreter, one row each
    assert len((out / "classify.txt").read_text().strip().splitlines()) == 2 + 10

    # `evaluate` on the demo's two files, its held-out split: the demo's own top-1, exactly, and their agreement
    files = [str(out / "model_float.tflite"), str(out / "model_int8.tflite")]
    assert cli.main(["evaluate", *files, "--data", data, "--split", "val", "--batch", "8", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["images"] == summary["held_out_images"]
    assert [m["top1"] for m in ev["models"]] == [summary["float"]["tflite_top1"], int8["top1"]]
    (comparison,) = ev["comparisons"]
    from edgetpu_models.metrics import top1_agreement

    agree = np.mean(top1_agreement(*_predictions(files, data)))  # ties shared at random, as evaluate counts them
    assert comparison["agreement"] == pytest.approx(agree)
    assert cli.main(["evaluate", *files, "--data", data, "--split", "val"]) == 0
    assert "agreement (same top-1)" in capsys.readouterr().out

    # a finished run folder is not overwritten
    assert cli.main(["demo", "--model", spec, "--data", data, "--out", str(out)]) == 1  # the job failed (not usage)
    assert "holds a finished demo run already" in capsys.readouterr().err


def _predictions(files, data):
    """Scores [images, classes] of the held-out images per model, one image at a time through `Classifier` (the demo's
    scorer)."""
    from edgetpu_models.data import load_image_folder
    from edgetpu_models.deploy.classify import Classifier

    out = []
    for path in files:
        clf = Classifier(path)
        held_out = load_image_folder(data, clf.size[0], clf.normalization, validation_split=0.2, seed=0).val
        rows = [sorted(clf.classify(x, top_k=len(clf.labels)).predictions, key=lambda p: p.index)
                for images, _ in held_out for x in images.numpy()]
        out.append(np.array([[p.score for p in row] for row in rows]))
    return out
