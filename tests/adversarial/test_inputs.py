"""Inputs a user really has: decompression bombs, odd files in a dataset, every image mode Pillow opens, folders that
link back to the dataset, failed demos, learning rates that make the loss diverge. All inputs are generated here."""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edgetpu_models.data import list_image_folder, load_image_folder, read_rgb, to_rgb8
from edgetpu_models.errors import DatasetError, EdgeTPUModelsError
from edgetpu_models.spec import Normalization
from tests.helpers.cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

IDENTITY = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height pixels, compressed row by row (a few KB for 10^8 pixels)."""
    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def header_only_png(width: int, height: int) -> bytes:
    """Just a PNG header claiming width x height 8-bit RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _write_images(folder, classes=("a", "b"), per_class=3, size=(18, 18)) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(folder / c, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / c / f"{i}.png")


def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from edgetpu_models.deploy.export import export_tflite
    from tests.helpers.tflite_models import tiny_keras

    out = tmp_path_factory.mktemp("model") / "tiny.tflite"
    export_tflite(tiny_keras(), out, random_calibration=True, labels=["a", "b", "c", "d"])
    return out


# -- decompression bombs ------------------------------------------------------------------------------------------

def test_decompression_bombs_are_one_line_in_classify(tiny_model, tmp_path):
    warn = tmp_path / "warn_bomb.png"  # 1.0e8 pixels: over MAX_IMAGE_PIXELS (Pillow only warns), under twice it
    warn.write_bytes(bilevel_png(10_000, 10_000))
    refuse = tmp_path / "bomb.png"  # 4e8 pixels: Pillow itself refuses
    refuse.write_bytes(header_only_png(20_000, 20_000))
    assert warn.stat().st_size < 40_000
    for path in (warn, refuse):
        result = run_cli("classify", str(tiny_model), str(path))
        assert_one_line_error(result, path.name, "DecompressionBomb")
        assert result.stdout == ""


def test_decompression_bomb_in_a_dataset_is_skipped_and_counted(tmp_path):
    _write_images(tmp_path)
    (tmp_path / "a" / "warn_bomb.png").write_bytes(bilevel_png(10_000, 10_000))
    (tmp_path / "b" / "bomb.png").write_bytes(header_only_png(20_000, 20_000))
    folder = list_image_folder(tmp_path)
    assert sorted(os.path.basename(p) for p in folder.skipped) == ["bomb.png", "warn_bomb.png"]
    assert folder.class_names == ["a", "b"] and len(folder.files) == 6
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own limit is left as it is for everyone else
    with pytest.raises(DatasetError, match="warn_bomb.png: not a readable image .DecompressionBombWarning"):
        read_rgb(str(tmp_path / "a" / "warn_bomb.png"))


# -- what counts as a file in a dataset ---------------------------------------------------------------------------

def test_dataset_listing_considers_regular_files_only(tmp_path):
    root = tmp_path / "d"
    _write_images(root)
    os.mkfifo(root / "a" / "fifo.png")  # opening it would block forever
    os.symlink("/dev/zero", root / "a" / "zero.jpg")  # a device: endless bytes
    os.symlink(root / "b" / "0.png", root / "a" / "linked.png")  # a link to a regular file counts
    os.mkdir(root / "b" / "folder.png")
    short = f"/tmp/sock{os.getpid()}.png"  # AF_UNIX paths are short; the link puts the socket in the dataset
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(short)
        try:
            os.symlink(short, root / "b" / "sock.png")
            folder = list_image_folder(root)
        finally:
            os.unlink(short)
    names = sorted(os.path.relpath(p, root) for p in folder.files)
    assert names == ["a/0.png", "a/1.png", "a/2.png", "a/linked.png", "b/0.png", "b/1.png", "b/2.png"]
    assert folder.skipped == []
    with pytest.raises(DatasetError, match="fifo.png: not a regular file"):
        read_rgb(str(root / "a" / "fifo.png"))


