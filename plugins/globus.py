"""``go://`` - third-party copies between Globus collections (globus-sdk).

A URL is written as Pegasus writes Globus URLs: ``go://<collection-id>/path``
(the host is the collection or endpoint UUID; the path may start with
``/~/`` for the home directory). The Globus Transfer service moves the bytes
from one collection to the other; no byte passes through this process. So the
protocol can ``copy`` (go:// -> go://), ``stat``, ``mkdir`` and ``remove``,
but neither ``get`` nor ``put``: a file:// <-> go:// transfer fails with
:class:`UnsupportedScheme` (put the local side on a Globus Connect Personal
collection and use its go:// URL instead).

**Batching.** The engine calls ``copy()`` once per file, from many threads.
Globus works in *tasks* (at most 3 active per user, each polled), so copies
between the same two collections are gathered into one task: the first call
of a batch becomes its leader, waits ``globus.batch_window`` seconds (or until
``globus.batch_max`` files joined), submits one ``TransferData`` with one item
per file, polls the task with backoff until it ends, and then hands each
waiting caller its own outcome:

* a file the task copied, or found identical at the destination (sync level
  ``checksum``) -> the caller's ``Stat``;
* a file skipped with a source error (``skip_source_errors``; the
  ``skipped_errors`` list names it) -> that file's mapped error;
* a file named by an error event of a FAILED task -> the event's mapped error
  (checksum mismatch -> IntegrityError, permission -> PermissionDenied, ...);
* any other file of a FAILED task -> a TransientError (it was not copied
  because of another file), so the engine tries it again in a later batch.

Each item carries ``checksum_algorithm = SHA256`` and, when the caller knows
it, the expected sha256 as the item's ``external_checksum``; with
``verify_checksum`` Globus checks both ends, so a successful copy returns
that sha256 in its ``Stat``.

Settings (``context.settings``, else the environment variable
``FERRY_GLOBUS_<NAME>``): ``globus.batch_window`` (0.5 s),
``globus.batch_max`` (1000), ``globus.poll_interval`` (2 s, grows 1.5x per
poll), ``globus.poll_max`` (30 s), ``globus.task_timeout`` (3600 s; the task
is then cancelled), ``globus.sync_level`` (checksum),
``globus.checksum_algorithm`` (SHA256), ``globus.verify_checksum`` (true),
``globus.http_retries`` (3, the SDK's own retries of one request),
``globus.notify`` (false: no e-mail per task).

Credentials (never logged): ``transfer_token`` (an access token for the
Transfer service), or ``client_id`` + ``client_secret`` of a confidential app,
from section ``[go://<collection-id>]`` or ``[go]`` of the credentials file;
else ``$GLOBUS_TRANSFER_TOKEN``, else ``$GLOBUS_CLIENT_ID`` +
``$GLOBUS_CLIENT_SECRET``. See docs/protocols/globus.md.

globus_sdk is imported only when :class:`GlobusProtocol` is built. Its
exceptions are mapped once, in :func:`map_globus_exceptions`; task and
per-file fault codes in :func:`fault_error`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    ConfigError,
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
from .url import URL, redact

if TYPE_CHECKING:
    from collections.abc import Callable

    import globus_sdk

__all__ = ["GlobusProtocol", "fault_error", "map_globus_exceptions"]

log = logging.getLogger("ferry.plugins.globus")

PLUGIN = "globus"
SCHEME = "go"

#: what a file <-> go:// transfer is told
NO_STREAMING = (
    "go:// only copies between Globus collections (go:// -> go://): the Globus Transfer"
    " service moves the bytes and streams none to this machine; to move local files,"
    " serve them from a Globus Connect Personal collection and use its go:// URL"
)

_DEFAULTS: dict[str, str] = {
    "batch_window": "0.5",
    "batch_max": "1000",
    "poll_interval": "2",
    "poll_max": "30",
    "task_timeout": "3600",
    "sync_level": "checksum",
    "checksum_algorithm": "SHA256",
    "verify_checksum": "true",
    "http_retries": "3",
    "notify": "false",
}


# -- error mapping -----------------------------------------------------------


def _one_line(text: object, limit: int = 240) -> str:
    """The first non-empty line of ``text``, shortened, with URLs redacted."""
    for line in str(text or "").splitlines():
        line = " ".join(line.split())
        if line:
            return redact(line[:limit])
    return ""


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def api_error(exc: globus_sdk.GlobusAPIError, url: URL | str, what: str) -> TransferError:
    """The ferry error for an API error answer (Transfer or Auth)."""
    status = exc.http_status
    code = str(exc.code or "")
    cause = f"{status} {code}".strip()
    message = _one_line(exc.message)
    if message:
        cause += f": {message}"
    msg = f"{what} {url}: {cause}"
    kw: dict[str, Any] = {"url": str(url), "plugin": PLUGIN}
    if "ConsentRequired" in code:
        return AuthError(f"{msg} (this identity or app must consent to data_access)", **kw)
    if status == 404 or "NotFound" in code:
        return NotFound(msg, **kw)
    if (
        status == 401
        or "AuthenticationFailed" in code
        or code in ("invalid_client", "invalid_grant")
    ):
        return AuthError(msg, **kw)
    if status == 403 or "PermissionDenied" in code:
        return PermissionDenied(msg, **kw)
    if status in (429, 503):
        headers = getattr(exc, "headers", {}) or {}
        return ThrottledError(msg, retry_after=_retry_after(headers.get("Retry-After")), **kw)
    if status >= 500:
        return TransientError(msg, **kw)
    return PermanentError(msg, **kw)


@contextlib.contextmanager
def map_globus_exceptions(url: URL | str, what: str = "") -> Iterator[None]:
    """Turn globus_sdk exceptions into the ferry error tree, naming the redacted URL.

    ``url`` may be a URL or, for a batch, a description such as
    ``go://A -> go://B``; ``what`` names the operation.
    """
    import globus_sdk

    try:
        yield
    except TransferError:
        raise
    except globus_sdk.GlobusAPIError as exc:
        raise api_error(exc, url, what) from exc
    except globus_sdk.GlobusConnectionTimeoutError as exc:
        raise ConnectError(
            f"{what} {url}: cannot connect to Globus: {_one_line(exc)}", url=str(url), plugin=PLUGIN
        ) from exc
    except globus_sdk.GlobusTimeoutError as exc:
        raise TransferTimeout(
            f"{what} {url}: Globus did not answer in time: {_one_line(exc)}",
            url=str(url),
            plugin=PLUGIN,
        ) from exc
    except globus_sdk.NetworkError as exc:  # GlobusConnectionError and the rest
        raise ConnectError(
            f"{what} {url}: cannot reach Globus: {_one_line(exc)}", url=str(url), plugin=PLUGIN
        ) from exc
    except globus_sdk.GlobusError as exc:
        raise PermanentError(
            f"{what} {url}: {type(exc).__name__}: {_one_line(exc)}", url=str(url), plugin=PLUGIN
        ) from exc


#: task event / skipped-error codes (Transfer API "task events") -> ferry classes
_FAULTS: dict[str, type[TransferError]] = {
    "FILE_NOT_FOUND": NotFound,
    "PERMISSION_DENIED": PermissionDenied,
    "ACL_CHANGED": PermissionDenied,
    "AUTH": AuthError,
    "NO_CREDENTIALS": AuthError,
    "INVALID_SERVICE_CREDENTIAL": AuthError,
    "GSI_DN_MISMATCH": AuthError,
    "EXTERNAL_CHECKSUM_MISMATCH": IntegrityError,
    "VERIFY_CHECKSUM": IntegrityError,
    "QUOTA_EXCEEDED": PermanentError,
    "NO_SPACE_LEFT": PermanentError,
    "AMBIGUOUS_PATH": PermanentError,
    "INVALID_PATH_NAME": PermanentError,
    "INVALID_SYMLINK": PermanentError,
    "IS_A_DIRECTORY": PermanentError,
    "IS_A_FILE": PermanentError,
    "NOT_A_DIRECTORY": PermanentError,
    "NOT_A_FILE": PermanentError,
    "NOT_A_SYMLINK": PermanentError,
    "CANCELED": PermanentError,
    "CONNECT_FAILED": ConnectError,
    "CONNECTION_BROKEN": ConnectError,
    "CONNECTION_RESET": ConnectError,
    "GC_NOT_CONNECTED": ConnectError,
    "TIMEOUT": TransferTimeout,
    "EXPIRED": TransferTimeout,
    "ENDPOINT_TOO_BUSY": ThrottledError,
    "LIMIT_EXCEEDED": ThrottledError,
    "FILE_SIZE_CHANGED": IncompleteTransfer,
    "ENDPOINT_ERROR": TransientError,
    "INTERNAL_ERROR": TransientError,
}

#: what a skipped source file is told, by error code
_SKIPPED_TEXT = {
    "FILE_NOT_FOUND": "no such file at the source",
    "PERMISSION_DENIED": "permission denied at the source",
    "AMBIGUOUS_PATH": "ambiguous path at the source",
}

_HEX64 = re.compile(r"\b[0-9a-fA-F]{64}\b")


def fault_error(
    code: str | None,
    text: str,
    *,
    url: str,
    expected_sha256: str | None = None,
    details: str = "",
) -> TransferError:
    """The ferry error for a Globus fault ``code`` (unknown codes are transient)."""
    code = (code or "UNKNOWN").upper()
    cls = _FAULTS.get(code, TransientError)
    msg = f"{text} [{code}]"
    kw: dict[str, Any] = {"url": url, "plugin": PLUGIN}
    if cls is IntegrityError:
        expected = expected_sha256 or "(the source's checksum)"
        others = [h.lower() for h in _HEX64.findall(details) if h.lower() != expected_sha256]
        return IntegrityError(
            msg, expected=expected, actual=others[0] if others else "(not reported)", **kw
        )
    return cls(msg, **kw)


def _clone(exc: TransferError, message: str, url: str) -> TransferError:
    """A copy of ``exc`` (same class and fields) with another message and URL.

    Each waiting caller raises its own exception object: one object raised in
    several threads would share (and garble) its traceback.
    """
    new = type(exc).__new__(type(exc))  # no __init__: the fields are copied below
    new.__dict__.update(exc.__dict__)
    new.args = (message,)
    new.message = message
    new.url = url
    new.__cause__ = exc.__cause__ or exc
    return new


# -- settings and credentials ----------------------------------------------


def _setting(context: ProtocolContext, name: str) -> str:
    value = context.settings.get(f"globus.{name}")
    if value is None:
        value = os.environ.get(f"FERRY_GLOBUS_{name.upper()}")
    return str(value if value is not None else _DEFAULTS[name]).strip()


def _float(context: ProtocolContext, name: str) -> float:
    text = _setting(context, name)
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"globus.{name}: not a number: {text!r}") from None


def _bool(context: ProtocolContext, name: str) -> bool:
    return _setting(context, name).lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class _Login:
    """How to authenticate: a token, or a confidential app's id and secret."""

    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """A digest naming this login (clients are cached by it, never by the secret)."""
        raw = f"{self.token}\0{self.client_id}\0{self.client_secret}"
        return hashlib.sha256(raw.encode()).hexdigest()


