"""Segmentation: specs exact to tensorflow/models, finalisers, latency on every target, data readers, metrics, the
ignore-255 loss, and a small int8 export checked for the Edge TPU."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from edgetpu_models.cli import main
from edgetpu_models.errors import DatasetError, SpecError, UnknownModelError
from edgetpu_models.layer_graph import Op
from edgetpu_models.nas.latency.estimator import estimate
from edgetpu_models.seg_data import ade20k_32, list_segmentation_folder, load_segmentation, make_synthetic_segmentation
from edgetpu_models.seg_graph import FINALISERS, parse_finaliser, seg_zoo, segmentation_graph
from edgetpu_models.seg_train import confusion, scores
from edgetpu_models.spec import Normalization

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _param_check():
    spec = importlib.util.spec_from_file_location("seg_param_check", os.path.join(REPO, "tools", "seg_param_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_params_equal_tensorflow_models_analytic_count():
    reference = _param_check().reference_counts()
    assert set(reference) == set(seg_zoo())
    for name, count in reference.items():
        assert segmentation_graph(name).params == count, name


@pytest.mark.parametrize("name,stride", [("deeplabv3plus_mobilenet_edgetpu_v2_s", 16), ("autoseg_edgetpu_xs", 8)])
def test_logits_stride_and_finalisers(name, stride):
    assert segmentation_graph(name).output_shape == (512 // stride, 512 // stride, 32)
    for fin in FINALISERS[1:]:
        g = segmentation_graph(f"{name}@{fin}")
        assert g.output_shape == (512, 512)
        assert g.params == segmentation_graph(name).params  # a finaliser adds no weights
    ops = [layer.op for layer in segmentation_graph(f"{name}@resize256,argmax,resize512")][-3:]
    assert ops == [Op.RESIZE_BILINEAR, Op.ARGMAX, Op.RESIZE_NEAREST]


@pytest.mark.parametrize("bad", ["resize512,argmax,argmax", "resize7", "softmax", "resize512,"])
def test_bad_finaliser_names_the_rule(bad):
    with pytest.raises(SpecError, match="finaliser"):
        parse_finaliser(bad)


def test_unknown_and_bad_resolution_are_one_line_errors():
    with pytest.raises(UnknownModelError, match="not a segmentation model"):
        segmentation_graph("deeplab_nope@logits")
    with pytest.raises(SpecError, match="multiple of 32"):
        segmentation_graph("autoseg_edgetpu_s", resolution=500)


@pytest.mark.parametrize("target", ["coral-usb", "coral-devboard", "pixel4", "pixel6", "cpu"])
def test_estimate_every_model_and_finaliser(target):
    for name in seg_zoo():
        logits = estimate(name, target).latency_ms
        full = estimate(f"{name}@resize512,argmax", target).latency_ms
        cheap = estimate(f"{name}@argmax,resize512", target).latency_ms
        assert 0 < logits < full and cheap < full, (name, target)


def test_cli_profile_and_estimate(capsys):
    assert main(["profile", "autoseg_edgetpu_s@resize512,argmax", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == segmentation_graph("autoseg_edgetpu_s").params
    assert main(["estimate", "deeplabv3plus_mobilenet_edgetpu_v2_xs", "--target", "pixel6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0


def test_ade20k_mapping_ignores_other_and_rare_classes():
    m = np.array([[0, 1, 31], [32, 150, 5]], np.uint8)
    assert ade20k_32(m).tolist() == [[255, 1, 31], [255, 255, 5]]


def test_reader_skips_and_counts_bad_pairs(tmp_path):
    folder = make_synthetic_segmentation(tmp_path, count=5, size=48, seed=1)
    (tmp_path / "images" / "00000.png").write_bytes(b"not a png")                     # unreadable image
    Image.new("L", (10, 10)).save(tmp_path / "masks" / "00001.png")                  # mask of the wrong size
    Image.new("RGB", (48, 48)).save(tmp_path / "masks" / "00002.png")                # RGB mask
    os.remove(tmp_path / "masks" / "00003.png")                                       # no mask
    listed = list_segmentation_folder(tmp_path)
    assert len(folder) == 5 and len(listed) == 1 and len(listed.skipped) == 4
    assert len(list_segmentation_folder(tmp_path, limit=1)) <= 1
    x, y = load_segmentation(listed, 32, Normalization(), classes=4)
    assert x.shape == (1, 32, 32, 3) and set(np.unique(y)) <= {0, 1, 2, 3, 255}
    with pytest.raises(DatasetError, match="images/ and masks/"):
        list_segmentation_folder(tmp_path / "images")


def test_metrics_ignore_255():
    labels = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 0]])
    s = scores(confusion(labels, pred, 2))
    assert s.pixel_accuracy == pytest.approx(2 / 3)
    assert s.per_class_iou == pytest.approx((0.5, 0.5))
    assert s.miou == pytest.approx(0.5)


def test_loss_ignores_255():
    import tensorflow as tf

    from edgetpu_models.seg_train import masked_loss

    labels = tf.constant(np.array([[[0, 255], [1, 255]]], np.int32))
    logits = np.zeros((1, 2, 2, 3), np.float32)
    base = float(masked_loss(labels, tf.constant(logits)))
    logits[0, :, 1] = [9.0, -3.0, 4.0]  # changes only where the label is 255
    assert float(masked_loss(labels, tf.constant(logits))) == pytest.approx(base)
    assert base == pytest.approx(np.log(3.0), rel=1e-5)


def test_public_api_builds_the_spec_and_exports_int8(tmp_path):
    from edgetpu_models import segmentation
    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.export import export_tflite

    model = segmentation.AutosegEdgeTPUXS(classes=4, input_shape=(64, 64, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == segmentation_graph("autoseg_edgetpu_xs", 64, 4).params
    fused = segmentation.apply_finaliser(model, "resize32,argmax,resize64")
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    out = np.asarray(fused(x))
    assert out.shape == (1, 64, 64) and out.dtype == np.uint8
    small = np.asarray(segmentation.apply_finaliser(model, "resize32,argmax")(x))
    assert (out[0, ::2, ::2] == small[0]).all()  # nearest: each class index repeated 2 x 2
    res = export_tflite(fused, tmp_path / "seg.tflite", random_calibration=True,
                        normalization=segmentation.preprocess_normalization("autoseg_edgetpu_xs"))
    report = check_tflite(res.path)
    first = report.first_cpu_op
    assert first is not None and first.operator == "ARG_MAX"  # the Edge TPU has no ARG_MAX: the class-map tail
    assert all(o.on_edgetpu for o in report.ops[:first.index])  # runs on the CPU, everything before it maps
    _segment_and_score(res.path, tmp_path)


def _segment_and_score(tflite, tmp_path):
    """The exported fused model through the runner (no TensorFlow in `Segmenter`): class maps at the input size,
    overlays written by `segment`, and mIoU / pixel accuracy in range on a synthetic set."""
    from edgetpu_models import cli
    from edgetpu_models.deploy.segment import Segmenter, evaluate_segmentation
    from edgetpu_models.seg_data import make_synthetic_segmentation

    folder = make_synthetic_segmentation(tmp_path / "synth", count=4, size=96)
    image = folder.images[0]
    class_map = Segmenter(tflite).segment(image)
    assert class_map.shape == (64, 64) and class_map.dtype == np.uint8 and class_map.max() < 4
    assert cli.main(["segment", str(tflite), str(image), "--out", str(tmp_path / "seg_out")]) == 0
    stem = os.path.splitext(os.path.basename(str(image)))[0]
    assert (tmp_path / "seg_out" / f"{stem}_overlay.png").exists()
    ev = evaluate_segmentation(str(tflite), folder, 4)
    assert ev.images == 4 and 0.0 <= ev.int8_scores.miou <= 1.0 and 0.0 <= ev.int8_scores.pixel_accuracy <= 1.0
