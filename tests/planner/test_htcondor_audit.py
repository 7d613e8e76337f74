"""The HTCondor backend, audited as a demanding workflow author would use it.

What test_htcondor.py does not cover: clusters whose members ask for different
resources, profiles a submit file cannot hold, DAGMan's syntax for categories
and throttles, inputs whose paths a submit file cannot hold, resubmitting a
workflow that succeeded, and a 10,000-job plan.

No HTCondor daemons run here: submit descriptions are read back with the real
``htcondor2.Submit``, ClassAd expressions with ``classad2``, the DAG file with
:mod:`.condor_sim` (as strict as DAGMan's parser about the commands ferry
writes), and nodes' jobs run for real (``ferry worker`` through the node
launcher) under :mod:`.condor_sim`, the stand-in for DAGMan and the schedd.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import classad2
import htcondor2
import pytest

from ferry.planner import cli

from Pegasus.api import (  # isort: skip
    File,
    Job,
    Namespace,
    ReplicaCatalog,
    Transformation,
    TransformationCatalog,
    Workflow,
)

from .condor_sim import check_line, expanded, file_list, parse_dag, simulate
from .helpers import ferry, journal, plan_doc, records


def ok(res) -> None:  # type: ignore[no-untyped-def]
    assert res.returncode == 0, (
        f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    )


def plan(tmp: Path, *extra: str, run: str = "run", wf: str = "workflow.yml") -> Path:
    ok(ferry("plan", wf, "--dir", run, "-O", "outputs", "--backend", "htcondor", *extra, cwd=tmp))
    return tmp / run


def dag_path(run: Path) -> Path:
    return run / "htcondor" / json.loads((run / "htcondor" / "ferry.json").read_text())["dag"]


def node_file(run: Path, node: str) -> Path:
    (path,) = (run / "htcondor" / "nodes").glob(f"*/{node}.json")
    return path


def plan_error(tmp: Path, wf: Workflow, *extra: str) -> str:
    """Plan ``wf``: it must fail as bad input (exit 2, no traceback, no plan)."""
    name = f"{wf.name}.yml"
    wf.write(str(tmp / name))
    res = ferry("plan", name, "--dir", "bad", "--backend", "htcondor", *extra, cwd=tmp)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    assert not (tmp / "bad").exists()  # found before anything was written
    return res.stderr


class StandIn:
    """Stands in for ``htcondor2.Submit.from_dag`` (needs condor_dagman) and
    ``htcondor2.Schedd`` (needs a schedd), the only parts of HTCondor that cannot
    run here; records what ferry asked of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict] = []
        standin = self

        def from_dag(filename: str, options: dict | None = None) -> htcondor2.Submit:
            standin.calls.append(dict(options or {}))
            return htcondor2.Submit({"universe": "scheduler", "executable": "/bin/true"})

        class Schedd:
            def submit(self, description, *a, **kw):  # type: ignore[no-untyped-def]
                class Result:
                    def cluster(self) -> int:
                        return 4200 + len(standin.calls)

                return Result()

        monkeypatch.setattr(htcondor2.Submit, "from_dag", staticmethod(from_dag))
        monkeypatch.setattr(htcondor2, "Schedd", Schedd)


# --- a cluster asks for the most any member asks for -------------------------------------


def test_a_cluster_asks_for_the_most_any_member_asks_for(tmp_path: Path) -> None:
    """docs/htcondor.md: "A cluster asks for the most any member asks for". The first
    member's condor.request_* used to override what the others asked for."""
    tc = TransformationCatalog().add_transformations(
        Transformation("part", site="local", pfn="/bin/sh").add_pegasus_profile(clusters_size=3)
    )
    wf = Workflow("clustered").add_transformation_catalog(tc)
    small = Job("part", _id="p0").add_args("-c", "echo 0 > o0").add_outputs(File("o0"))
    small.add_condor_profile(request_memory="1 GB", request_cpus=1, request_disk="1 MB")  # 1024 KB
    big = Job("part", _id="p1").add_args("-c", "echo 1 > o1").add_outputs(File("o1"))
    big.add_condor_profile(request_memory="4 GB", request_cpus=4)
    disk = Job("part", _id="p2").add_args("-c", "echo 2 > o2").add_outputs(File("o2"))
    disk.add_pegasus_profile(diskspace=100)  # MB
    wf.add_jobs(small, big, disk)
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path)
    (cluster,) = plan_doc(run)["jobs"]
    assert cluster["members"] == ["p0", "p1", "p2"]
    dag = parse_dag(dag_path(run))
    (node,) = dag.nodes.values()
    sub = htcondor2.Submit((run / "htcondor" / node.submit).read_text())
    assert sub["request_memory"] == "4096" and sub["request_cpus"] == "4"
    assert sub["request_disk"] == str(100 * 1024)  # KB
    result = simulate(dag_path(run), tmp_path)
    assert result.failed == set() and result.final_post == 0
    assert [(tmp_path / "outputs" / f"o{i}").read_text() for i in range(3)] == ["0\n", "1\n", "2\n"]


