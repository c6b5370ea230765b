"""The model zoo: named models, each a spec file in `searched_archs/` plus a variant of its scaling table; and
`resolve_spec`, the answer to "which spec is this?" for a zoo name, a spec file, a `Spec` or a spec mapping (model
files and Keras models resolve through `model_io.resolve_model`, which uses this for specs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from edgetpu_models.errors import SpecError, UnknownModelError
from edgetpu_models.spec import Normalization, Spec, load_spec, spec_from_dict

SPEC_SUFFIXES = (".yaml", ".yml")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TFLITE_SUFFIXES = (".tflite",)
MODEL_FILE_SUFFIXES = SPEC_SUFFIXES + KERAS_SUFFIXES + TFLITE_SUFFIXES


@dataclass(frozen=True)
class ZooEntry:
    name: str
    spec_file: str
    variant: str
    display_name: str
    timm_name: str | None = None
    """timm model whose `<timm_name>.<timm_tag>` checkpoint on the Hugging Face hub holds ImageNet weights, if any."""
    timm_tag: str = "in1k"
    """timm's pretrained tag of that checkpoint (`in1k` for the ports of the official ones)."""


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    *(ZooEntry(f"efficientnet_edgetpu_{v.lower()}", "efficientnet_edgetpu.yaml", v, f"EfficientNet-EdgeTPU-{v}",
               f"tf_efficientnet_e{v.lower()}") for v in ("S", "M", "L")),
    ZooEntry("mobilenet_edgetpu", "mobilenet_edgetpu.yaml", "1.0", "MobilenetEdgeTPU"),
    ZooEntry("mobilenet_edgetpu_075", "mobilenet_edgetpu.yaml", "0.75", "MobilenetEdgeTPU (depth multiplier 0.75)"),
    ZooEntry("mobilenet_edgetpu_125", "mobilenet_edgetpu.yaml", "1.25", "MobilenetEdgeTPU (depth multiplier 1.25)"),
    ZooEntry("mobilenet_edgetpu_175", "mobilenet_edgetpu.yaml", "1.75", "MobilenetEdgeTPU (depth multiplier 1.75)"),
    ZooEntry("mobilenet_edgetpu_v2_tiny", "mobilenet_edgetpu_v2.yaml", "tiny", "MobilenetEdgeTPU-V2-Tiny"),
    ZooEntry("mobilenet_edgetpu_v2_xs", "mobilenet_edgetpu_v2.yaml", "xs", "MobilenetEdgeTPU-V2-XS"),
    ZooEntry("mobilenet_edgetpu_v2_s", "mobilenet_edgetpu_v2.yaml", "s", "MobilenetEdgeTPU-V2-S"),
    ZooEntry("mobilenet_edgetpu_v2_m", "mobilenet_edgetpu_v2.yaml", "m", "MobilenetEdgeTPU-V2-M",
             "mobilenet_edgetpu_v2_m", "ra4_e3600_r224_in1k"),
    ZooEntry("mobilenet_edgetpu_v2_l", "mobilenet_edgetpu_v2.yaml", "l", "MobilenetEdgeTPU-V2-L"),
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


def resolve_spec(ref: Any, variant: str | None = None) -> tuple[Spec, str | None]:
    """The spec and variant of a zoo name, spec file (.yaml), `Spec` or spec mapping. An explicit `variant` wins over
    a zoo entry's own. UnknownModelError for a name that is neither; SpecError for a bad spec or a model file."""
    if isinstance(ref, Spec):
        return ref, variant
    if isinstance(ref, Mapping):
        return spec_from_dict(ref), variant
    if not isinstance(ref, (str, os.PathLike)):
        raise SpecError(f"{type(ref).__name__}: expected a zoo name, spec file (.yaml), Spec or spec mapping")
    path = os.fspath(ref)
    if path in ZOO:
        spec, zoo_variant = zoo_spec(path)
        return spec, variant or zoo_variant
    low = path.lower()
    if low.endswith(KERAS_SUFFIXES + TFLITE_SUFFIXES):
        kind = "tflite" if low.endswith(TFLITE_SUFFIXES) else "keras"
        raise SpecError(f"{path}: expected a zoo name or spec file (.yaml), got a {kind} model")
    if low.endswith(SPEC_SUFFIXES) or os.path.sep in path or os.path.exists(path):
        if not os.path.exists(path):
            raise SpecError(f"{path}: no such spec file")
        return load_spec(path), variant
    raise UnknownModelError(f"{path}: not a zoo model (available: {', '.join(ZOO)}) nor a model file "
                            f"({', '.join(MODEL_FILE_SUFFIXES)})")


def normalization_of(model_ref: Any, variant: str | None = None) -> Normalization:
    """The spec's normalisation, or its variant's where the variant has its own (MobilenetEdgeTPU-V2's differ)."""
    spec, variant = resolve_spec(model_ref, variant)
    chosen = variant or spec.default_variant
    own = spec.variants[chosen].normalization if chosen in spec.variants else None
    return own or spec.normalization
