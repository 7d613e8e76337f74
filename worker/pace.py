"""How many of the engine's transfer threads work at a time.

Threads pay off while transfers wait on something outside this process: a
server's answer, a network round trip, a remote disk. They do not while the
transfers wait on this machine's CPU: then Python threads only contend for the
GIL and for the cores. 1,000 files of 64 KiB from nginx on 127.0.0.1, on 2
cores: 0.57-0.64 s on 2 threads, 0.76-0.81 s on 4, 0.92-1.14 s on 16.

So the engine starts with one working thread per CPU (or fewer, if that is all
it was given) and doubles the number while this process leaves the CPUs it
could use mostly idle: over each window of :data:`WINDOW` seconds, the
process's CPU time (all threads, ``time.process_time``) is compared with what
the working threads could use (``min(working, cores)`` times the window). Below
:data:`RAMP_BELOW` of that, the threads are waiting on the outside, and more
of them overlap the waiting. It never shrinks: a burst of CPU-bound work after
a slow start keeps the threads it has, as it would with a fixed count.

The other threads are parked (a condition wait, once, not a gate on every
transfer): a thread that finds its index at or past the working count waits
until the count grows or the work runs out. While some threads are parked, the
first of them wakes every window to look at the CPU time, so that a few long
transfers on a slow link get their company without waiting for one to end.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["Pace", "RAMP_BELOW", "WINDOW"]

_log = logging.getLogger("ferry.worker.pace")

#: seconds between looks at the process's CPU time
WINDOW = 0.05
#: the working threads use less than this share of the CPU they could: add threads
RAMP_BELOW = 0.4


class Pace:
    """The working-thread count of a pool of ``workers`` threads on ``cores`` CPUs.

    Thread ``k`` calls :meth:`wait_turn` before it takes a request (False: the
    work ran out while it was parked) and :meth:`tick` after each request.
    :meth:`finish` wakes every parked thread when the work runs out.
    """

    def __init__(self, workers: int, cores: int) -> None:
        self.workers = workers
        self.cores = max(1, cores)
        #: threads working now (the others are parked)
        self.working = min(workers, self.cores)
        #: the most threads that worked at once (the tests and the summary read it)
        self.peak = self.working
        self._cond = threading.Condition()
        self._done = False
        self._t0 = time.monotonic()
        self._cpu0 = time.process_time()
        self._next = self._t0 + WINDOW

    def wait_turn(self, k: int) -> bool:
        """Park thread ``k`` while it is not among the working ones."""
        if k < self.working:
            return True
        with self._cond:
            while k >= self.working and not self._done:
                if k == self.working:  # the first parked thread keeps the time
                    self._cond.wait(max(0.0, self._next - time.monotonic()))
                    self._look()
                else:
                    self._cond.wait()
            return not self._done

    def tick(self) -> None:
        """After a request: look at the CPU time if a window has passed."""
        if self.working < self.workers and time.monotonic() >= self._next:
            with self._cond:
                self._look()

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def _look(self) -> None:
        """With the condition held: end the window if it is over, ramp if idle."""
        now = time.monotonic()
        if now < self._next or self.working >= self.workers:
            return
        cpu = time.process_time()
        could = min(self.working, self.cores) * (now - self._t0)
        if cpu - self._cpu0 < RAMP_BELOW * could:
            _log.debug(
                "threads: %d -> %d (the process used %.0f%% of the CPU %d thread(s) could)",
                self.working, min(self.workers, 2 * self.working),
                100 * (cpu - self._cpu0) / could if could else 0, self.working,
            )  # fmt: skip
            self.working = min(self.workers, 2 * self.working)
            self.peak = max(self.peak, self.working)
            self._cond.notify_all()
        self._t0, self._cpu0, self._next = now, cpu, now + WINDOW
