"""Quantization: BN folding as the converter folds, QAT wrap/train/save/load/export, PTQ calibration set rules, the
per-layer int8 error report, and the quantize / quant-report / export CLI chain on a small spec."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgetpu_models.errors import DatasetError

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

TINY_SPEC = os.path.join(os.path.dirname(__file__), "data", "tiny_edgetpu_spec.yaml")


def _randomize_bn(model, seed=0):
    import tf_keras as keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.5, 2.0, n)])


@pytest.fixture(scope="module")
def tiny_model():
    from edgetpu_models.builder import build_model

    model = build_model(TINY_SPEC, classes=10, classifier_activation=None)
    _randomize_bn(model)
    return model


def test_fold_batch_norms_is_exact(tiny_model):
    import tf_keras as keras

    from edgetpu_models.quantize.qat import fold_batch_norms

    folded = fold_batch_norms(tiny_model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    n_bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in tiny_model.layers)
    assert len(folded.layers) == len(tiny_model.layers) - n_bn
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    ref = np.asarray(tiny_model(x, training=False))
    assert np.abs(np.asarray(folded(x, training=False)) - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    dw = folded.get_layer("blocks_1_0_conv_dw")  # depthwise kernels fold per channel too
    assert dw.use_bias and dw.bias.shape == (dw.depthwise_kernel.shape[2],)


def test_qat_wraps_trains_round_trips_and_exports(tiny_model, tmp_path):
    import tensorflow as tf

    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.model_io import is_qat_model, load_keras, save_model
    from edgetpu_models.quantize.qat import quantize_model
    from edgetpu_models.sidecar import Sidecar

    qat = quantize_model(tiny_model)
    assert is_qat_model(qat) and not is_qat_model(tiny_model)
    assert not any("bn" in layer.name for layer in qat.layers)  # folded before wrapping
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 64, 64, 3)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    from edgetpu_models.quantize.qat import qat_finetune

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    before = [w.numpy().copy() for w in qat.trainable_weights]
    ckpt = tmp_path / "ckpt"
    first = qat_finetune(qat, ds, 2, progress=False, checkpoint_dir=ckpt, checkpoint_every=1)
    assert np.isfinite(first["loss"]) and first["steps_done"] == 2 and first["resumed_from"] == 0
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, qat.trainable_weights))
    # a fresh process would rebuild the wrapped model and find the checkpoint: it continues at step 2
    restarted = quantize_model(tiny_model)
    again_stats = qat_finetune(restarted, ds, 2, progress=False, checkpoint_dir=ckpt)
    assert again_stats["resumed_from"] == 2 and again_stats["steps_done"] == 2 and "loss" not in again_stats
    for a, b in zip(restarted.weights, qat.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    stats = qat_finetune(restarted, ds, 3, progress=False, checkpoint_dir=ckpt)
    assert stats["resumed_from"] == 2 and stats["steps_done"] == 3 and np.isfinite(stats["loss"])
    qat = restarted
    path = tmp_path / "qat.keras"
    save_model(qat, path, Sidecar(model="tiny"))
    again = load_keras(path)
    assert is_qat_model(again)
    np.testing.assert_allclose(np.asarray(again(x[:4], training=False)), np.asarray(qat(x[:4], training=False)),
                               atol=1e-6)
    r = export_tflite(again, tmp_path / "qat.tflite", representative=[x, x, x, x], model_name="tiny")
    report = check_tflite(r.path)
    assert report.fully_mapped, report.format()


def test_calibration_set_needs_100_real_images(tmp_path):
    from PIL import Image

    from edgetpu_models.quantize.ptq import calibration_set
    from edgetpu_models.spec import Normalization

    for c in ("a", "b"):
        os.makedirs(tmp_path / c)
        for i in range(30):
            Image.new("RGB", (20, 20), (i * 8, 100, 50)).save(tmp_path / c / f"{i}.png")
    with pytest.raises(DatasetError, match="60 readable images, post-training quantization needs at least 100"):
        calibration_set(str(tmp_path), 32, Normalization())


def test_calibration_set_from_default_dataset():
    from edgetpu_models.data import default_dataset_dir
    from edgetpu_models.quantize.ptq import calibration_set
    from edgetpu_models.spec import Normalization

    cal = calibration_set(default_dataset_dir(), 32, Normalization(), count=120)
    batches = list(cal)
    images = np.concatenate(batches)
    assert images.shape == (120, 32, 32, 3) and images.dtype == np.float32
    assert -1.0 <= images.min() < -0.5 and 0.5 < images.max() <= 1.0  # normalised real pixels, not noise
    assert len(list(cal)) == len(batches)  # iterable again (converter and debugger both walk it)


def test_keras_layer_names_from_tflite_tensor_names():
    from edgetpu_models.quantize.report import keras_layer_of

    names = ["stem_conv", "stem_conv_relu", "blocks_0_0_conv_pwl", "classifier"]
    assert keras_layer_of("m/stem_conv_relu/Relu;m/stem_conv/Conv2D", names) == "stem_conv"
    assert keras_layer_of("m/blocks_0_0_conv_pwl/Conv2D1", names) == "blocks_0_0_conv_pwl"
    assert keras_layer_of("m/classifier/MatMul;m/classifier/BiasAdd", names) == "classifier"
    assert keras_layer_of("unrelated", names) == "unrelated"


def test_quant_report_names_worst_layers(tiny_model):
    from edgetpu_models.quantize.report import ROUNDING_FLOOR, quantization_report

    rng = np.random.default_rng(0)
    images = [rng.normal(size=(8, 64, 64, 3)).astype(np.float32) for _ in range(2)]
    r = quantization_report(tiny_model, images, images=12)
    layer_names = {layer.name for layer in tiny_model.layers}
    assert r.images == 12 and 0.0 <= r.top1_agreement <= 1.0
    assert len(r.layers) >= 10 and all(e.layer in layer_names for e in r.layers)
    worst = r.worst(3)
    assert worst[0].rmse_per_scale >= worst[1].rmse_per_scale >= worst[2].rmse_per_scale
    assert all(e.rmse_per_scale >= 0.5 * ROUNDING_FLOOR for e in r.layers if e.scale > 0)
    text = r.format(3)
    assert worst[0].layer in text and "top-1 agreement" in text


class _Run:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def test_cli_quantize_then_export_then_report(tmp_path, capsys):
    """In-process (TensorFlow is loaded once); the commands' exit codes and output are what a shell sees."""
    from edgetpu_models.cli import main
    from edgetpu_models.data import default_dataset_dir

    def _cli(*args: str) -> _Run:
        code = main(list(args))
        out = capsys.readouterr()
        return _Run(code, out.out, out.err)

    data = default_dataset_dir()
    out = tmp_path / "tiny_qat.keras"
    r = _cli("quantize", TINY_SPEC, "--data", data, "--qat-steps", "3", "--batch-size", "8", "--no-progress",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists() and "validation accuracy (fake-quantized)" in r.stdout
    assert not (tmp_path / "tiny_qat.keras.ckpt").exists()  # checkpoints go once the model is written
    meta = json.loads((tmp_path / "tiny_qat.keras.json").read_text())  # the sidecar beside the .keras
    labels = (tmp_path / meta["labels"]).read_text().split()
    assert labels == [str(i) for i in range(10)] and meta["normalization"]["mean"] == [127.0] * 3
    tfl = tmp_path / "tiny_qat.tflite"
    r = _cli("export", str(out), "--data", data, "--calibration-images", "100", "--out", str(tfl))
    assert r.returncode == 0, r.stderr
    assert "calibration: 100 real images" in r.stdout and "(100.0%)" in r.stdout
    assert (tmp_path / "tiny_qat.keras.labels.txt").read_text().split() == [str(i) for i in range(10)]
    r = _cli("quant-report", TINY_SPEC, "--data", data, "--images", "8", "--calibration-images", "100", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["images"] == 8 and len(report["worst"]) == 5
    bad = _cli("quantize", TINY_SPEC, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x.keras"))
    assert bad.returncode == 1 and "missing" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
