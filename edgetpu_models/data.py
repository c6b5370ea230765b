"""Image-folder datasets through tf.data: one sub-folder per class, decoded, resized and normalised for a model.

    data = load_image_folder(default_dataset_dir(), 96, normalization_of("efficientnet_edgetpu_s"), augment=True)
    model.fit(data.train, validation_data=data.val)

The folder is listed and every file checked with Pillow up front (cheap: headers and PNG checksums), so a broken or
mislabelled file (a text file named .jpg) is skipped and counted rather than crashing training an hour in; a missing
or empty folder, or a single class, is a one-line `DatasetError`. A decompression bomb counts as unreadable; every
image mode Pillow opens becomes 8-bit RGB the same way everywhere (`to_rgb8`, alpha over white), and plain RGB
PNG/JPEG files that TensorFlow decodes give the very pixels Pillow would. The train/validation split is per class
(each class keeps its share in both) and seeded, so the same seed gives the same split on every machine.

The decoded images are resized once (shorter side to `image_size / 0.875`, centre square), kept as uint8 and cached;
per epoch the training images get a random `image_size` crop and a horizontal flip, the validation images the centre
crop. Augmentation uses stateless random ops seeded by (seed, epoch, index), so `train_epoch(e)` is the same stream
on every run: a resumed training run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import threading
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator, Sequence

import numpy as np

from edgetpu_models.errors import DatasetError
from edgetpu_models.spec import Normalization, Spec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
"""What a class folder's images are named; other files in a class folder are ignored (not counted as skipped)."""
_PIL_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "MPO"}
CROP_FRACTION = 0.875
"""Centre crop of the evaluation images (and the size the random training crop is taken from), as in the reference."""
BACKGROUND = (255, 255, 255)
"""What transparent pixels are composited over: white."""
DECODE_PNG, DECODE_JPEG, DECODE_PILLOW = 0, 1, 2
"""How the tf.data pipeline decodes a file: TensorFlow for plain 8-bit RGB PNG and RGB JPEG (bit-identical to Pillow,
the JPEG with the accurate DCT), Pillow's `to_rgb8` for every other mode."""
_OPEN_LOCK = threading.Lock()
_ALPHA_MODES = {"LA", "PA", "RGBA", "RGBa"}


def default_dataset_dir() -> str:
    """The bundled default dataset: 1797 real handwritten digits in 10 class folders (see datasets/README.md)."""
    return str(resources.files("edgetpu_models") / "datasets" / "digits")


def read_rgb(path: str) -> Any:
    """One image file -> a PIL image in 8-bit RGB (`to_rgb8`), the file closed; DatasetError naming the file when it
    is missing, not a regular file, not an image, or a decompression bomb (more than Image.MAX_IMAGE_PIXELS pixels:
    Pillow warns above that and refuses above twice that; both are refused here, without changing Pillow's limit)."""
    if not os.path.exists(path):  # a dangling symlink included
        raise DatasetError(f"{path}: no such image file")
    if not _is_regular_file(path):
        raise DatasetError(f"{path}: not a regular file")
    try:
        with _opened(path) as im:
            return to_rgb8(im)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such image file") from None
    except _decode_errors() as e:
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__}: {_one_line(e)})") from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:300] + "..."


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for a file it cannot read (a decompression bomb included)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError,
            Image.DecompressionBombWarning)


@contextlib.contextmanager
def _opened(path: str) -> Iterator[Any]:
    """Image.open with its decompression-bomb warning raised as an error (only around this call: the warning filter
    is process-wide, so the lock keeps concurrent opens from undoing each other's filter)."""
    from PIL import Image

    with open(path, "rb") as f:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(f)
        with im:
            yield im


