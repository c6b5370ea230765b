"""MobilenetEdgeTPU-V2: exact counts of every variant, the grouped fused block (spec validation, Keras build, weights
from timm, costing), per-variant input normalisation, and the V1 depth multipliers 1.25 / 1.75."""

import copy
import os

import numpy as np
import pytest
import yaml

from edgetpu_models import SpecError, build_model, mobilenet_edgetpu_v2, profile, spec_from_dict
from edgetpu_models.builder import GROUPED_CONV_LOWERING
from edgetpu_models.layer_graph import lowered
from edgetpu_models.zoo import searched_archs_dir
from tests.test_zoo import keras_counts

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
V2 = os.path.join(searched_archs_dir(), "mobilenet_edgetpu_v2.yaml")

EXPECTED = {  # 224 x 224, 1000 classes: trainable params, MACs (timm's definitions; Tiny: tensorflow/models')
    "mobilenet_edgetpu_v2_tiny": (3_761_448, 512_448_000),
    "mobilenet_edgetpu_v2_xs": (4_459_880, 688_214_528),
    "mobilenet_edgetpu_v2_s": (5_986_456, 1_198_002_688),
    "mobilenet_edgetpu_v2_m": (8_462_888, 1_835_637_440),
    "mobilenet_edgetpu_v2_l": (10_921_640, 2_530_786_432),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_profiler_counts_are_exact(name):
    graph = profile(name)
    assert graph.input_shape == (224, 224, 3)
    assert (graph.params, graph.macs) == EXPECTED[name]


def test_grouped_layers_of_l_use_groups_of_128():
    graph = profile("mobilenet_edgetpu_v2_l")
    exp = {layer.name: layer for layer in graph}["blocks_1_1_conv_exp"]  # 64 -> 256 channels, 3x3, gs 128
    assert exp.groups == 2 and exp.params == 3 * 3 * 32 * 256 + 2 * 256


@pytest.mark.parametrize("name", ["mobilenet_edgetpu_v2_tiny", "mobilenet_edgetpu_v2_xs"])
def test_keras_model_has_the_same_counts(name):
    model = build_model(name)
    assert keras_counts(model) == EXPECTED[name]
    kinds = {type(layer).__name__ for layer in model.layers}
    assert GROUPED_CONV_LOWERING == "split" and "TFOpLambda" in kinds and "Concatenate" in kinds
    assert not any(getattr(layer, "groups", 1) > 1 for layer in model.layers)  # no native grouped Conv2D


def test_timm_vector_xs_reproduces_logits():
    """timm's mobilenet_edgetpu_v2_xs with random float16-exact weights (tools/timm_crosscheck.py make --half)."""
    vec = np.load(os.path.join(DATA, "mobilenet_edgetpu_v2_xs.npz"))
    model = mobilenet_edgetpu_v2.MobilenetEdgeTPUV2XS(
        weights=os.path.join(DATA, "mobilenet_edgetpu_v2_xs.safetensors"), classifier_activation=None,
        input_shape=tuple(vec["input_nhwc"].shape[1:]))
    logits = model(vec["input_nhwc"], training=False).numpy()
    assert np.abs(logits - vec["logits"]).max() <= 1e-4 * np.abs(vec["logits"]).max()


def _v2():
    with open(V2) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["stages"][2].update(group_size=0), r"stages\[2\].group_size: expected an integer from 1 to 100000"),
    (lambda d: d["stages"][2].update(group_size="64"), r"stages\[2\].group_size: expected an integer from 1 to 100000"),
    (lambda d: d["stages"][9].update(group_size=64), r"stages\[9\].group_size: only a fused_ibn block"),
    (lambda d: d["stages"][0].update(continue_stage=True), r"stages\[0\].continue_stage"),
    (lambda d: d["variants"]["m"].update(stage_filters=[1, 2]), r"variants.m.stage_filters: expected 7 widths"),
    (lambda d: d.update(padding="reflect"), r"padding: expected one of same, symmetric"),
])
def test_invalid_v2_fields_are_named(mutate, message):
    data = _v2()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        profile(spec_from_dict(data, source="v2.yaml"))


