"""The lean HTTP/1.1 path under :mod:`.http`: stdlib ``http.client``, pooled keep-alive.

Why not httpx here (measured on the 2-core reference machine, nginx on
127.0.0.1, 16 threads, 64 KiB bodies, sha256 included; ``benchmarks/bench_http_clients.py``):

============================  ==================  =====================
client                        CPU per request     CPU per GiB, 1 stream
============================  ==================  =====================
httpx 0.28 ``iter_raw``       1.2-1.7 ms          2.5-3.1 s
urllib3 2.8 ``readinto``      0.80-0.92 ms        1.3-1.6 s
http.client ``readinto``      0.41-0.44 ms        1.1-1.3 s
sha256 alone                                      0.70-0.76 s
============================  ==================  =====================

httpx and httpcore build request/response models, parse with h11 and hand out
a new ``bytes`` per socket read; urllib3's ``readinto`` reads a ``bytes`` and
copies it. ``http.client`` reads straight into the caller's buffer (its
``readinto`` on the socket's ``BufferedReader`` fills a 256 KiB buffer with
``recv_into``), so the body lands in :mod:`._pump`'s reused buffers and is
hashed there. It is the stdlib: nothing to install, kept with CPython.

What this module does: a pool of idle keep-alive connections per
``(scheme, host:port)`` (a list and a lock: taking or returning one is a
list pop/append, never held during I/O), a stale-connection check on reuse
(a readable idle socket was closed by the server) with one retry of the
request on a fresh connection, TLS with the same trust rules as httpx
(``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi, else the system's), and
the mapping of socket, ``ssl`` and ``http.client`` exceptions to the ferry
error tree. What it does not do (redirects, proxies) stays with httpx: see
:mod:`.http`.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import select
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from .errors import (
    ConnectError,
    IncompleteTransfer,
    PermanentError,
    TransferError,
    TransferTimeout,
    TransientError,
)
from .url import URL, redact

__all__ = [
    "Body",
    "ConnectFailed",
    "WirePool",
    "basic_auth_header",
    "idle_readable",
    "map_wire_exceptions",
    "proxy_configured",
    "split_target",
]

#: an error status whose body is at most this long is read to keep the connection
DRAIN_MAX = 64 << 10
#: characters left as they are in a request target (RFC 3986 pchar, "/", "?", "%")
_TARGET_SAFE = "/?%:@!$&'()*+,;=~[]"
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")

Key = tuple[str, str]  # (wire scheme, host[:port])


def proxy_configured(scheme: str) -> bool:
    """Whether the environment names a proxy for ``scheme`` (httpx then takes the request).

    ``NO_PROXY`` is not interpreted here: with a proxy variable set, httpx
    (which reads both) decides.
    """
    for name in (f"{scheme}_proxy", "all_proxy"):
        if os.environ.get(name) or os.environ.get(name.upper()):
            return True
    return False


def split_target(target: str) -> tuple[Key, str]:
    """``scheme://netloc/path?query`` -> ((scheme, netloc), request target)."""
    scheme, _, rest = target.partition("://")
    netloc, slash, tail = rest.partition("/")
    return (scheme, netloc), quote(slash + tail or "/", safe=_TARGET_SAFE)


