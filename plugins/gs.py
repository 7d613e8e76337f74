"""``gs://bucket/path/to/object``: Google Cloud Storage through google-cloud-storage.

* ``get`` reads the object's metadata (size, generation, the ``sha256`` that
  our ``put`` stored), then streams the stored bytes of exactly that
  generation into the sink with one ``GET`` (``Range`` from ``sink.offset``
  to resume), and compares the sink's sha256 with the stored one.
* ``put`` never lets a wrong object become visible. Objects up to
  ``gs.resumable_threshold`` are read into memory (hashing as they are
  read), :meth:`Source.verify` is called, and only then one multipart upload
  sends bytes and ``{"sha256": hex}`` metadata together. Larger objects go up
  as a resumable upload in ``gs.chunk_size`` chunks read sequentially from
  :meth:`Source.reader`; the read that reaches the end of the file calls
  :meth:`Source.verify` *before* the library sends that final chunk, which is
  the request that commits the object, so a mismatch leaves only an
  abandoned (invisible) upload session.
* ``copy`` is a server-side rewrite (loop with the rewrite token).

google-cloud-storage is imported on first use only (it costs ~0.4 s). The
library's exceptions are mapped to the ferry error tree in one place,
:func:`map_gcs_exceptions`. See docs/protocols/gs.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    ConnectError,
    IncompleteTransfer,
    IntegrityError,
    NotFound,
    PermanentError,
    PermissionDenied,
    ThrottledError,
    TransferError,
    TransferTimeout,
    TransientError,
    UnsupportedScheme,
)
from .protocol import Protocol, ProtocolContext, Sink, Source, Stat
from .settings import load_settings, parse_bool
from .url import URL, parse_url, redact

if TYPE_CHECKING:
    import requests
    from google.cloud import storage

__all__ = ["GsProtocol", "GsSettings", "map_gcs_exceptions"]

PLUGIN = "gs"
MiB = 1 << 20
#: the library's resumable-upload chunks must be multiples of this
CHUNK_ALIGN = 256 * 1024
#: read size of a download's body stream
READ_SIZE = MiB
#: times one ``get`` picks up a dropped body where it stopped
MAX_RESUMES = 3
OCTET_STREAM = "application/octet-stream"
#: the object metadata key that holds the sha256 hex digest
SHA256_KEY = "sha256"


# -- settings -----------------------------------------------------------------


@dataclass(frozen=True)
class GsSettings:
    """Tunables, from ``context.settings["gs.<name>"]``, else ``$FERRY_GS_<NAME>``."""

    #: objects up to this size go up in one multipart request (read into memory first)
    resumable_threshold: int = field(default=8 * MiB, metadata={"size": True})
    #: chunk of a resumable upload (rounded up to a multiple of 256 KiB); held in memory
    chunk_size: int = field(default=32 * MiB, metadata={"size": True})
    #: seconds the library may spend retrying one call (429, 5xx, dropped connections)
    retry_timeout: float = 30.0
    #: ``mkdir gs://bucket/...`` creates a missing bucket
    create_bucket: bool = False

    @classmethod
    def from_context(cls, context: ProtocolContext) -> GsSettings:
        settings = load_settings(cls, context, "gs")
        chunk = max(CHUNK_ALIGN, -(-settings.chunk_size // CHUNK_ALIGN) * CHUNK_ALIGN)
        if chunk != settings.chunk_size:
            settings = dataclasses.replace(settings, chunk_size=chunk)
        return settings


# -- error mapping ------------------------------------------------------------

_UPLOAD_ID = re.compile(r"(upload_?id=)[^&\s'\"]+", re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_TOKEN_FIELD = re.compile(
    r"(['\"]?(?:access_token|id_token|refresh_token)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"
)


def _scrub(text: str) -> str:
    """Mask upload session ids, bearer tokens and signed URL parts in ``text``."""
    text = redact(text)
    text = _UPLOAD_ID.sub(r"\1***", text)
    text = _BEARER.sub(r"\1***", text)
    return _TOKEN_FIELD.sub(r"\1***", text)


def _cause(exc: BaseException) -> str:
    """One line describing ``exc``, secrets masked, at most ~300 characters."""
    message = getattr(exc, "message", None)
    code = getattr(exc, "code", None)
    text = str(message) if isinstance(message, str) and message else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    if isinstance(code, int) and not text.startswith(str(code)):
        text = f"{code} {text}"
    text = _scrub(text)
    return text if len(text) <= 300 else text[:297] + "..."


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status behind a library exception, if it has one."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _error_for_status(
    status: int, msg: str, kw: dict[str, Any], retry_after: float | None
) -> TransferError:
    if status == 404:
        return NotFound(msg, **kw)
    if status == 401:
        return AuthError(msg, **kw)
    if status == 403:
        return PermissionDenied(msg, **kw)
    if status in (429, 503):
        return ThrottledError(msg, retry_after=retry_after, **kw)
    if status in (408, 412) or status >= 500:
        # 412: the object changed between our stat and the request (generation moved)
        return TransientError(msg, **kw)
    return PermanentError(msg, **kw)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value and str(value).strip().isdigit():
        return float(value)
    return None


@contextlib.contextmanager
def map_gcs_exceptions(url: URL, what: str = "GET") -> Iterator[None]:
    """Turn google-cloud-storage, google-auth, requests and urllib3 exceptions
    into the ferry error tree; messages name the redacted URL and the cause."""
    try:
        yield
    except TransferError:
        raise
    except Exception as exc:
        mapped = _map_exception(exc, url, what)
        if mapped is exc:
            raise
        raise mapped from exc


def _map_exception(exc: BaseException, url: URL, what: str) -> Exception:
    """The ferry error for ``exc`` (``exc`` itself when it is not the library's)."""
    import requests
    import urllib3.exceptions
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from google.cloud.storage import exceptions as gcs_exc

    where = f"{what} {url}"
    kw: dict[str, Any] = {"url": str(url), "plugin": PLUGIN}
    if isinstance(exc, api.RetryError) and exc.cause is not None:
        inner = _map_exception(exc.cause, url, what)
        if isinstance(inner, TransferError):
            inner.message += " (library retries exhausted)"
            inner.args = (inner.message,)
            return inner
    if isinstance(exc, api.RetryError):
        return TransferTimeout(f"{where}: {_cause(exc)}", **kw)
    if isinstance(exc, gcs_exc.DataCorruption):
        return IncompleteTransfer(f"{where}: corrupted in transit: {_cause(exc)}", **kw)
    if isinstance(exc, (api.GoogleAPICallError, gcs_exc.InvalidResponse)):
        status = _status_of(exc)
        if status is not None:
            return _error_for_status(status, f"{where}: {_cause(exc)}", kw, _retry_after(exc))
        return TransientError(f"{where}: {_cause(exc)}", **kw)
    if isinstance(exc, auth.DefaultCredentialsError):
        return AuthError(
            f"{where}: no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS, or"
            f" `credentials = /path/to/key.json` in the credentials file): {_cause(exc)}",
            **kw,
        )
    if isinstance(exc, auth.RefreshError):
        return AuthError(f"{where}: cannot get an access token: {_cause(exc)}", **kw)
    if isinstance(exc, auth.TransportError):
        return ConnectError(f"{where}: cannot reach the token service: {_cause(exc)}", **kw)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ConnectError(f"{where}: cannot connect: {_cause(exc)}", **kw)
    if isinstance(
        exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    ):
        return TransferTimeout(f"{where}: timed out: {_cause(exc)}", **kw)
    if isinstance(
        exc,
        (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.IncompleteRead,
            urllib3.exceptions.ReadTimeoutError,
        ),
    ):
        return IncompleteTransfer(f"{where}: connection lost: {_cause(exc)}", **kw)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ConnectError(f"{where}: cannot connect: {_cause(exc)}", **kw)
    if isinstance(exc, (ConnectionError, urllib3.exceptions.HTTPError)):
        # the library raises the builtin ConnectionError for a body cut short
        return IncompleteTransfer(f"{where}: connection lost: {_cause(exc)}", **kw)
    if isinstance(exc, requests.exceptions.RequestException):
        return PermanentError(f"{where}: {_cause(exc)}", **kw)
    if isinstance(exc, auth.GoogleAuthError):
        return AuthError(f"{where}: {_cause(exc)}", **kw)
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


class _ScrubLog(logging.Filter):
    """Mask resumable-upload session ids in the request lines urllib3 logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                a if isinstance(a, (int, float)) else _scrub(str(a)) for a in record.args
            )
        return True


_LOG_FILTER = _ScrubLog()
_LOG_LOCK = threading.Lock()


def _install_log_filter() -> None:
    with _LOG_LOCK:
        for name in ("urllib3.connectionpool", "google.cloud.storage"):
            logger = logging.getLogger(name)
            if _LOG_FILTER not in logger.filters:
                logger.addFilter(_LOG_FILTER)


# -- helpers --------------------------------------------------------------------


def _split(url: URL, *, need_name: bool = True) -> tuple[str, str]:
    """``(bucket, object name)`` of ``gs://bucket/name``."""
    bucket = url.host
    if not bucket:
        raise PermanentError(
            f"{url}: no bucket name (gs://BUCKET/OBJECT)", url=str(url), plugin=PLUGIN
        )
    name = url.path[1:] if url.path.startswith("/") else url.path
    if need_name and (not name or name.endswith("/")):
        raise PermanentError(
            f"{url}: no object name (gs://BUCKET/OBJECT)", url=str(url), plugin=PLUGIN
        )
    return bucket, name


def _stat_of(blob: storage.Blob) -> Stat:
    sha = (blob.metadata or {}).get(SHA256_KEY)
    updated = blob.updated
    return Stat(
        size=blob.size,
        mtime=updated.timestamp() if updated is not None else None,
        checksums={"sha256": sha} if sha else {},
    )


class _VerifyingReader:
    """The file object a resumable upload reads: hashes through the Source, reports
    progress, and calls :meth:`Source.verify` on the read that reaches the end,
    before the library sends that (final, committing) chunk."""

    def __init__(self, source: Source, progress: Callable[[int], None] | None) -> None:
        self._source = source
        self._inner = source.reader()
        self._progress = progress
        self.verified: str | None = None
        self.mode = "rb"
        self.name = source.path

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        if data and self._progress is not None:
            self._progress(len(data))
        at_end = n is None or n < 0 or len(data) < n or self._source.bytes_read >= self._source.size
        if at_end and self.verified is None:
            self.verified = self._source.verify()
        return data

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        new = self._inner.seek(pos, whence)
        if new == 0:
            self.verified = None
        return new

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._inner.close()

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def __enter__(self) -> _VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _ClientKey:
    """What makes two URLs share a ``storage.Client``."""

    project: str | None
    credentials: str | None
    anonymous: bool
    emulator: str | None


# -- the protocol -----------------------------------------------------------------


class GsProtocol(Protocol):
    """Google Cloud Storage. One ``storage.Client`` per (project, credentials),
    shared by every engine thread."""

    name = "gs"
    schemes = ("gs",)

    def __init__(self, context: ProtocolContext | None = None) -> None:
        super().__init__(context)
        self.settings = GsSettings.from_context(self.context)
        self._clients: dict[_ClientKey, storage.Client] = {}
        self._lock = threading.Lock()
        self._retry: Any = None
        self._retry_ready = False

    def __repr__(self) -> str:
        return f"GsProtocol(clients={len(self._clients)}, concurrency={self.context.concurrency})"

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    # -- clients ---------------------------------------------------------------

    def _config(self, url: URL) -> dict[str, str]:
        """Credentials-file keys for ``url``: the ``[gs]`` section, overridden by the
        sections that match the URL (``[gs://bucket]``, ``[bucket]``)."""
        creds = self.context.credentials
        return {**creds.section("gs"), **creds.for_url(url)}

    def _key(self, url: URL) -> _ClientKey:
        conf = self._config(url)
        path = conf.get("credentials") or None
        anonymous = parse_bool(str(conf.get("anonymous", "false")))
        return _ClientKey(
            project=conf.get("project") or None,
            credentials=os.path.expanduser(str(path)) if path else None,
            anonymous=anonymous,
            emulator=os.environ.get("STORAGE_EMULATOR_HOST") or None,
        )

    def _client(self, url: URL) -> storage.Client:
        key = self._key(url)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                with map_gcs_exceptions(url, "connect"):
                    client = self._make_client(key, url)
                self._clients[key] = client
        return client

    def _make_client(self, key: _ClientKey, url: URL) -> storage.Client:
        from google.cloud import storage

        _install_log_filter()
        credentials: Any = None
        project = key.project
        if key.anonymous:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        elif key.credentials:
            from google.oauth2 import service_account

            try:
                credentials = service_account.Credentials.from_service_account_file(
                    key.credentials, scopes=storage.Client.SCOPE
                )
            except (OSError, ValueError, KeyError) as exc:
                # the message may quote the key file: name the file and the kind of error only
                detail = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
                raise AuthError(
                    f"{url}: cannot use service-account file {key.credentials}: {detail}",
                    url=str(url),
                    plugin=PLUGIN,
                ) from None
            project = project or credentials.project_id
        kwargs: dict[str, Any] = {"credentials": credentials}
        if project:
            kwargs["project"] = project
        client = storage.Client(**kwargs)
        self._size_pool(client)
        return client

    def _size_pool(self, client: storage.Client) -> None:
        """Give the client's HTTP session a connection pool for ``concurrency`` threads."""
        from requests.adapters import HTTPAdapter

        size = max(10, 2 * self.context.concurrency)
        try:
            session = client._http  # the library's AuthorizedSession, built on first use
        except AttributeError:  # pragma: no cover - a library without it keeps its pool
            return
        for prefix in ("https://", "http://"):
            session.mount(prefix, HTTPAdapter(pool_connections=4, pool_maxsize=size))

    def _retry_policy(self) -> Any:
        """The library's default retry, bounded by ``gs.retry_timeout`` (None: no retries)."""
        if not self._retry_ready:
            from google.cloud.storage.retry import DEFAULT_RETRY

            t = self.settings.retry_timeout
            self._retry = DEFAULT_RETRY.with_timeout(t) if t > 0 else None
            self._retry_ready = True
        return self._retry

    def _timeout(self) -> float:
        return self.context.timeout

    def _blob_or_none(
        self, client: storage.Client, bucket: str, name: str, url: URL, what: str
    ) -> storage.Blob | None:
        with map_gcs_exceptions(url, what):
            return client.bucket(bucket).get_blob(
                name, timeout=self._timeout(), retry=self._retry_policy()
            )

    def _blob(
        self, client: storage.Client, bucket: str, name: str, url: URL, what: str
    ) -> storage.Blob:
        blob = self._blob_or_none(client, bucket, name, url, what)
        if blob is None:
            raise self._missing_bucket(client, bucket, url, what) or NotFound(
                f"{what} {url}: no such object", url=str(url), plugin=PLUGIN
            )
        return blob

    def _missing_bucket(
        self, client: storage.Client, bucket: str, url: URL, what: str
    ) -> NotFound | None:
        """After a 404: ``NotFound`` naming the bucket when it is the bucket that is
        missing (one more request, on that failure path only), else None."""
        try:
            exists = client.bucket(bucket).exists(timeout=self._timeout(), retry=None)
        except Exception:  # the first error is the one to report
            return None
        if exists:
            return None
        return NotFound(f"{what} {url}: no such bucket {bucket!r}", url=str(url), plugin=PLUGIN)

    # -- get ---------------------------------------------------------------------

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        url = parse_url(url)
        bucket, name = _split(url)
        client = self._client(url)
        blob = self._blob(client, bucket, name, url, "GET")
        size = blob.size or 0
        sink.set_size(size)
        if sink.offset > size:
            sink.reset()
        resumes = 0
        while sink.offset < size:
            before = sink.offset
            try:
                with map_gcs_exceptions(url, "GET"):
                    self._read_body(client, blob, url, sink, progress)
            except (IncompleteTransfer, TransferTimeout):
                if sink.offset == before or resumes >= MAX_RESUMES:
                    raise
                resumes += 1
                continue
            if sink.offset < size:
                if sink.offset == before or resumes >= MAX_RESUMES:
                    raise IncompleteTransfer(
                        f"GET {url}: body ended at byte {sink.offset} of {size}",
                        url=str(url),
                        plugin=PLUGIN,
                    )
                resumes += 1
        if sink.offset != size:
            raise IncompleteTransfer(
                f"GET {url}: got {sink.offset} bytes, the object has {size}",
                url=str(url),
                plugin=PLUGIN,
            )
        stored = (blob.metadata or {}).get(SHA256_KEY)
        if stored and stored.lower() != sink.sha256:
            raise IntegrityError(
                f"GET {url}: sha256 {sink.sha256} does not match the sha256 {stored}"
                " stored in the object's metadata",
                expected=stored.lower(),
                actual=sink.sha256,
                url=str(url),
                plugin=PLUGIN,
            )

    def _media_url(self, blob: storage.Blob) -> str:
        """The download URL of exactly this generation of the object."""
        link = blob.media_link
        if not link:
            link = blob._get_download_url(blob.client)  # pragma: no cover - the API sends mediaLink
        if blob.generation is not None and "generation=" not in link:
            link += ("&" if "?" in link else "?") + f"generation={blob.generation}"
        return link

    def _read_body(
        self,
        client: storage.Client,
        blob: storage.Blob,
        url: URL,
        sink: Sink,
        progress: Callable[[int], None] | None,
    ) -> None:
        """One media GET from ``sink.offset``; writes what arrives (maybe less than all)."""
        from google.api_core import exceptions as api

        start = sink.offset
        # "gzip" asks for the bytes as stored: no decompressive transcoding, so the size
        # and sha256 are those of the stored object (the library's raw_download does the same)
        headers = {"Accept-Encoding": "gzip"}
        if start:
            headers["Range"] = f"bytes={start}-"
        session: requests.Session = client._http
        response = session.get(
            self._media_url(blob), headers=headers, stream=True, timeout=self._timeout()
        )
        with response:
            status = response.status_code
            if status == 404:
                # the generation we stat'ed is gone: overwritten or deleted meanwhile
                raise IncompleteTransfer(
                    f"GET {url}: the object changed while it was read",
                    url=str(url),
                    plugin=PLUGIN,
                )
            if status == 416 and start and start >= (blob.size or 0):
                return
            if status not in (200, 206):
                raise api.from_http_response(response)
            if status == 206:
                first = (
                    response.headers.get("content-range", "").partition(" ")[2].partition("-")[0]
                )
                if not first.isdigit() or int(first) != start:
                    sink.reset()
                    raise IncompleteTransfer(
                        f"GET {url}: asked for bytes from {start}, got {first or '?'};"
                        " starting over",
                        url=str(url),
                        plugin=PLUGIN,
                    )
            elif start:
                sink.reset()  # the server ignored Range: take the whole body
            # a front end may gzip a response on its own: undo that, never the stored encoding
            decode = response.headers.get("content-encoding", "").lower() == "gzip" and (
                (blob.content_encoding or "").lower() != "gzip"
            )
            write = sink.write
            for chunk in response.raw.stream(READ_SIZE, decode_content=decode):
                write(chunk)
                if progress is not None:
                    progress(len(chunk))

    # -- put ---------------------------------------------------------------------

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        url = parse_url(url)
        bucket, name = _split(url)
        client = self._client(url)
        blob = client.bucket(bucket).blob(name)
        try:
            if source.size <= self.settings.resumable_threshold:
                self._put_small(blob, source, url, progress)
            else:
                self._put_resumable(blob, source, url, progress)
        except NotFound as exc:
            missing = self._missing_bucket(client, bucket, url, "PUT")
            if missing is None:
                raise
            raise missing from exc

    def _put_small(
        self,
        blob: storage.Blob,
        source: Source,
        url: URL,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Read and verify first, then one multipart request with bytes and sha256."""
        with source.reader() as reader:
            data = reader.read()
        if progress is not None and data:
            progress(len(data))
        sha = source.verify()
        blob.metadata = {SHA256_KEY: sha}
        with map_gcs_exceptions(url, "PUT"):
            blob.upload_from_file(
                io.BytesIO(data),
                size=len(data),
                content_type=OCTET_STREAM,
                timeout=self._timeout(),
                retry=self._retry_policy(),
            )

    def _put_resumable(
        self,
        blob: storage.Blob,
        source: Source,
        url: URL,
        progress: Callable[[int], None] | None,
    ) -> None:
        """A resumable upload whose final (committing) chunk is sent only after
        :meth:`Source.verify` passed."""
        expected = source.expected_sha256
        blob.chunk_size = self.settings.chunk_size
        if expected:
            blob.metadata = {SHA256_KEY: expected.lower()}
        with _VerifyingReader(source, progress) as reader, map_gcs_exceptions(url, "PUT"):
            try:
                # size=None: the library then always uses a resumable session (it would
                # pick a single multipart request for a known size under 8 MiB)
                blob.upload_from_file(
                    reader,
                    size=None,
                    content_type=OCTET_STREAM,
                    timeout=self._timeout(),
                    retry=self._retry_policy(),
                )
            except ValueError as exc:
                # the library cannot resync when the service kept less of a chunk than
                # was sent; the session is abandoned (uncommitted) and the upload retried
                raise IncompleteTransfer(
                    f"PUT {url}: resumable upload lost its place: {_cause(exc)}",
                    url=str(url),
                    plugin=PLUGIN,
                ) from exc
        sha = reader.verified or source.verify()
        if not expected:
            # the sum was not known when the upload started: add it now, guarded so
            # that a concurrent overwrite does not get our sum
            blob.metadata = {SHA256_KEY: sha}
            with map_gcs_exceptions(url, "PATCH"):
                blob.patch(
                    if_generation_match=blob.generation,
                    timeout=self._timeout(),
                    retry=self._retry_policy(),
                )

    # -- copy ----------------------------------------------------------------------

    def copy(self, src: URL, dst: URL, expected_sha256: str | None = None) -> Stat:
        src, dst = parse_url(src), parse_url(dst)
        if self._key(src) != self._key(dst):
            raise UnsupportedScheme(
                f"{src} and {dst} use different credentials: no server-side copy",
                url=str(src),
                plugin=PLUGIN,
            )
        sbucket, sname = _split(src)
        dbucket, dname = _split(dst)
        client = self._client(src)
        source = self._blob(client, sbucket, sname, src, "COPY")
        stored = (source.metadata or {}).get(SHA256_KEY)
        if expected_sha256 and not stored:
            # the service cannot tell whether the bytes are right: let the engine
            # download (and check) them, then upload
            raise UnsupportedScheme(
                f"{src} has no sha256 in its metadata: cannot verify a server-side copy",
                url=str(src),
                plugin=PLUGIN,
            )
        if expected_sha256 and stored and stored.lower() != expected_sha256.lower():
            raise IntegrityError(
                f"COPY {src}: its stored sha256 {stored} does not match the expected"
                f" {expected_sha256}",
                expected=expected_sha256,
                actual=stored.lower(),
                url=str(src),
                plugin=PLUGIN,
            )
        target = client.bucket(dbucket).blob(dname)
        token: str | None = None
        try:
            with map_gcs_exceptions(dst, "COPY"):
                while True:
                    token, _done, _total = target.rewrite(
                        source,
                        token=token,
                        if_source_generation_match=source.generation,
                        timeout=self._timeout(),
                        retry=self._retry_policy(),
                    )
                    if token is None:
                        break
        except NotFound as exc:
            missing = self._missing_bucket(client, dbucket, dst, "COPY")
            if missing is None:
                raise
            raise missing from exc
        return _stat_of(target)

    # -- stat, checksum, mkdir, remove -------------------------------------------------

    def stat(self, url: URL) -> Stat:
        url = parse_url(url)
        bucket, name = _split(url, need_name=False)
        client = self._client(url)
        if name and not name.endswith("/"):
            blob = self._blob_or_none(client, bucket, name, url, "STAT")
            if blob is not None:
                return _stat_of(blob)
        with map_gcs_exceptions(url, "STAT"):
            if not name:
                if client.bucket(bucket).exists(
                    timeout=self._timeout(), retry=self._retry_policy()
                ):
                    return Stat(is_dir=True)
            else:
                prefix = name.rstrip("/") + "/"
                blobs = client.list_blobs(
                    bucket,
                    prefix=prefix,
                    max_results=1,
                    timeout=self._timeout(),
                    retry=self._retry_policy(),
                )
                if any(True for _ in blobs):
                    return Stat(is_dir=True)
        raise NotFound(f"STAT {url}: no such object", url=str(url), plugin=PLUGIN)

    def checksum(self, url: URL) -> str | None:
        url = parse_url(url)
        bucket, name = _split(url)
        blob = self._blob(self._client(url), bucket, name, url, "STAT")
        stored = (blob.metadata or {}).get(SHA256_KEY)
        return stored.lower() if stored else None

    def mkdir(self, url: URL) -> None:
        """Object stores have no directories: nothing to do, unless ``gs.create_bucket``
        is set, then a missing bucket is created."""
        if not self.settings.create_bucket:
            return
        url = parse_url(url)
        from google.api_core import exceptions as api

        bucket, _ = _split(url, need_name=False)
        client = self._client(url)
        with map_gcs_exceptions(url, "MKDIR"):
            handle = client.bucket(bucket)
            if handle.exists(timeout=self._timeout(), retry=self._retry_policy()):
                return
            with contextlib.suppress(api.Conflict):  # created meanwhile by someone else
                client.create_bucket(handle, timeout=self._timeout(), retry=self._retry_policy())

    def remove(self, url: URL, recursive: bool = False) -> None:
        from google.api_core import exceptions as api

        url = parse_url(url)
        bucket, name = _split(url, need_name=False)
        if not name and not recursive:
            raise PermanentError(
                f"REMOVE {url}: that is a whole bucket (remove recursively to empty it)",
                url=str(url),
                plugin=PLUGIN,
            )
        client = self._client(url)
        handle = client.bucket(bucket)
        names: list[str] = [name] if name and not name.endswith("/") else []
        with map_gcs_exceptions(url, "REMOVE"):
            if recursive:
                prefix = name.rstrip("/") + "/" if name else ""
                try:
                    listed = client.list_blobs(
                        bucket,
                        prefix=prefix or None,
                        timeout=self._timeout(),
                        retry=self._retry_policy(),
                    )
                    names += [b.name for b in listed]
                except api.NotFound:  # no such bucket: nothing to remove
                    return
            for each in names:
                with contextlib.suppress(api.NotFound):
                    handle.blob(each).delete(timeout=self._timeout(), retry=self._retry_policy())
