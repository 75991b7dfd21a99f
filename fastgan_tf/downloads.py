"""Every download of the package: named datasets, and the weight files FID/KID and LPIPS need.

`download` is the one function that moves bytes. They go to `<dest>.part`; only a complete file
whose checksum matches (when one is known) is renamed to `<dest>`, so a half-downloaded file is
never used. A connection that drops is resumed with an HTTP Range request (in the same call, and in
the next run since the `.part` file stays); a server that ignores Range gets a fresh download
instead of a corrupted concatenation.

`fetch` gets a file of the weights table (`WEIGHTS`): the cached copy when its checksum matches,
else a download after a quick reachability probe, so that an offline machine fails in seconds
with a one-line UserError saying which file to put in which folder, and how to go on without it.
Keras weights are kept in Keras's own cache folder, so weights other Keras programs downloaded
are found. Nothing is downloaded at import time.

The Keras weights are checked against the md5 digests Keras itself publishes. For the standard
2015-12-05 Inception graph (inception-2015-12-05.tgz) no checksum is published anywhere we could
find: the first copy is only checked by content (a readable tar holding
classify_image_graph_def.pb), and its sha256 is then recorded in `<file>.sha256` beside it, so
that a later corruption or replacement is detected. That is trust on first use, not a published
pin: it cannot tell whether the first copy was the genuine one.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tarfile
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fastgan_tf import __version__, paths
from fastgan_tf.errors import UserError, one_line, reason_of
from fastgan_tf.io import atomic_write_text
from fastgan_tf.progress import progress as progress_bar

log = logging.getLogger(__name__)

USER_AGENT = f"fastgan-tf/{__version__} (python-urllib)"
CHUNK = 1 << 16
TIMEOUT = 30.0  # seconds without data before a connection counts as dead
PROBE_TIMEOUT = 5.0  # seconds a weights host has to answer before we give up on it
_ALGORITHM_OF_LENGTH = {32: "md5", 64: "sha256"}


class DownloadError(Exception):
    """A source could not deliver the file; the message is one line (HTTP status, network error)."""


class ChecksumError(DownloadError):
    """The file arrived complete but its digest is not the expected one; it has been deleted."""


# -- checksums --------------------------------------------------------------------------------

def parse_checksum(checksum: str) -> tuple[str, str]:
    """"sha256:<hex>", "md5:<hex>" or a bare hex digest (32 digits: md5, 64: sha256) ->
    (algorithm, lower-case hex). ValueError for anything else: a checksum is never guessed."""
    algorithm, _, digest = checksum.strip().lower().rpartition(":")
    implied = _ALGORITHM_OF_LENGTH.get(len(digest))
    if not re.fullmatch(r"[0-9a-f]+", digest) or implied is None or algorithm not in ("", implied):
        raise ValueError(f"not a checksum: {checksum!r} (sha256:<64 hex digits>, "
                         "md5:<32 hex digits>, or the bare digest)")
    return implied, digest


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def checksum_mismatch(path: Path, checksum: str) -> str | None:
    """None when the file has the digest `checksum` names, else a one-line account of the two."""
    algorithm, expected = parse_checksum(checksum)
    actual = file_digest(path, algorithm)
    return None if actual == expected else f"expected {algorithm} {expected}, got {actual}"


# -- HTTP -------------------------------------------------------------------------------------

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
        raise DownloadError(f"unreachable ({one_line(getattr(err, 'reason', err))})") from None

    with response:
        status = getattr(response, "status", 200)
        if offset and (status != 206 or _content_range_start(response) != offset):
            offset = 0  # Range ignored: start again rather than append the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise DownloadError(f"file is {total} bytes, more than the {max_bytes} allowed")
        bar = progress_bar(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                           initial=offset, disable=not show)
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
                    bar.update(len(block))
        finally:
            bar.close()
    if total is None:
        return written > 0  # no length announced: a clean end of stream is all we can check
    return written == total


def download(url: str, dest: Path, checksum: str | None = None, *, progress: bool = True,
             timeout: float = TIMEOUT, attempts: int = 4, max_bytes: int | None = None) -> Path:
    """Download `url` to `dest` (resuming `<dest>.part`), verify `checksum`, return `dest`.

    `checksum`: see `parse_checksum`. An existing `dest` is kept when it matches (or when no
    checksum is known). Raises DownloadError (one line) when the source fails, ChecksumError when
    the content is wrong; in the latter case the partial file is deleted so that it is never used
    or resumed. `progress` shows a byte progress bar.
    """
    dest = Path(dest)
    if checksum is not None:
        parse_checksum(checksum)  # a malformed checksum fails before any byte is fetched
    if dest.exists() and (checksum is None or checksum_mismatch(dest, checksum) is None):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    desc = f"downloading {dest.name}"
    for _ in range(max(1, attempts)):
        if _fetch_once(url, part, timeout, progress, desc, max_bytes):
            break
    else:
        size = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"connection kept dropping ({size} bytes kept in {part.name}; "
                            "run again to resume)")
    mismatch = checksum_mismatch(part, checksum) if checksum is not None else None
    if mismatch is not None:
        part.unlink()
        raise ChecksumError(f"checksum mismatch: {mismatch} (the file was deleted)")
    os.replace(part, dest)  # the .part name is what makes resuming possible: not a temp file
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
        raise DownloadError(f"unreachable ({one_line(reason)})") from None


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if the host of `url` answers within `timeout` seconds, else a short reason.

    Runs in a daemon thread because a DNS lookup ignores socket timeouts: an offline or firewalled
    machine must not hang here. An HTTP error status is an answer too: the download that follows
    reports it precisely.
    """
    result = [f"no answer within {timeout:g} s"]

    def run():
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
            result[0] = None
        except urllib.error.HTTPError:
            result[0] = None
        except Exception as err:  # noqa: BLE001 - any other failure means "don't try"
            result[0] = one_line(getattr(err, "reason", None) or err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0]


