"""``ferry statistics DIR``: the summary table of pegasus-statistics, from records and journal.

Rows: **Tasks** are the workflow's jobs (a cluster's members count one by one),
counted from their invocation records; **Jobs** are what the backend ran (a
cluster is one job), counted from the journal; **Sub-Workflows** is always 0.
Succeeded and Failed are final outcomes, Incomplete = Total - Succeeded -
Failed, Retries are attempts beyond the first, Total+Retries = Succeeded +
Failed + Retries (pegasus-statistics' definitions).

Times: *Workflow wall time* is the sum of the runner's sessions (a resumed run
has several); *Cumulative job wall time* the sum of the jobs' own run times
(``job_wall_time`` of every record, retries included, as kickstart's duration
is); *... as seen from submit side* the sum of every attempt's span in the
journal (started to finished: staging and the worker included); the *badput*
lines are the same sums over failed attempts only.

Integrity (pegasus-statistics 5.1's two sections, written when any checksum was
compared or computed): *compared* counts the transfers checked against an
expected sha256 (replica catalog, transformation catalog, container, or the
producer's sum for an intermediate file), *generated* the files summed without
one (inputs and, once per file, outputs); ferry sums while it copies, so the
duration is that of those transfers. *Total* counts the sha256 mismatches over
every attempt; *Failures* the failed jobs whose last attempt had one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import msgspec

from .rundir import RunDir
from .state import RecordSummary, run_state

__all__ = [
    "DESCRIPTION",
    "Counts",
    "Statistics",
    "add_arguments",
    "format_duration",
    "format_summary",
    "run",
    "summarize",
]

DESCRIPTION = """\
Print the summary statistics of a run, laid out as pegasus-statistics does:
tasks and jobs succeeded, failed, incomplete, total and retried; the workflow
wall time, cumulative job wall time (also as seen from the submit side) and
badput. Also written to DIR/statistics/summary.txt.
"""


@dataclass
class Counts:
    succeeded: int = 0
    failed: int = 0
    incomplete: int = 0
    total: int = 0
    retries: int = 0

    @property
    def total_retries(self) -> int:
        return self.succeeded + self.failed + self.retries


@dataclass
class Integrity:
    compared: int = 0
    compared_time: float = 0.0
    generated: int = 0
    generated_time: float = 0.0
    #: sha256 mismatches, every attempt
    errors: int = 0
    #: failed jobs whose last attempt had a mismatch
    failures: int = 0


@dataclass
class Statistics:
    tasks: Counts = field(default_factory=Counts)
    jobs: Counts = field(default_factory=Counts)
    sub_workflows: Counts = field(default_factory=Counts)
    workflow_wall_time: float | None = None
    cumulative_job_wall_time: float = 0.0
    cumulative_job_wall_time_submit: float = 0.0
    badput: float = 0.0
    badput_submit: float = 0.0
    status: str = "unknown"
    integrity: Integrity = field(default_factory=Integrity)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("tasks", "jobs", "sub_workflows"):
            d[k]["total_retries"] = getattr(self, k).total_retries
        return d


def summarize(rd: RunDir, warn: Callable[[str], None] | None = None) -> Statistics:
    """The statistics of a run. ``warn(message)`` is told of each record that cannot be
    read (left out of the times and checksums)."""
    rs = run_state(rd)
    st = Statistics(status=rs.status)
    records = rd.record_attempts()
    for pj in rs.plan.jobs:
        js = rs.jobs[pj.id]
        st.jobs.total += 1
        if js.state == "succeeded":
            st.jobs.succeeded += 1
        elif js.state == "failed":
            st.jobs.failed += 1
        st.jobs.retries += max(0, js.attempts - 1)
        for s, e, outcome in js.spans:
            if e is None:
                continue
            st.cumulative_job_wall_time_submit += e - s
            if outcome != "succeeded":
                st.badput_submit += e - s
        for task in pj.members or [pj.id]:
            st.tasks.total += 1
            attempts = records.get(task, [])
            st.tasks.retries += max(0, len(attempts) - 1)
            ok = False
            last_errors = 0
            for a in attempts:
                rec = _load(rd, task, a, warn)
                if rec is None:
                    continue
                st.cumulative_job_wall_time += rec.job_wall_time
                if rec.status == "succeeded":
                    ok = True
                else:
                    st.badput += rec.job_wall_time
                last_errors = _integrity(st.integrity, rec)
            if ok or js.state == "succeeded":  # a job (a cluster: each member) succeeded
                st.tasks.succeeded += 1
            elif js.state == "failed":
                st.tasks.failed += 1
                if last_errors:
                    st.integrity.failures += 1
    for c in (st.tasks, st.jobs):
        c.incomplete = c.total - c.succeeded - c.failed
    if rs.sessions:
        now = time.time()
        st.workflow_wall_time = sum((now if e is None else e) - s for s, e in rs.sessions)
    return st


class _Tried(msgspec.Struct):
    error_type: str | None = None


class _Transfer(msgspec.Struct):
    direction: str = ""
    lfn: str = ""
    ok: bool = False
    duration: float = 0.0
    sha256: str | None = None
    expected_sha256: str | None = None
    tried: list[_Tried] = []


class _StatRecord(RecordSummary):
    transfers: list[_Transfer] = []


_STAT = msgspec.json.Decoder(_StatRecord)


def _load(
    rd: RunDir, job_id: str, attempt: int, warn: Callable[[str], None] | None
) -> _StatRecord | None:
    path = rd.record_path(job_id, attempt)
    try:
        with open(path, "rb") as f:
            return _STAT.decode(f.read())
    except OSError as exc:
        why = exc.strerror or str(exc)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        why = str(exc)
    if warn is not None:
        warn(f"{path}: not a valid invocation record ({why}); left out")
    return None


def _integrity(acc: Integrity, rec: _StatRecord) -> int:
    """Add one record's checksums to ``acc``; returns its number of sha256 mismatches."""
    errors = 0
    summed: set[str] = set()
    for t in rec.transfers:
        errors += sum(1 for x in t.tried if x.error_type == "IntegrityError")
        if t.expected_sha256:
            acc.compared += 1
            acc.compared_time += t.duration
        elif t.ok and t.sha256 and not (t.direction == "output" and t.lfn in summed):
            if t.direction == "output":
                summed.add(t.lfn)  # one sum per file, however many destinations
            acc.generated += 1
            acc.generated_time += t.duration
    acc.errors += errors
    return errors


