"""The lean HTTP/1.1 client of ``plugins/_httpwire.py`` against a raw socket server.

:class:`LeanResponse` parses response heads itself; every case here is also
read through the stdlib's ``http.client`` from the same bytes, and the two
must agree (status, version, headers, length, chunking, keep-alive, body).
"""

from __future__ import annotations

import http.client
import io
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ferry.plugins._httpwire import (
    Headers,
    LeanConnection,
    LeanResponse,
    WirePool,
    wire_error,
)
from ferry.plugins.errors import IncompleteTransfer
from ferry.plugins.url import parse_url

HOST = "127.0.0.1"


@dataclass
class Reply:
    """What the server sends for one request: ``parts`` (a short pause between
    them), then it closes the connection if ``close``. ``parts=None``: close at
    once, without a status line."""

    parts: list[bytes] | None
    close: bool = False


@dataclass
class RawServer:
    """Answers the requests on 127.0.0.1, on any connection, with the next replies in order."""

    replies: list[Reply]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    with self._lock:
                        self.requests.append(head)
                        reply = self.replies.pop(0)
                    if reply.parts is None:
                        return
                    for i, part in enumerate(reply.parts):
                        if i:
                            time.sleep(0.05)
                        conn.sendall(part)
                    if reply.close:
                        return
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def serve() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for server in servers:
        server.close()


def _start(servers: list[RawServer], *replies: Reply) -> RawServer:
    server = RawServer(list(replies))
    servers.append(server)
    return server


def _read(conn: http.client.HTTPConnection, method: str) -> dict[str, object]:
    conn.request(method, "/x", headers={"Accept-Encoding": "identity"})
    r = conn.getresponse()
    seen = {
        "status": r.status,
        "reason": r.reason,
        "version": r.version,
        "chunked": r.chunked,
        "will_close": r.will_close,
        "length": r.length,
        "items": list(r.headers.items()),
        "keys": list(r.headers.keys()),
        "getheaders": r.getheaders(),
        "get": {n: r.headers.get(n) for n in _NAMES},
        "getheader": {n: r.getheader(n) for n in _NAMES},
        "get_all": {n: r.headers.get_all(n) for n in _NAMES},
        "in": {n: n in r.headers for n in _NAMES},
        "item": {n: r.headers[n] for n in _NAMES},
        "msg is headers": r.msg is r.headers,
    }
    seen["body"] = r.read()
    seen["closed"] = r.isclosed()
    seen["class"] = type(r.headers)
    return seen


_NAMES = ["content-length", "X-Rep", "x-REP", "Set-Cookie", "missing", "Connection", "X-Fold"]

