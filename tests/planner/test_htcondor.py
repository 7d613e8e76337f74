"""The HTCondor backend: `ferry plan --backend htcondor`, `ferry submit`, POST scripts, monitoring.

No HTCondor daemons can run on this machine, and the htcondor 25.x bindings need
a schedd for ``Submit.jobs()``/``procs()`` and ``condor_dagman`` for
``Submit.from_dag``. So:

* every generated submit description is parsed with the real
  ``htcondor2.Submit(text)`` and its commands checked (ClassAd expressions such
  as ``MY.ProjectName`` evaluated with ``classad2``);
* the DAG file is checked node by node against plan.json;
* each node's job runs for real: :mod:`.condor_sim` does what DAGMan, the
  schedd and a starter would do with the files (macros expanded by the
  bindings, ``transfer_input_files`` copied by basename into a scratch execute
  directory, the executable and arguments exactly as the submit file gives
  them, ``transfer_output_files`` copied back per the remaps, the POST script
  with DAGMan's macros), and the tests check the workflow's outputs, records,
  journal and what ``ferry status/statistics/analyze`` report;
* submission goes through a stand-in only at the bindings' call boundary
  (``htcondor2.Submit.from_dag`` and ``htcondor2.Schedd``), because both need
  HTCondor daemons and binaries; one test runs the real ``from_dag`` to show
  how ``ferry submit`` fails without them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import classad2
import htcondor2
import pytest
import yaml

from ferry.planner import cli
from ferry.planner.htcondor import _Res as Res
from ferry.planner.htcondor import node_names, submit_commands

from Pegasus.api import (  # isort: skip
    Directory,
    File,
    FileServer,
    Job,
    Namespace,
    Operation,
    Site,
    SiteCatalog,
    Transformation,
    TransformationCatalog,
    Workflow,
)

from .condor_sim import (
    Dag,
    condor_args,
    expanded,
    file_list,
    parse_dag,
    remap_list,
    run_job,
    run_post,
    simulate,
)
from .helpers import (
    PY,
    ferry,
    files_under,
    intermediate_workflow,
    journal,
    plan_doc,
    records,
    sha,
)
from .test_run import BATCHES, SENSORS, TS, expected_predictions, ok, orcasound


def plan_condor(tmp: Path, *extra: str, run: str = "run") -> Path:
    res = ferry(
        "plan",
        "workflow.yml",
        "--dir",
        run,
        "-O",
        "outputs",
        "--backend",
        "htcondor",
        *extra,
        cwd=tmp,
    )
    ok(res)
    assert f"Submit it with: ferry submit {tmp / run}" in res.stdout
    return tmp / run


def dag_of(run: Path) -> Dag:
    cfg = json.loads((run / "htcondor" / "ferry.json").read_text())
    return parse_dag(run / "htcondor" / cfg["dag"])


def nodes_json(run: Path) -> dict[str, list]:
    return json.loads((run / "htcondor" / "nodes.json").read_text())["nodes"]


def submit_file(run: Path, dag: Dag, entry: str) -> htcondor2.Submit:
    """The node's submit description as its .sub file has it (macros not expanded)."""
    node = node_names_of(run)[entry]
    return htcondor2.Submit((run / "htcondor" / dag.nodes[node].submit).read_text())


def node_names_of(run: Path) -> dict[str, str]:
    return {v[0]: k for k, v in nodes_json(run).items() if v[1] == "job"}


POST = ["-m", "ferry.planner.cli", "postscript"]


def check_dag(run: Path) -> Dag:
    """The DAG, node by node, against plan.json."""
    doc = plan_doc(run)
    dag = dag_of(run)
    names = node_names_of(run)
    assert len(names) == len(doc["jobs"])
    job_post = [
        PY,
        *POST,
        str(run),
        "$JOB",
        "--return",
        "$RETURN",
        "--retry",
        "$RETRY",
        "--max-retries",
        "$MAX_RETRIES",
        "--jobid",
        "$JOBID",
    ]
    for pj in doc["jobs"]:
        node = dag.nodes[names[pj["id"]]]
        assert node.parents == {names[p] for p in pj.get("parents", [])}, pj["id"]
        assert node.retry == pj["retries"], pj["id"]
        assert node.post == job_post
        assert node.vars["ferry_node"] == node.name and not node.noop
        # every submit file parses with the bindings and runs the node launcher
        sub = expanded(run / "htcondor" / node.submit, node.vars)
        assert sub["universe"] == "vanilla"
        assert sub.expand("executable") == PY
        assert condor_args(sub.expand("arguments")) == [
            "-m",
            "ferry.planner.condor_node",
            f"{node.name}.json",
        ]
        assert sub["should_transfer_files"] == "YES"
        assert sub["when_to_transfer_output"] == "ON_EXIT"
        assert file_list(sub.expand("transfer_input_files"))[0] == str(node_file(run, node.name))
        members = pj.get("members") or [pj["id"]]
        outs = file_list(sub.expand("transfer_output_files"))
        assert outs[-len(members) :] == [f"_ferry_r{i}.json" for i in range(len(members))]
        remaps = remap_list(sub.expand("transfer_output_remaps"))
        assert set(remaps) == set(outs)
        assert all(Path(p).parent == node_file(run, node.name).parent for p in remaps.values())
    cleanups = {c["id"]: c for c in doc["cleanup"] if c.get("after") is not None}
    by_action = {v[0]: k for k, v in nodes_json(run).items() if v[1] == "cleanup"}
    assert set(by_action) == set(cleanups)
    for cid, c in cleanups.items():
        node = dag.nodes[by_action[cid]]
        assert node.noop and node.parents == {names[j] for j in c["after"]}
        assert node.post == job_post
    assert len(dag.nodes) == len(names) + len(cleanups)
    assert dag.final is not None and dag.final.name == "ferry_final"
    assert dag.final.post == [
        PY,
        *POST,
        str(run),
        "$JOB",
        "--return",
        "$RETURN",
        "--dag-status",
        "$DAG_STATUS",
        "--failed-count",
        "$FAILED_COUNT",
    ]
    final_sub = htcondor2.Submit((run / "htcondor" / dag.final.submit).read_text())
    assert final_sub["universe"] == "local"
    assert any(m.startswith(f"NODE_STATUS_FILE {run}/htcondor/") for m in dag.meta)
    for path in (run / "htcondor").glob("*.sub"):
        htcondor2.Submit(path.read_text())  # every one parses
    return dag


