"""Workflows written with Pegasus.api as a workflow author would, run with `ferry run`.

Each test pins one behaviour an audit against the Pegasus 5 references found
missing or wrong.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from Pegasus.api import (  # isort: skip
    Container,
    File,
    Job,
    Properties,
    ReplicaCatalog,
    SubWorkflow,
    Transformation,
    TransformationCatalog,
    Workflow,
)

from .helpers import PY, ferry, intermediate_workflow, script, sha


def _failed_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("job ")]


def _bad_sum_workflow(tmp_path: Path) -> None:
    data = tmp_path / "f.a"
    data.write_text("hello\n")
    rc = ReplicaCatalog().add_replica("local", "f.a", data, checksum={"sha256": "0" * 64})
    wf = Workflow("badsum")
    wf.add_jobs(
        Job("cat", _id="j1")
        .add_args(File("f.a"))
        .add_inputs(File("f.a"))
        .set_stdout(File("out.txt"))
        .add_dagman_profile(retry=1)
    )
    wf.add_replica_catalog(rc)
    wf.write(str(tmp_path / "workflow.yml"))


def test_a_wrong_sha256_fails_the_job_with_one_line_naming_the_file(tmp_path: Path) -> None:
    _bad_sum_workflow(tmp_path)

    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    assert res.returncode == 1
    lines = _failed_lines(res.stdout)
    assert len(lines) == 2, res.stdout
    for line in lines:
        # the job, the step, the file, the URL and both sums, on the one line
        assert line.startswith("job j1 ")
        assert ": integrity: sha256 mismatch for f.a from file://" in line
        assert "0" * 64 in line and sha(b"hello\n") in line
    assert lines[0].endswith("; retrying") and "FAILED (attempt 2" in lines[1]
    assert not (tmp_path / "out" / "out.txt").exists()
    # ferry status says the same for the failed job
    res = ferry("status", "run", cwd=tmp_path)
    assert res.returncode == 1
    (shown,) = [x for x in res.stdout.splitlines() if x.startswith("  j1 ")]
    assert shown == "  j1  (attempt 2, exit 4)" + lines[1].split("(attempt 2, exit 4)", 1)[1]
    st = json.loads(ferry("status", "--json", "run", cwd=tmp_path).stdout)
    assert st["failed"][0]["cause"].startswith("integrity: sha256 mismatch for f.a from ")


def test_a_missing_stageable_executable_is_named_on_the_failure_line(tmp_path: Path) -> None:
    tc = TransformationCatalog().add_transformations(
        Transformation(
            "ghost", site="local", pfn=f"file://{tmp_path}/nowhere/ghost", is_stageable=True
        )
    )
    wf = Workflow("ghost")
    wf.add_jobs(Job("ghost", _id="g1").add_dagman_profile(retry=0))
    wf.add_transformation_catalog(tc)
    wf.write(str(tmp_path / "workflow.yml"))

    res = ferry("run", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 1
    (line,) = _failed_lines(res.stdout)
    assert line.startswith("job g1 FAILED (attempt 1, exit ")
    assert ": stage-in: ghost: " in line and f"{tmp_path}/nowhere/ghost" in line


def test_a_staged_out_checkpoint_file_is_registered(tmp_path: Path) -> None:
    """add_checkpoint(f, stage_out=True, register_replica=True), the API's defaults: the
    checkpoint file goes to the output site and into replicas.out.yml; one the job never
    wrote is not registered."""
    exe = script(
        tmp_path / "count",
        "import os\nopen('state.ckpt', 'w').write('3')\nopen('result.txt', 'w').write('done')\n",
    )
    quiet = script(tmp_path / "quiet", "open('other.txt', 'w').write('x')\n")
    tc = TransformationCatalog().add_transformations(
        Transformation("count", site="local", pfn=str(exe)),
        Transformation("quiet", site="local", pfn=str(quiet)),
    )
    wf = Workflow("ckpt")
    wf.add_jobs(
        Job("count", _id="c1").add_checkpoint(File("state.ckpt")).add_outputs(File("result.txt")),
        Job("quiet", _id="q1").add_checkpoint(File("never.ckpt")).add_outputs(File("other.txt")),
    )
    wf.add_transformation_catalog(tc)
    wf.write(str(tmp_path / "workflow.yml"))

    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "out" / "state.ckpt").read_text() == "3"
    assert not (tmp_path / "out" / "never.ckpt").exists()
    doc = yaml.safe_load((tmp_path / "run" / "replicas.out.yml").read_text())
    got = {r["lfn"]: r for r in doc["replicas"]}
    assert set(got) == {"result.txt", "state.ckpt", "other.txt"}
    assert got["state.ckpt"]["checksum"]["sha256"] == sha(b"3")
    assert got["state.ckpt"]["pfns"] == [
        {"site": "local", "pfn": f"file://{tmp_path}/out/state.ckpt"}
    ]


def test_shifter_images_are_warned_about(tmp_path: Path) -> None:
    """A shifter image is planned with a warning that names the container; arguments
    (pegasus.container.arguments) are carried now (tests/worker/test_container_args.py),
    so they get none."""
    args = Container(
        "img", Container.SINGULARITY, "docker://library/busybox:1.36", arguments="--cleanenv"
    )
    shifter = Container("shf", Container.SHIFTER, "docker://library/busybox:1.36")
    tc = TransformationCatalog().add_containers(args, shifter)
    tc.add_transformations(
        Transformation("a", site="local", pfn="/bin/true", container=args),
        Transformation("b", site="local", pfn="/bin/true", container=shifter),
    )
    wf = Workflow("cont")
    wf.add_jobs(Job("a", _id="a1"), Job("a", _id="a2"), Job("b", _id="b1"))
    wf.add_transformation_catalog(tc)
    wf.write(str(tmp_path / "workflow.yml"))

    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert [w for w in warnings if "'img'" in w] == []
    (shf,) = [w for w in warnings if "'shf'" in w]
    assert "shifter" in shf


def test_an_intermediate_file_changed_in_staging_fails_its_consumer(tmp_path: Path) -> None:
    """PegasusLite checks intermediate files against the sha256 their producer's record
    gave (the parent's .meta); so does ferry run: a file altered in staging between the
    jobs fails the job that reads it, naming the file."""
    intermediate_workflow(tmp_path, str(tmp_path) + "/run*/scratch/a.txt")

    res = ferry("run", "workflow.yml", "--dir", "run1", "-O", "out", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    (line,) = _failed_lines(res.stdout)
    assert line.startswith("job use FAILED (attempt 1, exit 4): integrity: sha256 mismatch")
    assert "for a.txt from file://" in line and sha(b"good") in line and sha(b"evil") in line
    assert not (tmp_path / "out" / "out.txt").exists()

    # untouched, the same intermediate files pass the check (a diamond's middle and end)
    (tmp_path / "tamper").write_text(f"#!{PY}\nopen('b.txt', 'w').write('b')\n")
    res = ferry("run", "workflow.yml", "--dir", "run2", "-O", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "out" / "out.txt").read_text() == "goodb"
    rec = json.loads((tmp_path / "run2" / "records" / "use.1.json").read_text())
    checked = {
        t["lfn"]: t["expected_sha256"] for t in rec["transfers"] if t["direction"] == "input"
    }
    assert checked == {"a.txt": f"sha256:{sha(b'good')}", "b.txt": f"sha256:{sha(b'b')}"}


def test_a_checkpoint_time_too_close_to_maxwalltime_is_a_planning_error(tmp_path: Path) -> None:
    """pegasus-plan (Kickstart.java) refuses a checkpoint.time less than 10 s before
    maxwalltime: no time would be left to write the checkpoint before KILL."""
    wf = Workflow("ck")
    wf.add_jobs(
        Job("true", _id="ok").add_pegasus_profile(checkpoint_time=1, max_walltime=2),
        Job("true", _id="same").add_pegasus_profile(checkpoint_time=1, max_walltime=1),
    )
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [
        "ferry plan: error: job same: profile pegasus.checkpoint.time (1 min) must come at"
        " least 10 s before pegasus.maxwalltime (1 min)"
    ]
    assert not (tmp_path / "run" / "plan.json").exists()

    wf = Workflow("ck")
    wf.add_jobs(Job("true", _id="late").add_pegasus_profile(checkpoint_time=5, max_walltime=2))
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry("plan", "workflow.yml", "--dir", "run2", cwd=tmp_path)
    assert res.returncode == 2 and "job late: profile pegasus.checkpoint.time (5 min)" in res.stderr


def test_a_left_out_sub_workflow_keeps_the_order_around_it(tmp_path: Path) -> None:
    """Sub-workflow jobs are left out of the plan with a warning; the jobs before and
    after them (through chains of them, too) still run in the order asked for."""
    inner = Workflow("inner").add_jobs(Job("true", _id="i1"))
    inner.write(str(tmp_path / "inner.yml"))
    wf = Workflow("outer")
    before, after = Job("true", _id="before"), Job("true", _id="after")
    s1 = SubWorkflow("inner.yml", False, _id="sub1")
    s2 = SubWorkflow("inner.yml", False, _id="sub2")
    wf.add_jobs(before, s1, s2, after)
    wf.add_dependency(s1, parents=[before], children=[s2])
    wf.add_dependency(s2, children=[after])
    wf.write(str(tmp_path / "workflow.yml"))

    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "left out of the plan: sub1 (pegasusWorkflow), sub2 (pegasusWorkflow)" in res.stderr
    jobs = {j["id"]: j for j in json.loads((tmp_path / "run" / "plan.json").read_text())["jobs"]}
    assert set(jobs) == {"before", "after"}
    assert jobs["after"].get("parents") == ["before"]


def test_statistics_have_pegasus_statistics_integrity_sections(tmp_path: Path) -> None:
    """pegasus-statistics 5.1 adds '# Integrity Metrics' and '# Integrity Errors' to the
    summary when checksums were compared or computed."""
    _bad_sum_workflow(tmp_path)
    assert ferry("run", "workflow.yml", "--dir", "run", cwd=tmp_path).returncode == 1
    res = ferry("statistics", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "run" / "statistics" / "summary.txt").read_text()
    for out in (res.stdout, text):
        lines = out.splitlines()
        assert "# Integrity Metrics" in lines and "# Integrity Errors" in lines
        # f.a checked on each of the 2 attempts; nothing staged out
        assert any(
            x.startswith("2 files checksums compared with total duration of ") for x in lines
        )
        assert not any("generated" in x for x in lines)
        assert "Total:    A total of 2 integrity errors encountered in the workflow" in lines
        assert "Failures: 1 job failures had integrity errors" in lines
    js = json.loads(ferry("statistics", "--json", "run", cwd=tmp_path).stdout)
    assert js["integrity"]["compared"] == 2 and js["integrity"]["errors"] == 2
    assert js["integrity"]["failures"] == 1

    # a clean run: compared and generated sums, no error line, 0 failures
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "in.txt").write_text("x")
    rc = ReplicaCatalog().add_replica(
        "local", "in.txt", ok / "in.txt", checksum={"sha256": sha(b"x")}
    )
    wf = Workflow("good").add_replica_catalog(rc)
    wf.add_jobs(
        Job("cat", _id="c")
        .add_args(File("in.txt"))
        .add_inputs(File("in.txt"))
        .set_stdout(File("o.txt"))
    )
    wf.write(str(ok / "workflow.yml"))
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=ok)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "# Integrity Metrics" in res.stdout  # the table at the end of the run, too
    lines = ferry("statistics", "run", cwd=ok).stdout.splitlines()
    assert any(x.startswith("1 files checksums compared with") for x in lines)
    assert any(x.startswith("1 files checksums generated with") for x in lines)
    assert not any(x.startswith("Total:    ") for x in lines)
    assert "Failures: 0 job failures had integrity errors" in lines


def test_integrity_checking_none_turns_the_sha256_checks_off(tmp_path: Path) -> None:
    """pegasus.integrity.checking = none (a property; default full): Pegasus checks no
    sha256, so wrong sums in the catalogs do not fail the jobs."""
    data = tmp_path / "f.a"
    data.write_text("hello\n")
    exe = script(tmp_path / "show", "import sys\nsys.stdout.write(open('f.a').read())\n")
    rc = ReplicaCatalog().add_replica("local", "f.a", data, checksum={"sha256": "0" * 64})
    tc = TransformationCatalog().add_transformations(
        Transformation(
            "show",
            site="local",
            pfn=f"file://{exe}",
            is_stageable=True,
            checksum={"sha256": "1" * 64},
        )
    )
    wf = Workflow("nocheck").add_replica_catalog(rc).add_transformation_catalog(tc)
    wf.add_jobs(Job("show", _id="s").add_inputs(File("f.a")).set_stdout(File("out.txt")))
    wf.write(str(tmp_path / "workflow.yml"))
    props = Properties()
    props["pegasus.integrity.checking"] = "none"
    props.write(str(tmp_path / "pegasus.properties"))

    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "out" / "out.txt").read_text() == "hello\n"

    # the default (full) checks them; a value Pegasus does not know is a planning error
    res = ferry(
        "run",
        "workflow.yml",
        "--dir",
        "run2",
        "-D",
        "pegasus.integrity.checking=full",
        cwd=tmp_path,
    )
    assert res.returncode == 1 and "sha256 mismatch for " in res.stdout
    res = ferry(
        "plan",
        "workflow.yml",
        "--dir",
        "run3",
        "-D",
        "pegasus.integrity.checking=some",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert (
        "pegasus.integrity.checking must be one of full, nosymlink, none, not 'some'" in res.stderr
    )


def test_ferry_run_into_a_pipe_closed_early_still_runs_every_job(tmp_path: Path) -> None:
    """`ferry run wf.yml | head -1`: the reader leaves after the first line; the run goes
    on (a failure line written into the broken pipe used to kill the runner and, with it,
    the running jobs)."""
    wf = Workflow("pipe")
    wf.add_jobs(
        Job("false", _id="f").add_dagman_profile(retry=0),
        Job("sleep", _id="s").add_args(1).set_stdout(File("s.txt")),
    )
    wf.write(str(tmp_path / "workflow.yml"))
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "ferry.planner.cli",
            "run",
            "workflow.yml",
            "--dir",
            "run",
            "-O",
            "out",
            "-j",
            "2",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"Planned 2 job(s)")
    proc.stdout.close()  # | head -1
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1, err  # one job failed: the run's own exit code
    assert "Traceback" not in err
    assert (tmp_path / "out" / "s.txt").exists()
    res = ferry("status", "--json", "run", cwd=tmp_path)
    st = json.loads(res.stdout)
    assert st["status"] == "failure" and st["counts"]["succeeded"] == 1


def test_a_fan_out_from_a_job_with_many_outputs_sends_no_sums(tmp_path: Path) -> None:
    """The runner does not know which parent outputs a job reads; a parent with more than
    SUMS_MAX (100) outputs and several children sends none (each child would carry them
    all), one with a single child sends them all."""
    n = 101
    mk = script(
        tmp_path / "mk", f"for i in range({n}):\n    open(f'p{{i}}.txt', 'w').write(str(i))\n"
    )
    tc = TransformationCatalog().add_transformations(
        Transformation("mk", site="local", pfn=str(mk)),
        Transformation("cat", site="local", pfn="/bin/cat"),
    )
    parts = [File(f"p{i}.txt") for i in range(n)]
    wf = Workflow("fan").add_transformation_catalog(tc)
    wf.add_jobs(Job("mk", _id="mk").add_outputs(*parts, stage_out=False))
    for k in range(2):
        wf.add_jobs(
            Job("cat", _id=f"use{k}")
            .add_args(parts[k])
            .add_inputs(parts[k])
            .set_stdout(File(f"o{k}.txt"))
        )
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    for k in range(2):
        rec = json.loads((tmp_path / "run" / "records" / f"use{k}.1.json").read_text())
        (t,) = [t for t in rec["transfers"] if t["direction"] == "input"]
        assert t["lfn"] == f"p{k}.txt" and t["expected_sha256"] is None

    wf = Workflow("fan1").add_transformation_catalog(tc)
    wf.add_jobs(
        Job("mk", _id="mk").add_outputs(*parts, stage_out=False),
        Job("cat", _id="use").add_args(*parts[:2]).add_inputs(*parts).set_stdout(File("o.txt")),
    )
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry("run", "workflow.yml", "--dir", "run1", "-O", "out1", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    rec = json.loads((tmp_path / "run1" / "records" / "use.1.json").read_text())
    got = {t["lfn"]: t["expected_sha256"] for t in rec["transfers"] if t["direction"] == "input"}
    assert len(got) == n and got["p7.txt"] == f"sha256:{sha(b'7')}"


def test_properties_from_pegasusrc_and_pegasus_environment_variables(tmp_path: Path) -> None:
    """pegasus-plan reads ~/.pegasusrc first, then ./pegasus.properties and --conf, then
    _PEGASUS__X__Y environment variables (pegasus.x.y), then -D."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "good.txt").write_text("good")
    (tmp_path / "other.txt").write_text("other")
    ReplicaCatalog().add_replica("local", "in.txt", tmp_path / "good.txt").write(
        str(tmp_path / "rc-good.yml")
    )
    ReplicaCatalog().add_replica("local", "in.txt", tmp_path / "other.txt").write(
        str(tmp_path / "rc-other.yml")
    )
    wf = Workflow("props")
    wf.add_jobs(
        Job("cat", _id="c")
        .add_args(File("in.txt"))
        .add_inputs(File("in.txt"))
        .set_stdout(File("o.txt"))
    )
    wf.write(str(tmp_path / "workflow.yml"))
    (home / ".pegasusrc").write_text("pegasus.catalog.replica.file = rc-good.yml\n")

    def run(name: str, env: dict[str, str], *more: str) -> str:
        res = ferry(
            "run", "workflow.yml", "--dir", name, "-O", name + "-out", *more, cwd=tmp_path, env=env
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return (tmp_path / (name + "-out") / "o.txt").read_text()

    assert run("r1", {"HOME": str(home)}) == "good"
    env = {"HOME": str(home), "_PEGASUS__CATALOG__REPLICA__FILE": "rc-other.yml"}
    assert run("r2", env) == "other"  # the environment beats ~/.pegasusrc
    assert run("r3", env, "-D", "pegasus.catalog.replica.file=rc-good.yml") == "good"  # -D wins
