"""``http://`` and ``https://`` downloads: a lean stdlib path, httpx for the rest.

``get`` and ``stat`` go over :mod:`._httpwire`: ``http.client`` connections
kept alive in a pool shared by all threads, the body read straight into the
sink's reused buffers (:meth:`Sink.copy_from`, which hashes in a second
thread) with no per-chunk ``bytes``. Measured against nginx on 127.0.0.1 on
the 2-core reference machine (``benchmarks/bench_http_clients.py``), with
sha256, two runs: 0.41-0.44 ms of CPU per 64 KiB request with 16 threads and
1.1-1.3 s of CPU per GiB on one stream, against 1.2-1.7 ms and 2.5-3.1 s
through httpx (0.80-0.92 ms and 1.3-1.6 s through urllib3, whose ``readinto``
copies a ``bytes``). The request and response heads are written and parsed
by :mod:`._httpwire` itself rather than by ``putheader`` and the ``email``
package, ~0.1 ms less per request (``docs/protocols/http.md``).

Large objects (``http.streams_min_size``, 64 MiB by default) from a server
that announces ``Accept-Ranges: bytes`` are fetched over ``http.streams``
ranged streams (4), in chunks claimed in order so that the sha256 follows the
contiguous prefix (:mod:`._httpranges`); the streams join the first one only
if it is slow or there are CPUs to spare for them; over plain http the streams move the
bytes with ``splice``, and a large body on one stream (no ranges, or
``streams = 1``) takes the same path as one chunk. A body cut short is resumed with a
``Range`` request from the byte the sink holds, and so is a chunk of a
parallel download; a server that ignores ``Range`` gets a restart from 0.

httpx stays for what the lean path does not do: redirects (a 3xx answer is
replayed through httpx, which follows it and strips credentials across
hosts), a proxy named in the environment (``http_proxy``, ``https_proxy``,
``all_proxy``, honoured with ``no_proxy`` by httpx; an ``http://`` download
that fails through the proxy goes straight to the server at once, as
pegasus-transfer drops the proxy after a failed try), an Open Science Grid
site's Squid (``$OSG_SQUID_LOCATION``, for ``http://`` when no ``http_proxy``
is set, the same way), the WebDAV methods of
:mod:`.webdav`, and ``http.client = httpx`` set on purpose. httpx is imported
only when one of these first happens, so a plain download never pays its
~150 ms import. Library exceptions and HTTP statuses are mapped to the ferry
error tree in one place each: :func:`map_httpx_exceptions` /
:func:`._httpwire.map_wire_exceptions` and :func:`status_error`.

Settings (``--set http.NAME=VALUE`` or ``$FERRY_HTTP_NAME``, see
:mod:`.settings`): ``streams`` (4; 1 turns parallel streams off),
``streams_min_size`` (64M), ``stream_chunk`` (8M), ``streams_solo_rate``
(256M: bytes/s at which the first stream is left alone on a machine with no
spare CPU; 0 starts every stream at once), ``client`` (``auto`` or
``httpx``), ``splice`` (yes: parallel streams over plain http move bodies with
``splice``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import os
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
from .protocol import Protocol, ProtocolContext, Sink, Source, Stat
from .url import URL, parse_url, redact

if TYPE_CHECKING:
    import http.client

    import httpx

    from ._httpwire import Key, WirePool

__all__ = [
    "HttpProtocol",
    "map_httpx_exceptions",
    "parse_http_date",
    "raise_for_status",
    "HttpSettings",
    "status_error",
    "wire_status_error",
]

#: resumes (Range re-requests) one ``get`` makes before it gives up
MAX_RESUMES = 5


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


def _status_error(
    code: int,
    reason: str,
    retry_after: str | None,
    url: URL,
    method: str,
    plugin: str,
) -> TransferError:
    msg = f"{method} {url}: {code} {reason}".rstrip()
    kw: dict[str, Any] = {"url": str(url), "plugin": plugin}
    error: TransferError
    if code in (404, 410):
        error = NotFound(msg, **kw)
    elif code == 401:
        error = AuthError(msg, **kw)
    elif code == 403:
        error = PermissionDenied(msg, **kw)
    elif code in (429, 503):
        after = _retry_after(retry_after)
        if after is not None:
            msg += f" (retry after {after:g}s)"
        error = ThrottledError(msg, retry_after=after, **kw)
    elif code >= 500 or code == 408:
        error = TransientError(msg, **kw)
    else:
        error = PermanentError(msg, **kw)
    error.status = code
    return error


def status_error(
    response: httpx.Response, url: URL, method: str, plugin: str = "http"
) -> TransferError:
    """The ferry error for a non-2xx response to ``method url``."""
    return _status_error(
        response.status_code,
        response.reason_phrase,
        response.headers.get("retry-after"),
        url,
        method,
        plugin,
    )


def wire_status_error(
    response: http.client.HTTPResponse, url: URL, method: str, plugin: str = "http"
) -> TransferError:
    """:func:`status_error` for a response of the lean path."""
    return _status_error(
        response.status, response.reason, response.getheader("Retry-After"), url, method, plugin
    )


def raise_for_status(response: httpx.Response, url: URL, method: str, plugin: str = "http") -> None:
    """Raise :func:`status_error` unless the response is a 2xx."""
    if not 200 <= response.status_code < 300:
        raise status_error(response, url, method, plugin)


def _cause(exc: BaseException, url: URL) -> str:
    """One line describing ``exc``, with every secret masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "header value" in text:  # h11: "Illegal header value b'Bearer ...'" quotes a token
        text = text.split("header value", 1)[0] + "header value (not shown)"
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


