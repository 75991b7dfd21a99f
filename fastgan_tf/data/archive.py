"""Safe extraction of downloaded datasets: zip archives and Hugging Face parquet files.

A dataset archive comes from the internet, so it is treated as hostile: every member name is
checked before anything is written (no absolute paths, no `..`, no drive letters), links and
device entries are refused, and the total size and file count are capped - both as declared in
the archive and as actually decompressed, because headers can lie (zip bombs). Callers extract
into a fresh temporary folder and rename it into place only on success (see resolve.py).

Names Windows cannot store as they are (`<>:"|?*`, a trailing dot or space, device names such as
CON or LPT1, names that differ only by case) are renamed the same way on every OS, so a dataset
extracts to the same files on Linux, macOS and Windows and no member overwrites another.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

MAX_TOTAL_BYTES = 16 * 1024**3  # 16 GiB: far above any few-shot set, far below a zip bomb
MAX_FILES = 200_000
SKIPPED_PREFIXES = ("__MACOSX/",)  # macOS resource forks: not images, just noise for the loader
# What Windows forbids in a name, and the device names it reserves with any extension.
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                    *(f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789\xb9\xb2\xb3")}

log = logging.getLogger(__name__)


class ArchiveError(Exception):
    """The file is not a usable archive (corrupt, encrypted, not a zip, no image column)."""


class UnsafeArchiveError(ArchiveError):
    """The archive tries to write outside its folder, contains links, or is too large."""


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path a member may be written to, or UnsafeArchiveError."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise UnsafeArchiveError(f"absolute path in archive: {name!r}")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"path escapes the target folder: {name!r}")
    for part in parts:
        if any(ord(c) < 32 for c in part):
            raise UnsafeArchiveError(f"unsafe file name in archive: {name!r}")
    if not parts:
        raise UnsafeArchiveError(f"empty member name in archive: {name!r}")
    return PurePosixPath(*parts)


def portable_part(part: str) -> str:
    """One path component as Windows can store it: forbidden characters become "_", trailing
    dots and spaces go (Windows drops them itself), device names get a "_" in front."""
    part = _WINDOWS_FORBIDDEN.sub("_", part).rstrip(". ") or "_"
    return f"_{part}" if part.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES else part


def _fold(text: str) -> str:
    """Case-folded as a case-insensitive file system compares names (one character for one)."""
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in text)


def portable_paths(paths: list[PurePosixPath]) -> list[PurePosixPath]:
    """`paths` renamed so that each is valid on Windows and none collides with another there.

    A folder keeps the spelling it first appears with ("Cats/a.png", "cats/b.png" -> both in
    "Cats"); a file whose path another file or a folder already has, ignoring case, gets "~1",
    "~2", ... before its suffix, in archive order.
    """
    folders: dict[str, str] = {}  # case-folded folder path -> its first spelling

    def folder(parts: tuple[str, ...]) -> str:
        spelled = ""
        for part in parts:
            spelled = f"{spelled}/{portable_part(part)}" if spelled else portable_part(part)
            spelled = folders.setdefault(_fold(spelled), spelled)
        return spelled

    parents = [folder(path.parts[:-1]) for path in paths]  # every folder, before any file
    taken, result = set(folders), []
    for parent, path in zip(parents, paths):
        name = PurePosixPath(portable_part(path.name))
        candidate, n = PurePosixPath(parent, name), 0
        while _fold(candidate.as_posix()) in taken:
            n += 1
            candidate = PurePosixPath(parent, f"{name.stem}~{n}{name.suffix}")
        taken.add(_fold(candidate.as_posix()))
        result.append(candidate)
    return result


def _report_renamed(archive: Path, before: list[PurePosixPath], after: list[PurePosixPath]):
    renamed = [(b, a) for b, a in zip(before, after) if b != a]
    if renamed:
        examples = ", ".join(f"{b.as_posix()!r} -> {a.as_posix()!r}" for b, a in renamed[:3])
        log.warning(f"{archive.name}: renamed {len(renamed)} of {len(before)} files whose names "
                    f"Windows cannot store or would confuse ({examples}); the same names are used "
                    "on every OS")


def _kind(info: zipfile.ZipInfo) -> str:
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (DOS, Python)
    if file_type == stat.S_IFLNK:
        return "link"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    return "dir" if info.is_dir() else "file"


def _skipped(name: str) -> bool:
    posix = name.replace("\\", "/")
    return posix.startswith(SKIPPED_PREFIXES) or PurePosixPath(posix).name.startswith("._")


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(256).lstrip().lower()
        hint = " (the server sent a web page, not the file)" if head.startswith((b"<", b"{")) else ""
        raise ArchiveError(f"{path.name} is not a zip archive{hint}") from None


def safe_extract_zip(archive: Path, target: Path, *, include: Callable[[str], bool] | None = None,
                     max_total_bytes: int = MAX_TOTAL_BYTES, max_files: int = MAX_FILES) -> int:
    """Extract the regular files of `archive` into `target`; return how many were written.

    `include(name)` selects members (for archives that bundle several datasets). Everything is
    validated before the first byte is written, so a rejected archive leaves `target` empty.
    """
    target = Path(target)
    with _open_zip(Path(archive)) as zf:
        members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        declared = 0
        for info in zf.infolist():
            if _skipped(info.filename) or (include is not None and not include(info.filename)):
                continue
            rel = safe_member_path(info.filename)
            kind = _kind(info)
            if kind in ("link", "special"):
                raise UnsafeArchiveError(f"{kind} entry in archive: {info.filename!r}")
            if kind == "dir":
                continue
            if info.flag_bits & 0x1:
                raise ArchiveError(f"encrypted entry in archive: {info.filename!r}")
            declared += info.file_size
            members.append((info, rel))
        if len(members) > max_files:
            raise UnsafeArchiveError(f"archive has {len(members)} files, more than {max_files}")
        if declared > max_total_bytes:
            raise UnsafeArchiveError(f"archive would extract to {declared} bytes, more than "
                                     f"the {max_total_bytes} allowed")

        portable = portable_paths([rel for _, rel in members])
        _report_renamed(Path(archive), [rel for _, rel in members], portable)
        target.mkdir(parents=True, exist_ok=True)
        root = target.resolve()
        written = 0
        for (info, _), rel in zip(members, portable):
            dest = target.joinpath(*rel.parts)
            if not dest.resolve().is_relative_to(root):  # belt and braces (links in target)
                raise UnsafeArchiveError(f"path escapes the target folder: {info.filename!r}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(dest, "wb") as out:
                    size = 0
                    for block in iter(lambda: src.read(1 << 20), b""):
                        size += len(block)
                        written += len(block)
                        if size > info.file_size or written > max_total_bytes:
                            raise UnsafeArchiveError(f"{info.filename!r} decompresses to more "
                                                     "than its declared size")
                        out.write(block)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
                raise ArchiveError(f"corrupt archive member {info.filename!r} ({err})") from None
    return len(members)


# -- Hugging Face parquet ---------------------------------------------------------------------

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"), (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"),
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def sniff_suffix(data: bytes) -> str:
    """The file extension matching the encoded image's magic bytes (".bin" if unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    return ".bin"


