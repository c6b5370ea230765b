"""train / finetune: the recipe's schedule, a crash mid-epoch then --resume, a new head when fine-tuning, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgetpu_models import cli
from edgetpu_models.train import TrainConfig, TrainError, train, warmup_decay_schedule
from tests.helpers.train import digits_subset, tiny_spec

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

TRAIN_ARGS = ["--epochs", "2", "--batch-size", "8", "--resolution", "32", "--no-flip", "--quiet", "--lr", "0.05",
              "--bn-momentum", "0.9"]


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from edgetpu_models.cli import main; sys.exit(main())", *argv]


def _weights(path: str) -> list[np.ndarray]:
    from edgetpu_models.model_io import load_keras as load_keras_model

    return load_keras_model(path).get_weights()


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(epochs=10, warmup_epochs=2)
    lr = warmup_decay_schedule(0.1, 10, cfg)
    values = [float(lr(s)) for s in (0, 9, 19, 20, 60, 99)]
    assert values[0] == pytest.approx(0.1 / 20) and values[2] == pytest.approx(0.1)
    assert values[0] < values[1] < values[2]
    assert values[3] == pytest.approx(0.1) and values[3] > values[4] > values[5] >= 0
    assert values[5] < 0.001  # cosine reaches ~0 at the last step
    exp = warmup_decay_schedule(0.1, 10, TrainConfig(epochs=10, warmup_epochs=0, decay="exponential",
                                                     decay_epochs=2, decay_rate=0.5))
    assert [float(exp(s)) for s in (0, 19, 20, 45)] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_kill_during_epoch_2_then_resume_gives_the_uninterrupted_result(tmp_path):
    spec = tiny_spec(tmp_path)
    data = digits_subset(tmp_path, classes=("0", "1", "7", "4"), per_class=None)  # ~720 images: epochs of ~1 s
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    killed, full = str(tmp_path / "killed"), str(tmp_path / "full")
    proc = subprocess.Popen(_cli("train", spec, "--data", data, "--out", killed, *TRAIN_ARGS), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = os.path.join(killed, "history.json")  # written right after the end-of-epoch checkpoint
    deadline = time.time() + 120
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert os.path.exists(first), proc.communicate()[0].decode()[-2000:]
    assert os.path.exists(os.path.join(killed, "checkpoints", "ckpt-1.index"))
    proc.send_signal(signal.SIGKILL)  # a crash: no clean-up of any kind
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "checkpoints", "ckpt-2.index")), "killed too late: epoch 2 done"
    assert not os.path.exists(os.path.join(killed, "model.keras"))
    partial = os.path.join(killed, "checkpoints", "ckpt-2_temp")  # what a kill while saving epoch 2 leaves
    os.makedirs(partial, exist_ok=True)
    with open(os.path.join(partial, "part-00000-of-00001.data-00000-of-00001"), "wb") as f:
        f.write(b"\0" * 4096)

    # without --resume the run folder is protected
    out = subprocess.run(_cli("train", spec, "--data", data, "--out", killed, *TRAIN_ARGS), env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "pass --resume" in out.stderr and "Traceback" not in out.stderr

    resumed = subprocess.run(_cli("train", spec, "--data", data, "--out", killed, "--resume", *TRAIN_ARGS), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "epoch 1/2 done" in resumed.stdout
    assert os.path.exists(os.path.join(killed, "checkpoints", "ckpt-2.index"))
    assert not os.path.exists(partial), "the resumed run leaves the killed run's partial checkpoint behind"
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]

    straight = subprocess.run(_cli("train", spec, "--data", data, "--out", full, *TRAIN_ARGS), env=env,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    a, b = _weights(os.path.join(killed, "model.keras")), _weights(os.path.join(full, "model.keras"))
    assert len(a) == len(b) and all(np.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(a, b))
    m_resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    m_full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert m_resumed["epochs"] == m_full["epochs"] == 2
    assert m_resumed["top1"] == pytest.approx(m_full["top1"], abs=1e-6)
    assert m_full["top1"] > 0.5  # 4 classes: well above chance after 2 short epochs


def test_finetune_puts_a_new_head_on_loaded_weights(tmp_path, shared_dir):
    weights = os.path.join(shared_dir, "testdata", "tf_efficientnet_es.safetensors")
    data = digits_subset(tmp_path, classes=("0", "1", "7"), per_class=20)
    cfg = TrainConfig(epochs=1, batch_size=16, resolution=32, learning_rate=1e-6, warmup_epochs=0, ema=0.9)
    result = train("efficientnet_edgetpu_s", data, str(tmp_path / "ft"), cfg, weights=weights, progress=False)
    assert result.model.output_shape == (None, 3)
    assert result.class_names == ["0", "1", "7"] and result.top5 is None  # 3 classes: top-5 not applicable
    from safetensors.numpy import load_file

    stem = load_file(weights)["conv_stem.weight"].transpose(2, 3, 1, 0)
    got = result.model.get_layer("stem_conv").get_weights()[0]
    assert np.allclose(got, stem, atol=1e-3)  # backbone kept (a tiny learning rate moved it only slightly)
    labels = (tmp_path / "ft" / "model.keras.labels.txt").read_text().split()
    assert os.path.exists(result.model_path) and labels == ["0", "1", "7"]
    assert any(f.startswith("events") for _, _, fs in os.walk(tmp_path / "ft" / "logs") for f in fs)


@pytest.mark.parametrize("case", ["empty", "text_as_jpg", "one_class", "bad_epochs", "missing_weights"])
def test_bad_input_is_one_line(tmp_path, capsys, case):
    spec = tiny_spec(tmp_path)
    data = tmp_path / "data"
    args = ["train", spec, "--data", str(data), "--out", str(tmp_path / "out"), "--quiet"]
    if case == "empty":
        data.mkdir()
        want = "no image files"
    elif case == "text_as_jpg":
        for c in ("a", "b"):
            (data / c).mkdir(parents=True)
            (data / c / "photo.jpg").write_text("not a picture")
        want = "2 unreadable image file(s) and no readable one"
    elif case == "one_class":
        digits_subset(tmp_path, classes=("3",), per_class=5)
        args[3] = str(tmp_path / "digits")
        want = "only one class"
    elif case == "bad_epochs":
        digits_subset(tmp_path, classes=("3", "5"), per_class=5)
        args[3] = str(tmp_path / "digits")
        args += ["--epochs", "0"]
        want = "argument --epochs: expected an integer from 1 to 100000, got '0'"
        from edgetpu_models.train import TrainConfig, TrainError

        with pytest.raises(TrainError, match="epochs: expected an integer >= 1"):  # the library refuses it too
            TrainConfig(epochs=0).validate()
    else:
        args = ["finetune", "efficientnet_edgetpu_s", "--weights", str(tmp_path / "nope.safetensors"), "--quiet",
                "--resolution", "32", "--out", str(tmp_path / "out")]
        want = "no such weights file"
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse refuses a flag's value before the command runs
        code = e.code
    assert code == (2 if case == "bad_epochs" else 1)  # usage (argparse) or the job failed on bad input
    err = capsys.readouterr().err
    assert want in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgetpu-models")]
    assert len(lines) == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out" / "model.keras")


def test_resume_with_other_settings_is_refused(tmp_path):
    spec = tiny_spec(tmp_path)
    data = digits_subset(tmp_path, classes=("0", "1"), per_class=10)
    cfg = TrainConfig(epochs=1, batch_size=8, resolution=32)
    train(spec, data, str(tmp_path / "run"), cfg, progress=False)
    with pytest.raises(TrainError, match="different settings .*epochs"):
        train(spec, data, str(tmp_path / "run"), TrainConfig(epochs=3, batch_size=8, resolution=32), resume=True,
              progress=False)
    again = train(spec, data, str(tmp_path / "run"), cfg, resume=True, progress=False)  # finished: evaluates only
    assert again.initial_epoch == 1


def test_finetune_from_a_trained_keras_model(tmp_path):
    spec = tiny_spec(tmp_path)
    two = digits_subset(tmp_path / "two", classes=("0", "1"), per_class=10)
    first = train(spec, two, str(tmp_path / "first"), TrainConfig(epochs=1, batch_size=8, resolution=32),
                  progress=False)
    three = digits_subset(tmp_path / "three", classes=("2", "3", "4"), per_class=10)
    tuned = train(spec, three, str(tmp_path / "tuned"), TrainConfig(epochs=1, batch_size=8, learning_rate=1e-7,
                                                                     warmup_epochs=0),
                  weights=first.model_path, progress=False)
    assert first.model.output_shape == (None, 2) and tuned.model.output_shape == (None, 3)
    assert tuned.model.input_shape == (None, 32, 32, 3)  # the .keras model's resolution, not the spec's default
    a = first.model.get_layer("stem_conv").get_weights()[0]
    assert np.allclose(tuned.model.get_layer("stem_conv").get_weights()[0], a, atol=1e-4)