def test_folders_linking_back_are_not_classes_and_do_not_hang(tmp_path):
    root = tmp_path / "d"
    _write_images(root)
    os.symlink(root, root / "root_link")
    os.symlink("..", root / "parent_link")
    os.symlink(tmp_path, root / "ancestor_link")
    os.symlink(root / "loop2", root / "loop1")
    os.symlink(root / "loop1", root / "loop2")
    os.symlink(root, root / "a" / "back_to_root")  # inside a class: not followed
    folder = list_image_folder(root)
    assert folder.class_names == ["a", "b"]
    assert len(folder.files) == 6 and folder.skipped == []


# -- image modes --------------------------------------------------------------------------------------------------

def _mode_cases() -> list[tuple[str, Image.Image, tuple[int, int, int]]]:
    """(name, a 1x1 image, the 8-bit RGB it must become)."""
    p = Image.new("P", (1, 1), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p_transparent = p.copy()
    p_transparent.info["transparency"] = 1
    pa = Image.new("PA", (1, 1), (1, 0))
    pa.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    return [
        ("1", Image.new("1", (1, 1), 1), (255, 255, 255)),
        ("L", Image.new("L", (1, 1), 77), (77, 77, 77)),
        ("LA opaque", Image.new("LA", (1, 1), (77, 255)), (77, 77, 77)),
        ("LA transparent", Image.new("LA", (1, 1), (77, 0)), (255, 255, 255)),
        ("LA half", Image.new("LA", (1, 1), (0, 128)), (127, 127, 127)),
        ("P", p, (10, 20, 30)),
        ("P transparent", p_transparent, (255, 255, 255)),
        ("PA transparent", pa, (255, 255, 255)),
        ("RGBA transparent", Image.new("RGBA", (1, 1), (10, 20, 30, 0)), (255, 255, 255)),
        ("RGBA opaque", Image.new("RGBA", (1, 1), (10, 20, 30, 255)), (10, 20, 30)),
        ("CMYK", Image.new("CMYK", (1, 1), (0, 255, 0, 0)), (255, 0, 255)),
        ("YCbCr", Image.new("YCbCr", (1, 1), (128, 128, 128)), (128, 128, 128)),
        ("LAB", Image.new("LAB", (1, 1), (255, 128, 128)), (255, 255, 255)),
        ("HSV", Image.new("HSV", (1, 1), (0, 255, 255)), (255, 0, 0)),
        ("I;16", Image.new("I;16", (1, 1), 32768), (128, 128, 128)),
        ("I", Image.new("I", (1, 1), 65535), (255, 255, 255)),
        ("F", Image.new("F", (1, 1), 0.5), (128, 128, 128)),
        ("RGBX", Image.new("RGBX", (1, 1), (10, 20, 30, 0)), (10, 20, 30)),
        ("RGB", Image.new("RGB", (1, 1), (10, 20, 30)), (10, 20, 30)),
    ]


@pytest.mark.parametrize("name,image,expected", _mode_cases(), ids=[c[0] for c in _mode_cases()])
def test_every_mode_becomes_faithful_rgb(name, image, expected):
    out = to_rgb8(image)
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out, int)[0, 0] - expected).max() <= 1, (name, out.getpixel((0, 0)))


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    ramp16 = np.linspace(0, 65535, 18 * 18).reshape(18, 18).astype(np.uint16)
    Image.fromarray(ramp16).save(tmp_path / "ramp16.png")
    rgb = np.asarray(read_rgb(str(tmp_path / "ramp16.png")), int)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    assert np.abs(rgb[..., 0] - np.round(ramp16 / 257.0)).max() <= 1  # not clipped: a grey ramp, not white
    wide = np.linspace(-1.0, 3.0, 18 * 18, dtype=np.float32).reshape(18, 18)  # outside 0..1 and 0..255: stretched
    assert np.asarray(to_rgb8(Image.fromarray(wide)), int)[0, 0, 1] == 0
    assert np.asarray(to_rgb8(Image.fromarray(wide)), int)[-1, -1, 1] == 255
    odd = np.array([[np.nan, 0.25]], np.float32)
    assert np.asarray(to_rgb8(Image.fromarray(odd)), int)[0, :, 0].tolist() == [0, 64]