# -- the weight files -------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsFile:
    """A weight file the package downloads on first use, and what to tell a user who can't.

    `checksum` is the published digest ("md5:<hex>" or "sha256:<hex>"). Where none is published,
    `content_check` (path -> None, or why the file is not the right one) vets the first copy and
    its sha256 is recorded beside it (see `recorded_checksum_path`): trust on first use.
    `folder` is called each time (the environment decides it); `also_accepted` names files in
    the same folder that stand for this one (e.g. the graph already extracted from an archive).
    """

    name: str
    url: str
    checksum: str | None
    folder: Callable[[], Path]
    purpose: str  # "needed for <purpose>"
    without: str  # how to go on without the file
    content_check: Callable[[Path], str | None] | None = None
    also_accepted: tuple[str, ...] = ()

    def __post_init__(self):
        if self.checksum is None and self.content_check is None:
            raise ValueError(f"{self.name}: a weights file needs a checksum or a content check")
        if self.checksum is not None:
            parse_checksum(self.checksum)

    @property
    def path(self) -> Path:
        return self.folder() / self.name


INCEPTION_GRAPH_FILE = "classify_image_graph_def.pb"


def holds_inception_graph(path: Path) -> str | None:
    """None if `path` is a readable tar holding classify_image_graph_def.pb, else why not.

    Listing the members decompresses the whole archive up to its end, so a truncated or corrupt
    download fails here rather than when FID is first computed.
    """
    try:
        with tarfile.open(path, "r:*") as tar:
            names = {PurePosixPath(m.name).name for m in tar.getmembers() if m.isfile()}
    except (OSError, EOFError, tarfile.TarError, zlib.error) as err:
        return f"it is not a readable tar archive ({reason_of(err)})"
    return None if INCEPTION_GRAPH_FILE in names else f"it holds no {INCEPTION_GRAPH_FILE}"


_KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"

VGG16_NOTOP = WeightsFile(
    name="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    url=_KERAS_APPLICATIONS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    checksum="md5:6d6bbae143d832006294945121d1f1fc",  # the hash keras.applications.VGG16 checks
    folder=paths.keras_cache_dir,
    purpose="the LPIPS reconstruction loss",
    without="train with --recon-loss l1, or pass --vgg-weights PATH",
)

INCEPTION_V3_NOTOP = WeightsFile(
    name="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    url=_KERAS_APPLICATIONS
    + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    checksum="md5:bcbd6486424b2319ff4ef7d526e38f63",  # the hash keras.applications checks
    folder=paths.keras_cache_dir,
    purpose="FID/KID with the keras backbone",
    without="pass --inception-weights PATH, or train with --fid-every 0",
)

# No checksum of this archive is published anywhere we could find: it is vetted by content, then
# pinned to the sha256 of the first copy that passed (trust on first use, see the module doc).
INCEPTION_2015 = WeightsFile(
    name="inception-2015-12-05.tgz",
    url="http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz",
    checksum=None,
    folder=paths.cache_dir,
    purpose="FID/KID with the standard backbone",
    without=f"pass --inception-weights PATH (the .tgz or {INCEPTION_GRAPH_FILE}), "
            "or train with --fid-every 0",
    content_check=holds_inception_graph,
    also_accepted=(INCEPTION_GRAPH_FILE,),
)