def test_a_clusters_retry_runs_only_the_members_that_have_not_succeeded(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch
) -> None:
    """docs/planner.md (Clustering), which docs/htcondor.md says applies: "A retry runs
    only the members that have not succeeded". The node's retry used to run them all
    again (and their outputs were staged and recorded twice)."""
    ran, flag = tmp_path / "ran.log", tmp_path / "flag"
    tc = TransformationCatalog().add_transformations(
        Transformation("part", site="local", pfn="/bin/sh").add_pegasus_profile(clusters_size=3)
    )
    wf = Workflow("retried").add_transformation_catalog(tc)
    for i in range(3):
        cmd = f"echo {i} >> {ran}; echo {i} > o{i}"
        if i == 1:  # fails its first attempt
            cmd = f"echo {i} >> {ran}; test -e {flag} || {{ touch {flag}; exit 7; }}; echo 1 > o1"
        wf.add_jobs(Job("part", _id=f"p{i}").add_args("-c", cmd).add_outputs(File(f"o{i}")))
    wf.add_jobs(
        Job("part", _id="sum")
        .add_args("-c", "cat o0 o1 o2 > all")
        .add_inputs(*(File(f"o{i}") for i in range(3)))
        .add_outputs(File("all"))
        .add_pegasus_profile(clusters_size=1)
    )
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path)
    StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    result = simulate(dag_path(run), tmp_path)
    assert result.failed == set() and result.final_post == 0
    (cluster,) = [node for node in result.posts if node.startswith("cluster_")]
    assert result.posts[cluster] == [1, 0]
    assert ran.read_text().split() == ["0", "1", "2", "1"]
    assert [[r["attempt"] for r in records(run, f"p{i}")] for i in range(3)] == [[1], [1, 2], [1]]
    assert (tmp_path / "outputs" / "all").read_text() == "0\n1\n2\n"
    registered = (run / "replicas.out.yml").read_text()
    assert all(f'lfn: "o{i}"' in registered for i in range(3))
    st = json.loads(ferry("statistics", str(run), "--json").stdout)
    assert st["tasks"]["succeeded"] == 4 and st["tasks"]["retries"] == 1
    # --force runs every member again
    assert json.loads(node_file(run, cluster).read_text()).get("done") == []
    doc = json.loads(node_file(run, cluster).read_text())
    node_file(run, cluster).write_text(json.dumps({**doc, "done": ["p0", "p2"]}))
    assert cli.main(["submit", str(run), "--force"]) == 0
    assert json.loads(node_file(run, cluster).read_text())["done"] == []


def test_a_single_jobs_condor_requests_are_kept_as_given(tmp_path: Path) -> None:
    """request_disk in KB that is not a whole number of MB stays exact."""
    wf = Workflow("one")
    job = Job("true", _id="t").add_condor_profile(request_cpus=2)
    wf.add_jobs(job.add_profiles(Namespace.CONDOR, key="request_disk", value=1000))  # KB
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path)
    (node,) = parse_dag(dag_path(run)).nodes.values()
    sub = htcondor2.Submit((run / "htcondor" / node.submit).read_text())
    assert sub["request_disk"] == "1000" and sub["request_cpus"] == "2"


def test_a_request_truncated_to_zero_megabytes_is_not_a_request_for_nothing() -> None:
    """Job specs carry memory and disk in whole MB: a member's condor.request_disk of
    1000 KB arrives as 0 MB, which used to become ``request_disk = 0``."""
    from ferry.planner.htcondor import _Res, submit_commands

    d = submit_commands(
        {},
        _Res(cpus=1, memory_mb=0, disk_mb=0),
        ep_python="/usr/bin/python3",
        condor_dir="/runs/r/htcondor",
        workflow="w",
        run_id="r",
    )
    sub = htcondor2.Submit(d)
    assert "request_disk" not in sub and "request_memory" not in sub


