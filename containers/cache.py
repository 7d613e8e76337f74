"""The node-wide image cache: download an image once, share it between jobs.

Location: ``$FERRY_IMAGE_CACHE``, else ``/var/tmp/ferry-images-<uid>`` (one
cache per user: a cache shared between users would let one user swap another's
images). The default directory is created ``0700`` and refused when it is a
symlink or belongs to another user.

Layout under the root::

    blobs/<sha256><suffix>     image files (docker-archive tars, SIFs), read-only
    urls/<sha256 of URL>.json  URL -> sha256, for specs that give no sha256
    rootfs/<key>/              unpacked docker-archives (charliecloud)
    records/<name>.json        small records (e.g. "loaded into docker")
    locks/<name>.lock          fcntl.flock lock files
    tmp/                       downloads and unpacks in progress

Keys: a spec with a sha256 is looked up by that sha256 and, on a hit, nothing
is downloaded at all. A spec without one is looked up by its URL (the URL is
then taken as immutable; give a sha256 or change the URL to change the image);
after the download its sha256 is recorded, and the blob is shared with every
spec naming that sha256.

Locking: every look-up-or-download runs under an exclusive ``flock`` on a lock
file per key, so when two jobs on a node stage the same image at once, one
downloads and the other waits and then reuses the result. Blobs are published
with an atomic rename, so a reader never sees half a file, and a failed or
mismatching download leaves nothing in the cache.

The download itself is done by the caller (the worker's transfer engine, which
this package must not import) through ``fetch(url, dest_path, expected_sha256)
-> sha256_hex``.

Shared filesystems: an image that is a local path under ``/cvmfs`` or a prefix
in ``$FERRY_SHARED_PATHS`` (colon-separated) is used in place, never copied
(``StagedImage.linked``); so is a local ``dir`` image anywhere, and a local
image whose spec says ``in_place`` (the planner's: it is on the compute site). Registry
references (``docker://`` ...) are not staged at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.plugins.errors import (
    ConfigError,
    IntegrityError,
    NotFound,
    PermanentError,
    PermissionDenied,
    TransientError,
)
from ferry.plugins.url import redact

from .image import REGISTRY_KINDS, ImageSpec, local_image_path

__all__ = [
    "DEFAULT_SHARED_PREFIXES",
    "Fetch",
    "ImageCache",
    "LockTimeout",
    "StagedImage",
    "default_cache_root",
    "shared_prefixes",
]

log = logging.getLogger("ferry.containers")

#: downloads ``url`` to ``dest_path`` atomically and returns the sha256 hex of the
#: bytes written; raises IntegrityError when ``expected_sha256`` is given and differs
Fetch = Callable[[str, str, "str | None"], str]

DEFAULT_SHARED_PREFIXES: tuple[str, ...] = ("/cvmfs",)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_STALE_TMP_SECONDS = 24 * 3600


class LockTimeout(TransientError):
    """Another process held a cache lock longer than the configured timeout."""


def default_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$FERRY_IMAGE_CACHE``, else ``/var/tmp/ferry-images-<uid>``."""
    env = os.environ if environ is None else environ
    configured = env.get("FERRY_IMAGE_CACHE")
    if configured:
        return Path(configured)
    return Path(f"/var/tmp/ferry-images-{os.getuid()}")


