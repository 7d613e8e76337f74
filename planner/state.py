"""What happened in a run, from the journal and the records (the monitoring commands' view).

:func:`job_states` folds ``journal.jsonl`` into one :class:`JobState` per plan
entry; :func:`load_records` reads invocation records with just the fields the
monitoring commands need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .rundir import Plan, RunDir, read_journal

__all__ = [
    "STATES",
    "JobState",
    "RecordSummary",
    "RunState",
    "failure_cause",
    "load_record_summary",
    "run_state",
]

#: a plan entry's state: no event yet, queued (ready), running, succeeded, failed (for
#: good), retrying (a failed attempt, another one coming), removed (stopped by ferry remove)
STATES = ("unready", "queued", "running", "succeeded", "failed", "retrying", "removed")

_EVENT_STATE = {
    "queued": "queued",
    "started": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "retry": "retrying",
    "removed": "removed",
}


@dataclass
class JobState:
    state: str = "unready"
    attempts: int = 0
    last_attempt: int = 0
    since: float | None = None
    exit: int | None = None
    #: (start, end, outcome) of each attempt as the backend saw it
    spans: list[tuple[float, float | None, str]] = field(default_factory=list)


@dataclass
class RunState:
    plan: Plan
    jobs: dict[str, JobState]
    #: (start, end) of each session of the runner
    sessions: list[tuple[float, float | None]]
    status: str  # running, success, failure, removed, not started, stopped
    running_pid: int | None
    cleanups: int = 0
    last_event: float | None = None


def run_state(rd: RunDir, plan: Plan | None = None) -> RunState:
    plan = plan or rd.load_plan()
    jobs = {pj.id: JobState() for pj in plan.jobs}
    sessions: list[tuple[float, float | None]] = []
    status = "not started"
    cleanups = 0
    last_t = None
    open_start: dict[str, tuple[float, int]] = {}
    for ev in read_journal(rd.journal_file):
        t = ev.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            continue
        prev_t, last_t = last_t, t
        job = ev.get("job")
        event = ev.get("event")
        if job is None:
            if event == "workflow-started":
                if sessions and sessions[-1][1] is None:
                    # a runner that was killed: its session ended with its last event,
                    # not when the next one started (the time between is nobody's)
                    start = sessions[-1][0]
                    sessions[-1] = (start, _last_before(start, prev_t if prev_t else t))
                sessions.append((t, None))
                status = "running"
            elif event == "workflow-finished":
                if sessions and sessions[-1][1] is None:
                    sessions[-1] = (sessions[-1][0], t)
                status = str(ev.get("status", "finished"))
            elif event == "cleanup":
                cleanups += 1
            continue
        js = jobs.get(job) if isinstance(job, str) else None
        if js is None:
            continue
        state = _EVENT_STATE.get(event)
        if state is None:
            continue
        a = ev.get("attempt")
        if event == "started":
            js.attempts += 1
            if isinstance(a, int):
                js.last_attempt = max(js.last_attempt, a)
            if job in open_start:  # the runner died before this attempt ended
                s, _ = open_start.pop(job)
                js.spans.append((s, None, "lost"))
            open_start[job] = (t, a if isinstance(a, int) else 0)
        elif event in ("succeeded", "failed", "removed") and job in open_start:
            s, _ = open_start.pop(job)
            js.spans.append((s, t, event))
        js.state = state
        js.since = t
        if "exit" in ev:
            js.exit = ev["exit"]
    for job, (s, _) in open_start.items():
        jobs[job].spans.append((s, None, "open"))
    pid = rd.running_pid()
    htcondor = plan.backend == "htcondor"  # DAGMan runs it: no local runner to check
    if status == "running" and pid is None and not htcondor:
        status = "stopped"  # the runner was killed
        if sessions and sessions[-1][1] is None:
            sessions[-1] = (sessions[-1][0], last_t)
    rs = RunState(
        plan=plan,
        jobs=jobs,
        sessions=sessions,
        status=status,
        running_pid=pid,
        cleanups=cleanups,
        last_event=last_t,
    )
    if htcondor:
        from .dagman import apply

        apply(rd, rs)  # DAGMan's node status file and rescue DAG
    return rs


def _last_before(start: float, t: float) -> float:
    return t if t >= start else start


class RecordSummary(msgspec.Struct):
    """The fields of an invocation record the monitoring commands use."""

    job_id: str
    attempt: int
    status: str = "running"
    start: float = 0.0
    end: float | None = None
    wall_time: float = 0.0
    job_wall_time: float = 0.0
    worker_exit_code: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    failed_step: str | None = None
    host: str = ""


_SUMMARY = msgspec.json.Decoder(RecordSummary)


def load_record_summary(rd: RunDir, job_id: str, attempt: int) -> RecordSummary | None:
    try:
        with open(rd.record_path(job_id, attempt), "rb") as f:
            return _SUMMARY.decode(f.read())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def load_record(rd: RunDir, job_id: str, attempt: int) -> dict[str, Any] | None:
    return rd.read_record(job_id, attempt)


#: longest cause shown on a job's one-line failure message
CAUSE_MAX = 400


def failure_cause(rd: RunDir, job_ids: list[str], attempt: int, *, named: bool = False) -> str:
    """``"<step>: <cause>"`` of the first failed record of ``job_ids`` at ``attempt``.

    The cause is the first failure's, and for a transfer its last source's error
    (``sha256 mismatch for f.a from URL: expected X, got Y``), with the file's
    name in front when the error does not name it; ``named`` puts ``member <id>:``
    first (a cluster's). ``""`` when no record says why.
    """
    for job_id in job_ids:
        rec = rd.read_record(job_id, attempt)
        if rec is None or rec.get("status") == "succeeded":
            continue
        for f in rec.get("failures") or ():
            if not isinstance(f, dict):
                continue
            reason = str(f.get("reason") or "")
            lfn = f.get("lfn")
            for t in rec.get("transfers") or ():
                if not isinstance(t, dict) or t.get("ok"):
                    continue
                if (lfn is not None and t.get("lfn") == lfn) or t.get("error") == reason:
                    tried = [x for x in t.get("tried") or () if isinstance(x, dict)]
                    if tried and tried[-1].get("error"):
                        reason = str(tried[-1]["error"])
                        name = str(t.get("lfn") or "")
                        if name and not _names(reason, name):
                            reason = f"{name}: {reason}"
                    break
            reason = " ".join(reason.split())
            if not reason:
                continue
            who = f"member {job_id}: " if named else ""
            text = f"{who}{f.get('step') or 'failed'}: {reason}"
            return text if len(text) <= CAUSE_MAX else text[: CAUSE_MAX - 3] + "..."
    return ""


def _names(text: str, lfn: str) -> bool:
    """Whether ``text`` names ``lfn`` as a word (not as the tail of a path or URL)."""
    return re.search(rf"(?<![\w/.-]){re.escape(lfn)}(?![\w/-]|\.\w)", text) is not None
