"""Children of the super-network as real networks: the builder's Keras model of a point's spec, with its weights
sliced out of the shared weights (the corner of each largest tensor, the centre of each largest kernel, the diagonal
blocks of a grouped kernel). In inference mode its outputs equal the super-network's under that point."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from edgetpu_models.errors import ChildError
from edgetpu_models.nas.search.oneshot.layout import BlockChoice, block_choices, child_spec, search_variant
from edgetpu_models.nas.search.oneshot.supernet import BRANCH_LAYERS, SuperNet


def _centre(kernel: np.ndarray, k: int) -> np.ndarray:
    o = (kernel.shape[0] - k) // 2
    return kernel[o:o + k, o:o + k]


def _conv_slice(kind: str, kernel: np.ndarray, c: BlockChoice) -> np.ndarray:
    cin, e, cout = c.in_width, c.expand_width, c.out_width
    if kind == "pw":
        return kernel[:, :, :cin, :e]
    if kind == "dw":
        return _centre(kernel, c.kernel)[:, :, :e, :]
    if kind == "dw_in":
        return _centre(kernel, c.kernel)[:, :, :cin, :]
    if kind == "full":
        return _centre(kernel, c.kernel)[:, :, :cin, :e]
    if kind == "pwl":
        return kernel[:, :, :e, :cout]
    return kernel[:, :, :cin, :cout]  # pw_in


def _block_weights(net: SuperNet, p: int, c: BlockChoice) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for role, kind, conv_suffix, bn_suffix in BRANCH_LAYERS[c.branch]:
        key = f"{c.branch}/{role}"
        kernel = _conv_slice(kind, net.kernels[p][key].numpy(), c)
        bn = net.bns[p][key].weights()
        n = kernel.shape[2] if kind in ("dw", "dw_in") else kernel.shape[3]
        conv, bn_name = f"{c.name}_{conv_suffix}", f"{c.name}_{bn_suffix}"
        if kind == "full" and c.groups > 1:
            ci, co = c.in_width // c.groups, c.expand_width // c.groups
            for g in range(c.groups):
                out[f"{conv}_g{g}"] = [kernel[:, :, g * ci:(g + 1) * ci, g * co:(g + 1) * co]]
                out[f"{bn_name}_g{g}"] = [w[g * co:(g + 1) * co] for w in bn]
        else:
            out[conv] = [kernel]
            out[bn_name] = [w[:n] for w in bn]
    return out


def child_weights(net: SuperNet, point: Sequence[int]) -> dict[str, list[np.ndarray]]:
    """{Keras layer name: weights} of the point's child, sliced from the shared weights."""
    choices = block_choices(net.space, net.layout, point)
    out: dict[str, list[np.ndarray]] = {"stem_conv": [net.stem.numpy()], "stem_bn": net.stem_bn.weights()}
    last = net.layout.stem_width
    for p, c in enumerate(choices):
        if c.active:
            out.update(_block_weights(net, p, c))
            last = c.out_width
    out["head_conv"] = [net.head.numpy()[:, :, :last, :]]
    out["head_bn"] = net.head_bn.weights()
    out["classifier"] = [net.dense.numpy(), net.dense_bias.numpy()]
    return out


def set_child_weights(model: Any, weights: dict[str, list[np.ndarray]], include_top: bool = True) -> None:
    """Loads sliced weights into the builder's model of the child; ChildError if a layer is missing or left out."""
    names = {layer.name for layer in model.layers if layer.weights}
    if not include_top:  # a model whose classifier is not the super-network's (another number of classes)
        weights = {k: v for k, v in weights.items() if k != "classifier"}
        names.discard("classifier")
    missing, extra = sorted(set(weights) - names), sorted(names - set(weights))
    if missing or extra:
        raise ChildError(f"{model.name}: not this super-network's child (layers without weights here: "
                         f"{missing[:3]}, layers the super-network does not fill: {extra[:3]})")
    for name, w in weights.items():
        layer = model.get_layer(name)
        try:
            layer.set_weights(w)
        except ValueError as e:
            raise ChildError(f"{model.name}: layer {name}: {str(e).splitlines()[0]}") from None


def child_model(net: SuperNet, point: Sequence[int], classifier_activation: str | None = "softmax"):
    """The builder's tf_keras model of the point's spec (at the super-network's width and resolution) with its weights
    sliced from the super-network."""
    from edgetpu_models.builder import build_model

    spec = search_variant(child_spec(net.space, point), net.layout.width, net.layout.resolution)
    model = build_model(spec, classes=net.num_classes, classifier_activation=classifier_activation)
    set_child_weights(model, child_weights(net, point))
    return model


def save_child_weights(net: SuperNet, point: Sequence[int], path: "str | os.PathLike[str]") -> str:
    """Writes the child's sliced weights as a Keras .h5 weights file (what `train --weights` loads), atomically."""
    from edgetpu_models.io_utils import atomic_path

    model = child_model(net, point)
    with atomic_path(path) as tmp:
        model.save_weights(tmp, save_format="h5")
    return os.fspath(path)