def test_group_size_that_does_not_divide_is_named():
    data = _v2()
    data["stages"][2]["group_size"] = 100  # 48 * 4 = 192 expansion channels
    with pytest.raises(SpecError, match=r"v2.yaml: stages\[2\].group_size: the expansion width 192 is not a multiple"):
        profile(spec_from_dict(data, source="v2.yaml"), "s")


def test_spec_round_trips_with_variant_overrides():
    from edgetpu_models.spec import load_spec

    spec = load_spec(V2)
    again = spec_from_dict(copy.deepcopy(spec.to_dict()))
    for v in spec.variants:
        assert profile(again, v).macs == profile(spec, v).macs


def test_costing_sees_groups_split_and_concat():
    graph = profile("mobilenet_edgetpu_v2_s")
    low = lowered(graph)
    assert (low.params, low.macs) == (graph.params, graph.macs)
    names = {layer.name: layer for layer in low}
    assert names["blocks_1_1_conv_exp_split"].op == "split" and names["blocks_1_1_conv_exp"].op == "concat"
    g0 = names["blocks_1_1_conv_exp_g0"]  # 48 -> 192 in 3 groups of 64: each 16 inputs
    assert g0.input_shape[-1] == 16 and g0.out_channels == 64 and g0.groups == 1
    assert names["stem_conv_pad"].op == "pad"  # symmetric (timm) padding of the strided 5x5 stem

    from edgetpu_models.nas.latency import apm
    from edgetpu_models.nas.latency import estimator as latency
    from edgetpu_models.nas.latency.targets import load_target

    c = load_target("coral-usb").constants
    # a grouped conv costs what its per-group convs cost, not the full conv of the same shape
    exp = {layer.name: layer for layer in graph}["blocks_1_1_conv_exp"]
    full = apm.layer_terms(exp.__class__(**{**exp.__dict__, "groups": 1}), c)
    assert apm.layer_terms(g0, c)[0] * 3 == exp.macs < full[0]
    est = latency.estimate("mobilenet_edgetpu_v2_s", "coral-usb")
    assert {"blocks_1_1_conv_exp_g2", "blocks_1_1_conv_exp_split"} <= {r.name for r in est.layers}


