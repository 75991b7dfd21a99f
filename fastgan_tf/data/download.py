"""HTTP download with resume, checksum and a progress bar, using only urllib.

The bytes go to `<dest>.part`; only a complete file whose checksum matches (when one is known) is
renamed to `<dest>`, so a half-downloaded archive is never extracted. A connection that drops is
resumed with an HTTP Range request (in the same call, and in the next run since the `.part` file
stays). A server that ignores Range gets a fresh download instead of a corrupted concatenation.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from fastgan_tf import __version__
from fastgan_tf.progress import ProgressBar

USER_AGENT = f"fastgan-tf/{__version__} (python-urllib; few-shot dataset download)"
CHUNK = 1 << 16
TIMEOUT = 30.0  # seconds without data before a connection counts as dead


class DownloadError(Exception):
    """A source could not deliver the file; the message is one line (HTTP status, network error)."""


class ChecksumError(DownloadError):
    """The file arrived complete but its sha256 is not the expected one; it has been deleted."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")  # add_header: kept across redirects
    return urllib.request.urlopen(request, timeout=timeout)


def _content_range_start(response) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _fetch_once(url: str, part: Path, timeout: float, show: bool, desc: str,
                max_bytes: int | None) -> bool:
    """Append what the server sends to `part`. True when the file is complete."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # our .part is as long as (or longer than) the file
            part.unlink()
            return False
        raise DownloadError(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(f"unreachable ({getattr(err, 'reason', err)})") from None

    with response:
        status = getattr(response, "status", 200)
        if offset and (status != 206 or _content_range_start(response) != offset):
            offset = 0  # Range ignored: start again rather than append the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise DownloadError(f"file is {total} bytes, more than the {max_bytes} allowed")
        kib = None if total is None else max(1, -(-total // 1024))
        bar = ProgressBar(total=kib, desc=desc, unit="KiB", disable=not show)
        bar.n = offset // 1024
        written = offset
        try:
            with open(part, "ab" if offset else "wb") as f:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError):
                        break  # keep what arrived; the caller resumes from there
                    if not block:
                        break
                    f.write(block)
                    written += len(block)
                    if max_bytes is not None and written > max_bytes:
                        f.close()
                        part.unlink()
                        raise DownloadError(f"download exceeds the {max_bytes} bytes allowed")
                    bar.update((written // 1024) - bar.n)
        finally:
            bar.close()
    if total is None:
        return written > 0  # no length announced: a clean end of stream is all we can check
    return written == total


def download(url: str, dest: Path, sha256: str | None = None, *, progress: bool = True,
             timeout: float = TIMEOUT, attempts: int = 4, max_bytes: int | None = None) -> Path:
    """Download `url` to `dest` (resuming `<dest>.part`), verify `sha256`, return `dest`.

    Raises DownloadError (one line) when the source fails, ChecksumError when the content is
    wrong; in the latter case the partial file is deleted so that it is never used or resumed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    if dest.exists() and (expected is None or sha256_file(dest) == expected):
        return dest
    part = dest.with_name(dest.name + ".part")
    desc = f"downloading {dest.name}"
    for _ in range(max(1, attempts)):
        if _fetch_once(url, part, timeout, progress, desc, max_bytes):
            break
    else:
        size = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"connection kept dropping ({size} bytes kept in {part.name}; "
                            "run again to resume)")
    if expected is not None:
        actual = sha256_file(part)
        if actual != expected:
            part.unlink()
            raise ChecksumError(f"checksum mismatch: expected sha256 {expected}, got {actual} "
                                "(the file was deleted)")
    os.replace(part, dest)
    return dest


def fetch_text(url: str, timeout: float = TIMEOUT, limit: int = 4096) -> str | None:
    """A small text file (e.g. a mirror's `<file>.sha256`), or None if the server has none."""
    try:
        with _open(url, 0, timeout) as response:
            return response.read(limit).decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        if err.code in (403, 404, 410):
            return None
        raise DownloadError(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, FileNotFoundError) or isinstance(err, FileNotFoundError):
            return None  # file:// mirror without the optional file
        raise DownloadError(f"unreachable ({reason})") from None
