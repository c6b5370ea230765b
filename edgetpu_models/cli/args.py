"""What every command module shares: argparse value types with ranges (argparse names the flag; these say what was
expected), and the MODEL argument. Every numeric flag has a range that makes sense; NaN and infinities are refused."""

from __future__ import annotations

import argparse
import math
from typing import Callable

from edgetpu_models.spec import MAX_RESOLUTION, MIN_RESOLUTION
from edgetpu_models.zoo import ZOO

MAX_THREADS = 256
"""More threads than any CPU this runs on has; LiteRT crashes on absurd counts instead of refusing them."""


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer from `lo` to `hi`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {text[:40]!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {text[:40]!r}")
        return value

    parse.__name__ = "int"
    return parse


def bounded_float(lo: float, hi: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number from `lo` to `hi` (`low_open`: greater than `lo`)."""
    what = f"a number {'>' if low_open else '>='} {lo:g} and <= {hi:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (low_open and value == lo):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}")
        return value

    parse.__name__ = "float"
    return parse


threads_arg = bounded_int(1, MAX_THREADS)
resolution_arg = bounded_int(MIN_RESOLUTION, MAX_RESOLUTION)
port_arg = bounded_int(0, 65535)
seed_arg = bounded_int(0, 2**32 - 1)
classes_arg = bounded_int(1, 100_000)
batch_arg = bounded_int(1, 4096)
epochs_arg = bounded_int(1, 100_000)
lr_arg = bounded_float(0.0, 10.0, low_open=True)
fraction_arg = bounded_float(0.0, 1.0, low_open=True)


def add_model_args(p: argparse.ArgumentParser, resolution: bool = True, help: str | None = None) -> None:
    """MODEL plus --variant/--resolution: shared by every command that takes a model reference."""
    p.add_argument("model", metavar="MODEL", help=help or f"zoo name ({', '.join(ZOO)}) or spec file (.yaml)")
    p.add_argument("--variant", help="variant of the spec's scaling table (default: the zoo entry's or the spec's)")
    if resolution:
        p.add_argument("--resolution", type=resolution_arg, help="input resolution (default: the variant's)")
    add_trust_arg(p)


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    """--trust-model-code: for commands that may load a Keras model file."""
    p.add_argument("--trust-model-code", action="store_true",
                   help="load Keras files that hold Python code (Lambda layers, custom objects): only files you trust")
