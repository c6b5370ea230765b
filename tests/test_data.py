"""Image-folder datasets: listing and checks (bad folders are one-line DatasetErrors), the seeded split, the
pipeline."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from edgetpu_models.data import default_dataset_dir, list_image_folder, load_image, load_image_folder, split_indices
from edgetpu_models.errors import DatasetError
from edgetpu_models.spec import Normalization

NORM = Normalization((127.0, 127.0, 127.0), (128.0, 128.0, 128.0))


def _write_images(folder, classes=("a", "b"), per_class=6, size=(20, 12)):
    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        os.makedirs(folder / c, exist_ok=True)
        for i in range(per_class):
            arr = np.full((size[1], size[0], 3), 40 + 150 * ci, np.uint8) + rng.integers(0, 20, (size[1], size[0], 3),
                                                                                         dtype=np.uint8)
            Image.fromarray(arr).save(folder / c / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_default_dataset_ships_real_digits():
    folder = list_image_folder(default_dataset_dir())
    assert folder.class_names == [str(d) for d in range(10)]
    assert len(folder.files) == 1797 and not folder.skipped
    assert min(np.bincount(folder.labels)) >= 170


def test_missing_and_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        list_image_folder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no image files") as e:
        list_image_folder(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "a").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no image files"):
        list_image_folder(tmp_path)
    f = tmp_path / "file.png"
    f.write_bytes(b"")
    with pytest.raises(DatasetError, match="not a folder"):
        list_image_folder(f)


def test_single_class_is_an_error(tmp_path):
    _write_images(tmp_path, classes=("only",))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="only one class .'only'. has images"):
        list_image_folder(tmp_path)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    _write_images(tmp_path)
    (tmp_path / "a" / "fake.jpg").write_text("this is text, not a JPEG")
    (tmp_path / "b" / "truncated.png").write_bytes((tmp_path / "b" / "1.png").read_bytes()[:40])
    (tmp_path / "b" / "readme.txt").write_text("ignored: not an image extension")
    data = load_image_folder(tmp_path, 16, NORM, batch_size=4, validation_split=0.25)
    assert data.skipped == 2
    assert data.class_names == ["a", "b"]
    assert data.num_train + data.num_val == 12
    assert sum(int(y.shape[0]) for _, y in data.train) == data.num_train
    assert sum(int(y.shape[0]) for _, y in data.val) == data.num_val


def test_all_images_unreadable_is_an_error(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "x.jpg").write_text("text")
    with pytest.raises(DatasetError, match="2 unreadable image file"):
        list_image_folder(tmp_path)


def test_split_is_seeded_and_per_class():
    labels = [0] * 50 + [1] * 10 + [2] * 2
    tr1, va1 = split_indices(labels, 0.2, seed=3)
    tr2, va2 = split_indices(labels, 0.2, seed=3)
    tr3, _ = split_indices(labels, 0.2, seed=4)
    assert (tr1 == tr2).all() and (va1 == va2).all() and not np.array_equal(tr1, tr3)
    assert sorted(np.concatenate([tr1, va1]).tolist()) == list(range(62))
    val_labels = np.asarray(labels)[va1]
    assert np.bincount(val_labels).tolist() == [10, 2, 1]
    with pytest.raises(DatasetError, match="validation_split"):
        split_indices(labels, 1.0, 0)


def test_pipeline_resizes_normalises_and_replays_epochs(tmp_path):
    _write_images(tmp_path, per_class=8, size=(40, 24))
    data = load_image_folder(tmp_path, 16, NORM, batch_size=5, validation_split=0.25, augment=True, seed=1)
    x, y = next(iter(data.val))
    assert x.shape[1:] == (16, 16, 3) and x.dtype.name == "float32" and y.dtype.name == "int32"
    assert -1.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0
    # val images of class b are bright (~190..210), class a dark (~40..60): normalisation applied per the constants
    means = {int(lbl): float(np.mean(img)) for img, lbl in zip(x.numpy(), y.numpy())}
    assert all((m > 0.3) if lbl == 1 else (m < -0.4) for lbl, m in means.items())
    e1 = [(a.numpy(), b.numpy()) for a, b in data.train_epoch(1)]
    e1_again = [(a.numpy(), b.numpy()) for a, b in data.train_epoch(1)]
    e2 = [b.numpy() for _, b in data.train_epoch(2)]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(e1, e1_again))
    assert not all(np.array_equal(a[1], b) for a, b in zip(e1, e2))
    assert data.steps_per_epoch() == len(e1) == 3
    assert len(data.val_files) == data.num_val == 4


def test_load_image_matches_validation_pipeline(tmp_path):
    _write_images(tmp_path, per_class=4, size=(30, 30))
    data = load_image_folder(tmp_path, 16, NORM, batch_size=8, validation_split=0.5)
    x, _ = next(iter(data.val))
    single = np.stack([load_image(f, 16, NORM) for f in data.val_files])
    np.testing.assert_array_equal(single, x.numpy())  # one crop arithmetic (data.centre_crop), TensorFlow's own
    (tmp_path / "t.jpg").write_text("text")
    with pytest.raises(DatasetError, match="not a readable image"):
        load_image(str(tmp_path / "t.jpg"), 16, NORM)
    with pytest.raises(DatasetError, match="no such image file"):
        load_image(str(tmp_path / "missing.jpg"), 16, NORM)
