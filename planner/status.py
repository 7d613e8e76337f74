"""``ferry status DIR``: where a run stands (from plan.json and the journal)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .rundir import RunDir
from .state import STATES, failure_cause, run_state

__all__ = ["DESCRIPTION", "add_arguments", "run", "status_of"]

DESCRIPTION = """\
Show a run's state: the workflow status (running, success, failure, removed,
stopped, not started), how many jobs are in each state, the running jobs and
the failed ones. Exit status: 0 success or still running, 1 failed, removed or
stopped, 2 not a run directory.
"""

_SHOW = 20


def status_of(rd: RunDir) -> dict[str, object]:
    rs = run_state(rd)
    counts = dict.fromkeys(STATES, 0)
    running = []
    failed = []
    for pj in rs.plan.jobs:
        js = rs.jobs[pj.id]
        counts[js.state] += 1
        if js.state == "running":
            running.append({"id": pj.id, "attempt": js.last_attempt, "since": js.since})
        elif js.state == "failed":
            failed.append({"id": pj.id, "attempt": js.last_attempt, "exit": js.exit, "pj": pj})
    for r in failed[:_SHOW]:  # why, from the record (the ones shown only: a read each)
        pj = r.pop("pj")
        ids = pj.members or [pj.id]
        r["cause"] = failure_cause(rd, ids, r["attempt"], named=bool(pj.members)) or None
    for r in failed[_SHOW:]:
        r.pop("pj")
    return {
        "run_dir": rd.path,
        "workflow": rs.plan.workflow,
        "status": rs.status,
        "pid": rs.running_pid,
        "total": len(rs.plan.jobs),
        "pruned": len(rs.plan.pruned),
        "counts": counts,
        "running": running,
        "failed": failed,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from ferry.plugins.errors import ConfigError

    rd = RunDir(args.run_dir)
    try:
        st = status_of(rd)
    except ConfigError as exc:
        print(f"ferry status: {exc}", file=sys.stderr)
        return 2
    code = 0 if st["status"] in ("success", "running", "not started") else 1
    if args.json:
        print(json.dumps(st, indent=1))
        return code
    counts = st["counts"]
    assert isinstance(counts, dict)
    done = counts["succeeded"] + counts["failed"]
    total = st["total"]
    pid = f" (pid {st['pid']})" if st["pid"] else ""
    print(f"Workflow {st['workflow']}: {st['status']}{pid}")
    print(f"Run directory: {st['run_dir']}")
    pct = 100.0 * done / total if total else 100.0
    print(
        f"Jobs: {done}/{total} done ({pct:.1f}%)"
        + (f", {st['pruned']} pruned by data reuse" if st["pruned"] else "")
    )
    print()
    print(f"{'State':<12}{'Jobs':>8}")
    for name in STATES:
        if counts[name] or name in ("succeeded", "failed", "running"):
            print(f"{name:<12}{counts[name]:>8}")
    now = time.time()
    running = st["running"]
    assert isinstance(running, list)
    if running:
        print("\nRunning:")
        for r in running[:_SHOW]:
            since = f"{now - r['since']:.0f} s" if r["since"] else "?"
            print(f"  {r['id']}  (attempt {r['attempt']}, for {since})")
        if len(running) > _SHOW:
            print(f"  ... and {len(running) - _SHOW} more")
    failed = st["failed"]
    assert isinstance(failed, list)
    if failed:
        print("\nFailed:")
        for r in failed[:_SHOW]:
            cause = f": {r['cause']}" if r.get("cause") else ""
            print(f"  {r['id']}  (attempt {r['attempt']}, exit {r['exit']}){cause}")
        if len(failed) > _SHOW:
            print(f"  ... and {len(failed) - _SHOW} more")
        print(f"\nDetails: ferry analyze {st['run_dir']}")
    return code