def node_file(run: Path, node: str) -> Path:
    (path,) = (run / "htcondor" / "nodes").glob(f"*/{node}.json")
    return path


class StandIn:
    """Stands in for the HTCondor bindings at their call boundary only:
    ``htcondor2.Submit.from_dag`` (needs condor_dagman) and ``htcondor2.Schedd``
    (needs a running schedd). Records the calls; returns what they would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.from_dag_calls: list[tuple[str, dict, str]] = []
        self.submitted: list[htcondor2.Submit] = []
        self.cluster = 4100
        standin = self

        def from_dag(filename: str, options: dict | None = None) -> htcondor2.Submit:
            standin.from_dag_calls.append((filename, dict(options or {}), os.getcwd()))
            return htcondor2.Submit(
                {
                    "universe": "scheduler",
                    "executable": "/usr/bin/condor_dagman",
                    "arguments": f'"-f -l . -Lockfile {filename}.lock -AutoRescue 1 -Dag {filename}"',
                }
            )

        class Result:
            def __init__(self, cluster: int) -> None:
                self._cluster = cluster

            def cluster(self) -> int:
                return self._cluster

        class Schedd:
            def submit(self, description: htcondor2.Submit, *a, **kw) -> Result:  # type: ignore[no-untyped-def]
                standin.submitted.append(description)
                standin.cluster += 1
                return Result(standin.cluster)

        monkeypatch.setattr(htcondor2.Submit, "from_dag", staticmethod(from_dag))
        monkeypatch.setattr(htcondor2, "Schedd", Schedd)


def submit(run: Path, standin: StandIn, *args: str, capsys=None) -> str:  # type: ignore[no-untyped-def]
    assert cli.main(["submit", str(run), *args]) == 0
    return capsys.readouterr().out if capsys else ""


def status(run: Path) -> dict:
    return json.loads(ferry("status", str(run), "--json").stdout)


# --- the seed pipeline, condorio ------------------------------------------------------------


def seed_pipeline(url: str) -> Workflow:
    wf = Workflow("pipeline")
    webpage = File("pegasus.html")
    curl_job = (
        Job("curl")
        .add_args("-o", webpage, url)
        .add_outputs(webpage, stage_out=False, register_replica=False)
    )
    count = File("count.txt")
    wc_job = (
        Job("wc")
        .add_args("-l", webpage)
        .add_inputs(webpage)
        .set_stdout(count, stage_out=True, register_replica=True)
    )
    wf.add_jobs(curl_job, wc_job)
    wf.add_dependency(wc_job, parents=[curl_job])
    return wf


def test_seed_pipeline_condorio(tmp_path: Path, nginx_server, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    page = "".join(f"<p>line {i}</p>\n" for i in range(17))
    (nginx_server.root / "pegasus").mkdir(exist_ok=True)
    (nginx_server.root / "pegasus" / "index.html").write_text(page)
    wf = seed_pipeline(f"{nginx_server.url}/pegasus/index.html")
    wc = wf.get_job("ID0000002")
    # an OSPool-style job: a project, memory and cores, requirements, an accounting group
    wc.add_profiles(Namespace.CONDOR, key="+ProjectName", value='"OSG-Staff"')
    wc.add_profiles(
        Namespace.CONDOR,
        key="requirements",
        value='(OSGVO_OS_STRING == "RHEL 9") && (HAS_MODULES =?= true)',
    )
    wc.add_profiles(Namespace.CONDOR, key="accounting_group", value="group_physics.alice")
    wc.add_pegasus_profile(memory=2048, cores=2, diskspace=300)
    wc.add_dagman_profile(priority=50)
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path)
    doc = plan_doc(run)
    assert doc["backend"] == "htcondor"
    assert doc["options"]["htcondor"]["staging"] == {"condorio": 2}
    dag = check_dag(run)

    curl_node, wc_node = dag.nodes["ID0000001"], dag.nodes["ID0000002"]
    assert wc_node.priority == 50 and curl_node.priority == 0
    sub = submit_file(run, dag, "ID0000002")
    assert sub["request_cpus"] == "2" and sub["request_memory"] == "2048"
    assert sub["request_disk"] == str(300 * 1024)  # MB in the profile, KB in the submit file
    assert classad2.ExprTree(sub["MY.ProjectName"]).eval() == "OSG-Staff"
    assert sub["requirements"] == '(OSGVO_OS_STRING == "RHEL 9") && (HAS_MODULES =?= true)'
    req = classad2.ExprTree(sub["requirements"])
    machine = classad2.ClassAd({"OSGVO_OS_STRING": "RHEL 9", "HAS_MODULES": True})
    assert req.eval(machine) is True
    assert sub["accounting_group"] == "group_physics.alice"
    assert classad2.ExprTree(sub["MY.ferry_workflow"]).eval() == "pipeline"
    csub = submit_file(run, dag, "ID0000001")
    assert "MY.ProjectName" not in csub and "request_memory" not in csub
    assert csub["request_cpus"] == "1"
    # condorio: wc's job brings the page from staging, both bring their outputs back
    wc_in = file_list(
        expanded(run / "htcondor" / wc_node.submit, wc_node.vars).expand("transfer_input_files")
    )
    # and its parent's output sums, which its stage-in checks the page against
    sums = node_file(run, "ID0000001").with_name("_ferry_sums_ID0000001.json")
    assert wc_in == [
        str(node_file(run, "ID0000002")),
        str(sums),
        str(run / "scratch" / "pegasus.html"),
    ]
    node_doc = json.loads(node_file(run, "ID0000002").read_text())
    (spec,) = node_doc["specs"]
    assert spec["inputs"][0]["sources"][0]["url"] == "file://${_CONDOR_SCRATCH_DIR}/pegasus.html"
    assert spec["outputs"][0]["destinations"] == [
        {"url": "file://${_CONDOR_SCRATCH_DIR}/_ferry_o0", "site": "local"}
    ]
    assert node_doc["returns"][0]["dests"][0]["url"] == f"file://{tmp_path}/outputs/count.txt"

    out = submit(run, StandIn(monkeypatch), capsys=capsys)
    assert f"Submitted {run}/htcondor/pipeline.dag to the local schedd: DAGMan job 4101" in out
    assert status(run)["status"] == "running"

    result = simulate(run / "htcondor" / "pipeline.dag", tmp_path)
    assert result.failed == set() and result.final_post == 0 and result.rescue is None
    # the job ran in its scratch directory from what HTCondor transferred
    (wc_run,) = result.runs["ID0000002"]
    assert sorted(p.name for p in wc_run.scratch.iterdir() if p.is_file()) == [
        "ID0000002.json",
        "_ferry_o0",
        "_ferry_r0.json",
        "_ferry_sums_ID0000001.json",
        "pegasus.html",
    ]
    assert (tmp_path / "outputs" / "count.txt").read_text() == "17 pegasus.html\n"
    assert not list(files_under(run / "scratch"))  # the cleanup node removed the page
    rc = yaml.safe_load((run / "replicas.out.yml").read_text())
    assert rc["replicas"] == [
        {
            "lfn": "count.txt",
            "pfns": [{"site": "local", "pfn": f"file://{tmp_path}/outputs/count.txt"}],
            "checksum": {"sha256": sha(b"17 pegasus.html\n")},
        }
    ]
    (rec,) = records(run, "ID0000002")
    assert rec["status"] == "succeeded" and rec["attempt"] == 1
    assert rec["arguments"] == ["-l", "pegasus.html"]
    assert rec["workdir"].startswith(str(wc_run.scratch))  # it ran in the scratch directory
    assert [(t["direction"], t["lfn"], t["route"]) for t in rec["transfers"]] == [
        ("input", "pegasus.html", "htcondor"),
        ("output", "count.txt", "htcondor"),
    ]
    assert rec["transfers"][0]["source"] == f"file://{run}/scratch/pegasus.html"
    assert rec["transfers"][1]["dest"] == f"file://{tmp_path}/outputs/count.txt"
    assert rec["transfers"][1]["sha256"] == "sha256:" + sha(b"17 pegasus.html\n")
    assert rec["condor"]["node"] == "ID0000002"
    events = [(e["job"], e["event"]) for e in journal(run)]
    assert events[0] == (None, "workflow-started") and events[-1] == (None, "workflow-finished")
    assert ("ID0000001", "succeeded") in events and (None, "cleanup") in events
    assert journal(run)[-1]["status"] == "success"

    st = status(run)
    assert st["status"] == "success" and st["counts"]["succeeded"] == 2
    res = ferry("statistics", str(run))
    ok(res)
    assert "Tasks          2         0       0           2         0         2" in res.stdout
    assert "Jobs           2         0       0           2         0         2" in res.stdout
    res = ferry("analyze", str(run))
    ok(res)
    assert "Workflow Status    : success" in res.stdout
    assert "# jobs succeeded   :      2 (100.00%)" in res.stdout


# --- Orcasound, condorio -------------------------------------------------------------------


def test_orcasound_condorio(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    wf = orcasound(tmp_path)
    for job in wf.jobs.values():
        if job.transformation == "inference":
            job.add_pegasus_profile(cores=2, memory=1024, gpus=1)
            job.add_profiles(Namespace.CONDOR, key="+ProjectName", value='"Orcasound"')
            job.add_dagman_profile(category="gpu")
        if job.transformation == "merge_predictions":
            job.add_dagman_profile(priority=10)
    tc = wf.transformation_catalog
    tc.transformations[
        next(k for k in tc.transformations if "convert2wav" in k)
    ].add_dagman_profile(retry=3)
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path, "-D", "dagman.gpu.maxjobs=2")
    doc = plan_doc(run)
    jobs = {j["id"]: j for j in doc["jobs"]}
    assert len(jobs) == SENSORS * BATCHES * 3 + SENSORS + 1
    dag = check_dag(run)
    assert dag.nodes["inf_s1_b1"].category == "gpu" and dag.nodes["wav_s1_b1"].category is None
    assert dag.maxjobs == {"gpu": 2}
    assert dag.nodes["wav_s1_b1"].retry == 3 and dag.nodes["png_s1_b1"].retry == 1
    assert dag.nodes["merge_all"].priority == 10 and dag.nodes["merge_s1"].priority == 10
    inf = submit_file(run, dag, "inf_s2_b3")
    assert (inf["request_cpus"], inf["request_memory"], inf["request_gpus"]) == ("2", "1024", "1")
    assert classad2.ExprTree(inf["MY.ProjectName"]).eval() == "Orcasound"
    # nodes that share a submit description and a level share a layer (one .sub)
    assert dag.nodes["inf_s1_b1"].submit == dag.nodes["inf_s2_b3"].submit
    assert dag.nodes["merge_s1"].submit != dag.nodes["merge_all"].submit  # other levels
    # the stageable executable and the hydrophone data come with the job
    wav = dag.nodes["wav_s1_b2"]
    inputs = file_list(
        expanded(run / "htcondor" / wav.submit, wav.vars).expand("transfer_input_files")
    )
    assert inputs[1:] == [
        str(tmp_path / "bin" / "convert2wav.py"),
        str(tmp_path / "data" / f"sensor_1/hls/{TS}/batch_2.ts"),
    ]

    StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    result = simulate(run / "htcondor" / "orcasound.dag", tmp_path)
    assert result.failed == set() and result.final_post == 0

    out = tmp_path / "outputs"
    assert json.loads((out / "predictions_all.json").read_text()) == expected_predictions()
    for s in range(1, SENSORS + 1):
        for b in range(1, BATCHES + 1):
            assert (out / f"png/sensor_{s}/{TS}/batch_{b}.png").read_text().startswith("PNG WAV")
    assert not (out / "wav").exists()
    assert not list(files_under(run / "scratch"))
    for job_id in jobs:
        assert [r["status"] for r in records(run, job_id)] == ["succeeded"], job_id
    rec = records(run, "wav_s1_b1")[0]
    exe = next(t for t in rec["transfers"] if t["lfn"] == "convert2wav")
    assert exe["expected_sha256"] == exe["sha256"]  # checked after HTCondor moved it
    ts_in = next(t for t in rec["transfers"] if t["lfn"].endswith(".ts"))
    assert ts_in["source"] == f"file://{tmp_path}/data/sensor_1/hls/{TS}/batch_1.ts"
    registered = yaml.safe_load((run / "replicas.out.yml").read_text())["replicas"]
    assert {r["lfn"] for r in registered} == {
        "predictions_all.json",
        "predictions_sensor_1.json",
        "predictions_sensor_2.json",
        *(f"png/sensor_{s}/{TS}/batch_{b}.png" for s in (1, 2) for b in (1, 2, 3)),
    }
    # nothing HTCondor brought back is left behind
    left = [
        p.name
        for p in (run / "htcondor" / "nodes").rglob("*")
        if re.search(r"\.(o\d+|r\d+\.json)$", p.name)
    ]
    assert left == []
    st = json.loads(ferry("statistics", str(run), "--json").stdout)
    assert st["jobs"]["succeeded"] == len(jobs) and st["tasks"]["succeeded"] == len(jobs)
    assert status(run)["status"] == "success"


# --- nonsharedfs, staging through WebDAV ------------------------------------------------------


def test_seed_pipeline_nonsharedfs_through_webdav(
    tmp_path: Path,
    nginx_server,
    webdav_server,  # type: ignore[no-untyped-def]
    monkeypatch,
) -> None:
    (nginx_server.root / "pegasus").mkdir(exist_ok=True)
    (nginx_server.root / "pegasus" / "ns.html").write_text("a\nb\nc\n")
    wf = seed_pipeline(f"{nginx_server.url}/pegasus/ns.html")
    dav = webdav_server.url
    sc = SiteCatalog().add_sites(
        Site("condorpool")
        .add_directories(
            Directory(Directory.SHARED_SCRATCH, "/scratch").add_file_servers(
                FileServer(f"{dav}/scratch", Operation.ALL)
            )
        )
        .add_pegasus_profile(data_configuration="nonsharedfs"),
    )
    wf.add_site_catalog(sc)
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path, "-s", "condorpool")
    assert plan_doc(run)["options"]["htcondor"]["staging"] == {"nonsharedfs": 2}
    dag = check_dag(run)
    for node in dag.nodes.values():
        if node.noop:
            continue
        sub = expanded(run / "htcondor" / node.submit, node.vars)
        # only the node file (and the parents' output sums) go with the job; only the
        # records come back
        parents = [p for p in node.parents if not dag.nodes[p].noop]
        sums = [str(node_file(run, p).with_name(f"_ferry_sums_{p}.json")) for p in parents]
        first, *rest = file_list(sub.expand("transfer_input_files"))
        assert first == str(node_file(run, node.name)) and sorted(rest) == sorted(sums)
        assert file_list(sub.expand("transfer_output_files")) == ["_ferry_r0.json"]
    StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    result = simulate(run / "htcondor" / "pipeline.dag", tmp_path)
    assert result.failed == set() and result.final_post == 0
    assert (tmp_path / "outputs" / "count.txt").read_text() == "3 pegasus.html\n"
    (rec,) = records(run, "ID0000002")
    run_id = plan_doc(run)["options"]["run_id"]
    page = next(t for t in rec["transfers"] if t["direction"] == "input")
    assert page["source"].startswith(f"{dav.replace('webdav', 'http')}") or page[
        "source"
    ].startswith(dav)
    assert page["source"].endswith(f"/scratch/pipeline/{run_id}/pegasus.html")
    # the page went through WebDAV and the cleanup node removed it there
    assert not (webdav_server.root / "scratch" / "pipeline" / run_id / "pegasus.html").exists()
    assert status(run)["status"] == "success"


# --- retries, a failure, the rescue DAG, resubmission --------------------------------------


def test_retry_failure_rescue_and_resubmit(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    flaky_mark, fix = tmp_path / "flaky-ran", tmp_path / "fixed"
    wf = Workflow("rescue")
    wf.add_jobs(
        Job("sh", _id="first")
        .add_args("-c", "echo 1 > one.txt")
        .add_outputs(File("one.txt"), stage_out=False),
        Job("sh", _id="flaky")
        .add_args(
            "-c",
            f"if [ -e {flaky_mark} ]; then cat one.txt > two.txt; else touch {flaky_mark};"
            " echo boom >&2; exit 3; fi",
        )
        .add_inputs(File("one.txt"))
        .add_outputs(File("two.txt")),
        Job("sh", _id="broken")
        .add_args(
            "-c", f"test -e {fix} || {{ echo not-yet >&2; exit 9; }}; cat one.txt > three.txt"
        )
        .add_inputs(File("one.txt"))
        .add_outputs(File("three.txt"))
        .add_dagman_profile(retry=0),
        Job("sh", _id="last")
        .add_args("-c", "cat three.txt > four.txt")
        .add_inputs(File("three.txt"))
        .add_outputs(File("four.txt")),
    )
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path)
    dag = check_dag(run)
    assert dag.nodes["broken"].retry == 0

    standin = StandIn(monkeypatch)
    submit(run, standin)
    first = simulate(run / "htcondor" / "rescue.dag", tmp_path)
    assert first.failed == {"broken"} and first.futile >= {"last"}
    assert first.posts["flaky"] == [1, 0]  # the worker's code: the job failed
    assert first.posts["broken"] == [1]
    assert first.final_post == 1 and first.rescue is not None
    fl = records(run, "flaky")
    assert [(r["attempt"], r["status"], r["exit_code"]) for r in fl] == [
        (1, "failed", 3),
        (2, "succeeded", 0),
    ]
    assert "boom" in fl[0]["stderr_tail"]
    assert [e["event"] for e in journal(run) if e["job"] == "flaky"] == [
        "started",
        "failed",
        "retry",
        "started",
        "succeeded",
    ]

    st = status(run)
    assert st["status"] == "failure"
    assert st["counts"]["succeeded"] == 2 and st["counts"]["failed"] == 1
    assert st["counts"]["unready"] == 1 and st["failed"][0]["id"] == "broken"
    res = ferry("analyze", str(run))
    assert res.returncode == 2
    broken = res.stdout.split("=broken=")[1]
    assert "exit code: 9" in broken and "not-yet" in broken
    assert f"record: {run}/records/broken.1.json" in broken
    res = ferry("statistics", str(run))
    assert "Tasks          2         1       1           4         1         4" in res.stdout
    assert "Jobs           2         1       1           4         1         4" in res.stdout

    # fixed: submitted again, DAGMan runs the rescue DAG: what succeeded does not run again
    fix.touch()
    out = submit(run, standin, capsys=capsys)
    assert f"Resubmitting from the rescue DAG {first.rescue}" in out
    filename, options, cwd = standin.from_dag_calls[-1]
    assert filename == str(run / "htcondor" / "rescue.dag") and cwd == str(run / "htcondor")
    assert options["AutoRescue"] == 1 and "Force" not in options
    assert standin.submitted[-1]["universe"] == "scheduler"
    assert journal(run)[-1]["rescue"] == first.rescue.name
    assert status(run)["status"] == "running"
    second = simulate(run / "htcondor" / "rescue.dag", tmp_path)
    assert second.failed == set() and second.final_post == 0
    assert set(second.runs) == {"broken", "last"}
    assert [(r["attempt"], r["status"]) for r in records(run, "broken")] == [
        (1, "failed"),
        (2, "succeeded"),
    ]
    assert (tmp_path / "outputs" / "four.txt").read_text() == "1\n"
    st = status(run)
    assert st["status"] == "success" and st["counts"]["succeeded"] == 4
    ok(ferry("analyze", str(run)))
    st = json.loads(ferry("statistics", str(run), "--json").stdout)
    assert st["jobs"]["succeeded"] == 4 and st["jobs"]["retries"] == 2

    # --force ignores the rescue DAG
    submit(run, standin, "--force")
    assert standin.from_dag_calls[-1][1]["Force"] is True


# --- clusters ------------------------------------------------------------------------------------


def test_cluster_is_one_node_and_each_member_has_its_record(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tc = TransformationCatalog().add_transformations(
        Transformation("part", site="local", pfn="/bin/sh").add_pegasus_profile(clusters_size=3),
        Transformation("merge", site="local", pfn="/bin/sh"),
    )
    wf = Workflow("clustered").add_transformation_catalog(tc)
    parts = []
    for i in range(6):
        f = File(f"part{i}")
        wf.add_jobs(
            Job("part", _id=f"p{i}")
            .add_args("-c", f"echo {i} > part{i}")
            .add_outputs(f, stage_out=False)
        )
        parts.append(f)
    wf.add_jobs(
        Job("merge", _id="m")
        .add_args("-c", "cat " + " ".join(f"part{i}" for i in range(6)) + " > all")
        .add_inputs(*parts)
        .add_outputs(File("all"))
    )
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path)
    dag = check_dag(run)
    clusters = [j for j in plan_doc(run)["jobs"] if j.get("members")]
    assert len(clusters) == 2
    node = dag.nodes[node_names_of(run)[clusters[0]["id"]]]
    sub = expanded(run / "htcondor" / node.submit, node.vars)
    assert file_list(sub.expand("transfer_output_files")) == [
        "_ferry_o0",
        "_ferry_o1",
        "_ferry_o2",
        "_ferry_r0.json",
        "_ferry_r1.json",
        "_ferry_r2.json",
    ]
    StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    result = simulate(run / "htcondor" / "clustered.dag", tmp_path)
    assert result.failed == set()
    assert len(result.runs) == 3  # two clusters and the merge: three jobs for seven tasks
    assert (tmp_path / "outputs" / "all").read_text() == "".join(f"{i}\n" for i in range(6))
    for i in range(6):
        (rec,) = records(run, f"p{i}")
        assert rec["status"] == "succeeded"
    st = json.loads(ferry("statistics", str(run), "--json").stdout)
    assert st["tasks"]["succeeded"] == 7 and st["jobs"]["succeeded"] == 3


# --- the profile mapping, names, and what cannot be transferred ----------------------------


def test_submit_commands_map_profiles_as_pegasus_does() -> None:
    warnings: list[str] = []
    d = submit_commands(
        {
            "condor": {
                "request_memory": "4096",  # an explicit condor key wins over pegasus.memory
                "+ProjectName": '"Orcasound"',
                "My.JobDurationCategory": '"Medium"',
                "Requirements": "HasSingularity",
                "accounting_group_user": "alice",
                "priority": "5",
                "universe": "container",
                "arguments": "ignored",
            },
            "pegasus": {"memory": "1024"},
        },
        Res(cpus=4, memory_mb=1024, disk_mb=10, gpus=2),
        ep_python="/opt/ferry/bin/python",
        condor_dir="/runs/r1/htcondor",
        workflow="wf",
        run_id="r1",
        warnings=warnings,
    )
    sub = htcondor2.Submit(d)
    assert sub["request_cpus"] == "4" and sub["request_memory"] == "4096"
    assert sub["request_disk"] == "10240" and sub["request_gpus"] == "2"
    assert sub["universe"] == "container" and sub["priority"] == "5"
    assert sub["Requirements"] == "HasSingularity" and "requirements" not in d
    assert classad2.ExprTree(sub["MY.ProjectName"]).eval() == "Orcasound"
    assert classad2.ExprTree(sub["MY.JobDurationCategory"]).eval() == "Medium"
    assert sub["accounting_group_user"] == "alice"
    assert condor_args(sub["arguments"]) == [
        "-m",
        "ferry.planner.condor_node",
        "$(ferry_node).json",
    ]
    assert any("'arguments' is ignored" in w for w in warnings)
    text = str(sub)
    assert 'MY.ProjectName = "Orcasound"' in text and text.rstrip().endswith("queue")


def test_node_names_are_dagman_safe_and_unique() -> None:
    names = node_names(["a.b", "a_b", "PARENT", "x+y", "job:1", "ok-1"], {"ferry_final"})
    assert names == {
        "a.b": "a_b",
        "a_b": "a_b_2",
        "PARENT": "n_PARENT",
        "x+y": "x_y",
        "job:1": "job_1",
        "ok-1": "ok-1",
    }


def test_inputs_with_one_name_and_plan_errors(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "same.txt", tmp_path / "b" / "same.txt"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text(p.parent.name)
    from Pegasus.api import ReplicaCatalog

    rc = (
        ReplicaCatalog()
        .add_replica("local", "x/same.txt", str(a))
        .add_replica("local", "y/same.txt", str(b))
    )
    wf = Workflow("names").add_replica_catalog(rc)
    wf.add_jobs(
        Job("cat", _id="j")
        .add_args("x/same.txt", "y/same.txt")
        .add_inputs(File("x/same.txt"), File("y/same.txt"))
        .set_stdout(File("out"))
    )
    wf.write(str(tmp_path / "workflow.yml"))
    res = ferry("plan", "workflow.yml", "--dir", "run", "--backend", "htcondor", cwd=tmp_path)
    ok(res)
    assert "has the same name 'same.txt'" in res.stderr
    spec = json.loads(node_file(tmp_path / "run", "j").read_text())["specs"][0]
    srcs = {i["lfn"]: i["sources"][0]["url"] for i in spec["inputs"]}
    # one comes by file transfer, the other (same basename) is left to the worker
    first, second = sorted(srcs, key=lambda lfn: "${" not in srcs[lfn])
    assert srcs[first] == "file://${_CONDOR_SCRATCH_DIR}/same.txt"
    assert srcs[second] == f"file://{a if second.startswith('x/') else b}"
    bad = ferry(
        "plan",
        "workflow.yml",
        "--dir",
        "run2",
        "--backend",
        "htcondor",
        "--ep-python",
        "python3",
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "must be an absolute path" in bad.stderr
    bad = ferry("plan", "workflow.yml", "--dir", "run3", "--submit", cwd=tmp_path)
    assert bad.returncode == 2 and "--submit needs --backend htcondor" in bad.stderr


# --- submission with the real bindings, and monitoring from DAGMan's files --------------------


def test_submit_with_the_real_bindings_reports_what_is_missing(tmp_path: Path) -> None:
    """The real htcondor2: without condor_dagman, Submit.from_dag fails; ferry says so."""
    (tmp_path / "workflow.yml").write_text("")
    wf = Workflow("real")
    wf.add_jobs(Job("true", _id="t"))
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path)
    res = ferry("submit", str(run))
    assert res.returncode == 1
    assert "HTCondor did not take the DAG" in res.stderr and "condor_dagman" in res.stderr
    assert not any(e["event"] == "workflow-started" for e in journal(run))
    res = ferry(
        "plan", "workflow.yml", "--dir", "run2", "--backend", "htcondor", "--submit", cwd=tmp_path
    )
    assert res.returncode == 1 and "condor_dagman" in res.stderr
    local = ferry("submit", str(tmp_path / "nope"))
    assert local.returncode == 2


def test_status_reads_dagmans_node_status_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """DAGMan cannot run here: the node status file is written by the test, in the format
    DAGMan documents (ClassAds; NodeStatus 1 ready, 3 submitted, 4 post, 5 done)."""
    wf = Workflow("watch")
    wf.add_jobs(*(Job("true", _id=f"j{i}") for i in range(4)))
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path)
    StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    assert status(run)["counts"]["unready"] == 4
    ts = int(journal(run)[-1]["t"]) + 1

    def node(name: str, st: int, details: str = "") -> str:
        return (
            f'[ Type = "NodeStatus"; Node = "{name}"; NodeStatus = {st};'
            f' StatusDetails = "{details}"; RetryCount = 0; JobProcsQueued = 0; ]'
        )

    (run / "htcondor" / "watch.dag.status").write_text(
        "\n".join(
            [
                f'[ Type = "DagStatus"; DagFiles = {{ "watch.dag" }}; Timestamp = {ts}; DagStatus = 3;'
                " NodesTotal = 5; NodesDone = 1; NodesQueued = 2; NodesPost = 1; NodesFailed = 0; ]",
                node("j0", 5),
                node("j1", 3, "running"),
                node("j2", 3, "idle"),
                node("j3", 4),
                f'[ Type = "StatusEnd"; EndTime = {ts}; NextUpdate = {ts + 30}; ]',
            ]
        )
    )
    st = status(run)
    assert st["status"] == "running"
    assert st["counts"]["succeeded"] == 1 and st["counts"]["running"] == 2
    assert st["counts"]["queued"] == 1


def test_post_script_for_a_node_job_removed_from_the_queue(tmp_path: Path) -> None:
    """DAGMan runs the POST script with $RETURN -1002 when a node's job was removed from
    the queue (say, held too long): no record came back; the attempt fails."""
    wf = Workflow("gone")
    wf.add_jobs(Job("true", _id="t"))
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path)
    node = dag_of(run).nodes["t"]
    (node_file(run, "t").parent / "t.err").write_text("held: input missing\n")
    macros = {"$JOB": "t", "$RETURN": "-1002", "$RETRY": "0", "$MAX_RETRIES": "1", "$JOBID": "7.0"}
    assert run_post(run / "htcondor", node.post, macros) == 1
    ev = [e for e in journal(run) if e["job"] == "t"]
    assert [(e["event"], e["attempt"]) for e in ev] == [("started", 1), ("failed", 1), ("retry", 2)]
    assert ev[1]["exit"] == -1002 and ev[0]["jobid"] == "7.0"
    data = json.loads(ferry("analyze", str(run), "--json").stdout)
    (f,) = data["failed"]
    assert f["record"] is None and f"stderr: {node_file(run, 't').parent / 't.err'}" in f["reason"]


def test_no_output_check_with_integrity_checking_none(tmp_path: Path) -> None:
    """pegasus.integrity.checking = none: the POST script puts a changed output in place."""
    wf = Workflow("unchecked")
    wf.add_jobs(
        Job("sh", _id="w").add_args("-c", "echo genuine > result.txt").add_outputs(
            File("result.txt")
        )
    )
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path, "-D", "pegasus.integrity.checking=none")
    node = dag_of(run).nodes["w"]
    assert run_job(run / "htcondor", node, tmp_path).code == 0
    (node_file(run, "w").parent / "w.o0").write_text("tampered\n")
    macros = {"$JOB": "w", "$RETURN": "0", "$RETRY": "0", "$MAX_RETRIES": "1", "$JOBID": "1.0"}
    assert run_post(run / "htcondor", node.post, macros) == 0
    assert (tmp_path / "outputs" / "result.txt").read_text() == "tampered\n"


def test_an_output_changed_in_transfer_fails_the_attempt(tmp_path: Path) -> None:
    """The POST script checks each condorio output against the sha256 the worker recorded
    on the execute point before it puts it in place."""
    wf = Workflow("tamper")
    wf.add_jobs(
        Job("sh", _id="w")
        .add_args("-c", "echo genuine > result.txt")
        .add_outputs(File("result.txt"))
    )
    wf.write(str(tmp_path / "workflow.yml"))
    run = plan_condor(tmp_path)
    node = dag_of(run).nodes["w"]
    job = run_job(run / "htcondor", node, tmp_path)
    assert job.code == 0 and job.held is None
    returned = node_file(run, "w").parent / "w.o0"
    assert returned.read_text() == "genuine\n"
    returned.write_text("tampered\n")  # as if the bytes changed on the way back
    macros = {"$JOB": "w", "$RETURN": "0", "$RETRY": "0", "$MAX_RETRIES": "1", "$JOBID": "1.0"}
    assert run_post(run / "htcondor", node.post, macros) == 4
    assert not (tmp_path / "outputs" / "result.txt").exists()
    (rec,) = records(run, "w")
    assert rec["status"] == "failed" and rec["failed_step"] == "integrity"
    assert rec["failures"][-1]["expected"] == sha(b"genuine\n")  # bare hex, as the worker's
    assert rec["failures"][-1]["actual"] == sha(b"tampered\n")
    assert [e["event"] for e in journal(run) if e["job"] == "w"] == ["started", "failed", "retry"]
    # DAGMan's retry: the job runs again and this time the output arrives intact
    assert run_job(run / "htcondor", node, tmp_path).code == 0
    macros["$RETRY"] = "1"
    assert run_post(run / "htcondor", node.post, macros) == 0
    assert (tmp_path / "outputs" / "result.txt").read_text() == "genuine\n"
    assert [r["attempt"] for r in records(run, "w")] == [1, 2]


# --- intermediate files: checked against what their producer's record gave ---------------------


def test_an_intermediate_file_changed_between_nodes_fails_its_consumer(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch
) -> None:
    """As PegasusLite checks intermediate files against the parents' .meta: each node's
    POST script writes the sums of what it staged out, its children's jobs bring them in
    and check the files they read against them."""
    intermediate_workflow(tmp_path, str(tmp_path / "run") + "/**/a.txt")
    run = plan_condor(tmp_path)
    StandIn(monkeypatch)
    assert cli.main(["submit", str(run)]) == 0
    (tmp_path / "exec").mkdir()
    result = simulate(run / "htcondor" / "inter.dag", tmp_path / "exec")
    assert result.failed == {"use"}, result
    [rec] = records(run, "use")
    [bad] = [t for t in rec["transfers"] if t["lfn"] == "a.txt"]
    assert bad["expected_sha256"] == f"sha256:{sha(b'good')}" and not bad["ok"]
    assert not (tmp_path / "outputs" / "out.txt").exists()
