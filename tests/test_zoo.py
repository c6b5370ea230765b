"""The zoo models: exact parameter and MAC counts, the profiler agreeing with the built Keras models, keras.applications
head arguments, and the timm cross-implementation test vector."""

import os

import numpy as np
import pytest

from edgetpu_models import WeightsError, build_model, efficientnet_edgetpu, mobilenet_edgetpu, profile

EXPECTED = {  # ../shared/reference/architectures.md (classes=1000, default resolution)
    "efficientnet_edgetpu_s": (224, 5_438_392, 1_788_731_008),
    "efficientnet_edgetpu_m": (240, 6_899_496, 3_013_321_088),
    "efficientnet_edgetpu_l": (300, 10_589_712, 7_936_082_848),
    "mobilenet_edgetpu": (224, 4_091_432, 990_669_184),
}


def keras_counts(model):
    """Trainable params and MACs counted from the Keras layers themselves (independently of the profiler)."""
    params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c = layer.output.shape
            k = layer.kernel_size
            macs += h * w * c * k[0] * k[1] * layer.input.shape[-1]
        elif kind == "DepthwiseConv2D":
            _, h, w, c = layer.output.shape
            k = layer.kernel_size
            macs += h * w * c * k[0] * k[1]
        elif kind == "Dense":
            macs += layer.input.shape[-1] * layer.units
    return params, macs


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_are_exact_in_profiler_and_keras(name):
    resolution, params, macs = EXPECTED[name]
    graph = profile(name)
    assert graph.input_shape == (resolution, resolution, 3)
    assert (graph.params, graph.macs) == (params, macs)
    model = build_model(name)
    assert model.input_shape == (None, resolution, resolution, 3)
    assert keras_counts(model) == (params, macs)
    # per layer: every profiled conv/dense has a Keras layer of the same name, output shape and parameter count
    by_name = {layer.name: layer for layer in model.layers}
    for layer in graph:
        if layer.op in ("conv2d", "depthwise_conv2d", "dense"):
            k = by_name[layer.name]
            assert tuple(k.output.shape[1:]) == layer.output_shape, layer.name
            own = int(sum(np.prod(w.shape) for w in k.trainable_weights))
            bn = by_name[layer.batch_norm] if layer.batch_norm else None
            own += int(sum(np.prod(w.shape) for w in bn.trainable_weights)) if bn else 0
            assert own == layer.params, layer.name


def test_mobilenet_depth_multiplier_075_published_size():
    graph = profile("mobilenet_edgetpu_075", classes=1001)
    assert 2.9e6 <= graph.params < 3.0e6 and round(graph.macs / 1e6) == 624  # slim: "2.9M params, 624M MACs"


@pytest.mark.slow  # converts or builds full-size models
def test_other_resolution_headless_and_pooling():
    m = efficientnet_edgetpu.EfficientNetEdgeTPUS(include_top=False, input_shape=(160, 192, 3))
    assert m.output_shape == (None, 5, 6, 1280)
    assert profile("efficientnet_edgetpu_s", include_top=False).output_shape == (7, 7, 1280)
    for pooling in ("avg", "max"):
        m = mobilenet_edgetpu.MobilenetEdgeTPU(include_top=False, pooling=pooling, input_shape=(96, 96, 3))
        assert m.output_shape == (None, 1280)
        assert type(m.layers[-1]).__name__ == ("GlobalAveragePooling2D" if pooling == "avg" else "GlobalMaxPooling2D")
    m = build_model("efficientnet_edgetpu_m", classes=7, resolution=128, classifier_activation=None)
    assert m.input_shape == (None, 128, 128, 3) and m.output_shape == (None, 7)
    assert m.layers[-1].get_config()["activation"] == "linear"
    out = m(np.zeros((2, 128, 128, 3), np.float32), training=False)
    assert out.shape == (2, 7)


