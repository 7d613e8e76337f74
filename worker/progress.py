"""Progress for people: a rich bar on a terminal, log lines otherwise, and the summary."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import msgspec

from .engine import AttemptRecord, Subscriber, TransferResult
from .request import Request, TransferRequest

__all__ = ["LogProgress", "RichProgress", "Summary", "human_bytes"]

log = logging.getLogger("ferry.transfer")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class Summary(msgspec.Struct):
    """Totals over a run, for the last lines of the CLI and the --json report."""

    started: float = msgspec.field(default_factory=time.monotonic)
    files: int = 0
    ok: int = 0
    failed: int = 0
    bytes: int = 0
    retries: int = 0
    elapsed: float = 0.0
    #: the most transfers that ran at once (the engine adds threads while they wait)
    threads: int = 1

    def add(self, result: TransferResult) -> None:
        self.files += 1
        self.retries += result.retries
        if result.ok:
            self.ok += 1
            self.bytes += result.bytes
        else:
            self.failed += 1

    def finish(self) -> Summary:
        self.elapsed = time.monotonic() - self.started
        return self

    @property
    def rate(self) -> float:
        return self.bytes / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        return (
            f"Stats: {self.files} transfer(s), {self.ok} succeeded, {self.failed} failed,"
            f" {human_bytes(self.bytes)} in {self.elapsed:.2f} s"
            f" ({human_bytes(self.rate)}/s), {self.retries} retries"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "transfers": self.files,
            "succeeded": self.ok,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": round(self.elapsed, 6),
            "bytes_per_second": round(self.rate, 1),
            "retries": self.retries,
            "threads": self.threads,
        }


def _kind(record: AttemptRecord, max_attempts: int | None) -> str:
    """How a failed try is labelled: only a transient failure before the last round is retried."""
    if not record.transient:
        return "permanent"
    if max_attempts is not None and record.attempt >= max_attempts:
        return "transient, no rounds left"
    return "will retry"


class LogProgress(Subscriber):
    """One log line per finished transfer and per failed try.

    With ``stream`` (the CLI's stderr), the per-transfer INFO lines are
    written there directly, in the CLI's log format (pegasus-transfer's) and
    with ``redact`` applied as the CLI's formatter does: going through
    ``logging`` costs ~25 us a line, as much as copying a small file.
    Warnings and errors always go through ``logging``.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        redact: Callable[[str], str] | None = None,
        max_attempts: int | None = None,
    ):
        self._stream = stream
        self._redact = redact
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._second = -1
        self._stamp = ""

    def _info(self, msg: str, *args: object) -> None:
        if self._stream is None:
            log.info(msg, *args)
            return
        if not log.isEnabledFor(logging.INFO):
            return
        text = msg % args
        if self._redact is not None and ("@" in text or "?" in text):
            text = self._redact(text)
        now = time.time()
        second = int(now)
        with self._lock:
            if second != self._second:
                self._second = second
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._stream.write(f"{self._stamp},{int((now - second) * 1000):03d}    INFO:  {text}\n")
            self._stream.flush()

    def on_attempt_failed(self, request: Request, record: AttemptRecord) -> None:
        log.warning(
            "%s: try %d from %s failed (%s): %s",
            request.label,
            record.attempt,
            record.source,
            _kind(record, self._max_attempts),
            record.error,
        )

    def on_done(self, result: TransferResult) -> None:
        req = result.request
        if not result.ok:
            return
        if isinstance(req, TransferRequest):
            self._info(
                "%s: %s -> %s, %s in %.3f s (%s)%s",
                req.label,
                result.source,
                req.dest.url,
                human_bytes(result.bytes),
                result.duration,
                result.route,
                f", sha256:{result.sha256}" if result.sha256 else "",
            )
        else:
            self._info("%s: done", req.label)


class RichProgress(Subscriber):
    """A progress bar over files, with bytes moved and the rate, on stderr."""

    def __init__(
        self,
        total_files: int,
        redact: Callable[[str], str] | None = None,
        max_attempts: int | None = None,
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._bytes = 0
        self._redact = redact
        self._max_attempts = max_attempts
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]transfer"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[moved]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("files", total=total_files, moved="")

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _moved(self) -> str:
        rate = self._bytes / max(time.monotonic() - self._start, 1e-6)
        return f"{human_bytes(self._bytes)} at {human_bytes(rate)}/s"

    def on_progress(self, request: Request, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes
            self.progress.update(self.task, moved=self._moved())

    def on_attempt_failed(self, request: Request, record: AttemptRecord) -> None:
        from rich.text import Text

        # plain text, not markup: a URL or an error may hold "[...]"; redacted as the log is
        text = (
            f": try {record.attempt} from {record.source} failed"
            f" ({_kind(record, self._max_attempts)}): {record.error}"
        )
        label = request.label
        if self._redact is not None:
            label, text = self._redact(label), self._redact(text)
        self.console.print(Text.assemble((label, "yellow"), text), highlight=False)

    def on_done(self, result: TransferResult) -> None:
        with self._lock:
            self.progress.update(self.task, advance=1, moved=self._moved())


def is_terminal() -> bool:
    return sys.stderr.isatty()
