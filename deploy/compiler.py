"""Runs Coral's `edgetpu_compiler` when it is installed and parses its output into a CompatibilityReport.

The compiler is an x86-64 Linux binary from Coral's own Debian repository (not on PyPI). Without it, `compile_tflite`
says so in one line, points to the install instructions, and falls back to our own check (`edgetpu_check`), so the
two reports have the same structure and can be compared op by op.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from edgetpu_models.counts import INT32_MAX, parse_count
from edgetpu_models.deploy.edgetpu_check import CompatibilityReport, OpRow, check_tflite
from edgetpu_models.errors import CompilerError, ModelFileError
from edgetpu_models.io_utils import check_destination
from edgetpu_models.sidecar import derived_sidecar, foreign_outputs, write_sidecar

COMPILER = "edgetpu_compiler"
INSTALL_URL = "https://coral.ai/docs/edgetpu/compiler/#system-requirements"
DEFAULT_TIMEOUT_S = 180

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
_KEYS = {
    "Input model": "input_model", "Input": "input_model", "Input size": "input_size", "Output model": "output_model",
    "Output": "output_model", "Output size": "output_size",
    "On-chip memory available for caching model parameters": "on_chip_available",  # compilers up to 2.0
    "On-chip memory used for caching model parameters": "on_chip_used",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining",
    "Off-chip memory used for streaming uncached model parameters": "off_chip_used",
    "Number of Edge TPU subgraphs": "edgetpu_subgraphs", "Total number of operations": "total_operations",
    "Operation log": "operation_log", "Number of operations that will run on Edge TPU": "ops_on_edgetpu",
    "Number of operations that will run on CPU": "ops_on_cpu",
}
_ROW = re.compile(r"^(?P<op>[A-Za-z0-9_\-]+)\s+(?P<count>\d+)\s+(?P<status>\S.*?)\s*$")


@dataclass(frozen=True)
class CompileResult:
    report: CompatibilityReport
    compiled: bool
    """True when edgetpu_compiler ran; False when the report comes from our own check."""
    output_path: str | None = None
    log_path: str | None = None
    message: str = ""
    """One line for the user (e.g. that the compiler is missing and the check was used instead)."""


def size_to_bytes(text: str) -> int | None:
    """'6.03MiB' -> 6322913; '0.00B' -> 0; None if not a size."""
    if re.fullmatch(r"\s*[0-9.]+\s*(B|KiB|MiB|GiB)\s*", text) is None:
        return None
    try:
        return parse_count(text, units=True, what="a size")
    except ValueError:
        return None


def _derive_remaining(summary: dict[str, object]) -> None:
    """Compilers up to 2.0 print the cache available to this model instead of what it leaves ("On-chip memory
    available for caching model parameters", google-coral/edgetpu#169): the remaining bytes are available - used."""
    available, used = summary.get("on_chip_available_bytes"), summary.get("on_chip_used_bytes")
    if "on_chip_remaining_bytes" not in summary and isinstance(available, int) and isinstance(used, int):
        summary["on_chip_remaining_bytes"] = max(available - used, 0)


def _summary_field(line: str) -> tuple[str, str] | None:
    """(field name, value) of a `Key: value` summary line the compiler prints (_KEYS), else None."""
    key, sep, value = line.strip().partition(":")
    name = _KEYS.get(key.strip()) if sep else None
    return (name, value.strip()) if name else None


def _record(summary: dict[str, object], name: str, value: str) -> None:
    """A summary field, the first one seen kept; sizes also as NAME_bytes."""
    summary.setdefault(name, value)
    b = size_to_bytes(value)
    if b is not None:
        summary.setdefault(name + "_bytes", b)


def parse_compiler_summaries(text: str) -> list[dict[str, object]]:
    """The per-model summaries of one compiler run, in order: one for a plain compile, one per model when several
    were co-compiled, one per segment with --num_segments. Each holds the _KEYS fields (sizes also as *_bytes)."""
    blocks: list[dict[str, object]] = []
    for line in text.splitlines():
        field = _summary_field(line)
        if field is None:
            continue
        if field[0] == "input_model" or not blocks:
            blocks.append({})
        _record(blocks[-1], *field)
    for block in blocks:
        _derive_remaining(block)
    return blocks


def _parse_line(line: str, stats: dict[str, object]) -> None:
    """A summary line of the compiler's output (version, compile time, `Key: value`) into `stats`."""
    if line.startswith("Edge TPU Compiler version"):
        stats.setdefault("compiler_version_line", line.strip())
        stats.setdefault("compiler_version", line.split("version", 1)[1].strip())
        return
    m = re.match(r"^Model compiled successfully in (\d+) ms", line)
    if m:
        stats["compile_ms"] = int(m.group(1))
        return
    field = _summary_field(line)
    if field is not None:
        _record(stats, *field)


def _parse_text(source: str, stats: dict[str, object]) -> list[OpRow]:
    """The operator table of one text (stdout or the .log), with its summary lines added to `stats`."""
    rows: list[OpRow] = []
    in_table = False
    for raw in source.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if re.match(r"^Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        if in_table:
            m = _ROW.match(line.strip())
            if m:
                rows.append(OpRow(m.group("op"), int(m.group("count")), m.group("status")))
                continue
            in_table = False
        _parse_line(line, stats)
    return rows


def parse_compiler_output(text: str, log_text: str | None = None, model: str | None = None) -> CompatibilityReport:
    """Parses edgetpu_compiler's stdout (with -s; v15/v16 layout, and v2.0's, which prints the cache available to
    the model instead of what remains) and optionally its .log into a report.

    The table (Operator / Count / Status) is taken from stdout, or from the log when stdout has none.
    """
    stats: dict[str, object] = {}
    rows = _parse_text(text, stats)
    log_rows = _parse_text(log_text or "", stats)
    table = rows or log_rows
    if not table:
        raise CompilerError("edgetpu_compiler output has no operator table (was it run with -s?)")
    for key in ("total_operations", "ops_on_edgetpu", "ops_on_cpu", "edgetpu_subgraphs"):
        if key in stats:
            try:
                stats[key] = parse_count(str(stats[key]), lo=0, hi=INT32_MAX)
            except ValueError as e:
                raise CompilerError(f"edgetpu_compiler summary: {key}: {e}") from None
    _derive_remaining(stats)
    subgraphs = int(stats.get("edgetpu_subgraphs", 1) or 1)
    models = parse_compiler_summaries(text)
    if len(models) > 1:
        stats["models"] = models
    report = CompatibilityReport(model=model or str(stats.get("input_model", "")), tool="edgetpu_compiler",
                                 rows=tuple(table), edgetpu_subgraphs=subgraphs, stats=stats)
    if "total_operations" in stats and stats["total_operations"] != report.total:
        raise CompilerError(f"edgetpu_compiler output: table has {report.total} operations, header says "
                            f"{stats['total_operations']}")
    return report


def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def missing_compiler_message() -> str:
    return (f"{COMPILER} not found on PATH (Coral's Debian package, x86-64 Linux; install: {INSTALL_URL}); "
            "showing the built-in compatibility check instead")


def compile_tflite(path: "str | os.PathLike[str]", out_dir: "str | os.PathLike[str] | None" = None, *,
                   timeout_s: int = DEFAULT_TIMEOUT_S, compiler: str | None = None, segments: int | None = None,
                   min_runtime_version: int | None = None) -> CompileResult:
    """Compiles `path` for the Edge TPU into `out_dir` (default: beside the model) with `-s`, and parses the result.

    `segments` > 1 cuts it for a pipeline of that many Edge TPUs (`--num_segments`; the result is the first segment's,
    every segment's summary is in `report.stats['models']` and `segment_paths`). `min_runtime_version` is passed as
    `--min_runtime_version` (see `runtime_version_flag`). Without the compiler the result holds our own check
    (`compiled=False`) and a one-line message saying so.
    """
    results = compile_models([path], out_dir, timeout_s=timeout_s, compiler=compiler, segments=segments,
                             min_runtime_version=min_runtime_version)
    return results[0]


def compile_models(paths: "list[str | os.PathLike[str]]", out_dir: "str | os.PathLike[str] | None" = None, *,
                   timeout_s: int = DEFAULT_TIMEOUT_S, compiler: str | None = None, segments: int | None = None,
                   min_runtime_version: int | None = None, force: bool = False) -> list[CompileResult]:
    """One compiler run over `paths`: several models are co-compiled (they share the parameter cache in this order,
    later ones get what is left); one result per model, or per segment with `segments`. Every output gets its own
    sidecar (derived from its model's), so each command that takes a model reads it wherever `out_dir` is. `force`:
    replace files in the way that are not earlier outputs of ours."""
    paths = [os.fspath(p) for p in paths]
    for path in paths:
        if not os.path.isfile(path):
            raise ModelFileError(f"{path}: no such file")
    if segments is not None and (not isinstance(segments, int) or segments < 1):
        raise CompilerError(f"--segments: expected an integer >= 1, got {segments!r}")
    if segments and segments > 1 and len(paths) > 1:
        raise CompilerError("--segments: cuts one model; co-compiled models cannot be segmented in the same run")
    out_dir = os.fspath(out_dir) if out_dir is not None else (os.path.dirname(os.path.abspath(paths[0])) or ".")
    stems, _ = _output_stems(paths, segments)
    foreign = [f for stem in stems for f in foreign_outputs(os.path.join(out_dir, f"{stem}_edgetpu.tflite"))]
    check_destination(out_dir, folder=True, foreign=foreign, force=force)
    exe = compiler or find_compiler()
    if exe is None:
        return [CompileResult(report=check_tflite(p), compiled=False, message=missing_compiler_message())
                for p in paths]
    os.makedirs(out_dir, exist_ok=True)
    cmd = [exe, "-s", "-o", out_dir, "-t", str(int(timeout_s))]
    if segments and segments > 1:
        cmd += ["--num_segments", str(int(segments))]
    if min_runtime_version is not None:
        cmd += ["--min_runtime_version", str(int(min_runtime_version))]
    proc = _run(cmd + paths, exe, paths[0], timeout_s)
    return _results(proc.stdout, paths, out_dir, segments)


def _output_stems(paths: list[str], segments: int | None) -> tuple[list[str], list[str]]:
    """(stem of each output, the model it comes from): X_segment_I_of_N per segment, else each model's own stem."""
    if segments and segments > 1:
        stem = os.path.splitext(os.path.basename(paths[0]))[0]
        return [f"{stem}_segment_{i}_of_{segments}" for i in range(segments)], [paths[0]] * segments
    return [os.path.splitext(os.path.basename(p))[0] for p in paths], list(paths)


def _write_derived_sidecar(output_path: str, model: str, stem: str) -> None:
    """The compiled file's own sidecar, from its model's (none when the model has none)."""
    m = re.search(r"_segment_(\d+)_of_(\d+)$", stem)
    facts = {"compiled": True, **({"segment": f"{m.group(1)}/{m.group(2)}"} if m else {})}
    sidecar = derived_sidecar(model, **facts)
    if sidecar is not None:
        write_sidecar(output_path, sidecar)


def _results(stdout: str, paths: list[str], out_dir: str, segments: int | None) -> list[CompileResult]:
    """One result per compiled model (or segment): its part of the compiler's output, its .log, its output file."""
    version = next((ln.strip() for ln in stdout.splitlines() if ln.startswith("Edge TPU Compiler version")), "")
    chunks = split_compiler_output(stdout)
    stems, models = _output_stems(paths, segments)
    if len(chunks) != len(stems):
        raise CompilerError(f"{paths[0]}: {COMPILER} printed {len(chunks)} model summaries, expected {len(stems)}")
    results = []
    for stem, model, chunk in zip(stems, models, chunks):
        output_path = os.path.join(out_dir, f"{stem}_edgetpu.tflite")
        log_path: str | None = os.path.join(out_dir, f"{stem}_edgetpu.log")
        log_text = None
        if log_path and os.path.exists(log_path):
            with open(log_path, encoding="utf-8", errors="replace") as f:
                log_text = f.read()
        else:
            log_path = None
        report = parse_compiler_output(version + "\n" + chunk, log_text, model=model)
        if len(chunks) > 1:
            report.stats["models"] = parse_compiler_summaries(stdout)
        if os.path.exists(output_path):
            _write_derived_sidecar(output_path, model, stem)
        results.append(CompileResult(report=report, compiled=True,
                                     output_path=output_path if os.path.exists(output_path) else None,
                                     log_path=log_path, message=f"compiled with {COMPILER} "
                                     f"{report.stats.get('compiler_version', '')}".strip()))
    return results


MAX_OUTPUT_BYTES = 64 << 20
"""The most of the compiler's stdout (and, separately, stderr) kept; a compiler printing more is stopped. Real runs
print a few KB to a few MB (the operator table); 1.5 GB of output once took 5.5 GB of memory to read whole."""
TIMEOUT_GRACE_S = 30
"""Seconds past the compiler's own -t timeout before its process group is killed."""


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    """Ends the compiler and every child it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def _pump(stream: Any, keep: bytearray, proc: "subprocess.Popen[bytes]", overflow: list[bool]) -> None:
    """Reads `stream` to its end, keeping up to MAX_OUTPUT_BYTES; past that, stops the compiler."""
    while chunk := stream.read(1 << 16):
        room = MAX_OUTPUT_BYTES - len(keep)
        keep += chunk[:max(room, 0)]
        if len(chunk) > room and not overflow[0]:
            overflow[0] = True
            _kill_group(proc)


def run_guest(cmd: list[str], timeout_s: float) -> tuple[int, str, str, str | None]:
    """Runs an external tool as a guest: in its own process group (killed whole on timeout or when it prints more
    than MAX_OUTPUT_BYTES), output read with a bound. (exit code, stdout, stderr, why it was stopped or None)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    out, err, overflow = bytearray(), bytearray(), [False]
    pumps = [threading.Thread(target=_pump, args=(s, b, proc, overflow), daemon=True)
             for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for t in pumps:
        t.start()
    stopped = None
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stopped = f"did not finish within {timeout_s:g} s"
    _kill_group(proc)  # also any child left running after the compiler itself ended
    proc.wait()
    for t in pumps:
        t.join()
    if overflow[0] and stopped is None:
        stopped = f"printed more than {MAX_OUTPUT_BYTES} bytes"
    return (proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), stopped)


def _run(cmd: list[str], exe: str, path: str, timeout_s: int) -> "subprocess.CompletedProcess[str]":
    try:
        code, stdout, stderr, stopped = run_guest(cmd, timeout_s + TIMEOUT_GRACE_S)
    except OSError as e:
        raise CompilerError(f"{exe}: cannot run ({e.strerror or e})") from None
    if stopped is not None:
        raise CompilerError(f"{path}: {COMPILER} {stopped}; stopped it and its child processes")
    if code != 0:
        text = (stderr + "\n" + stdout).strip().splitlines()
        first = next((ln for ln in text if "error" in ln.lower()), text[0] if text else "no output")
        raise CompilerError(f"{path}: {COMPILER} failed (exit {code}): {first.strip()[:300]}")
    return subprocess.CompletedProcess(cmd, code, stdout, stderr)


def split_compiler_output(text: str) -> list[str]:
    """stdout of one compiler run cut into one chunk per model (or segment), each from its "Input model:" line to
    the next one (the operator table printed with -s stays with its model)."""
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if re.match(r"^\s*Input( model)?:", line):
            chunks.append([])
        if chunks:
            chunks[-1].append(line)
    return ["\n".join(c) for c in chunks] or [text]


# ---------------------------------------------------------------------------------------------------------------------
# Edge TPU runtime versions

RUNTIME_TOO_OLD = re.compile(r"Package requires runtime version \((\d+)\), which is newer than this runtime version "
                             r"\((\d+)\)")
"""libedgetpu's error for a model compiled for a newer runtime (google-coral/edgetpu#435, google-coral/pycoral#50)."""


def installed_runtime_version() -> int | None:
    """The Edge TPU runtime (libedgetpu) version pycoral reports, e.g. 14; None without pycoral/libedgetpu."""
    try:
        from pycoral.utils.edgetpu import get_runtime_version  # Coral's pycoral (not PyPI's "pycoral")
    except Exception:  # not installed, or libedgetpu cannot load
        return None
    try:
        text = str(get_runtime_version())
    except Exception:  # pragma: no cover - depends on the driver
        return None
    m = re.search(r"RuntimeVersion\((\d+)\)", text) or re.search(r"(\d+)\s*$", text)
    return int(m.group(1)) if m else None


def runtime_version_flag(requested: int | None = None) -> tuple[int | None, str]:
    """(version to pass as --min_runtime_version, where it came from): the one asked for, else the installed one,
    else None (the compiler's default: the newest runtime it knows)."""
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise CompilerError(f"--min-runtime: expected a runtime version >= 1 (e.g. 13), got {requested!r}")
        return requested, "asked for"
    installed = installed_runtime_version()
    if installed is not None:
        return installed, "installed Edge TPU runtime (pycoral)"
    return None, "compiler default (no Edge TPU runtime found; name one with --min-runtime)"


def runtime_mismatch_message(path: str, error_text: str) -> str | None:
    """One line for libedgetpu's "requires runtime version" failure, with both versions and the fix; else None."""
    m = RUNTIME_TOO_OLD.search(error_text)
    if not m:
        return None
    need, have = int(m.group(1)), int(m.group(2))
    return (f"{path}: compiled for Edge TPU runtime {need}, but the installed runtime is {have}: recompile with "
            f"`edgetpu-models compile MODEL.tflite --min-runtime {have}` (edgetpu_compiler -m {have}) or update "
            f"libedgetpu to {need} or newer (https://coral.ai/software/#edgetpu-runtime)")
