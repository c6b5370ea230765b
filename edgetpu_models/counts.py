"""The one parser of sizes, counts and HOST:PORT addresses that a user or a tool gives as text, checked against what
the code below holds.

`parse_count("64M", lo=1024, hi=INT32_MAX)` -> 67108864. Units are binary (K = 1024; "KiB", "MB", "M" alike), as the
Edge TPU compiler and gRPC mean them; a fraction is allowed with a unit ("1.5M"). Anything else -- a value out of
[lo, hi] (gRPC's message limits are C int32: "2G" does not fit), NaN, infinities, 400-digit numbers, text -- raises
ValueError with one line saying what was expected, never OverflowError.
"""

from __future__ import annotations

import math
import re

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]{1,20}(?:\.[0-9]{1,12})?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_COUNT = re.compile(r"\s*[+]?([0-9]{1,20})\s*")


def parse_count(text: str, *, lo: int = 0, hi: int = INT64_MAX, units: bool = False, what: str = "a count") -> int:
    """An integer from `lo` to `hi` in `text`; with `units`, a byte size such as 1048576, 512K, 64M or 1.5GiB."""
    text = str(text)
    expected = (f"{what} from {lo} to {hi}" + (" (a number, optionally with K, M or G)" if units else ""))
    m = (_SIZE if units else _COUNT).fullmatch(text)
    if m is None:
        raise ValueError(f"expected {expected}, got {text[:40]!r}")
    if units:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if not math.isfinite(value) or value != int(value) and not m.group(2):
            raise ValueError(f"expected {expected}, got {text[:40]!r}")
        number = int(round(value))
    else:
        number = int(m.group(1))
    if not lo <= number <= hi:
        raise ValueError(f"expected {expected}, got {text[:40]!r}")
    return number


_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


def parse_host_port(text: str, what: str = "address") -> tuple[str, int]:
    """(host, port) of 'HOST:PORT', '[IPv6]:PORT' or 'IPv4:PORT', port 1 to 65535; ValueError in one line otherwise.
    The host is a name (letters, digits, '.', '-', '_') or an IP address; nothing a channel target could misread
    (schemes, paths, spaces, a bare IPv6 address without brackets)."""
    import ipaddress

    text = str(text)
    expected = f"{what}: expected HOST:PORT (port 1 to 65535; IPv6 as [ADDR]:PORT), got {text[:80]!r}"
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(expected)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(expected) from None
    elif ":" in host or not _HOST.fullmatch(host):
        raise ValueError(expected)
    try:
        number = parse_count(port, lo=1, hi=65535)
    except ValueError:
        raise ValueError(expected) from None
    return host, number
