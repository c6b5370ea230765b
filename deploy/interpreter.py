"""One way to open a .tflite file for inference, on whatever runtime the machine has.

Order: pycoral with the Edge TPU delegate (when pycoral, libedgetpu and a Coral device are all present), else LiteRT
(`ai-edge-litert`, the `[litert]` and `[full]` extras) on the CPU, else `tflite_runtime` (what a Coral Dev Board or a
Raspberry Pi often has), else TensorFlow's `tf.lite`. A model compiled by `edgetpu_compiler` holds an
`edgetpu-custom-op` that only the Edge TPU runs: without a device it gets a one-line ModelFileError saying so, instead
of the runtime's "unresolved custom op" crash.

The file is checked with our own flatbuffer walk first (no TensorFlow, no schema module), so garbage or a missing file
is a clean error.
"""

from __future__ import annotations

import os
from typing import Any

from edgetpu_models.errors import ModelFileError
from edgetpu_models.tflite_reader import custom_op_names

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
BACKENDS = ("pycoral", "litert", "tflite_runtime", "tf.lite")


def is_edgetpu_compiled(path_or_bytes: "str | os.PathLike[str] | bytes") -> bool:
    """True for a file produced by edgetpu_compiler (it holds an edgetpu-custom-op code). Read without the TFLite
    schema module (`tflite_reader.custom_op_names`), so it works on a board with only tflite_runtime or pycoral."""
    return EDGETPU_CUSTOM_OP in custom_op_names(path_or_bytes)


def _edgetpu_devices() -> tuple[Any, str]:
    """(pycoral's make_interpreter, '') when pycoral and a device are present, else (None, why not)."""
    try:
        from pycoral.utils import edgetpu  # Coral's pycoral, from Coral's package index (not PyPI's "pycoral")
    except ImportError:
        return None, "pycoral is not installed"
    except Exception as e:  # a broken libedgetpu raises at import (OSError, RuntimeError, ...)
        return None, f"pycoral cannot load ({type(e).__name__}: {e})"
    try:
        devices = edgetpu.list_edge_tpus()
    except Exception as e:  # pragma: no cover - depends on the device driver
        return None, f"no Edge TPU runtime ({type(e).__name__}: {e})"
    if not devices:
        return None, "no Edge TPU device is connected"
    return edgetpu.make_interpreter, ""


def _cpu_interpreter_class(prefer: str | None) -> tuple[Any, str]:
    order = [b for b in BACKENDS[1:] if prefer in (None, b)]
    for name in order:
        try:
            if name == "litert":
                from ai_edge_litert.interpreter import Interpreter
            elif name == "tflite_runtime":
                from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
            else:
                import tensorflow as tf

                Interpreter = tf.lite.Interpreter  # type: ignore[misc]
            return Interpreter, name
        except ImportError:
            continue
    raise ModelFileError(f"no TFLite runtime available ({' / '.join(order) or prefer}): pip install "
                         f"'edgetpu-models[litert]', or tflite-runtime, or Coral's pycoral (see the README)")


def make_interpreter(path: "str | os.PathLike[str]", threads: int | None = None, *,
                     prefer: str | None = None) -> tuple[Any, str]:
    """(allocated interpreter, backend name) for a .tflite file; backend names: 'pycoral (Edge TPU)' (or 'pycoral
    (CPU: ...)' for an uncompiled file on a machine with a device), 'litert', 'tflite_runtime', 'tf.lite'.
    `prefer` forces one of BACKENDS (e.g. 'litert' to skip the Edge TPU)."""
    path = os.fspath(path)
    if prefer is not None and prefer not in BACKENDS:
        raise ModelFileError(f"backend: expected one of {', '.join(BACKENDS)}, got {prefer!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ModelFileError(f"threads: expected an integer >= 1, got {threads!r}")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    compiled = is_edgetpu_compiled(path)  # also: ModelFileError when it is not a TFLite file at all
    if prefer in (None, "pycoral"):
        coral_make, why = _edgetpu_devices()
        if coral_make is not None:
            try:
                interp = coral_make(path)
                interp.allocate_tensors()
            except (RuntimeError, ValueError) as e:
                from edgetpu_models.deploy.compiler import runtime_mismatch_message

                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                line = runtime_mismatch_message(path, str(e))
                raise ModelFileError(line or f"{path}: the Edge TPU runtime cannot load it ({first})") from None
            # an uncompiled file has nothing for the delegate: every op runs on the CPU, and the name says so
            return interp, "pycoral (Edge TPU)" if compiled else "pycoral (CPU: file not compiled for the Edge TPU)"
        if compiled or prefer == "pycoral":
            what = "compiled for the Edge TPU (edgetpu-custom-op)" if compiled else "asked for the Edge TPU"
            raise ModelFileError(f"{path}: {what}, but {why}; run the uncompiled .tflite on the CPU, or install "
                                 f"libedgetpu and pycoral from Coral's repositories and connect a device")
    elif compiled:
        raise ModelFileError(f"{path}: compiled for the Edge TPU (edgetpu-custom-op); the {prefer} CPU runtime cannot "
                             f"run it: use the uncompiled .tflite")
    interpreter_cls, name = _cpu_interpreter_class(prefer if prefer != "pycoral" else None)
    try:
        interp = interpreter_cls(model_path=path, num_threads=threads)
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise ModelFileError(f"{path}: the {name} runtime cannot load it ({str(e).strip().splitlines()[0]})") from None
    return interp, name
