"""Image-folder datasets through tf.data: one sub-folder per class, decoded, resized and normalised for a model.

    data = load_image_folder(default_dataset_dir(), 96, normalization_of("efficientnet_edgetpu_s"), augment=True)
    model.fit(data.train, validation_data=data.val)

The folder is listed and every file checked with Pillow up front (cheap: headers and PNG checksums), so a broken or
mislabelled file (a text file named .jpg) is skipped and counted rather than crashing training an hour in; a missing
or empty folder, or a single class, is a one-line `DatasetError`. The train/validation split is per class (each class
keeps its share in both) and seeded, so the same seed gives the same split on every machine.

The decoded images are resized once (shorter side to `image_size / 0.875`, centre square), kept as uint8 and cached;
per epoch the training images get a random `image_size` crop and a horizontal flip, the validation images the centre
crop. Augmentation uses stateless random ops seeded by (seed, epoch, index), so `train_epoch(e)` is the same stream
on every run: a resumed training run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Sequence

import numpy as np

from edgetpu_models.errors import DatasetError
from edgetpu_models.spec import Normalization, Spec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
"""What tf.io.decode_image reads; other files in a class folder are ignored (not counted as skipped)."""
_PIL_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "MPO"}
CROP_FRACTION = 0.875
"""Centre crop of the evaluation images (and the size the random training crop is taken from), as in the reference."""


def default_dataset_dir() -> str:
    """The bundled default dataset: 1797 real handwritten digits in 10 class folders (see datasets/README.md)."""
    return str(resources.files("edgetpu_models") / "datasets" / "digits")


@dataclass(frozen=True)
class ImageFolder:
    """The listing of a dataset folder after checking every image."""

    directory: str
    class_names: list[str]
    files: list[str]
    labels: list[int]
    skipped: list[str] = field(default_factory=list)
    """Files with an image extension that could not be read as an image."""


def _readable(path: str) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format not in _PIL_FORMATS:
                return False
            im.verify()
        return True
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return False


def list_image_folder(directory: "str | os.PathLike[str]") -> ImageFolder:
    """Lists `directory/<class>/<image>` and checks each image; raises DatasetError on a folder that cannot train."""
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise DatasetError(f"{directory}: no such dataset folder (expected one sub-folder of images per class)")
    if not os.path.isdir(directory):
        raise DatasetError(f"{directory}: not a folder (expected one sub-folder of images per class)")
    class_dirs = sorted(d for d in os.listdir(directory)
                        if not d.startswith(".") and os.path.isdir(os.path.join(directory, d)))
    class_names: list[str] = []
    files: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    for name in class_dirs:
        found = []
        for root, dirs, names in os.walk(os.path.join(directory, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for fname in sorted(names):
                if fname.startswith(".") or not fname.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = os.path.join(root, fname)
                (found if _readable(path) else skipped).append(path)
        if found:
            files.extend(found)
            labels.extend([len(class_names)] * len(found))
            class_names.append(name)
    exts = ", ".join(IMAGE_EXTENSIONS)
    if not files:
        what = f"{len(skipped)} unreadable image file(s) and no readable one" if skipped else "no image files"
        raise DatasetError(f"{directory}: {what}; expected one sub-folder per class holding images ({exts})")
    if len(class_names) < 2:
        raise DatasetError(f"{directory}: only one class ({class_names[0]!r}) has images; a classifier needs at least "
                           f"two sub-folders of images")
    return ImageFolder(directory, class_names, files, labels, skipped)


def split_indices(labels: Sequence[int], validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class seeded split: (train indices, validation indices), each sorted. Every class with >= 2 images keeps
    at least one image on each side when 0 < validation_split < 1."""
    if not 0.0 <= validation_split < 1.0:
        raise DatasetError(f"validation_split: expected a fraction in [0, 1), got {validation_split!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * validation_split))
        if validation_split > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(val, np.int64))


