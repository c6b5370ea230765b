"""The search on Ray: kill -9 mid-run and resume (every trial exactly once), a worker that dies is retried, the
outputs (CSV, front, plot, best spec), the best spec builds, exports to int8 and passes the Edge TPU check; CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgetpu_models import cli
from edgetpu_models.spec import load_spec
from tests.helpers.nas import REPO_DIR

pytestmark = pytest.mark.slow  # builds, converts, trains or serves real models: not in the fast subset

TRIALS = 12
SCRIPT = f"""
import sys
from tests.helpers.nas import CapacityEvaluator
from edgetpu_models.nas.search.loop import SearchConfig, run_search
out, mode = sys.argv[1], sys.argv[2]
cfg = SearchConfig(target="coral-usb", latency_target_ms=6.0, controller="reinforce", trials={TRIALS}, workers=2)
ev = CapacityEvaluator(delay_s=0.4, die_once_dir=out, die_trial=1, calls_file=out + "/calls.txt")
r = run_search(cfg, out + "/search", resume=mode == "resume", evaluator=ev)
print("done", r.trials, r.resumed_from)
"""


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out += kids.get(p, [])
        todo += kids.get(p, [])
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _events(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("nas_kill"))
    env = dict(os.environ, PYTHONPATH=REPO_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, out, "new"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = os.path.join(out, "search", "trials.jsonl")
    deadline = time.time() + 90
    try:
        while time.time() < deadline:  # kill once 4 trials are done, with others in flight
            if os.path.exists(log) and sum('"result"' in line for line in open(log)) >= 4:
                break
            assert proc.poll() is None, "search exited before it could be killed"
            time.sleep(0.05)
        ray_procs = _descendants(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _events(log)
    for _ in range(40):  # Ray's head processes share the driver's fate; its agents can linger: end those we started
        left = [p for p in ray_procs if _alive(p)]
        if not left:
            break
        time.sleep(0.25)
    for p in left:
        os.kill(p, signal.SIGKILL)
    resumed = subprocess.run([sys.executable, "-c", SCRIPT, out, "resume"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return out, before, resumed.stdout


def test_sigkill_then_resume_runs_every_trial_exactly_once(killed_and_resumed):
    out, before, stdout = killed_and_resumed
    events = _events(os.path.join(out, "search", "trials.jsonl"))
    assert events[:len(before)] == before  # append-only: nothing written before the kill changed
    results = [e for e in events if e["event"] == "result"]
    asks = [e for e in events if e["event"] == "ask"]
    assert sorted(e["trial"] for e in results) == list(range(TRIALS))  # every trial exactly once
    assert sorted(e["trial"] for e in asks) == list(range(TRIALS))
    assert all(e["status"] == "ok" for e in results)
    done_before = {e["trial"] for e in before if e["event"] == "result"}
    assert 4 <= len(done_before) < TRIALS
    assert f"done {TRIALS} {len(done_before)}" in stdout
    with open(os.path.join(out, "calls.txt")) as f:
        calls = [int(x) for x in f.read().split()]
    # completed trials were not run again; only trial 1 (its worker killed itself once) and trials that were in
    # flight at the kill ran twice
    in_flight = {e["trial"] for e in before if e["event"] == "ask"} - done_before
    twice = {t for t in set(calls) if calls.count(t) > 1}
    assert twice <= in_flight | {1} and 1 in twice
    assert os.path.exists(os.path.join(out, "died_1"))


def test_outputs_csv_front_plot_and_show(killed_and_resumed, capsys):
    out, _, _ = killed_and_resumed
    d = os.path.join(out, "search")
    with open(os.path.join(d, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == list(range(TRIALS))
    assert all(r["arch"] and float(r["latency_ms"]) > 0 and 0 < float(r["accuracy"]) <= 1 and r["reward"]
               and r["accuracy_proxy"] == "capacity-test-proxy" for r in rows)
    front = [r for r in rows if r["on_front"] == "1"]
    assert front and all(not (float(o["latency_ms"]) <= float(f["latency_ms"]) and float(o["accuracy"])
                              > float(f["accuracy"])) for f in front for o in rows)
    with open(os.path.join(d, "trials.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.load(open(os.path.join(d, "summary.json")))
    assert summary["complete"] and summary["trials"] == TRIALS and summary["accuracy_proxy"] == "capacity-test-proxy"
    front_files = sorted(os.listdir(os.path.join(d, "front")))
    assert front_files == sorted(f"trial_{int(r['trial']):04d}.yaml" for r in front)  # one spec per front member
    os.unlink(os.path.join(d, "trials.png"))
    assert cli.main(["nas", "show", d, "--plot"]) == 0
    shown = capsys.readouterr().out
    assert f"{TRIALS}/{TRIALS} trials" in shown and "capacity-test-proxy" in shown and "best spec" in shown
    assert os.path.getsize(os.path.join(d, "trials.png")) > 1000


def test_resume_refuses_another_accuracy_proxy(killed_and_resumed):
    from edgetpu_models.nas.search.loop import SearchConfig, SearchError, run_search
    from tests.helpers.nas import CapacityEvaluator

    out, _, _ = killed_and_resumed
    with pytest.raises(SearchError, match="would mix two objectives"):
        run_search(SearchConfig(), os.path.join(out, "search"), resume=True,
                   evaluator=CapacityEvaluator(name="another-proxy"))


def test_best_spec_builds_exports_int8_and_passes_the_edgetpu_check(killed_and_resumed, tmp_path, capsys):
    out, _, _ = killed_and_resumed
    path = os.path.join(out, "search", "best_spec.yaml")
    spec = load_spec(path)
    assert spec.activation == "relu" and spec.stages
    assert cli.main(["profile", path]) == 0  # every spec-taking command reads it
    capsys.readouterr()
    from edgetpu_models.builder import build_model
    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.export import export_tflite

    model = build_model(path, resolution=64, classes=10)
    res = export_tflite(model, tmp_path / "best.tflite", int8=True, random_calibration=True,
                        normalization=spec.normalization)
    report = check_tflite(res.path)
    assert report.fully_mapped, report.format()
    assert report.fraction_on_edgetpu == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--target", "nope", "--latency-target-ms", "5"], "unknown latency target"),
    (["--latency-target-ms", "5", "--controller", "reinforce", "--proxy-resolution", "16"], "--proxy-resolution"),
    (["--controller", "random"], "--latency-target-ms: required"),
])
def test_cli_bad_settings_are_one_line_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    try:
        code = cli.main(["nas", "search", *argv, "--out", str(out)])
    except SystemExit as e:  # argparse refuses a flag's value before the command runs
        code = e.code
    assert code == 2  # usage: a name or flag the command does not accept
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()  # nothing written


def test_cli_resume_of_a_missing_search(tmp_path, capsys):
    assert cli.main(["nas", "search", "--resume", "--out", str(tmp_path / "none")]) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_latency_server_gives_the_same_numbers_as_in_process():
    import numpy as np

    from edgetpu_models.nas.search.loop import LatencySource
    from edgetpu_models.nas.search.space import load_space
    from edgetpu_models.nas.service.server import LatencyServer, ServerConfig

    space = load_space()
    rng = np.random.default_rng(7)
    specs = [space.decode(tuple(int(rng.integers(s)) for s in space.sizes)) for _ in range(8)]
    local = LatencySource("coral-usb")
    with LatencyServer(ServerConfig(port=0)) as srv:
        remote = LatencySource("coral-usb", server=srv.address)
        try:
            assert [remote(s) for s in specs] == [local(s) for s in specs]
        finally:
            remote.close()


def test_proxy_trains_the_candidate_on_an_image_folder(tmp_path):
    import shutil

    from edgetpu_models.data import default_dataset_dir
    from edgetpu_models.nas.search.proxy import ProxyConfig, ProxyEvaluator
    from edgetpu_models.nas.search.space import load_space

    src = default_dataset_dir()
    for cls in ("0", "1"):  # a small two-class folder keeps the test quick
        os.makedirs(tmp_path / "data" / cls)
        for name in sorted(os.listdir(os.path.join(src, cls)))[:20]:
            shutil.copy(os.path.join(src, cls, name), tmp_path / "data" / cls / name)
    space = load_space()
    small = tuple(0 if d.key != "repeats_delta" else d.choices.index(min(d.choices)) for d in space.decisions)
    spec = space.decode(small)  # the fewest blocks the space allows: a quick build
    assert sum(st.repeats for st in spec.stages) == 5
    ev = ProxyEvaluator(ProxyConfig(steps=3, resolution=32, width=0.25, batch_size=8,
                                    data_dir=str(tmp_path / "data")))
    out = ev(spec.to_dict(), 0)
    assert ev.name == "train3-r32-w0.25-b8"
    assert 0.0 <= out["accuracy"] <= 1.0 and out["proxy_params"] > 0 and out["val_loss"] > 0


def test_resume_refuses_a_recalibrated_latency_target(killed_and_resumed, tmp_path):
    import shutil

    from edgetpu_models.nas.search.loop import SearchConfig, SearchError, run_search

    out, _, _ = killed_and_resumed
    copy = tmp_path / "search"
    shutil.copytree(os.path.join(out, "search"), copy)
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["target_sha256"]  # the search recorded which latency model it used
    cfg["target_sha256"] = "0" * 64
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SearchError, match="changed since this search started"):
        run_search(SearchConfig(), str(copy), resume=True)


def test_parallel_search_is_reproducible_whatever_the_completion_order(tmp_path, monkeypatch):
    import ray

    from edgetpu_models.nas.search.loop import SearchConfig, run_search
    from tests.helpers.nas import CapacityEvaluator

    monkeypatch.setenv("PYTHONPATH", REPO_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        asks, orders = [], []
        for n, delays in enumerate([(0.3, 0.0), (0.0, 0.3)]):  # odd trials finish first, then even trials do
            cfg = SearchConfig(target="coral-usb", latency_target_ms=4.0, controller="evolution", trials=10,
                               workers=2, controller_options={"population": 3, "sample": 2})
            run_search(cfg, str(tmp_path / f"run{n}"), evaluator=CapacityEvaluator(delays=delays))
            events = _events(str(tmp_path / f"run{n}" / "trials.jsonl"))
            asks.append([e["point"] for e in events if e["event"] == "ask"])
            orders.append([e["trial"] for e in events if e["event"] == "result"])
    finally:
        ray.shutdown()
    assert orders[0] != orders[1]  # the workers finished in another order ...
    assert len(asks[0]) == 10 and asks[0] == asks[1]  # ... and the search proposed the same trials
