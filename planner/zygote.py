"""Warm worker processes for the local backend: a zygote and the workers it forks.

A fresh Python per job costs more than a no-op job itself (see
benchmarks/PLANNER.md), and so does a ``fork`` per job of a Python process
(copy-on-write faults as the child touches its parent's objects: ~10 ms of
kernel time per job here). So ``ferry run`` starts one *zygote*: a fresh
interpreter (``python -m ferry.planner.zygote``, so it holds none of the
planner's memory) that imports the worker (:class:`~ferry.worker.job.JobWorker`)
and builds the protocol registry once, then forks *worker processes* as jobs
need them. A worker process runs jobs one at a time, each exactly as ``ferry
worker SPEC`` runs it on a node: ``FERRY_ATTEMPT`` set, the spec loaded and
validated, ``JobWorker(spec).run()`` — own work directory, stage-in with sha256
checks, the job, success checks, stage-out, invocation record — and reports
the worker's exit code. After ``jobs_per_process`` jobs (default 100; 1 gives
every job a freshly forked process) it exits and the zygote forks a new one
when needed. A cluster's member specs run one after another in one worker
process, each with its own record; a member that already has a succeeded
record (an earlier attempt) is skipped.

Protocol (JSON lines). The runner writes to the zygote's stdin:
``{"op": "run", "token", "attempt", "specs": [[ref, id], ...], "sums"?}`` (``ref``
a spec path or ``path@offset`` in a packed shard; ``sums``, ``{lfn: sha256}``, what
the job's parents recorded for the files they staged out: an input of that LFN
without a sha256 of its own is checked against it, as PegasusLite checks
intermediate files against the parents' ``.meta``) and ``{"op": "term"}`` (TERM to every
busy worker, as HTCondor does on eviction: the job is stopped, checkpoints are
staged out, the record written). The zygote answers on its stdout
``{"token", "member", "code", "wall", "job_wall"}`` per job run and
``{"token", "exit"}`` when the request is done (``exit``: the worst worker exit
code; minus the signal if the worker process died). When the runner goes away
(EOF on stdin, even after ``kill -9``), the zygote sends TERM to the busy
workers, waits for them to write their records, and exits.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Zygote", "main"]

DEFAULT_JOBS_PER_PROCESS = 100


@dataclass
class Zygote:
    """The runner's handle on the zygote process."""

    proc: subprocess.Popen[bytes]
    _buf: bytes = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def replies(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    @classmethod
    def start(
        cls,
        *,
        records_dir: str,
        workdir_base: str,
        log_file: str,
        jobs_per_process: int = DEFAULT_JOBS_PER_PROCESS,
    ) -> Zygote:
        log = open(log_file, "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ferry.planner.zygote",
                    records_dir,
                    workdir_base,
                    str(jobs_per_process),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C reaches the runner only
                bufsize=0,
            )
        finally:
            log.close()
        return cls(proc=proc)

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.proc.stdin.fileno(), view) :]

    def read(self) -> list[dict[str, Any]]:
        """Whatever replies are available now (call after select says readable)."""
        try:
            chunk = os.read(self.replies, 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            raise EOFError("the zygote exited")
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self) -> int:
        """Close the request pipe (the zygote stops its workers and exits); reap it."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            assert self.proc.stdout is not None
            while self.proc.stdout.read(1 << 16):
                pass
            self.proc.stdout.close()
        except OSError:
            pass
        return self.proc.wait()


# -- inside the zygote ---------------------------------------------------------------


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise


def _line(msg: dict[str, Any]) -> bytes:
    return (json.dumps(msg, separators=(",", ":")) + "\n").encode()


@dataclass
class _Worker:
    pid: int
    req: int  # zygote -> worker
    status: int  # worker -> zygote
    token: int | None = None
    retiring: bool = False
    buf: bytes = field(default=b"")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    records_dir, workdir_base = args[0], args[1]
    per_process = max(1, int(args[2])) if len(args) > 2 else DEFAULT_JOBS_PER_PROCESS
    # requests on stdin, replies on stdout; stray prints go to the log (stderr)
    req = os.dup(0)
    rep = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
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
    from ferry.worker import record as _record  # noqa: F401
    from ferry.worker.job import JobWorker
    from ferry.worker.jobspec import load_jobspec

    from .rundir import read_ref

    registry = Registry(ProtocolContext(concurrency=4))
    try:
        registry.protocol("file")
    except Exception:  # noqa: BLE001 - a job will report it
        pass
    import gc

    gc.collect()
    gc.freeze()  # fewer pages touched (and copied) in the forked workers

    def load_spec(ref: str):  # type: ignore[no-untyped-def]
        try:
            data = read_ref(ref)
        except OSError as exc:
            raise OSError(f"cannot read job spec {ref}: {exc.strerror}") from None
        return load_jobspec(data, source=ref)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    workers: dict[int, _Worker] = {}
    by_status: dict[int, _Worker] = {}
    buf = b""
    open_ = True

    def spawn() -> _Worker:
        zr, zw = os.pipe()  # zygote -> worker
        sr, sw = os.pipe()  # worker -> zygote
        pid = os.fork()
        if pid == 0:  # a worker process
            code = 0
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (req, rep, wake_r, wake_w, zw, sr):
                    os.close(fd)
                for w in workers.values():
                    os.close(w.req)
                    os.close(w.status)
                _serve(
                    zr, sw, per_process, registry, records_dir, workdir_base, JobWorker, load_spec
                )
            except BaseException as exc:  # noqa: BLE001
                print(f"worker process {os.getpid()}: {type(exc).__name__}: {exc}", file=sys.stderr)
                code = 2
            os._exit(code)
        os.close(zr)
        os.close(sw)
        w = _Worker(pid=pid, req=zw, status=sr)
        workers[pid] = w
        by_status[sr] = w
        return w

    def drop(w: _Worker) -> None:
        workers.pop(w.pid, None)
        by_status.pop(w.status, None)
        for fd in (w.req, w.status):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = workers.get(pid)
            if w is None:
                continue
            _drain(w)
            if w.token is not None:  # died in the middle of a request
                _write(rep, _line({"token": w.token, "exit": os.waitstatus_to_exitcode(status)}))
            drop(w)

    def _drain(w: _Worker) -> None:
        """Forward what a dead worker wrote last (its end of the pipe is closed: no blocking)."""
        while True:
            try:
                chunk = os.read(w.status, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            _status(w, chunk)

    def _status(w: _Worker, chunk: bytes) -> None:
        w.buf += chunk
        *lines, w.buf = w.buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            msg = json.loads(line)
            if "exit" in msg:
                w.token = None
                if msg.pop("retire", False):
                    w.retiring = True
            _write(rep, _line(msg))

    def term_busy() -> None:
        for w in list(workers.values()):
            if w.token is not None:
                try:
                    os.kill(w.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def dispatch(msg: dict[str, Any]) -> None:
        w = next((x for x in workers.values() if x.token is None and not x.retiring), None)
        if w is None:
            w = spawn()
        w.token = msg["token"]
        try:
            _write(w.req, _line(msg))
        except OSError:  # it died just now; reap() reports the request
            pass

    while open_ or workers:
        fds = [wake_r, *by_status] + ([req] if open_ else [])
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
        for fd in readable:
            w = by_status.get(fd)
            if w is None:
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                _status(w, chunk)
            elif w.token is None:
                w.retiring = True  # it is exiting; reap() drops it
        reap()
        if not open_:
            for w in list(workers.values()):
                if w.token is None and w.req >= 0:
                    os.close(w.req)  # an idle worker exits on EOF
                    w.req = -1
                    w.retiring = True
        if open_ and req in readable:
            chunk = os.read(req, 1 << 16)
            if not chunk:  # the runner is gone: stop everything cleanly
                open_ = False
                term_busy()
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                msg = json.loads(line)
                if msg.get("op") == "term":
                    term_busy()
                elif msg.get("op") == "run":
                    dispatch(msg)
    return 0


def _succeeded_before(records_dir: str, job_id: str, attempt: int) -> bool:
    for a in range(attempt - 1, 0, -1):
        try:
            with open(os.path.join(records_dir, f"{job_id}.{a}.json"), "rb") as f:
                if json.loads(f.read()).get("status") == "succeeded":
                    return True
        except (OSError, ValueError):
            continue
    return False


def _serve(req, status, per_process, registry, records_dir, workdir_base, JobWorker, load_spec):  # type: ignore[no-untyped-def]  # noqa: N803
    """A worker process: run requests one at a time until EOF, TERM, or ``per_process`` jobs."""
    stop: list[int] = []

    def on_term(signum: int, frame: object) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reader = os.fdopen(req, "rb", buffering=0)
    served = 0
    pending = b""
    while not stop:
        while b"\n" not in pending:
            try:
                chunk = reader.read(1 << 16)
            except InterruptedError:
                if stop:
                    return
                continue
            if not chunk:
                return
            pending += chunk
        line, _, pending = pending.partition(b"\n")
        msg = json.loads(line)
        token = msg["token"]
        attempt = int(msg["attempt"])
        os.environ["FERRY_ATTEMPT"] = str(attempt)
        cluster = len(msg["specs"]) > 1
        sums = msg.get("sums") or {}
        worst = 0
        for ref, job_id in msg["specs"]:
            if stop:
                worst = worst or 143
                break
            if cluster and attempt > 1 and _succeeded_before(records_dir, job_id, attempt):
                _write(
                    status, _line({"token": token, "member": job_id, "code": 0, "skipped": True})
                )
                continue
            try:
                spec = load_spec(ref)
            except Exception as exc:  # noqa: BLE001 - a bad spec fails this job only
                print(f"job {job_id}: {exc}", file=sys.stderr)
                _write(
                    status,
                    _line({"token": token, "member": job_id, "code": 2, "error": str(exc)[:1000]}),
                )
                worst = worst or 2
                continue
            if sums:
                for inp in spec.inputs:  # files the parents staged out: check them too
                    if inp.sha256 is None and not inp.executable and inp.lfn in sums:
                        inp.sha256 = sums[inp.lfn]
            worker = JobWorker(
                spec, records_dir=records_dir, registry=registry, workdir_base=workdir_base
            )
            code = worker.run()
            rec = worker.record
            _write(
                status,
                _line(
                    {
                        "token": token,
                        "member": job_id,
                        "code": code,
                        "wall": round(rec.wall_time, 6),
                        "job_wall": round(rec.job_wall_time, 6),
                    }
                ),
            )
            if code != 0 and not worst:
                worst = code
            if worker.evicted:
                stop.append(signal.SIGTERM)
        served += 1
        retire = bool(stop) or served >= per_process
        _write(status, _line({"token": token, "exit": worst, "retire": retire}))
        if retire:
            return


if __name__ == "__main__":
    sys.exit(main())
