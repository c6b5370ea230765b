"""The super-network's training and evaluation steps under a tf.distribute strategy (the same strategy names as
`train`), and the checkpoint that holds the shared weights, the optimizer, the step and the controller's state."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

import tensorflow as tf

from edgetpu_models.nas.search.oneshot.layout import Layout, block_choices
from edgetpu_models.nas.search.oneshot.supernet import SuperNet, arch_masks
from edgetpu_models.nas.search.space import SearchSpace


class Trainer:
    """Shared weights + optimizer inside `strategy`; `train_step` on a training batch, `accuracy` on a validation
    batch (batch-statistics batch norm, no state change), both for the child the masks select."""

    def __init__(self, space: SearchSpace, layout: Layout, num_classes: int, *, strategy: Any, learning_rate: float,
                 total_steps: int, seed: int = 0):
        import tf_keras as keras

        self.space, self.layout, self.strategy = space, layout, strategy
        with strategy.scope():
            self.net = SuperNet(space, layout, num_classes, seed=seed)
            schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(total_steps, 1))
            self.optimizer = keras.optimizers.Adam(schedule)
            self.optimizer.build(self.net.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.controller_state = tf.Variable("", dtype=tf.string, trainable=False, name="controller_state")
        self.checkpoint = tf.train.Checkpoint(net=self.net, optimizer=self.optimizer, step=self.step,
                                              controller=self.controller_state)
        self._train = tf.function(self._train_fn, reduce_retracing=True)
        self._eval = tf.function(self._eval_fn, reduce_retracing=True)

    def masks(self, point: Sequence[int], mix_ops: bool = False) -> dict[str, Any]:
        m = arch_masks(self.layout, block_choices(self.space, self.layout, point), mix_ops)
        return tf.nest.map_structure(tf.convert_to_tensor, m)

    def _replica_train(self, images: tf.Tensor, labels: tf.Tensor, masks: dict[str, Any]) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = self.net(images, masks, training=True, update=True)
            per_example = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example)
        variables = self.net.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss

    def _train_fn(self, batch: Any, masks: dict[str, Any]) -> tf.Tensor:
        loss = self.strategy.run(self._replica_train, args=(batch[0], batch[1], masks))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)

    def _replica_eval(self, images: tf.Tensor, labels: tf.Tensor, masks: dict[str, Any]) -> tf.Tensor:
        logits = self.net(images, masks, training=True, update=False)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(labels, tf.int32)), tf.float32)
        return tf.stack([tf.reduce_sum(correct), tf.cast(tf.size(correct), tf.float32)])

    def _eval_fn(self, batch: Any, masks: dict[str, Any]) -> tf.Tensor:
        out = self.strategy.run(self._replica_eval, args=(batch[0], batch[1], masks))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    def train_step(self, batch: Any, point: Sequence[int], mix_ops: bool = False) -> float:
        return float(self._train(batch, self.masks(point, mix_ops)))

    def accuracy(self, batches: "Sequence[Any] | Iterator[Any]", point: Sequence[int]) -> float:
        masks = self.masks(point)
        total = sum(self._eval(b, masks).numpy() for b in batches)
        return float(total[0] / max(total[1], 1.0))

    def distribute(self, dataset: Any) -> Any:
        return self.strategy.experimental_distribute_dataset(dataset)

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def save(self, directory: str, step: int, controller_state: dict[str, Any]) -> None:
        """The shared weights, optimizer, step and controller in one checkpoint: they are restored together."""
        self.step.assign(step)
        self.controller_state.assign(json.dumps(controller_state))
        manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=2)
        manager.save(checkpoint_number=step)

    def restore(self, directory: str) -> tuple[int, dict[str, Any] | None]:
        latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
        if latest is None:
            return 0, None
        self.checkpoint.restore(latest).expect_partial()
        return int(self.step.numpy()), json.loads(self.controller_state.numpy().decode())


def make_search_strategy(name: str):
    """`train`'s strategies by name (default, mirrored, multi-worker, tpu)."""
    from edgetpu_models.train import make_strategy

    return make_strategy(name)
