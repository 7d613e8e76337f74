"""Copy a stream to a file while hashing it, on two cores.

sha256 is the floor of any verified copy, so hashing must overlap the I/O:
this thread reads into a ring of reused buffers and writes them, a second
thread hashes them (hashlib and os read/write release the GIL on large
buffers). Small inputs are hashed inline, a thread would cost more than it
saves; their buffer is one per thread, reused from file to file (allocating
and zero-filling a buffer for every 16 KiB file costs more than copying it).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["FdReader", "HashRing", "pump"]

#: bytes per read and write. The buffer is copied twice in the kernel (page
#: cache -> buffer -> page cache); 256 KiB stays in a core's L2 cache between the
#: two, 1 MiB does not: on the 2-core reference machine (512 KiB L2 per core) a
#: 1 GiB copy costs ~0.7 s of system time with 256 KiB buffers, ~2 s with 1 MiB.
BUFSIZE = 256 << 10
NBUFS = 4
#: inputs up to this size (when known) are hashed inline: a thread costs more
INLINE_MAX = 1 << 20

_local = threading.local()


def _thread_buffer(size: int) -> bytearray:
    """This thread's reusable first buffer (a pump returns only when done with it)."""
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) != size:
        buf = bytearray(size)
        _local.buf = buf
    return buf


class FdReader:
    """``readinto`` on a raw file descriptor (no ``FileIO`` object: its ``fstat``
    and set-up cost more than reading a small file)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def readinto(self, buf: Any) -> int:
        return os.readv(self.fd, (buf,))


def _write_all(write: Callable[[memoryview], int], view: memoryview) -> None:
    n = write(view)
    while n < len(view):
        n += write(view[n:])


def pump(
    src: Any,
    write: Callable[[memoryview], int],
    hasher: Any,
    *,
    progress: Callable[[int], None] | None = None,
    bufsize: int = BUFSIZE,
    size: int | None = None,
) -> int:
    """Copy ``src`` (anything with ``readinto``) through ``write`` (``os.write`` on a
    descriptor, say) until EOF, feeding ``hasher``; return the byte count.

    With ``size`` (the length a stat announced) at most that many bytes are
    read and no read is spent on finding EOF: a source that grows meanwhile
    cannot keep the copy going, and the caller sees the change by comparing
    stats (or counts) before and after.
    """
    first = _thread_buffer(bufsize)
    view = memoryview(first)
    chunk = _chunker(bufsize, size)
    want = chunk(0)
    n = src.readinto(view[:want]) if want else 0
    if not n:
        return 0
    # small, or (size unknown) a short first read: likely the whole input
    small = size <= INLINE_MAX if size is not None else n < bufsize
    if small:  # hash inline, no thread
        total = 0
        while n:
            hasher.update(view[:n])
            _write_all(write, view[:n])
            total += n
            if progress:
                progress(n)
            want = chunk(total)
            n = src.readinto(view[:want]) if want else 0
        return total
    return _pump_threaded(src, write, hasher, first, n, progress, chunk)


def _chunker(bufsize: int, size: int | None) -> Callable[[int], int]:
    """How many bytes to read next, given how many were read (0: stop)."""
    if size is None:
        return lambda done: bufsize
    return lambda done: max(0, min(bufsize, size - done))


def _pump_threaded(
    src: Any,
    write: Callable[[memoryview], int],
    hasher: Any,
    first: bytearray,
    n: int,
    progress: Callable[[int], None] | None,
    chunk: Callable[[int], int],
) -> int:
    ring = HashRing(hasher, len(first), first=first)
    total = 0
    try:
        while n:
            _write_all(write, ring.submit(n))
            total += n
            if progress:
                progress(n)
            want = chunk(total)
            if not want:
                break
            n = src.readinto(ring.advance()[:want])
    finally:
        ring.close()
    return total


class HashRing:
    """A ring of reused buffers that a second thread hashes, in order.

    The producer fills :attr:`current`, hands its first ``n`` bytes over with
    :meth:`submit` (it may go on reading them, e.g. to write them out), then
    takes the next buffer with :meth:`advance`, which waits until the hasher
    is done with it. :meth:`close` waits for every submitted byte to be hashed
    and stops the thread; it re-raises a failure of the hasher.
    """

    def __init__(
        self,
        hasher: Any,
        bufsize: int = BUFSIZE,
        nbufs: int = NBUFS,
        first: bytearray | None = None,
    ) -> None:
        self._hasher = hasher
        head = first if first is not None else bytearray(bufsize)
        self._bufs = [memoryview(head)] + [memoryview(bytearray(bufsize)) for _ in range(nbufs - 1)]
        self._free = [threading.Event() for _ in range(nbufs)]
        for ev in self._free[1:]:
            ev.set()
        self._k = 0
        self._work: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._hash_loop, name="ferry-sha256", daemon=True)
        self._thread.start()

    @property
    def current(self) -> memoryview:
        return self._bufs[self._k]

    def submit(self, n: int) -> memoryview:
        """Hash the first ``n`` bytes of the current buffer; return them."""
        self._work.put((self._k, n))
        return self._bufs[self._k][:n]

    def advance(self) -> memoryview:
        """The next buffer, once the hasher has finished with it."""
        self._k = (self._k + 1) % len(self._bufs)
        self._free[self._k].wait()
        self._free[self._k].clear()
        return self._bufs[self._k]

    def close(self) -> None:
        if self._thread.is_alive():
            self._work.put(None)
            self._thread.join()
        if self._failure:
            raise self._failure[0]

    def _hash_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            k, size = item
            try:
                self._hasher.update(self._bufs[k][:size])
            except BaseException as exc:  # pragma: no cover - hashlib does not fail
                self._failure.append(exc)
            finally:
                self._free[k].set()
