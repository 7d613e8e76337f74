"""``ferry analyze DIR``: why jobs failed (pegasus-analyzer's report, from the records)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .rundir import RunDir
from .state import run_state

__all__ = ["DESCRIPTION", "add_arguments", "analyze", "run"]

DESCRIPTION = """\
Report the failed jobs of a run, as pegasus-analyzer does: a summary, then for
each failed job (each failed member of a cluster) its last attempt's exit code,
the step that failed (stage-in, integrity, container, run, success-check,
stage-out, worker), the failures with the file and URL, the transfer errors,
the tail of stderr and stdout, and the record's path. Exit status: 0 no
failures, 2 failures, 1 error (as pegasus-analyzer).
"""

_STEPS = {
    0: "success",
    1: "the job failed",
    2: "worker error",
    3: "stage-in failed",
    4: "integrity failure",
    5: "stage-out failed",
    6: "container",
    143: "evicted (TERM)",
}


def _last_record(rd: RunDir, job_id: str, attempts: list[int]) -> tuple[int, dict[str, Any] | None]:
    for a in reversed(attempts):
        rec = rd.read_record(job_id, a)
        if rec is not None:
            return a, rec
    return 0, None


def analyze(rd: RunDir) -> dict[str, Any]:
    rs = run_state(rd)
    records = rd.record_attempts()
    total = len(rs.plan.jobs)
    counts = {"succeeded": 0, "failed": 0, "running": 0, "unsubmitted": 0}
    failed: list[dict[str, Any]] = []
    logs: dict[str, tuple[str, str]] | None = None
    for pj in rs.plan.jobs:
        js = rs.jobs[pj.id]
        if js.state == "succeeded":
            counts["succeeded"] += 1
        elif js.state == "failed":
            counts["failed"] += 1
        elif js.state in ("running", "retrying", "queued"):
            counts["running"] += 1
        else:
            counts["unsubmitted"] += 1
        if js.state not in ("failed", "retrying"):
            continue
        for task in pj.members or [pj.id]:
            attempt, rec = _last_record(rd, task, records.get(task, []))
            if rec is not None and rec.get("status") == "succeeded":
                continue
            entry: dict[str, Any] = {
                "job": task,
                "cluster": pj.id if pj.members else None,
                "state": js.state,
                "attempts": len(records.get(task, [])),
                "exit": js.exit,
            }
            if rec is None:
                entry["record"] = None
                entry["reason"] = "no invocation record (the worker did not start or was killed)"
                if rs.plan.backend == "htcondor":
                    if logs is None:
                        from .dagman import node_logs

                        logs = node_logs(rd)
                    if pj.id in logs:  # what the node job itself said (HTCondor)
                        entry["reason"] += f"; the node job's stderr: {logs[pj.id][1]}"
            else:
                entry.update(
                    record=rd.record_path(task, attempt),
                    attempt=attempt,
                    host=rec.get("host"),
                    worker_exit_code=rec.get("worker_exit_code"),
                    exit_code=rec.get("exit_code"),
                    signal=rec.get("signal"),
                    failed_step=rec.get("failed_step"),
                    failures=rec.get("failures", []),
                    transfer_errors=[
                        {
                            "lfn": t.get("lfn"),
                            "direction": t.get("direction"),
                            "source": t.get("source"),
                            "dest": t.get("dest"),
                            "error": t.get("error"),
                            "tried": [x.get("error") for x in t.get("tried", [])],
                        }
                        for t in rec.get("transfers", [])
                        if not t.get("ok")
                    ],
                    executable=rec.get("executable"),
                    arguments=rec.get("arguments"),
                    workdir=rec.get("workdir") if rec.get("workdir_kept") else None,
                    stderr_tail=rec.get("stderr_tail", ""),
                    stdout_tail=rec.get("stdout_tail", ""),
                )
            failed.append(entry)
    status = rs.status
    return {
        "run_dir": rd.path,
        "workflow": rs.plan.workflow,
        "status": status,
        "total": total,
        "counts": counts,
        "failed": failed,
    }


def _center(text: str, fill: str) -> str:
    return text.center(80, fill)


def _pct(n: int, total: int) -> str:
    return f"{n:6d} ({100.0 * n / total if total else 0.0:.2f}%)"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def format_report(r: dict[str, Any], lines: int = 20) -> str:
    c = r["counts"]
    total = r["total"]
    out = [
        _center("Summary", "*"),
        "",
        f" Run Directory      : {r['run_dir']}",
        f" Workflow Status    : {r['status']}",
        f" Total jobs         : {_pct(total, total)}",
        f" # jobs succeeded   : {_pct(c['succeeded'], total)}",
        f" # jobs failed      : {_pct(c['failed'], total)}",
        f" # jobs running     : {_pct(c['running'], total)}",
        f" # jobs unsubmitted : {_pct(c['unsubmitted'], total)}",
        "",
    ]
    if r["failed"]:
        out.append(_center("Failed jobs' details", "*"))
        for f in r["failed"]:
            out += ["", _center(f["job"], "="), ""]
            if f.get("cluster"):
                out.append(f"      cluster: {f['cluster']}")
            out.append(f"   last state: {f['state']}")
            out.append(f"     attempts: {f['attempts']}")
            if f.get("record") is None:
                out.append(f"       record: none ({f['reason']})")
                continue
            code = f.get("worker_exit_code")
            out.append(f"  worker exit: {code} ({_STEPS.get(code, 'unknown')})")
            ec = f.get("exit_code")
            sig = f.get("signal")
            out.append(
                f"    exit code: {ec if ec is not None else '-'}"
                + (f" (killed by signal {sig})" if sig else "")
            )
            out.append(f"  failed step: {f.get('failed_step') or '-'}")
            out.append(f"         host: {f.get('host')}")
            out.append(f"       record: {f['record']}")
            if f.get("workdir"):
                out.append(f"     work dir: {f['workdir']} (kept)")
            cmd = " ".join(
                [str(f.get("executable") or "")] + [str(a) for a in f.get("arguments") or []]
            )
            out.append(f"      command: {cmd}")
            for x in f.get("failures", []):
                where = ", ".join(
                    f"{k} {x[k]}" for k in ("lfn", "url", "expected", "actual") if x.get(k)
                )
                out.append(
                    f"      failure: [{x.get('step')}] {x.get('reason')}"
                    + (f" ({where})" if where else "")
                )
            for t in f.get("transfer_errors", []):
                out.append(f"     transfer: {t['direction']} {t['lfn']}: {t['error']}")
                for e in t["tried"][:5]:
                    out.append(f"               tried: {e}")
            for name in ("stderr", "stdout"):
                text = f.get(f"{name}_tail") or ""
                if text.strip():
                    out += ["", _center(f"{f['job']} - {name} (last {lines} lines)", "-"), ""]
                    out.append(_tail(text, lines))
    out += ["", _center("Done", "*"), "", "ferry analyze: end of status report", ""]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "-n",
        "--lines",
        type=int,
        default=20,
        metavar="N",
        help="lines of stderr/stdout to show (default: 20)",
    )


def run(args: argparse.Namespace) -> int:
    from ferry.plugins.errors import ConfigError

    try:
        r = analyze(RunDir(args.run_dir))
    except ConfigError as exc:
        print(f"ferry analyze: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        sys.stdout.write(format_report(r, args.lines))
    return 2 if r["failed"] or r["counts"]["failed"] else 0
