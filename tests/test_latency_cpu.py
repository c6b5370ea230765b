"""The nn-Meter-style CPU predictor: kernel typing after fusion, the regressors, the shipped predictor, sampling.
TF-free except the one-kernel conversion check."""

from __future__ import annotations

import json
import os
import random

import pytest

from edgetpu_models.errors import TargetError
from edgetpu_models.layer_graph import Layer
from edgetpu_models.nas.latency.cpu import features, fit, predictor
from edgetpu_models.nas.latency.estimator import estimate, load_target
from edgetpu_models.nas.latency.frontends import spec_graph


def conv(h, cin, cout, k=3, s=1, op="conv2d"):
    out = (-(-h // s), -(-h // s), cin if op == "depthwise_conv2d" else cout)
    return Layer("c", op, ("input",), (h, h, cin), out, kernel=k, stride=s, activation="relu")


def test_kernel_types_follow_micro_kernels():
    assert features.kernel_key(conv(56, 32, 64, k=1)) == "conv1x1s1"
    assert features.kernel_key(conv(56, 32, 64, k=3, s=2)) == "conv3x3s2"
    assert features.kernel_key(conv(56, 32, 32, k=5, op="depthwise_conv2d")) == "dwconv5x5s1"
    add = Layer("a", "add", ("x", "y"), (7, 7, 96), (7, 7, 96))
    assert features.kernel_key(add) == "elementwise_add_2" and features.kernel_family(add) == "elementwise"


def test_fit_recovers_per_kernel_linear_costs():
    rng = random.Random(0)
    true = {"conv3x3s1": [0.01, 0.002, 0.0, 0.03, 0.001], "dwconv3x3s1": [0.005, 0.01, 0.02, 0.0, 0.0]}

    def sample():
        key = rng.choice(sorted(true))
        h, cin, cout = rng.choice([7, 14, 28, 56]), rng.choice([16, 24, 64, 96]), rng.choice([8, 32, 48, 160])
        layer = conv(h, cin, cout, op="depthwise_conv2d" if key.startswith("dw") else "conv2d")
        return key, layer, sum(a * f for a, f in zip(true[key], features.kernel_features(layer)))

    kernels = fit.fit_kernels([sample()[1:] for _ in range(120)])
    pred = predictor.Predictor(kernels, 0.0, 1, {})
    for _ in range(20):  # unseen shapes are predicted by their own kernel type's regressor
        key, layer, ms = sample()
        got, used = pred.kernel_ms(layer)
        assert used == key and got == pytest.approx(ms, rel=1e-3)
    assert {"conv", "dwconv", "elementwise"} <= set(kernels)


def test_shipped_predictor_predicts_sensibly():
    t = load_target("cpu")
    pred = predictor.load_predictor(t)
    assert pred.threads == 1 and pred.meta["samples"] >= 100
    s = estimate("efficientnet_edgetpu_s", "cpu")
    assert s.target == "cpu" and s.latency_ms > 0
    # grows with resolution and width, roughly with MACs (a CPU is close to linear in compute)
    small = estimate("efficientnet_edgetpu_s", "cpu", resolution=128).latency_ms
    assert small < s.latency_ms < estimate("efficientnet_edgetpu_l", "cpu").latency_ms
    assert 1.5 < s.latency_ms / small < 4.5  # (224/128)^2 = 3.1x MACs
    # every conv is costed by its own kernel type's regressor
    assert {r.bound for r in s.layers if r.op == "conv2d"} <= set(pred.kernels)


def test_missing_or_corrupt_predictor_is_a_target_error(tmp_path):
    import dataclasses

    t = dataclasses.replace(load_target("cpu"), path=str(tmp_path / "cpu.yaml"))  # a target file in another folder
    with pytest.raises(TargetError, match="calibrate --target cpu"):
        predictor.load_predictor(t)
    (tmp_path / "cpu_predictor.json").write_text(json.dumps({"features": ["x"], "kernels": {}}))
    with pytest.raises(TargetError, match="not a valid CPU predictor"):
        predictor.load_predictor(t)


def test_training_samples_and_held_out_architectures_are_disjoint():
    train_names = {s.name for s, _ in fit.random_specs(60, fit.TRAIN_SEED)}
    held = fit.held_out_specs(32)
    assert len(held) >= 30 and not train_names & {s.name for s, _ in held}
    assert len({r for _, r in held}) >= 3  # several resolutions
    kernels = fit.sample_kernels(120)
    assert len(kernels) == 120 and len({features.kernel_key(k) for k in kernels}) >= 10
    for spec, res in held[:5]:
        assert spec_graph(spec, None, res).macs > 0


def test_one_kernel_model_converts_to_exactly_that_kernel():
    from edgetpu_models.tflite_reader import read_tflite

    m = read_tflite(fit.kernel_tflite_bytes(conv(16, 8, 16, k=3, s=2)))
    assert [op.opcode for op in m.operators] == ["CONV_2D"]
    assert m.operators[0].options["fused_activation_function"] == "RELU"


def test_cpu_target_knows_which_cpu_it_describes(tmp_path, monkeypatch):
    """On a CPU the predictor was neither fitted nor probed on, `cpu` says so in one line and names the probe; a probe
    of this CPU scales every kernel time by its factor; the CPU it was fitted on needs no probe."""
    from edgetpu_models.nas.latency.cpu.host import cpu_fingerprint, host_scale, probe_path

    before = estimate("mobilenet_edgetpu", "cpu")
    monkeypatch.setenv("EDGETPU_MODELS_CONFIG", str(tmp_path))
    with pytest.raises(TargetError) as e:
        estimate("mobilenet_edgetpu", "cpu")
    msg = str(e.value)
    assert "\n" not in msg and "uncalibrated for this CPU" in msg and "--probe` (about 2 s)" in msg
    os.makedirs(os.path.dirname(probe_path()))
    with open(probe_path(), "w", encoding="utf-8") as f:
        json.dump({cpu_fingerprint(): {"scale": 2.0}}, f)
    probed = estimate("mobilenet_edgetpu", "cpu")
    kernels = [(a.ms, b.ms) for a, b in zip(before.layers, probed.layers) if a.op != "invoke"]
    assert all(b == pytest.approx(2 * a) for a, b in kernels) and probed.latency_ms > 1.5 * before.latency_ms
    assert host_scale({"cpu": cpu_fingerprint()}) == 1.0


def test_timing_spread_is_robust_to_a_loaded_machine():
    """A few runs slowed by other processes move neither the median nor the IQR-based spread much."""
    from edgetpu_models.nas.latency.cpu.timing import robust_spread

    quiet = [10.0, 10.1, 9.9, 10.0, 10.2, 9.8, 10.0, 10.1, 9.9, 10.0, 10.1, 9.9, 10.0, 10.0, 10.0]
    loaded = quiet[:12] + [25.0, 40.0, 31.0]
    assert robust_spread(quiet) < 0.02 and robust_spread(loaded) < 0.05
    assert robust_spread([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]) > 0.3


def test_probe_times_shipped_kernels_without_tensorflow(tmp_path):
    """The probe (`calibrate --target cpu --probe`) times a shipped whole model and one-kernel models with LiteRT:
    every kernel type that takes at least 1% of the probe models' time is among them, each file runs as its kernel,
    and a probe in a fresh process returns its factors without importing TensorFlow or converting anything."""
    import subprocess
    import sys

    from edgetpu_models.nas.latency.cpu import probe
    from edgetpu_models.tflite_reader import read_tflite

    kernels, model = probe.load_probe_kernels()
    name, res = probe.PROBE_WHOLE_MODEL
    assert len(read_tflite(model).operators) >= len(spec_graph(name, None, res).layers) // 2  # a whole model
    assert kernels[0][0].name == fit.baseline_layer().name  # the invoke-overhead model comes first
    shares = probe.type_shares(predictor.load_predictor(load_target("cpu")))
    shipped = {features.kernel_key(layer) for layer, _ in kernels[1:]}
    assert {k for k, share in shares.items() if share >= 0.01} - {"fc"} <= shipped  # fc: too many parameters
    ops = {"conv2d": "CONV_2D", "depthwise_conv2d": "DEPTHWISE_CONV_2D", "add": "ADD", "pad": "PAD"}
    for layer, data in kernels[1:]:
        if layer.op in ops:
            assert ops[layer.op] in [op.opcode for op in read_tflite(data).operators], layer
    code = ("import sys; from edgetpu_models.nas.latency.cpu.probe import run_probe; "
            "from edgetpu_models.nas.latency.targets import load_target; r = run_probe(load_target('cpu'), runs=3); "
            "assert r.scale > 0 and r.kernel_scale > 0 and all(row.predicted_ms > 0 for row in r.rows), r; "
            "assert 'tensorflow' not in sys.modules; print(len(r.rows))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == len(kernels) - 1


def test_probe_factor_is_a_time_weighted_median():
    """Kernel types weigh by their share of the models' time: a cheap kernel type far off cannot move the factor."""
    from edgetpu_models.nas.latency.cpu.probe import weighted_median

    assert weighted_median([(1.0, 0.3), (1.1, 0.4), (0.7, 0.05), (5.0, 0.01)]) == 1.1
    assert weighted_median([(1.0, 0.3), (1.1, 0.1), (0.7, 0.05), (5.0, 0.05)]) == 1.0
    assert weighted_median([(2.0, 1.0)]) == 2.0
    with pytest.raises(ValueError):
        weighted_median([(1.0, 0.0)])
