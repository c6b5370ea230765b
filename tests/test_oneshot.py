"""One-shot search (nas/search/oneshot): children equal the super-network, the controller finds the latency target,
runs resume, and the super-network trains under a 2-device tf.distribute strategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgetpu_models.nas.search.oneshot.controller import LatencyCache, OneShotController, Schedule
from edgetpu_models.nas.search.oneshot.layout import block_choices, make_layout
from edgetpu_models.nas.search.reward import Reward
from edgetpu_models.nas.search.space import SearchSpace, arch_key, default_space_path, load_space

GROUPED = os.path.join(os.path.dirname(default_space_path()), "search_space_grouped.yaml")

SMALL_SPACE = {
    "name": "small", "template": "efficientnet_edgetpu_s", "activation": "relu",
    "choices": {"block": ["ibn", "fused_ibn"], "kernel": [3, 5], "expansion": [4, 8], "width_multiplier": [0.5, 1.0],
                "repeats_delta": [-1, 0, 1], "skip": [True, False], "group_size": [0, 16]},
    "stages": [{"name": "s0", "stride": 1, "filters": 16, "repeats": 1, "repeats_delta": [0], "expansion": [1, 4],
                "expansion_from": ["input", "output"]},
               {"name": "s1", "stride": 2, "filters": 24, "repeats": 1, "repeats_delta": [0]},
               {"name": "s2", "stride": 1, "filters": 24, "repeats": 1}],
}


def _random_points(space: SearchSpace, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [tuple(int(rng.integers(s)) for s in space.sizes) for _ in range(n)]


def _perturb(net) -> None:
    """Random weights and batch-norm statistics, so equal outputs mean equal slicing, not equal initial values."""
    from edgetpu_models.nas.search.oneshot.supernet import randomise_statistics

    randomise_statistics(net, np.random.default_rng(1))


def _max_relative_diff(net, space, points, width):
    import tensorflow as tf

    from edgetpu_models.nas.search.oneshot.child import child_model
    from edgetpu_models.nas.search.oneshot.supernet import arch_masks

    x = tf.random.stateless_normal([2, 32, 32, 3], seed=[1, 2])
    worst = 0.0
    for pt in points:
        ref = net(x, arch_masks(net.layout, block_choices(space, net.layout, pt)), training=False).numpy()
        got = child_model(net, pt, classifier_activation=None)(x, training=False).numpy()
        worst = max(worst, float(np.abs(ref - got).max() / (np.abs(ref).max() + 1e-6)))
    return worst


@pytest.mark.parametrize("path", [None, GROUPED], ids=["default", "grouped"])
def test_child_model_equals_supernet_on_random_architectures(path):
    from edgetpu_models.nas.search.oneshot.supernet import SuperNet

    space = load_space(path)
    layout = make_layout(space, 0.25, 32)
    net = SuperNet(space, layout, 5)
    _perturb(net)
    points = _random_points(space, 4, seed=3)
    assert _max_relative_diff(net, space, points, 0.25) < 1e-4


def test_small_space_children_cover_grouped_e1_and_skipped_blocks_exactly():
    from edgetpu_models.nas.search.oneshot.supernet import SuperNet

    space = SearchSpace.from_dict(SMALL_SPACE)
    layout = make_layout(space, 1.0, 32)
    net = SuperNet(space, layout, 3)
    _perturb(net)
    points = _random_points(space, 40, seed=0)
    choices = [block_choices(space, layout, p) for p in points]
    assert any(c.groups > 1 for cs in choices for c in cs)            # grouped fused expansion
    assert any(c.branch and c.branch.endswith("_e1") for cs in choices for c in cs)
    assert any(not c.active for cs in choices for c in cs)            # a left-out optional block
    pick = [p for p, cs in zip(points, choices) if any(c.groups > 1 for c in cs)][:2] + points[:4]
    assert _max_relative_diff(net, space, pick, 1.0) < 1e-4


def test_schedule_decays_and_holds_the_controller_back():
    s = Schedule(100, ops_warmup=0.2, filters_warmup=0.5, controller_delay=0.3)
    assert s.ops_probability(0) == 1.0 and s.ops_probability(10) == pytest.approx(0.5) and s.ops_probability(20) == 0
    assert s.filters_probability(25) == pytest.approx(0.5)
    assert not s.controller_on(29) and s.controller_on(30)


def test_warmup_samples_use_the_widest_filters():
    space = load_space()
    c = OneShotController(space, seed=0)
    sample = c.sample(0, Schedule(100, ops_warmup=0.0, filters_warmup=1.0))
    assert sample.replaced
    for d, i in zip(space.decisions, sample.point):
        if d.key in ("width_multiplier", "expansion"):
            assert d.choices[i] == max(d.choices)


def test_controller_state_round_trips_and_top_k_is_distinct():
    space = load_space()
    a = OneShotController(space, seed=1)
    for _ in range(20):
        pt = a.ask()
        a.tell(pt, float(np.random.default_rng(len(pt)).random()))
    b = OneShotController(space, seed=9)
    b.load_state(json.loads(json.dumps(a.state())))
    assert b.ask() == a.ask() and b.most_likely() == a.most_likely()
    keys = [arch_key(space.decode(p)) for p, _ in a.top_k(5)]
    assert len(set(keys)) == 5


@pytest.mark.parametrize("factor", [1.0, 0.6])
def test_reinforce_with_absolute_reward_finds_the_latency_target(factor):
    """TF-free: with a constant accuracy, TuNAS's absolute reward alone must steer the most likely network to T0."""
    from edgetpu_models.zoo import resolve_spec

    space = load_space()
    latency = LatencyCache(space, "coral-usb")
    target = latency(space.encode(resolve_spec("efficientnet_edgetpu_s")[0])) * factor
    reward = Reward.make("tunas", target, beta=-0.5)
    c = OneShotController(space, seed=0, learning_rate=0.2)
    for _ in range(1000):
        pt = c.ask()
        c.tell(pt, reward(0.9, latency(pt)))
    assert abs(latency(c.most_likely()) / target - 1) < 0.1


