"""One large HTTP download over several ranged streams, hashed in order.

A single loopback or WAN stream is bound by one receiving thread (and one TCP
window); rclone and aria2 open several. Here the file is cut into chunks
(8 MiB by default) that ``streams`` threads claim *in order*, each fetching
its chunk with a ``Range`` request on a keep-alive connection and writing it at
its offset in the sink's file: over plain http with ``splice`` (socket -> pipe
-> file, no copy through user space), over https with ``recv_into`` a reused
buffer and ``os.pwrite``. The calling thread hashes: it follows the contiguous
written prefix through a read-only ``mmap`` of the file, while the bytes are
still in the page cache, and feeds the sink's sha256 in file order
(:meth:`Sink.absorb`).

Why chunks claimed in order rather than one range per stream: the hash can
only advance over a contiguous prefix. With one quarter per stream, the prefix
grows at a quarter of the total rate and three quarters of the hashing is left
for the end (~0.7 s per GiB here); with chunks claimed in order it grows at
the total rate, and what is left at the end is at most one chunk per stream.

Why hash the file rather than the receive buffers: only the chunk at the
front of the prefix could be hashed from memory, the others would have to wait
in memory (streams x chunk) or be re-read anyway; and with ``splice`` there is
no receive buffer. Re-reading with ``preadv`` cost 0.44-0.56 s of system time
per GiB on the reference machine; hashing through the ``mmap`` costs about
what hashing a buffer does. In one process, per GiB with sha256: ``splice``
1.6-1.7 s of CPU, ``recv_into`` + ``pwrite`` 1.75-2.15 s, one stream 2.05-2.3 s.

Streams join when they help (``solo_rate``): the download starts on the first
connection alone, which goes on reading its body chunk after chunk. After the
first chunk, a stream slower than ``solo_rate`` bytes per second is bound by
latency or by a per-connection limit, and the other streams join it. A faster
one is bound by this machine's CPU (receiving, writing and the sha256 share
it), and more streams would take CPU from the hashing: on the 2-core reference
machine a 1 GiB file from nginx on 127.0.0.1 took 1.20 s on one stream, 1.42 s
on two and 1.54 s on four (medians of 5). Then only as many streams join as
there are CPUs beyond the two that the first stream and the hashing use.
``solo_rate = 0`` starts every stream at once.

Failures: a stream whose connection drops asks for the rest of its chunk again
(at most ``max_resumes`` times per chunk). Any other failure (an error status,
a server that answers a range with the whole body, the object changing under
us) stops every stream; the file is truncated to the hashed prefix, so the
sink's ``offset`` is exact and the caller can resume from it sequentially.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import mmap
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from ._httpwire import Body, ConnectFailed, Key, WirePool, wire_error
from .errors import IncompleteTransfer, TransferError, TransientError
from .protocol import Sink
from .url import URL

__all__ = ["RangedDownload", "RangeRefused"]

BUFSIZE = 256 << 10
#: bytes a stream's pipe holds (``F_SETPIPE_SZ``; the default 64 KiB if refused)
PIPE_SIZE = 1 << 20
#: at most this many bytes of the file are mapped at a time for hashing
MAP_WINDOW = 32 << 20
#: what splice into a file says on a file system that does not support it
_NO_SPLICE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV})


def spare_cpus() -> int:
    """CPUs this process may run on beyond the two a fast stream and the hashing use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, cpus - 2)


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


