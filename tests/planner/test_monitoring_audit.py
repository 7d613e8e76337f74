"""`ferry status`, `statistics` and `analyze` read as a pegasus-status/-statistics/-analyzer
user reads them: the numbers against the records and the journal, the layout of
pegasus-analyzer's report, damaged run directories, secrets.

Each test pins one behaviour an audit of the monitoring commands found missing or wrong.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from Pegasus.api import File, Job, Workflow  # isort: skip

from .helpers import ferry, journal, records

# --- one failed run, shared: good succeeds, flaky fails once then succeeds, bad fails for
# good (its child never runs) --------------------------------------------------------------


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("monitor")
    mark = tmp / "mark"
    wf = Workflow("mon")
    wf.add_jobs(
        Job("sh", _id="good").add_args("-c", "echo ok > good.txt").add_outputs(File("good.txt")),
        Job("sh", _id="flaky")
        .add_args("-c", f"if [ -e {mark} ]; then echo ok > f.txt; else touch {mark}; exit 3; fi")
        .add_outputs(File("f.txt")),
        Job("sh", _id="bad")
        .add_args("-c", "echo partial > mid.txt; echo oops-on-stderr >&2; exit 7")
        .add_outputs(File("mid.txt"), stage_out=False),
        Job("cat", _id="child").add_args("mid.txt").add_inputs(File("mid.txt")),
    )
    wf.write(str(tmp / "workflow.yml"))
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", "--retries", "1", cwd=tmp)
    assert res.returncode == 1, res.stdout + res.stderr
    return tmp / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def _cut_journal(run: Path, job: str, event: str) -> None:
    """Keep the journal up to (and with) ``job``'s first ``event``, and the records of the
    attempts that ended by then: the run as it was at that moment."""
    lines = (run / "journal.jsonl").read_text().splitlines(keepends=True)
    ended = set()
    for i, line in enumerate(lines):
        ev = json.loads(line)
        if ev["event"] in ("succeeded", "failed"):
            ended.add(f"{ev['job']}.{ev['attempt']}.json")
        if ev["job"] == job and ev["event"] == event:
            (run / "journal.jsonl").write_text("".join(lines[: i + 1]))
            for rec in (run / "records").iterdir():
                if rec.name not in ended:
                    rec.unlink()
            return
    raise AssertionError(f"no {event} of {job}")


# --- pegasus-analyzer's layout -----------------------------------------------------------------


def test_analyze_summary_has_pegasus_analyzers_lines(failed_run: Path) -> None:
    res = ferry("analyze", str(failed_run))
    assert res.returncode == 2, res.stderr
    lines = res.stdout.splitlines()
    start = lines.index("Summary".center(80, "*"))
    assert lines[start + 1 : start + 10] == [
        "",
        f" Submit Directory   : {failed_run}",
        " Workflow Status    : failure",
        " Total jobs         :      4 (100.00%)",
        " # jobs succeeded   :      2 (50.00%)",
        " # jobs failed      :      1 (25.00%)",
        " # jobs held        :      0 (0.00%)",
        " # jobs unsubmitted :      1 (25.00%)",
        "",
    ]
    assert not any("# jobs running" in x for x in lines)
    details = lines.index("Failed jobs' details".center(80, "*"))
    assert lines[details + 2] == "bad".center(80, "=")
    assert "         site: local" in lines
    assert "Failing jobs' details".center(80, "*") not in lines
    assert lines[-2:] == ["", "ferry analyze: end of status report"]
    data = json.loads(ferry("analyze", "--json", str(failed_run)).stdout)
    assert data["counts"] == {
        "succeeded": 2,
        "failed": 1,
        "held": 0,
        "unsubmitted": 1,
        "running": 0,
        "unknown": 0,
    }


def test_analyze_shows_a_job_still_being_retried_as_failing(
    failed_run: Path, tmp_path: Path
) -> None:
    """pegasus-analyzer: 'Failing jobs' details' (still retried) apart from 'Failed jobs'
    details'; a running workflow's jobs that are neither done nor unsubmitted are counted."""
    run = _copy(failed_run, tmp_path)
    _cut_journal(run, "flaky", "retry")
    (run / "run.pid").write_text(str(os.getpid()))  # a live runner
    last = {ev["job"]: ev["event"] for ev in journal(run) if ev["job"]}
    busy = sum(1 for e in last.values() if e in ("started", "retry"))  # flaky and maybe more
    res = ferry("analyze", str(run))
    lines = res.stdout.splitlines()
    assert " Workflow Status    : running" in lines
    assert f" # jobs running     :      {busy} ({busy * 25:.2f}%)" in lines
    assert "Failing jobs' details".center(80, "*") in lines
    assert "Failed jobs' details".center(80, "*") not in lines
    failing = res.stdout.split("=flaky=")[1]
    assert "last state: retrying" in failing and "exit code: 3" in failing


def test_a_stopped_runs_unfinished_jobs_are_not_running(failed_run: Path, tmp_path: Path) -> None:
    """After the runner was killed (no live run.pid), the jobs the journal left started are
    not running: analyze counts them unknown, status lists them as interrupted."""
    run = _copy(failed_run, tmp_path)
    _cut_journal(run, "good", "started")
    (run / "run.pid").unlink(missing_ok=True)
    res = ferry("analyze", str(run))
    assert " Workflow Status    : stopped" in res.stdout
    assert " # jobs unknown     :      1 (25.00%)" in res.stdout
    assert "# jobs running" not in res.stdout
    res = ferry("status", str(run))
    assert res.returncode == 1
    assert "\nRunning:" not in res.stdout
    assert f"Interrupted (ferry run --resume {run} runs them again):" in res.stdout
    assert "  good  (attempt 1, did not finish)" in res.stdout.splitlines()


def test_analyze_a_run_that_did_not_start(tmp_path: Path) -> None:
    Workflow("idle").add_jobs(Job("true", _id="t")).write(str(tmp_path / "workflow.yml"))
    assert ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path).returncode == 0
    res = ferry("analyze", "run", cwd=tmp_path)
    assert res.returncode == 0
    assert " # jobs unsubmitted :      1 (100.00%)" in res.stdout
    assert " Looks like workflow did not start".center(80, "*") in res.stdout
    assert f"ferry run --resume {tmp_path / 'run'}" in res.stdout


def test_analyze_lines_zero_shows_no_output_and_a_negative_count_is_refused(
    failed_run: Path,
) -> None:
    res = ferry("analyze", "-n", "0", str(failed_run))
    assert res.returncode == 2
    assert "oops-on-stderr" not in res.stdout.splitlines() and "stderr (last" not in res.stdout
    res = ferry("analyze", "-n", "1", str(failed_run))
    assert "oops-on-stderr" in res.stdout.splitlines()
    res = ferry("analyze", "-n", "-1", str(failed_run))
    assert res.returncode == 2 and "not a number of lines" in res.stderr


def test_analyze_details_a_failed_job_whose_records_all_say_succeeded(
    failed_run: Path, tmp_path: Path
) -> None:
    """The journal says bad failed (the worker's exit code); its last record says succeeded
    (the worker failed after writing it): the job is still in the failed jobs' details."""
    run = _copy(failed_run, tmp_path)
    path = run / "records" / "bad.2.json"
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "status": "succeeded"}))
    res = ferry("analyze", str(run))
    assert res.returncode == 2
    bad = res.stdout.split("=bad=")[1]
    assert "record: none (every record says succeeded, but the worker exited 1)" in bad