def _reveal(value: object) -> str | None:
    if value is None:
        return None
    reveal = getattr(value, "reveal", None)
    text = reveal() if callable(reveal) else str(value)
    return text.strip() or None


# -- batching ------------------------------------------------------------------


@dataclass
class _Item:
    """One caller's file in a batch, and the future it waits on."""

    src: URL
    dst: URL
    expected: str | None
    future: Future[Stat] = field(default_factory=Future)

    @property
    def label(self) -> str:
        return f"{self.src} -> {self.dst}"


@dataclass
class _Batch:
    """Files between one pair of collections, gathered into one Globus task."""

    src_ep: str
    dst_ep: str
    login: _Login
    items: list[_Item] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    closed: bool = False

    @property
    def where(self) -> str:
        return f"go://{self.src_ep} -> go://{self.dst_ep}"


def _path_named(path: str, text: str) -> bool:
    """Whether ``text`` (an event's details) names ``path`` as a whole path."""
    for p in {path, path.lstrip("/")}:
        if p and re.search(r"(?:^|[\s:])" + re.escape(p) + r"(?=$|\s)", text, re.M):
            return True
    return False


def _pair(doc: Any) -> tuple[str, str]:
    return (str(doc.get("source_path") or ""), str(doc.get("destination_path") or ""))