def to_rgb8(im: Any) -> Any:
    """Any Pillow image -> 8-bit RGB, faithfully: alpha (LA, PA, RGBA, a palette or colour-key transparency) is
    composited over `BACKGROUND` (white); 16-bit (I;16*) is scaled to 8 bits (v * 255 / 65535, not clipped); 32-bit
    integers (I) the same when they fit 16 bits, else stretched from their min..max; floats (F) are taken as 0..1
    when they lie in it, as 0..255 when they lie in that, else stretched from their min..max (NaN/inf -> 0). Every
    other mode (1, L, P, CMYK, YCbCr, LAB, HSV, RGBX, ...) goes through Pillow's own conversion."""
    from PIL import Image

    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im), mode)).convert("RGB")
    if mode == "La":
        im, mode = im.convert("RGBa"), "RGBa"
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """A single-band 16-bit, 32-bit integer or float image -> uint8 (see `to_rgb8`)."""
    x = np.asarray(values, np.float64)
    finite = np.isfinite(x)
    x = np.where(finite, x, 0.0)
    lo, hi = (float(x[finite].min()), float(x[finite].max())) if finite.any() else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        scaled = x * (255.0 / 65535.0)
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = x * 255.0
    elif mode == "F" and lo >= 0 and hi <= 255:
        scaled = x
    else:
        scaled = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _check_image(path: str) -> int | None:
    """The decoder for a readable image file (DECODE_*), None for one that is not (cheap: headers and PNG checksums).
    """
    try:
        with _opened(path) as im:
            if im.format not in _PIL_FORMATS:
                return None
            decoder = _decoder_for(im)
            im.verify()
        if im.format == "JPEG" and not _jpeg_ends(path):
            with _opened(path) as im:  # no end marker: decode it whole to know (a truncated file fails here)
                im.load()
        return decoder
    except _decode_errors():
        return None


def _jpeg_ends(path: str, tail: int = 1 << 16) -> bool:
    """Whether a JPEG file has its end-of-image marker (FF D9) in its last `tail` bytes: a file cut short (a partial
    download, a full disk) has not, and `verify` reads headers only. 0xFF inside the compressed data is always
    followed by 00 or a restart marker, so FF D9 there is the real end (or a thumbnail's, then more data follows)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - tail))
            return b"\xff\xd9" in f.read()
    except OSError:
        return False


def _decoder_for(im: Any) -> int:
    """TensorFlow's own decoder for 8-bit RGB and 8-bit greyscale PNG/JPEG (it replicates grey into three channels, as
    `to_rgb8` does, so the pixels are the same); Pillow through `to_rgb8` for every other mode."""
    if im.mode not in ("RGB", "L") or "transparency" in im.info:
        return DECODE_PILLOW
    if im.format == "JPEG":
        return DECODE_JPEG
    if im.format == "PNG" and len(im.tile) == 1 and im.tile[0][3] in ("RGB", "L"):  # 8 bits per channel
        return DECODE_PNG
    return DECODE_PILLOW


def _pillow_pixels(path: bytes) -> np.ndarray:
    """For tf.numpy_function: the file's `to_rgb8` pixels [H, W, 3] uint8."""
    return np.asarray(read_rgb(os.fsdecode(path)), np.uint8)


@dataclass(frozen=True)
class ImageFolder:
    """The listing of a dataset folder after checking every image."""

    directory: str
    class_names: list[str]
    files: list[str]
    labels: list[int]
    skipped: list[str] = field(default_factory=list)
    """Files with an image extension that could not be read as an image (a decompression bomb among them)."""
    decoders: list[int] = field(default_factory=list)
    """Per file, which decoder the tf.data pipeline uses (DECODE_PNG, DECODE_JPEG or DECODE_PILLOW)."""