_CASES: dict[str, tuple[str, list[bytes]]] = {
    "odd case and repeated names": (
        "GET",
        [
            b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\nX-Rep: a\r\nSet-Cookie: c=1\r\n"
            b"x-rep:b  \r\nX-REP:\t\t c \r\nServer: raw\r\n\r\nhello"
        ],
    ),
    "chunked": (
        "GET",
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nContent-Length: 99\r\n\r\n"
            b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: t\r\n\r\n"
        ],
    ),
    "connection close": (
        "GET",
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Close\r\n\r\nok"],
    ),
    "HTTP/1.0": ("GET", [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
    "HTTP/1.0 keep-alive": (
        "GET",
        [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"],
    ),
    "HTTP/1.0 Keep-Alive header": (
        "GET",
        [b"HTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"],
    ),
    "HEAD": ("HEAD", [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Rep: h\r\n\r\n"]),
    "204": ("GET", [b"HTTP/1.1 204 No Content\r\nX-Rep: 1\r\n\r\n"]),
    "304": ("GET", [b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"]),
    "100-continue": (
        "GET",
        [
            b"HTTP/1.1 100 Continue\r\nX-Rep: skipped\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        ],
    ),
    "100-continue in two writes": (
        "GET",
        [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ],
    ),
    "no length: read to the end": ("GET", [b"HTTP/1.1 200 OK\r\nX-Rep: 1\r\n\r\nall of it"]),
    "negative and bad lengths": (
        "GET",
        [b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\nConnection: close\r\n\r\nabc"],
    ),
    "no reason, no headers": ("GET", [b"HTTP/1.1 200\r\n\r\n"]),
    "head in several writes": (
        "GET",
        [b"HTTP/1.1 200 OK\r\nX-Rep: 1\r\n", b"Content-Length: 2\r\n", b"\r\nok"],
    ),
    "folded header": (
        "GET",
        [b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\nContent-Length: 2\r\n\r\nok"],
    ),
    "bare LF line ends": ("GET", [b"HTTP/1.1 200 OK\nX-Rep: 1\nContent-Length: 2\n\nok"]),
    "bare LF ends the head early": (
        "GET",
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Rep: 1\n\r\nok\r\n\r\n"],
    ),
    "latin-1 value and a line without a colon": (
        "GET",
        [
            b"HTTP/1.1 200 OK\r\nX-Rep: caf\xe9\r\nContent-Length: 2\r\nno colon\r\nX-Fold: z\r\n\r\nok"
        ],
    ),
}


_ODD = {
    "folded header",
    "bare LF line ends",
    "bare LF ends the head early",
    "latin-1 value and a line without a colon",
}


@pytest.mark.parametrize("case", list(_CASES))
def test_lean_response_reads_what_http_client_reads(serve: list[RawServer], case: str) -> None:
    method, parts = _CASES[case]
    seen = []
    for cls in (http.client.HTTPConnection, LeanConnection):
        server = _start(serve, Reply(parts, close=True))
        conn = cls(HOST, server.port, timeout=10)
        try:
            seen.append(_read(conn, method))
        finally:
            conn.close()
    stock, lean = seen
    # the common heads are parsed here, the unusual ones by the stdlib's email parser
    odd = case in _ODD
    assert lean.pop("class") is (http.client.HTTPMessage if odd else Headers)
    assert stock.pop("class") is http.client.HTTPMessage
    assert lean == stock
    assert lean["status"] in (200, 201, 204, 304)


def test_headers_object() -> None:
    h = Headers([("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")])
    assert h.get("content-type") == h["CONTENT-TYPE"] == "text/plain"
    assert h.get("X-a") == "1" and h.get_all("X-A") == ["1", "2"]
    assert h.get("nope") is None and h.get("nope", "d") == "d" and h["nope"] is None
    assert h.get_all("nope") is None and h.get_all("content-type") == ["text/plain"]
    assert "x-A" in h and "nope" not in h
    assert h.keys() == ["Content-Type", "X-A", "x-a"] == list(h) and len(h) == 3
    assert h.items() == [("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")]


def test_keep_alive_responses_follow_each_other(serve: list[RawServer]) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    server = _start(serve, Reply([ok]), Reply([chunked[:50], chunked[50:]]), Reply([ok]))
    conn = LeanConnection(HOST, server.port, timeout=10)
    try:
        bodies = []
        for _ in range(3):
            conn.send_request("GET", "/x", {"User-Agent": "ferry"})
            r = conn.getresponse()
            assert isinstance(r, LeanResponse) and not r.will_close
            bodies.append(r.read())
        assert bodies == [b"ok", b"abc", b"ok"] and server.connections == 1
    finally:
        conn.close()


def test_send_request_writes_the_head_as_given(serve: list[RawServer]) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    server = _start(serve, Reply([ok]), Reply([ok]), Reply([ok]))
    conn = LeanConnection(HOST, server.port, timeout=10)
    try:
        for headers in (
            {"User-Agent": "ferry", "Range": "bytes=5-"},
            {"User-Agent": "ferry", "Range": "bytes=7-"},
            {"host": "elsewhere:1", "X-Amz-Date": "20250101T000000Z"},
        ):
            conn.send_request("GET", "/a%20b?x=1", headers)
            conn.getresponse().read()
    finally:
        conn.close()
    host = f"Host: {HOST}:{server.port}".encode()
    assert server.requests == [
        b"GET /a%20b?x=1 HTTP/1.1\r\n" + host + b"\r\nUser-Agent: ferry\r\nRange: bytes=5-",
        b"GET /a%20b?x=1 HTTP/1.1\r\n" + host + b"\r\nUser-Agent: ferry\r\nRange: bytes=7-",
        b"GET /a%20b?x=1 HTTP/1.1\r\nhost: elsewhere:1\r\nX-Amz-Date: 20250101T000000Z",
    ]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-A": "1\r\nX-Injected: 2"}, "Invalid header value"),
        ({"X-A": "1\nX-Injected: 2"}, "Invalid header value"),
        ({"X:A": "1"}, "Invalid header name"),
        ({"X-A\r\nX-Injected": "1"}, "Invalid header name"),
    ],
)
def test_send_request_refuses_what_putheader_refuses(headers: dict[str, str], message: str) -> None:
    conn = LeanConnection(HOST, 9, timeout=10)
    with pytest.raises(ValueError, match=message):
        conn.send_request("GET", "/", headers)


def _get(server: RawServer, pool: WirePool) -> bytes:
    conn, response = pool.request(("http", f"{HOST}:{server.port}"), "GET", "/x", {"A": "b"})
    body = response.read()
    pool.release(("http", f"{HOST}:{server.port}"), conn, response)
    return body


def test_reused_connection_closed_before_the_status_line_is_retried(
    serve: list[RawServer],
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = _start(serve, Reply([ok]), Reply(None), Reply([ok]))
    pool = WirePool(timeout=10)
    try:
        assert _get(server, pool) == b"ok"
        assert _get(server, pool) == b"ok"  # the 2nd request hit a closing socket: sent again
        assert pool.opened == 2 and server.connections == 2 and len(server.requests) == 3
    finally:
        pool.close()


def test_new_connection_closed_before_the_status_line_is_connection_lost(
    serve: list[RawServer],
) -> None:
    server = _start(serve, Reply(None))
    pool = WirePool(timeout=10)
    try:
        with pytest.raises(http.client.RemoteDisconnected) as info:
            _get(server, pool)
    finally:
        pool.close()
    error = wire_error(info.value, parse_url(f"http://{HOST}:{server.port}/x"), "GET", "http")
    assert isinstance(error, IncompleteTransfer) and "connection lost" in str(error)


@pytest.mark.parametrize(
    ("head", "exc", "message"),
    [
        (
            b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
            http.client.LineTooLong,
            "got more than 65536 bytes when reading header line",
        ),
        (
            b"HTTP/1.1 200 " + b"a" * 70000 + b"\r\n\r\n",
            http.client.LineTooLong,
            "got more than 65536 bytes when reading status line",
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 100 + b"\r\n",
            http.client.HTTPException,
            "got more than 100 headers",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", http.client.BadStatusLine, "SSH-2.0"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", http.client.BadStatusLine, "2000"),
        (b"HTTP/2 200 OK\r\n\r\n", http.client.UnknownProtocol, "HTTP/2"),
    ],
)
def test_bad_heads_raise_http_client_errors(
    serve: list[RawServer], head: bytes, exc: type[Exception], message: str
) -> None:
    for cls in (http.client.HTTPConnection, LeanConnection):
        server = _start(serve, Reply([head], close=True))
        conn = cls(HOST, server.port, timeout=10)
        try:
            conn.request("GET", "/x")
            with pytest.raises(exc, match=message) as info:
                conn.getresponse()
        finally:
            conn.close()
        assert type(info.value) is exc
    error = wire_error(info.value, parse_url(f"http://{HOST}:{server.port}/x"), "GET", "http")
    assert isinstance(error, IncompleteTransfer) and message in str(error)


def test_a_head_within_the_limits_is_read_in_one_piece(serve: list[RawServer]) -> None:
    """99 header lines are http.client's most; one head filling the reader's buffer."""
    many = b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 98 + b"Content-Length: 2\r\n\r\nok"
    server = _start(serve, Reply([many]))
    conn = LeanConnection(HOST, server.port, timeout=10)
    try:
        conn.send_request("GET", "/x", {})
        r = conn.getresponse()
        assert r.getheader("X-Many") == ", ".join(["1"] * 98) and r.read() == b"ok"
    finally:
        conn.close()


class _BytesSocket:
    """A socket whose ``makefile`` reads ``data``, through a reader of ``bufsize`` bytes."""

    def __init__(self, data: bytes, bufsize: int) -> None:
        self.data, self.bufsize = data, bufsize

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data), self.bufsize)  # type: ignore[arg-type]


def _begin(cls: type[http.client.HTTPResponse], data: bytes, method: str, bufsize: int) -> object:
    r = cls(_BytesSocket(data, bufsize), method=method)  # type: ignore[arg-type]
    try:
        r.begin()
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        return (type(exc), str(exc))
    names = ("a", "A-b", "content-length", "connection", "transfer-encoding", "x")
    seen = [r.status, r.reason, r.version, r.length, r.chunked, r.will_close]
    seen += [list(r.headers.items()), [r.getheader(n) for n in names]]
    try:
        seen.append(r.read())
    except Exception as exc:  # noqa: BLE001
        seen.append(type(exc))
    return seen


def test_random_heads_read_as_http_client_reads_them() -> None:
    """Seeded random heads, plausible and not, with small and normal reader buffers."""
    rng = random.Random(20251126)
    statuses = [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 200 OK\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 204 No Content\r\n",
        b"HTTP/1.1 304\r\n",
        b"HTTP/1.1 200 OK\n",
        b"HTTP/1.1 103 Early Hints\r\n",
        b"HTTP/1.1 xx\r\n",
    ]
    names = [b"a", b"A-b", b"Content-Length", b"connection", b"Transfer-Encoding", b"x", b"X"]
    values = [b"1", b"5", b" close", b"\tkeep-alive ", b"chunked", b"", b"v  ", b"caf\xe9", b"-1"]
    pieces = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b": ", b"a", b"5", b"\xe9", b"From "]
    pieces += [b"Content-Length", b"Transfer-Encoding", b"chunked", b"connection", b"close"]
    for _ in range(3000):
        if rng.random() < 0.6:
            lines = [
                rng.choice(names)
                + rng.choice([b": ", b":", b" : ", b": \t"])
                + rng.choice(values)
                + rng.choice([b"\r\n"] * 8 + [b"\n", b"\r\n ", b"\r"])
                for _ in range(rng.randint(0, 6))
            ]
            head = rng.choice(statuses) + b"".join(lines) + rng.choice([b"\r\n"] * 5 + [b"\n", b""])
        else:
            junk = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
            head = rng.choice(statuses) + junk + b"\r\n\r\n"
        data = head + b"hello\r\n0\r\n\r\n"
        method = rng.choice(["GET", "GET", "HEAD"])
        bufsize = rng.choice([8192, 8192, 16, 40])
        stock = _begin(http.client.HTTPResponse, data, method, bufsize)
        assert _begin(LeanResponse, data, method, bufsize) == stock, (data, method, bufsize)
