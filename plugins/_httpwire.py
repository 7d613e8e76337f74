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

``http.client`` connects (TLS included), keeps the connection state and
reads bodies (``readinto``, ``read``, chunked decoding); the request head
and the response head are done here, cheaper. Its ``begin`` reads every
header line with ``readline`` and parses them with :mod:`email.parser`, and
``putrequest``/``putheader`` check and encode one header at a time: together
about a third of the CPU of a 64 KiB GET from nginx on 127.0.0.1 (sha256 not
included, one thread). :class:`LeanConnection` (and
:class:`LeanHTTPSConnection`) sends the header lines in one piece
(:meth:`LeanConnection.send_request`, still through ``putrequest`` and
``endheaders``), and its responses are :class:`LeanResponse`, whose ``begin``
takes the whole head from the socket reader's buffer with one ``peek`` and
one ``read`` and splits it with two regular expressions into
:class:`Headers`, setting every attribute the stdlib's ``begin`` sets, by the
same rules. A head that is not all in the buffer, or is over the stdlib's
limits, is read line by line as the stdlib does (same limits, same
exceptions); one that is unusual (folded lines, bare ``\\n`` line ends, lines
without a colon) is parsed by the stdlib's email parser. Measured that
way (GET and ``readinto`` through :class:`WirePool`, median of three runs):
0.24 -> 0.16 ms of CPU per request, 466 k -> 232 k user-space instructions
(callgrind), 200 k of them saved on the response head; with 16 threads and
sha256, 0.59 -> 0.47 ms (``docs/protocols/http.md``).

What this module also does: a pool of idle keep-alive connections per
``(scheme, host:port)`` (a list and a lock: taking or returning one is a
list pop/append, never held during I/O), a stale-connection check on reuse
(a readable idle socket was closed by the server) with one retry of the
request on a fresh connection, TLS with the same trust rules as httpx
(``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi, else the system's), and
the mapping of socket, ``ssl`` and ``http.client`` exceptions to the ferry
error tree. What it does not do (redirects, proxies) stays with httpx: see
:mod:`.http`. :mod:`._s3http` uses the same connections.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import http.client
import os
import re
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
    "Headers",
    "LeanConnection",
    "LeanHTTPSConnection",
    "LeanResponse",
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
#: http.client's limits on a response head: bytes per line, header lines
_MAXLINE: int = getattr(http.client, "_MAXLINE", 65536)
_MAXHEADERS: int = getattr(http.client, "_MAXHEADERS", 100)

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


# -- the lean response: status line and headers parsed with bytes operations --

#: one header field in the common form (a name of visible ASCII characters, a
#: ``\r\n`` ending, no folding, no character ``str.splitlines`` would break at):
#: parsed here; any other header block goes to the stdlib's email parser
_FIELD = r"[!-9;-~]+:[ \t]*[^\r\n\x0b\x0c\x1c\x1d\x1e\x85]*\r\n"
_PLAIN_BLOCK = re.compile(f"(?:{_FIELD})*")
_FIELDS = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n\x0b\x0c\x1c\x1d\x1e\x85]*)\r\n")


class Headers:
    """Response headers as sent (names keep their case and order), looked up
    case-insensitively: the part of :class:`email.message.Message` that
    ``http.client`` and ferry use (``get``, ``get_all``, ``items``, ``keys``,
    ``values``, ``in``, ``[]``). As with ``Message``, ``get`` and ``[]`` give
    the first value of a repeated name (``[]`` gives None for a missing one),
    ``get_all`` every value in order.
    """

    __slots__ = ("_first", "_items", "_repeated")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        first: dict[str, str] = {}
        for name, value in items:
            first.setdefault(name.lower(), value)
        self._first = first
        self._repeated = len(first) != len(items)

    def get(self, name: str, failobj: Any = None) -> Any:
        return self._first.get(name.lower(), failobj)

    def get_all(self, name: str, failobj: Any = None) -> Any:
        key = name.lower()
        if not self._repeated:
            value = self._first.get(key)
            return failobj if value is None else [value]
        return [v for n, v in self._items if n.lower() == key] or failobj

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def values(self) -> list[str]:
        return [value for _, value in self._items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _parse_fields(block: bytes) -> Any:
    """Header lines (without the blank line) -> :class:`Headers`; an unusual
    block (folded lines, bare ``\\n`` or ``\\r`` line ends, a line without a
    colon, a space or a non-ASCII byte in a name) -> whatever
    ``http.client.parse_headers`` makes of it."""
    text = block.decode("iso-8859-1")
    if _PLAIN_BLOCK.fullmatch(text):
        return Headers(_FIELDS.findall(text))
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text + "\r\n")


