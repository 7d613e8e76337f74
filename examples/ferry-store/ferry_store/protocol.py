"""store://NAME/key: objects under a directory, each with a ``.sha256`` sidecar."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat as stat_mod
from collections.abc import Callable, Iterator

from ferry.plugins.spec import (
    URL,
    ConfigError,
    IntegrityError,
    NotFound,
    PermanentError,
    PermissionDenied,
    Protocol,
    Sink,
    Source,
    Stat,
    TransientError,
)

SIDECAR = ".sha256"


@contextlib.contextmanager
def map_os_exceptions(url: URL) -> Iterator[None]:
    """Map OSError once, to ferry's error tree."""
    try:
        yield
    except OSError as exc:
        msg = f"{url}: {exc.strerror or exc}"
        if exc.errno == errno.ENOENT:
            raise NotFound(msg, url=str(url), plugin="store") from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionDenied(msg, url=str(url), plugin="store") from exc
        if exc.errno in (errno.EIO, errno.EAGAIN):
            raise TransientError(msg, url=str(url), plugin="store") from exc
        raise PermanentError(msg, url=str(url), plugin="store") from exc


class StoreProtocol(Protocol):
    name = "store"
    schemes = ("store",)

    def _path(self, url: URL) -> str:
        section = self.context.credentials.section(f"store://{url.host}")
        root = section.get("root") or os.environ.get(f"FERRY_STORE_{url.host.upper()}")
        if not root:
            raise ConfigError(
                f"{url}: no root for store {url.host!r}: set FERRY_STORE_{url.host.upper()}"
                f" or 'root' in a [store://{url.host}] section of the credentials file"
            )
        key = url.path.lstrip("/")
        if not key or key.endswith(SIDECAR) or ".." in key.split("/"):
            raise PermanentError(f"{url}: not a valid object key", url=str(url), plugin="store")
        return os.path.join(root, key)

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        path = self._path(url)
        with map_os_exceptions(url), open(path, "rb", buffering=0) as f:
            sink.set_size(os.fstat(f.fileno()).st_size)
            f.seek(sink.offset)
            sink.copy_from(f, progress=progress)
        stored = self.checksum(url)
        if stored and stored != sink.sha256:  # the object changed behind the store's back
            raise IntegrityError(
                f"{url}: sha256 {sink.sha256} does not match the stored {stored}",
                expected=stored,
                actual=sink.sha256,
                url=str(url),
                plugin="store",
            )

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        path = self._path(url)
        tmp = f"{path}.part-{secrets.token_hex(4)}"
        with map_os_exceptions(url):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                sink = Sink(tmp)
                with source.reader() as reader:
                    sink.copy_from(reader, progress=progress)  # type: ignore[arg-type]
                sink.close()
                sha = source.verify()  # raises before anything becomes visible
                with open(tmp + SIDECAR, "w") as f:
                    f.write(sha)
                # the object, then its sum: a failure between leaves no sum (not a wrong one)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path + SIDECAR)
                os.replace(tmp, path)
                os.replace(tmp + SIDECAR, path + SIDECAR)
            except BaseException:
                for leftover in (tmp, tmp + SIDECAR):
                    with contextlib.suppress(OSError):
                        os.unlink(leftover)
                raise

    def stat(self, url: URL) -> Stat:
        path = self._path(url)
        with map_os_exceptions(url):
            st = os.stat(path)
        if stat_mod.S_ISDIR(st.st_mode):
            return Stat(mtime=st.st_mtime, is_dir=True)
        sha = self.checksum(url)
        return Stat(size=st.st_size, mtime=st.st_mtime, checksums={"sha256": sha} if sha else {})

    def checksum(self, url: URL) -> str | None:
        try:
            with open(self._path(url) + SIDECAR) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def mkdir(self, url: URL) -> None:
        with map_os_exceptions(url):
            os.makedirs(self._path(url), exist_ok=True)

    def remove(self, url: URL, recursive: bool = False) -> None:
        path = self._path(url)
        with map_os_exceptions(url):
            if os.path.isdir(path):
                if recursive:
                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
                return
            for p in (path, path + SIDECAR):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
