"""``http://`` and ``https://`` downloads over one shared httpx client.

``get`` streams the raw body (``Accept-Encoding: identity``, no decoding, no
re-chunking) into the sink and resumes a dropped body with a ``Range``
request when the server supports ranges. ``stat`` is a ``HEAD``.

httpx is imported only when :class:`HttpProtocol` is built, so listing the
plugin stays cheap and a node without httpx only loses these schemes.
Library exceptions and HTTP statuses are mapped to the ferry error tree in
one place each: :func:`map_httpx_exceptions` and :func:`status_error`.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import (
    AuthError,
    ConnectError,
    IncompleteTransfer,
    NotFound,
    PermanentError,
    PermissionDenied,
    ThrottledError,
    TransferError,
    TransferTimeout,
    TransientError,
)
from .protocol import Capability, Protocol, ProtocolContext, ProtocolInfo, Sink, Stat
from .spec import hookimpl
from .url import URL, parse_url, redact

if TYPE_CHECKING:
    import httpx

__all__ = [
    "HttpProtocol",
    "map_httpx_exceptions",
    "parse_http_date",
    "raise_for_status",
    "status_error",
]

#: resumes (Range re-requests) one ``get`` makes before it gives up
MAX_RESUMES = 5


@hookimpl
def ferry_protocols() -> list[ProtocolInfo]:
    return [
        ProtocolInfo(
            name="http",
            schemes=("http", "https"),
            capabilities=frozenset({Capability.GET, Capability.STAT, Capability.RESUME}),
            implementation="ferry.plugins.http:HttpProtocol",
            requires=("httpx",),
            extra="http",
            description="HTTP(S) downloads, resumed with Range requests",
        )
    ]


# -- error mapping ---------------------------------------------------------


def parse_http_date(value: str | None) -> float | None:
    """An HTTP date (``Last-Modified``, ``Retry-After``) as a POSIX timestamp, or None."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = parse_http_date(value)
    return None if when is None else max(0.0, when - time.time())


def status_error(
    response: httpx.Response, url: URL, method: str, plugin: str = "http"
) -> TransferError:
    """The ferry error for a non-2xx response to ``method url``."""
    code = response.status_code
    msg = f"{method} {url}: {code} {response.reason_phrase}".rstrip()
    kw: dict[str, Any] = {"url": str(url), "plugin": plugin}
    if code in (404, 410):
        return NotFound(msg, **kw)
    if code == 401:
        return AuthError(msg, **kw)
    if code == 403:
        return PermissionDenied(msg, **kw)
    if code in (429, 503):
        after = _retry_after(response.headers.get("retry-after"))
        if after is not None:
            msg += f" (retry after {after:g}s)"
        return ThrottledError(msg, retry_after=after, **kw)
    if code >= 500 or code == 408:
        return TransientError(msg, **kw)
    return PermanentError(msg, **kw)


def raise_for_status(response: httpx.Response, url: URL, method: str, plugin: str = "http") -> None:
    """Raise :func:`status_error` unless the response is a 2xx."""
    if not 200 <= response.status_code < 300:
        raise status_error(response, url, method, plugin)


