"""digits-hard: the harder offline set the one-shot ranking study trains on (edgetpu_models/hard_digits.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from edgetpu_models.errors import DatasetError
from edgetpu_models.hard_digits import make_hard_digits
from tests.helpers.train import digits_subset


def _pixels(folder):
    return {(c, f): np.asarray(Image.open(os.path.join(folder, c, f)))
            for c in sorted(os.listdir(folder)) for f in sorted(os.listdir(os.path.join(folder, c)))}


def test_one_distorted_copy_per_image_deterministic_for_a_seed(tmp_path):
    src = digits_subset(tmp_path, per_class=12)
    a = _pixels(make_hard_digits(tmp_path / "a", seed=3, source=src))
    b = _pixels(make_hard_digits(tmp_path / "b", seed=3, source=src))
    c = _pixels(make_hard_digits(tmp_path / "c", seed=4, source=src))
    original = _pixels(src)
    assert a.keys() == original.keys()  # same classes and file names: a split never holds two copies of one digit
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    assert all(a[k].shape == original[k].shape and not np.array_equal(a[k], original[k]) for k in a)


def test_existing_set_is_kept_and_no_partial_folder_is_left(tmp_path):
    src = digits_subset(tmp_path, per_class=3)
    out = make_hard_digits(tmp_path / "hard", source=src)
    first = _pixels(out)
    assert _pixels(make_hard_digits(out, seed=9, source=src)).keys() == first.keys()
    assert all(np.array_equal(v, _pixels(out)[k]) for k, v in first.items())
    with pytest.raises(DatasetError, match="no class folders"):
        make_hard_digits(tmp_path / "none", source=tmp_path / "hard" / "0")
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []
