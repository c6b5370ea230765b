"""deploy/runtime.py: one Runner for every .tflite; what classify accepts; the base install runs without TensorFlow."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from edgetpu_models.errors import DatasetError
from tests.helpers.train import trained_digits_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(REPO, "tests", "runtime_probe.py")
RUNTIME_MODULES = os.path.join(REPO, "tools", "runtime_modules.txt")


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A tiny net trained on the digits 0, 1 and 7, exported int8 (uint8 input/output) with its sidecar."""
    from edgetpu_models.deploy.export import export_tflite

    tmp = tmp_path_factory.mktemp("runtime")
    result, data, norm, data_dir = trained_digits_net(tmp)
    path = export_tflite(result.model, str(tmp / "digits_int8.tflite"), io_dtype="uint8",
                         representative=data.train_plain.unbatch().batch(1).take(150), normalization=norm,
                         labels=data.class_names, model_name="tiny").path
    return {"path": path, "data": data, "data_dir": data_dir, "tmp": tmp}


def _scores(runner, image):
    return runner.scores(runner.preprocess(image))[0]


def test_classify_takes_a_path_pathlike_pil_image_and_uint8_pixels_alike(digits_model):
    from edgetpu_models.deploy.runtime import Runner

    runner = Runner(digits_model["path"])
    for f in digits_model["data"].val_files[:6]:
        want = _scores(runner, f)
        with Image.open(f) as im:
            im.load()
            pixels = np.asarray(im)  # the digits are greyscale PNGs: [H, W] uint8
            rgb = np.asarray(im.convert("RGB"))
            for image in (pathlib.Path(f), im, pixels, rgb, rgb[:, :, :1], np.dstack([rgb, np.full_like(rgb[:, :, :1],
                                                                                                      255)])):
                np.testing.assert_array_equal(_scores(runner, image), want)
    result = runner.classify(pathlib.Path(digits_model["data"].val_files[0]), top_k=2)
    assert result.image == digits_model["data"].val_files[0] and len(result.predictions) == 2


def test_uint8_pixels_at_the_input_size_are_normalised_not_taken_as_input(digits_model, tmp_path):
    """The bug this replaces: a 32x32 uint8 crop of a 7 was quantized as if normalised, and came back as a 1."""
    from edgetpu_models.data import centre_crop, read_rgb
    from edgetpu_models.deploy.runtime import Runner

    runner = Runner(digits_model["path"])
    data = digits_model["data"]
    sevens = [f for f, y in zip(data.val_files, data.val_labels) if data.class_names[y] == "7"]
    hits = 0
    for f in sevens:
        pixels = centre_crop(read_rgb(f), 32)  # uint8 [32, 32, 3], already the input size
        x = runner.image_array(pixels)
        assert x.dtype == np.float32 and -1.01 <= x.min() and x.max() <= 1.01  # the spec's (x - 127.5) / 127.5
        Image.fromarray(pixels).save(tmp_path / "seven.png")
        np.testing.assert_array_equal(_scores(runner, pixels), _scores(runner, tmp_path / "seven.png"))
        hits += runner.classify(pixels, top_k=1).predictions[0].label == "7"
    assert hits >= 0.8 * len(sevens), (hits, len(sevens))


def test_a_float_array_is_the_normalised_input_of_exactly_the_input_size(digits_model):
    from edgetpu_models.data import load_image
    from edgetpu_models.deploy.runtime import Runner

    runner = Runner(digits_model["path"])
    f = digits_model["data"].val_files[0]
    x = load_image(f, 32, runner.normalization)
    np.testing.assert_array_equal(_scores(runner, x), _scores(runner, f))
    np.testing.assert_array_equal(_scores(runner, x.astype(np.float64)), _scores(runner, f))
    with pytest.raises(DatasetError, match=r"must be \[32, 32, 3\], got \[40, 40, 3\] \(give pixels as uint8"):
        runner.classify(np.zeros((40, 40, 3), np.float32))


@pytest.mark.parametrize("image, message", [
    (np.zeros((8, 8, 3), np.int64), "expected uint8 pixels or the normalised float input, got a int64 array"),
    (np.zeros((8, 8, 5), np.uint8), r"a uint8 array must be \[H, W\], \[H, W, 1\], \[H, W, 3\] or \[H, W, 4\]"),
    (np.zeros((0, 8, 3), np.uint8), "a uint8 array must be"),
    ([[0, 1], [2, 3]], "expected a file path, a PIL image or a numpy array, got list"),
])
def test_what_classify_cannot_take_is_a_one_line_error(digits_model, image, message):
    from edgetpu_models.deploy.runtime import Runner

    with pytest.raises(DatasetError, match=message):
        Runner(digits_model["path"]).classify(image)


def test_tensor_details_and_batches(digits_model):
    from edgetpu_models.deploy.evaluate import decoded_batches
    from edgetpu_models.deploy.runtime import Runner

    one = Runner(digits_model["path"], threads=1)
    assert (one.input.shape, one.input.dtype, one.input.quantized) == ((1, 32, 32, 3), np.dtype(np.uint8), True)
    assert one.output.shape == (1, 3) and one.output.scale > 0 and one.size == (32, 32)
    assert one.labels == ["0", "1", "7"] and one.backend == "litert"
    files = digits_model["data"].val_files[:7]
    ((x, _indices),) = list(decoded_batches(files, one.preprocessing, 7, 1, [0.0]))
    four = Runner(digits_model["path"], batch=4)
    assert four.batch == 4 and four.input.shape == (4, 32, 32, 3)
    batched = four.predict(x)  # two invokes, the second padded
    np.testing.assert_array_equal(batched, np.stack([_scores(one, f) for f in files]))
    np.testing.assert_array_equal(four.classify(files[0]).predictions[0].score,
                                  one.classify(files[0]).predictions[0].score)  # back to one image per invoke


def test_a_model_without_its_sidecar_runs_but_cannot_classify(digits_model, tmp_path):
    import shutil

    from edgetpu_models.deploy.classify import Classifier
    from edgetpu_models.deploy.runtime import Runner
    from edgetpu_models.errors import ModelFileError

    bare = tmp_path / "bare.tflite"
    shutil.copy(digits_model["path"], bare)
    runner = Runner(bare)
    out, _ms = runner.run(np.zeros(runner.input.shape, runner.input.dtype))
    assert out[0].shape == (1, 3)
    with pytest.raises(ModelFileError, match="bare.tflite.json: no such metadata file"):
        runner.classify(np.zeros((20, 20), np.uint8))
    with pytest.raises(ModelFileError, match="bare.tflite.json: no such metadata file"):
        Classifier(bare)


def _probe(*argv: str) -> tuple[subprocess.CompletedProcess, list]:
    """One command through tests/runtime_probe.py (workstation packages blocked): the process and the modules."""
    proc = subprocess.run([sys.executable, PROBE, *argv], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})
    lines = proc.stdout.strip().splitlines()
    return proc, json.loads(lines[-1]) if lines and lines[-1].startswith("[") else []