def basic_auth_header(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _ssl_context() -> Any:
    """A verifying client context with httpx's trust rules."""
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class WirePool:
    """Idle keep-alive connections by (scheme, host:port), shared by all threads."""

    def __init__(self, timeout: float, max_idle: int = 32) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: dict[Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: Any = None
        #: connections opened so far (the tests read it to see reuse)
        self.opened = 0

    def _new(self, key: Key) -> http.client.HTTPConnection:
        scheme, netloc = key
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                netloc, timeout=self.timeout, context=self._ssl
            )
        elif scheme == "http":
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
        else:  # pragma: no cover - the plugin maps its schemes first
            raise ValueError(f"no wire scheme {scheme!r}")
        with self._lock:
            self.opened += 1
        return conn

    def take(self, key: Key) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to ``key`` that still looks open, else a new one;
        and whether it was used before."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._new(key), False
            sock = conn.sock
            if sock is not None and not idle_readable(sock):
                return conn, True
            conn.close()  # the server closed it (or sent bytes nobody asked for)

    def give(self, key: Key, conn: http.client.HTTPConnection) -> None:
        """Return a connection whose response was read to its end."""
        if conn.sock is None:
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def request(
        self,
        key: Key,
        method: str,
        target: str,
        headers: dict[str, str],
        track: set[http.client.HTTPConnection] | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request without a body; return the connection and its response
        (headers read, body not). Raises the library's exceptions: callers map
        them with :func:`map_wire_exceptions`.

        A reused connection that the server closed in the meantime fails before
        any response byte arrives; the request is then sent once more on a new
        connection (every request here is idempotent). ``track`` (if given) holds
        the connection while it is in use, so that another thread can shut its
        socket down to stop a request that waits on the server.
        """
        while True:
            conn, reused = self.take(key)
            if track is not None:
                track.add(conn)
            try:
                if conn.sock is None:
                    _connect(conn)
                conn.request(method, target, headers=headers)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionError) as exc:
                conn.close()
                if not reused or isinstance(exc, ConnectionRefusedError):
                    raise
            except BaseException:
                conn.close()
                raise

    def release(
        self, key: Key, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> None:
        """Keep ``conn`` if ``response`` was read to its end (or is short enough to
        finish reading), else close it."""
        try:
            if not response.isclosed() and not response.will_close:
                left = response.length
                if left == 0:
                    response.close()
                elif left is not None and left <= DRAIN_MAX:
                    response.read()
            if response.isclosed() and not response.will_close:
                self.give(key, conn)
                return
        except (OSError, http.client.HTTPException):
            pass
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


def idle_readable(sock: Any) -> bool:
    """An idle keep-alive socket is readable only if the server closed it."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class ConnectFailed(Exception):
    """Wraps an exception raised while connecting, so the mapping can say so."""


def _connect(conn: http.client.HTTPConnection) -> None:
    try:
        conn.connect()
    except (OSError, ValueError) as exc:
        conn.close()
        raise ConnectFailed(exc) from exc


class Body:
    """A response body as a ``readinto`` source for :func:`._pump.pump`.

    A network failure while reading ends the body (``readinto`` returns 0)
    and is kept in :attr:`error`: the pump then returns the exact count of
    bytes it wrote and hashed, and the caller resumes from there.
    """

    __slots__ = ("error", "response")

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.error: BaseException | None = None

    def readinto(self, buf: Any) -> int:
        try:
            return self.response.readinto(buf)
        except (OSError, http.client.HTTPException) as exc:
            self.error = exc
            return 0


def _cause(exc: BaseException, url: URL) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and not str(exc).strip():
        text = exc.strerror
    text = redact(text)
    if url.password:
        text = text.replace(url.password, "***")
    return text


def wire_error(exc: BaseException, url: URL, method: str, plugin: str) -> TransferError:
    """The ferry error for a library exception raised by ``method url``."""
    import ssl

    where = f"{method} {url}"
    kw: dict[str, Any] = {"url": str(url), "plugin": plugin}
    if isinstance(exc, ConnectFailed):
        inner = exc.__cause__ or exc
        cause = _cause(inner, url)
        if isinstance(inner, ssl.SSLCertVerificationError):
            return PermanentError(f"{where}: TLS certificate rejected: {cause}", **kw)
        if isinstance(inner, ValueError):
            return PermanentError(f"{where}: {cause}", **kw)
        return ConnectError(f"{where}: cannot connect: {cause}", **kw)
    cause = _cause(exc, url)
    if isinstance(exc, TimeoutError):
        return TransferTimeout(f"{where}: timed out: {cause}", **kw)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(f"{where}: TLS certificate rejected: {cause}", **kw)
    if isinstance(exc, (ConnectionError, http.client.HTTPException, ssl.SSLEOFError)):
        if isinstance(exc, (http.client.InvalidURL, http.client.CannotSendRequest)):
            return PermanentError(f"{where}: {cause}", **kw)
        return IncompleteTransfer(f"{where}: connection lost: {cause}", **kw)
    if isinstance(exc, OSError):
        return TransientError(f"{where}: {cause}", **kw)
    return PermanentError(f"{where}: {cause}", **kw)


@contextlib.contextmanager
def map_wire_exceptions(url: URL, method: str = "GET", plugin: str = "http") -> Iterator[None]:
    """Turn socket, ``ssl`` and ``http.client`` exceptions into the ferry error tree.

    Wrap only network calls: an ``OSError`` of the local file system must not
    be reported as a lost connection.
    """
    try:
        yield
    except TransferError:
        raise
    except (OSError, http.client.HTTPException, ValueError, ConnectFailed) as exc:
        raise wire_error(exc, url, method, plugin) from exc
