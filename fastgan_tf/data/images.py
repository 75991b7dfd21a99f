"""Find the images in a folder, decode them once to uint8 (N, R, R, C), and cache the result.

Differences from the reference loader (flat folder, case-sensitive .jpg/.jpeg/.png, PIL
`convert('RGB')`, bilinear squash) are deliberate and aimed at real-world folders: recursion, any
extension case, hidden/macOS junk skipped, EXIF orientation applied, transparency composited on a
background colour instead of being dropped (PIL turns transparent pixels into whatever colour they
happen to store, often black), 16-bit greyscale scaled instead of clipped, and broken files reported
and skipped instead of crashing the run halfway through decoding.

Resampling: LANCZOS when shrinking (the sharpest of PIL's antialiased filters; the same choice as
NVIDIA's StyleGAN dataset_tool, which most few-shot datasets were prepared with), BICUBIC when
enlarging (LANCZOS rings more visibly around upsampled edges). PIL scales the filter support when
shrinking, so both are properly antialiased. `crop="none"` squashes to a square like the reference;
`crop="center"` keeps the aspect ratio by cropping the long side first.

`channels=1` converts the composited RGB image to luma (PIL's ITU-R 601-2 "L": 0.299 R + 0.587 G +
0.114 B) before resizing, so greyscale files come out exactly as stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from fastgan_tf.errors import UserError
from fastgan_tf.io import atomic_file
from fastgan_tf.progress import progress

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CROPS = ("none", "center")
CHANNELS = (1, 3)
WHITE = (255, 255, 255)
# Bump whenever decoding changes what pixels come out, so stale caches are not reused.
LOADER_VERSION = 1
# Show a progress bar only when decoding takes long enough to wonder about.
PROGRESS_MIN_FILES = 50

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_SKIP_DIRS = ("__MACOSX",)  # zip-on-macOS resource forks


class BadImageError(UserError):
    """One file could not be used as a training image; `reason` is a one-line explanation."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------
