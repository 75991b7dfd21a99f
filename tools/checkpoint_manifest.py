"""Record what a checkpoint holds, so later versions can prove they still restore it.

    python tools/checkpoint_manifest.py CHECKPOINT_PREFIX NAME [--run-dir RUN]

writes into tests/fixtures/checkpoints/:

* NAME.keys.txt: one line per saved tensor, ``key<TAB>dtype<TAB>shape``; the readable part;
* NAME.graph.pb.gz: the checkpoint's object graph (which Python attribute path leads to which key),
  which tf.train.Checkpoint needs to match objects to keys; gzipped, a few KB;
* NAME.config.yaml: the run's config.yaml, when --run-dir is given.

tests/test_checkpoint_compat.py writes a checkpoint with exactly these keys (tf.raw_ops.SaveV2,
values made up) and checks that today's code restores every variable from it.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "checkpoints"
GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="checkpoint prefix, e.g. checkpoints/RUN/ckpt/ckpt-0")
    parser.add_argument("name", help="fixture name, e.g. fastgan-64")
    parser.add_argument("--run-dir", type=Path, help="also copy the run's config.yaml")
    args = parser.parse_args()

    import tensorflow as tf

    reader = tf.train.load_checkpoint(args.prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    lines = [f"{key}\t{dtypes[key].name}\t{','.join(map(str, shapes[key]))}"
             for key in sorted(shapes) if key != GRAPH_KEY]
    (FIXTURES / f"{args.name}.keys.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (FIXTURES / f"{args.name}.graph.pb.gz").write_bytes(
        gzip.compress(reader.get_tensor(GRAPH_KEY), mtime=0))
    if args.run_dir:
        shutil.copyfile(args.run_dir / "config.yaml", FIXTURES / f"{args.name}.config.yaml")
    print(f"{len(lines)} keys -> {FIXTURES / args.name}.*")


if __name__ == "__main__":
    main()
