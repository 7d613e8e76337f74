"""``ferry analyze DIR``: why jobs failed (pegasus-analyzer's report, from the records)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from .rundir import RunDir
from .state import run_state

__all__ = ["DESCRIPTION", "add_arguments", "analyze", "read_record", "run", "scrub"]

DESCRIPTION = """\
Report the failed jobs of a run, as pegasus-analyzer does: a summary, then for
each job still being retried (Failing jobs' details) and each failed job (each
failed member of a cluster) its site, its last attempt's exit code, the step
that failed (stage-in, integrity, container, run, success-check, stage-out,
worker), the failures with the file and URL, the transfer errors, the tail of
stderr and stdout, and the record's path. Exit status: 0 no failures, 2
failures, 1 error (as pegasus-analyzer).
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


# a password may hold "/" (an AWS secret key does): up to the first "@"
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@'\"<>]*:)[^\s@'\"<>]*@")
_QUERY = re.compile(r"([?&][^=&\s'\"<>]+=)([^&#;\s'\"<>]*)")


def scrub(text: str) -> str:
    """``text`` with the password and the signed query parameters of each URL in it masked
    (a job's own arguments and output may hold them; the records keep what the job said).
    Nothing else of the text changes."""
    if "@" not in text and "?" not in text:
        return text
    from ferry.plugins.url import _SECRET_PARAMS, REDACTED

    def query(m: re.Match[str]) -> str:
        name = m[1][1:-1].lower()
        return m[1] + REDACTED if name in _SECRET_PARAMS else m[0]

    return _QUERY.sub(query, _USERINFO.sub(r"\1" + REDACTED + "@", text))


def read_record(path: str) -> dict[str, Any]:
    """An invocation record; ValueError says why it is not one (unreadable, torn, not an object)."""
    try:
        with open(path, "rb") as f:
            rec = json.loads(f.read())
    except OSError as exc:
        raise ValueError(os.strerror(exc.errno) if exc.errno else str(exc)) from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"not a JSON object but {type(rec).__name__}")
    return rec


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def analyze(rd: RunDir, warn: Any = None) -> dict[str, Any]:
    """The report's data. ``warn(message)`` is told of each record that cannot be read
    (the job is reported without it)."""
    rs = run_state(rd)
    records = rd.record_attempts()
    total = len(rs.plan.jobs)
    counts = {"succeeded": 0, "failed": 0, "held": 0, "unsubmitted": 0, "running": 0, "unknown": 0}
    live = rs.status == "running"
    failed: list[dict[str, Any]] = []
    logs: dict[str, tuple[str, str]] | None = None
    for pj in rs.plan.jobs:
        js = rs.jobs[pj.id]
        if js.state == "succeeded":
            counts["succeeded"] += 1
        elif js.state == "failed":
            counts["failed"] += 1
        elif js.state in ("running", "retrying"):
            # the runner is gone (killed): nobody knows how these ended
            counts["running" if live else "unknown"] += 1
        else:  # unready, queued (ready, not started), removed
            counts["unsubmitted"] += 1
        if js.state not in ("failed", "retrying"):
            continue
        shown = len(failed)
        for task in pj.members or [pj.id]:
            attempts = records.get(task, [])
            attempt = attempts[-1] if attempts else 0
            rec, bad = None, None
            if attempt:
                try:
                    rec = read_record(rd.record_path(task, attempt))
                except ValueError as exc:
                    bad = str(exc)
                    if warn is not None:
                        warn(
                            f"{rd.record_path(task, attempt)}: not a valid invocation record: {bad}"
                        )
            if rec is not None and rec.get("status") == "succeeded":
                continue
            entry: dict[str, Any] = {
                "job": task,
                "cluster": pj.id if pj.members else None,
                "state": js.state,
                "site": pj.site,
                "attempts": len(attempts),
                "exit": js.exit,
            }
            if bad is not None:
                entry["record"] = rd.record_path(task, attempt)
                entry["attempt"] = attempt
                entry["reason"] = f"the record cannot be read: {bad}"
            elif rec is None:
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
                    failures=_dicts(rec.get("failures")),
                    transfer_errors=[
                        {
                            "lfn": t.get("lfn"),
                            "direction": t.get("direction"),
                            "source": t.get("source"),
                            "dest": t.get("dest"),
                            "error": t.get("error"),
                            "tried": [x.get("error") for x in _dicts(t.get("tried"))],
                        }
                        for t in _dicts(rec.get("transfers"))
                        if not t.get("ok")
                    ],
                    executable=rec.get("executable"),
                    arguments=rec.get("arguments"),
                    workdir=rec.get("workdir") if rec.get("workdir_kept") else None,
                    stderr_tail=_text(rec.get("stderr_tail")),
                    stdout_tail=_text(rec.get("stdout_tail")),
                )
            failed.append(entry)
        if len(failed) == shown:  # every record says succeeded: the worker failed after them
            failed.append(
                {
                    "job": pj.id,
                    "cluster": None,
                    "state": js.state,
                    "site": pj.site,
                    "attempts": js.attempts,
                    "exit": js.exit,
                    "record": None,
                    "reason": f"every record says succeeded, but the worker exited {js.exit}",
                }
            )
    return {
        "run_dir": rd.path,
        "workflow": rs.plan.workflow,
        "status": rs.status,
        "backend": rs.plan.backend,
        "total": total,
        "counts": counts,
        "failed": failed,
    }


