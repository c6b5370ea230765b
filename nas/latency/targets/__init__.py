"""Latency targets as data, and their loader.

The package holds one YAML file per shipped target (constants, assumptions, calibration results), the calibration
table they are fitted to, the calibration models' layer graphs (precomputed from their int8 .tflite files) and the
trained CPU kernel predictor. A user's own fit (`edgetpu-models calibrate`) is written to the user's config folder,
`$EDGETPU_MODELS_CONFIG/targets/` (default `~/.config/edgetpu_models/targets/`), never into the installed package; a
file there overrides the shipped target of the same name, and `Target.path` says which file was read.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from typing import Any

from edgetpu_models.errors import TargetError
from edgetpu_models.io_utils import read_yaml
from edgetpu_models.nas.latency.apm import EdgeTPUConstants
from edgetpu_models.nas.latency.types import KINDS, Target

CONFIG_ENV = "EDGETPU_MODELS_CONFIG"


@lru_cache(maxsize=1)
def targets_dir() -> str:
    """Folder of the shipped target files (package data)."""
    return str(resources.files("edgetpu_models.nas.latency.targets"))


def user_targets_dir() -> str:
    """Folder of the user's own target files (calibration results), which override shipped ones of the same name."""
    base = os.environ.get(CONFIG_ENV) or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"), "edgetpu_models")
    return os.path.join(base, "targets")


def target_path(name: str) -> str:
    """The file a target is read from: the user's fit when there is one, else the shipped file."""
    user = os.path.join(user_targets_dir(), f"{name}.yaml")
    return user if os.path.isfile(user) else os.path.join(targets_dir(), f"{name}.yaml")


def is_user_target(path: str) -> bool:
    return os.path.dirname(os.path.abspath(path)) == os.path.abspath(user_targets_dir())


def list_targets() -> list[str]:
    names = {f[:-5] for f in os.listdir(targets_dir()) if f.endswith(".yaml")}
    if os.path.isdir(user_targets_dir()):
        names |= {f[:-5] for f in os.listdir(user_targets_dir()) if f.endswith(".yaml")}
    return sorted(names)


def load_target(name: str) -> Target:
    """Reads a target file (cached until the file changes, e.g. after `calibrate`); TargetError when unknown."""
    path = target_path(name) if isinstance(name, str) and "/" not in name else ""
    if not path or not os.path.exists(path):
        raise TargetError(f"{name}: unknown latency target (available: {', '.join(list_targets())})")
    return _load_target(name, path, os.stat(path).st_mtime_ns)


@lru_cache(maxsize=32)
def _load_target(name: str, path: str, _mtime: int) -> Target:
    data = read_yaml(path, "target file", TargetError)
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected a mapping")
    kind = data.get("kind")
    if kind not in KINDS:
        raise TargetError(f"{path}: kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "edgetpu":
        return Target(name, kind, path, data)
    constants = resolved_constants(name, data, path)
    return Target(name, kind, path, data, EdgeTPUConstants.from_mapping(constants, path))


SECTIONS = ("constants", "link", "host")
"""Where a target file keeps its Edge TPU constants: `constants` (the chip: what is the same silicon on every Coral
device), `link` (the host link: bandwidth and per-transfer cost, not scaled by the chip clock) and `host` (the host
CPU's share of an inference); `clock_mhz` is a key of its own. All three are flattened into one `EdgeTPUConstants`."""


def own_constants(data: dict[str, Any], path: str) -> dict[str, Any]:
    """A target file's own constants, from its sections and its clock."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise TargetError(f"{path}: {section}: expected a mapping of name -> number")
        for key, value in values.items():
            if key in ("name", "description", "source", "cpu_target", "cpu_scale"):  # not chip constants
                continue
            if key in out:
                raise TargetError(f"{path}: {section}.{key}: set twice (in {section} and another section)")
            out[key] = value
    if "clock_mhz" in data:
        if "clock_mhz" in out:
            raise TargetError(f"{path}: clock_mhz: set twice (top level and in a section)")
        out["clock_mhz"] = data["clock_mhz"]
    return out


def resolved_constants(name: str, data: dict[str, Any], path: str) -> dict[str, Any]:
    """A target's constants, following `inherits:` (coral-usb-std = coral-usb at a lower clock; coral-devboard = the
    same chip behind another link and host)."""
    own = own_constants(data, path)
    parent = data.get("inherits")
    if parent is None:
        return own
    if parent == name:
        raise TargetError(f"{path}: inherits: a target cannot inherit from itself")
    base = load_target(parent)
    if base.kind != "edgetpu":
        raise TargetError(f"{path}: inherits: {parent} is not an Edge TPU target")
    merged = resolved_constants(parent, base.data, base.path)
    merged.update(own)
    return merged
