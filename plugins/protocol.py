"""What a protocol plugin implements: a small class per protocol.

A plugin's hook (:func:`ferry.plugins.spec.FerrySpec.ferry_protocols`) returns
:class:`ProtocolInfo` records. They name the schemes and capabilities and
*where* the implementation lives (``"package.module:Class"``), so listing
plugins never imports a client library. The engine imports and builds the
:class:`Protocol` only when a URL of its scheme shows up.

Bytes move through two engine-owned objects:

* :class:`Sink` - where a ``get`` writes. It hashes (sha256) while it writes,
  knows how many bytes it holds (``offset``, for resuming), and is committed
  by the engine only after the sum is checked.
* :class:`Source` - what a ``put`` reads. Reading it hashes the bytes; a
  plugin calls :meth:`Source.verify` just before it makes the upload visible
  (rename, MOVE, complete-multipart) so a mismatch never becomes visible.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from stat import S_ISDIR
from typing import TYPE_CHECKING, BinaryIO, ClassVar

import msgspec

from ._pump import pump as _pump
from .errors import IncompleteTransfer, IntegrityError, UnsupportedScheme

if TYPE_CHECKING:
    from .credentials import Credentials
    from .url import URL

__all__ = [
    "Capability",
    "Protocol",
    "ProtocolContext",
    "ProtocolInfo",
    "Sink",
    "Source",
    "Stat",
    "format_sha256",
]

CHUNK = 1 << 20  # 1 MiB


class Capability(str, enum.Enum):
    """What a protocol can do. The engine plans routes from these."""

    GET = "get"
    PUT = "put"
    COPY = "third-party-copy"
    STAT = "stat"
    MKDIR = "mkdir"
    REMOVE = "remove"
    CHECKSUM = "checksum"
    RESUME = "resume"

    def __str__(self) -> str:
        return self.value


# Records are msgspec Structs rather than dataclasses: a dataclass costs about a
# millisecond to create at import (its methods are generated with exec), and
# the worker pays its imports on every job.


class Stat(msgspec.Struct, frozen=True):
    """What ``stat`` knows about an object. ``checksums`` maps ``"sha256"`` to hex."""

    size: int | None = None
    mtime: float | None = None
    is_dir: bool = False
    checksums: dict[str, str] = {}


class ProtocolInfo(msgspec.Struct, frozen=True):
    """A protocol as a plugin declares it, without importing its library.

    ``implementation`` is ``"module:Class"``; ``requires`` lists the modules the
    implementation imports (checked with ``importlib.util.find_spec``, which
    does not import them) and ``extra`` the pip extra that brings them.
    """

    name: str
    schemes: tuple[str, ...]
    capabilities: frozenset[Capability]
    implementation: str
    requires: tuple[str, ...] = ()
    extra: str | None = None
    description: str = ""


#: the site label (``-`` as ``_``) of the end a protocol call serves, set by the engine
#: around each call: the source's site for a download, the destination's for an
#: upload, the target's for mkdir and remove (None: no site, e.g. a plugin's own test)
current_site: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ferry_site", default=None
)


def site_variable(name: str) -> str | None:
    """``$<name>_<site>`` for :data:`current_site`, as pegasus-transfer reads per-site
    credentials (``SSH_PRIVATE_KEY_<site>``, ``PEGASUS_CREDENTIALS_<site>``); None
    when there is no current site or the variable is not set."""
    site = current_site.get()
    return (os.environ.get(f"{name}_{site}") or None) if site else None


class ProtocolContext:
    """What the engine hands a protocol when it builds one."""

    def __init__(
        self,
        concurrency: int = 8,
        timeout: float = 60.0,
        credentials_file: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        #: transfers that may run at once (size connection pools by it)
        self.concurrency = concurrency
        #: per-request timeout in seconds for network protocols
        self.timeout = timeout
        #: the credentials file; None: $FERRY_CREDENTIALS, $PEGASUS_CREDENTIALS, defaults
        self.credentials_file = credentials_file
        #: free-form per-plugin settings from the command line or job spec
        self.settings: dict[str, str] = settings if settings is not None else {}
        self._credentials: Credentials | None = None
        self._site_credentials: dict[str, Credentials] = {}

    def __repr__(self) -> str:  # never the credentials
        return (
            f"ProtocolContext(concurrency={self.concurrency}, timeout={self.timeout},"
            f" credentials_file={self.credentials_file!r}, settings={self.settings!r})"
        )

    @property
    def credentials(self) -> Credentials:
        """The credentials file's sections (loaded on first use; empty when there is none)."""
        if self._credentials is None:
            from .credentials import load_credentials

            self._credentials = load_credentials(self.credentials_file)
        return self._credentials

    def site_credentials(self) -> Credentials:
        """The file ``$PEGASUS_CREDENTIALS_<site>`` names for the current site (as
        pegasus-transfer reads it for S3), else :attr:`credentials`."""
        path = site_variable("PEGASUS_CREDENTIALS")
        if path is None:
            return self.credentials
        creds = self._site_credentials.get(path)
        if creds is None:
            from .credentials import load_credentials

            creds = self._site_credentials[path] = load_credentials(path)
        return creds


