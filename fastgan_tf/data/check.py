"""`python -m fastgan_tf.data check DIR`: what training would see in a folder, before training.

It finds files exactly like the loader (`discover_images`) and decodes each one exactly like the
loader (`load_image`), so "usable" here means usable there. On top it reports what the loader
handles silently but a user may want to know: files ignored for their extension, images that
will be upscaled or squashed, alpha/16-bit/CMYK modes, and byte-identical duplicates, which
quietly overweight some images in a 100-image dataset.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fastgan_tf.data.images import (
    IMAGE_EXTENSIONS,
    WHITE,
    BadImageError,
    discover_images,
    load_image,
)

SIZE_BUCKETS = (64, 128, 256, 512, 1024)  # short side: <64, 64-127, ..., 512-1023, >=1024
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def size_bucket(short_side: int) -> str:
    """The histogram label for an image whose shorter side is `short_side` pixels."""
    if short_side < SIZE_BUCKETS[0]:
        return f"<{SIZE_BUCKETS[0]}"
    for low, high in zip(SIZE_BUCKETS, SIZE_BUCKETS[1:]):
        if low <= short_side < high:
            return f"{low}-{high - 1}"
    return f">={SIZE_BUCKETS[-1]}"


BUCKET_LABELS = tuple(size_bucket(s) for s in (0, *SIZE_BUCKETS))


@dataclass
class CheckReport:
    root: Path
    resolution: int
    crop: str = "none"
    background: str = "white"  # as the user wrote it, for the report
    files: list[Path] = field(default_factory=list)  # image files the loader would try
    usable: list[Path] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # other files below root (not hidden)
    extensions: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)  # by size_bucket of the short side
    non_square: list[Path] = field(default_factory=list)
    upscaled: list[Path] = field(default_factory=list)  # short side below the resolution
    duplicates: list[list[Path]] = field(default_factory=list)  # groups of identical files

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    @property
    def unique_usable(self) -> int:
        """Usable images counting each group of identical files once."""
        usable = set(self.usable)
        extra = sum(max(sum(p in usable for p in group) - 1, 0) for group in self.duplicates)
        return len(self.usable) - extra

    def problems(self) -> list[str]:
        """One line per thing the user should look at, most serious first."""
        out = []
        if not self.usable:
            out.append(f"no usable images: training cannot start on {self.root}")
        for path, reason in self.bad:
            out.append(f"{self.rel(path)}: {reason} (skipped by training)")
        for group in self.duplicates:
            names = " = ".join(self.rel(p) for p in group)
            out.append(f"duplicate content: {names} (each copy counts as a separate image)")
        if self.ignored:
            kinds = ", ".join(f"{ext} x{n}" for ext, n in Counter(
                p.suffix.lower() or "(none)" for p in self.ignored).most_common(6))
            out.append(f"{len(self.ignored)} files ignored, not {'/'.join(IMAGE_EXTENSIONS)}: {kinds}")
        if self.upscaled:
            out.append(f"{len(self.upscaled)} images have a short side below {self.resolution} px "
                       "and will be upscaled (blurry training data)")
        if self.non_square and self.crop == "center":
            out.append(f"{len(self.non_square)} images are not square: their centre square is "
                       "kept (--crop center)")
        elif self.non_square:
            out.append(f"{len(self.non_square)} images are not square: squashed to a square "
                       "(use --crop center to keep the aspect ratio)")
        alpha = sum(n for m, n in self.modes.items() if m in _ALPHA or m.endswith("+transparency"))
        if alpha:
            out.append(f"{alpha} images have transparency: composited on a {self.background} "
                       "background (--background)")
        deep = sum(n for m, n in self.modes.items() if m in _HIGH_BIT)
        if deep:
            out.append(f"{deep} images are 16-bit/float greyscale: rescaled to 8 bits")
        if self.modes.get("CMYK"):
            out.append(f"{self.modes['CMYK']} images are CMYK: converted to RGB")
        return out


def _header(path: Path) -> tuple[tuple[int, int], str] | None:
    """(size, mode) from the file header without decoding pixels; None if PIL cannot tell."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if "transparency" in img.info and mode not in _ALPHA:
                mode += "+transparency"
            return img.size, mode
    except Exception:
        return None


def _file_hash(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _other_files(root: Path, images: set[Path]) -> list[Path]:
    others = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and path not in images:
                others.append(path)
    return sorted(others)


def check_folder(root: Path | str, resolution: int = 256, min_size: int = 8,
                 background=WHITE, crop: str = "none", background_name: str | None = None
                 ) -> CheckReport:
    """Inspect every file below `root` as the training loader would see it."""
    root = Path(root)
    files = discover_images(root)  # raises UserError for a missing folder
    name = background_name or ("white" if tuple(background) == WHITE else str(tuple(background)))
    report = CheckReport(root, int(resolution), crop, name, files=files)
    report.ignored = _other_files(root, set(files))
    by_hash: dict[str, list[Path]] = {}
    for path in files:
        report.extensions[path.suffix.lower()] += 1
        digest = _file_hash(path)
        if digest is not None:
            by_hash.setdefault(digest, []).append(path)
        try:
            load_image(path, resolution, background, crop, min_size=min_size)
        except BadImageError as err:
            report.bad.append((path, err.reason))
            continue
        report.usable.append(path)
        header = _header(path)
        if header is None:
            continue
        (width, height), mode = header
        report.modes[mode] += 1
        report.sizes[size_bucket(min(width, height))] += 1
        if width != height:
            report.non_square.append(path)
        if min(width, height) < resolution:
            report.upscaled.append(path)
    report.duplicates = [group for group in by_hash.values() if len(group) > 1]
    return report


def _counter_text(counter: Counter, order=None) -> str:
    keys = order if order is not None else [k for k, _ in counter.most_common()]
    return ", ".join(f"{k} x{counter[k]}" for k in keys if counter.get(k)) or "-"


def format_report(report: CheckReport, expected: int | None = None) -> str:
    """The human-readable report printed by the CLI."""
    dup_extra = sum(len(g) - 1 for g in report.duplicates)
    lines = [
        f"Dataset check: {report.root}",
        f"  image files : {len(report.files)} ({_counter_text(report.extensions)})",
        f"  usable      : {len(report.usable)}   skipped: {len(report.bad)}   "
        f"ignored other files: {len(report.ignored)}",
        f"  modes       : {_counter_text(report.modes)}",
        f"  short side  : {_counter_text(report.sizes, BUCKET_LABELS)}",
        f"  non-square  : {len(report.non_square)}",
        f"  duplicates  : {len(report.duplicates)} groups, {dup_extra} extra copies",
    ]
    if expected is not None:
        lines.append(f"  expected    : {expected} images (registry)")
    problems = report.problems()
    if expected is not None and len(report.usable) != expected:
        problems.append(f"{len(report.usable)} usable images, the registry expects {expected}")
    lines.append("Problems:" if problems else "Problems: none")
    lines += [f"  - {p}" for p in problems]
    lines.append(f"Training at {report.resolution}x{report.resolution} would use "
                 f"{len(report.usable)} images ({report.unique_usable} distinct).")
    return "\n".join(lines)