def test_input_tensor_and_drop_connect_layers():
    import tf_keras as keras

    inp = keras.Input((64, 64, 3))
    m = efficientnet_edgetpu.EfficientNetEdgeTPUS(input_tensor=inp, classes=3)
    assert m.inputs[0] is inp and m.output_shape == (None, 3)
    drops = [layer for layer in m.layers if layer.name.endswith("_drop")]
    assert drops and all(layer.noise_shape == (None, 1, 1, 1) for layer in drops)
    # drop-connect is the identity at inference
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(m(x, training=False), m(x, training=False))


def test_preprocess_input():
    x = np.array([[0.0, 127.0, 255.0]], np.float32)
    np.testing.assert_allclose(efficientnet_edgetpu.preprocess_input(x), (x - 127.0) / 128.0)
    np.testing.assert_allclose(mobilenet_edgetpu.preprocess_input(x), x / 127.5 - 1.0, atol=1e-7)


def test_timm_test_vector_reproduces_logits(shared_dir):
    vec = np.load(os.path.join(shared_dir, "testdata", "tf_efficientnet_es.npz"))
    model = efficientnet_edgetpu.EfficientNetEdgeTPUS(
        weights=os.path.join(shared_dir, "testdata", "tf_efficientnet_es.safetensors"), classifier_activation=None)
    logits = model(vec["input_nhwc"], training=False).numpy()
    scale = np.abs(vec["logits"]).max()
    assert np.abs(logits - vec["logits"]).max() <= 1e-4 * scale
    assert (logits.argmax(1) == vec["logits"].argmax(1)).all()


@pytest.mark.slow  # converts or builds full-size models
def test_mismatched_weights_name_the_first_offending_tensor(shared_dir, tmp_path):
    path = os.path.join(shared_dir, "testdata", "tf_efficientnet_es.safetensors")
    with pytest.raises(WeightsError, match=r"tensor 'conv_stem.weight' has shape \(32, 3, 3, 3\)"):
        efficientnet_edgetpu.EfficientNetEdgeTPUL(weights=path)  # L has a 40-channel stem
    with pytest.raises(WeightsError, match="classifier.weight' has shape"):
        efficientnet_edgetpu.EfficientNetEdgeTPUS(weights=path, classes=10)
    with pytest.raises(WeightsError, match="no such weights file"):
        efficientnet_edgetpu.EfficientNetEdgeTPUS(weights=str(tmp_path / "nothing.safetensors"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="garbage.safetensors: not a readable safetensors file"):
        efficientnet_edgetpu.EfficientNetEdgeTPUS(weights=str(garbage))
    with pytest.raises(WeightsError, match="no published ImageNet checkpoint"):
        mobilenet_edgetpu.MobilenetEdgeTPU(weights="imagenet")


def test_h5_weights_round_trip(tmp_path):
    a = build_model("mobilenet_edgetpu", resolution=64, classes=5)
    path = str(tmp_path / "m.weights.h5")
    a.save_weights(path)
    b = build_model("mobilenet_edgetpu", resolution=64, classes=5, weights=path)
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(a(x, training=False), b(x, training=False), rtol=1e-6)


def test_imagenet_weights_offline_fails_at_once_with_a_hint(monkeypatch, tmp_path):
    import socket

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(WeightsError, match=r"cannot reach huggingface.co \(offline\?\).*pass it as weights="):
        efficientnet_edgetpu.EfficientNetEdgeTPUS(weights="imagenet")


def test_imagenet_weights_come_from_the_keras_cache(monkeypatch, tmp_path, shared_dir):
    import shutil

    (tmp_path / "models").mkdir()
    shutil.copy(os.path.join(shared_dir, "testdata", "tf_efficientnet_es.safetensors"),
                tmp_path / "models" / "tf_efficientnet_es.in1k.safetensors")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    model = efficientnet_edgetpu.EfficientNetEdgeTPUS(weights="imagenet", classifier_activation=None)
    vec = np.load(os.path.join(shared_dir, "testdata", "tf_efficientnet_es.npz"))
    np.testing.assert_allclose(model(vec["input_nhwc"][:1], training=False).numpy(), vec["logits"][:1],
                               atol=1e-4 * np.abs(vec["logits"]).max())
