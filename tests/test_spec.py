"""Spec format: loading, validation errors that name file and field, round trips, compound scaling."""

import copy
import os
import subprocess
import sys

import pytest
import yaml

from edgetpu_models import SpecError, load_spec, resolve, save_spec, spec_from_dict
from edgetpu_models.spec import make_divisible
from edgetpu_models.zoo import ZOO, searched_archs_dir, zoo_spec

EFFNET = os.path.join(searched_archs_dir(), "efficientnet_edgetpu.yaml")


def _write(tmp_path, data, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _base():
    with open(EFFNET) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("mutate, field, allowed", [
    (lambda d: d["stages"][3].update(block="squeeze_excite"), "stages[3].block", "fused_ibn, ibn, conv"),
    (lambda d: d["stages"][1].update(stride=-1), "stages[1].stride", "1 or 2"),
    (lambda d: d["stages"][2].pop("filters"), "stages[2].filters", "missing field"),
    (lambda d: d.pop("head"), "head", "missing field"),
    (lambda d: d["stages"][0].update(colour="red"), "stages[0].colour", "unknown field"),
    (lambda d: d.update(activation="swish"), "activation", "relu, relu6"),
    (lambda d: d["stages"][0].update(kernel=4), "stages[0].kernel", "odd integer"),
    (lambda d: d["variants"]["M"].update(depth=0), "variants.M.depth", "> 0"),
    (lambda d: d.update(default_variant="XL"), "default_variant", "S, M, L"),
])
def test_invalid_spec_names_file_and_field(tmp_path, mutate, field, allowed):
    data = _base()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ": ")
    assert field in message and allowed in message


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("stages: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: not valid YAML at line"):
        load_spec(str(bad))
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(str(tmp_path / "absent.yaml"))


def test_round_trip_through_yaml(tmp_path):
    for name in ZOO:
        spec, _ = zoo_spec(name)
        out = tmp_path / f"{spec.name}.yaml"
        save_spec(spec, out)
        again = load_spec(out)
        assert again == spec
        assert spec_from_dict(copy.deepcopy(spec.to_dict())) == spec


def test_compound_scaling_matches_reference():
    spec = load_spec(EFFNET)
    repeats = {}
    for v in "SML":
        arch = resolve(spec, v)
        stages = [b.name.split("_")[1] for b in arch.blocks]
        repeats[v] = [stages.count(str(s)) for s in range(6)]
    assert repeats == {"S": [1, 2, 4, 5, 4, 2], "M": [2, 3, 5, 6, 5, 3], "L": [2, 3, 6, 7, 6, 3]}
    large = resolve(spec, "L")
    assert large.stem.filters == 40 and large.head_filters == 1536
    assert sorted(set(b.output_filters for b in large.blocks)) == [32, 40, 56, 112, 176, 232]
    assert (large.resolution, large.dropout) == (300, 0.3)
    first = resolve(spec, "S").blocks[0]
    assert (first.input_filters, first.expand_filters, first.output_filters, first.residual) == (32, 96, 24, False)
    # drop-connect decays linearly over blocks: block i survives with 1 - 0.2 * i / n
    assert [round(b.drop_rate, 6) for b in resolve(spec, "S").blocks[:3]] == [0.0, round(0.2 / 18, 6),
                                                                              round(0.4 / 18, 6)]


def test_make_divisible_is_efficientnet_round_filters():
    assert [make_divisible(v) for v in (32 * 1.2, 24 * 1.2, 1280 * 1.2, 144 * 1.2, 7)] == [40, 32, 1536, 176, 8]


def test_unknown_variant_is_one_line():
    spec = load_spec(EFFNET)
    with pytest.raises(SpecError, match=r"no variant 'XL' \(available: S, M, L\)"):
        resolve(spec, "XL")


def test_spec_parsing_and_profiling_do_not_import_tensorflow():
    code = ("import sys; from edgetpu_models import profile; g = profile('efficientnet_edgetpu_l'); "
            "assert g.params == 10589712; assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_validation_and_resolution_memos_change_no_answer():
    """spec.py reuses records that passed validation and stages it resolved (the latency server's hot path): a record
    equal to a valid one only up to type (True for 1, 3.0 for 3, 0 for false) is still refused, naming its field, and
    every zoo model resolves the same after the others filled the memos as it does alone."""
    from edgetpu_models import spec as spec_mod

    data = _base()
    spec_from_dict(copy.deepcopy(data))
    stage = data["stages"][0]
    assert (stage["stride"], stage["kernel"], stage["skip"]) == (1, 3, False)
    for field, value in (("stride", True), ("kernel", 3.0), ("skip", 0)):
        bad = copy.deepcopy(data)
        bad["stages"][0][field] = value
        with pytest.raises(SpecError, match=rf"stages\[0\]\.{field}: expected"):
            spec_from_dict(bad)
    models = [(name, v) for name in ZOO for v in [zoo_spec(name)[1]] + [None]]
    cold = {}
    for name, v in models:
        spec_mod._STAGE_BLOCKS.clear()
        cold[name, v] = resolve(zoo_spec(name)[0], v)
    for name, v in models:
        assert resolve(zoo_spec(name)[0], v) == cold[name, v], name
