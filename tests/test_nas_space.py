"""Search space: the data file, point <-> spec in the one spec format, both published models as points, TF-free."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from edgetpu_models.nas.search.space import SearchSpace, SearchSpaceError, load_space
from edgetpu_models.spec import load_spec, resolve, spec_from_dict
from edgetpu_models.zoo import resolve_spec


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space()


@pytest.mark.parametrize("ref", ["efficientnet_edgetpu_s", "mobilenet_edgetpu"])
def test_published_models_are_points_of_the_default_space(space, ref, tmp_path):
    spec, variant = resolve_spec(ref)
    point = space.encode(spec)
    decoded = space.decode(point, template=spec, name=spec.name)
    assert decoded == spec  # same stages, stem, head, normalisation, variants
    # and it survives the spec file format (what a search writes)
    from edgetpu_models.spec import save_spec

    save_spec(decoded, tmp_path / "x.yaml")
    assert load_spec(tmp_path / "x.yaml") == spec
    assert resolve(decoded, variant) == resolve(spec, variant)


def test_efficientnet_point_decodes_with_the_default_template(space):
    spec, _ = resolve_spec("efficientnet_edgetpu_s")  # the default space's template
    assert space.decode(space.encode(spec)) == spec


def test_random_points_decode_to_valid_canonical_specs(space):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(150):
        point = tuple(int(rng.integers(s)) for s in space.sizes)
        spec = space.decode(point)
        assert spec_from_dict(spec.to_dict()) == spec  # passes the spec validator
        assert all(st.block in ("ibn", "fused_ibn") and st.kernel in (3, 5) for st in spec.stages)
        assert spec.activation == "relu"
        again = space.decode(space.encode(spec))  # canonical: re-encoding finds a point of the same network
        assert again == spec
        seen.add(tuple(spec.stages))
    assert len(seen) == 150


@pytest.mark.parametrize("patch, message", [
    ({"activation": "swish"}, "activation: expected relu"),
    ({"choices": {"se_ratio": [0.25]}}, "squeeze-excite is not expressible"),
    ({"choices": {"block": ["ibn", "conv"]}}, "choices.block: expected one of ibn, fused_ibn"),
    ({"choices": {"kernel": [3, 4]}}, "choices.kernel: expected odd integers"),
    ({"stages": [{"name": "a", "stride": 3, "filters": 16, "repeats": 1}]}, "stages[0].stride: expected 1 or 2"),
    ({"template": "no_such_model"}, "template:"),
])
def test_bad_space_files_are_one_line_errors(tmp_path, patch, message):
    with open(load_space().source) as f:
        data = yaml.safe_load(f)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SearchSpaceError) as e:
        load_space(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_spec_outside_the_space_is_refused(space):
    spec, _ = resolve_spec("efficientnet_edgetpu_s")
    import dataclasses

    seven = dataclasses.replace(spec, stages=(dataclasses.replace(spec.stages[0], kernel=7),) + spec.stages[1:])
    with pytest.raises(SearchSpaceError, match="not a point of search space"):
        space.encode(seven)


def test_controller_and_spec_path_are_tensorflow_free():
    code = (
        "import sys\n"
        "from edgetpu_models.nas.search.space import load_space\n"
        "from edgetpu_models.nas.search.controllers import make_controller\n"
        "from edgetpu_models.nas.search.reward import Reward\n"
        "from edgetpu_models.nas.search import loop, results, trial_log, proxy\n"
        "from edgetpu_models.cli import search as search_cli\n"
        "from edgetpu_models.nas.latency.estimator import estimate\n"
        "s = load_space()\n"
        "r = Reward.make('mnas-soft', 6.0)\n"
        "for name in ('reinforce', 'evolution', 'random'):\n"
        "    c = make_controller(name, s.sizes, seed=1)\n"
        "    for _ in range(30):\n"
        "        p = c.ask(); spec = s.decode(p)\n"
        "        c.tell(p, r(0.5, estimate(spec, 'coral-usb').latency_ms))\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
