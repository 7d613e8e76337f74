"""Scan batches of a text in forked processes; read their results back, in order.

The reader's strict scan (:mod:`ferry.planner.strictread`) is pure: it reads
the text and returns records. For a large workflow :mod:`ferry.planner.pegasus`
runs it in forked processes while it applies the records to the model: worker
``k`` of ``n`` scans batches ``k``, ``k + n``, ``k + 2n``, ... (the text is
shared copy-on-write and only read) and writes each batch's records, marshalled,
to its own pipe; this process reads batch ``i`` from worker ``i % n``. A full
pipe makes a worker wait, so at most a pipe's worth of records is ever ahead.

No pool: ``multiprocessing.Pool`` spent ~1.6 s of this process's CPU in its
helper threads (and pickled every result once more) for 1M jobs.
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = ["fork_scanners", "results", "stop"]

#: a result's header: status (b"O" records, b"E" an error message) and length
_HEAD = struct.Struct("<cQ")

Scanner = Callable[[str, int, int], list]
Workers = list[tuple[int, BinaryIO]]


def fork_scanners(
    text: str, spans: list[tuple[int, int]], scanner: Scanner, n: int
) -> Workers | None:
    """Fork ``n`` workers that scan ``spans`` between them; None if fork fails."""
    procs: Workers = []
    try:
        for k in range(n):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                os.close(r)
                for _pid, f in procs:
                    f.close()
                _work(text, spans[k::n], scanner, w)
            os.close(w)
            procs.append((pid, os.fdopen(r, "rb")))
    except OSError:
        stop(procs, kill=True)
        return None
    return procs


def _work(text: str, spans: list[tuple[int, int]], scanner: Scanner, fd: int) -> None:
    """A worker's life: scan, write, and leave without running the parent's clean-up."""
    code = 0  # pragma: no cover - runs in the child
    try:  # pragma: no cover
        with os.fdopen(fd, "wb") as out:
            try:
                for s, e in spans:
                    blob = marshal.dumps(scanner(text, s, e))
                    out.write(_HEAD.pack(b"O", len(blob)))
                    out.write(blob)
            except BrokenPipeError:
                code = 1  # the reader has gone
            except BaseException as exc:  # noqa: BLE001 - reported to the reader
                code = 1
                msg = f"{type(exc).__name__}: {exc}".encode()[:4000]
                out.write(_HEAD.pack(b"E", len(msg)))
                out.write(msg)
    except BaseException:  # noqa: BLE001, S110
        code = 1
    finally:  # pragma: no cover
        os._exit(code)


def results(procs: Workers, count: int) -> Iterator[list]:
    """The records of batches ``0 .. count-1``, in order."""
    n = len(procs)
    for i in range(count):
        pid, f = procs[i % n]
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            raise RuntimeError(f"a reader process (pid {pid}) ended before its batch {i}")
        status, length = _HEAD.unpack(head)
        data = f.read(length)
        if status != b"O" or len(data) < length:
            why = data.decode(errors="replace") if status == b"E" else "a short result"
            raise RuntimeError(f"scanning batch {i} in a reader process failed: {why}")
        yield marshal.loads(data)


def stop(procs: Workers, *, kill: bool) -> None:
    """Close the pipes and reap the workers (killed first if they may still run)."""
    for pid, f in procs:
        f.close()
        if kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
