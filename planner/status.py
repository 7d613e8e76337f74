"""``ferry status DIR``: where a run stands (from plan.json and the journal)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .analyze import read_record, scrub
from .rundir import RunDir
from .state import STATES, failure_cause, run_state

__all__ = ["DESCRIPTION", "add_arguments", "run", "status_of"]

DESCRIPTION = """\
Show a run's state: the workflow status (running, success, failure, removed,
stopped, not started), how many jobs are in each state, the running jobs and
the failed ones. Exit status: 0 success, still running or not started, 1 failed,
removed or stopped, 2 not a run directory.
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
        r["cause"] = _cause(rd, ids, r["attempt"], bool(pj.members))
    for r in failed[_SHOW:]:
        r.pop("pj")
    return {
        "run_dir": rd.path,
        "workflow": rs.plan.workflow,
        "backend": rs.plan.backend,
        "status": rs.status,
        "pid": rs.running_pid,
        "total": len(rs.plan.jobs),
        "pruned": len(rs.plan.pruned),
        "counts": counts,
        "running": running,
        "failed": failed,
    }


def _cause(rd: RunDir, ids: list[str], attempt: int, named: bool) -> str | None:
    """Why the attempt failed, from its records; a record that cannot be read is named."""
    for job_id in ids:
        path = rd.record_path(job_id, attempt)
        if os.path.exists(path):
            try:
                read_record(path)
            except ValueError as exc:
                return f"{path}: not a valid invocation record: {exc}"
    try:
        return failure_cause(rd, ids, attempt, named=named) or None
    except (AttributeError, TypeError):  # a record with fields of the wrong type
        return None


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
    except OSError as exc:  # plan.json or records/ that cannot be read
        print(f"ferry status: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    code = 0 if st["status"] in ("success", "running", "not started") else 1
    if args.json:
        print(scrub(json.dumps(st, indent=1)))
        return code
    sys.stdout.write(scrub(_text(st)))
    return code


def _text(st: dict[str, object]) -> str:
    out: list[str] = []
    add = out.append
    counts = st["counts"]
    assert isinstance(counts, dict)
    done = counts["succeeded"]  # as ferry run's "N done" and pegasus-status' DONE
    total = st["total"]
    assert isinstance(total, int)
    pid = f" (pid {st['pid']})" if st["pid"] else ""
    add(f"Workflow {st['workflow']}: {st['status']}{pid}")
    add(f"Run directory: {st['run_dir']}")
    pct = 100.0 * done / total if total else 100.0
    add(
        f"Jobs: {done}/{total} done ({pct:.1f}%)"
        + (f", {counts['failed']} failed" if counts["failed"] else "")
        + (f", {st['pruned']} pruned by data reuse" if st["pruned"] else "")
    )
    add("")
    add(f"{'State':<12}{'Jobs':>8}")
    for name in STATES:
        if counts[name] or name in ("succeeded", "failed", "running"):
            add(f"{name:<12}{counts[name]:>8}")
    now = time.time()
    running = st["running"]
    assert isinstance(running, list)
    live = st["status"] == "running"
    if running and live:
        add("\nRunning:")
    elif running:  # the journal's last word; the runner is gone (killed)
        again = "ferry submit" if st.get("backend") == "htcondor" else "ferry run --resume"
        add(f"\nInterrupted ({again} {st['run_dir']} runs them again):")
    if running:
        for r in running[:_SHOW]:
            since = f"{now - r['since']:.0f} s" if r["since"] else "?"
            how = f"for {since}" if live else "did not finish"
            add(f"  {r['id']}  (attempt {r['attempt']}, {how})")
        if len(running) > _SHOW:
            add(f"  ... and {len(running) - _SHOW} more")
    failed = st["failed"]
    assert isinstance(failed, list)
    if failed:
        add("\nFailed:")
        for r in failed[:_SHOW]:
            cause = f": {r['cause']}" if r.get("cause") else ""
            add(f"  {r['id']}  (attempt {r['attempt']}, exit {r['exit']}){cause}")
        if len(failed) > _SHOW:
            add(f"  ... and {len(failed) - _SHOW} more")
        add(f"\nDetails: ferry analyze {st['run_dir']}")
    return "\n".join(out) + "\n"