# --- ferry status -------------------------------------------------------------------------------


def test_status_done_counts_the_succeeded_jobs(failed_run: Path) -> None:
    """'done' as ferry run's progress says it ('2 done, 1 failed') and pegasus-status' %DONE:
    the failed job is not done."""
    res = ferry("status", str(failed_run))
    assert res.returncode == 1
    assert "Jobs: 2/4 done (50.0%), 1 failed" in res.stdout.splitlines()


# --- ferry statistics ---------------------------------------------------------------------------


def test_durations_as_pegasus_statistics_format_seconds() -> None:
    """Pegasus' format_seconds: whole units (truncated), consecutive from the largest,
    zeros included; '1 sec' singular, '1.0 sec' too."""
    from ferry.planner.statistics import format_duration

    assert format_duration(3600) == "1 hr, 0 mins"
    assert format_duration(86400 + 59) == "1 day, 0 hrs"
    assert format_duration(119.6) == "1 min, 59 secs"
    assert format_duration(61) == "1 min, 1 sec"
    assert format_duration(1.0) == "1.0 sec"
    assert format_duration(9.0) == "9.0 secs"
    assert format_duration(2 * 365 * 86400 + 5) == "2 years, 0 days"


def test_statistics_numbers_match_the_records(failed_run: Path) -> None:
    st = json.loads(ferry("statistics", "--json", str(failed_run)).stdout)
    recs = {j: records(failed_run, j) for j in ("good", "flaky", "bad", "child")}
    assert [len(r) for r in recs.values()] == [1, 2, 2, 0]
    assert st["tasks"] == {
        "succeeded": 2, "failed": 1, "incomplete": 1, "total": 4, "retries": 2,
        "total_retries": 5,
    }  # fmt: skip
    assert st["jobs"] == st["tasks"]
    every = [r for rs in recs.values() for r in rs]
    assert st["cumulative_job_wall_time"] == pytest.approx(sum(r["job_wall_time"] for r in every))
    assert st["badput"] == pytest.approx(
        sum(r["job_wall_time"] for r in every if r["status"] != "succeeded")
    )
    started: dict[str, float] = {}
    submit = badput = 0.0
    for ev in journal(failed_run):
        if ev["event"] == "started":
            started[ev["job"]] = ev["t"]
        elif ev["event"] in ("succeeded", "failed"):
            span = ev["t"] - started.pop(ev["job"])
            submit += span
            badput += span if ev["event"] == "failed" else 0.0
    assert st["cumulative_job_wall_time_submit"] == pytest.approx(submit)
    assert st["badput_submit"] == pytest.approx(badput)