@dataclass
class ImageFolderData:
    """Train and validation pipelines yielding (normalised float32 images [B,H,W,3], int32 labels [B])."""

    train: Any
    """tf.data.Dataset: shuffled and (if augment) augmented, a new order every time it is iterated."""
    val: Any
    """tf.data.Dataset: centre crops, fixed order."""
    train_plain: Any = None
    """tf.data.Dataset: the training images as validation sees them (centre crop, no augmentation), fixed order;
    e.g. calibration images for int8 export that are not held-out images."""
    class_names: list[str] = field(default_factory=list)
    num_train: int = 0
    num_val: int = 0
    skipped: int = 0
    image_size: int = 0
    batch_size: int = 32
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    val_labels: list[int] = field(default_factory=list)
    _make_train: Any = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_epoch(self, epoch: int):
        """The training stream of one epoch: the same order and augmentation for the same (seed, epoch), every run."""
        return self._make_train(epoch)

    def steps_per_epoch(self) -> int:
        return max(1, -(-self.num_train // self.batch_size))


def _norm_constants(normalization: "Normalization | Spec | str | os.PathLike[str]") -> Normalization:
    if isinstance(normalization, Normalization):
        return normalization
    from edgetpu_models.preprocessing import normalization_of

    return normalization_of(normalization)


def load_image(path: str, size: int, normalization: Normalization) -> np.ndarray:
    """One image file -> the model's input [size, size, 3] float32 (centre crop, normalised), as validation sees it.

    Pillow, not TensorFlow, so the classify command stays light; raises DatasetError on an unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            pre = max(size, int(round(size / CROP_FRACTION)))
            scale = pre / min(w, h)
            nw, nh = max(pre, int(round(w * scale))), max(pre, int(round(h * scale)))
            im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, np.float32)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such image file") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return (arr - np.asarray(normalization.mean, np.float32)) / np.asarray(normalization.std, np.float32)


def load_image_folder(directory: "str | os.PathLike[str]", image_size: int,
                      normalization: "Normalization | Spec | str | os.PathLike[str]", batch_size: int = 32,
                      validation_split: float = 0.2, seed: int = 0, augment: bool = False,
                      cache: "bool | str" = True, *, flip: bool = True) -> ImageFolderData:
    """A folder of class sub-folders -> ImageFolderData with tf.data pipelines (see the module docstring).

    `normalization` is a Normalization or anything `normalization_of` accepts (zoo name, spec path, Spec).
    `cache`: True keeps the resized uint8 images in memory, a string caches to that file, False re-decodes every epoch.
    `flip=False` turns off the horizontal flip (for data such as text where a mirror image is another class).
    """
    _check_sizes(image_size, batch_size)
    norm = _norm_constants(normalization)
    folder = list_image_folder(directory)
    train_idx, val_idx = split_indices(folder.labels, validation_split, seed)
    if len(train_idx) == 0:
        raise DatasetError(f"{folder.directory}: no training images left after the validation split")

    maps = _ImageMaps.create(image_size, norm, flip)
    files = np.asarray(folder.files)
    labels = np.asarray(folder.labels, np.int32)
    train_base = _decoded(files[train_idx], labels[train_idx], maps, cache, ".train")
    val_ds = _centre_batches(_decoded(files[val_idx], labels[val_idx], maps, cache, ".val"), maps, batch_size)
    streams = _TrainStreams(train_base, len(train_idx), maps, batch_size, seed, augment)
    return ImageFolderData(
        train=streams.reshuffling(), val=val_ds, train_plain=_centre_batches(train_base, maps, batch_size),
        class_names=folder.class_names, num_train=len(train_idx), num_val=len(val_idx),
        skipped=len(folder.skipped), image_size=image_size, batch_size=batch_size,
        train_files=[folder.files[i] for i in train_idx], val_files=[folder.files[i] for i in val_idx],
        val_labels=[folder.labels[i] for i in val_idx], _make_train=streams.epoch)


def _check_sizes(image_size: int, batch_size: int) -> None:
    if not isinstance(image_size, int) or image_size < 8:
        raise DatasetError(f"image_size: expected an integer >= 8, got {image_size!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DatasetError(f"batch_size: expected an integer >= 1, got {batch_size!r}")


@dataclass(frozen=True)
class _ImageMaps:
    """The per-image tf.data maps: decode (resize the shorter side to `pre`, centre square, uint8), then crop to
    `image_size` (centre, or random with a flip) and normalise."""

    image_size: int
    pre: int
    """Side of the decoded square: image_size / CROP_FRACTION (at least image_size)."""
    mean: Any
    std: Any
    flip: bool

    @classmethod
    def create(cls, image_size: int, norm: Normalization, flip: bool) -> "_ImageMaps":
        import tensorflow as tf

        pre = max(image_size, int(round(image_size / CROP_FRACTION)))
        return cls(image_size, pre, tf.constant(norm.mean, tf.float32), tf.constant(norm.std, tf.float32), flip)

    def decode(self, path, label):
        import tensorflow as tf

        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        img.set_shape([None, None, 3])
        hw = tf.cast(tf.shape(img)[:2], tf.float32)
        scale = self.pre / tf.reduce_min(hw)
        new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), self.pre)
        img = tf.image.resize(tf.cast(img, tf.float32), new_hw, antialias=True)
        img = tf.image.resize_with_crop_or_pad(img, self.pre, self.pre)
        return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8), label

    def finish(self, img, label):
        import tensorflow as tf

        return (tf.cast(img, tf.float32) - self.mean) / self.std, label

    def center(self, img, label):
        import tensorflow as tf

        return self.finish(tf.image.resize_with_crop_or_pad(img, self.image_size, self.image_size), label)

    def augment(self, seed_pair, img, label):
        """Random crop (and flip), from stateless ops seeded by `seed_pair`."""
        import tensorflow as tf

        s1 = tf.random.experimental.stateless_split(seed_pair, 2)
        img = tf.image.stateless_random_crop(img, [self.image_size, self.image_size, 3], seed=s1[0])
        if self.flip:
            img = tf.image.stateless_random_flip_left_right(img, seed=s1[1])
        return self.finish(img, label)


def _decoded(files: np.ndarray, labels: np.ndarray, maps: _ImageMaps, cache: "bool | str", cache_suffix: str):
    """(uint8 image, label) pairs of the given files, in order, cached as `cache` says."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    ds = ds.map(maps.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()  # a file Pillow accepted but TensorFlow cannot decode: dropped, not fatal
    if cache is True:
        ds = ds.cache()
    elif isinstance(cache, str) and cache:
        ds = ds.cache(cache + cache_suffix)
    return ds


def _centre_batches(ds: Any, maps: _ImageMaps, batch_size: int):
    """Centre crops, normalised and batched, in a fixed order (validation, and the plain training images)."""
    import tensorflow as tf

    return ds.map(maps.center, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class _TrainStreams:
    """The training streams over the decoded training images: per epoch (reproducible) or reshuffling."""

    decoded: Any
    count: int
    maps: _ImageMaps
    batch_size: int
    seed: int
    augment: bool

    def _with_augmentation(self, ds, seeds):
        import tensorflow as tf

        if not self.augment:
            return ds.map(self.maps.center, num_parallel_calls=tf.data.AUTOTUNE)
        ds = tf.data.Dataset.zip((seeds, ds))
        return ds.map(lambda s, el: self.maps.augment(s, *el), num_parallel_calls=tf.data.AUTOTUNE)

    def epoch(self, epoch: int):
        """One epoch's stream: order and augmentation seeded by (seed, epoch), the same on every run."""
        import tensorflow as tf

        epoch_seed = int(self.seed) * 1_000_003 + int(epoch)
        ds = self.decoded.shuffle(self.count, seed=epoch_seed, reshuffle_each_iteration=False)
        seeds = tf.data.Dataset.range(self.count).map(lambda i: tf.stack([tf.constant(epoch_seed, tf.int64), i]))
        ds = self._with_augmentation(ds, seeds)
        return ds.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)

    def reshuffling(self):
        """The plain `train` dataset for model.fit: reshuffled, and fresh augmentation seeds, on every iteration."""
        import tensorflow as tf

        seeds = tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True).batch(2)
        ds = self.decoded.shuffle(self.count, seed=self.seed, reshuffle_each_iteration=True)
        return self._with_augmentation(ds, seeds).batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