def is_image_file(path: Path | str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_files(root: Path) -> Iterable[Path]:
    """All non-hidden files below root (hidden folders and macOS junk folders are not entered)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d) and d not in _SKIP_DIRS]
        for name in filenames:
            if not _is_hidden(name):
                yield Path(dirpath) / name


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise UserError(f"Image folder not found: {root} (check the path)")
    if not root.is_dir():
        raise UserError(f"{root} is a file, not a folder: pass the folder that contains the images")


def discover_images(root: Path | str) -> list[Path]:
    """Image files below `root` (recursive), sorted by relative POSIX path so every OS agrees."""
    root = Path(root)
    _check_folder(root)
    found = [p for p in _walk_files(root) if is_image_file(p)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _nothing_found_message(root: Path) -> str:
    others = Counter(p.suffix.lower() or "(no extension)" for p in _walk_files(root))
    wanted = ", ".join(IMAGE_EXTENSIONS)
    if not others:
        found = "the folder is empty"
    else:
        kinds = ", ".join(f"{ext} x{n}" for ext, n in others.most_common(5))
        found = f"found {sum(others.values())} other files ({kinds})"
    return f"No images in {root}: looked for {wanted} in it and its sub-folders, {found}"


# ---------------------------------------------------------------------------------------------
# Decoding one file
# ---------------------------------------------------------------------------------------------
def _check_args(resolution: int, background: Sequence[int], crop: str, channels: int = 3) -> None:
    if int(resolution) < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if len(background) != 3 or not all(0 <= int(c) <= 255 for c in background):
        raise ValueError(f"background must be 3 values in 0..255, got {background!r}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")


def _composite(img: Image.Image, background: Sequence[int]) -> Image.Image:
    """Alpha-blend over a solid colour: out = (rgb * a + bg * (255 - a)) / 255, rounded."""
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)  # 255 * 255 + 127 fits in 16 bits
    alpha = rgba[..., 3:]
    bg = np.asarray(background, dtype=np.uint16)
    out = (rgba[..., :3] * alpha + bg * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _high_bit_to_uint8(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit int / float greyscale -> 8-bit by scaling its value range, never clipping."""
    a = np.asarray(img).astype(np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (a.min(), a.max()) if a.size else (0.0, 0.0)
    if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and hi <= 65535):
        a = a / 257.0  # 65535 -> 255 exactly; 16-bit PNGs open as I;16 (or I in older Pillow)
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo >= 0 and hi <= 255:  # already 8-bit values
        pass
    elif hi > lo:  # unknown range: stretch what is there
        a = (a - lo) / (hi - lo) * 255.0
    else:
        a = np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    """Use the embedded ICC profile when there is one (print CMYK looks wrong converted naively)."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, srgb, outputMode="RGB")
        except Exception:  # missing littlecms or a broken profile: fall back to PIL's formula
            pass
    return img.convert("RGB")


def to_rgb(img: Image.Image, background: Sequence[int] = WHITE) -> Image.Image:
    """Any PIL mode -> RGB; transparency (alpha channel or tRNS colour key) goes on `background`."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in _HIGH_BIT_MODES:
        return _high_bit_to_uint8(img)
    if img.mode == "CMYK":
        return _cmyk_to_rgb(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite(img, background)
    return img.convert("RGB")  # L, P, 1, YCbCr, ...


def open_rgb(
    path: Path | str,
    background: Sequence[int] = WHITE,
    *,
    draft_size: tuple[int, int] | None = None,
    min_size: int = 0,
) -> Image.Image:
    """Decode, apply EXIF orientation, convert to RGB: the image just before the square resize.

    `draft_size` lets JPEG decode at 1/2, 1/4 or 1/8 scale while staying >= that size (much faster
    for big photos, and the DCT-domain downscale is itself antialiased). `min_size` rejects images
    whose short side is smaller (measured on the file, before any draft).
    """
    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except OSError as e:
        raise BadImageError(path, f"cannot read the file ({e.strerror or e})") from None
    if nbytes == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if min(width, height) < min_size:
                size = f"{width}x{height} px"
                raise BadImageError(path, f"too small ({size}, min_size is {min_size})")
            if draft_size is not None and img.format == "JPEG":
                img.draft(img.mode, draft_size)
            img.load()
            try:
                ImageOps.exif_transpose(img, in_place=True)
            except Exception:  # a corrupt EXIF block should not cost us an otherwise good image
                pass
            return to_rgb(img, background)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        reason = "not an image Pillow can read (wrong extension or corrupt)"
        raise BadImageError(path, reason) from None
    except Image.DecompressionBombError as e:
        raise BadImageError(path, f"too large to decode safely ({e})") from None
    except (OSError, SyntaxError, EOFError) as e:  # PIL reports broken streams with all three
        raise BadImageError(path, f"truncated or corrupt image ({e})") from None
    except Exception as e:
        raise BadImageError(path, f"cannot decode ({type(e).__name__}: {e})") from None


def resize_square(img: Image.Image, resolution: int, crop: str = "none") -> np.ndarray:
    """RGB or L PIL image -> uint8 (R, R, 3) or (R, R, 1); see the module docstring for filters."""
    if crop == "center":
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (resolution, resolution):
        shrinking = img.width > resolution or img.height > resolution
        img = img.resize((resolution, resolution), Image.LANCZOS if shrinking else Image.BICUBIC)
    pixels = np.array(img, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def load_image(
    path: Path | str,
    resolution: int,
    background: Sequence[int] = WHITE,
    crop: str = "none",
    *,
    min_size: int = 0,
    channels: int = 3,
) -> np.ndarray:
    """One file -> uint8 (R, R, channels); BadImageError with a one-line reason if unusable."""
    _check_args(resolution, background, crop, channels)
    img = open_rgb(path, background, draft_size=(resolution, resolution), min_size=min_size)
    return resize_square(img.convert("L") if channels == 1 else img, resolution, crop)


# ---------------------------------------------------------------------------------------------
# A whole folder, decoded once and cached
# ---------------------------------------------------------------------------------------------
@dataclass
class ImageSet:
    """Decoded training images plus the bookkeeping needed to explain them to the user."""

    images: np.ndarray  # uint8 (N, R, R, C); a read-only memmap when it came from the cache
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    root: Path | None = None
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.files)

    def _name(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix() if self.root else path.name
        except ValueError:
            return path.name

    def summary(self) -> dict:
        return {
            "root": str(self.root) if self.root is not None else None,
            "images": len(self.files),
            "skipped": len(self.skipped),
            "skipped_examples": [f"{self._name(p)}: {reason}" for p, reason in self.skipped[:5]],
        }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _common_root(files: Sequence[Path]) -> Path:
    parents = [str(Path(f).resolve().parent) for f in files]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def fingerprint(files: Sequence[Path | str], root: Path | str | None = None, **params) -> str:
    """sha256 of (sorted relative paths, sizes, content digests, params): the dataset's identity.

    Paths are relative to `root` (default: the files' common folder) and written with "/", so
    moving the dataset, or copying it between Linux and Windows, keeps the key; file contents
    are sampled (`_sampled_digest`), not modification times, which copies do not keep. `params`
    are any JSON-able settings (resolution, crop, ... or FID options).
    """
    return _digest(_entries(files, root, _content), params, version=2)


def legacy_fingerprint(files: Sequence[Path | str], root: Path | str | None = None,
                       **params) -> str:
    """The fingerprint of fastgan-tf before content digests (sizes and mtimes): kept only to
    recognise what older versions recorded (`same_dataset`, decoded-image caches)."""
    return _digest(_entries(files, root, _times), params)


def same_dataset(stored: str | None, files: Sequence[Path | str], root: Path | str | None = None,
                 **params) -> bool:
    """Whether a recorded fingerprint (either kind) describes these files and settings."""
    return stored is not None and stored in (fingerprint(files, root, **params),
                                             legacy_fingerprint(files, root, **params))


# Bytes read from each end of a file for its digest: together with the size this tells apart any
# two images a user would have (an edit re-encodes the whole file), at 0.5 s for 1000 files of
# 3 MiB (2.2 s from a cold disk cache), where hashing everything took 8-10 s (16 s cold).
SAMPLE_BYTES = 64 * 1024


def _sampled_digest(path: Path, size: int) -> str:
    """blake2b of the first and last SAMPLE_BYTES of a file (all of a smaller one)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            f.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _content(path: Path) -> tuple[int, str]:
    size = path.stat().st_size
    return size, _sampled_digest(path, size)


def _times(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _entries(files, root, describe) -> list[tuple]:
    """(relative path, *describe(file)) per file; (path, -1, -1) for one that cannot be read."""
    files = [Path(f) for f in files]
    root = Path(root) if root is not None else _common_root(files)
    entries = []
    for f in files:
        try:
            entries.append((_relative(f, root), *describe(f)))
        except OSError:
            entries.append((_relative(f, root), -1, -1))
    return sorted(entries)


def _digest(entries: list[tuple], params: dict, **version) -> str:
    payload = json.dumps({"files": entries, "params": params, **version}, sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    stem = Path(cache_dir) / f"decoded-{key[:32]}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _read_cache(cache_dir: Path, key: str, root: Path) -> ImageSet | None:
    npy, meta_path = _cache_paths(cache_dir, key)
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        images = np.load(npy, mmap_mode="r")
        if meta.get("fingerprint") != key or list(images.shape) != meta["shape"]:
            return None
    except (OSError, ValueError, KeyError):  # unreadable or foreign file: just decode again
        return None
    files = [root / rel for rel in meta["files"]]
    skipped = [(root / rel, reason) for rel, reason in meta["skipped"]]
    return ImageSet(images, files, skipped, root, from_cache=True)


def _write_cache(cache_dir: Path, key: str, result: ImageSet) -> bool:
    """.npy first, then the .json that marks it complete; a failed write only costs speed."""
    npy, meta_path = _cache_paths(cache_dir, key)
    root = result.root or Path(".")
    meta = {
        "fingerprint": key,
        "shape": list(result.images.shape),
        "files": [_relative(f, root) for f in result.files],
        "skipped": [[_relative(f, root), reason] for f, reason in result.skipped],
    }
    try:
        with atomic_file(npy) as f:
            np.save(f, result.images)
        with atomic_file(meta_path) as f:
            f.write(json.dumps(meta, indent=1).encode("utf-8"))
        return True
    except OSError as e:
        log.warning(f"could not write the decoded-image cache in {cache_dir}: {e}; the images are "
                    "decoded again next time")
        return False


def _default_workers() -> int:
    """PIL releases the GIL while decoding and resizing, so threads give real speed-ups."""
    return max(1, min(8, os.cpu_count() or 1))


def _decode_all(files, resolution, background, crop, min_size, show_progress, workers, desc,
                channels=3):
    """Decode into one preallocated array (no list of per-image copies), then compact in place."""
    images = np.empty((len(files), resolution, resolution, channels), dtype=np.uint8)

    def decode(i: int) -> str | None:
        try:
            images[i] = load_image(files[i], resolution, background, crop, min_size=min_size,
                                   channels=channels)
            return None
        except BadImageError as e:
            return e.reason

    workers = workers or _default_workers()
    bar = progress(total=len(files), desc=desc, unit="img", disable=not show_progress)
    reasons = []
    with bar, ThreadPoolExecutor(workers) as pool:
        for reason in pool.map(decode, range(len(files))):
            reasons.append(reason)
            bar.update()
    kept, skipped = [], []
    for i, (path, reason) in enumerate(zip(files, reasons)):
        if reason is None:
            if len(kept) != i:
                images[len(kept)] = images[i]
            kept.append(path)
        else:
            skipped.append((path, reason))
    return images[: len(kept)], kept, skipped


def _resolve_inputs(root_or_files) -> tuple[Path, list[Path]]:
    if isinstance(root_or_files, (str, os.PathLike)):
        root = Path(root_or_files)
        return root, discover_images(root)
    files = [Path(f) for f in root_or_files]
    return _common_root(files), files


def load_images(
    root_or_files: Path | str | Sequence[Path | str],
    resolution: int,
    background: Sequence[int] = WHITE,
    crop: str = "none",
    min_size: int = 8,
    progress: bool = True,
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    channels: int = 3,
) -> ImageSet:
    """Decode every image once (a folder is searched recursively); bad files go to `skipped`.

    With `cache_dir`, the decoded array is stored as .npy keyed by `fingerprint(...)` and memory-
    mapped on the next run with the same files and settings. Raises UserError if nothing is usable.
    """
    _check_args(resolution, background, crop, channels)
    background = tuple(int(c) for c in background)
    root, files = _resolve_inputs(root_or_files)
    if not files:
        raise UserError(_nothing_found_message(root) if root.is_dir() else "No image files given")

    key = None
    if cache_dir is not None:
        settings = dict(
            resolution=int(resolution), background=list(background), crop=crop,
            min_size=int(min_size), loader_version=LOADER_VERSION, pillow=PIL.__version__,
            **({} if channels == 3 else {"channels": int(channels)}),  # RGB caches stay valid
        )
        key = fingerprint(files, root, **settings)
        # A cache written by an older version, under the mtime-based key, is as good as ever.
        legacy = legacy_fingerprint(files, root, **settings)
        cached = (_read_cache(Path(cache_dir), key, root)
                  or _read_cache(Path(cache_dir), legacy, root))
        if cached is not None:
            return cached

    show = progress and len(files) > PROGRESS_MIN_FILES
    desc = f"decoding {root.name or root}"
    images, kept, skipped = _decode_all(
        files, int(resolution), background, crop, min_size, show, workers, desc, int(channels)
    )
    if not kept:
        examples = "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
        raise UserError(
            f"No usable images in {root}: all {len(files)} image files were skipped ({examples})"
        )
    result = ImageSet(images, kept, skipped, root)
    if key is not None and _write_cache(Path(cache_dir), key, result):
        # Swap the in-RAM array for a memmap of what was just written: same pixels, and the
        # memory goes back to the OS (the training pipeline makes its own copy anyway).
        reread = _read_cache(Path(cache_dir), key, root)
        if reread is not None:
            result.images = reread.images
    return result
