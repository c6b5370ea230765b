"""edgetpu_compiler wrapper: parsing its published output format, running it, and the fallback without it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from edgetpu_models.deploy.compiler import (
    INSTALL_URL,
    CompilerError,
    compile_tflite,
    parse_compiler_output,
    size_to_bytes,
)
from edgetpu_models.deploy.edgetpu_check import MAPPED, NOT_SUPPORTED, SUBGRAPH
from tests.helpers.tflite_models import convert, tiny_keras

DATA = os.path.join(os.path.dirname(__file__), "data")


def _read(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("compile") / "tiny.tflite"
    path.write_bytes(convert(tiny_keras()))
    return str(path)


def test_size_units():
    assert size_to_bytes("0.00B") == 0
    assert size_to_bytes("41.75KiB") == 42752
    assert size_to_bytes("6.03MiB") == round(6.03 * 2**20)
    assert size_to_bytes("n/a") is None


def test_parse_partial_mapping_stdout():
    r = parse_compiler_output(_read("edgetpu_compiler_v16_partial.stdout"))
    assert r.tool == "edgetpu_compiler" and r.model == "model_full_integer_quant.tflite"
    assert (r.total, r.on_edgetpu, r.on_cpu) == (143, 139, 4)
    assert r.stats["ops_on_edgetpu"] == 139 and r.stats["ops_on_cpu"] == 4
    assert r.stats["compiler_version"] == "16.0.384591198" and r.stats["compile_ms"] == 1354
    assert r.stats["on_chip_used_bytes"] == round(6.03 * 2**20) and r.stats["off_chip_used_bytes"] == 0
    assert r.edgetpu_subgraphs == 1 and not r.fully_mapped
    statuses = {(row.operator, row.status): row.count for row in r.rows}
    assert statuses[("TRANSPOSE", NOT_SUPPORTED)] == 2
    assert statuses[("CONCATENATION", SUBGRAPH)] == 2 and statuses[("CONCATENATION", MAPPED)] == 4
    # the same layout comes back out
    text = r.format()
    assert "Number of operations that will run on CPU: 4" in text
    assert "TRANSPOSE                      2          Operation not supported" in text


def test_log_alone_gives_the_same_table():
    a = parse_compiler_output(_read("edgetpu_compiler_v16_partial.stdout"))
    b = parse_compiler_output("", _read("edgetpu_compiler_v16_partial.log"))
    assert a.rows == b.rows and b.model == "model_full_integer_quant.tflite"


def test_v15_table_from_log_and_matches_our_check_structure():
    r = parse_compiler_output(_read("edgetpu_compiler_v15_full.stdout"), _read("edgetpu_compiler_v15_full.log"))
    assert r.fully_mapped and r.total == 66 and r.fraction_on_edgetpu == 1.0
    assert r.stats["off_chip_used_bytes"] == 42752
    assert set(r.to_dict()) >= {"total", "on_edgetpu", "on_cpu", "rows", "fully_mapped"}


def test_v2_summary_prints_the_available_cache_and_the_parser_derives_what_remains():
    """Compilers up to 2.0 (the last one built for ARM64 boards) print "available" instead of "remaining"."""
    from edgetpu_models.deploy.compiler import parse_compiler_summaries
    from edgetpu_models.deploy.compiler_logs import logs_dir

    with open(os.path.join(logs_dir(), "gh-edgetpu-169.txt"), encoding="utf-8") as f:
        text = f.read()
    r = parse_compiler_output(text)
    assert r.fully_mapped and r.total == 13 and r.stats["compiler_version"] == "2.0.291256449"
    available, used = round(5.95 * 2**20), round(891.50 * 1024)
    assert r.stats["on_chip_available_bytes"] == available and r.stats["on_chip_used_bytes"] == used
    assert r.stats["on_chip_remaining_bytes"] == available - used
    assert "On-chip memory available for caching model parameters: 5.95MiB" in r.format()
    (summary,) = parse_compiler_summaries(text)
    assert summary["on_chip_remaining_bytes"] == available - used
    # a v15/v16 summary keeps its own "remaining" line
    (v16,) = parse_compiler_summaries(_read("edgetpu_compiler_v16_partial.stdout"))
    assert "on_chip_available_bytes" not in v16 and v16["on_chip_remaining_bytes"] >= 0


def test_unreadable_output_and_inconsistent_header():
    with pytest.raises(CompilerError, match="no operator table"):
        parse_compiler_output("Edge TPU Compiler version 16.0\nsomething else\n")
    text = _read("edgetpu_compiler_v16_partial.stdout").replace("Total number of operations: 143",
                                                                "Total number of operations: 150")
    with pytest.raises(CompilerError, match="header says 150"):
        parse_compiler_output(text)


def test_without_compiler_falls_back_to_check(tiny_tflite, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = compile_tflite(tiny_tflite)
    assert not result.compiled and result.output_path is None
    assert "edgetpu_compiler not found" in result.message and INSTALL_URL in result.message
    assert "\n" not in result.message
    assert result.report.tool == "check" and result.report.fully_mapped


def _fake_compiler(folder, exit_code=0) -> str:
    """A stand-in for edgetpu_compiler that records its arguments and writes what the real one writes."""
    stdout = os.path.join(DATA, "edgetpu_compiler_v15_full.stdout")
    log = os.path.join(DATA, "edgetpu_compiler_v15_full.log")
    script = folder / "edgetpu_compiler"
    script.write_text(f"""#!{sys.executable}
