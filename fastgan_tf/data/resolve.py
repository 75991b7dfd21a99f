"""Turn `--dataset` into a folder of images: a folder, a .zip, or a name from the registry.

Cache layout under the data dir (`--data-dir`, `$FASTGAN_DATA`, else the user cache):

    <data_dir>/obama/                  a named dataset, complete only with .complete.json inside
    <data_dir>/zips/<stem>-<key>/      a user's .zip, keyed by its size and modification time
    <data_dir>/.downloads/<name>/      downloads in progress (`*.part`), deleted after extraction
    <data_dir>/.downloads/bundles/     an archive serving several datasets, downloaded once and
                                       deleted when every dataset it serves has been extracted

Archives are extracted into a temporary folder beside the target, the marker is written there
last, and the folder is renamed into place: a crash at any point leaves either no folder or an
obviously incomplete one, never a partial dataset that looks complete. A folder without the
marker is never deleted (its images may have been put there by hand): it is renamed aside when a
download replaces it, and used as it is when no source can be reached.

A run that moves between WSL and Windows brings paths of the other side in its config.yaml
(`C:\\data\\faces` is `/mnt/c/data/faces` in WSL): a dataset or data dir that does not exist here
is looked up in its other-side form too (`moved_path`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastgan_tf import downloads, oscompat
from fastgan_tf.data import registry
from fastgan_tf.data.archive import (
    ArchiveError,
    extract,
    parquet_available,
    remove_tree,
    safe_extract_zip,
)
from fastgan_tf.data.images import discover_images
from fastgan_tf.data.registry import DatasetInfo, Source
from fastgan_tf.downloads import DownloadError, fetch_text, sha256_file
from fastgan_tf.errors import UserError, one_line
from fastgan_tf.io import atomic_write_text
from fastgan_tf.paths import cache_dir

MARKER = ".complete.json"
MIRROR_ENV = "FASTGAN_DATA_MIRROR"
DATA_ENV = "FASTGAN_DATA"
MIRROR_NOTE = "FASTGAN_DATA_MIRROR"
WSL_MOUNT_ROOT = Path("/mnt")  # where WSL mounts the Windows drives: /mnt/c is C:\\

log = logging.getLogger(__name__)


class NoImagesError(ArchiveError):
    """The archive is readable but holds no images of this dataset."""


@dataclass(frozen=True)
class ResolvedDataset:
    """What the trainer needs: where the images are, a short name for run folders, the entry."""

    root: Path
    name: str
    info: DatasetInfo | None = None
    complete: bool = True  # False: a hand-filled cache folder without a completeness marker


def default_data_dir() -> Path:
    """`$FASTGAN_DATA`, else `<user cache>/fastgan_tf/datasets` (LOCALAPPDATA on Windows)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_dir() / "datasets"


# -- paths of a run that moved between WSL and Windows ----------------------------------------

def other_side(path: str) -> str | None:
    """The same place as the other side of WSL names it; None when `path` is not of that kind.

    On Windows `/mnt/c/data` is `C:\\data`; elsewhere (WSL) `C:\\data` is `/mnt/c/data`. Drive
    letters in either case, slashes of either kind.
    """
    text = str(path).strip().replace("\\", "/")
    windows = oscompat.on_windows()
    if windows:
        root = re.escape(WSL_MOUNT_ROOT.as_posix().rstrip("/"))
        match = re.fullmatch(rf"{root}/([A-Za-z])(/.*)?", text, re.IGNORECASE | re.DOTALL)
    else:
        match = re.fullmatch(r"([A-Za-z]):(/.*)?", text, re.DOTALL)
    if match is None:
        return None
    drive, parts = match.group(1), [p for p in (match.group(2) or "").split("/") if p]
    if windows:
        return f"{drive.upper()}:\\" + "\\".join(parts)
    return str(WSL_MOUNT_ROOT.joinpath(drive.lower(), *parts))


def path_candidates(path: str) -> list[str]:
    """`path`, then its other-side form when it has one: where a moved run's file may be."""
    other = other_side(path)
    return [str(path)] if other is None else [str(path), other]


