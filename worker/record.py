"""The invocation record: one JSON document per attempt of a job.

Written by the worker whether the job succeeded or not; read by the monitoring
commands (``ferry status``, ``statistics``, ``analyze``) and nothing else.
docs/worker.md lists the fields.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

__all__ = ["RECORD_VERSION", "Failure", "InvocationRecord", "TransferEntry", "write_record"]

RECORD_VERSION = 1


class TransferEntry(msgspec.Struct):
    """One staged file: direction is input, output, checkpoint-in, checkpoint-out or image."""

    direction: str
    lfn: str
    ok: bool
    source: str | None = None
    dest: str | None = None
    bytes: int = 0
    duration: float = 0.0
    attempts: int = 0
    sha256: str | None = None
    expected_sha256: str | None = None
    route: str | None = None
    error: str | None = None
    tried: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Failure(msgspec.Struct):
    """Why the attempt failed: the step, what failed, and the cause."""

    step: str
    reason: str
    lfn: str | None = None
    url: str | None = None
    expected: str | None = None
    actual: str | None = None


class InvocationRecord(msgspec.Struct):
    job_id: str
    attempt: int
    host: str
    user: str
    start: float
    name: str | None = None
    end: float | None = None
    #: "succeeded" or "failed"
    status: str = "running"
    #: the step that failed: stage-in, integrity, container, run, success-check, stage-out, worker
    failed_step: str | None = None
    worker_exit_code: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    evicted: bool = False
    wall_time: float = 0.0
    job_wall_time: float = 0.0
    cpu_user: float = 0.0
    cpu_system: float = 0.0
    peak_memory_bytes: int = 0
    workdir: str | None = None
    workdir_kept: bool = False
    executable: str | None = None
    arguments: list[str] = msgspec.field(default_factory=list)
    container: dict[str, Any] | None = None
    transfers: list[TransferEntry] = msgspec.field(default_factory=list)
    failures: list[Failure] = msgspec.field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    phases: dict[str, float] = msgspec.field(default_factory=dict)
    version: int = RECORD_VERSION

    def fail(self, step: str, reason: str, **kw: str | None) -> None:
        if self.failed_step is None:
            self.failed_step = step
        self.failures.append(Failure(step=step, reason=reason, **kw))

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def write_record(record: InvocationRecord, directory: str) -> str:
    """Write ``<job>.<attempt>.json`` atomically into ``directory``; return its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{record.job_id}.{record.attempt}.json")
    # a name of this process's own (not tempfile: it imports random, ~3 ms a job)
    tmp = os.path.join(directory, f".{record.job_id}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(record), indent=1))
            f.write(b"\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def next_attempt(directory: str, job_id: str) -> int:
    """1 + the number of records this job already has in ``directory``."""
    prefix = f"{job_id}."
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 1
    n = 0
    for name in names:
        if name.startswith(prefix) and name.endswith(".json"):
            middle = name[len(prefix) : -len(".json")]
            if middle.isdigit():
                n = max(n, int(middle))
    return n + 1
