"""What every command module shares: argparse value types with ranges (argparse names the flag; these say what was
expected), and the MODEL argument. Every numeric flag has a range that makes sense; NaN and infinities are refused."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from typing import Any, Callable, Iterator

from edgetpu_models.spec import MAX_RESOLUTION, MIN_RESOLUTION
from edgetpu_models.zoo import ZOO

MAX_THREADS = 256
"""More threads than any CPU this runs on has; LiteRT crashes on absurd counts instead of refusing them."""


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer from `lo` to `hi`."""
    from edgetpu_models.counts import parse_count

    def parse(text: str) -> int:
        try:
            return parse_count(text, lo=lo, hi=hi, what="an integer")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

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


def size_arg(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a byte size from `lo` to `hi` such as 1048576, 512K or 64M (`edgetpu_models.counts`)."""
    from edgetpu_models.counts import parse_count

    def parse(text: str) -> int:
        try:
            return parse_count(text, lo=lo, hi=hi, units=True, what="a byte size")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "size"
    return parse


def address_arg(text: str) -> str:
    """An argparse type: a server's HOST:PORT (`edgetpu_models.counts.parse_host_port`: port 1 to 65535)."""
    from edgetpu_models.counts import parse_host_port

    try:
        parse_host_port(text, "HOST:PORT")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


CLIENT_CREDENTIAL_FLAGS = ("token_file", "tls_ca", "tls_cert", "tls_key")


def add_client_credential_args(p: argparse.ArgumentParser, server_flag: str) -> None:
    """How a client reaches a secured latency server: the same options `latency-server` takes, client side."""
    p.add_argument("--token-file", metavar="F", help=f"with {server_flag}: file whose first line is the server's token")
    p.add_argument("--tls-ca", metavar="PEM", help=f"with {server_flag}: connect with TLS, trusting these roots")
    p.add_argument("--tls-cert", metavar="PEM", help=f"with {server_flag}: this client's certificate (mutual TLS; "
                                                     "needs --tls-key and --tls-ca)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")


def client_credential_paths(args: argparse.Namespace, server: str | None, server_flag: str) -> dict[str, str]:
    """The credential files given (checked now: unreadable or bad files are one line before any work); credentials
    without a server are refused rather than ignored."""
    paths = {k: getattr(args, k) for k in CLIENT_CREDENTIAL_FLAGS if getattr(args, k, None) is not None}
    if paths and not server:
        from edgetpu_models.errors import EdgeTPUModelsError

        raise EdgeTPUModelsError(f"--{next(iter(paths)).replace('_', '-')} is for {server_flag}, which is not given")
    if paths:
        from edgetpu_models.nas.service.client import client_credentials

        client_credentials(**paths)
    return paths


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


def add_force_arg(p: argparse.ArgumentParser) -> None:
    """--force: for commands that write files (`io_utils.check_destination` refuses to replace what is not theirs)."""
    p.add_argument("--force", action="store_true",
                   help="replace existing files at the output that this command did not write (another model's "
                        "sidecar, a file without one)")


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    """--trust-model-code: for commands that may load a Keras model file."""
    p.add_argument("--trust-model-code", action="store_true",
                   help="load Keras files that hold Python code (Lambda layers, custom objects): only files you trust")


_json_out: list[Any] = []
"""The real stdout while a --json command runs (everything else printed then goes to stderr)."""


@contextlib.contextmanager
def json_mode(enabled: bool) -> Iterator[None]:
    """With --json: stdout carries only the one document `emit_json` writes; any other line a command (or a library
    below it) prints goes to stderr, so `cmd --json | jq` always parses."""
    if not enabled:
        yield
        return
    _json_out.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_out.pop()


def print_json(document: str) -> None:
    """Prints the command's one JSON document (serialised) on the real stdout (see `json_mode`)."""
    out = _json_out[-1] if _json_out else sys.stdout
    out.write(document + "\n")
    out.flush()