def _read_lines(fp: Any) -> bytes:
    """The header lines up to the blank line, read line by line with
    ``http.client``'s limits (its ``_read_headers``)."""
    lines = []
    while True:
        line = fp.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAXHEADERS:
            raise http.client.HTTPException(f"got more than {_MAXHEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    lines.pop()
    return b"".join(lines)


class LeanResponse(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` with a cheaper :meth:`begin`.

    The stdlib's ``begin`` reads the status line and every header line with
    ``readline`` and parses them with :mod:`email.parser` (~0.1 ms of CPU per
    response on the reference machine). Here the whole head is located in
    the reader's buffer (``peek``), consumed with one ``read`` and split with
    two regular expressions into :class:`Headers`; a head not in the buffer
    yet, or one over the limits, is read line by line as the stdlib does
    (``_MAXLINE``, ``_MAXHEADERS``, the same exceptions), and an unusual
    header block is handed to the stdlib's parser. Everything after the head
    (``length``, ``chunked``, ``will_close``, 100-continue, HEAD, 1xx/204/304)
    is set as CPython 3.10-3.13's ``begin`` sets it; reading the body
    (``readinto``, ``read``, chunked decoding) is the stdlib's, unchanged.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return  # already begun
        while True:  # until a status other than 100 Continue
            head = self._head()
            if head is None:  # not all in the buffer: line by line
                version, status, reason = self._read_status()
                block = _read_lines(self.fp)
            else:
                line, block = head
                version, status, reason = self._status(line)
                self.fp.read(len(line) + len(block) + 2)
            if status != http.client.CONTINUE:
                break

        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)

        self.headers = self.msg = headers = _parse_fields(block)

        tr_enc = headers.get("transfer-encoding")
        if tr_enc and tr_enc.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False

        self.will_close = self._check_close()

        self.length = None
        length = headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None

        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0

        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _head(self) -> tuple[bytes, bytes] | None:
        """(status line, header lines) if the reader's buffer holds the whole
        head, all of it ``\\r\\n``-terminated and within the limits; nothing is
        consumed. None: read it line by line."""
        buf = self.fp.peek()
        eol = buf.find(b"\r\n")
        end = buf.find(b"\r\n\r\n", eol) if eol >= 0 else -1
        if end < 0 or end + 4 > _MAXLINE:
            return None
        lines = buf.count(b"\n", 0, end + 4)
        # a bare \n ends a line for readline too: then the head may end elsewhere
        if lines != buf.count(b"\r\n", 0, end + 4) or lines - 1 > _MAXHEADERS:
            return None
        return buf[: eol + 2], buf[eol + 2 : end + 2]

    def _status(self, raw: bytes) -> tuple[str, int, str]:
        """``_read_status`` on a status line already read."""
        line = str(raw, "iso-8859-1")
        try:
            version, status, reason = line.split(None, 2)
        except ValueError:
            try:
                version, status = line.split(None, 1)
                reason = ""
            except ValueError:
                version = ""
        if not version.startswith("HTTP/"):
            self._close_conn()
            raise http.client.BadStatusLine(line)
        try:
            code = int(status)
        except ValueError:
            raise http.client.BadStatusLine(line) from None
        if code < 100 or code > 999:
            raise http.client.BadStatusLine(line)
        return version, code, reason


#: the header lines of a request in the form sent as they are (token names, no CR/LF)
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PLAIN_REQUEST = re.compile(rf"{_TOKEN}: [^\r\n]*(?:\r\n{_TOKEN}: [^\r\n]*)*")


class LeanConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` with :meth:`send_request` and :class:`LeanResponse`
    for its responses."""

    response_class = LeanResponse
    #: the ``Host`` line ``putrequest`` wrote for this connection (b"": none)
    _host_line: bytes | None = None

    def send_request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | memoryview | None = None,
    ) -> None:
        """Send a request with exactly ``headers`` (str values) and ``Host``
        unless they hold one; ``Accept-Encoding`` and ``Content-Length`` are not
        added. The state machine is ``http.client``'s: ``putrequest`` starts
        the request and ``endheaders`` sends it, with ``getresponse`` next. The
        header lines are joined, checked (token names, no CR or LF in values)
        and encoded at once instead of one ``putheader`` each; headers that
        fail the check go through ``putheader``, which says what is wrong.
        """
        text = "\r\n".join([f"{name}: {value}" for name, value in headers.items()])
        # one CR per line break: none came from a name or a value
        plain = text.count("\r") == len(headers) - 1 and _PLAIN_REQUEST.fullmatch(text)
        lines = text.encode("iso-8859-1") if plain else None
        if any(name.lower() == "host" for name in headers):
            self.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        elif self._host_line is not None and target[:1] == "/":
            self.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            if self._host_line:
                self._buffer.append(self._host_line)
        else:  # putrequest writes the Host line (from host and port: kept for the next ones)
            n = len(self._buffer)
            self.putrequest(method, target, skip_accept_encoding=True)
            if target[:1] == "/":
                self._host_line = self._buffer[n + 1] if len(self._buffer) > n + 1 else b""
        if lines is None:
            for name, value in headers.items():
                try:
                    self.putheader(name, value)
                except ValueError as exc:
                    if "header value" not in str(exc):
                        raise
                    # http.client's message quotes the value: a token or password
                    raise ValueError(
                        f"Invalid header value of {name!r} (a line break or a character"
                        " HTTP cannot carry; not shown)"
                    ) from None
        else:
            self._buffer.append(lines)
        self.endheaders(body)


class LeanHTTPSConnection(LeanConnection, http.client.HTTPSConnection):
    """:class:`LeanConnection` over TLS (``http.client.HTTPSConnection``'s ``connect``)."""


class WirePool:
    """Idle keep-alive connections by (scheme, host:port), shared by all threads."""

    def __init__(self, timeout: float, max_idle: int = 32) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: dict[Key, list[LeanConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: Any = None
        #: connections opened so far (the tests read it to see reuse)
        self.opened = 0

    def _new(self, key: Key) -> LeanConnection:
        scheme, netloc = key
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl_context()
            conn: LeanConnection = LeanHTTPSConnection(
                netloc, timeout=self.timeout, context=self._ssl
            )
        elif scheme == "http":
            conn = LeanConnection(netloc, timeout=self.timeout)
        else:  # pragma: no cover - the plugin maps its schemes first
            raise ValueError(f"no wire scheme {scheme!r}")
        with self._lock:
            self.opened += 1
        return conn

    def take(self, key: Key) -> tuple[LeanConnection, bool]:
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

    def give(self, key: Key, conn: LeanConnection) -> None:
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
    ) -> tuple[LeanConnection, http.client.HTTPResponse]:
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
                conn.send_request(method, target, headers)
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