def moved_path(path: str) -> str | None:
    """The first of `path_candidates(path)` that exists here, else None."""
    for candidate in path_candidates(path):
        if Path(candidate).expanduser().exists():
            if candidate != str(path):
                log.info(f"{path} is not on this machine; using {candidate}, the same place seen "
                         f"from {'Windows' if oscompat.on_windows() else 'WSL'}")
            return candidate
    return None


def _usable_data_dir(data_dir: Path | str | None) -> Path:
    """`data_dir` as this machine names it; the default when it is another side's path that
    exists in neither form (creating `C:\\...` as a relative folder on Linux would help no one)."""
    if not data_dir:
        return default_data_dir()
    found = moved_path(str(data_dir))
    if found is None and other_side(str(data_dir)) is not None:
        log.warning(f"the data dir {data_dir} is not on this machine (tried "
                    f"{' and '.join(path_candidates(str(data_dir)))}); using {default_data_dir()}")
        return default_data_dir()
    return Path(found or data_dir).expanduser()


# -- completeness marker ----------------------------------------------------------------------

def read_marker(folder: Path) -> dict | None:
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), int) else None


def complete_root(folder: Path) -> Path | None:
    """The image folder of a complete cached dataset, or None if `folder` is not complete."""
    marker = read_marker(folder)
    if marker is None:
        return None
    root = (Path(folder) / marker.get("root", ".")).resolve()
    if not root.is_dir() or not root.is_relative_to(Path(folder).resolve()):
        return None
    return root


def _write_marker(folder: Path, root: Path, files: int, source: str, sha256s: list[str]) -> None:
    marker = {
        "format": 1,
        "files": files,
        "root": root.relative_to(folder).as_posix() or ".",
        "source": source,
        "sha256": sha256s[0] if len(sha256s) == 1 else sha256s,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=1) + "\n")


def count_images(folder: Path) -> int:
    return len(discover_images(folder)) if Path(folder).is_dir() else 0


def locate_root(folder: Path) -> Path:
    """Skip wrapper folders: `tmp/100-shot-obama/img/*.png` -> `tmp/100-shot-obama/img`."""
    folder = Path(folder)
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")
                   and p.name != "__MACOSX"]
        if len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            return folder


# -- sources ----------------------------------------------------------------------------------

def mirror_bases() -> list[str]:
    """`$FASTGAN_DATA_MIRROR`: base URLs (or local folders) separated by ';'."""
    bases = []
    for item in os.environ.get(MIRROR_ENV, "").split(";"):
        item = item.strip()
        if not item:
            continue
        if "://" not in item:  # a plain folder: use it through file:// URLs
            item = Path(item).expanduser().resolve().as_uri()
        bases.append(item.rstrip("/"))
    return bases


def sources_for(info: DatasetInfo) -> tuple[Source, ...]:
    """The mirror's `<base>/<name>.zip` when FASTGAN_DATA_MIRROR is set, else the registry's."""
    bases = mirror_bases()
    if bases:
        return tuple(Source((f"{b}/{info.name}.zip",), "zip", note=MIRROR_NOTE) for b in bases)
    return info.sources


def _file_name(url: str, index: int) -> str:
    """Download name, unique per URL: two sources must never resume each other's `.part`."""
    base = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", base)[-80:]
    return f"{index}-{hashlib.sha256(url.encode()).hexdigest()[:8]}-{base}"


def _mirror_checksum(url: str) -> str | None:
    """A mirror may publish `<file>.sha256` (the output of `sha256sum`); it is optional."""
    text = fetch_text(url + ".sha256")
    if text is None:
        return None
    token = text.strip().split()[0] if text.strip() else ""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", token):
        raise DownloadError(f"{url}.sha256 does not start with a sha256 hex digest")
    return token.lower()


def _bundle_filter(names: tuple[str, ...]):
    """Members of a multi-dataset archive that belong to one dataset (a folder or a nested zip)."""
    wanted = {n.lower() for n in names} | {f"{n.lower()}.zip" for n in names}

    def include(member: str) -> bool:
        return any(part.lower() in wanted for part in member.replace("\\", "/").split("/"))

    return include


