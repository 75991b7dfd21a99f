"""Restoring checkpoints saved by earlier versions, or with another precision.

Precision is a way of computing, not part of the trained state: the float32 master weights and
Adam's moments are the same whatever the compute dtype, so a run may resume with any precision (a
run started on a GPU in float16 continues on a CPU in float32, and back). State that later versions
added to checkpoints (`NEW_STATE`) keeps its initial value when an older checkpoint lacks it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

OPTIMIZERS = ("g_opt", "d_opt")
NEW_STATE = ("train_seconds",)  # checkpoint keys added after format 1 was first written
_KEY = "{}/.ATTRIBUTES/VARIABLE_VALUE"
_WRAPPED = "{}/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


class _SavedLossScale(tf.Module):
    """Stands in for the LossScaleOptimizer a float16 run saved, when the run now computes in
    float32: the inner Adam is ours, the loss scale is read and dropped."""

    def __init__(self, inner):
        super().__init__()
        self.inner_optimizer = inner
        self._iterations = tf.Variable(0, dtype=tf.int64)
        self._learning_rate = tf.Variable(0.0)
        self.dynamic_scale = tf.Variable(0.0)
        self.step_counter = tf.Variable(0, dtype=tf.int64)


def restore_objects(trackables: dict, reader) -> dict:
    """The objects to restore a checkpoint into, whatever precision it was saved with.

    A float16 run's optimizers are LossScaleOptimizers around Adam (checkpoint keys
    `g_opt/inner_optimizer/...` and the loss scale), a float32 run's are Adam itself
    (`g_opt/...`). Adam's state goes to our Adam either way; a loss scale saved by a float16 run
    is restored when we compute in float16 too, and a float16 run resumed from a float32
    checkpoint starts with a fresh loss scale. `NEW_STATE` a checkpoint lacks is left out.
    """
    objects = {name: obj for name, obj in trackables.items()
               if name not in NEW_STATE or reader.has_tensor(_KEY.format(name))}
    for name in OPTIMIZERS:
        optimizer = trackables.get(name)
        saved_wrapped = reader.has_tensor(_WRAPPED.format(name))
        wrapped = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        if saved_wrapped and not wrapped:
            objects[name] = _SavedLossScale(optimizer)
        elif wrapped and not saved_wrapped:
            objects[name] = optimizer.inner_optimizer
    return objects
