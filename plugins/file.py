"""Local files: ``file://`` (and plain paths), ``symlink://`` and ``moveto://``.

``file`` reads with reused buffers and hashes on a second thread
(:mod:`._pump`). ``symlink`` and ``moveto`` destinations are made by the
engine with :func:`make_symlink` and :func:`move`, both atomic (a link or file
under a temporary name, then ``rename``).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
from collections.abc import Callable, Iterator
from stat import S_ISDIR

from ._pump import FdReader
from .errors import (
    IncompleteTransfer,
    NotFound,
    PermanentError,
    PermissionDenied,
    TransferError,
    TransientError,
)
from .protocol import Protocol, Sink, Source, Stat
from .url import URL

__all__ = [
    "FileProtocol",
    "IsDirectory",
    "copy_tree",
    "make_symlink",
    "map_os_exceptions",
    "move",
    "on_network_fs",
    "os_error",
    "part_name",
]



_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
_TRANSIENT = {errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY}


def os_error(exc: OSError, url: URL | str, what: str, *, path: str | None = None) -> TransferError:
    """The ferry error for ``exc``, naming the path (``path``, else the one the error
    carries, else ``url``) and the cause."""
    cause = exc.strerror or str(exc)
    where = path or exc.filename or str(url)
    msg = f"cannot {what} {where}: {cause}"
    if exc.errno == errno.ENOENT:
        return NotFound(msg, url=str(url), plugin="file")
    if exc.errno in _PERMISSION:
        return PermissionDenied(msg, url=str(url), plugin="file")
    if exc.errno in _TRANSIENT:
        return TransientError(msg, url=str(url), plugin="file")
    return PermanentError(msg, url=str(url), plugin="file")


@contextlib.contextmanager
def map_os_exceptions(url: URL | str, what: str) -> Iterator[None]:
    """Turn OSError into the ferry error tree, naming the path and the cause."""
    try:
        yield
    except TransferError:
        raise
    except OSError as exc:
        raise os_error(exc, url, what) from exc


_PART_TAG = os.urandom(3).hex()  # this process's, so two hosts on one file system differ
_part_numbers = itertools.count()


def part_name(path: str) -> str:
    """A unique temporary name beside ``path``, renamed onto it on success.

    Unique per process (a random tag drawn once, the pid, a counter), without
    a system call per file.
    """
    return f"{path}.ferry-part-{_PART_TAG}{os.getpid():x}-{next(_part_numbers)}"


class IsDirectory(PermanentError):
    """A ``file://`` source that is a directory: the engine copies it as a tree
    (:func:`copy_tree`) where the destination is local, and fails otherwise."""


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class FileProtocol(Protocol):
    """Local files. Also serves symlink:// and moveto:// reads (their path is a file)."""

    name = "file"
    schemes = ("file", "symlink", "moveto")

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        path = url.local_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                before = os.fstat(fd)
                if S_ISDIR(before.st_mode):
                    raise IsDirectory(f"cannot read {path}: is a directory", url=str(url))
                sink.set_size(before.st_size)
                if sink.offset:
                    os.lseek(fd, sink.offset, os.SEEK_SET)
                # no further than the size seen now: a file that grows while it is
                # read fails the check below instead of keeping the copy going
                sink.copy_from(
                    FdReader(fd),  # type: ignore[arg-type]
                    progress=progress,
                    size=before.st_size - sink.offset,
                )
                after = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise os_error(exc, url, "read") from exc
        if (
            sink.offset != before.st_size
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
        ):
            raise IncompleteTransfer(
                f"{path} changed while it was read (size {before.st_size} -> {after.st_size},"
                f" {sink.offset} bytes read)",
                url=str(url),
                plugin="file",
            )

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        path = url.local_path
        with map_os_exceptions(url, "write"):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            tmp = part_name(path)
            try:
                with source.reader() as reader:
                    sink = Sink(tmp)
                    try:
                        sink.copy_from(reader, progress=progress, size=source.size)  # type: ignore[arg-type]
                    finally:
                        sink.close()
                source.verify()
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise

    def stat(self, url: URL) -> Stat:
        with map_os_exceptions(url, "stat"):
            st = os.stat(url.local_path)
        return Stat(size=st.st_size, mtime=st.st_mtime, is_dir=os.path.isdir(url.local_path))

    def mkdir(self, url: URL) -> None:
        with map_os_exceptions(url, "create directory"):
            os.makedirs(url.local_path, mode=0o755, exist_ok=True)

    def remove(self, url: URL, recursive: bool = False) -> None:
        path = url.local_path
        with map_os_exceptions(url, "remove"):
            if os.path.isdir(path) and not os.path.islink(path):
                if recursive:
                    import shutil

                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def make_symlink(target: str, link_path: str, *, verify_source: bool = True) -> None:
    """``ln -f -s target link_path``, atomically (link under a temp name, then rename)."""
    with map_os_exceptions(f"symlink://{link_path}", "symlink"):
        if verify_source and not os.path.exists(target):
            raise NotFound(f"cannot link to {target}: no such file", url=f"file://{target}")
        os.makedirs(os.path.dirname(link_path) or ".", exist_ok=True)
        if os.path.islink(link_path) and os.readlink(link_path) == target:
            return
        if _same_file(target, link_path):
            # the destination already is the source (the same path, or a link to it):
            # replacing it with a link to itself would lose the file
            return
        tmp = part_name(link_path)
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link_path)
        except BaseException:
            _unlink_quietly(tmp)
            raise


