"""`python -m fastgan_tf COMMAND ...`: the package's programs under one name.

    python -m fastgan_tf doctor [--json] [--speed]     check this machine
    python -m fastgan_tf train ...                       as train.py
    python -m fastgan_tf evaluate ...                    as evaluate.py
    python -m fastgan_tf data ...                        the dataset tool
"""

from __future__ import annotations

import importlib
import sys

# command -> (module with main(argv), what it does)
COMMANDS = {
    "doctor": ("fastgan_tf.cli.doctor", "check this machine: GPUs, precisions, weights, memory"),
    "train": ("fastgan_tf.cli.train", "train a run (as train.py)"),
    "evaluate": ("fastgan_tf.cli.evaluate", "score, sample or export a run (as evaluate.py)"),
    "data": ("fastgan_tf.data.__main__", "list, check and download datasets"),
}


def usage() -> str:
    lines = ["usage: python -m fastgan_tf COMMAND [options]  (COMMAND --help for its options)", ""]
    lines += [f"  {name:<9} {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"python -m fastgan_tf: error: unknown command {command!r}; choose one of "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