WEIGHTS = (VGG16_NOTOP, INCEPTION_V3_NOTOP, INCEPTION_2015)


def recorded_checksum_path(weights: WeightsFile) -> Path:
    """`<file>.sha256` (sha256sum format) beside a file that has no published checksum."""
    return weights.path.with_name(weights.name + ".sha256")


def _recorded_checksum(weights: WeightsFile) -> str | None:
    try:
        token = recorded_checksum_path(weights).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None
    return f"sha256:{token}" if re.fullmatch(r"[0-9a-fA-F]{64}", token) else None


def _record_checksum(weights: WeightsFile, path: Path) -> None:
    atomic_write_text(recorded_checksum_path(weights), f"{sha256_file(path)}  {path.name}\n")


def _expected_checksum(weights: WeightsFile) -> str | None:
    """The published checksum, else the sha256 recorded when a first copy passed its check."""
    return weights.checksum or _recorded_checksum(weights)


def _not_the_first_copy(weights: WeightsFile, detail: str) -> str:
    return (f"it is not the copy first checked here ({detail}; delete "
            f"{recorded_checksum_path(weights)} to accept a new one)")


def _problem(weights: WeightsFile, path: Path) -> str | None:
    """Why the file at `path` is not `weights` (None: it is). A first copy that passes its
    content check has its sha256 recorded, so that a later change is caught."""
    expected = _expected_checksum(weights)
    if expected is None:
        problem = weights.content_check(path)
        if problem is None:
            _record_checksum(weights, path)
        return problem
    mismatch = checksum_mismatch(path, expected)
    if mismatch is None:
        return None
    if weights.checksum is None:
        return _not_the_first_copy(weights, mismatch)
    return f"its checksum is wrong ({mismatch})"


def _lookup(weights: WeightsFile) -> tuple[Path | None, str | None]:
    """(the usable cached file, None), or (None, why the cached copy is not used, if any)."""
    path, problem = weights.path, None
    if path.is_file():
        problem = _problem(weights, path)
        if problem is None:
            return path, None
    for name in weights.also_accepted:
        if (path.parent / name).is_file():
            return path.parent / name, None
    return None, problem


def cached(weights: WeightsFile) -> Path | None:
    """The verified cached file, or None; never uses the network."""
    return _lookup(weights)[0]


def _download_weights(weights: WeightsFile) -> Path:
    path = weights.path
    expected = _expected_checksum(weights)
    if expected is None:  # a copy that failed its content check: only that tells it from new
        path.unlink(missing_ok=True)
    log.info(f"downloading {weights.name} (for {weights.purpose}) from {weights.url} "
             f"into {path.parent}")
    try:
        download(weights.url, path, expected)
    except ChecksumError as err:
        if weights.checksum is not None:
            raise
        raise ChecksumError(_not_the_first_copy(weights, str(err))) from None
    problem = _problem(weights, path) if expected is None else None
    if problem is not None:
        path.unlink()
        raise DownloadError(f"the file downloaded is not usable: {problem}")
    return path


def _unavailable(weights: WeightsFile, reason: str, rejected: str | None) -> UserError:
    folder = weights.path.parent
    state = f"in {folder} is not usable ({rejected})" if rejected else f"is not in {folder}"
    return UserError(one_line(
        f"{weights.name}, needed for {weights.purpose}, {state} and could not be downloaded "
        f"from {weights.url} ({reason}): download it into {folder} yourself, or {weights.without}"
    ))


def fetch(weights: WeightsFile, timeout: float = PROBE_TIMEOUT) -> Path:
    """The cached file if its checksum matches, else a fresh download; UserError (one line:
    the file, the URL, the folder to put it in, how to go on without it) when neither works.

    A cached copy with a wrong checksum is never used; a warning says so. `timeout` bounds the
    reachability probe, so that an offline machine fails in seconds.
    """
    found, rejected = _lookup(weights)
    if found is not None:
        return found
    if rejected:
        log.warning(f"{weights.path} is not used: {rejected}")
    reason = probe(weights.url, timeout)
    if reason is None:
        try:
            return _download_weights(weights)
        except (DownloadError, OSError) as err:
            reason = reason_of(err)
    raise _unavailable(weights, reason, rejected)