def squid_proxy() -> str | None:
    """The proxy URL of ``$OSG_SQUID_LOCATION`` (``host:port``), if it names one."""
    where = os.environ.get("OSG_SQUID_LOCATION", "").strip()
    if not where or where.upper() == "UNAVAILABLE":
        return None
    return where if "://" in where else f"http://{where}"


# -- the protocol ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """Tunables of the http plugin (``--set http.NAME=VALUE``, ``$FERRY_HTTP_NAME``)."""

    #: ranged streams for one large download; 1 turns parallel streams off
    streams: int = 4
    #: objects at least this large (and whose server announces ranges) use the streams
    streams_min_size: int = dataclasses.field(default=64 << 20, metadata={"size": True})
    #: bytes per range request of a parallel download
    stream_chunk: int = dataclasses.field(default=8 << 20, metadata={"size": True})
    #: a first stream at least this fast (bytes/s) is CPU-bound: the others join it only
    #: on spare CPUs; 0 starts every stream at once (:mod:`._httpranges`)
    streams_solo_rate: int = dataclasses.field(default=256 << 20, metadata={"size": True})
    #: ``auto`` (the lean path, httpx for redirects and proxies) or ``httpx`` (always)
    client: str = "auto"
    #: parallel streams over plain http move bodies with ``splice`` (Linux), no user-space copy
    splice: bool = True


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_log = logging.getLogger("ferry.plugins.http")


class _Redirected(Exception):
    """The lean path got a redirect: httpx replays the request and follows it."""


