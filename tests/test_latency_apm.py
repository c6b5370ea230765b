"""Edge TPU analytical performance model: API contract, the paper's observations, zoo ordering, parameter cache,
calibration (leave-one-out on the Coral table) and the TF-free spec path. No TensorFlow here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgetpu_models.errors import ModelFileError, SpecError, TargetError
from edgetpu_models.layer_graph import Layer, LayerGraph
from edgetpu_models.nas.latency import calibrate as cal
from edgetpu_models.nas.latency import estimator as latency
from edgetpu_models.nas.latency import targets
from edgetpu_models.nas.latency.apm import cost_graph, graph_terms, terms_latency_ms
from edgetpu_models.nas.latency.estimator import LatencyEstimate, estimate, estimate_graph, list_targets
from edgetpu_models.nas.latency.frontends import spec_graph
from edgetpu_models.spec import spec_from_dict
from edgetpu_models.zoo import zoo_spec

BOUNDS = {"compute", "activations", "weights", "param_stream", "overhead", "host_link", "free"}


def calibration_graph(key: str) -> LayerGraph:
    return cal.load_graph_json(os.path.join(cal.calibration_dir(), f"{key}.json"))


def probe_spec(block: str, res: int, cin: int, expansion: float, cout: int, kernel: int, stride: int = 1):
    """Stem conv (stride 2, cin channels) + one block; the block is costed on its own below."""
    return spec_from_dict({"name": "probe", "stem": {"filters": cin, "kernel": 3, "stride": 2},
                           "stages": [{"block": block, "repeats": 1, "kernel": kernel, "stride": stride,
                                       "expansion": expansion, "filters": cout}],
                           "head": {"filters": 64}, "resolution": res})


def block_ms(*args, target: str = "coral-usb") -> float:
    est = estimate(probe_spec(*args), target)
    return sum(layer.ms for layer in est.layers if layer.name.startswith("blocks_"))


# --- contract ------------------------------------------------------------------------------------------------------

def test_targets_listed_and_unknown_target_is_a_target_error():
    assert {"coral-usb", "coral-usb-std", "coral-devboard", "pixel4", "cpu", "cpu-measured"} <= set(list_targets())
    with pytest.raises(TargetError, match="unknown latency target.*coral-usb"):
        estimate("efficientnet_edgetpu_s", "coral-tpu-9000")


def test_estimate_fields_json_and_rows_add_up():
    est = estimate("efficientnet_edgetpu_s", "coral-usb")
    assert isinstance(est, LatencyEstimate)
    d = json.loads(json.dumps(est.to_dict()))
    assert set(d) == {"latency_ms", "target", "on_chip_param_bytes", "off_chip_param_bytes", "layers"}
    assert d["target"] == "coral-usb"
    for row in d["layers"]:
        assert set(row) == {"name", "op", "output_shape", "macs", "ms", "bound"}
        assert row["bound"] in BOUNDS and row["ms"] >= 0
    # every conv of the network is there with its MACs
    assert sum(r["macs"] for r in d["layers"]) == 1_788_731_008


def test_spec_path_accepts_zoo_name_path_spec_and_graph_identically(tmp_path):
    spec, variant = zoo_spec("efficientnet_edgetpu_m")
    a = estimate("efficientnet_edgetpu_m").latency_ms
    b = estimate(spec, variant="M").latency_ms
    d = estimate(spec_graph(spec, "M")).latency_ms
    assert a == b == d
    assert estimate("efficientnet_edgetpu_s", resolution=160).latency_ms < estimate("efficientnet_edgetpu_s").latency_ms
    with pytest.raises(SpecError):
        estimate("efficientnet_edgetpu_s", variant="XXL")


def test_spec_path_does_not_import_tensorflow():
    code = ("import sys\nfrom edgetpu_models.nas.latency.estimator import estimate\n"
            "for t in ('coral-usb', 'coral-usb-std', 'coral-devboard', 'pixel4', 'cpu'):\n"
            "    estimate('efficientnet_edgetpu_l', t)\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_malformed_tflite_is_a_model_file_error(tmp_path):
    bad = tmp_path / "garbage.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="garbage.tflite: not a TFLite flatbuffer"):
        estimate(str(bad))
    with pytest.raises(ModelFileError, match="no such file"):
        estimate(str(tmp_path / "missing.tflite"))
    with pytest.raises(ModelFileError, match="not a TFLite flatbuffer"):
        estimate(b"TFL3 but not really a model")


# --- the model -----------------------------------------------------------------------------------------------------

def test_paper_fused_block_wins_shallow_and_large_loses_deep_and_small():
    # shallow depth (16 channels) on a large map (112x112): the fused block is faster despite ~3x the MACs
    fused, dw = block_ms("fused_ibn", 224, 16, 4, 16, 3), block_ms("ibn", 224, 16, 4, 16, 3)
    assert fused < dw
    # deep (192 channels) on a small map (16x16): the fused block is more than 1.5x slower
    fused, dw = block_ms("fused_ibn", 32, 192, 6, 192, 3), block_ms("ibn", 32, 192, 6, 192, 3)
    assert fused > 1.5 * dw


def _conv_ms(size: int, cin: int, cout: int, k: int) -> float:
    """One k x k convolution on a size x size map, alone (no transfers, no invoke overhead)."""
    layer = Layer("conv", "conv2d", ("input",), (size, size, cin), (size, size, cout), kernel=k)
    c = latency.load_target("coral-usb").constants
    rows = cost_graph(LayerGraph("one_conv", (size, size, cin), (layer,)), c)[0]
    return sum(r.ms for r in rows if r.name == "conv")


def test_paper_5x5_cost_depends_on_the_shapes():
    mac_ratio = 25 / 9
    # the paper's Fig. 4 bottom (20 us vs 27 us, a small layer): shallow input (16), deep output (256) on a map that
    # one round of the tile grid covers: drain-dominated, the 5x5 kernel costs far less than its MAC ratio
    assert _conv_ms(4, 16, 256, 5) / _conv_ms(4, 16, 256, 3) < 0.7 * mac_ratio
    # Fig. 4 top (414 us vs 1122 us, 2.71x): deep input and output: close to the MAC ratio
    assert _conv_ms(32, 256, 256, 5) / _conv_ms(32, 256, 256, 3) > 0.85 * mac_ratio
    # on a large map the weights are fetched again for every round of output positions (nas.apm.weight_passes):
    # the same shallow layer then costs its weight ratio, which is the MAC ratio
    assert _conv_ms(56, 16, 256, 5) / _conv_ms(56, 16, 256, 3) > 0.85 * mac_ratio


def test_high_resolution_full_convolutions_are_bound_by_weight_traffic():
    """The EfficientNet-EdgeTPU fused blocks at 112-150 px: weights travel once per round of output positions."""
    est = estimate("efficientnet_edgetpu_l")
    bounds = {r.name: r.bound for r in est.layers}
    assert bounds["blocks_0_0_conv_exp"] == "weights"
    # the same layer on a 4x4 map (one round) is compute-bound
    layer = Layer("conv", "conv2d", ("input",), (4, 4, 32), (4, 4, 128), kernel=3)
    c = latency.load_target("coral-usb").constants
    assert cost_graph(LayerGraph("g", (4, 4, 32), (layer,)), c)[0][1].bound == "compute"


def test_zoo_ordering_on_coral_usb():
    s, m, l_ = (estimate(f"efficientnet_edgetpu_{v}").latency_ms for v in "sml")
    assert s < m < l_
    resnet50 = estimate(calibration_graph("ResNet50_299")).latency_ms
    mobilenet_v2 = estimate(calibration_graph("MobileNetV2_224")).latency_ms
    assert mobilenet_v2 < s < resnet50


def test_parameter_cache_and_streaming():
    from edgetpu_models.nas.latency.memory import MemoryConstants, layer_param_bytes

    small = estimate("efficientnet_edgetpu_s")
    graph = calibration_graph("ResNet50_299")
    big = estimate(graph)
    total = sum(layer_param_bytes(layer) for layer in graph.layers)
    assert small.off_chip_param_bytes == 0 and small.on_chip_param_bytes > 5_000_000
    # whole layers are cached until the SRAM left after the reserve is full; never all 8 MiB
    assert 6_000_000 < big.on_chip_param_bytes <= 8 * 1024 * 1024 - MemoryConstants().reserved_bytes
    assert big.on_chip_param_bytes + big.off_chip_param_bytes == total
    assert any(layer.bound == "param_stream" for layer in big.layers)
    # streamed bytes cost link time: a slower host link makes only the streaming model much slower
    t = latency.load_target("coral-usb")
    slow = t.constants.with_values(link_mb_per_s=t.constants.link_mb_per_s / 4)
    slow_big = sum(r.ms for r in cost_graph(graph, slow)[0])
    slow_small = sum(r.ms for r in cost_graph(spec_graph("efficientnet_edgetpu_s"), slow)[0])
    assert slow_big > 2.5 * big.latency_ms
    assert slow_small < 1.5 * small.latency_ms


def test_slower_clock_and_pixel4_targets():
    usb, std = estimate("efficientnet_edgetpu_s", "coral-usb"), estimate("efficientnet_edgetpu_s", "coral-usb-std")
    assert std.latency_ms > 1.2 * usb.latency_ms  # 250 vs 500 MHz; link and invoke overheads do not scale
    assert latency.load_target("coral-usb-std").constants.link_mb_per_s == \
        latency.load_target("coral-usb").constants.link_mb_per_s
    pix = estimate("mobilenet_edgetpu", "pixel4").latency_ms
    assert 3.6 * 0.8 < pix < 3.6 * 1.2  # published 3.6 ms, the value pixel4 is fitted to


def test_small_feature_maps_and_channel_padding_lose_utilisation():
    t = latency.load_target("coral-usb").constants

    def conv(h, cin, cout):
        layer = Layer("c", "conv2d", ("input",), (h, h, cin), (h, h, cout), kernel=3)
        row = cost_graph(LayerGraph("g", (h, h, cin), (layer,)), t.with_values(act_bytes_per_cycle=1e9))[0][1]
        return row.ms / row.macs

    assert conv(5, 256, 256) > 1.3 * conv(8, 256, 256)      # 5x5 on a 4x4 tile grid: 2x2 rounds, 25/64 used
    assert conv(16, 256, 80) > 1.3 * conv(16, 256, 128)     # 80 output channels padded to 128 cells' worth


def test_vectorised_terms_agree_with_cost_graph():
    t = latency.load_target("coral-usb").constants
    for graph in (calibration_graph("ResNet50_299"), calibration_graph("DenseNet121_224")):
        assert terms_latency_ms(graph_terms(graph, t), t) == pytest.approx(estimate_graph(graph).latency_ms,
                                                                           rel=1e-9)


# --- calibration -----------------------------------------------------------------------------------------------------

def test_coral_usb_leave_one_out_meets_the_bar():
    rows = cal.target_rows("coral-usb")
    assert len(rows) >= 8
    result = cal.run_calibration("coral-usb", rows, cal.calibration_graphs(rows))
    assert result.spearman >= 0.9
    assert result.median_abs_error <= 0.119  # no worse than before the memory and weight-traffic terms
    stored = latency.load_target("coral-usb").data["calibration"]["leave_one_out"]
    assert stored["spearman"] >= 0.9 and stored["median_abs_error"] <= 0.119


def test_efficientnet_edgetpu_within_15_percent_of_corals_published_usb_latency():
    """Held out (never fitted): the latencies on Coral's models page (nas/latency/targets/coral_models_page.csv)."""
    import csv

    path = os.path.join(targets.targets_dir(), "coral_models_page.csv")
    with open(path, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#")) if r["zoo"] != "-"]
    assert {r["zoo"] for r in rows} == {f"efficientnet_edgetpu_{v}" for v in "sml"}
    for r in rows:
        predicted = estimate(r["zoo"], "coral-usb").latency_ms
        assert abs(predicted / float(r["usb_ms"]) - 1) <= 0.15, (r["model"], predicted)


@pytest.fixture
def targets_copy(tmp_path, monkeypatch):
    """A user config folder of its own: calibrate writes there, never into the installed package."""
    monkeypatch.setenv(targets.CONFIG_ENV, str(tmp_path / "config"))
    return tmp_path / "config" / "targets"


def test_calibrate_cli_writes_user_target_and_prints_loo_table(targets_copy, capsys):
    from edgetpu_models.cli import main

    shipped = os.path.join(targets.targets_dir(), "coral-usb.yaml")
    before = open(shipped).read()
    assert main(["calibrate", "--target", "coral-usb", "--reuse-graphs"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-out" in out and "ResNet-50 V1" in out and "VGG16" in out and "Spearman" in out
    path = targets_copy / "coral-usb.yaml"
    assert f"wrote {path}" in out and open(shipped).read() == before  # the package is left as shipped
    t = latency.load_target("coral-usb")
    assert t.path == str(path) and t.data["calibration"]["leave_one_out"]["rows"][0]["model"]
    assert not [p for p in os.listdir(targets_copy) if p.startswith(".")]  # no temp file left behind
    # estimate says where an overriding target came from; --out chooses another file
    assert main(["estimate", "efficientnet_edgetpu_s", "--target", "coral-usb"]) == 0
    assert f"target coral-usb from {path}" in capsys.readouterr().out
    other = targets_copy.parent / "elsewhere.yaml"
    assert main(["calibrate", "--target", "coral-usb", "--reuse-graphs", "--out", str(other)]) == 0
    assert other.exists() and f"wrote {other}" in capsys.readouterr().out


def test_calibrate_rejects_inheriting_and_broken_targets(targets_copy):
    from edgetpu_models.cli import main

    assert main(["calibrate", "--target", "coral-usb-std", "--reuse-graphs"]) == 2
    targets_copy.mkdir(parents=True, exist_ok=True)
    (targets_copy / "broken.yaml").write_text("kind: edgetpu\nconstants: {clock_mhz: -5}\n")
    with pytest.raises(TargetError, match="clock_mhz: expected a number > 0"):
        estimate("efficientnet_edgetpu_s", "broken")


def test_memoised_estimate_equals_the_uncached_one_to_the_last_bit():
    """The memoised spec path (nas/latency/memo.py) returns the very estimate `cost_graph` gives for the spec's graph:
    same rows, same total, for plain, grouped (V2), streaming (L) and search-space models, before and after the memo
    has seen their blocks, and for a neighbour that differs in one block."""
    from edgetpu_models.nas.latency import memo
    from edgetpu_models.nas.search.space import load_space

    space = load_space(os.path.join(os.path.dirname(__file__), "..", "nas", "search", "search_space_grouped.yaml"))
    point = [0] * len(space.sizes)
    neighbour = list(point)
    neighbour[next(i for i, n in enumerate(space.sizes) if n > 1)] = 1
    models = ["efficientnet_edgetpu_l", "mobilenet_edgetpu_v2_m", space.decode(point), space.decode(neighbour)]
    memo.clear()
    for target in ("coral-usb", "coral-devboard", "pixel6"):
        for m in models * 2:  # second pass: every piece comes from the memo
            fast = estimate(m, target)
            slow = LatencyEstimate(*_uncached(m, target))
            assert fast == slow
            assert fast.latency_ms.hex() == slow.latency_ms.hex()
    assert estimate("efficientnet_edgetpu_l", "coral-usb").off_chip_param_bytes > 0  # the streamed rows are covered


def _uncached(model, target):
    t = latency.load_target(target)
    rows, on_chip, off_chip = cost_graph(spec_graph(model), t.constants)
    return sum(r.ms for r in rows), t.name, on_chip, off_chip, tuple(rows)
