"""After the search: a searched spec's weights sliced out of a run's super-network, for `train --init-from-supernet`.

The spec must be a point of the run's space (best_spec.yaml, a top/ spec, or any spec the space encodes), trained at
the super-network's width: best_spec.yaml carries that setting as its `search` variant (`train best_spec.yaml
--variant search --init-from-supernet DIR`). The weights file holds every layer but the classifier (train puts a new
head on for the data's classes), in the builder's layer order, as a Keras .h5 file `train --weights` loads.
"""

from __future__ import annotations

import os
from typing import Any

from edgetpu_models.errors import OneShotError
from edgetpu_models.nas.search.oneshot.outputs import SEARCH_VARIANT, with_search_variant

__all__ = ["supernet_init_weights", "with_search_variant", "SEARCH_VARIANT"]

def _restore_supernet(search_dir: str) -> Any:
    import tensorflow as tf

    from edgetpu_models.nas.search.oneshot.layout import make_layout
    from edgetpu_models.nas.search.oneshot.run import CKPT_DIR, SPACE_NAME, load_oneshot
    from edgetpu_models.nas.search.oneshot.supernet import SuperNet
    from edgetpu_models.nas.search.space import load_space

    cfg, _ = load_oneshot(search_dir)
    latest = tf.train.latest_checkpoint(os.path.join(search_dir, CKPT_DIR))
    if latest is None:
        raise OneShotError(f"{search_dir}: no super-network checkpoint (checkpoints/ is empty)")
    classes = next((shape[0] for name, shape in tf.train.list_variables(latest) if "dense_bias" in name), None)
    space = load_space(os.path.join(search_dir, SPACE_NAME))
    net = SuperNet(space, make_layout(space, cfg.width, cfg.resolution), int(classes), seed=cfg.seed)
    tf.train.Checkpoint(net=net).restore(latest).expect_partial()
    return net


def supernet_init_weights(search_dir: str, spec_ref: Any, variant: str | None, out_path: str) -> str:
    """Writes the sliced weights of `spec_ref` (a point of the run's space) for `train` to start from."""
    from edgetpu_models.builder import build_model, resolve_arch
    from edgetpu_models.nas.search.oneshot.child import child_weights, set_child_weights
    from edgetpu_models.nas.search.space import SearchSpaceError
    from edgetpu_models.zoo import resolve_spec

    net = _restore_supernet(search_dir)
    spec, variant = resolve_spec(spec_ref, variant)
    arch = resolve_arch(spec, variant)
    if arch.stem.filters != net.layout.stem_width:
        raise OneShotError(f"{spec_ref}: variant {variant!r} has a {arch.stem.filters}-channel stem; the super-network "
                           f"in {search_dir} was trained at width {net.layout.width} (stem {net.layout.stem_width}): "
                           f"train with --variant {SEARCH_VARIANT}")
    try:
        point = net.space.encode(spec)
    except SearchSpaceError as e:
        raise OneShotError(f"--init-from-supernet {search_dir}: {e}") from None
    model = build_model(spec, variant, classes=1000, weights=None)
    try:
        set_child_weights(model, child_weights(net, point), include_top=False)
    except ValueError as e:
        raise OneShotError(f"{spec_ref}: does not fit the super-network in {search_dir} ({e})") from None
    from edgetpu_models.io_utils import atomic_path

    with atomic_path(out_path) as tmp:
        model.save_weights(tmp, save_format="h5")
    return out_path