def list_image_folder(directory: "str | os.PathLike[str]") -> ImageFolder:
    """Lists `directory/<class>/<image>` and checks each image; raises DatasetError on a folder that cannot train.

    Only regular files count (a symlink to one is fine; FIFOs, sockets, devices and folders named like images are
    ignored). A class folder that is, or links to, the dataset folder or one of its ancestors (and a symlink loop)
    is not a class; symlinked folders inside a class are not followed, so the listing always ends.
    """
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise DatasetError(f"{directory}: no such dataset folder (expected one sub-folder of images per class)")
    if not os.path.isdir(directory):
        raise DatasetError(f"{directory}: not a folder (expected one sub-folder of images per class)")
    listing = _Listing()
    for name in _class_dirs(directory):
        listing.add_class(name, os.path.join(directory, name))
    exts = ", ".join(IMAGE_EXTENSIONS)
    if not listing.files:
        skipped = listing.skipped
        what = f"{len(skipped)} unreadable image file(s) and no readable one" if skipped else "no image files"
        raise DatasetError(f"{directory}: {what}; expected one sub-folder per class holding images ({exts})")
    if len(listing.class_names) < 2:
        raise DatasetError(f"{directory}: only one class ({listing.class_names[0]!r}) has images; a classifier needs "
                           f"at least two sub-folders of images")
    return ImageFolder(directory, listing.class_names, listing.files, listing.labels, listing.skipped,
                       listing.decoders)


def _class_dirs(directory: str) -> list[str]:
    """The class folder names: visible sub-folders that are not the dataset folder itself or one of its ancestors."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise DatasetError(f"{directory}: cannot list the dataset folder ({e.strerror})") from None
    root = os.path.realpath(directory)
    kept = []
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isdir(path):  # isdir is False for a symlink loop or a dangling link
            continue
        real = os.path.realpath(path)
        if root == real or root.startswith(real.rstrip(os.sep) + os.sep):
            continue
        kept.append(name)
    return kept


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass
class _Listing:
    """The dataset listing as it is built, class by class."""

    class_names: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    decoders: list[int] = field(default_factory=list)

    def add_class(self, name: str, folder: str) -> None:
        """Adds the readable images under `folder` as class `name` (if it has any); counts the unreadable ones."""
        found: list[tuple[str, int]] = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for fname in sorted(names):
                path = os.path.join(root, fname)
                if fname.startswith(".") or not fname.lower().endswith(IMAGE_EXTENSIONS) or \
                        not _is_regular_file(path):
                    continue
                decoder = _check_image(path)
                if decoder is None:
                    self.skipped.append(path)
                else:
                    found.append((path, decoder))
        if found:
            self.files.extend(p for p, _ in found)
            self.decoders.extend(d for _, d in found)
            self.labels.extend([len(self.class_names)] * len(found))
            self.class_names.append(name)


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
    from edgetpu_models.zoo import normalization_of

    return normalization_of(normalization)


def decoded_side(size: int, crop_fraction: float = CROP_FRACTION) -> int:
    """Side of the square the shorter image side is resized to before the centre `size` crop: size / crop_fraction
    (at least `size`). The one definition, used by the tf.data pipeline and by `centre_crop`."""
    return max(size, int(round(size / crop_fraction)))


def centre_crop(im: Any, size: "int | tuple[int, int]", crop_fraction: float = CROP_FRACTION) -> np.ndarray:
    """An 8-bit RGB PIL image -> the validation crop [H, W, 3] uint8, in numpy (no TensorFlow): the shorter side
    resized to `decoded_side` with antialiased bilinear interpolation, rounded to uint8, centre square, centre crop.

    The arithmetic is TensorFlow's (`tf.image.resize(antialias=True)` then `resize_with_crop_or_pad`) redone in float32,
    so the pixels equal the tf.data validation tensors of `load_image_folder` exactly (tests/test_evaluate.py holds
    them equal): the one crop every inference path (classify, evaluate, the runtime) uses.
    """
    h_out, w_out = (size, size) if isinstance(size, int) else size
    pre = max(h_out, w_out, decoded_side(max(h_out, w_out), crop_fraction))
    w, h = im.size
    scale = np.float32(pre) / np.float32(min(w, h))
    nw = max(pre, int(np.round(np.float32(w) * scale)))
    nh = max(pre, int(np.round(np.float32(h) * scale)))
    pixels = np.asarray(im, np.float32)
    pixels = np.einsum("oh,hwc->owc", _antialias_weights(h, nh), pixels)
    pixels = np.einsum("pw,owc->opc", _antialias_weights(w, nw), pixels)
    pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    top, left = (nh - pre) // 2, (nw - pre) // 2  # tf.image.resize_with_crop_or_pad(pre, pre)
    top, left = top + (pre - h_out) // 2, left + (pre - w_out) // 2  # then (size, size)
    return pixels[top:top + h_out, left:left + w_out]


@lru_cache(maxsize=64)
def _antialias_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] float32 weights of tf.image.resize(antialias=True, method="bilinear") along one axis: TensorFlow's
    scale_and_translate spans (triangle kernel widened by the shrink factor, normalised per output), in float32 as
    TensorFlow computes them; rows then columns reproduces its output exactly."""
    one, half = np.float32(1.0), np.float32(0.5)
    inv_scale = one / (np.float32(out_size) / np.float32(in_size))
    kernel_scale = max(inv_scale, one)
    weights = np.zeros((out_size, in_size), np.float32)
    for x in range(out_size):
        centre = np.float32(x + 0.5) * inv_scale
        start = min(max(int(np.ceil(centre - kernel_scale - half)), 0), in_size - 1)
        end = min(max(int(np.floor(centre + kernel_scale - half)), 0), in_size - 1) + 1
        src = np.arange(start, end, dtype=np.float32)
        w = np.maximum(np.float32(0), one - np.abs((src + half - centre) * (one / kernel_scale))).astype(np.float32)
        total = np.float32(0)
        for v in w:  # TensorFlow sums in order, in float32
            total = np.float32(total + v)
        weights[x, start:end] = w * (one / total)
    return weights


