"""`python -m fastgan_tf doctor`: what this machine offers a run, and what to do about it."""

from __future__ import annotations

import argparse
import json

from fastgan_tf.cli.common import ArgumentParser, add_verbose_flag, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m fastgan_tf doctor", allow_abbrev=False,
        description="Check this machine for training: OS and WSL, Python, TensorFlow and its "
                    "build, GPUs, fast precisions, cached weights, folders, what fits in memory. "
                    "Never downloads anything.")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--speed", action="store_true",
                   help="also time a few training steps at 64 and 256 px (a minute on a CPU)")
    add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> int:
        from fastgan_tf.doctor import render, report

        result = report(speed=args.speed)
        print(json.dumps(result, indent=2) if args.json else render(result), flush=True)
        return 0

    return run_cli(build_parser(), run, argv)