def _cause(exc: BaseException, url: URL) -> str:
    """One line describing ``exc``, with every secret masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = redact(text)
    if url.password:
        text = text.replace(url.password, "***")
    return text


def _is_certificate_error(exc: BaseException) -> bool:
    import ssl  # loaded by httpx already; not at module import (it costs ~30 ms)

    seen: BaseException | None = exc
    for _ in range(8):  # the chain is httpx -> httpcore -> ssl
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def map_httpx_exceptions(url: URL, method: str = "GET", plugin: str = "http") -> Iterator[None]:
    """Turn httpx exceptions into the ferry error tree, naming the redacted URL."""
    import httpx

    try:
        yield
    except TransferError:
        raise
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        where = f"{method} {url}"
        kw: dict[str, Any] = {"url": str(url), "plugin": plugin}
        cause = _cause(exc, url)
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            if _is_certificate_error(exc):
                raise PermanentError(f"{where}: TLS certificate rejected: {cause}", **kw) from exc
            raise ConnectError(f"{where}: cannot connect: {cause}", **kw) from exc
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
            raise TransferTimeout(f"{where}: timed out: {cause}", **kw) from exc
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            raise IncompleteTransfer(f"{where}: connection lost: {cause}", **kw) from exc
        if isinstance(exc, httpx.TransportError) and not isinstance(
            exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
        ):
            raise TransientError(f"{where}: {cause}", **kw) from exc
        raise PermanentError(f"{where}: {cause}", **kw) from exc


class _RedactLog(logging.Filter):
    """Mask signed query parameters in the URLs httpx logs at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                a if isinstance(a, (int, float)) else redact(str(a)) for a in record.args
            )
        return True


_LOG_FILTER = _RedactLog()
_LOG_FILTER_LOCK = threading.Lock()