class HttpProtocol(Protocol):
    """HTTP(S) GET and HEAD over pooled ``http.client`` connections, with httpx
    (one thread-safe ``httpx.Client``, made on first use) for the rest."""

    name = "http"
    schemes = ("http", "https")
    #: the scheme a request goes out with, by URL scheme (subclasses add theirs)
    wire_schemes: ClassVar[dict[str, str]] = {"http": "http", "https": "https"}
    #: httpx ``iter_raw`` chunk size. None passes httpcore's socket reads (64 KiB) straight
    #: through; a size makes httpx re-chunk through a BytesIO (two extra copies),
    #: measured ~20% slower on a 512 MiB body from nginx on 127.0.0.1
    chunk_size: int | None = None
    max_resumes = MAX_RESUMES
    #: the settings prefix (``http.streams``, ...)
    settings_prefix = "http"

    def __init__(self, context: ProtocolContext | None = None) -> None:
        super().__init__(context)
        from ._httpwire import WirePool, proxy_configured
        from .settings import load_settings

        self.settings = load_settings(HttpSettings, self.context, self.settings_prefix)
        if self.settings.client not in ("auto", "httpx"):
            from .errors import ConfigError

            raise ConfigError(
                f"{self.settings_prefix}.client: {self.settings.client!r} is not auto or httpx"
            )
        n = max(1, self.context.concurrency)
        self._pool: WirePool = WirePool(self.context.timeout, max_idle=2 * n + 8)
        #: schemes with a proxy named in the environment (httpx takes their requests)
        self._proxied = frozenset(s for s in ("http", "https") if proxy_configured(s))
        self._httpx_schemes = frozenset(
            s for s in ("http", "https") if self.settings.client == "httpx" or s in self._proxied
        )
        #: an Open Science Grid site's Squid for http:// (``$OSG_SQUID_LOCATION``), used as
        #: pegasus-transfer uses it: when no ``http_proxy`` is set, for the first try only
        self._squid = None if "http" in self._proxied else squid_proxy()
        self._httpx_extra: dict[str, httpx.Client] = {}
        self._httpx: httpx.Client | None = None
        self._httpx_lock = threading.Lock()
        #: request headers by (scheme, host:port, user, password): credentials looked up once
        self._headers: dict[tuple[str, str, str | None, str | None], dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(concurrency={self.context.concurrency})"

    @property
    def _client(self) -> httpx.Client:
        """The httpx client, made (and httpx imported) on first use."""
        client = self._httpx
        if client is None:
            with self._httpx_lock:
                client = self._httpx
                if client is None:
                    client = self._httpx = self._make_client()
        return client

    @property
    def _squid_client(self) -> httpx.Client:
        """For http:// through a proxy: the Squid's, else the environment's."""
        if self._squid is None:
            return self._client
        return self._extra_client("squid", proxy=self._squid, trust_env=False)

    @property
    def _direct_client(self) -> httpx.Client:
        """For http:// after the proxy failed: no proxy at all."""
        return self._extra_client("direct", trust_env=False)

    def _extra_client(self, name: str, **kw: Any) -> httpx.Client:
        with self._httpx_lock:
            client = self._httpx_extra.get(name)
            if client is None:
                client = self._httpx_extra[name] = self._make_client(**kw)
        return client

    def _make_client(self, **kw: Any) -> httpx.Client:
        import httpx

        _install_log_filter()
        n = max(1, self.context.concurrency)
        return httpx.Client(
            **kw,
            http1=True,
            http2=False,
            follow_redirects=True,
            timeout=httpx.Timeout(self.context.timeout),
            # the engine bounds concurrency; the slack keeps a stray stat() from
            # waiting on the pool behind long downloads
            limits=httpx.Limits(max_connections=2 * n, max_keepalive_connections=n),
            headers={"User-Agent": "ferry", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._pool.close()
        for client in self._httpx_extra.values():
            client.close()
        self._httpx_extra.clear()
        if self._httpx is not None:
            self._httpx.close()

    def _not_satisfiable(self, url: URL, sink: Sink, state: Any, content_range: str | None) -> None:
        """A 416 to ``Range: bytes=OFFSET-``: done if the sink holds the whole object,
        else start over (the object is shorter than what the sink holds)."""
        state.resumable = True
        start = sink.offset
        total = _content_range(content_range)[1]
        if total == start:  # the sink already holds every byte
            sink.set_size(total)
            return
        sink.reset()
        raise IncompleteTransfer(
            f"GET {url}: range from {start} not satisfiable, starting over",
            url=str(url),
            plugin=self.name,
        )

    def _body_size(
        self,
        url: URL,
        sink: Sink,
        state: Any,
        status: int,
        accept_ranges: str | None,
        content_range: str | None,
        length: int | None,
    ) -> int | None:
        """The object's full size from a 200 or 206 answer to a GET from ``sink.offset``
        (None when unknown); a 206 from elsewhere, or a 200 to a ranged request,
        restarts the sink as needed."""
        start = sink.offset
        if (accept_ranges or "").strip().lower() == "bytes":
            state.resumable = True
        if status != 206:
            if start:  # the server ignored Range: take the whole body
                sink.reset()
            return length
        state.resumable = True
        first, total = _content_range(content_range)
        if first != start:
            sink.reset()
            raise IncompleteTransfer(
                f"GET {url}: asked for bytes from {start}, got {first}; starting over",
                url=str(url),
                plugin=self.name,
            )
        if total is not None:
            return total
        return start + length if length is not None else None

    # -- helpers shared with subclasses ----------------------------------

    def target(self, url: URL) -> str:
        """The request URL: the URL as given, without its user part, on the wire scheme."""
        rest = url.raw.split("://", 1)[1].split("#", 1)[0]
        rest, qmark, query = rest.partition("?")
        netloc, slash, path = rest.partition("/")
        netloc = netloc.rsplit("@", 1)[-1]
        return f"{self.wire_schemes[url.scheme]}://{netloc}{slash}{path}{qmark}{query}"

    def _user_password(self, url: URL) -> tuple[str, str] | None:
        """Basic auth from the URL's ``user:password``, else from the credentials file
        (``username`` / ``password`` in the section for the URL's host)."""
        if url.user is not None:
            return url.user, url.password or ""
        creds = self.context.credentials.for_url(url)
        if "username" in creds:
            password = creds.get("password", "")
            secret = password.reveal() if hasattr(password, "reveal") else password
            return creds["username"], secret
        return None

    def auth(self, url: URL) -> httpx.BasicAuth | None:
        """:meth:`_user_password` as httpx auth."""
        import httpx

        pair = self._user_password(url)
        return None if pair is None else httpx.BasicAuth(*pair)

    def extra_headers(self, url: URL) -> dict[str, str]:
        """``header.NAME = VALUE`` keys of the credentials file, sent as HTTP headers."""
        headers = {}
        for key, value in self.context.credentials.for_url(url).items():
            if key.startswith("header."):
                headers[key[len("header.") :]] = (
                    value.reveal() if hasattr(value, "reveal") else value
                )
        return headers

    def _wire_headers(self, url: URL) -> dict[str, str]:
        """Every header of a lean request to ``url`` (a fresh dict the caller may extend)."""
        key = (url.scheme, url.netloc, url.user, url.password)
        headers = self._headers.get(key)
        if headers is None:
            from ._httpwire import basic_auth_header

            headers = {"User-Agent": "ferry", "Accept-Encoding": "identity"}
            pair = self._user_password(url)
            if pair is not None:
                headers["Authorization"] = basic_auth_header(*pair)
            headers.update(self.extra_headers(url))
            self._headers[key] = headers
        return dict(headers)

    def send(
        self,
        method: str,
        url: URL,
        target: str | None = None,
        *,
        ok: Callable[[int], bool] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """One buffered request through httpx; raises the mapped error unless
        ``ok(status)`` (by default: a 2xx) holds. ``url`` names the request in errors."""
        with map_httpx_exceptions(url, method, self.name):
            headers = {**self.extra_headers(url), **kw.pop("headers", {})}
            response = self._client.request(
                method, target or self.target(url), auth=self.auth(url), headers=headers, **kw
            )
        if not (ok(response.status_code) if ok else 200 <= response.status_code < 300):
            raise status_error(response, url, method, self.name)
        return response

    def _wire_request(
        self, url: URL, method: str, key: Key, path: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        from ._httpwire import map_wire_exceptions

        with map_wire_exceptions(url, method, self.name):
            conn, response = self._pool.request(key, method, path, headers)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s: %d %s", method, url, response.status, response.reason)
        return conn, response

    # -- operations --------------------------------------------------------

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        url = parse_url(url)
        target = self.target(url)
        scheme = target.partition(":")[0]
        if url.scheme == "http" and (self._squid or "http" in self._proxied):
            # through the proxy first; if that fails, straight to the server at once
            # (pegasus-transfer drops the proxy after a failed try, on its next round)
            try:
                self._get_httpx(url, target, sink, progress, self._squid_client)
                return
            except TransferError as exc:
                _log.info("%s: through the HTTP proxy failed (%s); trying without it", url, exc)
                sink.reset()
                if self.settings.client == "httpx":
                    self._get_httpx(url, target, sink, progress, self._direct_client)
                    return
        elif scheme in self._httpx_schemes:
            self._get_httpx(url, target, sink, progress)
            return
        state = _GetState()
        while True:
            try:
                self._get_once_wire(url, target, sink, progress, state)
                return
            except _Redirected:
                self._get_httpx(url, target, sink, progress)
                return
            except IncompleteTransfer:
                if not state.resumable or state.resumes >= self.max_resumes:
                    raise
                state.resumes += 1
                time.sleep(min(0.05 * state.resumes, 0.5))

    def _get_once_wire(
        self,
        url: URL,
        target: str,
        sink: Sink,
        progress: Callable[[int], None] | None,
        state: _GetState,
    ) -> None:
        """One lean GET from ``sink.offset`` on; raises IncompleteTransfer on a short body."""
        from ._httpwire import Body, split_target, wire_error

        key, path = split_target(target)
        start = sink.offset
        headers = self._wire_headers(url)
        if start:
            headers["Range"] = f"bytes={start}-"
        conn, response = self._wire_request(url, "GET", key, path, headers)
        handed_off = False
        try:
            status = response.status
            if status in _REDIRECTS and response.getheader("Location"):
                raise _Redirected
            if status == 416 and start:
                self._not_satisfiable(url, sink, state, response.getheader("Content-Range"))
                return
            if not 200 <= status < 300:
                raise wire_status_error(response, url, "GET", self.name)
            length = response.length  # Content-Length as http.client read it (None: chunked)
            expected = self._body_size(
                url,
                sink,
                state,
                status,
                response.getheader("Accept-Ranges"),
                response.getheader("Content-Range"),
                length,
            )
            if status != 206:  # the whole body: large ones go over parallel or spliced streams
                settings = self.settings
                big = (
                    length is not None
                    and not state.parallel_failed
                    and length >= max(settings.streams_min_size, 2 * settings.stream_chunk)
                )
                if big and state.resumable and settings.streams > 1:
                    handed_off = True
                    self._get_ranged(
                        url, key, path, headers, sink, progress, state, conn, response,
                        settings.streams, settings.stream_chunk,
                    )  # fmt: skip
                    return
                if big and settings.splice and _spliceable(conn):
                    # one stream, the whole body as one chunk: moved with splice, hashed
                    # through the file (CPU per GiB: ~1.9 s against ~2.8 s through the pump)
                    handed_off = True
                    self._get_ranged(
                        url, key, path, headers, sink, progress, state, conn, response,
                        1, length,
                    )  # fmt: skip
                    return
            sink.set_size(expected)
            body = Body(response)
            want = None if expected is None else expected - sink.offset
            sink.copy_from(body, progress, size=want)
            if body.error is not None:
                raise wire_error(body.error, url, "GET", self.name) from body.error
        finally:
            if not handed_off:
                self._pool.release(key, conn, response)
        if expected is not None and sink.offset != expected:
            raise IncompleteTransfer(
                f"GET {url}: connection lost: body ended at byte {sink.offset} of {expected}",
                url=str(url),
                plugin=self.name,
            )

    def _get_ranged(
        self,
        url: URL,
        key: Key,
        path: str,
        headers: dict[str, str],
        sink: Sink,
        progress: Callable[[int], None] | None,
        state: _GetState,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        streams: int,
        chunk: int,
    ) -> None:
        from ._httpranges import RangedDownload, RangeRefused

        assert response.length is not None
        download = RangedDownload(
            pool=self._pool,
            key=key,
            target=path,
            headers=headers,
            url=url,
            plugin=self.name,
            total=response.length,
            sink=sink,
            streams=streams,
            chunk=chunk,
            max_resumes=self.max_resumes if state.resumable else 0,
            status_error=lambda r: wire_status_error(r, url, "GET", self.name),
            first=(conn, response),
            splice=self.settings.splice,
            resumable=state.resumable,
            solo_rate=self.settings.streams_solo_rate,
        )
        state.parallel = download
        try:
            download.run(progress)
        except RangeRefused:
            state.parallel_failed = True  # go on with one stream, from the hashed prefix
            raise
        except IncompleteTransfer:
            state.parallel_failed = True
            raise

    def _get_httpx(
        self,
        url: URL,
        target: str,
        sink: Sink,
        progress: Callable[[int], None] | None,
        client: httpx.Client | None = None,
    ) -> None:
        """The same GET through httpx (redirects, proxies, ``http.client = httpx``)."""
        auth = self.auth(url)
        state = _GetState()
        while True:
            try:
                with map_httpx_exceptions(url, "GET", self.name):
                    self._get_once(url, target, auth, sink, progress, state, client)
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
        client: httpx.Client | None = None,
    ) -> None:
        """One GET from ``sink.offset`` on; raises IncompleteTransfer on a short body."""
        start = sink.offset
        headers = self.extra_headers(url)
        if start:
            headers["Range"] = f"bytes={start}-"
        client = client or self._client
        with client.stream("GET", target, headers=headers, auth=auth) as response:
            status = response.status_code
            h = response.headers
            if status == 416 and start:
                self._not_satisfiable(url, sink, state, h.get("content-range"))
                return
            if not 200 <= status < 300:
                raise status_error(response, url, "GET", self.name)
            length_text = h.get("content-length")
            expected = self._body_size(
                url,
                sink,
                state,
                status,
                h.get("accept-ranges"),
                h.get("content-range"),
                int(length_text) if length_text and length_text.isdigit() else None,
            )
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
        target = self.target(url)
        if target.partition(":")[0] in self._httpx_schemes:
            return self._stat_httpx(url)
        from ._httpwire import split_target

        key, path = split_target(target)
        conn, response = self._wire_request(url, "HEAD", key, path, self._wire_headers(url))
        try:
            status = response.status
            if status in _REDIRECTS and response.getheader("Location"):
                return self._stat_httpx(url)
            if not 200 <= status < 300:
                raise wire_status_error(response, url, "HEAD", self.name)
            length = response.getheader("Content-Length")
            last_modified = response.getheader("Last-Modified")
        finally:
            self._pool.release(key, conn, response)
        return Stat(
            size=int(length) if length and length.isdigit() else None,
            mtime=parse_http_date(last_modified),
        )

    def _stat_httpx(self, url: URL) -> Stat:
        response = self.send("HEAD", url)
        length = response.headers.get("content-length")
        return Stat(
            size=int(length) if length and length.isdigit() else None,
            mtime=parse_http_date(response.headers.get("last-modified")),
        )

    # -- upload --------------------------------------------------------------

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        """One plain ``PUT`` of the file to the URL, query included, as HTCondor's
        curl plugin uploads: to a pre-signed object-store URL, or a server that
        takes PUT. The server decides when the object is visible; ``webdav://``
        puts to a temporary name and moves it into place instead. With an expected
        sha256, the file is read and checked once before the PUT."""
        url = parse_url(url)
        if not url.basename or url.path.endswith("/"):
            raise PermanentError(
                f"PUT {url}: the URL names a directory, not a file", url=str(url), plugin=self.name
            )
        target = self.target(url)
        if source.expected_sha256:
            # a PUT replaces the object at once: check the sum before anything is sent,
            # so that a mismatch leaves what is there alone
            for _ in source.chunks():
                pass
            source.verify()
        self.put_body(source, url, target, progress)
        try:
            source.verify()
        except TransferError:  # the file changed while it was sent: what arrived is wrong
            self.delete_quietly(url, target)
            raise

    def put_body(
        self,
        source: Source,
        url: URL,
        target: str,
        progress: Callable[[int], None] | None,
        ok: Callable[[int], bool] | None = None,
    ) -> int:
        """PUT the source's bytes to ``target``; the status (a 2xx, or one ``ok`` takes)."""
        try:
            response = self.send(
                "PUT",
                url,
                target,
                content=counted(source.chunks(), progress),
                headers={"Content-Length": str(source.size)},
                ok=ok,
            )
        except TransferError as exc:
            if source.bytes_read > source.size or source.changed():  # not the server's fault
                raise IncompleteTransfer(
                    f"PUT {url}: {source.path} changed while it was read ({exc})",
                    url=str(url),
                    plugin=self.name,
                ) from exc
            raise
        return response.status_code

    def delete_quietly(self, url: URL, target: str) -> None:
        """DELETE ``target``, ignoring any failure (the original error matters more)."""
        try:
            self._client.request("DELETE", target, auth=self.auth(url))
        except Exception:
            pass


def counted(chunks: Iterator[bytes], progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """The chunks, reporting each one's size to ``progress``."""
    if progress is None:
        yield from chunks
        return
    for chunk in chunks:
        yield chunk
        progress(len(chunk))


def _spliceable(conn: http.client.HTTPConnection) -> bool:
    """Whether ``conn`` is a plain TCP socket that ``os.splice`` can read (not TLS)."""
    import os
    import socket

    return hasattr(os, "splice") and type(conn.sock) is socket.socket


class _GetState:
    """What one ``get`` learned across its requests."""

    __slots__ = ("parallel", "parallel_failed", "resumable", "resumes")

    def __init__(self) -> None:
        self.resumable = False
        self.resumes = 0
        #: the parallel download this get made (the tests read its counters)
        self.parallel: object | None = None
        #: a parallel download failed: resume on one stream
        self.parallel_failed = False