def test_preprocess_input_per_variant():
    x = np.array([[0.0, 127.5, 255.0]], np.float32)
    np.testing.assert_allclose(mobilenet_edgetpu_v2.preprocess_input(x, variant="m"), x / 127.5 - 1.0, atol=1e-6)
    s = mobilenet_edgetpu_v2.preprocess_input(np.full((1, 3), 255.0, np.float32), variant="s")
    np.testing.assert_allclose(s, [[(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]], rtol=1e-5)
    with pytest.raises(SpecError, match="variant: expected one of tiny, xs, s, m, l"):
        mobilenet_edgetpu_v2.preprocess_input(x, variant="xl")
    from edgetpu_models.model_io import open_model

    assert open_model("mobilenet_edgetpu_v2_m", resolution=32).normalization.mean == (127.5, 127.5, 127.5)


def test_only_m_has_imagenet_weights():
    from edgetpu_models import WeightsError
    from edgetpu_models.weights import HF_URL, imagenet_cache_path
    from edgetpu_models.zoo import ZOO

    e = ZOO["mobilenet_edgetpu_v2_m"]
    assert HF_URL.format(name=e.timm_name, tag=e.timm_tag).endswith(
        "timm/mobilenet_edgetpu_v2_m.ra4_e3600_r224_in1k/resolve/main/model.safetensors")
    assert imagenet_cache_path("mobilenet_edgetpu_v2_m").endswith(
        "mobilenet_edgetpu_v2_m.ra4_e3600_r224_in1k.safetensors")
    with pytest.raises(WeightsError, match="no published ImageNet checkpoint for mobilenet_edgetpu_v2_s"):
        mobilenet_edgetpu_v2.MobilenetEdgeTPUV2S(weights="imagenet")


def test_v1_depth_multipliers_scale_the_head():
    from edgetpu_models import mobilenet_edgetpu

    assert profile("mobilenet_edgetpu_125").output_shape == (1000,)
    heads = {n: {layer.name: layer for layer in profile(n)}["head_conv"].out_channels
             for n in ("mobilenet_edgetpu_075", "mobilenet_edgetpu_125", "mobilenet_edgetpu_175")}
    assert heads == {"mobilenet_edgetpu_075": 1280, "mobilenet_edgetpu_125": 1600, "mobilenet_edgetpu_175": 2240}
    m = mobilenet_edgetpu.MobilenetEdgeTPU(depth_multiplier=1.75, input_shape=(64, 64, 3), include_top=False)
    assert m.output_shape == (None, 2, 2, 2240)


def test_search_space_grouped_fused_block_behind_its_decision():
    import random

    from edgetpu_models.nas.search.space import load_space

    default = load_space()
    assert not any(d.key == "group_size" for d in default.decisions)  # off unless a space lists it
    space = load_space(os.path.join(os.path.dirname(default.source), "search_space_grouped.yaml"))
    assert any(d.key == "group_size" for d in space.decisions)
    rng = random.Random(3)
    grouped = 0
    for _ in range(40):
        point = tuple(rng.randrange(n) for n in space.sizes)
        spec = space.decode(point)
        graph = profile(spec)  # every point is a valid spec: group sizes that do not divide decode to full convs
        grouped += any(layer.groups > 1 for layer in graph)
        assert space.decode(space.encode(spec), template=spec, name=spec.name) == spec
    assert grouped > 0
    assert space.encode("efficientnet_edgetpu_s")  # the published models stay points of the grouped space


def test_pixel6_is_fitted_to_v1_and_estimates_every_v2_variant():
    from edgetpu_models.nas.latency.estimator import estimate

    assert abs(estimate("mobilenet_edgetpu", "pixel6").latency_ms / 0.92 - 1) < 0.05
    for v in ("tiny", "xs", "s", "m", "l"):
        assert 0.5 < estimate(f"mobilenet_edgetpu_v2_{v}", "pixel6").latency_ms < 3.0


@pytest.mark.slow  # converts or builds full-size models
def test_qat_and_int8_export_of_a_grouped_model(tmp_path):
    """A small V2-style network (1x1 conv block, symmetric padding, a grouped fused block) at 32 x 32: QAT wraps the
    model around the split and trains; the int8 export maps every op (PAD, SPLIT, per-group CONV_2D, CONCATENATION),
    and a native grouped CONV_2D would not. (The five V2 variants at 224: benchmarks/export.py.)"""
    import tensorflow as tf

    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.quantize.qat import qat_finetune, quantize_model

    small = {"name": "small_v2", "padding": "symmetric", "stem": {"filters": 16},
             "stages": [{"block": "conv", "repeats": 1, "kernel": 1, "stride": 1, "expansion": 1, "filters": 16},
                        {"block": "fused_ibn", "repeats": 1, "kernel": 3, "stride": 2, "expansion": 4, "filters": 32},
                        {"block": "fused_ibn", "repeats": 2, "kernel": 3, "stride": 1, "expansion": 4, "filters": 32,
                         "group_size": 64, "continue_stage": True}],
             "head": {"filters": 64}}
    model = build_model(spec_from_dict(small), resolution=32, classes=5)
    qat = quantize_model(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 32, 32, 3)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 5, 8))).batch(4)
    assert np.isfinite(qat_finetune(qat, ds, 1, progress=False)["loss"])
    report = check_tflite(export_tflite(qat, tmp_path / "qat.tflite", representative=[x] * 13,
                                        model_name="tiny").path)
    assert report.fully_mapped, report.format()
    assert {"PAD", "SPLIT", "CONCATENATION", "CONV_2D"} <= {row.operator for row in report.rows}

    import tf_keras as keras

    inp = keras.Input((8, 8, 32))
    native = keras.Model(inp, keras.layers.Conv2D(64, 3, padding="same", groups=2)(inp))
    bad = check_tflite(export_tflite(native, tmp_path / "native.tflite", representative=[np.ones((100, 8, 8, 32))],
                                     model_name="native").path)
    assert not bad.fully_mapped and "grouped convolution (2 groups" in bad.first_cpu_op.reason