# --- profiles a submit file cannot hold ------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        # a value on two lines would add commands of its own: here, 5 jobs per node
        ("environment", '"A=1"\nqueue 5', "must be one line"),
        ("my attr", "1", "not a submit command name"),
        ("requirements", '(Arch == "X86_64"', "not a ClassAd expression"),
        ("+ProjectName", "My Project", "not a ClassAd expression"),
        ("periodic_hold", "JobStatus == 2 &&", "not a ClassAd expression"),
    ],
)
def test_condor_profiles_a_submit_file_cannot_hold_are_plan_errors(  # type: ignore[no-untyped-def]
    tmp_path: Path, key, value, why
) -> None:
    wf = Workflow("badprofile")
    wf.add_jobs(Job("true", _id="t").add_profiles(Namespace.CONDOR, key=key, value=value))
    err = plan_error(tmp_path, wf)
    assert f"job t: condor profile {key!r}" in err and why in err


def test_a_condor_profile_cannot_set_the_nodes_vars() -> None:
    """DAGMan sets a node's VARS as submit macros before the submit file is read: a
    ``ferry_*`` macro in the submit file would override them."""
    from ferry.planner.htcondor import _Res, submit_commands

    warnings: list[str] = []
    d = submit_commands(
        {"condor": {"ferry_inputs": "/etc/passwd", "ferry_node": "other"}},
        _Res(),
        ep_python="/usr/bin/python3",
        condor_dir="/runs/r/htcondor",
        workflow="w",
        run_id="r",
        warnings=warnings,
    )
    # the VARS first (DAGMan's default: prepended), then the submit file
    vars_ = "ferry_inputs = /runs/r/htcondor/nodes/0000/t.json\nferry_node = t\n"
    sub = htcondor2.Submit(vars_ + str(htcondor2.Submit(d)))
    assert sub.expand("transfer_input_files") == "/runs/r/htcondor/nodes/0000/t.json"
    assert len(warnings) == 2 and all("is ignored" in w for w in warnings)


def test_condor_expressions_that_parse_or_use_macros_are_kept(tmp_path: Path) -> None:
    wf = Workflow("goodprofile")
    job = Job("true", _id="t")
    job.add_profiles(Namespace.CONDOR, key="requirements", value="(Memory >= $(mem_floor))")
    job.add_profiles(Namespace.CONDOR, key="+ProjectName", value='"My Project"')
    job.add_profiles(Namespace.CONDOR, key="rank", value="KFlops")
    wf.add_jobs(job)
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path)
    (node,) = parse_dag(dag_path(run)).nodes.values()
    sub = htcondor2.Submit((run / "htcondor" / node.submit).read_text())
    assert classad2.ExprTree(sub["MY.ProjectName"]).eval() == "My Project"
    sub["mem_floor"] = "2048"
    assert sub.expand("requirements") == "(Memory >= 2048)"
    assert str(classad2.ExprTree(sub["rank"])) == "KFlops"


def test_the_workflow_attribute_is_the_workflows_name_in_utf8(tmp_path: Path) -> None:
    """``condor_q -constraint 'ferry_workflow == "orcä"'`` must match: ClassAds do not
    read JSON's \\u escapes (the attribute used to be "orcu00e4")."""
    wf = Workflow("orcä")
    wf.add_jobs(Job("true", _id="t"))
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path)
    (node,) = parse_dag(dag_path(run)).nodes.values()
    sub = htcondor2.Submit((run / "htcondor" / node.submit).read_text())
    assert classad2.ExprTree(sub["MY.ferry_workflow"]).eval() == "orcä"


def test_a_transfer_input_files_profile_is_added_to_the_nodes_own(tmp_path: Path) -> None:
    """As Pegasus merges condor.transfer_input_files into its own list (proxies for
    glideins, ...): the file lands in the job's sandbox. It used to be dropped with a
    warning."""
    token = tmp_path / "token.txt"
    token.write_text("s3cret\n")
    wf = Workflow("extra")
    job = Job("sh", _id="t").add_args("-c", 'cat "$_CONDOR_SCRATCH_DIR/token.txt" > seen.txt')
    job.add_outputs(File("seen.txt"))
    job.add_profiles(Namespace.CONDOR, key="transfer_input_files", value=str(token))
    wf.add_jobs(job)
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry(
        "plan", "workflow.yml", "--dir", "run", "-O", "outputs", "--backend", "htcondor",
        cwd=tmp_path,
    )  # fmt: skip
    ok(res)
    assert "is ignored" not in res.stderr
    run = tmp_path / "run"
    node = parse_dag(dag_path(run)).nodes["t"]
    inputs = file_list(expanded(run / "htcondor" / node.submit, node.vars).expand(
        "transfer_input_files"
    ))  # fmt: skip
    assert inputs == [str(node_file(run, "t")), str(token)]
    (tmp_path / "exec").mkdir()
    result = simulate(dag_path(run), tmp_path / "exec")
    assert result.failed == set()
    assert (tmp_path / "outputs" / "seen.txt").read_text() == "s3cret\n"


