"""``ferry remove DIR``: stop a running ``ferry run`` cleanly."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from .rundir import RunDir

__all__ = ["DESCRIPTION", "add_arguments", "remove", "run"]

DESCRIPTION = """\
Stop the `ferry run` working on DIR: send it TERM (run.pid). It starts no new
job, sends TERM to the running ones (their workers stop the job and stage its
checkpoints out, and write their records), journals them `removed` and exits.
This waits until it has. `ferry run --resume DIR` continues the workflow.
Exit status: 0 stopped, 1 nothing was running, 2 it did not stop in time.
"""


def remove(rd: RunDir, *, wait: float = 120.0) -> tuple[int, str]:
    """Send TERM to the run's runner and wait for it to go; (exit code, message)."""
    if not rd.exists():
        return 1, f"{rd} is not a ferry run directory (no plan.json)"
    pid = rd.running_pid()
    if pid is None:
        return 1, f"no ferry run is running in {rd}"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 1, f"no ferry run is running in {rd}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if rd.running_pid() != pid:
            return (
                0,
                f"stopped the workflow in {rd} (process {pid});"
                f" continue it with: ferry run --resume {rd}",
            )
        time.sleep(0.1)
    return 2, f"process {pid} is still running after {wait:.0f} s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the run to stop (default: 120)",
    )


def run(args: argparse.Namespace) -> int:
    code, msg = remove(RunDir(args.run_dir), wait=args.wait)
    print(f"ferry remove: {msg}", file=sys.stderr if code else sys.stdout)
    return code
