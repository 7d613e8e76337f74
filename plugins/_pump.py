"""Copy a stream to a file while hashing it, on two cores.

sha256 is the floor of any verified copy, so hashing must overlap the I/O:
this thread reads into a ring of reused buffers and writes them, a second
thread hashes them (hashlib and os read/write release the GIL on large
buffers). Small inputs are hashed inline, a thread would cost more than it
saves; their buffer is one per thread, reused from file to file (allocating
and zero-filling 1 MiB for every 16 KiB file costs more than copying it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

__all__ = ["pump"]

BUFSIZE = 1 << 20
NBUFS = 4

_local = threading.local()


def _thread_buffer(size: int) -> bytearray:
    """This thread's reusable first buffer (a pump returns only when done with it)."""
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) != size:
        buf = bytearray(size)
        _local.buf = buf
    return buf


def _write_all(dst: BinaryIO, view: memoryview) -> None:
    n = 0
    while n < len(view):
        n += dst.write(view[n:])  # type: ignore[arg-type]


def pump(
    src: BinaryIO,
    dst: BinaryIO,
    hasher: Any,
    *,
    progress: Callable[[int], None] | None = None,
    bufsize: int = BUFSIZE,
) -> int:
    """Copy ``src`` to ``dst`` until EOF, feeding ``hasher``; return the byte count."""
    first = _thread_buffer(bufsize)
    n = src.readinto(first)  # type: ignore[attr-defined]
    if not n:
        return 0
    if n < bufsize:
        # likely the whole input: hash inline, no thread
        total = 0
        view = memoryview(first)
        while n:
            hasher.update(view[:n])
            _write_all(dst, view[:n])
            total += n
            if progress:
                progress(n)
            n = src.readinto(first)  # type: ignore[attr-defined]
        return total
    return _pump_threaded(src, dst, hasher, first, n, progress, bufsize)


def _pump_threaded(
    src: BinaryIO,
    dst: BinaryIO,
    hasher: Any,
    first: bytearray,
    n: int,
    progress: Callable[[int], None] | None,
    bufsize: int,
) -> int:
    bufs = [memoryview(first)] + [memoryview(bytearray(bufsize)) for _ in range(NBUFS - 1)]
    hashed = [threading.Event() for _ in range(NBUFS)]
    for ev in hashed:
        ev.set()
    work: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
    failure: list[BaseException] = []

    def hash_loop() -> None:
        while True:
            item = work.get()
            if item is None:
                return
            k, size = item
            try:
                hasher.update(bufs[k][:size])
            except BaseException as exc:  # pragma: no cover - hashlib does not fail
                failure.append(exc)
            finally:
                hashed[k].set()

    thread = threading.Thread(target=hash_loop, name="ferry-sha256", daemon=True)
    thread.start()
    total = 0
    k = 0
    try:
        hashed[0].clear()
        while True:
            work.put((k, n))
            _write_all(dst, bufs[k][:n])
            total += n
            if progress:
                progress(n)
            k = (k + 1) % NBUFS
            hashed[k].wait()
            hashed[k].clear()
            n = src.readinto(bufs[k])  # type: ignore[attr-defined]
            if not n:
                hashed[k].set()
                break
    finally:
        work.put(None)
        thread.join()
    if failure:
        raise failure[0]
    return total
