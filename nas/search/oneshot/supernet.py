"""The super-network: one set of shared weights holding every point of a search space (TuNAS, Bender et al. 2020).

How each decision of the space becomes a choice inside one network:
- width multiplier and expansion: channel masks over the largest tensor (a narrower choice uses the first channels),
  as TuNAS does; every tensor keeps its largest width and the unused channels are exactly zero;
- kernel size: one largest kernel per branch, a smaller kernel is its centre (a spatial mask; with TensorFlow's SAME
  padding the centre of a masked 5x5 sees exactly the pixels a 3x3 sees, at stride 1 and 2);
- block type (`ibn` / `fused_ibn`, and the expansion-1 forms of each): separate branches with their own weights (a
  depthwise kernel and a full convolution are different operators; see layout.BRANCHES), summed with one-hot weights
  (uniform weights in the "all ops" warm-up);
- repeats delta: optional blocks pass their input through (zero-padded to the next width) when left out;
- identity skip: the residual is added when the point's resolved block has one (skip, stride 1, equal widths);
- group size of the grouped fused block: a block-diagonal mask on the shared full expansion kernel, so a grouped and
  a full convolution share weights (a grouped conv is a full conv with the off-group weights zero).

Batch norm. While searching, batch norm normalises with the statistics of the current batch (TuNAS's choice): the
moving averages of a shared layer would mix the statistics of many different children, and masked channels would
pull them to zero. The moving averages are still kept, per channel and only for the channels (and branches) the
sampled child uses, so that inference mode (`training=False`) is the plain batch norm every child has, and a child's
sliced weights include statistics. Every batch norm is followed by the channel mask again (BN's beta would otherwise
make masked channels non-zero). `child.child_model` slices all of it into the builder's model of the point's spec, and
the two agree in inference mode to float tolerance (tests/test_oneshot.py, benchmarks/oneshot.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from edgetpu_models.builder import CONV_KERNEL_INITIALIZER, DENSE_KERNEL_INITIALIZER
from edgetpu_models.nas.search.oneshot.layout import BRANCHES, BlockChoice, Layout, Position
from edgetpu_models.nas.search.space import SearchSpace

BRANCH_LAYERS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    # branch -> (role, kind, child conv suffix, child bn suffix); kind: pw (1x1 in->exp), dw (k x k depthwise),
    # full (k x k in->exp), pwl (1x1 exp->out), pw_in (1x1 in->out), dw_in (k x k depthwise of the input).
    "ibn": (("pw", "pw", "conv_pw", "bn1"), ("dw", "dw", "conv_dw", "bn2"), ("pwl", "pwl", "conv_pwl", "bn3")),
    "ibn_e1": (("dw", "dw_in", "conv_dw", "bn1"), ("pwl", "pw_in", "conv_pw", "bn2")),
    "fused_ibn": (("exp", "full", "conv_exp", "bn1"), ("pwl", "pwl", "conv_pwl", "bn2")),
    "fused_ibn_e1": (("pwl", "pw_in", "conv_pwl", "bn1"),),
}
"""The layers of each branch, in order, and the names the builder gives them (layer_graph._block_layers)."""


def _kernel_shape(kind: str, pos: Position) -> tuple[int, int, int, int]:
    k, cin, e, cout = pos.kernel, pos.in_width, pos.expand_width, pos.out_width
    return {"pw": (1, 1, cin, e), "dw": (k, k, e, 1), "full": (k, k, cin, e), "pwl": (1, 1, e, cout),
            "pw_in": (1, 1, cin, cout), "dw_in": (k, k, cin, 1)}[kind]


class BatchNorm(tf.Module):
    """Batch norm with a channel mask: batch statistics while searching, masked moving-average updates."""

    def __init__(self, channels: int, momentum: float, epsilon: float, name: str):
        super().__init__(name=name)
        self.momentum, self.epsilon = momentum, epsilon
        self.gamma = tf.Variable(tf.ones([channels]), name="gamma")
        self.beta = tf.Variable(tf.zeros([channels]), name="beta")
        on_read = {"trainable": False, "synchronization": tf.VariableSynchronization.ON_READ,
                   "aggregation": tf.VariableAggregation.MEAN}
        self.moving_mean = tf.Variable(tf.zeros([channels]), name="moving_mean", **on_read)
        self.moving_variance = tf.Variable(tf.ones([channels]), name="moving_variance", **on_read)

    def __call__(self, x: tf.Tensor, mask: tf.Tensor, training: bool, update: bool, used: Any = True) -> tf.Tensor:
        """`used`: whether the sampled child runs this layer at all (moving statistics change only then, and only for
        the channels in `mask`)."""
        if training:
            mean, var = tf.nn.moments(x, [0, 1, 2])
            if update:
                m = self.momentum
                keep = tf.logical_and(mask > 0, used)
                self.moving_mean.assign(tf.where(keep, m * self.moving_mean + (1 - m) * mean, self.moving_mean))
                self.moving_variance.assign(tf.where(keep, m * self.moving_variance + (1 - m) * var,
                                                     self.moving_variance))
        else:
            mean, var = self.moving_mean, self.moving_variance
        return tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, self.epsilon) * mask

    def weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in (self.gamma, self.beta, self.moving_mean, self.moving_variance)]


class SuperNet(tf.Module):
    """All shared weights of a layout; `__call__(images, masks, training, update)` runs the child the masks select
    (masks: `arch_masks(layout, choices)`). Returns logits."""

    def __init__(self, space: SearchSpace, layout: Layout, num_classes: int, *, seed: int = 0):
        super().__init__(name="supernet")
        import tf_keras as keras

        self.space, self.layout, self.num_classes = space, layout, num_classes
        bn_args = space.template().batch_norm
        bn_momentum, bn_epsilon = bn_args.momentum, bn_args.epsilon
        seeds = iter(range(seed * 100_003, seed * 100_003 + 100_000))
        seeded = lambda cfg: keras.initializers.get({**cfg, "config": {**cfg["config"], "seed": next(seeds)}})
        conv_init = lambda shape: seeded(CONV_KERNEL_INITIALIZER)(shape)
        dense_init = lambda shape: seeded(DENSE_KERNEL_INITIALIZER)(shape)
        bn = lambda c, n: BatchNorm(c, bn_momentum, bn_epsilon, n)
        self.stem = tf.Variable(conv_init((3, 3, 3, layout.stem_width)), name="stem_conv")
        self.stem_bn = bn(layout.stem_width, "stem_bn")
        self.kernels: list[dict[str, tf.Variable]] = []
        self.bns: list[dict[str, BatchNorm]] = []
        for p, pos in enumerate(layout.positions):
            ks, bs = {}, {}
            for branch in pos.branches:
                for role, kind, _, _ in BRANCH_LAYERS[branch]:
                    shape = _kernel_shape(kind, pos)
                    ks[f"{branch}/{role}"] = tf.Variable(conv_init(shape), name=f"p{p}_{branch}_{role}")
                    bs[f"{branch}/{role}"] = bn(shape[3] if kind not in ("dw", "dw_in") else shape[2],
                                                f"p{p}_{branch}_{role}_bn")
            self.kernels.append(ks)
            self.bns.append(bs)
        last = layout.positions[-1].out_width if layout.positions else layout.stem_width
        self.head = tf.Variable(conv_init((1, 1, last, layout.head_width)), name="head_conv")
        self.head_bn = bn(layout.head_width, "head_bn")
        self.dense = tf.Variable(dense_init((layout.head_width, num_classes)), name="classifier_kernel")
        self.dense_bias = tf.Variable(tf.zeros([num_classes]), name="classifier_bias")

    def __call__(self, images: tf.Tensor, masks: dict[str, Any], training: bool = False,
                 update: bool = False) -> tf.Tensor:
        x = tf.nn.conv2d(images, self.stem, 2, "SAME")
        x = tf.nn.relu(self.stem_bn(x, tf.ones([self.layout.stem_width]), training, update))
        for p, pos in enumerate(self.layout.positions):
            x = self._position(p, pos, x, masks[f"p{p}"], training, update)
        x = tf.nn.conv2d(x, self.head, 1, "SAME")
        x = tf.nn.relu(self.head_bn(x, tf.ones([self.layout.head_width]), training, update))
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.matmul(x, self.dense) + self.dense_bias

    def _position(self, p: int, pos: Position, x: tf.Tensor, m: dict[str, tf.Tensor], training: bool,
                  update: bool) -> tf.Tensor:
        through = _pad_channels(x, pos.out_width - pos.in_width)

        y = None
        for b, branch in enumerate(pos.branches):
            out = m["branch"][b] * self._branch(p, pos, branch, x, m, training, update, m["branch"][b] > 0)
            y = out if y is None else y + out
        if pos.stride == 1:
            y += m["residual"] * through
        return m["active"] * y + (1.0 - m["active"]) * through if pos.optional else y

    def _branch(self, p: int, pos: Position, branch: str, x: tf.Tensor, m: dict[str, tf.Tensor], training: bool,
                update: bool, used: tf.Tensor) -> tf.Tensor:
        layers = BRANCH_LAYERS[branch]
        for i, (role, kind, _, _) in enumerate(layers):
            kernel = self.kernels[p][f"{branch}/{role}"]
            stride = pos.stride if kind in ("dw", "dw_in", "full") or branch == "fused_ibn_e1" else 1
            if kind in ("dw", "dw_in", "full"):
                kernel = kernel * m["kernel"]
            if kind == "full" and pos.grouped:
                kernel = kernel * m["groups"][None, None]
            if kind in ("dw", "dw_in"):
                x = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "SAME")
            else:
                x = tf.nn.conv2d(x, kernel, stride, "SAME")
            mask = {"pw": m["expand"], "dw": m["expand"], "full": m["expand"], "dw_in": m["input"]}.get(kind,
                                                                                                        m["output"])
            x = self.bns[p][f"{branch}/{role}"](x, mask, training, update, used)
            if i < len(layers) - 1:
                x = tf.nn.relu(x)
        return x


def _pad_channels(x: tf.Tensor, extra: int) -> tf.Tensor:
    return tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]]) if extra else x


def _prefix_mask(n: int, width: int) -> np.ndarray:
    return (np.arange(width) < n).astype(np.float32)


def _kernel_mask(k: int, kmax: int) -> np.ndarray:
    m = np.zeros((kmax, kmax, 1, 1), np.float32)
    o = (kmax - k) // 2
    m[o:o + k, o:o + k] = 1.0
    return m


def _group_mask(c: BlockChoice, pos: Position) -> np.ndarray:
    """Block-diagonal [in, expand] mask of a grouped convolution (all ones inside the used corner when groups == 1)."""
    m = np.zeros((pos.in_width, pos.expand_width), np.float32)
    g = max(c.groups, 1)
    ci, co = c.in_width // g, c.expand_width // g
    for i in range(g):
        m[i * ci:(i + 1) * ci, i * co:(i + 1) * co] = 1.0
    return m


def arch_masks(layout: Layout, choices: Sequence[BlockChoice], mix_ops: bool = False) -> dict[str, Any]:
    """The mask tensors that select one child (numpy; the structure is the same for every child, so a traced step
    function is reused). `mix_ops`: TuNAS's "all ops" warm-up: every branch of the child's expansion kind and every
    kernel size weighted equally."""
    out: dict[str, Any] = {}
    for p, (pos, c) in enumerate(zip(layout.positions, choices)):
        branch = np.zeros(len(pos.branches), np.float32)
        kernel = np.zeros((pos.kernel, pos.kernel, 1, 1), np.float32)
        if c.active:
            same_kind = [b for b in pos.branches if b.endswith("_e1") == c.branch.endswith("_e1")]
            for b in (same_kind if mix_ops else [c.branch]):
                branch[pos.branches.index(b)] = 1.0
            branch /= branch.sum()
            kernels = pos.kernels if mix_ops else [c.kernel]
            kernel = np.mean([_kernel_mask(k, pos.kernel) for k in kernels], axis=0).astype(np.float32)
        m = {"active": np.float32(c.active), "branch": branch, "kernel": kernel,
             "input": _prefix_mask(c.in_width, pos.in_width), "expand": _prefix_mask(c.expand_width, pos.expand_width),
             "output": _prefix_mask(c.out_width, pos.out_width), "residual": np.float32(c.residual)}
        if pos.grouped:
            m["groups"] = _group_mask(c, pos) if c.active else np.zeros((pos.in_width, pos.expand_width), np.float32)
        out[f"p{p}"] = m
    return out


__all__ = ["SuperNet", "BatchNorm", "arch_masks", "BRANCHES", "BRANCH_LAYERS"]


def randomise_statistics(net: Any, rng: np.random.Generator) -> None:
    """Random batch-norm scales, offsets and moving statistics: a freshly built super-network has gamma 1, beta 0, mean
    0 and variance 1 everywhere, so a child that sliced the wrong channels could still match it. Exactness checks
    (tests, `benchmarks/oneshot.py`) randomise first, so equal outputs mean equal slicing."""
    for v in net.variables:
        if v.dtype != tf.float32:
            continue
        shape = v.shape.as_list()
        if "moving_variance" in v.name:
            v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        elif "moving_mean" in v.name or "beta" in v.name:
            v.assign(rng.normal(0, 0.1, shape).astype(np.float32))
        elif "gamma" in v.name:
            v.assign(rng.uniform(0.8, 1.2, shape).astype(np.float32))
