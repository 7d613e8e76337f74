"""Planning: workflows written with pegasus-wms-api -> run directories of worker job specs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from Pegasus.api import (  # isort: skip
    Container,
    Directory,
    File,
    FileServer,
    Job,
    Namespace,
    Operation,
    ReplicaCatalog,
    Site,
    SiteCatalog,
    SubWorkflow,
    Transformation,
    TransformationCatalog,
    Workflow,
)

from ferry.planner.pegasus import load_workflow
from ferry.planner.plan import PlanError, PlanOptions, plan_workflow
from ferry.plugins.errors import ConfigError

from .helpers import ferry, plan_doc, script, sha, specs


def plan(tmp: Path, wf: Workflow, run: str = "run", **opts) -> Path:  # type: ignore[no-untyped-def]
    path = tmp / f"wf-{wf.name}.yml"
    wf.write(str(path))
    model = load_workflow(path, cwd=tmp)
    rd = tmp / run
    opts.setdefault("output_dir", str(tmp / "outputs"))
    plan_workflow(model, PlanOptions(run_dir=str(rd), **opts))
    return rd


def plan_error(tmp: Path, wf: Workflow, **opts) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        plan(tmp, wf, **opts)
    assert not (tmp / "run" / "plan.json").exists()
    return str(info.value)


# --- a diamond, dependencies from files only ---------------------------------------------


@pytest.fixture
def diamond(tmp_path: Path) -> tuple[Workflow, bytes]:
    data = b"diamond input\n"
    (tmp_path / "f.a").write_bytes(data)
    keg = script(tmp_path / "keg.py", "import sys\n")
    rc = ReplicaCatalog()
    rc.add_replica("web", "f.a", "http://127.0.0.1:9/f.a")
    rc.add_replica("local", "f.a", str(tmp_path / "f.a"), checksum={"sha256": sha(data)})
    tc = TransformationCatalog().add_transformations(
        Transformation(
            "preprocess",
            site="local",
            pfn=str(keg),
            is_stageable=True,
            checksum={"sha256": sha(keg.read_bytes())},
        ),
        Transformation("findrange", site="local", pfn="/bin/sh", is_stageable=False),
        Transformation("analyze", site="condorpool", pfn="/bin/cat", is_stageable=False),
    )
    fa, fb1, fb2, fc1, fc2, fd = (File(n) for n in ("f.a", "f.b1", "f.b2", "f.c1", "f.c2", "f.d"))
    wf = Workflow("diamond", infer_dependencies=False)  # the planner must infer the edges
    wf.add_replica_catalog(rc).add_transformation_catalog(tc)
    wf.add_jobs(
        Job("preprocess", _id="pre")
        .add_args("-i", fa, "-o", fb1, fb2)
        .add_inputs(fa)
        .add_outputs(fb1, fb2, stage_out=False, register_replica=False),
        Job("findrange", _id="left")
        .add_args("-c", "cp f.b1 f.c1")
        .add_inputs(fb1)
        .add_outputs(fc1, stage_out=False),
        Job("findrange", _id="right")
        .add_args("-c", "cp f.b2 f.c2")
        .add_inputs(fb2)
        .add_outputs(fc2, stage_out=False),
        Job("analyze", _id="ana").add_args(fc1, fc2).add_inputs(fc1, fc2).set_stdout(fd),
    )
    return wf, data


def test_diamond_edges_from_files_and_specs(tmp_path: Path, diamond) -> None:  # type: ignore[no-untyped-def]
    wf, data = diamond
    run = plan(tmp_path, wf)
    doc = plan_doc(run)
    jobs = {j["id"]: j for j in doc["jobs"]}
    assert [j["id"] for j in doc["jobs"]][0] == "pre" and [j["id"] for j in doc["jobs"]][-1] == "ana"
    assert jobs["pre"].get("parents", []) == []
    assert jobs["left"]["parents"] == ["pre"] and jobs["right"]["parents"] == ["pre"]
    assert sorted(jobs["ana"]["parents"]) == ["left", "right"]
    assert jobs["ana"]["retries"] == 1  # Pegasus's default dagman.retry

    sp = specs(run)
    assert set(sp) == {"pre", "left", "right", "ana"}
    for s in sp.values():
        assert s.records_dir == str(run / "records")
        assert s.labels["workflow"] == "diamond"
    scratch = f"file://{run}/scratch"

    pre = sp["pre"]
    exe, fa = pre.inputs[0], pre.inputs[1]
    assert pre.executable == "preprocess" and exe.lfn == "preprocess" and exe.executable
    assert exe.sources[0].url == f"file://{tmp_path}/keg.py"
    assert exe.sha256 == sha((tmp_path / "keg.py").read_bytes())
    assert fa.lfn == "f.a" and fa.sha256 == sha(data)
    # every replica, file:// first, then the others
    assert [(s.url, s.priority) for s in fa.sources] == [
        (f"file://{tmp_path}/f.a", 100.0),
        ("http://127.0.0.1:9/f.a", 10.0),
    ]
    assert pre.arguments == ["-i", "f.a", "-o", "f.b1", "f.b2"]
    # intermediate files go to staging only (stageOut false)
    assert {o.lfn: [d.url for d in o.destinations] for o in pre.outputs} == {
        "f.b1": [f"{scratch}/f.b1"],
        "f.b2": [f"{scratch}/f.b2"],
    }

    left = sp["left"]
    assert left.executable == "/bin/sh" and left.arguments == ["-c", "cp f.b1 f.c1"]
    assert [(i.lfn, [s.url for s in i.sources], i.sha256) for i in left.inputs] == [
        ("f.b1", [f"{scratch}/f.b1"], None)
    ]

    ana = sp["ana"]
    # installed at another site only: used in place, with a warning in the plan
    assert ana.executable == "/bin/cat"
    assert any("analyze" in w and "condorpool" in w for w in doc["warnings"])
    assert ana.stdout == "f.d"
    # a staged-out output nobody reads goes to the output directory only
    assert [(o.lfn, [d.url for d in o.destinations]) for o in ana.outputs] == [
        ("f.d", [f"file://{tmp_path}/outputs/f.d"])
    ]
    assert jobs["ana"]["register"] == [["f.d", f"file://{tmp_path}/outputs/f.d", "local"]]


def test_profiles_resources_env_timeouts_container(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(b"not really a tar")
    tc = TransformationCatalog()
    tc.add_containers(
        Container(
            "centos",
            Container.DOCKER,
            f"file://{image}",
            mounts=["/srv/ref:/ref:ro"],
            checksum={"sha256": sha(b"not really a tar")},
        )
    )
    tc.add_transformations(
        Transformation("tool", site="local", pfn="/usr/bin/env", container="centos")
        .add_pegasus_profile(cores=4)
        .add_env(FROM_TC="tc"),
        Transformation("plain", site="local", pfn="/bin/true"),
    )
    wf = Workflow("prof").add_transformation_catalog(tc)
    wf.add_env(WF_LEVEL="wf", FROM_TC="wf")
    wf.add_jobs(
        Job("tool", _id="t1")
        .add_pegasus_profile(memory="2 GB", cores=2, checkpoint_time=1, max_walltime=3)
        .add_env(JOB_LEVEL="job")
        .add_profiles(Namespace.DAGMAN, retry=4),
        Job("plain", _id="p1")
        .add_condor_profile(request_cpus=3, request_memory="1 GB", request_disk="2 GB")
        .add_pegasus_profile(cores=8, max_walltime=2, gpus=1),
        Job("plain", _id="p2").add_pegasus_profile(max_walltime=10),
    )
    run = plan(tmp_path, wf, retries=0)
    sp = specs(run)
    t1 = sp["t1"]
    # transformation-catalog profiles override the job's (Pegasus's priority)
    assert t1.resources.cpus == 4 and t1.resources.memory_mb == 2048
    assert t1.environment == {"WF_LEVEL": "wf", "FROM_TC": "tc", "JOB_LEVEL": "job"}
    # checkpoint.time (minutes): TERM then; KILL half the rest of maxwalltime later
    assert t1.timeout == 60.0 and t1.kill_grace == 60.0
    assert t1.container is not None
    assert t1.container.image == f"file://{image}"
    assert t1.container.kind == "docker-archive"  # a Pegasus docker image file is a `docker save` tar
    assert t1.container.sha256 == sha(b"not really a tar")
    assert t1.container.mounts == ["/srv/ref:/ref:ro"]
    p1 = sp["p1"]
    # condor's request_* win over pegasus' cores/memory
    assert (p1.resources.cpus, p1.resources.memory_mb, p1.resources.disk_mb, p1.resources.gpus) == (
        3,
        1024,
        2048,
        1,
    )
    # maxwalltime alone: TERM 10 s before it for short jobs
    assert (p1.timeout, p1.kill_grace) == (110.0, 10.0)
    assert (sp["p2"].timeout, sp["p2"].kill_grace) == (300.0, 300.0)
    retries = {j["id"]: j["retries"] for j in plan_doc(run)["jobs"]}
    assert retries == {"t1": 4, "p1": 0, "p2": 0}


def test_no_transformation_catalog_uses_path_or_an_input(tmp_path: Path) -> None:
    tool = script(tmp_path / "mytool", "print('hi')\n")
    rc = ReplicaCatalog().add_replica("local", "mytool", str(tool))
    wf = Workflow("notc").add_replica_catalog(rc)
    wf.add_jobs(
        Job("echo", _id="a").add_args("hello"),
        Job("mytool", _id="b").add_inputs(File("mytool")),
    )
    run = plan(tmp_path, wf)
    sp = specs(run)
    assert sp["a"].executable == "echo" and sp["a"].inputs == []
    assert sp["b"].executable == "mytool"
    assert sp["b"].inputs[0].lfn == "mytool" and sp["b"].inputs[0].executable


# --- bad input ------------------------------------------------------------------------


def test_cycle_names_the_jobs(tmp_path: Path) -> None:
    wf = Workflow("cyc")
    a, b, c, d = (Job("true", _id=i) for i in ("a", "b", "c", "d"))
    wf.add_jobs(a, b, c, d)
    wf.add_dependency(a, children=[b])
    wf.add_dependency(b, children=[c])
    wf.add_dependency(c, children=[a, d])
    msg = plan_error(tmp_path, wf)
    assert "dependency cycle" in msg
    cycle = msg.split("dependency cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]


def test_cycle_through_files(tmp_path: Path) -> None:
    x, y = File("x"), File("y")
    wf = Workflow("fcyc", infer_dependencies=False)
    wf.add_jobs(
        Job("true", _id="p").add_inputs(y).add_outputs(x),
        Job("true", _id="q").add_inputs(x).add_outputs(y),
    )
    msg = plan_error(tmp_path, wf)
    assert "dependency cycle" in msg and "p" in msg and "q" in msg


def test_undefined_transformation_with_a_catalog(tmp_path: Path) -> None:
    tc = TransformationCatalog().add_transformations(
        Transformation("known", site="local", pfn="/bin/true")
    )
    wf = Workflow("undef").add_transformation_catalog(tc)
    wf.add_jobs(Job("known", _id="ok"), Job("unknown", _id="bad"))
    msg = plan_error(tmp_path, wf)
    assert "job bad: transformation 'unknown' is not in the transformation catalog" in msg


def test_undefined_transformation_without_a_catalog(tmp_path: Path) -> None:
    wf = Workflow("undef2")
    wf.add_jobs(Job("no-such-program-ferry", _id="j1"))
    msg = plan_error(tmp_path, wf)
    assert "j1" in msg and "no-such-program-ferry" in msg and "PATH" in msg


def test_input_nobody_produces(tmp_path: Path) -> None:
    wf = Workflow("orphan")
    wf.add_jobs(
        Job("cat", _id="reader").add_inputs(File("missing.dat")).add_outputs(File("o")),
        Job("cat", _id="fine").add_inputs(File("o")),
    )
    msg = plan_error(tmp_path, wf)
    assert "job reader: input 'missing.dat' is not produced by any job" in msg
    assert "fine" not in msg


def test_two_producers(tmp_path: Path) -> None:
    wf = Workflow("dup")
    wf.add_jobs(Job("true", _id="a").add_outputs(File("o")), Job("true", _id="b").add_outputs(File("o")))
    msg = plan_error(tmp_path, wf)
    assert "'o' is an output of more than one job: a and b" in msg


def test_cli_reports_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    wf = Workflow("cli-bad")
    wf.add_jobs(Job("cat", _id="reader").add_inputs(File("nowhere")))
    wf.write(str(tmp_path / "wf.yml"))
    res = ferry("plan", "wf.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 2
    assert "ferry plan: error:" in res.stderr and "reader" in res.stderr and "nowhere" in res.stderr
    assert not (tmp_path / "run").exists()
    res = ferry("run", "wf.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 2 and "nowhere" in res.stderr


def test_sub_workflows_get_a_warning(tmp_path: Path) -> None:
    wf = Workflow("subwf")
    wf.add_jobs(Job("true", _id="a"), SubWorkflow("inner.yml", _id="inner"))
    (tmp_path / "inner.yml").write_text("x")
    rc = ReplicaCatalog().add_replica("local", "inner.yml", str(tmp_path / "inner.yml"))
    wf.add_replica_catalog(rc)
    run = plan(tmp_path, wf)
    doc = plan_doc(run)
    assert [j["id"] for j in doc["jobs"]] == ["a"]
    assert any("inner" in w and "not supported" in w for w in doc["warnings"])


# --- sites ----------------------------------------------------------------------------


def site_catalog(tmp: Path) -> SiteCatalog:
    scratch, storage = tmp / "shared-scratch", tmp / "storage"
    local = Site("local").add_directories(
        Directory(Directory.SHARED_SCRATCH, str(scratch)).add_file_servers(
            FileServer(f"file://{scratch}", Operation.ALL)
        ),
        Directory(Directory.LOCAL_STORAGE, str(storage)).add_file_servers(
            FileServer(f"file://{storage}", Operation.ALL)
        ),
    )
    archive = Site("archive").add_directories(
        Directory(Directory.SHARED_STORAGE, "/archive").add_file_servers(
            FileServer("https://archive.example.org/data", Operation.ALL)
        )
    )
    stage = Site("stage").add_directories(
        Directory(Directory.SHARED_SCRATCH, "/stage").add_file_servers(
            FileServer("webdav://127.0.0.1:1/stage", Operation.GET),
            FileServer("webdav://127.0.0.1:1/stage-put", Operation.PUT),
        )
    )
    return SiteCatalog().add_sites(local, archive, stage, Site("condorpool"))


def two_jobs() -> Workflow:
    wf = Workflow("sites")
    wf.add_jobs(
        Job("true", _id="a").add_outputs(File("mid"), stage_out=False),
        Job("true", _id="b").add_inputs(File("mid")).add_outputs(File("final")),
    )
    return wf


def test_site_catalog_staging_and_output_site(tmp_path: Path) -> None:
    wf = two_jobs().add_site_catalog(site_catalog(tmp_path))
    run = plan(tmp_path, wf, sites=["condorpool"], output_dir=None)
    doc = plan_doc(run)
    layout = doc["options"]["layout"]
    run_id = doc["options"]["run_id"]
    stage = f"file://{tmp_path}/shared-scratch/sites/{run_id}"
    assert layout["staging"]["condorpool"]["put"] == stage
    sp = specs(run)
    assert [d.url for d in sp["a"].outputs[0].destinations] == [f"{stage}/mid"]
    assert sp["b"].inputs[0].sources[0].url == f"{stage}/mid"
    assert [d.url for d in sp["b"].outputs[0].destinations] == [f"file://{tmp_path}/storage/final"]
    assert all(j["site"] == "condorpool" for j in doc["jobs"])


def test_output_site_and_staging_site_by_url(tmp_path: Path) -> None:
    wf = two_jobs().add_site_catalog(site_catalog(tmp_path))
    run = plan(tmp_path, wf, output_sites=["archive"], staging_sites={"*": "stage"}, output_dir=None)
    sp = specs(run)
    run_id = plan_doc(run)["options"]["run_id"]
    assert sp["a"].outputs[0].destinations[0].url == f"webdav://127.0.0.1:1/stage-put/sites/{run_id}/mid"
    assert sp["b"].inputs[0].sources[0].url == f"webdav://127.0.0.1:1/stage/sites/{run_id}/mid"
    assert sp["b"].outputs[0].destinations[0].url == "https://archive.example.org/data/final"
    assert sp["b"].outputs[0].destinations[0].site == "archive"


def test_unknown_sites_are_errors(tmp_path: Path) -> None:
    wf = two_jobs().add_site_catalog(site_catalog(tmp_path))
    assert "compute site 'nowhere'" in plan_error(tmp_path, wf, sites=["nowhere"])
    assert "output site 'gone'" in plan_error(tmp_path, wf, output_sites=["gone"], output_dir=None)


def test_default_site_without_catalog(tmp_path: Path) -> None:
    run = plan(tmp_path, two_jobs())
    sp = specs(run)
    assert sp["a"].outputs[0].destinations[0].url == f"file://{run}/scratch/mid"
    assert sp["b"].outputs[0].destinations[0].url == f"file://{tmp_path}/outputs/final"


# --- data reuse ----------------------------------------------------------------------


def chain() -> Workflow:
    """a -> b -> c, plus d (reads a's file, writes its own staged-out output)."""
    wf = Workflow("chain")
    wf.add_jobs(
        Job("true", _id="a").add_outputs(File("a.out"), stage_out=False),
        Job("true", _id="b").add_inputs(File("a.out")).add_outputs(File("b.out"), stage_out=False),
        Job("true", _id="c").add_inputs(File("b.out")).add_outputs(File("c.out")),
        Job("true", _id="d").add_inputs(File("a.out")).add_outputs(File("d.out")),
    )
    return wf


def test_reuse_prunes_jobs_and_ancestors_with_no_purpose(tmp_path: Path) -> None:
    wf = chain()
    rc = ReplicaCatalog().add_replica("local", "c.out", str(tmp_path / "c.out"))
    wf.add_replica_catalog(rc)
    run = plan(tmp_path, wf)
    doc = plan_doc(run)
    # c's output exists; b only fed c; a still feeds d
    assert sorted(doc["pruned"]) == ["b", "c"]
    assert [j["id"] for j in doc["jobs"]] == ["a", "d"]
    forced = plan(tmp_path, wf, run="forced", force=True)
    assert sorted(j["id"] for j in plan_doc(forced)["jobs"]) == ["a", "b", "c", "d"]


def test_reuse_from_the_output_site(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "d.out").write_text("old")
    (tmp_path / "outputs" / "c.out").write_text("old")
    run = plan(tmp_path, chain())  # not asked to look there
    assert plan_doc(run)["pruned"] == []
    run = plan(tmp_path, chain(), run="reuse", reuse_output_site=True)
    assert sorted(plan_doc(run)["pruned"]) == ["a", "b", "c", "d"]


def test_reuse_keeps_a_parent_whose_staged_out_output_is_missing(tmp_path: Path) -> None:
    wf = Workflow("keep")
    wf.add_jobs(
        Job("true", _id="a").add_outputs(File("a.out")),  # stageOut: wanted at the output site
        Job("true", _id="b").add_inputs(File("a.out")).add_outputs(File("b.out")),
    )
    wf.add_replica_catalog(ReplicaCatalog().add_replica("local", "b.out", "/x/b.out"))
    run = plan(tmp_path, wf)
    assert plan_doc(run)["pruned"] == ["b"]
    assert [j["id"] for j in plan_doc(run)["jobs"]] == ["a"]


def test_reused_file_is_read_from_the_replica_catalog(tmp_path: Path) -> None:
    wf = chain()
    wf.add_replica_catalog(
        ReplicaCatalog().add_replica("local", "a.out", str(tmp_path / "a.out"), checksum={"sha256": "ab" * 32})
    )
    run = plan(tmp_path, wf)
    assert plan_doc(run)["pruned"] == ["a"]
    sp = specs(run)
    assert sp["b"].inputs[0].sources[0].url == f"file://{tmp_path}/a.out"
    assert sp["b"].inputs[0].sha256 == "ab" * 32


# --- clustering ----------------------------------------------------------------------


def fan(n: int, **profile) -> Workflow:  # type: ignore[no-untyped-def]
    tc = TransformationCatalog().add_transformations(
        Transformation("work", site="local", pfn="/bin/true").add_pegasus_profile(**profile),
        Transformation("merge", site="local", pfn="/bin/true"),
    )
    wf = Workflow("fan").add_transformation_catalog(tc)
    wf.add_jobs(Job("work", _id="root").add_outputs(File("seed"), stage_out=False))
    merge = Job("merge", _id="merge")
    for i in range(n):
        out = File(f"part{i}")
        wf.add_jobs(Job("work", _id=f"w{i}").add_inputs(File("seed")).add_outputs(out, stage_out=False))
        merge.add_inputs(out)
    wf.add_jobs(merge)
    return wf


def test_clusters_size(tmp_path: Path) -> None:
    run = plan(tmp_path, fan(5, clusters_size=2))
    doc = plan_doc(run)
    ids = [j["id"] for j in doc["jobs"]]
    assert ids == ["root", "cluster_work_L1_1", "cluster_work_L1_2", "w4", "merge"]
    clusters = [j for j in doc["jobs"] if j.get("members")]
    assert [c["members"] for c in clusters] == [["w0", "w1"], ["w2", "w3"]]
    singles = [j["id"] for j in doc["jobs"] if not j.get("members")]
    merge = next(j for j in doc["jobs"] if j["id"] == "merge")
    assert set(merge["parents"]) == {c["id"] for c in clusters} | {s for s in singles if s.startswith("w")}
    for c in clusters:
        assert c["parents"] == ["root"]
        cl = json.loads((run / c["spec"]).read_text())
        assert cl["id"] == c["id"] and len(cl["members"]) == len(c["members"])
        for rel, member in zip(cl["members"], c["members"], strict=True):
            assert json.loads((run / rel).read_text())["id"] == member
    # every member still has its own spec
    assert set(specs(run)) == {"root", "merge"} | {f"w{i}" for i in range(5)}


def test_clusters_num_and_off(tmp_path: Path) -> None:
    doc = plan_doc(plan(tmp_path, fan(7, clusters_num=2)))
    clusters = [j for j in doc["jobs"] if j.get("members")]
    assert sorted(len(c["members"]) for c in clusters) == [3, 4]
    doc = plan_doc(plan(tmp_path, fan(7, clusters_num=2), run="off", cluster=False))
    assert not any(j.get("members") for j in doc["jobs"])


# --- cleanup --------------------------------------------------------------------------


def test_cleanup_actions(tmp_path: Path) -> None:
    wf = chain()
    doc = plan_doc(plan(tmp_path, wf))
    scratch = f"file://{tmp_path}/run/scratch"
    acts = {tuple(a["after"]): a["remove"] for a in doc["cleanup"]}
    # a.out is read by b and d: removed when a, b and d have succeeded
    assert acts[("a", "b", "d")] == [f"{scratch}/a.out"]
    assert acts[("b", "c")] == [f"{scratch}/b.out"]
    leaf = plan_doc(plan(tmp_path, chain(), run="leaf", cleanup="leaf"))
    assert [a["id"] for a in leaf["cleanup"]] == ["cleanup_leaf"]
    assert "after" not in leaf["cleanup"][0]
    assert sorted(leaf["cleanup"][0]["remove"]) == [f"file://{tmp_path}/leaf/scratch/a.out", f"file://{tmp_path}/leaf/scratch/b.out"]
    assert plan_doc(plan(tmp_path, chain(), run="none", cleanup="none")).get("cleanup", []) == []


def test_plan_refuses_an_existing_run_directory(tmp_path: Path) -> None:
    plan(tmp_path, chain())
    with pytest.raises(PlanError, match="already holds a plan"):
        plan(tmp_path, chain())


def test_plan_cli(tmp_path: Path) -> None:
    chain().write(str(tmp_path / "workflow.yml"))
    res = ferry("plan", "workflow.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "chain" / "run0001"
    assert "Planned 4 job(s)" in res.stdout and str(run) in res.stdout
    assert len(plan_doc(run)["jobs"]) == 4
    assert os.path.isdir(run / "records")


def test_several_compute_sites_and_the_site_selector(tmp_path: Path) -> None:
    sc = site_catalog(tmp_path).add_sites(Site("hpc"))
    tc = TransformationCatalog().add_transformations(
        Transformation("onhpc", site="hpc", pfn="/bin/true"),
        Transformation("anywhere", site="local", pfn="/bin/true", is_stageable=True),
    )
    wf = Workflow("multi").add_site_catalog(sc).add_transformation_catalog(tc)
    wf.add_jobs(
        Job("onhpc", _id="a"),
        Job("anywhere", _id="b"),
        Job("anywhere", _id="c").add_profiles(Namespace.SELECTOR, key="execution.site", value="hpc"),
    )
    run = plan(tmp_path, wf, sites=["condorpool", "hpc"])
    sites = {j["id"]: j["site"] for j in plan_doc(run)["jobs"]}
    assert sites == {"a": "hpc", "b": "condorpool", "c": "hpc"}
    assert specs(run)["c"].labels["site"] == "hpc"


def test_durations_as_pegasus_statistics_prints_them() -> None:
    from ferry.planner.statistics import format_duration

    assert format_duration(None) == "-"
    assert format_duration(9.0) == "9.0 secs"
    assert format_duration(0.234) == "0.23 secs"
    assert format_duration(63) == "1 min, 3 secs"
    assert format_duration(252) == "4 mins, 12 secs"
    assert format_duration(5 * 3600 + 120 + 7) == "5 hrs, 2 mins"
    assert format_duration(136 * 86400 + 9 * 3600 + 59) == "136 days, 9 hrs"
    assert format_duration(86400 + 2 * 3600) == "1 day, 2 hrs"


def test_output_replica_catalog_survives_a_torn_entry(tmp_path: Path) -> None:
    import yaml

    from ferry.planner.rundir import ReplicaWriter, read_replicas_out

    path = tmp_path / "replicas.out.yml"
    w = ReplicaWriter(str(path))
    w.add("a b.txt", "file:///o/a%20b.txt", "local", "ab" * 32)
    w.add("c", "s3://bucket/c", "osn", None)
    w.close()
    doc = yaml.safe_load(path.read_text())
    assert doc["pegasus"] == "5.0.4"
    assert [r["lfn"] for r in doc["replicas"]] == ["a b.txt", "c"]
    assert doc["replicas"][0]["checksum"] == {"sha256": "ab" * 32}
    with open(path, "a") as f:
        f.write('- lfn: "d"\n  pfns:\n  - site: "local"\n    pfn: "file:///o/')  # killed mid-write
    got = read_replicas_out(str(path))
    assert got == {"a b.txt": ("file:///o/a%20b.txt", "local", "ab" * 32), "c": ("s3://bucket/c", "osn", None)}
    # rewritten whole (as a resumed run does), pegasus-plan's catalog reader takes it
    ReplicaWriter(str(path)).rewrite(got)
    wf = Workflow("rcread")
    wf.add_jobs(Job("cat", _id="j").add_inputs(File("c")))
    wf.write(str(tmp_path / "rcread.yml"))
    model = load_workflow(tmp_path / "rcread.yml", replica_files=[str(path)], cwd=tmp_path)
    assert model.replica_catalog.entries["c"][0].pfn == "s3://bucket/c"
    assert model.replica_catalog.checksums["a b.txt"] == "ab" * 32


def test_lfns_checked_in_one_go_as_one_by_one() -> None:
    from ferry.planner.plan import _all_lfns_good, _bad_lfn

    cases = ["a", "/a", "", "..", "a/..", "a/../b", "..a", "a..", "a/..b", "b/..", "x\n", ".", "/"]
    for c in cases:
        for others in ([], ["ok"], ["ok", "..x"]):
            for lfns in (others + [c], [c] + others):
                assert _all_lfns_good(lfns) == (not any(_bad_lfn(x) for x in lfns)), lfns
    assert not _all_lfns_good(["a\x00b"])  # NUL inside: looked at one by one