def test_tf_pipeline_and_pillow_give_the_same_pixels(tmp_path):
    """8-bit RGB and grey PNG/JPEG go through TensorFlow's decoders, every other mode through Pillow's: the pixels
    are `read_rgb`'s, for each of them (18x18 images: the 16 px centre crop needs no resize)."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (18, 18, 3), dtype=np.uint8)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(rgb).save(tmp_path / c / "rgb.png")
        Image.fromarray(rgb).save(tmp_path / c / "rgb.jpg", quality=80)
        Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / c / "rgba.png")
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / c / "gray16.png")
        Image.fromarray(rgb).convert("P").save(tmp_path / c / "palette.gif", transparency=3)
        Image.fromarray(rgb).convert("CMYK").save(tmp_path / c / "cmyk.jpg")
        Image.fromarray(rgb[..., 1]).save(tmp_path / c / "gray.png")  # 8-bit grey: TensorFlow's decoders too
        Image.fromarray(rgb[..., 2]).save(tmp_path / c / "gray.jpg", quality=80)
    data = load_image_folder(tmp_path, 16, IDENTITY, batch_size=64, validation_split=0.5, seed=0)
    assert data.skipped == 0 and data.num_train + data.num_val == 16
    for files, ds in ((data.train_files, data.train_plain), (data.val_files, data.val)):
        batch = np.concatenate([x.numpy() for x, _ in ds])
        assert len(batch) == len(files)
        for path, pixels in zip(files, batch):
            want = np.asarray(read_rgb(path), np.float32)[1:17, 1:17]
            assert np.array_equal(pixels, want), (path, np.abs(pixels - want).max())


# -- demo and training --------------------------------------------------------------------------------------------

def test_failed_demo_removes_the_run_folder_it_created(tmp_path):
    from edgetpu_models.deploy.demo import DemoConfig, run_demo

    out = tmp_path / "run"
    result = run_cli("demo", "--data", str(tmp_path / "missing"), "--out", str(out))
    assert_one_line_error(result, "missing", "no such dataset folder")
    assert not out.exists()
    with pytest.raises(EdgeTPUModelsError, match="epochs: expected an integer >= 1, got 0"):
        run_demo(DemoConfig(epochs=0, out=str(out)))
    assert not out.exists()
    kept = tmp_path / "users_folder"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError):
        run_demo(DemoConfig(data=str(tmp_path / "missing"), out=str(kept)))
    assert _snapshot(kept) == {"notes.txt": b"mine"}


@pytest.mark.parametrize("field_name", ["learning_rate", "warmup_epochs", "weight_decay", "label_smoothing"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused_by_the_train_config(field_name, value):
    from edgetpu_models.train import TrainConfig, TrainError

    with pytest.raises(TrainError, match=f"{field_name}: expected a finite number"):
        TrainConfig(**{field_name: value}).validate()


def test_a_diverging_run_fails_naming_the_epoch_and_saves_no_model(tmp_path):
    from edgetpu_models.train import TrainConfig, TrainError, _json, train
    from tests.helpers.train import digits_subset, tiny_spec

    spec, data = tiny_spec(tmp_path), digits_subset(tmp_path, classes=("0", "1"), per_class=16)
    config = TrainConfig(epochs=2, batch_size=8, resolution=32, learning_rate=1e30, warmup_epochs=0.0)
    with pytest.raises(TrainError, match=r"^epoch 1: the training loss became (nan|inf) .*lower learning rate") as e:
        train(spec, data, str(tmp_path / "run"), config, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "model.keras").exists()
    history = tmp_path / "run" / "history.json"
    assert not history.exists() or json.loads(history.read_text()) == []
    assert _json([{"loss": math.nan, "top1": math.inf}]) == '[\n {\n  "loss": null,\n  "top1": null\n }\n]\n'
