"""Helpers for the train / inference / demo tests: a tiny spec and small class folders cut from the bundled digits."""

from __future__ import annotations

import os
import shutil

from edgetpu_models.data import default_dataset_dir

TINY_SPEC = """\
name: tiny_test_net
activation: relu
normalization: {mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5]}
stem: {filters: 8, kernel: 3, stride: 2}
stages:
  - {block: fused_ibn, repeats: 1, kernel: 3, stride: 2, expansion: 2, filters: 16}
  - {block: ibn, repeats: 1, kernel: 3, stride: 2, expansion: 2, filters: 24}
head: {filters: 32}
dropout: 0.2
drop_connect: 0.1
resolution: 32
"""


def tiny_spec(folder) -> str:
    path = os.path.join(folder, "tiny.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(TINY_SPEC)
    return path


def digits_subset(folder, classes=("0", "1", "7"), per_class: int | None = 60) -> str:
    """A copy of some classes of the bundled digits (first `per_class` files of each, None: all)."""
    src = default_dataset_dir()
    out = os.path.join(folder, "digits")
    for c in classes:
        os.makedirs(os.path.join(out, c), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(src, c)))[:per_class]:
            shutil.copy(os.path.join(src, c, name), os.path.join(out, c, name))
    return out


def trained_digits_net(tmp):
    """A tiny net trained on the digits 0, 1 and 7 at 32 px: (training result, its data, its normalisation, the
    dataset folder)."""
    from edgetpu_models.data import load_image_folder
    from edgetpu_models.train import TrainConfig, train
    from edgetpu_models.zoo import normalization_of

    spec = tiny_spec(tmp)
    data_dir = digits_subset(tmp, classes=("0", "1", "7"), per_class=80)
    norm = normalization_of(spec)
    cfg = TrainConfig(epochs=4, batch_size=8, resolution=32, learning_rate=0.05, bn_momentum=0.9, flip=False)
    data = load_image_folder(data_dir, 32, norm, batch_size=8, seed=0, augment=True, flip=False)
    result = train(spec, data_dir, os.path.join(str(tmp), "run"), cfg, data=data, progress=False)
    return result, data, norm, data_dir