class RangeRefused(IncompleteTransfer):
    """The server answered a range request with something other than that range."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    if not value:
        return None, None
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None, None
    span, _, total_text = spec.partition("/")
    first_text = span.partition("-")[0].strip()
    first = int(first_text) if first_text.isdigit() else None
    total = int(total_text) if total_text.strip().isdigit() else None
    return first, total


class RangedDownload:
    """Fetch ``total`` bytes of ``target`` into ``sink`` over ``streams`` connections.

    ``first`` is the connection and response of a plain GET already answered
    with 200 and the whole body: its first chunk is read from it (then the
    connection is closed), so the decision to go parallel costs no extra
    request. ``headers`` are sent with every range request (auth and the
    like); ``status_error(response)`` maps an unexpected status.
    """

    def __init__(
        self,
        *,
        pool: WirePool,
        key: Key,
        target: str,
        headers: dict[str, str],
        url: URL,
        plugin: str,
        total: int,
        sink: Sink,
        streams: int,
        chunk: int,
        max_resumes: int,
        status_error: Callable[[http.client.HTTPResponse], TransferError],
        first: tuple[http.client.HTTPConnection, http.client.HTTPResponse],
        splice: bool = True,
        resumable: bool = True,
        solo_rate: int = 0,
    ) -> None:
        self.pool = pool
        self.key = key
        self.target = target
        self.headers = headers
        self.url = url
        self.plugin = plugin
        self.total = total
        self.sink = sink
        self.chunk = max(BUFSIZE, chunk)
        self.nchunks = -(-total // self.chunk)
        self.streams = max(1, min(streams, self.nchunks))
        #: the first stream stays alone if it is at least this fast (bytes/s); 0: never
        self.solo_rate = max(0, solo_rate)
        self.max_resumes = max_resumes
        self.status_error = status_error
        self.first = first
        #: the server announced ranges: a dropped first body may be resumed with one
        self.resumable = resumable
        #: move plain-HTTP bodies with ``splice`` (Linux) instead of ``recv_into`` + ``pwrite``
        self.splice = splice and hasattr(os, "splice")
        first_response = first[1]
        #: validators of the first response: every range must come from the same object
        self.validators = (
            first_response.getheader("ETag"),
            first_response.getheader("Last-Modified"),
        )
        #: bytes mapped at a time by the hashing thread: 4 chunks, at most MAP_WINDOW
        grain = mmap.ALLOCATIONGRANULARITY
        self.window = max(grain, min(MAP_WINDOW, 4 * self.chunk) // grain * grain)
        self.got = [0] * self.nchunks  # bytes written at the start of each chunk
        self._next = 1  # chunk 0 comes from the first response
        self._cond = threading.Condition()
        self._waiting = -1  # the chunk the hashing thread waits on
        self._failure: BaseException | None = None
        self._stop = False
        #: per stream, the connection it is using (shut down by :meth:`_fail`)
        self._live: list[set[http.client.HTTPConnection]] = []
        #: range requests sent (the tests read it)
        self.requests = 0
        #: the stream threads started (more join after the first chunk, see :meth:`_ramp`)
        self._threads: list[threading.Thread] = []
        #: whether streams beyond the first may still start (:meth:`_ramp`, :meth:`_join`)
        self._ramped = False
        self._started = time.monotonic()
        #: streams that ran (the tests read it)
        self.streams_used = 1

    # -- the streams ---------------------------------------------------------------

    def _claim(self) -> int | None:
        with self._cond:
            if self._stop or self._next >= self.nchunks:
                return None
            k = self._next
            self._next += 1
            return k

    def _claim_next(self, k: int) -> bool:
        """Claim chunk ``k`` for the first stream's body, if it is the next one and
        the stream is still alone (once others run, their claims interleave)."""
        with self._cond:
            if self._stop or self.streams_used > 1 or k >= self.nchunks or self._next != k:
                return False
            self._next = k + 1
            return True

    def _ramp(self) -> None:
        """After the first chunk: start the other streams if they will help."""
        if self._ramped:
            return
        elapsed = time.monotonic() - self._started
        rate = self.chunk / elapsed if elapsed > 0 else float("inf")
        extra = self.streams - 1
        if rate >= self.solo_rate:  # bound by the CPU: join only where CPUs are spare
            extra = min(extra, spare_cpus())
        self._spawn(extra)

    def _spawn(self, extra: int) -> None:
        with self._cond:
            if self._ramped:
                return
            self._ramped = True
            if self._stop or extra <= 0:
                return
            self.streams_used += extra
            for i in range(extra):
                t = threading.Thread(
                    target=self._stream, args=(False,), name=f"ferry-range-{i + 1}", daemon=True
                )
                self._threads.append(t)
                t.start()

    def _wrote(self, k: int, n: int) -> None:
        with self._cond:
            self.got[k] += n
            if self._waiting == k:
                self._cond.notify()

    def _stream(self, first: bool) -> None:
        buf = bytearray(BUFSIZE)
        view = memoryview(buf)
        live: set[http.client.HTTPConnection] = set()
        with self._cond:
            self._live.append(live)
        pipe = _pipe() if self.splice else None
        try:
            if first:
                conn, response = self.first
                live.add(conn)
                k = 0
                try:
                    # the first body, chunk after chunk, while this stream is alone
                    while True:
                        body = self._read(k, conn, response, view, pipe)
                        if self.got[k] < self._end(k) - k * self.chunk or self._stop:
                            break
                        if k == 0:
                            self._ramp()
                        if not self._claim_next(k + 1):
                            break
                        k += 1
                finally:
                    conn.close()  # the rest of its body, if any, is not wanted
                    live.clear()
                if self.got[k] < self._end(k) - k * self.chunk and not self._stop:
                    if not self.resumable:  # no Range to ask for the rest with
                        raise (
                            self._map(body.error)
                            if body.error
                            else IncompleteTransfer(
                                f"GET {self.url}: connection lost: body ended at byte"
                                f" {k * self.chunk + self.got[k]} of {self.total}",
                                url=str(self.url),
                                plugin=self.plugin,
                            )
                        )
                    self._fetch(k, view, live, pipe)
                    if k == 0:
                        self._ramp()
            while (k := self._claim()) is not None:
                self._fetch(k, view, live, pipe)
        except BaseException as exc:
            self._fail(exc)
        finally:
            if pipe is not None:
                os.close(pipe[0])
                os.close(pipe[1])

    def _end(self, k: int) -> int:
        return min(self.total, (k + 1) * self.chunk)

    def _read(
        self,
        k: int,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        view: memoryview,
        pipe: tuple[int, int] | None,
    ) -> Body:
        """Write the response's body at chunk ``k``'s next offset, up to the chunk's end."""
        if (
            pipe is not None
            and self.splice
            and type(conn.sock) is socket.socket
            and response.length is not None
        ):
            return self._splice(k, conn, response, pipe)
        body = Body(response)
        fd = self.sink.fileno()
        end = self._end(k)
        pos = k * self.chunk + self.got[k]
        while pos < end and not self._stop:
            n = body.readinto(view[: min(BUFSIZE, end - pos)])
            if not n:
                break
            m = 0
            while m < n:
                m += os.pwrite(fd, view[m:n], pos + m)
            pos += n
            self._wrote(k, n)
        return body

    def _splice(
        self,
        k: int,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        pipe: tuple[int, int],
    ) -> Body:
        """:meth:`_read` without a copy through user space: socket -> pipe -> file.

        What ``http.client`` has already buffered past the headers is taken from
        its reader first; the rest is moved by ``splice``. The response's
        ``length`` is kept up to date, so a body read to its end leaves the
        connection reusable.
        """
        body = Body(response)
        fd = self.sink.fileno()
        end = self._end(k)
        pos = k * self.chunk + self.got[k]
        assert response.length is not None and conn.sock is not None and response.fp is not None
        rpipe, wpipe = pipe
        sock = conn.sock.fileno()
        timeout = conn.sock.gettimeout()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        # network errors end the body (kept in body.error); file errors propagate
        data = b""
        if pos < end and response.length:
            try:
                pending = response.fp.peek()
                take = min(len(pending), end - pos, response.length)
                data = response.fp.read(take) if take else b""
            except (OSError, http.client.HTTPException) as exc:
                body.error = exc
                return body
        if data:
            m = 0
            while m < len(data):
                m += os.pwrite(fd, data[m:], pos + m)
            pos += len(data)
            response.length -= len(data)
            self._wrote(k, len(data))
        while pos < end and response.length and not self._stop:
            try:
                n = os.splice(sock, wpipe, min(PIPE_SIZE, end - pos, response.length))
            except BlockingIOError:  # sockets with a timeout are non-blocking
                if poller.poll(None if timeout is None else int(timeout * 1000)):
                    continue
                body.error = TimeoutError("timed out")
                break
            except OSError as exc:
                body.error = exc
                break
            if not n:
                break  # the server closed the connection
            self._pipe_to_file(rpipe, fd, n, pos)
            pos += n
            response.length -= n
            self._wrote(k, n)
        if response.length == 0:
            response.close()  # read to its end: the connection can serve the next range
        return body

    def _pipe_to_file(self, rpipe: int, fd: int, n: int, pos: int) -> None:
        """Move ``n`` bytes from the pipe to the file at ``pos``; through user space
        (and without splice from then on) on a file system that refuses splice."""
        m = 0
        while m < n:
            if self.splice:
                try:
                    m += os.splice(rpipe, fd, n - m, offset_dst=pos + m)
                    continue
                except OSError as exc:
                    if exc.errno not in _NO_SPLICE:
                        raise
                    self.splice = False  # the next bodies go through recv_into + pwrite
            data = os.read(rpipe, n - m)
            k = 0
            while k < len(data):
                k += os.pwrite(fd, data[k:], pos + m + k)
            m += len(data)

    def _fetch(
        self,
        k: int,
        view: memoryview,
        live: set[http.client.HTTPConnection],
        pipe: tuple[int, int] | None,
    ) -> None:
        """Chunk ``k`` from where it stands, resuming a dropped connection."""
        end = self._end(k)
        resumes = 0
        while not self._stop:
            start = k * self.chunk + self.got[k]
            if start >= end:
                return
            headers = {**self.headers, "Range": f"bytes={start}-{end - 1}"}
            conn: http.client.HTTPConnection | None = None
            try:
                with self._cond:
                    self.requests += 1
                conn, response = self.pool.request(
                    self.key, "GET", self.target, headers, track=live
                )
                self._check(response, start)
                body = self._read(k, conn, response, view, pipe)
                if self.got[k] >= end - k * self.chunk:
                    self.pool.release(self.key, conn, response)
                    return
                conn.close()
                error: BaseException = body.error or IncompleteTransfer(
                    f"GET {self.url}: range {start}-{end - 1} ended early",
                    url=str(self.url),
                    plugin=self.plugin,
                )
            except TransferError:
                if conn is not None:
                    conn.close()
                raise
            except (OSError, http.client.HTTPException, ValueError, ConnectFailed) as exc:
                if conn is not None:
                    conn.close()
                error = exc
            finally:
                live.clear()
            if self._stop:
                return
            mapped = error if isinstance(error, TransferError) else self._map(error)
            if not isinstance(mapped, IncompleteTransfer) or resumes >= self.max_resumes:
                raise mapped from (None if mapped is error else error)
            resumes += 1

    def _map(self, exc: BaseException) -> TransferError:
        return wire_error(exc, self.url, "GET", self.plugin)

    def _check(self, response: http.client.HTTPResponse, start: int) -> None:
        status = response.status
        if status == 200:
            raise RangeRefused(
                f"GET {self.url}: server sent the whole body for a range request",
                url=str(self.url),
                plugin=self.plugin,
            )
        if status != 206:
            raise self.status_error(response)
        first, total = _content_range(response.getheader("Content-Range"))
        validators = (response.getheader("ETag"), response.getheader("Last-Modified"))
        changed = total != self.total or any(
            a is not None and b is not None and a != b
            for a, b in zip(validators, self.validators, strict=True)
        )
        if changed:
            raise TransientError(
                f"GET {self.url}: the object changed while it was downloaded",
                url=str(self.url),
                plugin=self.plugin,
            )
        if first != start:
            raise RangeRefused(
                f"GET {self.url}: asked for bytes from {start}, got {first}",
                url=str(self.url),
                plugin=self.plugin,
            )

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = exc
            self._stop = True
            live = [conn for mine in self._live for conn in list(mine)]
            self._cond.notify_all()
        for conn in live:  # wake streams blocked in recv
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)

    # -- the hashing thread (the caller) -----------------------------------------------

    def run(self, progress: Callable[[int], None] | None = None) -> None:
        """Download, hash in order into the sink; on failure leave the sink holding
        exactly its hashed prefix and raise."""
        sink = self.sink
        first = threading.Thread(
            target=self._stream, args=(True,), name="ferry-range-0", daemon=True
        )
        if not self.solo_rate:  # before the first starts: its body ends with chunk 0
            self._spawn(self.streams - 1)
        self._threads.append(first)
        first.start()
        rfd = -1
        try:
            # the whole length up front (sparse): the map below never reaches past EOF
            os.ftruncate(sink.fileno(), self.total)
            rfd = os.open(sink.path, os.O_RDONLY)
            self._hash(rfd, progress)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._join()
            if rfd >= 0:
                os.close(rfd)
        if self._failure is not None:
            # drop what lies beyond the hashed prefix: the sink's offset is exact
            os.ftruncate(sink.fileno(), sink.offset)
            failure = self._failure
            self._failure = None
            raise failure
        sink.set_size(self.total)

    def _join(self) -> None:
        """Wait for every stream, those that joined late included."""
        with self._cond:
            self._ramped = True  # from here on, none starts
        for t in self._threads:
            t.join()

    def _hash(self, rfd: int, progress: Callable[[int], None] | None) -> None:
        sink = self.sink
        chunk = self.chunk
        got = self.got
        cond = self._cond
        pos = sink.offset  # 0: the parallel path starts from an empty sink
        total = self.total
        while pos < total:
            # one window mapped at a time: mapped pages count as the process's
            # resident memory (what a batch system watches), the whole file must not
            start = pos - pos % self.window
            size = min(self.window, total - start)
            with mmap.mmap(rfd, size, prot=mmap.PROT_READ, offset=start) as mapped:
                view = memoryview(mapped)
                try:
                    while pos < start + size:
                        k = pos // chunk
                        with cond:
                            while True:
                                avail = k * chunk + got[k] - pos
                                if avail > 0:
                                    break
                                if self._failure is not None:
                                    return  # after hashing all that was written in order
                                self._waiting = k
                                cond.wait()
                            self._waiting = -1
                        n = min(avail, BUFSIZE, start + size - pos)
                        sink.absorb(view[pos - start : pos - start + n])
                        pos += n
                        if progress is not None:
                            progress(n)
                finally:
                    view.release()