def parquet_available() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _image_column(schema) -> str:
    """The column holding encoded images: a {"bytes", ...} struct (the `datasets` Image feature)
    or a plain binary column."""
    import pyarrow as pa

    for field in schema:
        if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
            return field.name
    for field in schema:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            return field.name
    raise ArchiveError("parquet file has no image column (a struct with 'bytes', or binary)")


def _image_rows(path: Path) -> Iterable[tuple[bytes | None, str]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises its own ArrowInvalid for non-parquet files
        raise ArchiveError(f"{path.name} is not a readable parquet file ({err})") from None
    column = _image_column(pf.schema_arrow)
    for batch in pf.iter_batches(batch_size=32, columns=[column]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, dict):
                yield value.get("bytes"), value.get("path") or ""
            else:
                yield value, ""


def output_name(index: int, data: bytes, original: str) -> str:
    """`00012_name.jpg`: numbered (so names never collide and never come from the archive as a
    path), keeping a sanitised stem of the original file name for humans."""
    original = original.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = Path(original).suffix.lower()
    if suffix not in _IMAGE_SUFFIXES:
        suffix = sniff_suffix(data)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(original).stem)[:60].strip("._")
    return f"{index:05d}_{stem}{suffix}" if stem else f"{index:05d}{suffix}"


def extract_parquet(files: Iterable[Path], target: Path, *,
                    max_total_bytes: int = MAX_TOTAL_BYTES, max_files: int = MAX_FILES) -> int:
    """Write every image stored in the parquet `files` into `target`; return how many."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    count = written = 0
    for path in files:
        try:
            for data, original in _image_rows(Path(path)):
                if not data:
                    continue
                written += len(data)
                if written > max_total_bytes or count >= max_files:
                    raise UnsafeArchiveError(f"{Path(path).name} holds more than the "
                                             f"{max_total_bytes} bytes / {max_files} files allowed")
                (target / output_name(count, data, original)).write_bytes(data)
                count += 1
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid / ArrowIOError
            raise ArchiveError(f"{Path(path).name}: unreadable parquet data ({err})") from None
    return count


def extract(kind: str, files: list[Path], target: Path, *, include=None,
            max_total_bytes: int = MAX_TOTAL_BYTES) -> int:
    """Dispatch on the source kind ("zip" or "parquet")."""
    if kind == "parquet":
        return extract_parquet(files, target, max_total_bytes=max_total_bytes)
    if kind == "zip":
        total = 0
        for path in files:
            total += safe_extract_zip(path, target, include=include, max_total_bytes=max_total_bytes)
        return total
    raise ValueError(f"unknown archive kind {kind!r}")


def remove_tree(path: Path) -> None:
    """Delete a folder we created (temporary extraction), tolerating read-only files on Windows."""
    def _retry(func, p, _exc):
        Path(p).chmod(stat.S_IWRITE)
        func(p)

    if Path(path).exists():
        handler = {"onexc": _retry} if sys.version_info >= (3, 12) else {"onerror": _retry}
        shutil.rmtree(path, **handler)
