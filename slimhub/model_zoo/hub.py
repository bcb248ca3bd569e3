"""Download files into a local cache, verified by checksum.

- Cache: ``$SLIMHUB_HOME/hub`` (default ``$XDG_CACHE_HOME/slimhub/hub``, i.e. ``~/.cache/slimhub/hub``);
  a file is kept under its URL's file name. A cache folder that cannot be written (a file in
  its way, no write permission, a read-only file system) is a :class:`CacheError` naming the
  folder and the variable or argument that chose it.
- A download goes to a temporary file in the cache directory and is renamed into place only
  once its checksum matches, so a partial or bad file never appears under the final name.
  The download holds a lock on that file; a temporary file nobody holds (its download was
  killed) is removed by the next call.
- ``SLIMHUB_OFFLINE=1``: only the cache is used; a missing file is an error.
- ``SLIMHUB_MIRROR``: a local directory or a base URL (``file://``, ``http://``...) that
  replaces everything before the file name of each URL.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from tqdm import tqdm

from slimhub.checkpoint import TMP_NAME, atomic_path, nearest_existing, probe_write

try:
    import fcntl
except ImportError:  # Windows: a file open for writing cannot be removed, which is lock enough
    fcntl = None

_CHUNK = 1 << 20
_DIGEST_LENGTHS = {"sha256": 64, "md5": 32}
_RETRIABLE_HTTP = {408, 425, 429}
STALE_AFTER = 10.0
"""Seconds after its last write that a temporary file no download holds counts as left by a
killed one (a download locks its file only from opening it until closing it)."""


class DownloadError(OSError):
    """A file could not be fetched into the cache."""


class ChecksumError(DownloadError):
    """A fetched or cached file does not match its expected checksum."""


class CacheError(OSError):
    """The cache folder cannot hold files, or a cached file cannot be read or replaced."""


class _IncompleteDownload(OSError):
    """The connection closed before Content-Length bytes arrived."""


def cache_location(cache_dir=None):
    """``(folder, what chose it)`` of the cache: ``cache_dir`` if given, else
    ``$SLIMHUB_HOME/hub``, ``$XDG_CACHE_HOME/slimhub/hub`` or ``~/.cache/slimhub/hub``."""
    if cache_dir:
        return os.path.expanduser(os.fspath(cache_dir)), "the cache_dir argument"
    home = os.environ.get("SLIMHUB_HOME")
    if home:
        return os.path.join(os.path.expanduser(home), "hub"), f"SLIMHUB_HOME={home}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "slimhub", "hub"), f"XDG_CACHE_HOME={xdg} (SLIMHUB_HOME is not set)"
    return (os.path.join(os.path.expanduser("~"), ".cache", "slimhub", "hub"),
            "the home folder (neither SLIMHUB_HOME nor XDG_CACHE_HOME is set)")


def hub_dir():
    """The cache directory for downloaded files (created on first download)."""
    return cache_location()[0]


def _cache_error(folder, source, reason):
    fix = "pass a writable folder" if source == "the cache_dir argument" else \
        "set SLIMHUB_HOME to a writable folder"
    return CacheError(f"the download cache {folder} cannot be used: {reason}; the folder comes from "
                      f"{source}: {fix}")


def _prepare_cache(folder, source):
    """Create ``folder`` if missing and check that files can be written in it."""
    blocking = nearest_existing(folder)
    if not os.path.isdir(blocking):
        raise _cache_error(folder, source, f"{blocking} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        probe_write(folder)
    except OSError as exc:
        raise _cache_error(folder, source, f"it is not writable ({exc.strerror or exc})") from None


def _held_elsewhere(f):
    """True if another open file (a download in progress) holds the lock on ``f``."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held, or a file system without locks: leave the file alone
        return True
    return False