def normalize_pixels(pixels: np.ndarray, normalization: Normalization) -> np.ndarray:
    """uint8 (or float 0..255) pixels -> (x - mean) / std in float32, the model's input scale."""
    mean = np.asarray(normalization.mean, np.float32)
    return (np.asarray(pixels, np.float32) - mean) / np.asarray(normalization.std, np.float32)


def load_image(path: str, size: int, normalization: Normalization) -> np.ndarray:
    """One image file -> the model's input [size, size, 3] float32 (centre crop, normalised), as validation sees it.

    Pillow and numpy (`read_rgb`, `centre_crop`), not TensorFlow, so inference stays light; raises DatasetError on an
    unreadable file, a decompression bomb or anything that is not a regular file.
    """
    return normalize_pixels(centre_crop(read_rgb(path), size), normalization)


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
    decoders = np.asarray(folder.decoders or [DECODE_PILLOW] * len(folder.files), np.int32)
    labels = np.asarray(folder.labels, np.int32)
    train_base = _decoded((files[train_idx], decoders[train_idx], labels[train_idx]), maps, cache, ".train")
    val_ds = _centre_batches(_decoded((files[val_idx], decoders[val_idx], labels[val_idx]), maps, cache, ".val"),
                             maps, batch_size)
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

        pre = decoded_side(image_size)
        return cls(image_size, pre, tf.constant(norm.mean, tf.float32), tf.constant(norm.std, tf.float32), flip)

    def decode(self, path, decoder, label):
        """Pixels from TensorFlow's decoder or Pillow's (`decoder`: DECODE_*), then resized as the maps say."""
        import tensorflow as tf

        def pillow():
            return tf.numpy_function(_pillow_pixels, [path], tf.uint8, stateful=False)

        img = tf.switch_case(decoder, [
            lambda: tf.io.decode_png(tf.io.read_file(path), channels=3),
            lambda: tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE"),
            pillow])
        img = tf.ensure_shape(img, [None, None, 3])
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


def _decoded(files_decoders_labels: tuple[np.ndarray, np.ndarray, np.ndarray], maps: _ImageMaps,
             cache: "bool | str", cache_suffix: str):
    """(uint8 image, label) pairs of the given (files, DECODE_* decoders, labels), in order, cached as `cache` says."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(files_decoders_labels)
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
