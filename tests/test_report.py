"""`edgetpu-models report`: one self-contained HTML page per set of .tflite models, checked for content, for having
no external reference, and rendered in headless Chromium (not blank, no console message)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from edgetpu_models import cli
from tests.helpers.tflite_models import convert, tiny_keras, transpose_block

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A fully mapped int8 model and one whose TRANSPOSE falls back to the CPU."""
    folder = tmp_path_factory.mktemp("report")
    paths = {}
    for name, extra in (("mapped", None), ("fallback", transpose_block)):
        paths[name] = str(folder / f"{name}_int8.tflite")
        with open(paths[name], "wb") as f:
            f.write(convert(tiny_keras(extra=extra, size=32)))
    return paths


@pytest.fixture(scope="module")
def page(models, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("page") / "report.html")
    assert cli.main(["report", models["mapped"], models["fallback"], "--target", "coral-usb", "--out", out]) == 0
    with open(out, encoding="utf-8") as f:
        return out, f.read()


def test_page_shows_latency_ops_memory_facts_and_comparison(page):
    _, text = page
    assert "Side by side" in text and text.count("<section") == 3
    for needed in ("Per-layer latency", "compute", "memory", "host link", "Ops that do not run on the Edge TPU",
                   "TRANSPOSE", "Where the graph splits", "parameter memory", "MACs per image", "zero point",
                   "no CPU fallback"):
        assert needed in text, needed
    assert text.count("<svg") >= 2 * 2 + 2  # a latency chart and a memory bar per model, bars in the comparison


def test_model_report_marks_the_cpu_layers(models):
    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.report import model_report

    rep = model_report(models["fallback"], "coral-usb")
    check = check_tflite(models["fallback"])
    first = check.first_cpu_op
    assert first.operator == "TRANSPOSE" and rep.cpu_segments[0]["first"] == first.index
    assert rep.cpu_segments[0]["last"] == max(o.index for o in check.ops)  # one partition: the rest follows it
    cpu_layers = [v for v in rep.layers if not v["on_edgetpu"]]
    assert cpu_layers and all(v["op_index"] >= first.index for v in cpu_layers)
    assert rep.latency_ms == pytest.approx(sum(v["ms"] for v in rep.layers))
    assert rep.cached_bytes > 0 and rep.streamed_bytes == 0 and rep.cache_bytes == 8 * 2**20
    assert rep.io["input"]["dtype"] == "uint8" and "scale" in rep.io["output"]


def test_page_is_self_contained(page):
    _, text = page
    assert "<script" not in text and "<link" not in text
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]?([^'" >]+)""", text)
    assert refs and all(r.startswith("#") for r in refs), refs  # in-page anchors only


@pytest.mark.parametrize("args, expect, code", [
    (["nope.tflite"], "nope.tflite: no such model file", 1),
    (["MODEL", "--target", "cpu"], "cpu: not an Edge TPU target", 2),
    (["MODEL", "--target", "tpu9"], "tpu9: unknown latency target", 2),
    (["MODEL", "--out", "x.txt"], "x.txt: expected an .html output file name", 1),
])
def test_bad_inputs_are_one_line_errors_and_write_nothing(models, tmp_path, capsys, args, expect, code):
    args = [models["mapped"] if a == "MODEL" else a for a in args]
    out = ["--out", str(tmp_path / "r.html")] if "--out" not in args else []
    assert cli.main(["report", *args, *out]) == code
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1
    assert os.listdir(tmp_path) == []


def _render(html_path: str, png: str) -> list[str]:
    """Headless Chromium screenshots the page; returns the console messages it logged."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", "--window-size=1100,1400", f"--screenshot={png}", "file://" + os.path.abspath(html_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert os.path.exists(png), run.stderr[-2000:]
    return [ln for ln in run.stderr.splitlines() if ":CONSOLE" in ln]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium; "
                                              ".ci/run installs it)")
def test_page_renders_in_headless_chromium(page, tmp_path):
    import numpy as np
    from PIL import Image

    bad = tmp_path / "bad.html"  # the detector itself: a page that logs must be caught
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('x'); nope();</script></body></html>")
    assert len(_render(str(bad), str(tmp_path / "bad.png"))) == 2

    assert _render(page[0], str(tmp_path / "page.png")) == []
    pixels = np.asarray(Image.open(tmp_path / "page.png").convert("RGB"))
    ink = (pixels < 200).any(axis=2).mean()
    assert pixels.shape[:2] == (1400, 1100) and ink > 0.02, ink  # text, tables and bars, not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def test_fallback_model_is_costed_as_the_compiler_partitions_it(models):
    """Ops from the first unmapped one on are costed on the host CPU (cpu predictor x the host's scale), after the
    Edge TPU segment's output goes back over the link; the all-mapped estimate is what it was."""
    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.nas.latency.estimator import estimate, load_target
    from edgetpu_models.nas.latency.frontends import tflite_graph
    from edgetpu_models.nas.latency.partition import split_graph

    split = check_tflite(models["fallback"]).first_cpu_op.index
    whole = estimate(models["fallback"], "coral-devboard")
    part = estimate(models["fallback"], "coral-devboard", cpu_from_op=split)
    names = [r.name for r in part.layers]
    assert "<to host>" in names and "<output>" not in names
    cpu_rows = [r for r in part.layers if r.bound == "host_cpu"]
    _, cpu_graph = split_graph(tflite_graph(models["fallback"]), split)
    cpu_alone = estimate(cpu_graph, "cpu")
    scale = load_target("coral-devboard").data["host"]["cpu_scale"]
    assert [r.name for r in cpu_rows] == [layer.name for layer in cpu_graph.layers]
    assert sum(r.ms for r in cpu_rows) == pytest.approx(scale * sum(r.ms for r in cpu_alone.layers if r.op != "invoke"))
    assert part.latency_ms == pytest.approx(sum(r.ms for r in part.layers)) and part.latency_ms != whole.latency_ms
    mapped = estimate(models["mapped"], "coral-usb")
    assert estimate(models["mapped"], "coral-usb", cpu_from_op=None) == mapped