def remove_stale_downloads(folder):
    """Remove the temporary files of killed downloads from ``folder``: regular files named
    like :data:`slimhub.checkpoint.TMP_NAME`, untouched for :data:`STALE_AFTER` seconds,
    whose lock no download holds. Returns their names."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # no folder yet, or one that cannot be read: nothing of ours to remove
        return []
    removed = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
            if not TMP_NAME.fullmatch(name) or not stat.S_ISREG(info.st_mode) or \
                    time.time() - info.st_mtime < STALE_AFTER:
                continue
            with open(path, "rb") as f:
                if _held_elsewhere(f):
                    continue
                os.remove(path)
            removed.append(name)
        except OSError:  # gone meanwhile, or not ours to remove (a read-only cache)
            continue
    return removed


def offline():
    """True when ``SLIMHUB_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get("SLIMHUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file's bytes (``algorithm``: "sha256" or "md5")."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def source_url(url):
    """The URL a file is fetched from: ``url``, or its file name under ``SLIMHUB_MIRROR``."""
    mirror = os.environ.get("SLIMHUB_MIRROR", "").strip()
    if not mirror:
        return url
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return mirror.rstrip("/") + "/" + _file_name(url)


def download(url, sha256=None, md5=None, *, file_name=None, cache_dir=None, retries=3,
             backoff=1.0, timeout=60.0, progress=True):
    """Return the local path of ``url``'s file, fetching it into the cache if needed.

    Exactly one of ``sha256`` / ``md5`` (hex digests) must be given; the file is checked
    against it after every download and on every cache hit (a bad cached file is removed
    and fetched again). Network failures, 5xx answers, truncated transfers and a server
    silent for ``timeout`` seconds are retried ``retries`` times, waiting
    ``backoff * 2**attempt`` seconds between tries. A cache that cannot be used raises
    :class:`CacheError`, a file that cannot be fetched :class:`DownloadError`.
    """
    algorithm, expected = _expected_digest(sha256, md5)
    file_name = file_name or _file_name(url)
    cache_dir, chosen_by = cache_location(cache_dir)
    path = os.path.join(cache_dir, file_name)
    remove_stale_downloads(cache_dir)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise _cache_error(cache_dir, chosen_by, f"{path} is in the way: it is not a file")
    if os.path.isfile(path):
        try:
            actual = file_digest(path, algorithm)
            if actual == expected:
                return path
            os.remove(path)
        except OSError as exc:
            raise _cache_error(cache_dir, chosen_by, f"cached {path} cannot be checked and replaced "
                               f"({exc.strerror or exc})") from None
        warnings.warn(f"removed cached {path}: {algorithm} {actual} does not match expected {expected}")
    if offline():
        raise DownloadError(
            f"{file_name} is not in the cache {cache_dir} and SLIMHUB_OFFLINE is set; "
            f"unset SLIMHUB_OFFLINE, or copy the file from {url} to {path}"
        )
    _prepare_cache(cache_dir, chosen_by)
    source = source_url(url)

    def write(tmp):
        with open(tmp, "wb") as f:
            if fcntl is not None:
                with contextlib.suppress(OSError):  # a file system without locks: write unlocked
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            actual = _fetch_with_retries(source, url, f, algorithm, retries, backoff, timeout, progress)
        if actual != expected:
            raise ChecksumError(
                f"{file_name} from {source}: {algorithm} mismatch, expected {expected}, got {actual}; "
                "the file was removed"
            )

    atomic_path(path, write)
    return path


def _expected_digest(sha256, md5):
    given = {name: value for name, value in (("sha256", sha256), ("md5", md5)) if value is not None}
    if len(given) != 1:
        raise ValueError(f"download: give exactly one of sha256= or md5=, got {sorted(given) or 'neither'}")
    ((algorithm, value),) = given.items()
    if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{_DIGEST_LENGTHS[algorithm]}}}", value):
        raise ValueError(
            f"download: {algorithm}= must be {_DIGEST_LENGTHS[algorithm]} hex digits, got {value!r}"
        )
    return algorithm, value.lower()


def _file_name(url):
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f"download: cannot take a file name from url {url!r}; pass file_name=")
    return name


def _fetch_with_retries(source, url, f, algorithm, retries, backoff, timeout, progress):
    """Write ``source`` into ``f``; return the hex digest of what was written."""
    via = "" if source == url else f" (mirror of {url})"
    local = urllib.parse.urlparse(source).scheme == "file"
    for attempt in range(retries + 1):
        f.seek(0)
        f.truncate()
        try:
            return _fetch(source, f, algorithm, timeout, progress)
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code not in _RETRIABLE_HTTP:
                raise DownloadError(f"cannot download {source}{via}: HTTP {e.code} {e.reason}") from e
            error = e
        except urllib.error.URLError as e:
            if local:
                raise DownloadError(f"cannot read {source}{via}: {e.reason}") from e
            error = e
        except (_IncompleteDownload, http.client.HTTPException, ConnectionError, socket.timeout) as e:
            error = e
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    raise DownloadError(f"cannot download {source}{via} after {retries + 1} tries: {error}") from error


def _fetch(source, f, algorithm, timeout, progress):
    h = hashlib.new(algorithm)
    received = 0
    with urllib.request.urlopen(source, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        name = _file_name(source)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                  disable=not progress) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                f.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _IncompleteDownload(f"got {received} of {total} bytes")
    return h.hexdigest()
