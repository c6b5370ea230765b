"""`evaluate` and the shipped ImageNet class names: top-1/top-5 on ImageNet validation layouts for 1000- and
1001-class heads, class names offline (decode_predictions, classify, export), the train pipeline's exact pixels, and
one-line errors. (Float against int8 on the demo's own files is checked in test_demo.py.)"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from edgetpu_models import cli, imagenet
from edgetpu_models.spec import Normalization

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

TABBY = 281  # "n02123045", "tabby, tabby cat"
PIXEL_NORM = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def nearest_class_model(outputs: int):
    """Linear head on the mean red value m: score_j = 2 v_j m - v_j^2 with v_j = (j - 1) / 4, so the top-1 of a solid
    image of red value p is class 4p + 1 and its top-5 the classes nearest to it. A 1001-class head puts background
    (never chosen) at 0 and class j at j + 1."""
    import tf_keras as keras

    v = (np.arange(1000) - 1) / 4.0
    kernel = np.zeros((3, 1000), np.float32)
    kernel[0] = 2 * v
    bias = (-v * v).astype(np.float32)
    if outputs == 1001:
        kernel, bias = np.concatenate([np.zeros((3, 1), np.float32), kernel], 1), np.concatenate([[-1e6], bias])
    i = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.GlobalAveragePooling2D()(i)
    x = keras.layers.Dense(outputs)(x)
    model = keras.Model(i, x)
    model.layers[-1].set_weights([kernel, bias.astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """A float .tflite of each head size, exported with no labels: export must name the ImageNet classes."""
    from edgetpu_models.deploy.export import export_tflite

    folder = tmp_path_factory.mktemp("heads")
    return {n: export_tflite(nearest_class_model(n), str(folder / f"head{n}.tflite"), int8=False,
                             model_name=f"head{n}", normalization=PIXEL_NORM) for n in (1000, 1001)}


def solid(path, red: int, size=(40, 30)) -> None:
    Image.new("RGB", size, (red, 7, 200)).save(path)


# red value -> (true class): top-1 hit; top-5 hit only (class 4p+2 is second); neither
CASES = [(10, 41), (20, 82), (30, 500)]


def imagenet_flat(folder, how: str):
    """ImageNet validation as a flat folder (ILSVRC2012_val_0000000N.png) plus a ground-truth file in one of the
    accepted forms."""
    os.makedirs(folder / "val", exist_ok=True)
    wnids = imagenet.wordnet_ids()
    lines = ["ImageId,PredictionString"] if how == "csv" else []
    for n, (red, cls) in enumerate(CASES, start=1):
        name = f"ILSVRC2012_val_{n:08d}"
        solid(folder / "val" / f"{name}.png", red)  # lossless: the red value is the class
        label = str(cls) if how == "index" else wnids[cls]
        lines.append(f"{name},{label} 1 2 3 4" if how == "csv" else f"{name}.png {label}")
    gt = folder / ("LOC_val_solution.csv" if how == "csv" else f"val_{how}.txt")
    gt.write_text("\n".join(lines) + "\n")
    return str(folder / "val"), str(gt)


def devkit_ground_truth(folder):
    """The devkit's form: one ILSVRC2012_ID per line and meta.mat beside it, its IDs in an order of its own (here
    reversed: ILSVRC2012_ID k is class 1000 - k), so reading the IDs as class indices would fail."""
    from scipy.io import savemat

    wnids = imagenet.wordnet_ids()
    synsets = np.zeros(1000, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for k in range(1, 1001):
        synsets[k - 1] = (k, wnids[1000 - k], imagenet.class_names()[1000 - k])
    os.makedirs(folder / "devkit", exist_ok=True)
    savemat(str(folder / "devkit" / "meta.mat"), {"synsets": synsets})
    gt = folder / "devkit" / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("".join(f"{1000 - cls}\n" for _red, cls in CASES))
    return str(gt)


@pytest.mark.parametrize("outputs", [1000, 1001])
@pytest.mark.parametrize("how", ["wnid", "index", "csv", "devkit"])
def test_imagenet_flat_layout_top1_top5(heads, tmp_path, outputs, how):
    from edgetpu_models.deploy.evaluate import evaluate

    val, gt = imagenet_flat(tmp_path, how)
    gt = devkit_ground_truth(tmp_path) if how == "devkit" else gt
    report = evaluate([heads[outputs].path], val, ground_truth=gt, batch=2)
    (m,) = report.models
    assert report.images == 3 and report.layout.startswith("ImageNet validation")
    assert m.top1 == pytest.approx(1 / 3) and m.top5 == pytest.approx(2 / 3)
    assert m.preprocessing["pipeline"] == "reference" and m.preprocessing["crop_fraction"] == pytest.approx(16 / 48)
    wnids = imagenet.wordnet_ids()
    assert m.per_class[wnids[41]]["top1"] == 1.0 and m.per_class[wnids[82]]["top5"] == 1.0
    assert m.per_class[wnids[500]]["top5"] == 0.0
    assert m.per_class[wnids[41]]["name"] == imagenet.class_names()[41]


def test_wordnet_folders_and_json(heads, tmp_path, capsys):
    wnids = imagenet.wordnet_ids()
    for k, (red, cls) in enumerate(CASES):
        os.makedirs(tmp_path / wnids[cls], exist_ok=True)
        solid(tmp_path / wnids[cls] / f"img{k}.png", red)
    assert cli.main(["evaluate", heads[1001].path, heads[1000].path, "--data", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layout"] == "class folders (WordNet ids)" and out["images"] == 3
    for m in out["models"]:
        assert (m["top1"], m["top5"]) == pytest.approx((1 / 3, 2 / 3))
    assert out["comparisons"] == []  # two float models: nothing quantized to compare


def test_class_names_offline(heads, tmp_path, capsys):
    from edgetpu_models import efficientnet_edgetpu, mobilenet_edgetpu

    one_hot = np.zeros((1, 1000), np.float32)
    one_hot[0, TABBY] = 1.0
    assert efficientnet_edgetpu.decode_predictions(one_hot, top=1) == [[("n02123045", "tabby, tabby cat", 1.0)]]
    assert mobilenet_edgetpu.decode_predictions(np.roll(np.pad(one_hot, ((0, 0), (0, 1))), 1, 1), top=1)[0][0][:2] \
        == ("n02123045", "tabby, tabby cat")
    assert imagenet.class_names(1001)[0] == "background" and len(set(imagenet.wordnet_ids())) == 1000
    with open(heads[1000].labels_path, encoding="utf-8") as f:  # export wrote the names of the ImageNet head
        assert f.read().splitlines()[TABBY] == "tabby, tabby cat"
    solid(tmp_path / "cat.png", 70)  # class 4 * 70 + 1
    os.remove(heads[1001].labels_path)  # a file exported elsewhere, without labels: the shipped names still apply
    meta = json.loads(open(heads[1001].metadata_path).read())
    meta["labels"] = None
    with open(heads[1001].metadata_path, "w") as f:
        json.dump(meta, f)
    for head in (1000, 1001):
        assert cli.main(["classify", heads[head].path, str(tmp_path / "cat.png"), "--top-k", "1"]) == 0
        assert "tabby, tabby cat" in capsys.readouterr().out


def test_train_pipeline_pixels_are_the_training_pipeline_s(tmp_path):
    """evaluate's "train" preprocessing (numpy, no TensorFlow) equals load_image_folder's validation tensors."""
    from edgetpu_models.data import load_image_folder
    from edgetpu_models.deploy.eval_data import Preprocess

    rng = np.random.default_rng(0)
    for c, sizes in (("a", [(45, 31), (20, 20)]), ("b", [(31, 64), (100, 70)])):
        os.makedirs(tmp_path / c)
        for k, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / c / f"{k}.png")
    norm = Normalization((127.0, 120.0, 110.0), (128.0, 60.0, 70.0))
    data = load_image_folder(str(tmp_path), 24, norm, batch_size=8, validation_split=0.5, seed=0)
    pre = Preprocess((24, 24), "train", 0.875, norm)
    (images, _), = list(data.val)
    for path, x in zip(data.val_files, images.numpy()):
        np.testing.assert_array_equal(pre.load(path), x)


@pytest.mark.parametrize("args, expect", [
    (["--ground-truth", "GT"], "line 1: expected 'FILE LABEL'"),
    (["--ground-truth", "MISSING"], "no such ground-truth file"),
    ([], "no class sub-folders; for a flat ImageNet validation folder give the ground-truth file"),
    (["--split", "val", "--ground-truth", "GT"], "a ground-truth file lists its own images"),
    (["--ground-truth", "IDS"], "needs the devkit's meta.mat beside it"),
])
def test_bad_inputs_are_one_line_errors(heads, tmp_path, capsys, args, expect):
    val, _ = imagenet_flat(tmp_path, "wnid")
    gt = tmp_path / "bad.txt"
    gt.write_text("ILSVRC2012_val_00000001.png\n")
    ids = tmp_path / "ids.txt"
    ids.write_text("490\n361\n")
    names = {"GT": str(gt), "MISSING": str(tmp_path / "nope.txt"), "IDS": str(ids)}
    args = [names.get(a, a) for a in args]
    assert cli.main(["evaluate", heads[1000].path, "--data", val, *args]) == 1
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1


def test_classes_a_model_does_not_have(heads, tmp_path, capsys):
    for c in ("cat", "dog"):
        os.makedirs(tmp_path / c)
        solid(tmp_path / c / "x.png", 5)
    assert cli.main(["evaluate", heads[1000].path, "--data", str(tmp_path)]) == 1
    assert "class 'cat' is not one of the classes of" in capsys.readouterr().err


def test_keras_model_beside_its_int8_file(heads, tmp_path):
    """A .keras model (normalisation from its sidecar) is scored like the .tflite and compared with an int8 one."""
    from edgetpu_models.deploy.evaluate import evaluate
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.sidecar import Sidecar, write_sidecar

    model = nearest_class_model(1000)
    path = str(tmp_path / "head.keras")
    model.save(path)
    write_sidecar(path, Sidecar(model="head", normalization=PIXEL_NORM))
    calibration = [np.full((1, 16, 16, 3), v, np.float32) for v in np.linspace(0, 255, 100)]
    int8 = export_tflite(model, str(tmp_path / "head_int8.tflite"), representative=calibration,
                         normalization=PIXEL_NORM)
    val, gt = imagenet_flat(tmp_path, "wnid")
    report = evaluate([path, int8.path], val, ground_truth=gt, batch=2)
    keras_eval, int8_eval = report.models
    assert keras_eval.kind == "keras float" and (keras_eval.top1, keras_eval.top5) == pytest.approx((1 / 3, 2 / 3))
    assert keras_eval.preprocessing["normalization_from"].endswith("head.keras.json")
    (c,) = report.comparisons
    assert c.reference == path and c.quantized == int8.path and int8_eval.quantized
    assert 0.0 <= c.agreement <= 1.0 and c.max_abs_score_diff >= c.mean_abs_score_diff >= 0.0