import os, shutil, sys
args = sys.argv[1:]
open(os.path.join({str(folder)!r}, "args.txt"), "w").write(" ".join(args))
if {exit_code}:
    print("ERROR: Didn't find op for builtin opcode 'FOO'", file=sys.stderr); sys.exit({exit_code})
out = args[args.index("-o") + 1]
stem = os.path.splitext(os.path.basename(args[-1]))[0]
shutil.copy(args[-1], os.path.join(out, stem + "_edgetpu.tflite"))
shutil.copy({log!r}, os.path.join(out, stem + "_edgetpu.log"))
sys.stdout.write(open({stdout!r}).read())
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_runs_compiler_with_show_ops_timeout_and_out_dir(tiny_tflite, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_compiler(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    result = compile_tflite(tiny_tflite, out, timeout_s=60)
    args = (bin_dir / "args.txt").read_text().split()
    assert args[0] == "-s" and args[args.index("-o") + 1] == str(out) and args[args.index("-t") + 1] == "60"
    assert args[-1] == tiny_tflite
    assert result.compiled and result.output_path == str(out / "tiny_edgetpu.tflite")
    assert os.path.exists(result.output_path) and result.log_path == str(out / "tiny_edgetpu.log")
    assert result.report.total == 66 and result.report.fully_mapped


def test_compiler_failure_is_one_line(tiny_tflite, tmp_path):
    exe = _fake_compiler(tmp_path, exit_code=1)
    with pytest.raises(CompilerError) as e:
        compile_tflite(tiny_tflite, tmp_path / "out", compiler=exe)
    assert "exit 1" in str(e.value) and "Didn't find op" in str(e.value) and "\n" not in str(e.value)


def test_cli_compile_without_compiler(tiny_tflite, tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    r = subprocess.run([sys.executable, "-m", "edgetpu_models.cli", "compile", tiny_tflite, "--out-dir",
                        str(tmp_path)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("edgetpu_compiler not found on PATH") and INSTALL_URL in first
    assert "Number of operations that will run on Edge TPU: 7" in r.stdout


def _fake_multi_compiler(folder) -> str:
    """A stand-in for edgetpu_compiler v16 that handles several models (co-compilation) and --num_segments N the way
    the real one reports them: one summary block per model or segment (numbers from the published co-compile log
    in deploy/compiler_logs/gh-edgetpu-458.txt), a .log with the operator table for each."""
    log = os.path.join(DATA, "edgetpu_compiler_v15_full.log")
    script = folder / "edgetpu_compiler"
    script.write_text(f"""#!{sys.executable}
import os, shutil, sys
args = sys.argv[1:]
open(os.path.join({str(folder)!r}, "args.txt"), "w").write(" ".join(args))
out = args[args.index("-o") + 1]
models = [a for a in args if a.endswith(".tflite")]
stems = [os.path.splitext(os.path.basename(m))[0] for m in models]
if "--num_segments" in args:
    n = int(args[args.index("--num_segments") + 1])
    stems = [f"{{stems[0]}}_segment_{{i}}_of_{{n}}" for i in range(n)]
print("Edge TPU Compiler version 16.0.384591198")
print("Started a compilation timeout timer of 180 seconds.")
print()
print("Model%s compiled successfully in 524 ms." % ("s" if len(stems) > 1 else ""))
for i, stem in enumerate(stems):
    shutil.copy(models[min(i, len(models) - 1)], os.path.join(out, stem + "_edgetpu.tflite"))
    shutil.copy({log!r}, os.path.join(out, stem + "_edgetpu.log"))
    print()
    print(f"Input model: {{stem}}.tflite")
    print("Input size: 1.91MiB")
    print(f"Output model: {{out}}/{{stem}}_edgetpu.tflite")
    print("Output size: 2.52MiB")
    print("On-chip memory used for caching model parameters: %s" % ("2.27MiB" if i == 0 else "2.00MiB"))
    print("On-chip memory remaining for caching model parameters: 1.07MiB")
    print("Off-chip memory used for streaming uncached model parameters: 0.00B")
    print("Number of Edge TPU subgraphs: 1")
    print("Total number of operations: 66")
    print(f"Operation log: {{out}}/{{stem}}_edgetpu.log")
    print("See the operation log file for individual operation details.")
print("Compilation child process completed within timeout period.")
print("Compilation succeeded!")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_cocompile_segments_and_min_runtime_flags(tiny_tflite, tmp_path, monkeypatch):
    from edgetpu_models.deploy.compiler import compile_models

    exe = _fake_multi_compiler(tmp_path)
    other = tmp_path / "other.tflite"
    other.write_bytes(open(tiny_tflite, "rb").read())
    results = compile_models([tiny_tflite, str(other)], tmp_path / "co", compiler=exe, min_runtime_version=13)
    args = (tmp_path / "args.txt").read_text().split()
    assert args[-2:] == [tiny_tflite, str(other)]  # the cache goes to the models in this order
    assert args[args.index("--min_runtime_version") + 1] == "13" and "--num_segments" not in args
    assert [os.path.basename(r.output_path) for r in results] == ["tiny_edgetpu.tflite", "other_edgetpu.tflite"]
    assert [r.report.stats["on_chip_used_bytes"] for r in results] == [round(2.27 * 2**20), round(2.00 * 2**20)]
    assert results[1].report.stats["on_chip_remaining_bytes"] == round(1.07 * 2**20)
    assert all(r.report.total == 66 for r in results)  # each table from its own .log

    seg = compile_models([tiny_tflite], tmp_path / "seg", compiler=exe, segments=3)
    args = (tmp_path / "args.txt").read_text().split()
    assert args[args.index("--num_segments") + 1] == "3" and "--min_runtime_version" not in args
    assert [os.path.basename(r.output_path) for r in seg] == [f"tiny_segment_{i}_of_3_edgetpu.tflite"
                                                              for i in range(3)]
    assert len(seg[0].report.stats["models"]) == 3
    with pytest.raises(CompilerError, match="co-compiled models cannot be segmented"):
        compile_models([tiny_tflite, str(other)], tmp_path, compiler=exe, segments=2)


def test_min_runtime_defaults_to_the_installed_runtime(tiny_tflite, tmp_path, monkeypatch):
    import types

    from edgetpu_models.deploy import compiler as comp

    assert comp.runtime_version_flag(12) == (12, "asked for")
    monkeypatch.setitem(sys.modules, "pycoral", types.ModuleType("pycoral"))
    monkeypatch.setitem(sys.modules, "pycoral.utils", types.ModuleType("pycoral.utils"))
    fake = types.ModuleType("pycoral.utils.edgetpu")
    fake.get_runtime_version = lambda: "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted), RuntimeVersion(13)"
    monkeypatch.setitem(sys.modules, "pycoral.utils.edgetpu", fake)
    assert comp.installed_runtime_version() == 13
    version, source = comp.runtime_version_flag(None)
    assert version == 13 and "installed" in source
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_multi_compiler(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = argparse_namespace(file=tiny_tflite, more=[], out_dir=str(tmp_path / "o"), timeout=60, segments=None,
                              min_runtime=None, json=True)
    from edgetpu_models.cli.deploy import cmd_compile

    cmd_compile(args)
    sent = (bin_dir / "args.txt").read_text().split()
    assert sent[sent.index("--min_runtime_version") + 1] == "13"


def argparse_namespace(**kw):
    import argparse

    return argparse.Namespace(**kw)


def test_runtime_too_old_is_one_line_with_both_versions_and_the_fix():
    from edgetpu_models.deploy.compiler import runtime_mismatch_message

    # libedgetpu's text, as reported in google-coral/edgetpu#435
    err = ("Failed to prepare for TPU. Failed precondition: Package requires runtime version (14), which is newer "
           "than this runtime version (13).Node number 2 (EdgeTpuDelegateForCustomOp) failed to prepare.")
    line = runtime_mismatch_message("m_edgetpu.tflite", err)
    assert line is not None and "\n" not in line
    assert "runtime 14" in line and "installed runtime is 13" in line and "--min-runtime 13" in line
    assert runtime_mismatch_message("m.tflite", "Failed to prepare for TPU. Something else") is None


def test_published_logs_parse_into_one_summary_per_model():
    from edgetpu_models.deploy.compiler_logs import load_logs

    logs = load_logs()
    assert len(logs) >= 16
    old = next(m for m in logs if m.log == "gh-edgetpu-169.txt")  # compiler 2.0: available - used
    assert old.remaining_bytes == round(5.95 * 2**20) - round(891.50 * 1024)
    co = [m for m in logs if m.log == "gh-edgetpu-518.txt"]
    assert [m.block for m in co] == [0, 1] and co[1].cached_bytes == 0
    assert co[0].remaining_bytes == co[1].remaining_bytes == round(2.25 * 1024)
    assert co[1].streamed_bytes == round(4.53 * 2**20)


def test_loading_a_file_for_a_newer_runtime_names_both_versions(tiny_tflite, monkeypatch):
    from edgetpu_models.deploy import interpreter
    from edgetpu_models.errors import ModelFileError

    def make(path):
        raise RuntimeError("Failed to prepare for TPU. Failed precondition: Package requires runtime version (14), "
                           "which is newer than this runtime version (13).Node number 1 (EdgeTpuDelegateForCustomOp) "
                           "failed to prepare.\n")

    monkeypatch.setattr(interpreter, "_edgetpu_devices", lambda: (make, ""))
    with pytest.raises(ModelFileError) as e:
        interpreter.make_interpreter(tiny_tflite)
    msg = str(e.value)
    assert "\n" not in msg and "runtime 14" in msg and "installed runtime is 13" in msg and "-m 13" in msg
