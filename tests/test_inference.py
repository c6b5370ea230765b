"""On-device inference: make_interpreter's runtime choice, classify (uint8/int8, labels, JSON), benchmark, bad input."""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest

from edgetpu_models import cli
from edgetpu_models.errors import ModelFileError
from tests.helpers.train import trained_digits_net

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny net trained on three digit classes, exported int8 with uint8 and with int8 input/output."""
    from edgetpu_models.deploy.export import export_tflite

    tmp = tmp_path_factory.mktemp("inference")
    result, data, norm, data_dir = trained_digits_net(tmp)
    calib = data.train_plain.unbatch().batch(1).take(150)
    paths = {}
    for io in ("uint8", "int8"):
        paths[io] = export_tflite(result.model, str(tmp / f"tiny_{io}.tflite"), io_dtype=io, representative=calib,
                                  normalization=norm, labels=data.class_names, model_name="tiny").path
    return {"paths": paths, "data": data, "top1": result.top1, "tmp": tmp}


def _classify(capsys, *argv):
    code = cli.main(["classify", *argv])
    return code, capsys.readouterr()


def test_classify_names_the_right_class_for_held_out_images(exported, capsys):
    data = exported["data"]
    images = data.val_files
    code, out = _classify(capsys, exported["paths"]["uint8"], *images, "--top-k", "2", "--json")
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["backend"] == "litert"
    predicted = [r["predictions"][0]["label"] for r in result["results"]]
    truth = [data.class_names[y] for y in data.val_labels]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy >= 0.8, (accuracy, exported["top1"])
    assert all(len(r["predictions"]) == 2 for r in result["results"])
    scores = [r["predictions"][0]["score"] for r in result["results"]]
    assert all(0.0 <= s <= 1.0 for s in scores)

    # the table form names the backend and the class of every image
    code, out = _classify(capsys, exported["paths"]["uint8"], images[0], images[-1])
    assert code == 0 and "on litert" in out.out
    assert out.out.count(os.path.basename(images[0])) == 1


def test_int8_io_gives_the_same_answers_as_uint8_io(exported):
    from edgetpu_models.deploy.classify import Classifier

    u8, i8 = Classifier(exported["paths"]["uint8"]), Classifier(exported["paths"]["int8"])
    assert u8.preprocess(exported["data"].val_files[0]).dtype == np.uint8
    assert i8.preprocess(exported["data"].val_files[0]).dtype == np.int8
    same = [u8.classify(f).predictions[0].index == i8.classify(f).predictions[0].index
            for f in exported["data"].val_files[:20]]
    assert np.mean(same) >= 0.9


def test_labels_file_overrides_the_exported_labels(exported, capsys, tmp_path):
    labels = tmp_path / "names.txt"
    labels.write_text("zero\none\nseven\n")
    code, out = _classify(capsys, exported["paths"]["uint8"], exported["data"].val_files[0], "--labels", str(labels),
                          "--json")
    assert code == 0
    assert json.loads(out.out)["results"][0]["predictions"][0]["label"] in ("zero", "one", "seven")
    labels.write_text("a\nb\n")
    code, out = _classify(capsys, exported["paths"]["uint8"], exported["data"].val_files[0], "--labels", str(labels))
    assert code == 1 and "2 names for a model with 3 outputs" in out.err


@pytest.mark.parametrize("case", ["text_image", "missing_image", "missing_model", "garbage_model", "no_json"])
def test_bad_classify_input_is_one_line(exported, capsys, tmp_path, case):
    model, image = exported["paths"]["uint8"], exported["data"].val_files[0]
    if case == "text_image":
        bad = tmp_path / "photo.jpg"
        bad.write_text("this is not a JPEG")
        argv, want = [model, image, str(bad)], "not a readable image"
    elif case == "missing_image":
        argv, want = [model, str(tmp_path / "nope.png")], "no such image file"
    elif case == "missing_model":
        argv, want = [str(tmp_path / "nope.tflite"), image], "no such model file"
    elif case == "garbage_model":
        (tmp_path / "bad.tflite").write_bytes(b"\x00" * 64)
        (tmp_path / "bad.tflite.json").write_text(open(model + ".json").read())
        argv, want = [str(tmp_path / "bad.tflite"), image], "not a TFLite flatbuffer"
    else:
        (tmp_path / "lonely.tflite").write_bytes(open(model, "rb").read())
        argv, want = [str(tmp_path / "lonely.tflite"), image], "no such metadata file"
    code, out = _classify(capsys, *argv)
    assert code == 1  # the job failed on bad input (2 is for usage)
    assert want in out.err and "Traceback" not in out.err
    assert len([ln for ln in out.err.splitlines() if ln.startswith("edgetpu-models")]) == 1
    assert out.out == ""  # nothing half-printed


def _fake_compiled(src: str, dst: str) -> None:
    """What edgetpu_compiler makes of a model: its ops replaced by one edgetpu-custom-op (payload: the compiled
    program, here dummy bytes)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(open(src, "rb").read(), 0)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    m.operatorCodes.append(code)
    g = m.subgraphs[0]
    op = schema.OperatorT()
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.inputs, op.outputs = list(g.inputs), list(g.outputs)
    op.customOptions = list(b"compiled program")
    g.operators = [op]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    with open(dst, "wb") as f:
        f.write(b.Output())