# --- DAGMan categories and throttles -------------------------------------------------------------


def test_a_category_name_with_white_space_is_a_plan_error(tmp_path: Path) -> None:
    """DAGMan: "Category names cannot contain white space" (the DAG had
    ``CATEGORY t big jobs`` and ``MAXJOBS big jobs 2``, which DAGMan rejects)."""
    wf = Workflow("cats")
    wf.add_jobs(Job("true", _id="t").add_dagman_profile(category="big jobs"))
    assert "'big jobs' is not a DAGMan category name" in plan_error(tmp_path, wf)
    wf = Workflow("cats2")
    wf.add_jobs(Job("true", _id="t"))
    err = plan_error(tmp_path, wf, "-D", "dagman.big jobs.maxjobs=2")
    assert "'big jobs' is not a DAGMan category name" in err
    with pytest.raises(ValueError, match="DAGMan would reject"):
        check_line("CATEGORY t big jobs".split(), "CATEGORY t big jobs")


def test_dag_throttles_go_into_dagmans_configuration(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Pegasus's dagman.maxjobs/maxidle/maxpre/maxpost properties throttle the whole DAG;
    they used to be dropped without a word. Keys the backend does not map are named."""
    wf = Workflow("throttled")
    for i in range(3):
        job = Job("true", _id=f"t{i}").add_dagman_profile(category="light", priority=7)
        wf.add_jobs(job)
    wf.get_job("t0").add_profiles(Namespace.DAGMAN, key="pre", value="/bin/true")
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry(
        "plan", "workflow.yml", "--dir", "run", "--backend", "htcondor",
        "-D", "dagman.maxjobs=5", "-D", "dagman.maxidle=20", "-D", "dagman.maxpost=3",
        "-D", "dagman.light.maxjobs=2",
        cwd=tmp_path,
    )  # fmt: skip
    ok(res)
    assert "dagman profile 'pre' is ignored" in res.stderr
    run = tmp_path / "run"
    dag = parse_dag(dag_path(run))  # every line as DAGMan's parser wants it
    assert "CONFIG dagman.config" in dag.meta
    assert dag.maxjobs == {"light": 2}
    assert {n.category for n in dag.nodes.values()} == {"light"}
    assert {n.priority for n in dag.nodes.values()} == {7}
    config = dict(
        line.split(" = ", 1)
        for line in (run / "htcondor" / "dagman.config").read_text().splitlines()
    )
    assert config == {
        "DAGMAN_MAX_JOBS_SUBMITTED": "5",
        "DAGMAN_MAX_JOBS_IDLE": "20",
        "DAGMAN_MAX_POST_SCRIPTS": "3",
    }
    result = simulate(dag_path(run), tmp_path)
    assert result.failed == set() and result.final_post == 0


# --- paths a submit file cannot hold ---------------------------------------------------------------


def test_inputs_whose_paths_a_submit_file_cannot_hold_come_by_file_transfer(tmp_path: Path) -> None:
    """A replica-catalog file in a directory with a space and a quote, and an intermediate
    file whose name has a space: they used to be left to the worker (a warning said a
    shared filesystem was needed, which an HTCondor pool usually lacks). Now HTCondor
    brings them in through a link beside the node file, and the spec reads only the
    sandbox copy."""
    data = tmp_path / "my data" / "it's here"
    data.mkdir(parents=True)
    (data / "in put.txt").write_text("raw\n")
    rc = ReplicaCatalog().add_replica("local", "in put.txt", str(data / "in put.txt"))
    wf = Workflow("spaces").add_replica_catalog(rc)
    mid, out = File("mid file.txt"), File("out, final.txt")
    wf.add_jobs(
        Job("sh", _id="first")
        .add_args("-c", "tr a-z A-Z < 'in put.txt' > 'mid file.txt'")
        .add_inputs(File("in put.txt"))
        .add_outputs(mid, stage_out=False),
        Job("sh", _id="second")
        .add_args("-c", "cat 'mid file.txt' 'mid file.txt' > 'out, final.txt'")
        .add_inputs(mid)
        .add_outputs(out),
    )
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry(
        "plan", "workflow.yml", "--dir", "run", "-O", "outputs", "--backend", "htcondor",
        cwd=tmp_path,
    )  # fmt: skip
    ok(res)
    assert "shared filesystem" not in res.stderr
    run = tmp_path / "run"
    dag = parse_dag(dag_path(run))
    for name, lfn, path in (
        ("first", "in put.txt", data / "in put.txt"),
        ("second", "mid file.txt", run / "scratch" / "mid file.txt"),
    ):
        node = dag.nodes[name]
        inputs = file_list(
            expanded(run / "htcondor" / node.submit, node.vars).expand("transfer_input_files")
        )
        (link,) = [Path(p) for p in inputs if Path(p).name.startswith("_ferry_i")]
        assert link.parent == node_file(run, name).parent and os.readlink(link) == str(path)
        (spec,) = json.loads(node_file(run, name).read_text())["specs"]
        (inp,) = spec["inputs"]
        assert inp["lfn"] == lfn
        assert [s["url"] for s in inp["sources"]] == [
            f"file://${{_CONDOR_SCRATCH_DIR}}/{link.name}"
        ]
    (tmp_path / "exec").mkdir()
    result = simulate(dag_path(run), tmp_path / "exec")
    assert result.failed == set() and result.final_post == 0
    assert (tmp_path / "outputs" / "out, final.txt").read_text() == "RAW\nRAW\n"
    (first_run,) = result.runs["first"]
    assert (first_run.scratch / "_ferry_i0_first.txt").read_text() == "raw\n"  # a copy
    (rec,) = records(run, "first")
    (t,) = [t for t in rec["transfers"] if t["direction"] == "input"]
    assert t["route"] == "htcondor" and t["ok"]
    assert t["source"].startswith(f"file://{tmp_path}/my%20data/")  # the file's own URL


def test_a_container_image_whose_path_has_a_space_keeps_its_kind(tmp_path: Path) -> None:
    """The link HTCondor brings an image in through keeps the image's suffix, which
    is how the worker tells a docker-archive tar from a SIF."""
    from Pegasus.api import Container

    from ferry.containers.image import guess_kind

    images = tmp_path / "my images"
    images.mkdir()
    (images / "tool.tar").write_bytes(b"not really an image")
    tc = TransformationCatalog()
    tc.add_containers(Container("tool", Container.DOCKER, f"file://{images}/tool.tar"))
    tc.add_transformations(
        Transformation("tool", site="condorpool", pfn="/bin/true", container="tool")
    )
    wf = Workflow("imaged").add_transformation_catalog(tc)
    wf.add_jobs(Job("tool", _id="t"))
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path, "-s", "condorpool")
    (spec,) = json.loads(node_file(run, "t").read_text())["specs"]
    assert spec["container"]["image"] == "file://${_CONDOR_SCRATCH_DIR}/_ferry_i0_t.tar"
    assert guess_kind(spec["container"]["image"]) == "docker-archive"
    node = parse_dag(dag_path(run)).nodes["t"]
    inputs = file_list(expanded(run / "htcondor" / node.submit, node.vars).expand(
        "transfer_input_files"
    ))  # fmt: skip
    assert os.readlink(inputs[-1]) == str(images / "tool.tar")


# --- resubmission -------------------------------------------------------------------------------


def test_submitting_a_workflow_that_succeeded_again_needs_force(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """After a success there is nothing to continue: submitting again would have DAGMan
    run every node again (or, with a rescue DAG from an earlier failure, every node
    that failed then). ``--force`` is how to ask for that."""
    mark = tmp_path / "fixed"
    wf = Workflow("again")
    wf.add_jobs(
        Job("sh", _id="a").add_args("-c", "echo a > a.txt").add_outputs(File("a.txt")),
        Job("sh", _id="b")
        .add_args("-c", f"test -e {mark} && echo b > b.txt")
        .add_outputs(File("b.txt"))
        .add_dagman_profile(retry=0),
    )
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path)
    standin = StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    first = simulate(dag_path(run), tmp_path)
    assert first.failed == {"b"} and first.rescue is not None
    mark.touch()
    assert cli.main(["submit", str(run)]) == 0  # continues from the rescue DAG
    second = simulate(dag_path(run), tmp_path)
    assert second.failed == set() and set(second.runs) == {"b"}
    assert journal(run)[-1]["status"] == "success"
    capsys.readouterr()
    assert cli.main(["submit", str(run)]) == 2
    assert "already succeeded; --force runs every node again" in capsys.readouterr().err
    assert len(standin.calls) == 2
    assert cli.main(["submit", str(run), "--force"]) == 0
    assert standin.calls[-1]["Force"] is True


def test_status_reads_dagmans_node_status_file_as_dagman_writes_it(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch
) -> None:
    """DAGMan cannot run here: the node status file is written by the test as DAGMan
    writes it, with its /* ... */ comments. A DAG that DAGMan reports failed
    (DagStatus 6) before its FINAL node's POST script ran is a failure; a node in
    its POST script is running, a held one queued."""
    wf = Workflow("watched")
    wf.add_jobs(*(Job("true", _id=f"j{i}") for i in range(4)))
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan(tmp_path)
    StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    ts = int(journal(run)[-1]["t"]) + 1

    def node(name: str, st: int, text: str, details: str = "") -> str:
        return (
            f'[\n  Type = "NodeStatus";\n  Node = "{name}";\n'
            f'  NodeStatus = {st}; /* "{text}" */\n  StatusDetails = "{details}";\n'
            "  RetryCount = 0;\n  JobProcsQueued = 0;\n  JobProcsHeld = 0;\n]"
        )

    def write(dag_status: int) -> None:
        (run / "htcondor" / "watched.dag.status").write_text(
            "\n".join(
                [
                    f'[\n  Type = "DagStatus";\n  DagFiles = {{\n    "watched.dag"\n  }};\n'
                    f'  Timestamp = {ts}; /* "a date" */\n'
                    f'  DagStatus = {dag_status}; /* "STATUS_SUBMITTED ()" */\n'
                    "  NodesTotal = 5;\n  NodesDone = 1;\n  NodesQueued = 2;\n]",
                    node("j0", 5, "STATUS_DONE"),
                    node("j1", 4, "STATUS_POSTRUN"),
                    node("j2", 3, "STATUS_SUBMITTED", "held"),
                    node("j3", 6, "STATUS_ERROR"),
                    f'[\n  Type = "StatusEnd";\n  EndTime = {ts}; /* "a date" */\n]',
                ]
            )
        )

    write(3)
    st = json.loads(ferry("status", str(run), "--json").stdout)
    assert st["status"] == "running"
    counts = {k: v for k, v in st["counts"].items() if v}
    assert counts == {"succeeded": 1, "running": 1, "queued": 1, "failed": 1}
    write(6)
    assert json.loads(ferry("status", str(run), "--json").stdout)["status"] == "failure"


# --- many jobs ------------------------------------------------------------------------------------


def test_ten_thousand_jobs_plan_fast_into_few_submit_files(tmp_path: Path) -> None:
    """10,000 jobs and a merge: a few seconds to plan, one submit file per layer, every
    DAG line as DAGMan's parser wants it, and a DAG of about a kilobyte per node."""
    n = 10_000
    wf = Workflow("many")
    parts = []
    for i in range(n):
        f = File(f"part{i}.txt")
        job = Job("sh", _id=f"p{i}").add_args("-c", f"echo {i} > part{i}.txt")
        job.add_outputs(f, stage_out=False)
        if i % 10 == 0:
            job.add_condor_profile(request_memory="2 GB")
        wf.add_jobs(job)
        parts.append(f)
    wf.add_jobs(Job("sh", _id="merge").add_args("-c", "cat part*.txt > all.txt").add_inputs(*parts))
    wf.write(str(tmp_path / "workflow.yml"))
    t0 = time.monotonic()
    run = plan(tmp_path)
    assert time.monotonic() - t0 < 90
    subs = sorted(p.name for p in (run / "htcondor").glob("*.sub"))
    assert len(subs) == 5, subs  # two layers of parts (memory), the merge, cleanup, FINAL
    for p in (run / "htcondor").glob("*.sub"):
        htcondor2.Submit(p.read_text())
    dag = parse_dag(dag_path(run))
    jobs = [node for node in dag.nodes.values() if not node.noop]
    assert len(jobs) == n + 1
    assert len(dag.nodes["merge"].parents) == n
    assert dag_path(run).stat().st_size < 1500 * (n + 1)
    big = dag.nodes["p10"]
    sub = expanded(run / "htcondor" / big.submit, big.vars)
    assert sub["request_memory"] == "2048" and sub.expand("transfer_input_files").endswith(
        "p10.json"
    )