def _write_space(tmp_path) -> str:
    import yaml

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SMALL_SPACE))
    return str(path)


def test_run_resumes_after_a_kill_and_writes_results(tmp_path):
    from edgetpu_models.nas.search.oneshot.run import LOG_NAME, OneShotConfig, load_oneshot, run_oneshot
    from tests.helpers.train import digits_subset

    data = digits_subset(tmp_path, per_class=20)
    cfg = OneShotConfig(latency_target_ms=1.0, space=_write_space(tmp_path), data_dir=data, steps=8, batch_size=16,
                        width=0.25, checkpoint_every=3, log_every=2, top_k=3, controller_samples=2)
    out = str(tmp_path / "run")
    assert run_oneshot(cfg, out, max_steps=4) is None
    with open(os.path.join(out, LOG_NAME), "a") as f:  # what a kill -9 after step 4 leaves: a step past the
        f.write(json.dumps({"step": 4}) + "\n{\"step\": 5, \"lo")  # checkpoint (step 3) and a torn line
    result = run_oneshot(cfg, out, resume=True)
    _, steps = load_oneshot(out)
    assert [s["step"] for s in steps] == list(range(8))
    assert all("entropy" in s and "latency_ms" in s and "arch" in s for s in steps)
    assert any("reward" in s for s in steps)
    for name in ("best_spec.yaml", "top_k.csv", "latency.png", "probabilities.png", "summary.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert len(result.top) == 3
    from edgetpu_models.spec import load_spec

    best = load_spec(os.path.join(out, "best_spec.yaml"))  # the most likely network, as a point of the run's space
    space = load_space(os.path.join(out, "search_space.yaml"))
    assert arch_key(space.decode(space.encode(best))) == arch_key(space.decode(result.best_point))


def test_init_from_supernet_weights_are_the_sliced_child(tmp_path):
    from edgetpu_models.builder import build_model
    from edgetpu_models.nas.search.oneshot.child import child_weights
    from edgetpu_models.nas.search.oneshot.export import _restore_supernet, supernet_init_weights
    from edgetpu_models.nas.search.oneshot.run import OneShotConfig, run_oneshot
    from tests.helpers.train import digits_subset

    data = digits_subset(tmp_path, per_class=10)
    cfg = OneShotConfig(latency_target_ms=1.0, space=_write_space(tmp_path), data_dir=data, steps=2, batch_size=16,
                        width=0.25, controller_samples=1, top_k=1)
    out = str(tmp_path / "run")
    result = run_oneshot(cfg, out)
    spec = os.path.join(out, "best_spec.yaml")
    path = supernet_init_weights(out, spec, "search", str(tmp_path / "init.h5"))
    model = build_model(spec, "search", classes=1000, weights=path)
    want = child_weights(_restore_supernet(out), result.best_point)
    for name in ("stem_conv", "head_conv", "blocks_1_0_conv_pwl"):
        if name in want:
            np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], want[name][0])


DISTRIBUTED = textwrap.dedent("""
    import sys, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from edgetpu_models.nas.search.oneshot.run import OneShotConfig, run_oneshot, load_oneshot
    cfg = OneShotConfig(latency_target_ms=1.0, space=sys.argv[1], data_dir=sys.argv[2], steps=3, batch_size=16,
                        width=0.25, strategy="mirrored", controller_samples=1, controller_delay=0.0, top_k=1)
    result = run_oneshot(cfg, sys.argv[3])
    steps = load_oneshot(sys.argv[3])[1]
    print("REPLICAS", tf.distribute.MirroredStrategy().num_replicas_in_sync, "STEPS", len(steps),
          "LOSS", all(s["loss"] == s["loss"] for s in steps), "ACC", steps[-1]["accuracy"])
""")


def test_supernet_trains_under_mirrored_strategy_on_two_devices(tmp_path):
    from tests.helpers.train import digits_subset

    data = digits_subset(tmp_path, per_class=10)
    proc = subprocess.run([sys.executable, "-c", DISTRIBUTED, _write_space(tmp_path), data, str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPLICAS"))
    assert line.split()[:6] == ["REPLICAS", "2", "STEPS", "3", "LOSS", "True"]
    assert 0.0 <= float(line.split()[-1]) <= 1.0


def test_benchmark_smoke_prints_every_part(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "oneshot.py")
    proc = subprocess.run([sys.executable, script, "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for part in ("(a) exactness", "(b) target", "(c) ranking", "(c2) ranking", "(c3) winners", "Kendall's tau",
                 "(d) wall time"):
        assert part in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(rel < 1e-4 for _, rel in report["exactness"].values())


def test_resume_refuses_settings_it_would_ignore(tmp_path):
    """A resumed one-shot search keeps its stored settings: a flag that would change them is refused in one line
    (exit 2), as the per-trial search does, instead of being silently dropped."""
    from tests.helpers.cli import run_cli

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"method": "oneshot", "latency_target_ms": 1.0}))
    proc = run_cli("nas", "search", "--resume", "--out", str(out), "--steps", "50", "--beta", "-0.3")
    assert proc.returncode == 2
    assert "--beta, --steps" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