@dataclass
class _TaskReport:
    """What Globus reports about a finished task, for telling each file's outcome."""

    task_id: str
    status: str
    fatal: dict[str, Any]
    #: (source path, destination path) -> skipped_error document
    skipped: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: pairs in successful_transfers (fetched for FAILED tasks only)
    copied: set[tuple[str, str]] = field(default_factory=set)
    #: error events, newest first (FAILED tasks only)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event_naming(self, item: _Item) -> dict[str, Any] | None:
        for event in self.events:
            details = str(event.get("details") or "")
            if _path_named(item.src.path, details) or _path_named(item.dst.path, details):
                return event
        return None


# -- the protocol ------------------------------------------------------------------


class GlobusProtocol(Protocol):
    """go:// through the Globus Transfer service: batched third-party copies."""

    name = PLUGIN
    schemes = (SCHEME,)

    def __init__(self, context: ProtocolContext | None = None) -> None:
        super().__init__(context)
        import globus_sdk  # noqa: F401 - fail here (PluginUnavailable) when it is missing

        ctx = self.context
        from .settings import check_keys

        check_keys(ctx, "globus", set(_DEFAULTS))
        self.batch_window = max(0.0, _float(ctx, "batch_window"))
        self.batch_max = max(1, int(_float(ctx, "batch_max")))
        self.poll_interval = max(0.001, _float(ctx, "poll_interval"))
        self.poll_max = max(self.poll_interval, _float(ctx, "poll_max"))
        self.task_timeout = max(1.0, _float(ctx, "task_timeout"))
        self.sync_level = _setting(ctx, "sync_level").lower()
        if self.sync_level not in ("exists", "size", "mtime", "checksum"):
            raise ConfigError(
                f"globus.sync_level: {self.sync_level!r} is not exists, size, mtime or checksum"
            )
        self.checksum_algorithm = _setting(ctx, "checksum_algorithm").upper()
        self.verify_checksum = _bool(ctx, "verify_checksum")
        self.http_retries = max(0, int(_float(ctx, "http_retries")))
        self.notify = _bool(ctx, "notify")
        self._lock = threading.Lock()
        self._clients: dict[str, globus_sdk.TransferClient] = {}
        self._open: dict[tuple[str, str, str], _Batch] = {}
        self._no_stat: set[str] = set()  # collections whose servers cannot answer stat
        self._closing = threading.Event()  # set by close(): waiting tasks are cancelled

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_window={self.batch_window}, clients={len(self._clients)})"
        )

    def close(self) -> None:
        """Cancel the tasks still waited for, and close the HTTP sessions."""
        self._closing.set()
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    # -- no byte streams ---------------------------------------------------

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        raise UnsupportedScheme(
            f"cannot download {url}: {NO_STREAMING}", url=str(url), plugin=PLUGIN
        )

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        raise UnsupportedScheme(
            f"cannot upload {source.path} to {url}: {NO_STREAMING}", url=str(url), plugin=PLUGIN
        )

    # -- credentials and clients ---------------------------------------------

    def _login(self, *urls: URL) -> _Login:
        """The first login found for ``urls``.

        Sections ``[go://<id>]`` of each URL's collection (most specific
        first), then ``[go]``, then the environment; in each, a
        ``transfer_token`` wins over ``client_id`` + ``client_secret``.
        """
        creds = self.context.credentials
        env = {
            "transfer_token": os.environ.get("GLOBUS_TRANSFER_TOKEN"),
            "client_id": os.environ.get("GLOBUS_CLIENT_ID"),
            "client_secret": os.environ.get("GLOBUS_CLIENT_SECRET"),
        }
        for values in [*(creds.for_url(u) for u in urls), creds.section(SCHEME), env]:
            token = _reveal(values.get("transfer_token"))
            if token:
                return _Login(token=token)
            cid, secret = _reveal(values.get("client_id")), _reveal(values.get("client_secret"))
            if cid and secret:
                return _Login(client_id=cid, client_secret=secret)
        hosts = dict.fromkeys(u.host for u in urls)
        where = " or ".join(f"[go://{h}]" for h in hosts) or "[go://<collection-id>]"
        first = str(urls[0]) if urls else "go://"
        raise AuthError(
            f"{first}: no Globus credentials: put transfer_token (or client_id and"
            f" client_secret) in section {where} or [go] of the credentials file, or set"
            " GLOBUS_TRANSFER_TOKEN (see docs/protocols/globus.md)",
            url=first,
            plugin=PLUGIN,
        )

    def _client(self, login: _Login, where: URL | str) -> globus_sdk.TransferClient:
        """The shared TransferClient of ``login`` (one per login, built on first use)."""
        key = login.key
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                with map_globus_exceptions(where, "log in to Globus for"):
                    client = self._build_client(login)
                self._clients[key] = client
        return client

    def _build_client(self, login: _Login) -> globus_sdk.TransferClient:
        import globus_sdk
        from globus_sdk.transport import RequestsTransport, RetryConfig
        from requests.adapters import HTTPAdapter

        def transport() -> RequestsTransport:
            t = RequestsTransport(http_timeout=self.context.timeout)
            size = max(10, self.context.concurrency)
            t.session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=size))
            return t

        retry = RetryConfig(max_retries=self.http_retries, max_sleep=10)
        authorizer: globus_sdk.AccessTokenAuthorizer | globus_sdk.ClientCredentialsAuthorizer
        if login.token:
            authorizer = globus_sdk.AccessTokenAuthorizer(login.token)
        else:
            assert login.client_id and login.client_secret
            auth = globus_sdk.ConfidentialAppAuthClient(
                login.client_id,
                login.client_secret,
                app_name="ferry",
                transport=transport(),
                retry_config=RetryConfig(max_retries=self.http_retries, max_sleep=10),
            )
            authorizer = globus_sdk.ClientCredentialsAuthorizer(
                auth, globus_sdk.TransferClient.scopes.all
            )
        return globus_sdk.TransferClient(
            authorizer=authorizer, app_name="ferry", transport=transport(), retry_config=retry
        )

    def _client_for(self, url: URL) -> globus_sdk.TransferClient:
        _check(url)
        return self._client(self._login(url), url)

    # -- task polling --------------------------------------------------------

    def _deadline(self) -> datetime.datetime:
        """The deadline written into a task: Globus stops it by itself if we vanish."""
        now = datetime.datetime.now(datetime.timezone.utc)
        return (now + datetime.timedelta(seconds=self.task_timeout + 60)).replace(microsecond=0)

    def _wait(
        self, client: globus_sdk.TransferClient, task_id: str, where: URL | str
    ) -> dict[str, Any]:
        """Poll the task until it ends (SUCCEEDED or FAILED) and return its document.

        Polls start ``poll_interval`` apart and grow 1.5x up to ``poll_max``. A
        transient error while polling is tolerated (the task runs on at Globus)
        until ``task_timeout``. An INACTIVE task (expired credentials) or one
        still running at the timeout is cancelled, raising AuthError or
        TransferTimeout.
        """
        start = time.monotonic()
        interval = self.poll_interval
        problem = ""  # the last trouble Globus reported while the task stays ACTIVE
        while True:
            try:
                with map_globus_exceptions(where, f"poll Globus task {task_id} for"):
                    task = dict(client.get_task(task_id).data)
            except TransientError as exc:
                log.warning("%s (still waiting)", exc)
                task = {"status": "ACTIVE"}
            status = str(task.get("status", ""))
            if status in ("SUCCEEDED", "FAILED"):
                return task
            nice = str(task.get("nice_status") or "")
            if nice and nice not in ("OK", "Queued") and nice != problem:
                problem = nice
                detail = _one_line(task.get("nice_status_short_description"))
                log.warning(
                    "Globus task %s for %s: %s%s (Globus keeps retrying)",
                    task_id,
                    where,
                    nice,
                    f": {detail}" if detail and detail != nice else "",
                )
            if status == "INACTIVE":
                self._cancel(client, task_id)
                reason = _one_line(task.get("nice_status_short_description") or nice)
                raise AuthError(
                    f"Globus task {task_id} for {where} became INACTIVE"
                    f"{': ' + reason if reason else ''} (credentials for a collection expired"
                    " or need consent); cancelled it",
                    url=str(where),
                    plugin=PLUGIN,
                )
            waited = time.monotonic() - start
            if waited >= self.task_timeout:
                self._cancel(client, task_id)
                raise TransferTimeout(
                    f"Globus task {task_id} for {where} still {status or 'ACTIVE'} after"
                    f" {self.task_timeout:g}s (globus.task_timeout)"
                    f"{', last problem: ' + problem if problem else ''}; cancelled it",
                    url=str(where),
                    plugin=PLUGIN,
                )
            if self._closing.wait(min(interval, max(0.0, self.task_timeout - waited))):
                self._cancel(client, task_id)
                raise TransientError(
                    f"Globus task {task_id} for {where}: ferry is shutting down; cancelled it",
                    url=str(where),
                    plugin=PLUGIN,
                )
            interval = min(interval * 1.5, self.poll_max)

    @staticmethod
    def _cancel(client: globus_sdk.TransferClient, task_id: str) -> None:
        with contextlib.suppress(Exception):
            client.cancel_task(task_id)

    # -- copy ----------------------------------------------------------------

    def copy(self, src: URL, dst: URL, expected_sha256: str | None = None) -> Stat:
        """Copy ``src`` to ``dst`` (both go://) in a batched Globus task; wait for this file."""
        if src.scheme != SCHEME or dst.scheme != SCHEME:
            other = dst if src.scheme == SCHEME else src
            raise UnsupportedScheme(
                f"cannot copy {src} -> {dst}: {NO_STREAMING}", url=str(other), plugin=PLUGIN
            )
        _check(src)
        _check(dst)
        login = self._login(src, dst)
        item = _Item(src, dst, expected_sha256.lower() if expected_sha256 else None)
        batch, leader = self._join(login, item)
        if leader:
            self._lead(batch)
        return item.future.result()

    def _join(self, login: _Login, item: _Item) -> tuple[_Batch, bool]:
        """Add ``item`` to the open batch of its collection pair (or open one)."""
        key = (item.src.host, item.dst.host, login.key)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = _Batch(item.src.host, item.dst.host, login)
                self._open[key] = batch
            batch.items.append(item)
            if len(batch.items) >= self.batch_max:
                batch.closed = True
                del self._open[key]
                batch.full.set()
        return batch, leader

    def _lead(self, batch: _Batch) -> None:
        """Wait for the window, close the batch, run it, and resolve every future."""
        batch.full.wait(self.batch_window)
        with self._lock:
            if not batch.closed:
                batch.closed = True
                key = (batch.src_ep, batch.dst_ep, batch.login.key)
                if self._open.get(key) is batch:
                    del self._open[key]
        try:
            self._run(batch)
        except TransferError as exc:
            self._fail_rest(batch, exc)
        except BaseException as exc:  # a bug, or an interrupt: no caller may wait forever
            log.debug("Globus batch %s failed", batch.where, exc_info=True)
            self._fail_rest(
                batch,
                PermanentError(
                    f"{batch.where}: {type(exc).__name__}: {_one_line(exc)}",
                    url=batch.where,
                    plugin=PLUGIN,
                ),
            )
            if not isinstance(exc, Exception):
                raise
        finally:
            self._fail_rest(
                batch,
                PermanentError(f"{batch.where}: batch ended without a result", plugin=PLUGIN),
            )

    @staticmethod
    def _fail_rest(batch: _Batch, exc: TransferError) -> None:
        for item in batch.items:
            if not item.future.done():
                item.future.set_exception(
                    _clone(exc, f"{item.label}: {exc.message}", str(item.src))
                )

    def _transfer_data(self, batch: _Batch) -> globus_sdk.TransferData:
        import globus_sdk

        n = len(batch.items)
        tdata = globus_sdk.TransferData(
            batch.src_ep,
            batch.dst_ep,
            label=f"ferry {n} file{'s' if n != 1 else ''}",
            sync_level=self.sync_level,  # type: ignore[arg-type]
            verify_checksum=self.verify_checksum,
            skip_source_errors=True,  # per-file source errors come back in skipped_errors
            fail_on_quota_errors=True,
            deadline=self._deadline(),
            notify_on_succeeded=self.notify,
            notify_on_failed=self.notify,
            notify_on_inactive=self.notify,
        )
        for item in batch.items:
            external = (
                item.expected
                if item.expected and self.checksum_algorithm == "SHA256"
                else globus_sdk.MISSING
            )
            tdata.add_item(
                item.src.path,
                item.dst.path,
                checksum_algorithm=self.checksum_algorithm or globus_sdk.MISSING,
                external_checksum=external,
            )
        return tdata

    def _run(self, batch: _Batch) -> None:
        """Submit the batch as one task, wait for it, and resolve each item."""
        where = batch.where
        client = self._client(batch.login, where)
        tdata = self._transfer_data(batch)
        with map_globus_exceptions(where, "submit Globus transfer"):
            task_id = str(client.submit_transfer(tdata)["task_id"])
        log.info("Globus task %s: %d file(s) %s", task_id, len(batch.items), where)
        task = self._wait(client, task_id, where)
        report = _TaskReport(task_id, str(task.get("status")), dict(task.get("fatal_error") or {}))
        with map_globus_exceptions(where, f"read the results of Globus task {task_id} for"):
            if task.get("subtasks_skipped_errors", 1):  # absent: ask anyway
                for doc in client.paginated.task_skipped_errors(task_id).items():
                    report.skipped[_pair(doc)] = dict(doc)
            if report.status == "FAILED":
                for doc in client.paginated.task_successful_transfers(task_id).items():
                    report.copied.add(_pair(doc))
                events = client.task_event_list(
                    task_id, limit=100, query_params={"filter": "is_error:1"}
                )
                report.events = [dict(e) for e in events if e.get("is_error", True)]
        failed = self._resolve(batch, report)
        log.info(
            "Globus task %s %s: %d file(s) copied, %d failed",
            task_id,
            report.status,
            len(batch.items) - failed,
            failed,
        )

    def _resolve(self, batch: _Batch, r: _TaskReport) -> int:
        """Give each waiting caller its own outcome; return how many failed.

        In order: a file in ``skipped_errors`` gets its skip reason; a file of
        a SUCCEEDED task (copied, or already identical at the destination) or
        one in ``successful_transfers`` succeeds; a file named by an error
        event gets that event's error; any other file of the FAILED task gets
        the task's fatal error when no file was named, else a TransientError
        (it was held back by another file's failure).
        """
        failed = 0
        undecided: list[_Item] = []
        blamed = False
        for item in batch.items:
            pair = (item.src.path, item.dst.path)
            if pair in r.skipped:
                doc = r.skipped[pair]
                code = str(doc.get("error_code") or "")
                text = _SKIPPED_TEXT.get(code, code.lower().replace("_", " ") or "skipped")
                err: TransferError | None = fault_error(
                    code,
                    f"{item.label}: Globus task {r.task_id} skipped it: {text}",
                    url=str(item.src),
                    expected_sha256=item.expected,
                    details=str(doc.get("error_details") or ""),
                )
            elif r.status == "SUCCEEDED" or pair in r.copied:
                item.future.set_result(self._stat_of(item))
                continue
            elif (event := r.event_naming(item)) is not None:
                blamed = True
                details = str(event.get("details") or "")
                err = fault_error(
                    event.get("code"),
                    f"{item.label}: Globus task {r.task_id} failed on it:"
                    f" {_one_line(event.get('description') or details)}",
                    url=str(item.src),
                    expected_sha256=item.expected,
                    details=details,
                )
            else:
                undecided.append(item)
                continue
            item.future.set_exception(err)
            failed += 1
        code = r.fatal.get("code")
        text = _one_line(r.fatal.get("description")) or "task FAILED"
        for item in undecided:
            if blamed:
                err = TransientError(
                    f"{item.label}: not copied: Globus task {r.task_id} failed on another file"
                    f" ({text} [{code or 'UNKNOWN'}])",
                    url=str(item.src),
                    plugin=PLUGIN,
                )
            else:
                err = fault_error(
                    code,
                    f"{item.label}: Globus task {r.task_id} failed: {text}",
                    url=str(item.src),
                    expected_sha256=item.expected,
                )
            item.future.set_exception(err)
            failed += 1
        return failed

    def _stat_of(self, item: _Item) -> Stat:
        """What a successful copy reports: the sha256 when Globus verified it."""
        verified = bool(item.expected) and self.checksum_algorithm == "SHA256"
        return Stat(checksums={"sha256": item.expected} if verified and item.expected else {})

    # -- stat / mkdir / remove -------------------------------------------------

    def stat(self, url: URL) -> Stat:
        """``operation_stat``; on servers that cannot stat, a listing of the parent."""
        import globus_sdk

        client = self._client_for(url)
        ep, path = url.host, url.path or "/"
        with map_globus_exceptions(url, "stat"):
            if ep not in self._no_stat:
                try:
                    return _stat_from(dict(client.operation_stat(ep, path).data))
                except globus_sdk.TransferAPIError as exc:
                    if not _stat_unsupported(exc):
                        raise
                    log.debug("%s: stat unsupported (%s); listing the parent", url, exc.code)
                    self._no_stat.add(ep)
            return self._stat_by_listing(client, url)

    @staticmethod
    def _stat_by_listing(client: globus_sdk.TransferClient, url: URL) -> Stat:
        path = url.path.rstrip("/")
        if not path or path in ("/~", "~"):
            return Stat(is_dir=True)
        parent, _, name = path.rpartition("/")
        parent = parent or "/"
        kw: dict[str, Any] = {}
        if "," not in name:
            kw["filter"] = f"name:={name}"
        for doc in client.operation_ls(url.host, path=parent, **kw):
            if doc.get("name") == name:
                return _stat_from(dict(doc))
        raise NotFound(f"stat {url}: no such file", url=str(url), plugin=PLUGIN)

    def mkdir(self, url: URL) -> None:
        """``operation_mkdir``, parents first when missing; an existing directory is fine."""
        client = self._client_for(url)
        path = url.path.rstrip("/") or "/"
        self._mkdir(client, url, path, depth=0)

    def _mkdir(self, client: globus_sdk.TransferClient, url: URL, path: str, depth: int) -> None:
        import globus_sdk

        with map_globus_exceptions(url, "mkdir"):
            try:
                client.operation_mkdir(url.host, path)
                return
            except globus_sdk.TransferAPIError as exc:
                code = str(exc.code or "")
                if "Exists" in code:
                    return
                parent = path.rpartition("/")[0]
                missing = exc.http_status == 404 or "NotFound" in code
                if not missing or "Endpoint" in code or parent in ("", "/", "/~") or depth > 64:
                    raise
            self._mkdir(client, url, parent, depth + 1)
            try:
                client.operation_mkdir(url.host, path)
            except globus_sdk.TransferAPIError as exc:
                if "Exists" not in str(exc.code or ""):
                    raise

    def remove(self, url: URL, recursive: bool = False) -> None:
        """A Globus delete task for the path (missing is fine), waited for."""
        import globus_sdk

        client = self._client_for(url)
        ddata = globus_sdk.DeleteData(
            url.host,
            label="ferry remove",
            recursive=recursive,
            ignore_missing=True,
            deadline=self._deadline(),
            notify_on_succeeded=self.notify,
            notify_on_failed=self.notify,
            notify_on_inactive=self.notify,
        )
        ddata.add_item(url.path or "/")
        with map_globus_exceptions(url, "submit Globus delete of"):
            task_id = str(client.submit_delete(ddata)["task_id"])
        task = self._wait(client, task_id, url)
        if task.get("status") == "FAILED":
            fatal = task.get("fatal_error") or {}
            raise fault_error(
                fatal.get("code"),
                f"remove {url}: Globus task {task_id} failed: "
                f"{_one_line(fatal.get('description')) or 'FAILED'}",
                url=str(url),
            )


def _check(url: URL) -> None:
    if url.scheme != SCHEME or not url.host:
        raise UnsupportedScheme(
            f"{url}: a Globus URL is go://<collection-id>/path", url=str(url), plugin=PLUGIN
        )


def _stat_unsupported(exc: globus_sdk.TransferAPIError) -> bool:
    """Whether a stat error says the server cannot stat (rather than: no such path)."""
    code = str(exc.code or "")
    if any(s in code for s in ("NotFound", "PermissionDenied", "Authentication", "Consent")):
        return False
    return exc.http_status in (400, 405, 501) or "NotSupported" in code


def _parse_time(value: object) -> float | None:
    if not value:
        return None
    try:
        when = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _stat_from(doc: dict[str, Any]) -> Stat:
    size = doc.get("size")
    return Stat(
        size=int(size)
        if isinstance(size, int) or (isinstance(size, str) and size.isdigit())
        else None,
        mtime=_parse_time(doc.get("last_modified")),
        is_dir=doc.get("type") == "dir",
    )