_UNITS = (("year", 365 * 86400), ("day", 86400), ("hr", 3600), ("min", 60), ("sec", 1))


def format_duration(seconds: float | None, parts: int = 2) -> str:
    """pegasus-statistics' durations (its ``format_seconds``): ``9.0 secs``, ``4 mins, 12 secs``,
    ``1 day, 2 hrs``. Whole units, truncated; from the largest one present, ``parts`` units
    in a row, zeros included (``1 hr, 0 mins``); under a minute, seconds to 2 decimals."""
    if seconds is None:
        return "-"
    left = int(seconds)
    out: list[str] = []
    for name, size in _UNITS[:-1]:
        value, left = divmod(left, size)
        if len(out) < parts and (value or out):
            out.append(f"{value} {name}{'' if value == 1 else 's'}")
    if len(out) < parts:
        secs = left if out else round(seconds, 2)
        out.append(f"{secs} sec{'' if secs == 1 else 's'}")
    return ", ".join(out)


_WIDTHS = (15, 10, 8, 12, 10, 10, 13)
_RULE = "-" * 78


def _row(cells: tuple[object, ...]) -> str:
    return "".join(str(c).ljust(w) for c, w in zip(cells, _WIDTHS, strict=True))


def format_summary(st: Statistics) -> str:
    lines = [
        _RULE,
        _row(("Type", "Succeeded", "Failed", "Incomplete", "Total", "Retries", "Total+Retries")),
    ]
    for name, c in (("Tasks", st.tasks), ("Jobs", st.jobs), ("Sub-Workflows", st.sub_workflows)):
        lines.append(
            _row((name, c.succeeded, c.failed, c.incomplete, c.total, c.retries, c.total_retries))
        )
    lines += [_RULE, ""]
    times = (
        ("Workflow wall time", st.workflow_wall_time),
        ("Cumulative job wall time", st.cumulative_job_wall_time),
        ("Cumulative job wall time as seen from submit side", st.cumulative_job_wall_time_submit),
        ("Cumulative job badput wall time", st.badput),
        ("Cumulative job badput wall time as seen from submit side", st.badput_submit),
    )
    for label, value in times:
        lines.append(f"{label.ljust(57)}: {format_duration(value)}")
    lines += _integrity_lines(st.integrity)
    return "\n".join(lines) + "\n"


def _integrity_lines(i: Integrity) -> list[str]:
    """pegasus-statistics 5.1's integrity sections (none without any checksum)."""
    if not i.compared and not i.generated:
        return []
    lines = [
        "",
        "# Integrity Metrics",
        "# Number of files for which checksums were compared/computed along with total"
        " time spent doing it.",
    ]
    for what, count, secs in (
        ("compared", i.compared, i.compared_time),
        ("generated", i.generated, i.generated_time),
    ):
        if count:
            lines.append(
                f"{count} files checksums {what} with total duration of {format_duration(secs)}"
            )
    lines += [
        "",
        "# Integrity Errors",
        "# Total:",
        "#       Total number of integrity errors encountered across all job executions"
        " (including retries) of a workflow.",
        "# Failures:",
        "#       Number of failed jobs where the last job instance had integrity errors.",
    ]
    if i.errors:
        lines.append(
            f"Total:    A total of {i.errors} integrity errors encountered in the workflow"
        )
    lines.append(f"Failures: {i.failures} job failures had integrity errors")
    return lines


_LEGEND = """\
#
# ferry statistics (the layout of pegasus-statistics' summary)
#
# Tasks: the workflow's jobs (cluster members one by one), from invocation records.
# Jobs: what the backend ran (a cluster is one job), from the journal.
#   Succeeded, Failed: final outcomes. Incomplete: Total - Succeeded - Failed.
#   Retries: attempts beyond the first. Total+Retries: Succeeded + Failed + Retries.
# Workflow wall time: the runner's sessions, summed.
# Cumulative job wall time: the jobs' own run times, retries included.
# ... as seen from submit side: each attempt from start to end (staging included).
# Badput: the same sums over failed attempts.
#
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args: argparse.Namespace) -> int:
    from ferry.plugins.errors import ConfigError

    def warn(message: str) -> None:
        print(f"ferry statistics: {message}", file=sys.stderr)

    rd = RunDir(args.run_dir)
    try:
        st = summarize(rd, warn)
    except ConfigError as exc:
        warn(str(exc))
        return 1
    except OSError as exc:  # plan.json or records/ that cannot be read
        warn(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return 1
    if args.json:
        print(json.dumps(st.to_json(), indent=1))
        return 0
    text = format_summary(st)
    sys.stdout.write(text)
    path = rd.join("statistics", "summary.txt")
    try:
        os.makedirs(rd.join("statistics"), exist_ok=True)
        with open(path, "w") as f:
            f.write(_LEGEND + text)
    except OSError as exc:  # a read-only run directory: the table above is all there is
        warn(f"cannot write {exc.filename or path}: {exc.strerror or exc}")
        return 0
    print(f"\n{'Summary'.ljust(30)}: {path}")
    return 0