def _installed(venv: pathlib.Path, *argv: str) -> subprocess.CompletedProcess:
    """One command through a virtual environment's own `edgetpu-models` script, away from this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / "edgetpu-models"), *argv], capture_output=True, text=True, timeout=600,
                          cwd=str(venv), env=env)


def _runtime_module_files() -> list[str]:
    with open(RUNTIME_MODULES, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def _module_file(name: str) -> str:
    """A module name -> its source file, relative to the repository (edgetpu_models.deploy.x -> deploy/x.py)."""
    parts = name.split(".")[1:]
    if parts and parts[0] in ("deploy", "nas", "quantize", "searched_archs"):
        base = os.path.join(*parts)
    else:
        base = os.path.join("edgetpu_models", *parts)
    return base + ("/__init__.py" if os.path.isdir(os.path.join(REPO, base)) else ".py")


def test_runtime_commands_import_nothing_from_the_workstation_extra(digits_model):
    """classify, benchmark, evaluate of a .tflite and check run with TensorFlow, Ray, grpcio, matplotlib, scipy...
    unimportable; every module they import is in tools/runtime_modules.txt (the files `make test` holds to Python
    3.9 with vermin)."""
    from edgetpu_models.deploy.partition import plan_partition, write_segments
    from edgetpu_models.deploy.runtime import Runner

    model, data = digits_model["path"], digits_model["data"]
    segments = write_segments(plan_partition(model, 2), os.path.dirname(model))  # beside the model: its sidecar
    imported: set[str] = set()
    for argv in (["classify", model, data.val_files[0], "--json"], ["benchmark", model, "--runs", "3"],
                 ["evaluate", model, "--data", digits_model["data_dir"], "--limit", "12"], ["check", model],
                 ["classify", *segments, *data.val_files[:4], "--json"], ["benchmark", *segments, "--runs", "3"]):
        proc, modules = _probe(*argv)
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported |= set(modules)
    proc, _ = _probe("classify", *segments, *data.val_files[:4], "--json")
    got = json.loads(proc.stdout[:proc.stdout.rindex("\n[")])
    assert "pipeline of 2 segments" in got["backend"]
    assert [r["predictions"][0]["label"] for r in got["results"]] == \
        [Runner(model).classify(f).predictions[0].label for f in data.val_files[:4]]
    listed = set(_runtime_module_files())
    missing = sorted(_module_file(m) for m in imported if _module_file(m) not in listed)
    assert not missing, f"add to {RUNTIME_MODULES}: {missing}"


def test_a_workstation_command_names_the_extra_to_install(digits_model):
    out = str(digits_model["tmp"] / "x.tflite")
    proc, _ = _probe("export", "efficientnet_edgetpu_s", "--random-calibration", "--out", out)
    assert proc.returncode == 1  # the job cannot run on this install (not a usage error)
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "needs TensorFlow, which the base install leaves out: pip install 'edgetpu-models[full]' (Python 3.11)")


def test_runtime_modules_keep_to_python_3_9():
    """The check `make test` runs (vermin, pinned in the test extra)."""
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed (pip install -c constraints.txt -e '.[full,test]')")
    proc = subprocess.run([vermin, "-t=3.9-", "--no-tips", "--violations", *_runtime_module_files()],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _registry_reachable(python: str) -> str | None:
    """None when pip can see tflite-runtime 2.14.0, else why not."""
    proc = subprocess.run([python, "-m", "pip", "index", "versions", "tflite-runtime"], capture_output=True, text=True,
                          timeout=300)
    return None if proc.returncode == 0 and "2.14.0" in proc.stdout else (proc.stderr.strip()[-300:] or "no 2.14.0")


@pytest.mark.slow
def test_base_install_with_tflite_runtime_gives_litert_s_top1(digits_model, tmp_path):
    """A fresh virtual environment with only the base install plus tflite-runtime 2.14 (numpy < 2): no TensorFlow,
    no LiteRT. classify, benchmark and evaluate run there on the int8 file this install exported, and give the
    predictions and top-1 LiteRT gives here. EDGETPU_MODELS_RUNTIME_PYTHON=python3.9 builds it with a board's Python
    (tflite-runtime 2.14 has wheels for 3.9-3.11)."""
    from edgetpu_models.deploy.evaluate import evaluate
    from edgetpu_models.deploy.runtime import Runner

    venv = tmp_path / "venv"
    base_python = os.environ.get("EDGETPU_MODELS_RUNTIME_PYTHON") or sys.executable  # e.g. python3.9, a board's
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    why = _registry_reachable(python)
    if why is not None:
        pytest.skip(f"the package registry is unreachable, so no fresh install can be made: {why}")
    t0 = time.perf_counter()
    install = subprocess.run([python, "-m", "pip", "install", "-q", "numpy<2", "tflite-runtime==2.14.0", REPO],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([python, "-m", "pip", "list", "--format", "freeze"], capture_output=True, text=True)
    names = {ln.split("==")[0].lower() for ln in listed.stdout.splitlines()}
    assert "tflite-runtime" in names and not names & {"tensorflow", "ai-edge-litert", "tf-keras", "ray", "grpcio"}
    model, data = digits_model["path"], digits_model["data"]
    files = data.val_files[:10]
    proc = _installed(venv, "classify", model, *files, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["backend"] == "tflite_runtime"
    litert = Runner(model)
    assert [r["predictions"][0]["label"] for r in got["results"]] == \
        [litert.classify(f).predictions[0].label for f in files]
    proc = _installed(venv, "benchmark", model, "--runs", "5", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["backend"] == "tflite_runtime", proc.stderr[-2000:]
    proc = _installed(venv, "evaluate", model, "--data", digits_model["data_dir"], "--split", "val", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = json.loads(proc.stdout)["models"][0]
    here = evaluate([model], digits_model["data_dir"], split="val").models[0]
    assert board["backend"] == "tflite_runtime" and here.backend == "litert"
    assert board["top1"] == here.top1 and board["images"] == here.images
    proc = _installed(venv, "classify", model, *files[:3])
    assert proc.returncode == 0 and "on tflite_runtime" in proc.stdout, proc.stderr[-2000:]
    print(proc.stdout)  # the README's "what a first classify prints"
    print(f"fresh base venv + tflite-runtime: install and the commands in {time.perf_counter() - t0:.1f} s")


def test_custom_op_names_read_without_the_schema_agree_with_the_reader(digits_model, tmp_path):
    """is_edgetpu_compiled reads the operator codes with struct alone (a board may have no schema module): it must
    name the same custom ops as the full reader, and refuse garbage with the reader's one line."""
    from edgetpu_models.errors import ModelFileError
    from edgetpu_models.tflite_reader import custom_op_names, read_tflite
    from tests.test_inference import _fake_compiled

    compiled = tmp_path / "x_edgetpu.tflite"
    _fake_compiled(digits_model["path"], str(compiled))
    for path in (digits_model["path"], compiled):
        full = {op.opcode for op in read_tflite(path).operators if op.custom}
        assert set(custom_op_names(path)) == full
    assert custom_op_names(compiled) == ("edgetpu-custom-op",)
    data = compiled.read_bytes()
    for bad in (data[:40], b"1234TFL3" + b"\xff" * 64, b"not a model at all"):
        with pytest.raises(ModelFileError, match="not a TFLite flatbuffer"):
            custom_op_names(bad)