def _expand_nested_zips(folder: Path) -> None:
    """A bundle may hold one zip per dataset: extract those (safely) and drop the inner zip."""
    for inner in sorted(folder.rglob("*.zip")):
        safe_extract_zip(inner, inner.with_suffix(""))
        inner.unlink()


# -- installing into the cache ----------------------------------------------------------------

def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished temporary folder to `target`, moving any hand-made folder aside."""
    if target.exists():
        if complete_root(target) is not None:  # another process finished first
            return
        if any(target.iterdir()):
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            aside = target.with_name(f"{target.name}.backup-{stamp}")
            target.rename(aside)
            log.warning(f"{target} had files but no {MARKER}: moved to {aside}")
        else:
            target.rmdir()
    os.replace(tmp, target)


def _extract_to_cache(kind: str, files: list[Path], target: Path, source: str, *,
                      include=None, nested: bool = False, expected: int | None = None) -> Path:
    """Extract into `<target>.tmp-*`, check for images, write the marker, rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        extract(kind, files, tmp, include=include)
        if nested:
            _expand_nested_zips(tmp)
        root = locate_root(tmp)
        found = count_images(root)
        if found == 0:
            raise NoImagesError("no images inside")
        if expected is not None and found != expected:
            log.warning(f"{target.name} has {found} images, {expected} expected")
        _write_marker(tmp, root, found, source, [sha256_file(f) for f in files])
        _swap_into_place(tmp, target)
    finally:
        remove_tree(tmp)
    root = complete_root(target)
    if root is None:
        raise ArchiveError(f"{target} is not complete after extraction")
    return root


def _download_dir(data_dir: Path, info: DatasetInfo, source: Source) -> Path:
    """Where a source's files are downloaded: one folder per dataset, or the shared `bundles`
    folder for an archive that serves several datasets (downloaded once for all of them)."""
    return data_dir / ".downloads" / ("bundles" if source.subdir else info.name)


def _still_served(source: Source, data_dir: Path) -> list[str]:
    """The datasets a bundle serves that have not been extracted yet."""
    return [other.name for other in registry.DATASETS
            if any(s.urls == source.urls for s in other.sources)
            and complete_root(data_dir / other.name) is None]


def _discard(files: list[Path], data_dir: Path, info: DatasetInfo) -> None:
    """Delete downloaded files and leave no empty bookkeeping folders behind (sources that
    failed before this one leave the dataset's own download folder empty)."""
    for f in files:
        f.unlink(missing_ok=True)
    downloads_dir = data_dir / ".downloads"
    for folder in (downloads_dir / info.name, downloads_dir / "bundles", downloads_dir):
        try:
            folder.rmdir()
        except OSError:  # not empty, or not there
            pass


def _install(info: DatasetInfo, source: Source, data_dir: Path, progress: bool) -> Path:
    """Download `source` and extract `info`'s images into the cache.

    A bundle stays in `.downloads/bundles/` while it still serves datasets not extracted yet, so
    that the five datasets of the DiffAugment archive cost one download, not five.
    """
    pending = _download_dir(data_dir, info, source)
    files = []
    for i, url in enumerate(source.urls):
        checksum = source.checksum(i)
        if checksum is None and source.note == MIRROR_NOTE:
            checksum = _mirror_checksum(url)
        log.info(f"downloading {info.name} from {url}")
        dest = pending / _file_name(url, i)
        files.append(downloads.download(url, dest, checksum, progress=progress,
                                        max_bytes=source.max_bytes))
    try:
        include = _bundle_filter(source.subdir) if source.subdir else None
        root = _extract_to_cache(source.kind, files, data_dir / info.name, source.urls[0],
                                 include=include, nested=bool(source.subdir),
                                 expected=info.count)
    except NoImagesError:
        if not source.subdir:  # a bundle without this dataset still serves the others
            _discard(files, data_dir, info)
        raise
    except ArchiveError:
        _discard(files, data_dir, info)  # a bad archive must not be picked up again by the next run
        raise
    waiting = _still_served(source, data_dir) if source.subdir else []
    if waiting:
        log.info(f"kept {files[0]} for {', '.join(waiting)} (deleted once they are extracted "
                 "from it; deleting it yourself is safe)")
    _discard([] if waiting else files, data_dir, info)
    return root