def shared_prefixes(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``/cvmfs`` plus every entry of the colon-separated ``$FERRY_SHARED_PATHS``."""
    env = os.environ if environ is None else environ
    extra = [p for p in env.get("FERRY_SHARED_PATHS", "").split(":") if p.strip()]
    out: list[str] = []
    for prefix in (*DEFAULT_SHARED_PREFIXES, *extra):
        norm = os.path.normpath(prefix.strip())
        if norm.startswith("/") and norm not in out:
            out.append(norm)
    return tuple(out)


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class StagedImage:
    """An image ready on this node (or a registry reference passed through).

    :param path: local path of the image file or directory; for a registry
        reference, the reference itself (``docker://...``)
    :param kind: the image kind (see :mod:`ferry.containers.image`)
    :param sha256: sha256 of the image file when known
    :param linked: used in place from a shared filesystem (or a local
        directory), not copied into the cache
    :param cached: found ready on the node: nothing was downloaded
    :param key: names everything derived from this image in the cache (its
        sha256 when known)
    :param source: the image reference as the spec gave it, secrets masked
    """

    path: str
    kind: str
    sha256: str | None
    linked: bool = False
    cached: bool = False
    key: str = ""
    source: str = ""

    @property
    def registry(self) -> bool:
        """True for a registry reference that the runtime pulls itself."""
        return self.kind in REGISTRY_KINDS


class _FileLock:
    """An exclusive ``flock`` on a lock file, with an optional timeout."""

    def __init__(self, path: Path, timeout: float | None, what: str) -> None:
        self.path = path
        self.timeout = timeout
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> _FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if self.timeout is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + self.timeout
                delay = 0.05
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise LockTimeout(
                                f"image cache: waited {self.timeout:.0f} s for another process"
                                f" holding the lock on {self.what} ({self.path})"
                            ) from None
                        time.sleep(delay)
                        delay = min(delay * 2, 1.0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


class ImageCache:
    """The node-wide image cache (see the module docstring for the layout).

    :param root: cache directory (default :func:`default_cache_root`)
    :param shared: shared-filesystem prefixes whose images are used in place
        (default :func:`shared_prefixes`)
    :param environ: environment to read ``FERRY_IMAGE_CACHE`` and
        ``FERRY_SHARED_PATHS`` from (default ``os.environ``)
    :param lock_timeout: seconds to wait for another process's lock; None
        waits as long as it takes (the other process's transfer has its own
        timeouts)
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        shared: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.root = Path(root) if root is not None else default_cache_root(env)
        self.shared = (
            tuple(os.path.normpath(p) for p in shared)
            if shared is not None
            else shared_prefixes(env)
        )
        self.lock_timeout = lock_timeout
        self._check_root(is_default=root is None and not env.get("FERRY_IMAGE_CACHE"))
        for sub in ("blobs", "urls", "rootfs", "records", "locks", "tmp"):
            (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        self._sweep_tmp()

    # -- setup ---------------------------------------------------------------

    def _check_root(self, *, is_default: bool) -> None:
        root = self.root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionDenied(f"image cache {root}: cannot create it: {exc}") from exc
        st = os.lstat(root)
        if is_default:
            # /var/tmp is world-writable: someone else may have made our path first
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                raise PermissionDenied(
                    f"image cache {root} is not a plain directory; remove it or set"
                    " FERRY_IMAGE_CACHE"
                )
            if st.st_uid != os.getuid():
                raise PermissionDenied(
                    f"image cache {root} belongs to uid {st.st_uid}, not to this user"
                    f" ({os.getuid()}); remove it or set FERRY_IMAGE_CACHE"
                )
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionDenied(f"image cache {root} is not writable by this user")

    def _sweep_tmp(self) -> None:
        """Remove leftovers of processes killed mid-download (older than a day)."""
        cutoff = time.time() - _STALE_TMP_SECONDS
        try:
            entries = list(os.scandir(self.root / "tmp"))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
            except OSError:
                pass

    # -- building blocks (also used by the runtimes) -------------------------

    def lock(self, name: str, *, timeout: float | None = None) -> _FileLock:
        """An exclusive inter-process lock named ``name`` (a context manager)."""
        safe = _SAFE_NAME.sub("_", name)[:200]
        return _FileLock(
            self.root / "locks" / f"{safe}.lock",
            self.lock_timeout if timeout is None else timeout,
            name,
        )

    def area(self, name: str) -> Path:
        """A subdirectory of the cache root (created on first use)."""
        path = self.root / _SAFE_NAME.sub("_", name)
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def tempdir(self, prefix: str = "t") -> Path:
        """A fresh private directory under ``tmp/``, on the cache's filesystem."""
        return Path(
            tempfile.mkdtemp(prefix=f"{_SAFE_NAME.sub('_', prefix)}-", dir=self.root / "tmp")
        )

    def read_record(self, name: str) -> dict[str, Any] | None:
        """The JSON record ``name`` (see :meth:`write_record`), or None."""
        path = self.root / "records" / f"{_SAFE_NAME.sub('_', name)}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_record(self, name: str, data: Mapping[str, Any]) -> None:
        """Write a small JSON record atomically (write a temp file, then rename)."""
        path = self.root / "records" / f"{_SAFE_NAME.sub('_', name)}.json"
        self._write_json(path, data)

    def remove_record(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / "records" / f"{_SAFE_NAME.sub('_', name)}.json")

    def _write_json(self, path: Path, data: Mapping[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".rec-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(dict(data), fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def is_shared(self, path: str) -> bool:
        """True when ``path`` (as given, or resolved) lies under a shared prefix."""
        candidates = {os.path.normpath(path)}
        with contextlib.suppress(OSError):
            candidates.add(os.path.realpath(path))
        return any(_under(c, p) for c in candidates for p in self.shared)

    # -- blobs ---------------------------------------------------------------

    def blob_path(self, sha256: str, suffix: str = "") -> Path:
        return self.root / "blobs" / f"{sha256}{suffix}"

    def find_blob(self, sha256: str) -> Path | None:
        """The cached image file with this sha256, whatever its suffix."""
        blobs = self.root / "blobs"
        for cand in (blobs / sha256, *blobs.glob(f"{sha256}.*")):
            try:
                if stat.S_ISREG(os.lstat(cand).st_mode):
                    return cand
            except OSError:
                continue
        return None

    # -- staging -------------------------------------------------------------

    def stage(self, spec: ImageSpec, fetch: Fetch) -> StagedImage:
        """Make ``spec``'s image available on this node.

        * registry references come back as they are (``registry`` is True);
        * a local path under a shared prefix, a local directory, or a local
          image the spec says to use in place (``in_place``: it is on the
          compute site), is used in place (``linked``); an ``in_place`` image
          file with a sha256 is checked against it, once per node and version
          of the file;
        * anything else is looked up in the cache (by sha256, else by URL) and
          downloaded with ``fetch`` on a miss, under a per-key lock.

        :param fetch: ``fetch(url, dest_path, expected_sha256) -> sha256_hex``;
            must write ``dest_path`` atomically. Plain paths are passed to it as
            ``file://`` URLs.
        :raises IntegrityError: the downloaded (or in-place) bytes do not have ``spec.sha256``
        :raises NotFound: a local image does not exist
        """
        kind = spec.resolved_kind
        if kind in REGISTRY_KINDS:
            return StagedImage(
                path=spec.image,
                kind=kind,
                sha256=spec.sha256,
                key=spec.sha256 or "ref-" + _digest(spec.image)[:32],
                source=spec.display,
            )
        local = local_image_path(spec.image)
        if local is not None and kind == "sif" and os.path.isdir(local):
            # a singularity image without a suffix may be an unpacked sandbox, e.g. on
            # CVMFS (Pegasus PM-1313); the planner calls it sif when it cannot look
            kind = "dir"
        if local is not None and (kind == "dir" or spec.in_place or self.is_shared(local)):
            staged = self._linked(spec, kind, local)
            if spec.in_place and spec.sha256 and kind != "dir" and not self.is_shared(local):
                self._verify_in_place(spec, local)
            return staged
        if kind == "dir":
            raise ConfigError(
                f"container image {spec.display} is a directory image; it must be a local"
                " path (e.g. on a shared filesystem), it cannot be downloaded"
            )
        url = spec.image if local is None else f"file://{local}"
        suffix = _suffix(spec, kind)
        if spec.sha256 is not None:
            with self.lock(f"sha-{spec.sha256}"):
                found = self.find_blob(spec.sha256)
                if found is not None:
                    log.debug("image cache hit for %s: %s", spec.display, found)
                    return self._staged(spec, kind, found, spec.sha256, cached=True)
                blob = self._download(url, spec, suffix, fetch)
                self._record_url(url, spec.sha256)
                return self._staged(spec, kind, blob, spec.sha256, cached=False)
        url_key = _digest(url)
        with self.lock(f"url-{url_key}"):
            record = self._read_url_record(url_key)
            if record is not None:
                found = self.find_blob(record)
                if found is not None:
                    log.debug("image cache hit for %s (by URL): %s", spec.display, found)
                    return self._staged(spec, kind, found, record, cached=True)
            blob = self._download(url, spec, suffix, fetch)
            sha = blob.name[:64]
            self._record_url(url, sha)
            return self._staged(spec, kind, blob, sha, cached=False)

    def lookup(self, spec: ImageSpec) -> StagedImage | None:
        """The cached image for ``spec`` if it is already on the node (no lock, no download)."""
        kind = spec.resolved_kind
        if kind in REGISTRY_KINDS or kind == "dir":
            return None
        sha = spec.sha256
        if sha is None:
            local = local_image_path(spec.image)
            url = spec.image if local is None else f"file://{local}"
            sha = self._read_url_record(_digest(url))
        found = self.find_blob(sha) if sha else None
        if found is None or sha is None:
            return None
        return self._staged(spec, kind, found, sha, cached=True)

    def _record_url(self, url: str, sha: str) -> None:
        """Remember which sha256 ``url`` gave (for later specs without one)."""
        self._write_json(
            self.root / "urls" / f"{_digest(url)}.json",
            {"url": redact(url), "sha256": sha, "time": time.time()},
        )

    def _read_url_record(self, url_key: str) -> str | None:
        try:
            data = json.loads((self.root / "urls" / f"{url_key}.json").read_text())
        except (OSError, ValueError):
            return None
        sha = data.get("sha256") if isinstance(data, dict) else None
        return sha if isinstance(sha, str) and _HEX64.match(sha) else None

    def _staged(
        self, spec: ImageSpec, kind: str, path: Path, sha: str, *, cached: bool
    ) -> StagedImage:
        return StagedImage(
            path=str(path), kind=kind, sha256=sha, cached=cached, key=sha, source=spec.display
        )

    def _linked(self, spec: ImageSpec, kind: str, local: str) -> StagedImage:
        try:
            st = os.stat(local)
        except FileNotFoundError:
            raise NotFound(f"container image {local} does not exist", url=local) from None
        except OSError as exc:
            raise PermissionDenied(f"container image {local}: {exc}", url=local) from exc
        if kind == "dir" and not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"container image {local} is of kind dir but is not a directory")
        if kind != "dir" and not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"container image {local} is of kind {kind} but is not a file")
        if spec.sha256:
            key = spec.sha256
        else:
            # no sha256 and we will not read a whole shared image to compute one:
            # key derived data by path, size and modification time
            key = "path-" + _digest(f"{os.path.realpath(local)}|{st.st_size}|{st.st_mtime_ns}")[:32]
        return StagedImage(
            path=local,
            kind=kind,
            sha256=spec.sha256,
            linked=True,
            cached=True,
            key=key,
            source=spec.display,
        )

    def _verify_in_place(self, spec: ImageSpec, local: str) -> None:
        """Check an in-place image against its sha256, as a download is checked; once per
        node and version of the file (its path, size and modification time)."""
        st = os.stat(local)
        version = f"{os.path.realpath(local)}|{st.st_size}|{st.st_mtime_ns}|{spec.sha256}"
        name = "verified-" + _digest(version)[:32]
        with self.lock(name):
            if self.read_record(name) is not None:
                return
            digest = hashlib.sha256()
            with open(local, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            actual = digest.hexdigest()
            if actual != spec.sha256:
                raise IntegrityError(
                    f"container image {spec.display}: sha256 mismatch (expected {spec.sha256},"
                    f" got {actual})",
                    expected=spec.sha256 or "",
                    actual=actual,
                    url=spec.display,
                )
            self.write_record(name, {"path": local, "sha256": actual, "time": time.time()})

    def _download(self, url: str, spec: ImageSpec, suffix: str, fetch: Fetch) -> Path:
        """Fetch ``url`` into ``tmp/``, check it, publish it as a blob; return the blob."""
        tmpdir = self.tempdir("dl")
        dest = tmpdir / f"image{suffix}"
        started = time.monotonic()
        try:
            fetch_result = self._call_fetch(fetch, url, str(dest), spec)
            if not isinstance(fetch_result, str) or not _HEX64.match(fetch_result.lower()):
                raise PermanentError(
                    f"container image {spec.display}: the download did not report a sha256"
                    f" (got {fetch_result!r})",
                    url=spec.display,
                )
            actual = fetch_result.lower()
            if spec.sha256 is not None and actual != spec.sha256:
                raise IntegrityError(
                    f"container image {spec.display}: sha256 mismatch (expected {spec.sha256},"
                    f" got {actual})",
                    expected=spec.sha256,
                    actual=actual,
                    url=spec.display,
                )
            try:
                st = os.lstat(dest)
            except FileNotFoundError:
                raise PermanentError(
                    f"container image {spec.display}: the download left no file at {dest}",
                    url=spec.display,
                ) from None
            if not stat.S_ISREG(st.st_mode):
                raise PermanentError(
                    f"container image {spec.display}: the download is not a regular file",
                    url=spec.display,
                )
            os.chmod(dest, 0o444)
            with self.lock(f"sha-{actual}") if spec.sha256 is None else contextlib.nullcontext():
                existing = self.find_blob(actual)
                if existing is not None:  # someone else published the same bytes
                    return existing
                blob = self.blob_path(actual, suffix)
                os.replace(dest, blob)
            log.info(
                "image %s staged into %s (%.1f s)",
                spec.display,
                blob,
                time.monotonic() - started,
            )
            return blob
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    @staticmethod
    def _call_fetch(fetch: Fetch, url: str, dest: str, spec: ImageSpec) -> object:
        try:
            return fetch(url, dest, spec.sha256)
        except OSError as exc:  # a fetch that let a raw OSError out
            if exc.errno == errno.ENOENT:
                raise NotFound(
                    f"container image {spec.display}: {exc.strerror}", url=spec.display
                ) from exc
            raise PermanentError(
                f"container image {spec.display}: {exc}", url=spec.display
            ) from exc

    # -- maintenance ---------------------------------------------------------

    def entries(self) -> list[Path]:
        """Every cached image file."""
        return sorted(p for p in (self.root / "blobs").iterdir() if p.is_file())


def _suffix(spec: ImageSpec, kind: str) -> str:
    name = spec.basename.lower()
    for suf in (
        ".tar.gz",
        ".tar.bz2",
        ".tar.xz",
        ".tgz",
        ".tbz2",
        ".txz",
        ".tar",
        ".sif",
        ".simg",
        ".img",
    ):
        if name.endswith(suf):
            return suf
    return ".tar" if kind == "docker-archive" else ".sif"
