"""The local backend: run a plan on this machine, every job through the real worker.

:class:`LocalRunner` keeps the plan's DAG in arrays, hands ready jobs to the
zygote (:mod:`.zygote`: one warm process that forks a worker per job) up to
``slots`` at a time, in plan order, and records every state change in
``journal.jsonl`` (appended and flushed per event). A failed attempt is retried
while the job has retries left (``retries`` in plan.json, from ``dagman.retry``
or ``--retries``); a job whose retries are spent fails, and its descendants do
not run, but every other job still does.

Resuming (``ferry run --resume DIR``) re-runs nothing that succeeded: a job is
done when the journal says ``succeeded`` or, for jobs the journal leaves
unfinished (the runner was killed, even with ``-9``), when its invocation
record says ``succeeded`` (for a cluster: every member's). Everything else runs
again with the next attempt number and a fresh retry budget.

``TERM`` or ``INT`` (what ``ferry remove`` sends) stops the run cleanly: no new
job starts, the running ones are sent TERM (the worker stops the job and stages
its checkpoints out), each is journalled ``removed``, and the runner exits 143
(130 for INT).

On success, outputs marked ``registerReplica`` go to ``replicas.out.yml`` with
the sha256 the worker recorded when it staged them out, and cleanup actions
remove intermediate files from staging through the transfer engine.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time
from array import array
from collections import deque
from typing import Any, TextIO

from .rundir import Journal, Plan, ReplicaWriter, RunDir, read_journal, read_replicas_out
from .state import failure_cause
from .zygote import DEFAULT_JOBS_PER_PROCESS, Zygote

__all__ = ["EXIT_FAILED", "EXIT_OK", "LocalRunner"]

EXIT_OK = 0
EXIT_FAILED = 1

WAITING, READY, RUNNING, SUCCEEDED, FAILED = 0, 1, 2, 3, 4
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: most parents' sums sent with one job (see LocalRunner._input_sums)
SUMS_MAX = 100


class LocalRunner:
    """Runs (or resumes) the plan in a run directory."""

    def __init__(
        self,
        run_dir: str,
        *,
        slots: int | None = None,
        progress: bool | None = None,
        out: TextIO | None = None,
        summary: bool = True,
        jobs_per_process: int = DEFAULT_JOBS_PER_PROCESS,
        work_dir: str | None = None,
    ) -> None:
        self.rd = RunDir(run_dir)
        self.slots = max(1, slots or os.cpu_count() or 1)
        self.out = out or sys.stdout
        self.progress_enabled = self.out.isatty() if progress is None else progress
        self.summary = summary
        self.jobs_per_process = jobs_per_process
        self.work_dir = os.path.abspath(work_dir) if work_dir else None
        self.stopping: int | None = None
        self.plan: Plan | None = None

    # -- set-up ------------------------------------------------------------

    def _load(self) -> None:
        plan = self.rd.load_plan()
        self.plan = plan
        jobs = plan.jobs
        n = len(jobs)
        self.n = n
        self.index = {pj.id: e for e, pj in enumerate(jobs)}
        self.children: list[list[int]] = [[] for _ in range(n)]
        self.parents: list[list[int]] = [[] for _ in range(n)]
        self.pending = array("i", [0]) * n
        for e, pj in enumerate(jobs):
            self.pending[e] = len(pj.parents)
            for p in pj.parents:
                self.children[self.index[p]].append(e)
                self.parents[e].append(self.index[p])
        #: entry -> {lfn: sha256} of the files it staged out, kept while a child may run
        self.out_sums: dict[int, dict[str, str]] = {}
        #: pegasus.integrity.checking = none: no sha256 is checked
        self.check_intermediate = plan.options.get("integrity") != "none"
        self.kids_left = array("i", [0]) * n
        self.state = bytearray(n)
        self.attempt = array("i", [0]) * n
        self.tries = array("i", (pj.retries for pj in jobs))
        self.cleanup_done: set[str] = set()

    def _recover(self) -> int:
        """Read what earlier runs did; returns how many jobs are already done."""
        last: dict[str, str] = {}
        for ev in read_journal(self.rd.journal_file):
            job = ev.get("job")
            if job is None:
                if ev.get("event") == "cleanup" and ev.get("action"):
                    self.cleanup_done.add(ev["action"])
                continue
            e = self.index.get(job)
            if e is None:
                continue
            a = ev.get("attempt")
            if isinstance(a, int) and a > self.attempt[e]:
                self.attempt[e] = a
            last[job] = ev.get("event", "")
        records = self.rd.record_attempts()
        done = 0
        recovered = []
        for e, pj in enumerate(self.plan.jobs):  # type: ignore[union-attr]
            ids = pj.members or [pj.id]
            for i in ids:
                if i in records and records[i][-1] > self.attempt[e]:
                    self.attempt[e] = records[i][-1]
            if last.get(pj.id) == "succeeded":
                self.state[e] = SUCCEEDED
                done += 1
                continue
            if any(i in records for i in ids) and all(self._record_ok(i, records) for i in ids):
                self.state[e] = SUCCEEDED
                done += 1
                recovered.append(e)
        for e in recovered:
            self.journal.write(
                self.plan.jobs[e].id,
                "succeeded",
                self.attempt[e],
                recovered=True,  # type: ignore[union-attr]
            )
            self._succeeded(e)
        return done

    def _record_ok(self, job_id: str, records: dict[str, list[int]]) -> bool:
        for a in reversed(records.get(job_id, ())):
            rec = self.rd.read_record(job_id, a)
            if rec is not None and rec.get("status") == "succeeded":
                return True
        return False

    # -- the run -----------------------------------------------------------

    def run(self) -> int:
        rd = self.rd
        self._load()
        pid = rd.running_pid()
        if pid is not None and pid != os.getpid():
            from ferry.plugins.errors import ConfigError

            raise ConfigError(f"{rd} is being run by process {pid} (run.pid); not starting twice")
        os.makedirs(rd.records, exist_ok=True)
        os.makedirs(self.work_dir or rd.work, exist_ok=True)
        self.zygote = Zygote.start(
            records_dir=rd.records,
            workdir_base=self.work_dir or rd.work,
            log_file=rd.log_file,
            jobs_per_process=self.jobs_per_process,
        )
        with open(rd.pid_file + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(rd.pid_file + ".tmp", rd.pid_file)
        self.journal = Journal(rd.journal_file)
        self.replicas = ReplicaWriter(rd.replicas_out)
        self.registered = read_replicas_out(rd.replicas_out)
        if self.registered:
            self.replicas.rewrite(self.registered)  # drops a torn last entry
        self._cleanup_engine = None
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_handlers = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
        }
        old_wakeup = signal.set_wakeup_fd(wake_w)
        self.t0 = time.time()
        try:
            done = self._recover()
            self.journal.write(None, "workflow-started", jobs=self.n, done=done, slots=self.slots)
            code = self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            self.zygote.close()
            os.close(wake_r)
            os.close(wake_w)
            self.replicas.close()
            if self._cleanup_engine is not None:
                self._cleanup_engine.registry.close()
            self.journal.close()
            try:
                os.unlink(rd.pid_file)
            except FileNotFoundError:
                pass
        if self.summary:
            self._print_summary(code)
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        # the loop sends TERM to the jobs (writing to the zygote here could cut
        # into a request being written)
        self.stopping = signum

    def _loop(self, wake_r: int) -> int:
        plan = self.plan
        assert plan is not None
        jobs = plan.jobs
        state = self.state
        ready: deque[int] = deque()
        for e in range(self.n):
            if state[e] == SUCCEEDED:
                for c in self.children[e]:
                    self.pending[c] -= 1
                # resumed: the sums of a succeeded parent whose children still run
                left = sum(1 for c in self.children[e] if state[c] != SUCCEEDED)
                if left and e not in self.out_sums:
                    sums = self._outputs(e)[0]
                    if sums:
                        self.out_sums[e] = sums
                if not left:
                    self.out_sums.pop(e, None)
                self.kids_left[e] = left
        for e in range(self.n):
            if state[e] == WAITING and self.pending[e] == 0:
                state[e] = READY
                ready.append(e)
                self.journal.write(jobs[e].id, "queued", self.attempt[e] + 1)
        self._init_cleanup()
        running: dict[int, int] = {}  # token (= entry index) -> attempt
        self.counts = {"succeeded": sum(1 for s in state if s == SUCCEEDED), "failed": 0}
        self.retries_used = 0
        display = _Display(self, self.progress_enabled)
        term_sent = False
        try:
            while True:
                while ready and len(running) < self.slots and self.stopping is None:
                    e = ready.popleft()
                    self._launch(e, running)
                if self.stopping is not None and not term_sent:
                    term_sent = True
                    self.zygote.send({"op": "term"})
                if not running and (not ready or self.stopping is not None):
                    break
                display.update(len(running))
                try:
                    readable, _, _ = select.select([self.zygote.replies, wake_r], [], [], 1.0)
                except InterruptedError:
                    continue
                if wake_r in readable:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                if self.zygote.replies in readable:
                    for msg in self.zygote.read():
                        self._handle(msg, running, ready, display)
        finally:
            display.close()
        ok = all(s == SUCCEEDED for s in state)
        if ok and self.stopping is None:
            self._leaf_cleanup()
        status = "success" if ok else ("removed" if self.stopping is not None else "failure")
        self.journal.write(
            None,
            "workflow-finished",
            status=status,
            succeeded=sum(1 for s in state if s == SUCCEEDED),
            failed=sum(1 for s in state if s == FAILED),
            total=self.n,
        )
        if self.stopping is not None and not ok:
            return 130 if self.stopping == signal.SIGINT else 143
        return EXIT_OK if ok else EXIT_FAILED

    def _launch(self, e: int, running: dict[int, int]) -> None:
        pj = self.plan.jobs[e]  # type: ignore[union-attr]
        self.attempt[e] += 1
        a = self.attempt[e]
        if pj.members:
            cluster = self.rd.load_cluster(pj.spec)
            specs = [[self.rd.join(p), m] for p, m in zip(cluster.members, pj.members, strict=True)]
        else:
            specs = [[self.rd.join(pj.spec), pj.id]]
        self.state[e] = RUNNING
        running[e] = a
        msg: dict[str, Any] = {"op": "run", "token": e, "attempt": a, "specs": specs}
        if self.parents[e] and self.out_sums and self.check_intermediate:
            sums = self._input_sums(e)
            if sums:
                msg["sums"] = sums
        self.zygote.send(msg)
        self.journal.write(pj.id, "started", a)

    def _handle(
        self, msg: dict[str, Any], running: dict[int, int], ready: deque[int], display: _Display
    ) -> None:
        if "exit" not in msg:
            return  # "pid" and per-member lines: nothing to do here
        e = msg["token"]
        a = running.pop(e)
        code = msg["exit"]
        pj = self.plan.jobs[e]  # type: ignore[union-attr]
        if code == 0:
            self.state[e] = SUCCEEDED
            self.counts["succeeded"] += 1
            self.journal.write(pj.id, "succeeded", a, exit=0)
            self._succeeded(e)
            self._child_done(e)
            for c in self.children[e]:
                self.pending[c] -= 1
                if self.pending[c] == 0 and self.state[c] == WAITING:
                    self.state[c] = READY
                    ready.append(c)
                    self.journal.write(self.plan.jobs[c].id, "queued", self.attempt[c] + 1)  # type: ignore[union-attr]
            self._after_success(e)
            display.job_done(pj.id, True, a, code)
            return
        if self.stopping is not None:
            self.state[e] = WAITING
            self.journal.write(pj.id, "removed", a, exit=code)
            display.line(f"job {pj.id} removed (attempt {a})")
            return
        self.journal.write(pj.id, "failed", a, exit=code)
        if self.tries[e] > 0:
            self.tries[e] -= 1
            self.retries_used += 1
            self.state[e] = READY
            ready.append(e)
            self.journal.write(pj.id, "retry", a + 1)
            display.line(
                f"job {pj.id} failed (attempt {a}, exit {code}){self._why(e, a)}; retrying"
            )
            return
        self.state[e] = FAILED
        self.counts["failed"] += 1
        display.job_done(pj.id, False, a, code, self._why(e, a))

    def _why(self, e: int, attempt: int) -> str:
        """``": <step>: <cause>"`` for the one-line failure message (``""`` without a record)."""
        pj = self.plan.jobs[e]  # type: ignore[union-attr]
        cause = failure_cause(self.rd, pj.members or [pj.id], attempt, named=bool(pj.members))
        return f": {cause}" if cause else ""

    # -- registration --------------------------------------------------------

    def _outputs(self, e: int) -> tuple[dict[str, str], set[str], bool]:
        """From the entry's succeeded records: the sha256 of each staged-out file, the
        files staged out, and whether any record was found."""
        pj = self.plan.jobs[e]  # type: ignore[union-attr]
        sums: dict[str, str] = {}
        sent: set[str] = set()  # staged out (a checkpoint file may never have been written)
        seen = False
        for job_id in pj.members or [pj.id]:
            rec = self._last_success(job_id, self.attempt[e])
            if rec is None:
                continue
            seen = True
            for t in rec.get("transfers", ()):
                if t.get("direction") == "output" and t.get("ok"):
                    sent.add(t["lfn"])
                    h = str(t.get("sha256") or "").lower().removeprefix("sha256:")
                    if _HEX64.fullmatch(h):
                        sums[t["lfn"]] = h
        return sums, sent, seen

    def _succeeded(self, e: int) -> None:
        """Register the entry's outputs, keep their sums for its children's stage-in."""
        pj = self.plan.jobs[e]  # type: ignore[union-attr]
        if not pj.register and not self.children[e]:
            return
        sums, sent, seen = self._outputs(e)
        if self.children[e] and sums:
            self.out_sums[e] = sums
            self.kids_left[e] = len(self.children[e])
        self._register(e, sums, sent, seen)

    def _child_done(self, e: int) -> None:
        """Forget the sums of ``e``'s parents once all their children succeeded."""
        for p in self.parents[e]:
            if p in self.out_sums:
                self.kids_left[p] -= 1
                if self.kids_left[p] <= 0:
                    del self.out_sums[p]

    def _input_sums(self, e: int) -> dict[str, str]:
        """The sha256 the parents recorded for the files they staged out (an LFN two
        parents disagree on is left out). The runner does not know which of them the
        job reads: a parent with more than :data:`SUMS_MAX` outputs and several
        children (a fan-out) sends none, else every child would carry them all."""
        out: dict[str, str] = {}
        clash: set[str] = set()
        for p in self.parents[e]:
            sums = self.out_sums.get(p, {})
            if len(sums) > SUMS_MAX and len(self.children[p]) > 1:
                continue
            for lfn, h in sums.items():
                if out.setdefault(lfn, h) != h:
                    clash.add(lfn)
        for lfn in clash:
            del out[lfn]
        return out

    def _register(self, e: int, sums: dict[str, str], sent: set[str], seen: bool) -> None:
        pj = self.plan.jobs[e]  # type: ignore[union-attr]
        for r in pj.register:
            if seen and r.lfn not in sent:
                continue
            entry = (r.url, r.site, sums.get(r.lfn))
            if self.registered.get(r.lfn) != entry:
                self.registered[r.lfn] = entry
                self.replicas.add(r.lfn, r.url, r.site, entry[2])

    def _last_success(self, job_id: str, attempt: int) -> dict[str, Any] | None:
        for a in range(attempt, 0, -1):
            rec = self.rd.read_record(job_id, a)
            if rec is not None and rec.get("status") == "succeeded":
                return rec
        return None

    # -- cleanup ---------------------------------------------------------------

    def _init_cleanup(self) -> None:
        plan = self.plan
        assert plan is not None
        self.cleanup_wait: list[int] = []
        self.cleanup_of: dict[int, list[int]] = {}
        for i, action in enumerate(plan.cleanup):
            if action.after is None:
                self.cleanup_wait.append(-1)
                continue
            left = 0
            for jid in action.after:
                e = self.index[jid]
                if self.state[e] != SUCCEEDED:
                    left += 1
                    self.cleanup_of.setdefault(e, []).append(i)
            self.cleanup_wait.append(left)
            if left == 0:
                self._run_cleanup(i)

    def _after_success(self, e: int) -> None:
        for i in self.cleanup_of.get(e, ()):
            self.cleanup_wait[i] -= 1
            if self.cleanup_wait[i] == 0:
                self._run_cleanup(i)

    def _leaf_cleanup(self) -> None:
        for i, left in enumerate(self.cleanup_wait):
            if left == -1:
                self._run_cleanup(i)

    def _run_cleanup(self, i: int) -> None:
        action = self.plan.cleanup[i]  # type: ignore[union-attr]
        if action.id in self.cleanup_done:
            return
        errors = _remove_urls(self, action.remove)
        self.cleanup_done.add(action.id)
        extra: dict[str, Any] = {"action": action.id, "files": len(action.remove)}
        if errors:
            extra["errors"] = errors[:5]
        self.journal.write(None, "cleanup", **extra)

    # -- summary ---------------------------------------------------------------

    def _print_summary(self, code: int) -> None:
        from .statistics import format_summary, summarize

        try:
            text = format_summary(summarize(self.rd))
        except Exception as exc:  # noqa: BLE001 - the summary must not fail the run
            text = f"(no statistics: {exc})\n"
        if code == EXIT_OK:
            text += f"\nWorkflow succeeded: {self.rd}\n"
        elif code == EXIT_FAILED:
            text += (
                f"\nWorkflow failed: {self.counts['failed']} job(s) failed."
                f" See: ferry analyze {self.rd}\n"
            )
        else:
            text += f"\nWorkflow stopped. Continue it with: ferry run --resume {self.rd}\n"
        self.say(text)

    def say(self, text: str) -> None:
        """Write to the output. A reader that went away (``ferry run ... | head``) does
        not stop the run: the rest of the output goes to /dev/null."""
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.out.fileno())  # what is still buffered goes there too
            except (OSError, ValueError, AttributeError):
                self.out = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run
            finally:
                os.close(devnull)