def _resolve_named(info: DatasetInfo, data_dir: Path, progress: bool) -> ResolvedDataset:
    target = data_dir / info.name
    root = complete_root(target)
    if root is not None:
        return ResolvedDataset(root, info.name, info)

    tried = []
    for source in sources_for(info):
        where = source.urls[0]
        if source.kind == "parquet" and not parquet_available():
            tried.append(f"{where} (parquet needs pyarrow: pip install pyarrow)")
            continue
        try:
            root = _install(info, source, data_dir, progress)
        except (DownloadError, ArchiveError, OSError) as err:
            tried.append(f"{where} ({one_line(err)})")
            log.warning(f"source failed: {where}: {one_line(err)}")
            continue
        log.info(f"{info.name}: {count_images(root)} images in {root}")
        log.info(f"licence: {info.credit()}")
        return ResolvedDataset(root, info.name, info)

    found = count_images(target)
    if found:
        log.warning(f"using the {found} images already in {target} "
                    f"(no {MARKER}: not checked against the registry)")
        return ResolvedDataset(target.resolve(), info.name, info, complete=False)
    how_many = f"{info.count} " if info.count else ""
    raise UserError(
        f"dataset '{info.name}' is not cached and could not be downloaded: put its {how_many}"
        f"images into {target} by hand (or set {MIRROR_ENV}); "
        f"tried: {'; '.join(tried) or 'no sources'}"
    )


def _resolve_zip(path: Path, data_dir: Path) -> ResolvedDataset:
    st = path.stat()
    key = hashlib.sha256(f"{path.name}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "dataset"
    target = data_dir / "zips" / f"{stem}-{key}"
    root = complete_root(target)
    if root is None:
        log.info(f"extracting {path} into {target}")
        try:
            root = _extract_to_cache("zip", [path], target, str(path.resolve()))
        except ArchiveError as err:
            raise UserError(f"cannot use {path} as a dataset: {one_line(err)}") from None
    return ResolvedDataset(root, path.stem, None)


def _unknown(spec: str) -> UserError:
    if any(c in spec for c in "/\\") or spec.lower().endswith(".zip"):
        tried = path_candidates(spec)
        hint = f"tried {' and '.join(tried)}" if len(tried) > 1 else "check the path"
        return UserError(f"--dataset {spec}: no such folder or .zip file ({hint})")
    known = ", ".join(registry.names()[:6])
    return UserError(f"--dataset {spec!r} is not a folder, a .zip file or a known dataset name "
                     f"(known: {known}, ...; see `python -m fastgan_tf.data list`)")


def resolve_dataset(name_or_path: str | os.PathLike, data_dir: Path | str | None = None,
                    progress: bool = True) -> ResolvedDataset:
    """A folder is used as it is; a .zip is extracted into the cache; a registry name is taken
    from the cache or downloaded (mirror or public sources) and extracted. UserError otherwise.
    A path or data dir of the other side of WSL is used in this side's form (`moved_path`).

    `progress` shows download progress bars; what happens is logged either way."""
    spec = str(name_or_path).strip()
    data_dir = _usable_data_dir(data_dir)
    path = Path((spec and moved_path(spec)) or spec).expanduser()
    if spec and path.is_dir():
        path = path.resolve()
        return ResolvedDataset(path, path.name, None)
    if spec and path.is_file():
        if path.suffix.lower() == ".zip":
            return _resolve_zip(path, data_dir)
        raise UserError(f"--dataset {spec}: a file that is not a .zip; pass a folder of images, "
                        "a .zip of one, or a dataset name (`python -m fastgan_tf.data list`)")
    info = registry.get(spec) if spec else None
    if info is None:
        raise _unknown(spec)
    return _resolve_named(info, data_dir, progress)
