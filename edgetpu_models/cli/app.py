"""`edgetpu-models` command line: a thin layer over the library.

Each area registers its own commands (a module with `register(subparsers)`); a command is argparse -> the library's
config -> one library workflow -> print, and its module's header imports what it uses. `--help` stays fast through
the lazy command table `commands.COMMANDS` (command -> module, one-line help): the top-level parser is built from the
table alone, and only the module of the command being run is imported and registers its full parser; every other
command is a placeholder that only carries its help line. `edgetpu-models --help` imports no command module.
Every library error (EdgeTPUModelsError) becomes one line on stderr and its class's exit code (errors.py: 2 usage, 1
the job failed, 130 interrupted; `check` keeps its own 1 for "not fully mapped"); nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
from importlib import import_module
from typing import Sequence

from edgetpu_models.cli.args import json_mode
from edgetpu_models.cli.commands import COMMANDS
from edgetpu_models.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, EdgeTPUModelsError

WORKSTATION_ONLY = {"tensorflow": "TensorFlow", "tf_keras": "TensorFlow", "tensorflow_model_optimization": "TensorFlow",
                    "keras": "TensorFlow", "ray": "Ray", "grpc": "grpcio", "grpc_health": "grpcio",
                    "grpc_reflection": "grpcio", "matplotlib": "matplotlib", "scipy": "SciPy",
                    "safetensors": "safetensors"}
"""Top-level modules of the `[full]` extra (setup.py), by what a user would call them: a runtime-only install (the
base one, on a board) lacks them, and a command reaching for one says which extra to install."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in our one-line format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Every command's module registers its full parser when `argv` is None; otherwise only the module of
    the command named in `argv` does, and the other commands are help-line placeholders (see the module docstring)."""
    parser = _Parser(prog="edgetpu-models",
                     description="Accelerator-aware networks for the Edge TPU: zoo, latency, NAS, quantize, deploy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    own = COMMANDS[wanted].module if wanted in COMMANDS else None
    registered: set[str] = set()
    for name, command in COMMANDS.items():
        if command.module in registered:
            continue
        if wanted is None or command.module == own:
            import_module(command.module).register(sub)
            registered.add(command.module)
        else:
            sub.add_parser(name, help=command.help, add_help=False)
    return parser


_NATIVE_NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} |"
                           rb"E\d{4} .*(cuInit|cuda|CUDA|add_port\.cc)|INFO: Created TensorFlow Lite XNNPACK delegate|"
                           rb"fully_quantize: \d+, inference_type: )")


def _quiet_tensorflow() -> threading.Thread | None:
    """TensorFlow's C++ runtime logs start-up chatter (oneDNN, CUDA probing) straight to file descriptor 2 before
    TF_CPP_MIN_LOG_LEVEL is read. Python's own stderr (progress bars, our errors) keeps the terminal; native writes to
    fd 2 go through a filter thread that drops only those INFO/WARNING/CUDA-probe lines (and the converter's and
    LiteRT's one-line notices)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # this package never needs a GPU; skip the cuInit probe
    try:
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        return None
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as native:
            for line in native:
                if not _NATIVE_NOISE.match(line):
                    os.write(terminal, line)

    thread = threading.Thread(target=pump, name="native-stderr-filter", daemon=True)
    thread.start()
    return thread


def _trusting(trust: bool) -> contextlib.AbstractContextManager:
    """--trust-model-code, in force for the command; model_io (and what it imports) loads only when it is given, so
    the runtime commands of a base install import nothing of the workstation's."""
    if not trust:
        return contextlib.nullcontext()
    from edgetpu_models.model_io import trusting_model_code

    return trusting_model_code(True)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # only as the real console script: tests calling main() keep their own stderr
        _quiet_tensorflow()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        with _trusting(getattr(args, "trust_model_code", False)), json_mode(getattr(args, "json", False)):
            result = args.func(args)
    except EdgeTPUModelsError as e:
        print(f"edgetpu-models {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except ImportError as e:  # a base install (a board) running a workstation command: the job cannot run here
        what = WORKSTATION_ONLY.get((e.name or "").split(".")[0])
        if what is None and sys.version_info >= (3, 11):
            raise
        need = f"needs {what}, which the base install leaves out" if what else \
            f"needs the workstation install, Python 3.11 ({type(e).__name__}: {e})"
        print(f"edgetpu-models {args.command}: error: {need}: pip install 'edgetpu-models[full]' (Python 3.11)",
              file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"edgetpu-models {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `edgetpu-models list | head`
        return 0
    return int(result or 0)