def copy_tree(src: str, dest: str, progress: Callable[[int], None] | None = None) -> int:
    """``cp -R -L src dest``, all or nothing: the bytes copied.

    The tree is copied under a temporary name beside ``dest`` (symlinks
    followed and modes kept, as ``cp -R -L`` does; the files get new times) and
    renamed into place; a directory already at ``dest`` is replaced, as a file
    would be.
    After a failure nothing of the copy is left, and ``dest`` is as it was.
    """
    import shutil

    copied = [0]

    def copy_one(s: str, d: str) -> None:
        try:
            shutil.copy(s, d)
        except OSError as exc:  # not left to copytree, which would go on copying the rest
            raise os_error(exc, f"file://{s}", "copy") from exc
        n = os.path.getsize(d)
        copied[0] += n
        if progress is not None:
            progress(n)

    with map_os_exceptions(f"file://{dest}", "copy directory to"):
        if os.path.lexists(dest) and not os.path.isdir(dest):
            raise PermanentError(
                f"cannot copy directory {src} onto {dest}: it is not a directory",
                url=f"file://{dest}",
            )
        real_src = os.path.realpath(src)
        if os.path.realpath(dest).startswith(real_src.rstrip("/") + "/"):
            raise PermanentError(
                f"cannot copy directory {src} into itself ({dest})", url=f"file://{dest}"
            )
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        tmp = part_name(dest)
        try:
            shutil.copytree(src, tmp, symlinks=False, copy_function=copy_one)
            if os.path.isdir(dest):
                old = part_name(dest)
                os.rename(dest, old)
                try:
                    os.rename(tmp, dest)
                except BaseException:
                    os.rename(old, dest)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, dest)
        except shutil.Error as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            cause = exc.args[0][0][2] if exc.args and exc.args[0] else str(exc)
            msg = f"cannot copy directory {src}: {cause}"
            raise PermanentError(msg, url=f"file://{src}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return copied[0]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing (or a dangling link)
        return False


def move(src: str, dst: str) -> None:
    """``mv src dst``: a rename when both are on one filesystem, else copy then remove."""
    with map_os_exceptions(f"moveto://{dst}", "move to"):
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        try:
            os.replace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            tmp = part_name(dst)
            try:
                import shutil

                shutil.copy2(src, tmp)
                os.replace(tmp, dst)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            os.unlink(src)


#: file system types where every open, stat and link is a round trip to a server
#: (``fuse.*`` counts too: sshfs, s3fs, cvmfs, ...)
NETWORK_FS_TYPES = frozenset(
    {
        "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph",
        "glusterfs", "afs", "9p", "panfs", "pvfs2", "orangefs", "wekafs", "gfs2",
        "ocfs2", "davfs", "fuse",
    }
)  # fmt: skip


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """``(mount point, file system type)`` of each line of ``/proc/self/mountinfo``,
    the deepest mount points first."""
    mounts = []
    for line in text.splitlines():
        fields, sep, rest = line.partition(" - ")
        parts = fields.split()
        if not sep or len(parts) < 5 or not rest.split():
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        mounts.append((point, rest.split()[0]))
    mounts.sort(key=lambda m: len(m[0]), reverse=True)
    return mounts


def on_network_fs(paths: Iterator[str] | list[str], mountinfo: str | None = None) -> bool:
    """Whether any of ``paths`` lies on a network (or FUSE) file system. False when
    ``/proc/self/mountinfo`` cannot be read (not Linux)."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        except OSError:
            return False
    mounts = parse_mountinfo(mountinfo)
    for path in paths:
        real = os.path.realpath(path)
        for point, fstype in mounts:
            if real == point or real.startswith(point.rstrip("/") + "/"):
                if fstype in NETWORK_FS_TYPES or fstype.startswith("fuse."):
                    return True
                break
    return False