def _center(text: str, fill: str) -> str:
    return text.center(80, fill)


def _pct(n: int, total: int) -> str:
    return f"{n:6d} ({100.0 * n / total if total else 0.0:.2f}%)"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:]) if lines > 0 else ""


def format_report(r: dict[str, Any], lines: int = 20) -> str:
    """pegasus-analyzer's layout: the summary, then failing (still retried) and failed jobs."""
    c = r["counts"]
    total = r["total"]
    out = [
        _center("Summary", "*"),
        "",
        f" Submit Directory   : {r['run_dir']}",
        f" Workflow Status    : {r['status']}",
        f" Total jobs         : {_pct(total, total)}",
        f" # jobs succeeded   : {_pct(c['succeeded'], total)}",
        f" # jobs failed      : {_pct(c['failed'], total)}",
        f" # jobs held        : {_pct(c['held'], total)}",
        f" # jobs unsubmitted : {_pct(c['unsubmitted'], total)}",
    ]
    if c["running"]:
        out.append(f" # jobs running     : {_pct(c['running'], total)}")
    if c["unknown"]:
        out.append(f" # jobs unknown     : {_pct(c['unknown'], total)}")
    out.append("")
    if total and c["unsubmitted"] == total:
        out += [_center(" Looks like workflow did not start", "*"), ""]
        start = "ferry submit" if r.get("backend") == "htcondor" else "ferry run --resume"
        out += [f" Start it with: {start} {r['run_dir']}", ""]
    for state, title in (("retrying", "Failing jobs' details"), ("failed", "Failed jobs' details")):
        jobs = [f for f in r["failed"] if f["state"] == state]
        if jobs:
            out.append(_center(title, "*"))
            for f in jobs:
                out += _job_details(f, lines)
            out.append("")
    out += [_center("Done", "*"), "", "ferry analyze: end of status report", ""]
    return "\n".join(out)


def _job_details(f: dict[str, Any], lines: int) -> list[str]:
    out = ["", _center(f["job"], "="), ""]
    if f.get("cluster"):
        out.append(f"      cluster: {f['cluster']}")
    out.append(f"   last state: {f['state']}")
    out.append(f"         site: {f.get('site') or '-'}")
    out.append(f"     attempts: {f['attempts']}")
    if f.get("reason"):
        where = f"{f['record']} ({f['reason']})" if f.get("record") else f"none ({f['reason']})"
        out.append(f"       record: {where}")
        return out
    code = f.get("worker_exit_code")
    what = _STEPS.get(code, "unknown") if isinstance(code, int) else "unknown"
    out.append(f"  worker exit: {code} ({what})")
    ec = f.get("exit_code")
    sig = f.get("signal")
    out.append(
        f"    exit code: {ec if ec is not None else '-'}"
        + (f" (killed by signal {sig})" if sig else "")
    )
    out.append(f"  failed step: {f.get('failed_step') or '-'}")
    out.append(f"         host: {f.get('host') or '-'}")
    out.append(f"       record: {f['record']}")
    if f.get("workdir"):
        out.append(f"     work dir: {f['workdir']} (kept)")
    args = f.get("arguments")
    args = args if isinstance(args, list) else []
    out.append(
        f"      command: {' '.join([str(f.get('executable') or '')] + [str(a) for a in args])}"
    )
    for x in f.get("failures", []):
        where = ", ".join(f"{k} {x[k]}" for k in ("lfn", "url", "expected", "actual") if x.get(k))
        out.append(
            f"      failure: [{x.get('step')}] {x.get('reason')}" + (f" ({where})" if where else "")
        )
    for t in f.get("transfer_errors", []):
        out.append(f"     transfer: {t['direction']} {t['lfn']}: {t['error']}")
        for e in t["tried"][:5]:
            out.append(f"               tried: {e}")
    for name in ("stderr", "stdout"):
        text = _tail(f.get(f"{name}_tail") or "", lines)
        if text.strip():
            out += ["", _center(f"{f['job']} - {name} (last {lines} lines)", "-"), "", text]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "-n",
        "--lines",
        type=_lines,
        default=20,
        metavar="N",
        help="lines of stderr/stdout to show (default: 20; 0: none)",
    )


def _lines(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of lines (0 or more): {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    from ferry.plugins.errors import ConfigError

    def warn(message: str) -> None:
        print(f"ferry analyze: {message}", file=sys.stderr)

    try:
        r = analyze(RunDir(args.run_dir), warn)
    except ConfigError as exc:
        warn(str(exc))
        return 1
    except OSError as exc:  # plan.json or records/ that cannot be read
        warn(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return 1
    if args.json:
        print(scrub(json.dumps(r, indent=1)))
    else:
        sys.stdout.write(scrub(format_report(r, args.lines)))
    return 2 if r["failed"] or r["counts"]["failed"] else 0