def test_a_compiled_model_without_an_edge_tpu_is_a_clear_error(exported, tmp_path, capsys, monkeypatch):
    from edgetpu_models.deploy.interpreter import is_edgetpu_compiled, make_interpreter

    compiled = str(tmp_path / "tiny_uint8_edgetpu.tflite")
    _fake_compiled(exported["paths"]["uint8"], compiled)
    assert is_edgetpu_compiled(compiled) and not is_edgetpu_compiled(exported["paths"]["uint8"])
    monkeypatch.setitem(sys.modules, "pycoral", None)  # as on this machine: no pycoral
    with pytest.raises(ModelFileError, match="compiled for the Edge TPU.*pycoral is not installed"):
        make_interpreter(compiled)
    # classify refuses cleanly
    code, out = _classify(capsys, compiled, exported["data"].val_files[0])
    assert code == 1 and "compiled for the Edge TPU" in out.err and "Traceback" not in out.err
    # X_edgetpu.tflite has its own sidecar (compile writes it from X.tflite's); nothing is read under X.tflite's name
    from edgetpu_models.sidecar import derived_sidecar, read_sidecar, write_sidecar

    assert read_sidecar(compiled) is None
    write_sidecar(compiled, derived_sidecar(exported["paths"]["uint8"], compiled=True))
    meta = read_sidecar(compiled)
    assert meta.path == compiled + ".json" and meta.labels_file == "tiny_uint8_edgetpu.tflite.labels.txt"
    assert meta.extra_value("derived_from", str) == "tiny_uint8.tflite" and meta.labels == read_sidecar(
        exported["paths"]["uint8"]).labels

    # pycoral present but no device connected
    fake = _fake_pycoral(monkeypatch, devices=[])
    with pytest.raises(ModelFileError, match="no Edge TPU device is connected"):
        make_interpreter(compiled)
    # ... and with a device: pycoral's interpreter (with the Edge TPU delegate) is the one used
    fake.devices = [{"type": "usb", "path": "/sys/bus/usb/devices/2-1"}]
    interp, backend = make_interpreter(compiled)
    assert backend == "pycoral (Edge TPU)" and interp.path == compiled and interp.allocated
    _, backend = make_interpreter(exported["paths"]["uint8"])  # an uncompiled file: the name says it runs on the CPU
    assert backend.startswith("pycoral (CPU")


def _fake_pycoral(monkeypatch, devices):
    class FakeInterp:
        def __init__(self, path):
            self.path, self.allocated = path, False

        def allocate_tensors(self):
            self.allocated = True

    edgetpu = types.ModuleType("pycoral.utils.edgetpu")
    edgetpu.devices = devices
    edgetpu.list_edge_tpus = lambda: edgetpu.devices
    edgetpu.make_interpreter = FakeInterp
    utils = types.ModuleType("pycoral.utils")
    utils.edgetpu = edgetpu
    pkg = types.ModuleType("pycoral")
    pkg.utils = utils
    for name, mod in (("pycoral", pkg), ("pycoral.utils", utils), ("pycoral.utils.edgetpu", edgetpu)):
        monkeypatch.setitem(sys.modules, name, mod)
    return edgetpu


def test_cpu_runtime_fallback_order(exported, monkeypatch):
    from edgetpu_models.deploy.interpreter import make_interpreter

    path = exported["paths"]["uint8"]
    monkeypatch.setitem(sys.modules, "pycoral", None)
    assert make_interpreter(path)[1] == "litert"
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # no LiteRT
    fake_rt = types.ModuleType("tflite_runtime.interpreter")
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake_rt)
    fake_rt.Interpreter = lambda model_path, num_threads=None: types.SimpleNamespace(
        allocate_tensors=lambda: None, path=model_path)
    interp, backend = make_interpreter(path, threads=2)
    assert backend == "tflite_runtime" and interp.path == path
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)  # only TensorFlow left
    interp, backend = make_interpreter(path, threads=1)
    assert backend == "tf.lite" and interp.get_input_details()[0]["dtype"] == np.uint8


def test_benchmark_reports_percentiles(exported, capsys):
    assert cli.main(["benchmark", exported["paths"]["uint8"], "--runs", "30", "--threads", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["runs"] == 30 and r["backend"] == "litert" and r["threads"] == 1
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert cli.main(["benchmark", exported["paths"]["uint8"], "--runs", "20"]) == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "p99 ms" in out and "20 runs after 10 warm-up" in out
    assert cli.main(["benchmark", str(exported["tmp"] / "missing.tflite")]) == 1  # a missing file: the job failed
    assert "no such model file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["benchmark", exported["paths"]["uint8"], "--runs", "0"])
    assert e.value.code == 2 and "argument --runs: expected an integer from 1 to 1000000" in capsys.readouterr().err