def test_statistics_count_a_succeeded_job_whose_record_is_damaged(
    failed_run: Path, tmp_path: Path
) -> None:
    """The journal says good succeeded; its record cannot be read: the task still counts as
    succeeded, and the damaged file is named on stderr (no traceback)."""
    run = _copy(failed_run, tmp_path)
    (run / "records" / "good.1.json").write_text('{"job_id": "good", "attem')
    res = ferry("statistics", str(run))
    assert res.returncode == 0
    assert "Tasks          2         1       1           4         2         5" in res.stdout
    assert f"{run}/records/good.1.json: not a valid invocation record" in res.stderr
    assert "Traceback" not in res.stderr


def test_statistics_say_when_summary_txt_cannot_be_written(
    failed_run: Path, tmp_path: Path
) -> None:
    run = _copy(failed_run, tmp_path)
    shutil.rmtree(run / "statistics", ignore_errors=True)
    (run / "statistics").write_text("in the way")
    res = ferry("statistics", str(run))
    assert res.returncode == 0
    assert res.stdout.startswith("-" * 78)
    assert f"ferry statistics: cannot write {run}/statistics" in res.stderr
    assert "Summary                       :" not in res.stdout


# --- damaged run directories ------------------------------------------------------------------


def test_damaged_records_are_named_not_a_traceback(failed_run: Path, tmp_path: Path) -> None:
    run = _copy(failed_run, tmp_path)
    (run / "records" / "bad.2.json").write_text("[1, 2]")
    (run / "records" / "flaky.1.json").write_text(
        '{"status": "failed", "failures": 5, "transfers": [1, {"ok": false, "tried": "x"}],'
        ' "worker_exit_code": [1], "arguments": "a b", "stderr_tail": 3}'
    )
    res = ferry("analyze", str(run))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"ferry analyze: {run}/records/bad.2.json: not a valid invocation record" in res.stderr
    bad = res.stdout.split("=bad=")[1]
    assert f"record: {run}/records/bad.2.json (the record cannot be read: " in bad
    res = ferry("status", str(run))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"  bad  (attempt 2, exit 1): {run}/records/bad.2.json: not a valid" in res.stdout
    res = ferry("statistics", str(run))
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert f"{run}/records/bad.2.json: not a valid invocation record" in res.stderr


def test_a_plan_that_cannot_be_read_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "run" / "plan.json").mkdir(parents=True)
    for command, code in (("status", 2), ("statistics", 1), ("analyze", 1)):
        res = ferry(command, "run", cwd=tmp_path)
        assert res.returncode == code, command
        assert res.stderr == f"ferry {command}: {tmp_path}/run/plan.json: Is a directory\n"


# --- secrets ------------------------------------------------------------------------------------


def test_no_password_of_a_url_in_a_jobs_command_or_output(tmp_path: Path) -> None:
    """A job's arguments and output are the job's; what the monitoring commands print of
    them has URL passwords and signed query parameters masked, and nothing else changed."""
    url = "https://bob:hunter2@example.org/x?X-Amz-Signature=abc123&part=1"
    s3 = "s3://AKIDEXAMPLE:wJalr/K7MDENG@127.0.0.1:9/bucket/k"  # a secret key holds "/"
    wf = Workflow("sec")
    wf.add_jobs(
        Job("sh", _id="leak")
        .add_args("-c", f"echo '{url}'; echo {s3} >&2; exit 1")
        .add_dagman_profile(retry=0)
    )
    wf.write(str(tmp_path / "workflow.yml"))
    assert ferry("run", "workflow.yml", "--dir", "run", cwd=tmp_path).returncode == 1
    for command in ("status", "statistics", "analyze"):
        for extra in ((), ("--json",)):
            res = ferry(command, *extra, "run", cwd=tmp_path)
            for secret in ("hunter2", "abc123", "wJalr", "K7MDENG"):
                assert secret not in res.stdout + res.stderr, (command, extra, secret)
    res = ferry("analyze", "run", cwd=tmp_path)
    masked = "https://bob:***@example.org/x?X-Amz-Signature=***&part=1"
    masked_s3 = "s3://AKIDEXAMPLE:***@127.0.0.1:9/bucket/k"
    assert f"      command: sh -c echo '{masked}'; echo {masked_s3} >&2; exit 1" in res.stdout
    lines = res.stdout.splitlines()
    assert masked in lines and masked_s3 in lines  # stdout, stderr


def test_workflow_wall_time_leaves_out_the_time_between_a_killed_runner_and_resume(
    failed_run: Path, tmp_path: Path
) -> None:
    run = _copy(failed_run, tmp_path)
    events = journal(run)
    start, end = events[0]["t"], events[-1]["t"]
    killed = [  # a session an hour earlier whose runner was killed half a second in
        {"t": start - 3600, "job": None, "event": "workflow-started", "jobs": 4, "slots": 2},
        {"t": start - 3599.5, "job": "good", "event": "queued", "attempt": 1},
    ]
    text = (run / "journal.jsonl").read_text()
    (run / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in killed) + text)
    st = json.loads(ferry("statistics", "--json", str(run)).stdout)
    assert st["workflow_wall_time"] == pytest.approx(0.5 + end - start)
