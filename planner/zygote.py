"""A warm process that forks one child per job: the local backend's executor.

Starting a fresh Python for each job costs more than a no-op job itself (see
benchmarks/PLANNER.md), so ``ferry run`` forks this zygote once, before it
starts any thread. The zygote imports the worker (:class:`~ferry.worker.job.JobWorker`),
builds the protocol registry and the ``file`` protocol, and then waits for
requests. For each job it forks a child that is exactly a node's worker: the
child sets ``FERRY_ATTEMPT``, loads the job spec, runs ``JobWorker(spec).run()``
(own work directory, stage-in with sha256 checks, the job, success checks,
stage-out, invocation record) and exits with the worker's exit code. A cluster's
member specs run one after another in the same child, each with its own record;
a member that already has a succeeded record (from an earlier attempt) is
skipped.

Protocol: JSON lines. The runner writes ``{"op": "run", "token", "attempt",
"specs": [[path, id], ...]}`` or ``{"op": "term"}`` (send TERM to every running
child, as HTCondor does on eviction). The zygote answers ``{"token", "pid"}``
when a child starts and ``{"token", "exit"}`` when it has been reaped (``exit``
is the exit code, or minus the signal); the child itself writes
``{"token", "member", "code", "wall", "job_wall"}`` per job it ran (each line is
shorter than PIPE_BUF, so lines from several writers never interleave). When the
runner goes away (EOF on the request pipe, even after ``kill -9``), the zygote
sends TERM to its children, waits for them (they stage checkpoints out and write
their records) and exits.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Zygote"]


@dataclass
class Zygote:
    """The runner's handle on the zygote process."""

    pid: int
    requests: int  # fd we write to
    replies: int  # fd we read from
    _buf: bytes = b""

    @classmethod
    def start(cls, *, records_dir: str, workdir_base: str, log_file: str) -> Zygote:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the zygote
            code = 0
            try:
                os.close(req_w)
                os.close(rep_r)
                _zygote_main(req_r, rep_w, records_dir, workdir_base, log_file)
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(req_r)
        os.close(rep_w)
        return cls(pid=pid, requests=req_w, replies=rep_r)

    def send(self, msg: dict[str, Any]) -> None:
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        while data:
            n = os.write(self.requests, data)
            data = data[n:]

    def read(self) -> list[dict[str, Any]]:
        """Whatever replies are available now (call after select says readable)."""
        try:
            chunk = os.read(self.replies, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            raise EOFError("the zygote exited")
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self) -> int:
        """Close the request pipe (the zygote stops its children and exits); reap it."""
        try:
            os.close(self.requests)
        except OSError:
            pass
        # drain so the zygote never blocks writing replies
        while True:
            try:
                if not os.read(self.replies, 65536):
                    break
            except OSError:
                break
        os.close(self.replies)
        _, status = os.waitpid(self.pid, 0)
        return status


# -- inside the zygote ------------------------------------------------------------


def _write(fd: int, msg: dict[str, Any]) -> None:
    data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
    while data:
        try:
            n = os.write(fd, data)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        data = data[n:]


def _zygote_main(req: int, rep: int, records_dir: str, workdir_base: str, log_file: str) -> None:
    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the runner only; it forwards TERM
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    import logging

    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s ferry worker %(process)d: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    # warm up: everything a job needs is imported once, here
    from ferry.plugins.protocol import ProtocolContext
    from ferry.plugins.registry import Registry
    from ferry.worker import engine as _engine  # noqa: F401
    from ferry.worker import execute as _execute  # noqa: F401
    from ferry.worker.job import JobWorker, load_spec_file

    registry = Registry(ProtocolContext(concurrency=4))
    try:
        registry.protocol("file")
    except Exception:  # noqa: BLE001 - the job will report it
        pass

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    children: dict[int, int] = {}  # pid -> token
    buf = b""
    open_ = True

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            token = children.pop(pid, None)
            if token is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            _write(rep, {"token": token, "exit": code})

    def term_all() -> None:
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    while open_ or children:
        fds = [wake_r] + ([req] if open_ else [])
        try:
            readable, _, _ = select.select(fds, [], [], 1.0)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        reap()
        if open_ and req in readable:
            chunk = os.read(req, 65536)
            if not chunk:  # the runner is gone: stop everything cleanly
                open_ = False
                term_all()
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                msg = json.loads(line)
                if msg.get("op") == "term":
                    term_all()
                elif msg.get("op") == "run":
                    pid = os.fork()
                    if pid == 0:  # the job's worker
                        code = 2
                        try:
                            signal.set_wakeup_fd(-1)
                            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                            for fd in (req, wake_r, wake_w):
                                os.close(fd)
                            code = _child(
                                msg,
                                rep,
                                registry,
                                records_dir,
                                workdir_base,
                                JobWorker,
                                load_spec_file,
                            )
                        except BaseException as exc:  # noqa: BLE001
                            print(
                                f"job {msg.get('token')}: {type(exc).__name__}: {exc}",
                                file=sys.stderr,
                            )
                        finally:
                            os._exit(code)
                    children[pid] = msg["token"]
                    _write(rep, {"token": msg["token"], "pid": pid})
    reap()


def _succeeded_before(records_dir: str, job_id: str, attempt: int) -> bool:
    for a in range(attempt - 1, 0, -1):
        try:
            with open(os.path.join(records_dir, f"{job_id}.{a}.json"), "rb") as f:
                if json.loads(f.read()).get("status") == "succeeded":
                    return True
        except (OSError, ValueError):
            continue
    return False


def _child(msg, rep, registry, records_dir, workdir_base, JobWorker, load_spec_file) -> int:  # type: ignore[no-untyped-def]  # noqa: N803
    stop = []

    def on_term(signum: int, frame: object) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    attempt = int(msg["attempt"])
    os.environ["FERRY_ATTEMPT"] = str(attempt)
    token = msg["token"]
    cluster = len(msg["specs"]) > 1
    worst = 0
    for path, job_id in msg["specs"]:
        if stop:
            worst = worst or 143
            break
        if cluster and attempt > 1 and _succeeded_before(records_dir, job_id, attempt):
            _write(rep, {"token": token, "member": job_id, "code": 0, "skipped": True})
            continue
        try:
            spec = load_spec_file(path)
        except Exception as exc:  # noqa: BLE001 - a bad spec fails this job only
            print(f"job {job_id}: {exc}", file=sys.stderr)
            _write(rep, {"token": token, "member": job_id, "code": 2, "error": str(exc)[:1000]})
            worst = worst or 2
            continue
        worker = JobWorker(
            spec, records_dir=records_dir, registry=registry, workdir_base=workdir_base
        )
        code = worker.run()
        rec = worker.record
        _write(
            rep,
            {
                "token": token,
                "member": job_id,
                "code": code,
                "wall": round(rec.wall_time, 6),
                "job_wall": round(rec.job_wall_time, 6),
            },
        )
        if code != 0 and not worst:
            worst = code
        if worker.evicted:
            stop.append(signal.SIGTERM)
    return worst