def _install_log_filter() -> None:
    with _LOG_FILTER_LOCK:
        logger = logging.getLogger("httpx")
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes first-last/total`` (or ``bytes */total``) as (first, total)."""
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


# -- the protocol ------------------------------------------------------------


class HttpProtocol(Protocol):
    """HTTP(S) GET and HEAD through one thread-safe ``httpx.Client``."""

    name = "http"
    schemes = ("http", "https")
    #: the scheme a request goes out with, by URL scheme (subclasses add theirs)
    wire_schemes: ClassVar[dict[str, str]] = {"http": "http", "https": "https"}
    #: ``iter_raw`` chunk size. None passes httpcore's socket reads (64 KiB) straight
    #: through; a size makes httpx re-chunk through a BytesIO (two extra copies),
    #: measured ~20% slower on a 512 MiB body from nginx on 127.0.0.1
    chunk_size: int | None = None
    max_resumes = MAX_RESUMES

    def __init__(self, context: ProtocolContext | None = None) -> None:
        super().__init__(context)
        import httpx

        _install_log_filter()
        n = max(1, self.context.concurrency)
        self._client = httpx.Client(
            http1=True,
            http2=False,
            follow_redirects=True,
            timeout=httpx.Timeout(self.context.timeout),
            # the engine bounds concurrency; the slack keeps a stray stat() from
            # waiting on the pool behind long downloads
            limits=httpx.Limits(max_connections=2 * n, max_keepalive_connections=n),
            headers={"User-Agent": "ferry", "Accept-Encoding": "identity"},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(concurrency={self.context.concurrency})"

    def close(self) -> None:
        self._client.close()

    # -- helpers shared with subclasses ----------------------------------

    def target(self, url: URL) -> str:
        """The request URL: the URL as given, without its user part, on the wire scheme."""
        rest = url.raw.split("://", 1)[1].split("#", 1)[0]
        rest, qmark, query = rest.partition("?")
        netloc, slash, path = rest.partition("/")
        netloc = netloc.rsplit("@", 1)[-1]
        return f"{self.wire_schemes[url.scheme]}://{netloc}{slash}{path}{qmark}{query}"

    def auth(self, url: URL) -> httpx.BasicAuth | None:
        """Basic auth from the URL's ``user:password``, else from the credentials file
        (``username`` / ``password`` in the section for the URL's host)."""
        import httpx

        if url.user is not None:
            return httpx.BasicAuth(url.user, url.password or "")
        creds = self.context.credentials.for_url(url)
        if "username" in creds:
            password = creds.get("password", "")
            secret = password.reveal() if hasattr(password, "reveal") else password
            return httpx.BasicAuth(creds["username"], secret)
        return None

    def extra_headers(self, url: URL) -> dict[str, str]:
        """``header.NAME = VALUE`` keys of the credentials file, sent as HTTP headers."""
        headers = {}
        for key, value in self.context.credentials.for_url(url).items():
            if key.startswith("header."):
                headers[key[len("header.") :]] = (
                    value.reveal() if hasattr(value, "reveal") else value
                )
        return headers

    def send(
        self,
        method: str,
        url: URL,
        target: str | None = None,
        *,
        ok: Callable[[int], bool] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """One buffered request; raises the mapped error unless ``ok(status)``
        (by default: a 2xx) holds. ``url`` names the request in errors."""
        with map_httpx_exceptions(url, method, self.name):
            headers = {**self.extra_headers(url), **kw.pop("headers", {})}
            response = self._client.request(
                method, target or self.target(url), auth=self.auth(url), headers=headers, **kw
            )
        if not (ok(response.status_code) if ok else 200 <= response.status_code < 300):
            raise status_error(response, url, method, self.name)
        return response

    # -- operations --------------------------------------------------------

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        url = parse_url(url)
        target = self.target(url)
        auth = self.auth(url)
        state = _GetState()
        while True:
            try:
                with map_httpx_exceptions(url, "GET", self.name):
                    self._get_once(url, target, auth, sink, progress, state)
                return
            except IncompleteTransfer:
                if not state.resumable or state.resumes >= self.max_resumes:
                    raise
                state.resumes += 1
                time.sleep(min(0.05 * state.resumes, 0.5))

    def _get_once(
        self,
        url: URL,
        target: str,
        auth: httpx.BasicAuth | None,
        sink: Sink,
        progress: Callable[[int], None] | None,
        state: _GetState,
    ) -> None:
        """One GET from ``sink.offset`` on; raises IncompleteTransfer on a short body."""
        start = sink.offset
        headers = self.extra_headers(url)
        if start:
            headers["Range"] = f"bytes={start}-"
        with self._client.stream("GET", target, headers=headers, auth=auth) as response:
            status = response.status_code
            h = response.headers
            if status == 416 and start:
                state.resumable = True
                total = _content_range(h.get("content-range"))[1]
                if total == start:  # the sink already holds every byte
                    sink.set_size(total)
                    return
                sink.reset()
                raise IncompleteTransfer(
                    f"GET {url}: range from {start} not satisfiable, starting over",
                    url=str(url),
                    plugin=self.name,
                )
            if not 200 <= status < 300:
                raise status_error(response, url, "GET", self.name)
            if h.get("accept-ranges", "").lower() == "bytes":
                state.resumable = True
            length_text = h.get("content-length")
            length = int(length_text) if length_text and length_text.isdigit() else None
            expected: int | None
            if status == 206:
                state.resumable = True
                first, total = _content_range(h.get("content-range"))
                if first != start:
                    sink.reset()
                    raise IncompleteTransfer(
                        f"GET {url}: asked for bytes from {start}, got {first}; starting over",
                        url=str(url),
                        plugin=self.name,
                    )
                expected = (
                    total if total is not None else (start + length if length is not None else None)
                )
            else:
                if start:  # the server ignored Range: take the whole body
                    sink.reset()
                expected = length
            sink.set_size(expected)
            write = sink.write
            for chunk in response.iter_raw(self.chunk_size):
                write(chunk)
                if progress is not None:
                    progress(len(chunk))
        if expected is not None and sink.offset != expected:
            raise IncompleteTransfer(
                f"GET {url}: body ended at byte {sink.offset} of {expected}",
                url=str(url),
                plugin=self.name,
            )

    def stat(self, url: URL) -> Stat:
        url = parse_url(url)
        response = self.send("HEAD", url)
        length = response.headers.get("content-length")
        return Stat(
            size=int(length) if length and length.isdigit() else None,
            mtime=parse_http_date(response.headers.get("last-modified")),
        )


class _GetState:
    """What one ``get`` learned across its requests."""

    __slots__ = ("resumable", "resumes")

    def __init__(self) -> None:
        self.resumable = False
        self.resumes = 0
