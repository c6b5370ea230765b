"""Memory model: parameter bytes in the chip's layout, the cache left after activations, whole-layer first-fit
caching, co-compilation order; checked against published edgetpu_compiler logs (deploy/compiler_logs)."""

from __future__ import annotations

from edgetpu_models.deploy.compiler_logs import check_logs, log_graph
from edgetpu_models.layer_graph import Layer, LayerGraph
from edgetpu_models.nas.latency.cocompile import estimate_cocompiled
from edgetpu_models.nas.latency.frontends import spec_graph
from edgetpu_models.nas.latency.memory import MIB, MemoryConstants, layer_param_bytes, plan_model, plan_models


def test_dense_layers_match_the_published_logs():
    rows = {r.logged.log: r for r in check_logs() if r.basis == "graph"}
    small = rows["libredgetpu-dense256.txt"]
    assert small.predicted_cached == small.logged.cached_bytes == 66 * 1024  # 4 x 64 x (256 + 8) bytes
    big = rows["libredgetpu-dense8192.txt"]
    assert big.predicted_cached == big.logged.cached_bytes == 0  # one layer larger than the cache streams whole
    assert abs(big.predicted_streamed - big.logged.streamed_bytes) < 0.1 * MIB
    assert abs(big.predicted_remaining - big.logged.remaining_bytes) < 0.01 * MIB


def test_padding_and_whole_layer_first_fit():
    c = MemoryConstants(sram_bytes=1 * MIB, reserved_bytes=0)
    conv = Layer("c", "conv2d", ("input",), (8, 8, 3), (8, 8, 65), kernel=3)
    assert layer_param_bytes(conv) == 128 * (27 + 8)  # 65 channels pad to 128
    big = log_graph("dense:1024:768")  # 768 x (1024 + 8) bytes: does not fit 1 MiB - 0.5 MiB
    first = log_graph("dense:512:1024")  # 1024 x 520 = 0.51 MiB
    plans = plan_models([first, big], c)
    assert plans[0].cached_bytes == 1024 * 520 and plans[1].cached_bytes == 0
    assert plans[1].streamed_bytes == 768 * 1032 and plans[1].remaining_bytes == MIB - 1024 * 520
    swapped = plan_models([big, first], c)  # the order decides who streams (google-coral/edgetpu#518)
    assert swapped[0].cached_bytes == 768 * 1032 and swapped[1].cached_bytes == 0


def test_activations_that_overflow_the_narrow_memory_shrink_the_cache():
    g = spec_graph("efficientnet_edgetpu_l")  # 150x150 fused blocks: ~3.6 MB of activations at once
    p = plan_model(g)
    assert p.spill_bytes > 0 and p.cache_budget_bytes == 8 * MIB - MemoryConstants().reserved_bytes - p.spill_bytes
    assert p.cached_bytes <= p.cache_budget_bytes < 8 * MIB and p.streamed_bytes > 0
    s = plan_model(spec_graph("efficientnet_edgetpu_s"))
    assert s.spill_bytes == 0 and s.streamed_bytes == 0


def test_cocompiled_estimates_share_the_cache_in_order():
    alone = estimate_cocompiled(["efficientnet_edgetpu_m"])[0]
    first, second = estimate_cocompiled(["efficientnet_edgetpu_m", "efficientnet_edgetpu_s"])
    assert first[0].latency_ms == alone[0].latency_ms and first[1].cached_bytes == alone[1].cached_bytes
    assert second[1].cache_budget_bytes == first[1].cache_budget_bytes - first[1].cached_bytes
    assert second[1].streamed_bytes > 0  # S gets less than 1 MiB after M
    s_alone = estimate_cocompiled(["efficientnet_edgetpu_s"])[0]
    assert second[0].latency_ms > s_alone[0].latency_ms


def test_log_graph_builds_one_dense_layer():
    g = log_graph("dense:256:256")
    assert isinstance(g, LayerGraph) and len(g.layers) == 1 and g.layers[0].output_shape == (256,)


def test_cli_estimate_cocompiled(capsys):
    from edgetpu_models import cli

    assert cli.main(["estimate", "efficientnet_edgetpu_m", "efficientnet_edgetpu_s", "--json"]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    first, second = d["models"]
    assert first["model"] == "efficientnet_edgetpu_m" and second["streamed_bytes"] > 0
    assert second["cache_budget_bytes"] == first["cache_budget_bytes"] - first["cached_bytes"]
    assert cli.main(["estimate", "efficientnet_edgetpu_m", "efficientnet_edgetpu_s", "--target", "cpu"]) == 2
    assert "Edge TPU target" in capsys.readouterr().err