def _remove_urls(runner: LocalRunner, urls: list[str]) -> list[str]:
    """Remove files (local ones directly, others through the transfer engine)."""
    errors: list[str] = []
    remote = []
    from ferry.plugins.url import parse_url

    for u in urls:
        try:
            url = parse_url(u)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{u}: {exc}")
            continue
        if url.is_local:
            try:
                os.unlink(url.local_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"{u}: {exc.strerror}")
        else:
            remote.append(url)
    if remote:
        from ferry.worker.request import Endpoint, RemoveRequest

        if runner._cleanup_engine is None:
            from ferry.plugins.registry import Registry
            from ferry.worker.engine import Engine, TransferConfig

            runner._cleanup_engine = Engine(Registry(), TransferConfig(threads=4, max_attempts=2))
        for res in runner._cleanup_engine.run([RemoveRequest(Endpoint(u)) for u in remote]):
            if not res.ok:
                errors.append(res.error or "remove failed")
    return errors


class _Display:
    """A rich progress bar on a terminal; else plain lines (failures, status every 10 s)."""

    def __init__(self, runner: LocalRunner, rich_bar: bool) -> None:
        self.runner = runner
        self.out = runner.out
        self.total = runner.n
        self.running = 0
        self.last_line = time.monotonic()
        self.progress = None
        if rich_bar:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=Console(file=self.out),
                refresh_per_second=5,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                self.runner.plan.workflow,
                total=self.total,
                detail="",  # type: ignore[union-attr]
            )

    def _detail(self) -> str:
        c = self.runner.counts
        return f"{c['succeeded']} done, {c['failed']} failed, {self.running} running"

    def update(self, running: int) -> None:
        self.running = running
        c = self.runner.counts
        if self.progress is not None:
            self.progress.update(
                self.task, completed=c["succeeded"] + c["failed"], detail=self._detail()
            )
            return
        now = time.monotonic()
        if now - self.last_line >= 10.0:
            self.last_line = now
            self.line(f"[{c['succeeded'] + c['failed']}/{self.total}] {self._detail()}")

    def line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self.runner.say(text + "\n")

    def job_done(self, job_id: str, ok: bool, attempt: int, code: int, why: str = "") -> None:
        if not ok:
            self.line(f"job {job_id} FAILED (attempt {attempt}, exit {code}){why}")

    def close(self) -> None:
        if self.progress is not None:
            c = self.runner.counts
            self.progress.update(
                self.task, completed=c["succeeded"] + c["failed"], detail=self._detail()
            )
            self.progress.stop()
