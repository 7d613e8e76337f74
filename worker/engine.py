"""The transfer engine: parallel, retried, integrity-checked, atomic.

For every :class:`~ferry.worker.request.TransferRequest` the engine

1. walks the sources by priority (replica fallback); a permanent error
   (404, permission denied, checksum mismatch) moves on to the next source and
   that source is not tried again;
2. repeats the walk, after an exponential backoff with jitter, while any
   source failed transiently, up to ``max_attempts`` rounds;
3. picks a route per (source, destination) pair:

   ========================  ==================================================
   ``symlink``               destination ``symlink://`` (or ``--symlink`` and
                             both local): an atomic ``ln -sf``
   ``move``                  destination ``moveto://``
   ``download``              local destination: the source protocol's ``get``
                             into a :class:`Sink` beside the destination
   ``upload``                local source: the destination protocol's ``put``
   ``third-party``           one protocol serves both and can copy server-side
   ``two-stage``             anything else: ``get`` into a local temporary
                             file, then ``put`` it
   ========================  ==================================================

4. checks the sha256 computed while the bytes streamed against the expected
   one, and only then renames the temporary file onto the destination; a
   failure leaves nothing at the destination.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ferry.plugins.errors import (
    FerryError,
    IncompleteTransfer,
    IntegrityError,
    PermanentError,
    PluginError,
    ThrottledError,
    TransferError,
    TransientError,
    UnsupportedScheme,
)
from ferry.plugins.file import (
    IsDirectory,
    copy_tree,
    make_symlink,
    map_os_exceptions,
    move,
    on_network_fs,
    os_error,
    part_name,
)
from ferry.plugins.protocol import Capability, Sink, Source, current_site
from ferry.plugins.registry import Registry
from ferry.plugins.url import URL, redact

from .pace import Pace
from .request import Endpoint, MkdirRequest, RemoveRequest, Request, TransferRequest

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

__all__ = [
    "AttemptRecord",
    "Engine",
    "Subscriber",
    "TransferConfig",
    "TransferResult",
]

_T = TypeVar("_T")


class TransferConfig(msgspec.Struct):
    """How the engine runs: concurrency, retries, backoff."""

    #: transfers running at once
    threads: int = 8
    #: rounds over all sources before a transfer fails
    max_attempts: int = 3
    #: first backoff pause in seconds; doubles every round up to ``backoff_max``
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: random seconds (0..jitter) added to each pause
    backoff_jitter: float = 1.0
    #: link local->local instead of copying (pegasus-transfer ``--symlink``)
    symlink: bool = False
    #: where two-stage transfers keep their temporary file
    tmpdir: str | None = None
    #: called instead of time.sleep between rounds (tests)
    sleep: Callable[[float], None] = time.sleep


class AttemptRecord(msgspec.Struct):
    """One try of one source -> destination pair."""

    attempt: int
    source: str
    dest: str
    route: str
    ok: bool
    duration: float
    bytes: int = 0
    error: str | None = None
    error_type: str | None = None
    transient: bool | None = None
    #: structured facts about the failure (IntegrityError: expected, actual)
    details: dict[str, str] = msgspec.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "attempt": self.attempt,
            "source": self.source,
            "dest": self.dest,
            "route": self.route,
            "ok": self.ok,
            "duration": round(self.duration, 6),
            "bytes": self.bytes,
        }
        if not self.ok:
            data.update(error=self.error, error_type=self.error_type, transient=self.transient)
            if self.details:
                data["details"] = dict(self.details)
        return data


class TransferResult(msgspec.Struct):
    """The outcome of one request."""

    request: Request
    ok: bool
    kind: str = "transfer"
    bytes: int = 0
    sha256: str | None = None
    duration: float = 0.0
    route: str | None = None
    source: str | None = None
    attempts: list[AttemptRecord] = msgspec.field(default_factory=list)
    error: str | None = None
    error_type: str | None = None

    @property
    def label(self) -> str:
        return self.request.label

    @property
    def retries(self) -> int:
        """Tries beyond the first (failed sources and repeated rounds)."""
        return max(0, len(self.attempts) - 1)

    def to_json(self) -> dict[str, Any]:
        req = self.request
        data: dict[str, Any] = {"kind": self.kind, "ok": self.ok}
        if isinstance(req, TransferRequest):
            data.update(
                lfn=req.lfn,
                id=req.id,
                dest=str(req.dest.url),
                sources=[str(s.url) for s in req.ordered_sources()],
                expected_sha256=req.sha256,
            )
        else:
            data.update(id=req.id, target=str(req.target.url))
        data.update(
            source=self.source,
            route=self.route,
            bytes=self.bytes,
            sha256=f"sha256:{self.sha256}" if self.sha256 else None,
            duration=round(self.duration, 6),
            retries=self.retries,
            attempts=[a.to_json() for a in self.attempts],
        )
        if not self.ok:
            data.update(error=self.error, error_type=self.error_type)
        return data


class Subscriber:
    """Receives progress events; override what you need. Called from worker threads."""

    def on_queued(self, request: Request, size: int | None) -> None:
        pass

    def on_progress(self, request: Request, nbytes: int) -> None:
        """``nbytes`` may be negative when a restarted try rewinds."""

    def on_attempt_failed(self, request: Request, record: AttemptRecord) -> None:
        pass

    def on_done(self, result: TransferResult) -> None:
        pass


class _AllSourcesFailed(Exception):
    """One round over every source failed; ``transient`` says whether to go again."""

    def __init__(self, last: FerryError, transient: bool, retry_after: float | None) -> None:
        super().__init__(str(last))
        self.last = last
        self.transient = transient
        self.retry_after = retry_after


class _Retryable(_AllSourcesFailed):
    pass


class _Done(msgspec.Struct):
    bytes: int
    sha256: str | None
    #: the route actually taken, when it differs from the planned one
    route: str | None = None


class Engine:
    """Runs requests through the registry's protocols."""

    def __init__(
        self,
        registry: Registry | None = None,
        config: TransferConfig | None = None,
        subscribers: Sequence[Subscriber] = (),
    ) -> None:
        self.registry = registry or Registry()
        self.config = config or TransferConfig()
        self.subscribers = list(subscribers)
        self._cancel = threading.Event()
        self._handlers: dict[str, list[Callable[..., None]]] = {}
        #: directories this engine created: a file in one cannot predate the run, so
        #: the same-file check (a stat per file) is skipped there
        self._made_dirs: set[str] = set()
        #: the most requests that ran at once (:mod:`.pace` adds threads while they wait)
        self.threads_peak = 1
        #: named files the running transfers write, removed by :meth:`abort`
        self._scratch: set[str] = set()
        self._scratch_lock = threading.Lock()
        #: pegasus-transfer's test knob: spoil this % of the files written (0: none)
        self.error_rate = error_rate()

    # -- public ------------------------------------------------------------

    def run(self, requests: Iterable[Request]) -> list[TransferResult]:
        """Run every request; results come back in request order."""
        reqs = list(requests)
        self._bind()
        order = {id(r): i for i, r in enumerate(reqs)}
        results: list[TransferResult | None] = [None] * len(reqs)
        mkdirs = [r for r in reqs if isinstance(r, MkdirRequest)]
        transfers = [r for r in reqs if isinstance(r, TransferRequest)]
        removes = [r for r in reqs if isinstance(r, RemoveRequest)]
        for phase in (mkdirs, transfers, removes):
            if not phase:
                continue
            for r in phase:
                self._emit("on_queued", r, None)
            workers = max(1, min(self.config.threads, len(phase)))
            if (
                phase is transfers
                and workers > _cores()
                and all(self._local_copy(r) for r in transfers)
                and not _on_network_fs(transfers)
            ):
                # nothing to wait for but the CPU, the kernel and one local disk:
                # threads beyond the cores only contend (2,000 small files on 2 cores:
                # 0.37 s of work on 2 threads, 0.59 s on 8). Pace is not asked: when
                # writeback throttles the copies they wait, but more threads do not
                # help a disk (1.42 s against 1.15 s, medians of 6, when it let them
                # in). Not on NFS, Lustre, ...: there every open is a round trip,
                # which threads overlap, and Pace adds them.
                workers = _cores()
            for res in self._run_all(phase, workers):
                results[order[id(res.request)]] = res
        return [r for r in results if r is not None]

    def _local_copy(self, req: TransferRequest) -> bool:
        """Whether ``req`` copies a local file to a local file (not a link or a move)."""
        return (
            req.dest.url.scheme == "file"
            and not (self.config.symlink or req.symlink)
            and all(s.url.is_local for s in req.sources)
        )

    def _run_all(self, phase: list[Request], workers: int) -> list[TransferResult]:
        """``run_one`` over ``phase`` on ``workers`` threads; results in ``phase`` order.

        Each thread takes the next request when it is done with one: no future,
        work item and condition per request as with ``ThreadPoolExecutor.map``
        (that bookkeeping was a tenth of the cost of copying a small local file).
        One thread per CPU works at first; :class:`.pace.Pace` adds the others
        while the process leaves the CPUs idle (the transfers wait on servers).
        """
        if workers == 1:
            return [self.run_one(r) for r in phase]
        done: list[TransferResult | None] = [None] * len(phase)
        todo = iter(enumerate(phase))
        lock = threading.Lock()
        errors: list[BaseException] = []
        pace = Pace(workers, _cores())

        def worker(k: int) -> None:
            while not errors and pace.wait_turn(k):
                with lock:
                    item = next(todo, None)
                if item is None:
                    break
                i, request = item
                try:
                    done[i] = self.run_one(request)
                except BaseException as exc:  # a bug, not a failed transfer: re-raised below
                    errors.append(exc)
                pace.tick()
            pace.finish()  # wake the parked threads: the work ran out (or broke)

        threads = [
            threading.Thread(target=worker, args=(k,), name=f"ferry-xfer_{k}")
            for k in range(workers)
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:
            self.cancel()  # interrupted: start no new tries; running ones finish their stream
            pace.finish()
            raise
        self.threads_peak = max(self.threads_peak, pace.peak)
        if _debug():
            _log.debug("%d request(s) on up to %d thread(s), %d at most at once",
                       len(phase), workers, pace.peak)  # fmt: skip
        if errors:
            raise errors[0]
        return [r for r in done if r is not None]

    def cancel(self) -> None:
        """Stop starting new tries (running ones finish their current byte stream)."""
        self._cancel.set()

    def abort(self) -> None:
        """The process ends now, its transfers with it: stop starting tries and remove
        the named files the running ones write (part files where the file system has
        no unnamed files, two-stage temporary files). Their threads keep their
        descriptors; nothing they write from here on gets a name."""
        self.cancel()
        with self._scratch_lock:
            paths = list(self._scratch)
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _scratch_add(self, path: str | None) -> None:
        if path is not None:
            with self._scratch_lock:
                self._scratch.add(path)

    def _scratch_drop(self, path: str | None) -> None:
        if path is not None:
            with self._scratch_lock:
                self._scratch.discard(path)

    def run_one(self, request: Request) -> TransferResult:
        start = time.monotonic()
        if isinstance(request, TransferRequest):
            result = self._transfer(request)
        else:
            result = self._simple(request)
        result.duration = time.monotonic() - start
        self._emit("on_done", result)
        return result

    # -- mkdir / remove ----------------------------------------------------

    def _simple(self, request: MkdirRequest | RemoveRequest) -> TransferResult:
        kind = "mkdir" if isinstance(request, MkdirRequest) else "remove"
        result = TransferResult(request, ok=False, kind=kind)
        url = request.target.url

        def one_round(round_no: int) -> None:
            t0 = time.monotonic()
            token = current_site.set(request.target.site)
            try:
                proto = self.registry.protocol(url.scheme)
                try:
                    if isinstance(request, MkdirRequest):
                        proto.mkdir(url)
                    else:
                        proto.remove(url, recursive=request.recursive)
                except FerryError:
                    raise
                except Exception as exc:  # a plugin's bug fails this request, not the run
                    raise PermanentError(
                        f"{kind} {url} failed: {type(exc).__name__}: {redact(str(exc))}",
                        url=str(url),
                    ) from exc
            except FerryError as exc:
                result.attempts.append(self._failure(round_no, url, url, kind, t0, exc))
                transient = isinstance(exc, TransientError)
                raise (_Retryable if transient else _AllSourcesFailed)(
                    exc, transient, getattr(exc, "retry_after", None)
                ) from exc
            finally:
                current_site.reset(token)
            result.attempts.append(
                AttemptRecord(round_no, str(url), str(url), kind, True, time.monotonic() - t0)
            )

        try:
            self._rounds(one_round, request.label)
            result.ok = True
        except _AllSourcesFailed as exc:
            cause = _describe(exc.last)  # a plugin's message may name the request already
            result.error = cause if cause.startswith(request.label) else f"{request.label}: {cause}"
            result.error_type = type(exc.last).__name__
        return result

    # -- transfers ---------------------------------------------------------

    def _rounds(self, one_round: Callable[[int], _T], label: str) -> _T:
        """``one_round(1)``, then more rounds with backoff while it raises ``_Retryable``.

        The first round runs without building the tenacity machinery (a
        Retrying object and a future per attempt cost more than copying a
        small file); after a transient failure tenacity takes over, with
        round 1 replayed from the recorded failure so that numbering, waits
        and ``Retry-After`` are exactly those of a tenacity loop from the start.
        """
        try:
            return one_round(1)
        except _Retryable as exc:
            if self.config.max_attempts <= 1:
                raise
            first = exc

        def replayed(round_no: int) -> _T:
            if round_no == 1:
                raise first
            return one_round(round_no)

        for attempt in self._retrying(label):
            with attempt:
                return replayed(attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

    def _retrying(self, label: str) -> Retrying:
        # imported here: most transfers never need a second round, and a job
        # wrapper's start-up should not pay for tenacity
        from tenacity import (
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential,
            wait_random,
        )

        cfg = self.config
        backoff = wait_exponential(
            multiplier=cfg.backoff_initial, max=cfg.backoff_max
        ) + wait_random(0, cfg.backoff_jitter)

        def wait(state: RetryCallState) -> float:
            pause = backoff(state)
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None)
            return max(pause, min(after, cfg.backoff_max)) if after else pause

        def before_sleep(state: RetryCallState) -> None:  # a long pause is not a hang
            pause = state.next_action.sleep if state.next_action else 0.0
            _log.info("%s: round %d failed; next round in %.1f s", label,
                      state.attempt_number, pause)  # fmt: skip

        return Retrying(
            stop=stop_after_attempt(max(1, cfg.max_attempts)),
            wait=wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=before_sleep,
            sleep=cfg.sleep,
            reraise=True,
        )

    def _transfer(self, req: TransferRequest) -> TransferResult:
        result = TransferResult(req, ok=False)
        sources = req.ordered_sources()
        dead: set[int] = set()  # sources that failed permanently
        reported = [0]  # bytes announced to subscribers, to rewind on a new try
        if not self._handlers:
            self._bind()
        listeners = self._handlers["on_progress"]

        def progress(n: int) -> None:
            reported[0] += n
            for handler in listeners:
                handler(req, n)

        if not listeners:
            progress = _ignore_progress  # noqa: F811 - nobody listens: skip the bookkeeping

        def one_round(round_no: int) -> TransferResult:
            last: FerryError | None = None
            any_transient = False
            retry_after: float | None = None
            for idx, src in enumerate(sources):
                if idx in dead:
                    continue
                if self._cancel.is_set():
                    raise _AllSourcesFailed(
                        TransferError("cancelled"), transient=False, retry_after=None
                    )
                if reported[0]:
                    self._emit("on_progress", req, -reported[0])
                    reported[0] = 0
                t0 = time.monotonic()
                route = self._route(src.url, req.dest.url, req)
                if _debug():
                    _log.debug(
                        "%s: round %d: %s -> %s (%s)", req.label, round_no, src.url,
                        req.dest.url, route,
                    )  # fmt: skip
                try:
                    done = self._guarded(route, src, req, progress)
                except FerryError as exc:
                    rec = self._failure(round_no, src.url, req.dest.url, route, t0, exc)
                    result.attempts.append(rec)
                    self._emit("on_attempt_failed", req, rec)
                    last = exc
                    if isinstance(exc, TransientError):
                        any_transient = True
                        if isinstance(exc, ThrottledError) and exc.retry_after:
                            retry_after = max(retry_after or 0, exc.retry_after)
                    else:
                        dead.add(idx)
                    continue
                result.attempts.append(
                    AttemptRecord(
                        round_no,
                        str(src.url),
                        str(req.dest.url),
                        done.route or route,
                        True,
                        time.monotonic() - t0,
                        done.bytes,
                    )
                )
                result.ok = True
                result.bytes = done.bytes
                result.sha256 = done.sha256
                result.route = done.route or route
                result.source = str(src.url)
                return result
            assert last is not None
            cls = _Retryable if any_transient else _AllSourcesFailed
            raise cls(last, any_transient, retry_after)

        try:
            return self._rounds(one_round, req.label)
        except _AllSourcesFailed as exc:
            result.error = self._summary(req, result)
            result.error_type = type(exc.last).__name__
        return result

    def _summary(self, req: TransferRequest, result: TransferResult) -> str:
        tried = []
        seen: set[tuple[str, str | None]] = set()
        for a in result.attempts:
            key = (a.source, a.error)
            if key in seen:
                continue
            seen.add(key)
            tried.append(f"{a.source} ({a.error})")
        rounds = max((a.attempt for a in result.attempts), default=0)
        dest = str(req.dest.url)
        # the destination once: it is the label of a transfer with neither LFN nor id
        head = dest if req.label == dest else f"{req.label} -> {dest}"
        return f"{head}: failed after {rounds} round(s); tried {'; '.join(tried)}"

    def _failure(
        self, round_no: int, src: URL, dst: URL, route: str, t0: float, exc: FerryError
    ) -> AttemptRecord:
        return AttemptRecord(
            attempt=round_no,
            source=str(src),
            dest=str(dst),
            route=route,
            ok=False,
            duration=time.monotonic() - t0,
            error=_describe(exc),
            error_type=type(exc).__name__,
            transient=isinstance(exc, TransientError),
            details=_details(exc),
        )

    def _route(self, src: URL, dst: URL, req: TransferRequest) -> str:
        if dst.scheme == "symlink" or (
            (self.config.symlink or req.symlink) and src.is_local and dst.scheme == "file"
        ):
            return "symlink"
        if dst.scheme == "moveto":
            return "move"
        if dst.scheme == "file":
            return "download"
        if src.is_local:
            return "upload"
        try:
            same = (
                self.registry.entry_for(src.scheme).info.implementation
                == self.registry.entry_for(dst.scheme).info.implementation
            )
        except PluginError:
            same = False
        if same and Capability.COPY in self.registry.capabilities(src.scheme):
            return "third-party"
        return "two-stage"

    def _guarded(
        self,
        route: str,
        src: Endpoint,
        req: TransferRequest,
        progress: Callable[[int], None],
    ) -> _Done:
        """``_do``, with a plugin's unexpected exception turned into a permanent error,
        and the site whose credentials the protocol uses set (the source's; the
        destination's for an upload, and for the upload of a two-stage transfer)."""
        token = current_site.set(req.dest.site if route == "upload" else src.site)
        try:
            return self._do(route, src, req, progress)
        except FerryError:
            raise
        except Exception as exc:
            raise PermanentError(
                f"{route} from {src.url} failed: {type(exc).__name__}: {redact(str(exc))}",
                url=str(src.url),
            ) from exc
        finally:
            current_site.reset(token)

    def _do(
        self,
        route: str,
        src: Endpoint,
        req: TransferRequest,
        progress: Callable[[int], None],
    ) -> _Done:
        dst = req.dest.url
        if route == "symlink":
            if not src.url.is_local:
                raise PermanentError(f"cannot symlink to a remote source {src.url}", url=str(dst))
            target = src.url.local_path
            sha = hash_file(target, req.sha256) if req.sha256 else None
            make_symlink(target, dst.local_path, verify_source=req.verify_symlink_source)
            return _Done(0, sha)
        if route == "move":
            if not src.url.is_local:
                raise PermanentError(f"moveto:// needs a local source, not {src.url}", url=str(dst))
            size = os.path.getsize(src.url.local_path)
            sha = hash_file(src.url.local_path, req.sha256) if req.sha256 else None
            move(src.url.local_path, dst.local_path)
            return _Done(size, sha)
        if route == "download":
            try:
                done = self._download(src.url, dst.local_path, req, progress)
                if self.error_rate and _maybe_spoil(dst.local_path, self.error_rate):
                    self._verify_spoiled(dst.local_path, req)
                return done
            except IsDirectory:
                if not src.url.is_local:
                    raise
                return self._copy_tree(src.url, dst.local_path, req, progress)
        if route == "upload":
            try:
                return self._upload(src.url.local_path, dst, req.sha256, progress)
            except IntegrityError as exc:  # worded as a download's: the transfer and its source
                raise _mismatch(req, src.url, exc.expected, exc.actual) from exc
        if route == "third-party":
            try:
                stat = self.registry.protocol(src.url.scheme).copy(src.url, dst, req.sha256)
            except UnsupportedScheme:
                # the service cannot copy this pair itself (say, two S3 endpoints)
                staged = self._two_stage(src.url, dst, req, progress)
                staged.route = "two-stage"
                return staged
            sha = stat.checksums.get("sha256")
            if req.sha256 and sha and sha != req.sha256:
                raise _mismatch(req, dst, req.sha256, sha)
            return _Done(stat.size or 0, sha)
        return self._two_stage(src.url, dst, req, progress)

    def _download(
        self,
        src: URL,
        dest: str,
        req: TransferRequest,
        progress: Callable[[int], None],
    ) -> _Done:
        dest_dir = os.path.dirname(dest) or "."
        if src.is_local and dest_dir not in self._made_dirs and os.path.exists(dest):
            with contextlib.suppress(OSError):
                if os.path.samefile(src.local_path, dest):
                    if os.path.isdir(dest):  # cp -R of a directory onto itself
                        return self._copy_tree(src, dest, req, progress)
                    sha = hash_file(dest, req.sha256)
                    return _Done(os.path.getsize(dest), sha)
        proto = self.registry.protocol(src.scheme)
        tmp = part_name(dest)
        try:
            try:
                sink = Sink.beside(dest, tmp)
            except FileNotFoundError:
                # the directory is missing: make it (only then, not per file)
                os.makedirs(dest_dir, exist_ok=True)
                self._made_dirs.add(dest_dir)
                sink = Sink.beside(dest, tmp)
        except OSError as exc:  # named as the destination, not the part file in the error
            raise os_error(exc, f"file://{dest}", "write", path=dest) from exc
        sink.type = req.dest.type
        named = sink.named
        self._scratch_add(named)
        try:
            proto.get(src, sink, progress)
            if sink.expected_size is not None and sink.offset != sink.expected_size:
                raise IncompleteTransfer(
                    f"{src}: got {sink.offset} bytes, expected {sink.expected_size}", url=str(src)
                )
            sha = sink.sha256
            if req.sha256 and sha != req.sha256:
                raise _mismatch(req, src, req.sha256, sha)
            try:
                sink.commit(dest, executable=req.executable)
            except OSError as exc:
                if os.path.isdir(dest):
                    raise PermanentError(
                        f"cannot write {dest}: a directory is there", url=f"file://{dest}"
                    ) from exc
                raise os_error(exc, f"file://{dest}", "write", path=dest) from exc
        finally:
            sink.discard()  # after a failure: nothing of it stays
            self._scratch_drop(named)
        return _Done(sink.offset, sha)

    def _verify_spoiled(self, dest: str, req: TransferRequest) -> None:
        """pegasus-transfer's ``verify_checksum_remote`` runs after the test knob spoiled
        the file: so it fails there too, and the transfer is tried again."""
        if not (req.verify_checksum_remote and req.sha256):
            return
        try:
            hash_file(dest, req.sha256)
        except IntegrityError as exc:
            with contextlib.suppress(OSError):
                os.unlink(dest)
            msg = f"{exc} (PEGASUS_TRANSFER_ERROR_RATE)"
            raise TransientError(msg, url=f"file://{dest}") from exc

    def _copy_tree(
        self, src: URL, dest: str, req: TransferRequest, progress: Callable[[int], None]
    ) -> _Done:
        """A directory source to a local destination: ``cp -R -L``, as pegasus-transfer
        copies it. A directory has no sha256 of its own to check."""
        if req.sha256:
            raise PermanentError(
                f"{src} is a directory: a sha256 can only be checked for a file", url=str(src)
            )
        with contextlib.suppress(OSError):
            if os.path.samefile(src.local_path, dest):
                return _Done(0, None)  # the source is the destination: nothing to do
        return _Done(copy_tree(src.local_path, dest, progress), None)

    def _upload(
        self,
        path: str,
        dst: URL,
        expected: str | None,
        progress: Callable[[int], None],
    ) -> _Done:
        proto = self.registry.protocol(dst.scheme)
        with map_os_exceptions(f"file://{path}", "read"):
            source = Source(path, expected_sha256=expected)
        proto.put(source, dst, progress)
        try:
            sha = source.verify()
        except (IntegrityError, IncompleteTransfer):
            # the plugin made the object visible before checking: take it back
            with contextlib.suppress(FerryError):
                proto.remove(dst)
            raise
        return _Done(source.size, sha)

    def _two_stage(
        self,
        src: URL,
        dst: URL,
        req: TransferRequest,
        progress: Callable[[int], None],
    ) -> _Done:
        import tempfile  # only two-stage transfers need it

        caps = self.registry.capabilities(dst.scheme)
        if caps and Capability.PUT not in caps:  # say so before downloading anything
            name = self.registry.entry_for(dst.scheme).info.name
            raise UnsupportedScheme(
                f"{name} cannot put {dst.scheme}:// URLs", url=str(dst), plugin=name
            )
        tmpdir = self.config.tmpdir or tempfile.gettempdir()
        fd, tmp = tempfile.mkstemp(prefix="ferry-", suffix=".data", dir=tmpdir)
        os.close(fd)
        self._scratch_add(tmp)
        try:
            first = self._download(src, tmp, req, progress)
            token = current_site.set(req.dest.site)
            try:
                return self._upload(tmp, dst, first.sha256, lambda n: None)
            finally:
                current_site.reset(token)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._scratch_drop(tmp)

    def _bind(self) -> None:
        """Each event's handlers: the subscribers' methods that override the no-op."""
        self._handlers = {
            event: [
                getattr(sub, event)
                for sub in self.subscribers
                if getattr(type(sub), event, None) is not getattr(Subscriber, event)
            ]
            for event in ("on_queued", "on_progress", "on_attempt_failed", "on_done")
        }

    def _emit(self, event: str, *args: Any) -> None:
        if not self._handlers:
            self._bind()
        for handler in self._handlers[event]:
            handler(*args)


def _on_network_fs(transfers: list[TransferRequest], sample: int = 32) -> bool:
    """Whether the directories of these local copies (up to ``sample`` of them) lie
    on a network file system."""
    dirs: set[str] = set()
    for req in transfers:
        for end in (req.dest, *req.sources):
            dirs.add(os.path.dirname(end.url.local_path) or ".")
        if len(dirs) >= sample:
            break
    return on_network_fs(sorted(dirs))


_log = logging.getLogger("ferry.worker.engine")


def _debug() -> bool:
    return _log.isEnabledFor(logging.DEBUG)


def _cores() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _ignore_progress(n: int) -> None:
    pass


def _describe(exc: BaseException) -> str:
    """One line for a failure (messages are already redacted by the plugins)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


def _mismatch(req: TransferRequest, where: URL, expected: str, actual: str) -> IntegrityError:
    return IntegrityError(
        f"sha256 mismatch for {req.label} from {where}: expected {expected}, got {actual}",
        expected=expected,
        actual=actual,
        url=str(where),
    )


def _details(exc: FerryError) -> dict[str, str]:
    """The structured facts of a failure: the sums of a mismatch, a server's status."""
    if isinstance(exc, IntegrityError):
        return {"expected": exc.expected, "actual": exc.actual}
    status = getattr(exc, "status", None)
    return {"status": str(status)} if status else {}


def error_rate() -> int:
    """``$PEGASUS_TRANSFER_ERROR_RATE`` (0 to 100), pegasus-transfer's knob for testing
    integrity checks: that percentage of the files written to local destinations
    get bytes appended after the transfer. 0 when unset; an invalid value is
    logged and counts as 0, as in pegasus-transfer."""
    raw = os.environ.get("PEGASUS_TRANSFER_ERROR_RATE")
    if not raw:
        return 0
    try:
        rate = int(raw)
    except ValueError:
        rate = -1
    if not 0 <= rate <= 100:
        _log.error("Invalid value for PEGASUS_TRANSFER_ERROR_RATE: %s", raw)
        return 0
    return rate


def _maybe_spoil(path: str, rate: int) -> bool:
    """Append pegasus-transfer's junk to ``path`` with ``rate`` % probability; whether it did."""
    import random

    if random.randint(1, 100) > rate:
        return False
    _log.info("Introducing an error into %s (PEGASUS_TRANSFER_ERROR_RATE)", path)
    try:
        with open(path, "a") as f:
            f.write("Here be dragons! Eh, I mean pegai!")
    except OSError as exc:
        _log.error("%s", exc)
        return False
    return True


def hash_file(path: str, expected: str | None) -> str:
    """The sha256 of the file at ``path``; IntegrityError when it is not ``expected``."""
    import hashlib

    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with map_os_exceptions(f"file://{path}", "read"), open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    sha = h.hexdigest()
    if expected and sha != expected:
        raise IntegrityError(
            f"sha256 mismatch for {path}: expected {expected}, got {sha}",
            expected=expected,
            actual=sha,
            url=f"file://{path}",
        )
    return sha
