"""Run the job's process: files for stdio, rusage from wait4, timeout, TERM passed on.

The job runs in its own session (process group) so that a timeout or an
eviction reaches every process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec

__all__ = ["ProcessResult", "Runner"]


class ProcessResult(msgspec.Struct):
    exit_code: int | None
    signal: int | None
    wall: float
    cpu_user: float
    cpu_system: float
    peak_memory_bytes: int
    timed_out: bool
    terminated: bool  # ended because the worker was asked to stop (eviction)


class Runner:
    """Starts one process and waits for it; ``terminate()`` may be called from a signal handler."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._terminated = False

    def terminate(self) -> None:
        """Ask the job to stop (TERM to its process group); the wait loop escalates to KILL."""
        self._terminated = True
        self._stop.set()
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    @staticmethod
    def _end_group(pgid: int, grace_end: float) -> None:
        """What the job left running in its process group: KILLed, as a batch system ends
        a job's processes; after a TERM, not before the grace that TERM announced (a
        wrapper script dies at once, the program it ran may still write its checkpoint)."""
        while _group_runs(pgid):
            if time.monotonic() >= grace_end:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                return
            time.sleep(0.05)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        stdin: str | None,
        stdout: str,
        stderr: str,
        timeout: float | None = None,
        kill_grace: float = 10.0,
        tick: Callable[[], None] | None = None,
        tick_interval: float | None = None,
    ) -> ProcessResult:
        """Run ``argv``; ``tick`` is called every ``tick_interval`` seconds while it runs."""
        start = time.monotonic()
        with contextlib.ExitStack() as stack:
            fin = stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
            fout = stack.enter_context(open(stdout, "wb"))
            ferr = fout if stderr == stdout else stack.enter_context(open(stderr, "wb"))
            self._proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=fin,
                stdout=fout,
                stderr=ferr,
                start_new_session=True,
                close_fds=True,
            )
        if self._terminated:  # TERM arrived while we were starting the process
            self._signal(signal.SIGTERM)
        pid = self._proc.pid
        waited: dict[str, object] = {}
        done = threading.Event()

        def reap() -> None:
            _, status, usage = os.wait4(pid, 0)
            waited.update(status=status, usage=usage)
            done.set()

        reaper = threading.Thread(target=reap, name="ferry-wait4", daemon=True)
        reaper.start()
        timed_out = False
        deadline = start + timeout if timeout else None
        next_tick = start + tick_interval if tick and tick_interval else None
        kill_at: float | None = None
        killed = False
        while not done.is_set():
            now = time.monotonic()
            waits = [t for t in (deadline, next_tick, kill_at) if t is not None]
            pause = max(0.0, min(waits) - now) if waits else None
            if self._stop.is_set() and kill_at is None:
                kill_at = now + kill_grace
                continue
            done.wait(0.5 if pause is None else min(pause, 0.5))
            now = time.monotonic()
            if done.is_set():
                break
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                self._signal(signal.SIGTERM)
                kill_at = now + kill_grace
            if kill_at is not None and now >= kill_at:
                self._signal(signal.SIGKILL)
                killed = True
                kill_at = now + 3600  # nothing more to escalate to
            if next_tick is not None and now >= next_tick and tick is not None:
                tick()
                next_tick = time.monotonic() + (tick_interval or 0)
        reaper.join()
        wall = time.monotonic() - start
        if killed:
            grace_end = time.monotonic()
        elif kill_at is not None:
            grace_end = kill_at
        elif timed_out or self._stop.is_set():
            grace_end = time.monotonic() + kill_grace
        else:
            grace_end = time.monotonic()
        self._end_group(pid, grace_end)
        # the Popen object never reaped the child itself: keep it from trying
        self._proc.returncode = 0
        self._proc = None  # its pid is no longer the job's: nothing more is sent to it
        status = int(waited["status"])  # type: ignore[call-overload]
        usage = waited["usage"]
        code = os.waitstatus_to_exitcode(status)
        return ProcessResult(
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            wall=wall,
            cpu_user=usage.ru_utime,  # type: ignore[attr-defined]
            cpu_system=usage.ru_stime,  # type: ignore[attr-defined]
            peak_memory_bytes=usage.ru_maxrss * 1024,  # type: ignore[attr-defined]
            timed_out=timed_out,
            terminated=self._terminated,
        )


def _group_runs(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: an orphan's
    waits for a reaper that, in some containers, never comes."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        names = os.listdir("/proc")
    except OSError:
        return True  # no /proc to tell zombies apart
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False
