"""Dataset tools.

    python -m fastgan_tf.data list                 the registry and what is already cached
    python -m fastgan_tf.data check DIR            what training would see in DIR (or a .zip/name)
    python -m fastgan_tf.data download NAME        fetch a named dataset into the cache
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastgan_tf.console import configure_logging
from fastgan_tf.data import registry
from fastgan_tf.data.archive import parquet_available
from fastgan_tf.data.resolve import (
    MARKER,
    complete_root,
    count_images,
    default_data_dir,
    mirror_bases,
    read_marker,
    resolve_dataset,
)
from fastgan_tf.errors import UserError


def cache_status(data_dir: Path, name: str) -> str:
    """`cached (100)`, `by hand (37, unchecked)`, `partial download` or `-`."""
    folder = data_dir / name
    if complete_root(folder) is not None:
        return f"cached ({read_marker(folder)['files']})"
    if folder.is_dir():
        found = count_images(folder)
        if found:
            return f"by hand ({found}, no {MARKER})"
    downloads = data_dir / ".downloads" / name
    if downloads.is_dir() and any(downloads.glob("*.part")):
        return "partial download"
    return "-"


def list_datasets(data_dir: Path) -> str:
    rows = [("name", "images", "res", "cache", "title")]
    for info in registry.DATASETS:
        rows.append((info.name, str(info.count or "?"), str(info.resolution),
                     cache_status(data_dir, info.name), info.title))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"Datasets (cache: {data_dir})"]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append("  " + "  ".join(cells))
    bases = mirror_bases()
    if bases:
        lines.append(f"Sources: FASTGAN_DATA_MIRROR ({'; '.join(bases)}), as <mirror>/<name>.zip")
    elif not parquet_available():
        lines.append("Note: the Hugging Face copies are parquet files: `pip install pyarrow` to use "
                     "them (otherwise only the zip sources are tried).")
    lines.append("Any folder of images or .zip works too: --dataset path/to/folder_or.zip")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastgan_tf.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="dataset cache (default: $FASTGAN_DATA or the user cache folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the registry and the cache")
    check = sub.add_parser("check", help="report what training would see")
    check.add_argument("dataset", help="a folder, a .zip or a dataset name")
    check.add_argument("--resolution", type=int, default=256)
    check.add_argument("--min-size", type=int, default=8, help="smaller images are skipped")
    check.add_argument("--crop", choices=("none", "center"), default="none",
                       help="as train.py --crop: squash (none, default) or centre-crop")
    check.add_argument("--background", default="white",
                       help="as train.py --background: white (default), black, #RRGGBB or R,G,B")
    down = sub.add_parser("download", help="download and extract a named dataset")
    down.add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()  # download progress and status lines go to stderr
    data_dir = args.data_dir.expanduser() if args.data_dir else default_data_dir()
    try:
        if args.command == "list":
            print(list_datasets(data_dir))
        elif args.command == "check":
            from fastgan_tf.config import canonical_background, parse_background
            from fastgan_tf.data.check import check_folder, format_report

            background = parse_background(args.background)  # a bad colour fails before any work
            resolved = resolve_dataset(args.dataset, data_dir)
            report = check_folder(resolved.root, args.resolution, args.min_size, background,
                                  args.crop, canonical_background(args.background))
            expected = resolved.info.count if resolved.info else None
            print(format_report(report, expected))
            return 0 if report.usable else 1
        elif args.command == "download":
            if registry.get(args.name) is None:
                raise UserError(f"unknown dataset {args.name!r}: see `python -m fastgan_tf.data list`")
            resolved = resolve_dataset(args.name, data_dir)
            print(resolved.root)
            print(f"licence: {resolved.info.credit()}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (a partial download is resumed next time)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