def format_sha256(hexdigest: str) -> str:
    return f"sha256:{hexdigest}"


#: errors of an ``O_TMPFILE`` open that mean "not here": the file system (or
#: kernel) has no unnamed files; a named part file is used instead
_NO_TMPFILE_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOSYS})
#: errors of the commit's linkat that mean "not here" rather than "cannot write":
#: the bytes are then copied to a named part file
_LINK_REFUSED_ERRNOS = frozenset(
    {errno.EPERM, errno.EXDEV, errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}
)
#: directories (by device) where O_TMPFILE failed once: not tried again
_no_tmpfile_devices: set[int] = set()


class Sink:
    """An open local file that a ``get`` writes into, hashing as it goes.

    The engine creates it beside the destination and commits it only after
    the size and sha256 are checked (:meth:`beside`, :meth:`commit`).
    ``offset`` is the number of bytes already held: a protocol that resumes
    asks the server for the rest from there (the hash simply continues).

    ``path`` names the file while it is written: a part file beside the
    destination, or, for an unnamed file, ``/proc/self/fd/N`` (which opens the
    same file while the sink is open).
    """

    def __init__(self, path: str, *, expected_size: int | None = None) -> None:
        # a raw descriptor, no file object: os.fdopen's fstat and FileIO set-up
        # cost a quarter of copying a small file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._start(path, fd, unnamed=False, part=path)
        self.expected_size = expected_size

    def _start(self, path: str, fd: int, *, unnamed: bool, part: str) -> None:
        self.path = path
        self.expected_size: int | None = None
        self._hash = hashlib.sha256()
        self._fd = fd
        self._unnamed = unnamed
        self._part = part  # the named file an unnamed one falls back to
        self._closed = False
        self.offset = 0
        self.restarts = 0
        #: the destination's file type from the transfer list (pegasus-transfer's
        #: ``dest_urls[].type``: ``docker``, ``singularity``, ...), if any
        self.type: str | None = None

    @property
    def directory(self) -> str:
        """The directory the file will be named in (where a protocol may keep scratch)."""
        return os.path.dirname(self._part) or "."

    @classmethod
    def beside(cls, dest: str, part: str) -> Sink:
        """A sink for ``dest``: an unnamed file in its directory when the file system
        has them (``O_TMPFILE``), else the named part file ``part``.

        An unnamed file gets its name only in :meth:`commit`: a failure, and even
        a crash or ``kill -9``, leaves nothing behind, and the commit costs one
        ``linkat`` instead of a create plus a rename. A missing directory raises
        ``FileNotFoundError`` as a named file would.
        """
        directory = os.path.dirname(dest) or "."
        if _tmpfile_possible(directory):
            try:
                # read-write: if naming it is refused, commit() copies it out
                fd = os.open(directory, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE_ERRNOS:
                    raise
                with contextlib.suppress(OSError):
                    _no_tmpfile_devices.add(os.stat(directory).st_dev)
            else:
                sink = cls.__new__(cls)
                sink._start(f"/proc/self/fd/{fd}", fd, unnamed=True, part=part)
                return sink
        return cls(part)

    def commit(self, dest: str, *, executable: bool = False) -> None:
        """Give the file its final name ``dest`` (replacing what is there), atomically."""
        if not self._unnamed:
            self.close()
            if executable:
                os.chmod(self.path, 0o755)
            os.replace(self.path, dest)
            return
        if executable:
            os.fchmod(self._fd, 0o755)
        # linkat(AT_SYMLINK_FOLLOW) on the descriptor's /proc link; the dir fd
        # argument only makes os.link call linkat (an absolute path ignores it)
        proc = f"/proc/self/fd/{self._fd}"
        try:
            try:
                os.link(proc, dest, src_dir_fd=self._fd, follow_symlinks=True)
                return
            except FileExistsError:
                pass  # a file is there already: name ours beside it, then rename over it
            part = self._part
            os.link(proc, part, src_dir_fd=self._fd, follow_symlinks=True)
            try:
                os.replace(part, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(part)
                raise
        except OSError as exc:
            if exc.errno not in _LINK_REFUSED_ERRNOS:
                raise
            self._copy_out(dest, 0o755 if executable else 0o644)
        finally:
            self.close()

    def _copy_out(self, dest: str, mode: int) -> None:
        """Naming the unnamed file was refused (a sandbox without /proc, a file system
        that makes unnamed files but will not link them): copy its bytes into the
        named part file and rename that; later sinks on this device use part files."""
        with contextlib.suppress(OSError):
            _no_tmpfile_devices.add(os.fstat(self._fd).st_dev)
        part = self._part
        out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            try:
                offset = 0
                while chunk := os.pread(self._fd, 1 << 20, offset):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
                    offset += len(chunk)
                os.fchmod(out, mode)
            finally:
                os.close(out)
            os.replace(part, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise

    @property
    def named(self) -> str | None:
        """The part file's path while the bytes are in a named file (None: unnamed)."""
        return None if self._unnamed else self.path

    def discard(self) -> None:
        """Close and forget the file (a no-op after :meth:`commit`)."""
        if self._closed:
            return
        self.close()
        if not self._unnamed:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def set_size(self, size: int | None) -> None:
        """Tell the sink how many bytes to expect (from Content-Length, stat, ...)."""
        if size is not None:
            self.expected_size = size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self._hash.update(view)
        n = 0
        while n < len(view):
            n += os.write(self._fd, view[n:])
        self.offset += len(view)

    def _write(self, view: memoryview) -> int:
        return os.write(self._fd, view)

    def fileno(self) -> int:
        """The file's descriptor, for a protocol that writes ranges with ``os.pwrite``."""
        return self._fd

    def absorb(self, data: bytes | bytearray | memoryview) -> None:
        """Account for bytes already written at ``offset`` (with ``os.pwrite`` on
        :meth:`fileno`): hash them and move ``offset`` and the file position past them."""
        self._hash.update(data)
        self.offset += len(data)
        os.lseek(self._fd, self.offset, os.SEEK_SET)

    def reset(self) -> None:
        """Start over from byte 0 (a protocol that could not resume)."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        self._hash = hashlib.sha256()
        self.offset = 0
        self.restarts += 1

    def copy_from(
        self,
        src: BinaryIO,
        progress: Callable[[int], None] | None = None,
        *,
        size: int | None = None,
    ) -> None:
        """Fast path for local sources: pump ``src`` (anything with ``readinto``)
        into the sink.

        Reads into reused buffers and hashes in a second thread while this one
        writes, so a 2-core node hashes and copies at the same time. With
        ``size``, reads at most that many bytes (the length a stat announced)
        instead of reading until EOF.
        """
        self.offset += _pump(src, self._write, self._hash, progress=progress, size=size)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def fsync(self) -> None:
        os.fsync(self._fd)


def _tmpfile_possible(directory: str) -> bool:
    if not _PROC_FD or not hasattr(os, "O_TMPFILE"):
        return False
    if not _no_tmpfile_devices:
        return True
    try:
        return os.stat(directory).st_dev not in _no_tmpfile_devices
    except OSError:
        return True  # the open below reports it


#: the commit links through /proc/self/fd; without /proc, named part files
_PROC_FD = os.path.isdir("/proc/self/fd")


class Source:
    """A local file that a ``put`` reads; reading it computes its sha256.

    ``size`` is known before the first byte is read. A protocol either reads
    it as a file object (:meth:`reader`), or in chunks (:meth:`chunks`), then
    calls :meth:`verify` right before it makes the object visible.
    """

    def __init__(self, path: str, *, expected_sha256: str | None = None) -> None:
        self.path = path
        self.expected_sha256 = expected_sha256
        st = os.stat(path)
        if S_ISDIR(st.st_mode):  # only file -> file copies take a directory (cp -R)
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file to upload", path)
        self.size = st.st_size
        self._mtime_ns = st.st_mtime_ns
        self._hash = hashlib.sha256()
        self.bytes_read = 0

    def reset(self) -> None:
        """Forget what was read (the protocol starts the upload over)."""
        self._hash = hashlib.sha256()
        self.bytes_read = 0

    def reader(self) -> BinaryIO:
        """A file object whose reads are hashed; seeking back resets the hash."""
        return _HashingReader(self)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        self.reset()
        with open(self.path, "rb") as f:
            while True:
                data = f.read(size)
                if not data:
                    break
                self._account(data)
                yield data

    def _account(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.bytes_read += len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def changed(self) -> bool:
        """Whether the file is not as it was when this Source was made (size, mtime)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return st.st_size != self.size or st.st_mtime_ns != self._mtime_ns

    def verify(self) -> str:
        """Check what was read: the whole file, unchanged, with the expected sum.

        Returns the sha256 hex. Raises :class:`IncompleteTransfer` when the file
        changed while it was read, :class:`IntegrityError` on a sum mismatch.
        """
        if self.bytes_read == 0 and self.size:
            # a protocol bug rather than a changing file: the bytes went around the Source
            raise IncompleteTransfer(
                f"{self.path}: nothing was read through the upload's Source (a protocol"
                " must read the file with reader() or chunks())"
            )
        if self.bytes_read != self.size:
            raise IncompleteTransfer(
                f"{self.path}: read {self.bytes_read} bytes, expected {self.size}"
                " (file changed while it was read)"
            )
        actual = self._hash.hexdigest()
        st = os.stat(self.path)
        if st.st_size != self.size or st.st_mtime_ns != self._mtime_ns:
            raise IncompleteTransfer(f"{self.path}: file changed while it was read")
        if self.expected_sha256 and actual != self.expected_sha256:
            raise IntegrityError(
                f"{self.path}: sha256 {actual} does not match the expected {self.expected_sha256}",
                expected=self.expected_sha256,
                actual=actual,
            )
        return actual


class _HashingReader:
    """File object over a :class:`Source` that hashes what is read."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._f = open(source.path, "rb")  # noqa: SIM115
        source.reset()
        self.mode = "rb"
        self.name = source.path

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._source._account(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = self._f.readinto(buf)
        if n:
            self._source._account(memoryview(buf)[:n])
        return n or 0

    def seek(self, pos: int, whence: int = 0) -> int:
        new = self._f.seek(pos, whence)
        if new == 0:
            self._source.reset()
        elif new != self._source.bytes_read:
            # parallel parts would need a hash per part; read sequentially instead
            raise OSError("ferry Source reader supports sequential reads only")
        return new

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def __enter__(self) -> _HashingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._source.size


class Protocol:
    """Base class of a protocol implementation.

    Override what the :class:`ProtocolInfo` declares; everything else raises
    :class:`UnsupportedScheme`. Methods get parsed :class:`URL` objects and
    must raise the classes of :mod:`ferry.plugins.errors`, mapped once from the
    library's own exceptions. Implementations must be thread-safe: the engine
    calls one instance from many threads.
    """

    name: ClassVar[str] = ""
    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: ProtocolContext | None = None) -> None:
        self.context = context or ProtocolContext()

    def _unsupported(self, what: str, url: URL) -> UnsupportedScheme:
        return UnsupportedScheme(
            f"{self.name} cannot {what} {url.scheme}:// URLs", url=str(url), plugin=self.name
        )

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        """Write the object's bytes into ``sink``; resume from ``sink.offset`` if not 0."""
        raise self._unsupported("get", url)

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        """Store ``source`` at ``url``; call ``source.verify()`` before making it visible.

        Parent directories must be created as needed.
        """
        raise self._unsupported("put", url)

    def copy(self, src: URL, dst: URL, expected_sha256: str | None = None) -> Stat:
        """Third-party copy inside the service; return the new object's stat."""
        raise self._unsupported("copy", src)

    def stat(self, url: URL) -> Stat:
        raise self._unsupported("stat", url)

    def mkdir(self, url: URL) -> None:
        """Create the directory and its parents; an existing one is fine."""
        raise self._unsupported("mkdir", url)

    def remove(self, url: URL, recursive: bool = False) -> None:
        """Remove the object; a missing one is fine."""
        raise self._unsupported("remove", url)

    def checksum(self, url: URL) -> str | None:
        """The object's sha256 hex if the service knows it without reading, else None."""
        return None

    def close(self) -> None:
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
