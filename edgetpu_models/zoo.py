"""The model zoo: named models, each a spec file in `searched_archs/` plus a variant of its scaling table."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from edgetpu_models.errors import UnknownModelError
from edgetpu_models.spec import Spec, load_spec


@dataclass(frozen=True)
class ZooEntry:
    name: str
    spec_file: str
    variant: str
    display_name: str
    timm_name: str | None = None
    """timm model whose `<timm_name>.in1k` checkpoint on the Hugging Face hub holds ImageNet weights, if any."""


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("efficientnet_edgetpu_s", "efficientnet_edgetpu.yaml", "S", "EfficientNet-EdgeTPU-S", "tf_efficientnet_es"),
    ZooEntry("efficientnet_edgetpu_m", "efficientnet_edgetpu.yaml", "M", "EfficientNet-EdgeTPU-M", "tf_efficientnet_em"),
    ZooEntry("efficientnet_edgetpu_l", "efficientnet_edgetpu.yaml", "L", "EfficientNet-EdgeTPU-L", "tf_efficientnet_el"),
    ZooEntry("mobilenet_edgetpu", "mobilenet_edgetpu.yaml", "1.0", "MobilenetEdgeTPU"),
    ZooEntry("mobilenet_edgetpu_075", "mobilenet_edgetpu.yaml", "0.75", "MobilenetEdgeTPU (depth multiplier 0.75)"),
)}


def searched_archs_dir() -> str:
    """Folder of the shipped spec files (package data, so an installed package finds them)."""
    return str(resources.files("edgetpu_models.searched_archs"))


@lru_cache(maxsize=None)
def _load_shipped(spec_file: str) -> Spec:
    return load_spec(os.path.join(searched_archs_dir(), spec_file))


def zoo_spec(name: str) -> tuple[Spec, str]:
    """The spec and variant of a zoo model."""
    entry = ZOO.get(name)
    if entry is None:
        raise UnknownModelError(f"{name}: not a zoo model (available: {', '.join(ZOO)})")
    return _load_shipped(entry.spec_file), entry.variant
