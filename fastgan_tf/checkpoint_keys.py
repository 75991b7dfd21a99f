"""Which keys a checkpoint of given objects holds, and how a checkpoint on disk differs from them.

This is the one module that reaches into TensorFlow's internals (the checkpoint object graph), to
turn "restore failed" into "this checkpoint was written with another width": a TensorFlow upgrade
that moves them breaks only this file, and then only the diagnosis (`misfits` returns nothing and
the caller reports the plain restore error).
"""

from __future__ import annotations

import tensorflow as tf

# Keys a checkpoint may hold that say nothing about the model.
BOOKKEEPING = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/")
# Keys that are not the trained state: two runs that trained alike may differ there (wall time).
NOT_STATE = (*BOOKKEEPING, "train_seconds/")
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def expected_shapes(checkpoint: tf.train.Checkpoint) -> dict[str, list[int]]:
    """Checkpoint key -> shape of every variable `checkpoint` would save."""
    from tensorflow.python.checkpoint import graph_view, util

    _, paths, *_ = util.objects_ids_and_slot_variables_and_paths(
        graph_view.ObjectGraphView(checkpoint))
    return {"/".join(ref.name for ref in path) + SUFFIX: list(obj.shape)
            for obj, path in paths.items() if _is_variable(obj)}


def misfits(checkpoint: tf.train.Checkpoint, shapes: dict[str, list[int]]) -> list[str]:
    """How a checkpoint's variables (key -> shape) differ from ours, model weights first."""
    try:
        expected = expected_shapes(checkpoint)
    except Exception:  # noqa: BLE001 - TF internals moved: no diagnosis, plain fallback
        return []
    found = {k: list(v) for k, v in shapes.items() if not k.startswith(BOOKKEEPING)}
    problems = []
    for key, shape in expected.items():
        if key.startswith(BOOKKEEPING):
            continue
        if key not in found:
            problems.append((key, f"{_short(key)} is missing from the checkpoint"))
        elif found[key] != shape:
            problems.append((key, f"{_short(key)} has shape {tuple(found[key])} in the "
                                  f"checkpoint but {tuple(shape)} here"))
    for key in found:
        if key not in expected:
            problems.append((key, f"the checkpoint has {_short(key)}, which this model lacks"))
    problems.sort(key=lambda p: (p[0].startswith(("g_opt", "d_opt")), p[0]))
    return [text for _, text in problems]


def _is_variable(obj) -> bool:
    """tf.Variable or Keras 3 Variable (which is not a tf.Variable subclass)."""
    return all(hasattr(obj, name) for name in ("shape", "dtype", "assign"))


def _short(key: str) -> str:
    return key.replace(SUFFIX, "")
