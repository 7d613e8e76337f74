"""Reading Pegasus 5 workflows and catalogs written by pegasus-wms-api itself."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from Pegasus.api import (  # isort: skip
    OS,
    Arch,
    Container,
    Directory,
    EventType,
    File,
    FileServer,
    Job,
    Namespace,
    Operation,
    Properties,
    ReplicaCatalog,
    Site,
    SiteCatalog,
    SubWorkflow,
    Transformation,
    TransformationCatalog,
    TransformationSite,
    Workflow,
)

from ferry.planner import yamlread
from ferry.planner.catalogs import replicas_for
from ferry.planner.model import (
    USE_CHECKPOINT,
    USE_INPUT,
    USE_OUTPUT,
)
from ferry.planner.pegasus import load_workflow, parse_workflow
from ferry.planner.properties import parse_properties
from ferry.plugins.errors import ConfigError

SHA_A = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"


# --- helpers ---------------------------------------------------------------------------


def seed_pipeline(url: str = "http://127.0.0.1:8080/index.html") -> Workflow:
    """The seed's pipeline example, with a URL on 127.0.0.1 instead of the public one."""
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


def both(path: Path, **kw):
    """Read ``path`` three ways: strict reader and batches, batches alone, whole document.

    They must agree.
    """
    from ferry.planner import pegasus

    fast = load_workflow(path, **kw)
    pegasus.STRICT = False
    try:
        batches = load_workflow(path, **kw)
    finally:
        pegasus.STRICT = True
    whole = load_workflow(path, fast=False, **kw)
    assert_same(fast, whole)
    assert_same(batches, whole)
    return fast


def assert_same(a, b) -> None:
    for f in dataclasses.fields(a):
        if f.name in ("source", "warnings"):
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name == "replica_catalog":
            va = (va.entries, [(p.pattern, r) for p, r in va.regex], va.checksums, va.metadata)
            vb = (vb.entries, [(p.pattern, r) for p, r in vb.regex], vb.checksums, vb.metadata)
        assert va == vb, f.name
    strip = lambda w: [x.split(": ", 1)[1] for x in w.warnings]  # noqa: E731
    assert strip(a) == strip(b)


def job(wf, jid):
    return wf.jobs[wf.job_index[jid]]


def uses_of(wf, j):
    return {wf.lfns[u.lfn]: u for u in j.uses}


def error_of(path: Path, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load_workflow(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- the seed pipeline ------------------------------------------------------------------


def test_seed_pipeline(tmp_path: Path) -> None:
    seed_pipeline().write(str(tmp_path / "workflow.yml"))
    wf = both(tmp_path / "workflow.yml", cwd=tmp_path)
    assert wf.name == "pipeline"
    assert [j.id for j in wf.jobs] == ["ID0000001", "ID0000002"]
    curl, wc = wf.jobs
    assert curl.name == "curl" and curl.transformation == "curl"
    assert curl.arguments == ["-o", "pegasus.html", "http://127.0.0.1:8080/index.html"]
    u = uses_of(wf, curl)["pegasus.html"]
    assert (u.type, u.stage_out, u.register_replica) == (USE_OUTPUT, False, False)
    assert wc.arguments == ["-l", "pegasus.html"]
    assert wf.lfns[wc.stdout] == "count.txt"
    wu = uses_of(wf, wc)
    assert wu["pegasus.html"].type == USE_INPUT
    assert (wu["count.txt"].type, wu["count.txt"].stage_out, wu["count.txt"].register_replica) == (
        USE_OUTPUT,
        True,
        True,
    )
    assert wf.children == [[1], []]
    assert wf.warnings == []
    assert wf.replica_catalog.entries == {}


def test_json_reads_like_yaml(tmp_path: Path) -> None:
    wf = seed_pipeline()
    wf.add_replica_catalog(ReplicaCatalog().add_replica("local", "in.txt", "/data/in.txt"))
    wf.write(str(tmp_path / "wf.yml"))
    wf.write(str(tmp_path / "wf.json"))
    a = load_workflow(tmp_path / "wf.yml", cwd=tmp_path)
    b = load_workflow(tmp_path / "wf.json", cwd=tmp_path)
    assert b.source.endswith("wf.json")
    assert_same(a, b)


# --- jobs in every detail ------------------------------------------------------------------


def rich_workflow() -> Workflow:
    fa, fb, fc = File("f.a"), File("f.b"), File("f.c")
    ck, log, err, inp = File("state.ckpt"), File("pre.log"), File("pre.err"), File("pre.in")
    pre = (
        Job("preprocess", _id="pre1", node_label="preprocess-step", namespace="demo", version="1.0")
        .add_args("-i", fa, "-o", fb, 5, 2.5, "a b")
        .add_inputs(fa, bypass_staging=True)
        .add_outputs(fb, stage_out=False, register_replica=False)
        .add_checkpoint(ck)
        .set_stdin(inp)
        .set_stdout(log, stage_out=True, register_replica=False)
        .set_stderr(err)
        .add_profiles(Namespace.DAGMAN, retry=3)
        .add_condor_profile(request_memory="4 GB", request_disk="10 GB", request_cpus=2)
        .add_profiles(Namespace.CONDOR, key="+ProjectName", value='"proj42"')
        .add_pegasus_profile(checkpoint_time=30, max_walltime=60, clusters_size=4)
        .add_env(OMP_NUM_THREADS=2, PATH="/usr/bin")
        .add_profiles(Namespace.GLOBUS, maxtime=10)
        .add_profiles(Namespace.SELECTOR, key="execution.site", value="local")
        .add_metadata(step="1")
    )
    ana = (
        Job("analyze", _id="ana1")
        .add_args("-i", fb, "-o", fc)
        .add_inputs(fb)
        .add_outputs(fc)
        .add_dagman_profile(retry=2)
        .add_shell_hook(EventType.ERROR, "/bin/echo failed")
    )
    wf = Workflow("rich")
    wf.add_jobs(pre, ana)
    wf.add_pegasus_profile(clusters_size=5)
    wf.add_metadata(creator="alice")
    return wf


def test_jobs_uses_profiles_and_metadata(tmp_path: Path) -> None:
    rich_workflow().write(str(tmp_path / "wf.yml"))
    wf = both(tmp_path / "wf.yml", cwd=tmp_path)
    pre, ana = job(wf, "pre1"), job(wf, "ana1")
    assert pre.transformation == "demo::preprocess:1.0"
    assert pre.node_label == "preprocess-step"
    assert pre.arguments == ["-i", "f.a", "-o", "f.b", "5", "2.5", "a b"]
    u = uses_of(wf, pre)
    assert u["f.a"].type == USE_INPUT and u["f.a"].bypass
    assert u["f.b"].type == USE_OUTPUT and not u["f.b"].stage_out
    assert not u["f.b"].register_replica
    assert u["state.ckpt"].type == USE_CHECKPOINT
    assert u["state.ckpt"].stage_out and u["state.ckpt"].register_replica
    assert u["pre.in"].type == USE_INPUT and wf.lfns[pre.stdin] == "pre.in"
    assert u["pre.log"].type == USE_OUTPUT and wf.lfns[pre.stdout] == "pre.log"
    assert u["pre.log"].stage_out and not u["pre.log"].register_replica
    assert wf.lfns[pre.stderr] == "pre.err"
    p = pre.profiles
    assert p["dagman"] == {"retry": 3}
    assert p["condor"]["request_memory"] == 4096
    assert p["condor"]["request_disk"] == 10485760
    assert p["condor"]["+ProjectName"] == '"proj42"'
    assert p["pegasus"] == {"checkpoint.time": 30, "maxwalltime": 60, "clusters.size": 4}
    assert p["env"] == {"OMP_NUM_THREADS": 2, "PATH": "/usr/bin"}
    assert p["globus"] == {"maxtime": 10}
    assert p["selector"] == {"execution.site": "local"}
    assert pre.metadata == {"step": "1"}
    # dagman keys are case-insensitive: the API writes RETRY
    assert ana.profiles == {"dagman": {"retry": 2}}
    # inferred dependency from f.b
    assert wf.children[wf.job_index["pre1"]] == [wf.job_index["ana1"]]
    assert wf.profiles == {"pegasus": {"clusters.size": 5}}
    assert wf.metadata == {"creator": "alice"}
    assert any("hooks" in w and "ana1" in w for w in wf.warnings)


def test_arguments_stay_argv_items(tmp_path: Path) -> None:
    """ferry keeps each arguments item as one argv element (Pegasus would join and re-split)."""
    wf = Workflow("args")
    wf.add_jobs(Job("sh", _id="j1").add_args("-c", "echo a; echo b", 7, True))
    wf.write(str(tmp_path / "wf.yml"))
    got = both(tmp_path / "wf.yml", cwd=tmp_path)
    assert got.jobs[0].arguments == ["-c", "echo a; echo b", "7", "true"]


def test_subworkflows_and_hooks_warn(tmp_path: Path) -> None:
    wf = Workflow("outer")
    wf.add_jobs(
        SubWorkflow("inner.yml", is_planned=False, _id="sub1").add_planner_args(sites=["local"]),
        SubWorkflow("prepared.dag", is_planned=True, _id="dag1"),
        Job("x", _id="x1"),
    )
    wf.add_shell_hook(EventType.END, "/bin/echo done")
    wf.write(str(tmp_path / "wf.yml"))
    got = both(tmp_path / "wf.yml", cwd=tmp_path)
    assert job(got, "sub1").kind == "pegasusWorkflow" and job(got, "sub1").name == "inner.yml"
    assert job(got, "dag1").kind == "condorWorkflow"
    text = "\n".join(got.warnings)
    assert "sub-workflow" in text and "sub1" in text and "dag1" in text
    assert "workflow hooks (shell: end)" in text


# --- catalogs -------------------------------------------------------------------------------


def catalogs() -> tuple[ReplicaCatalog, TransformationCatalog, SiteCatalog]:
    rc = (
        ReplicaCatalog()
        .add_replica("local", "f.a", "/srv/wf/inputs/f.a", checksum={"sha256": SHA_A})
        .add_replica("archive", File("f.a"), "https://127.0.0.1:8443/f.a")
        .add_regex_replica("local", r"raw\.(\d+)\.dat", "/srv/raw/[1]/[0]")
        .add_replica("local", File("g.b").add_metadata(owner="alice"), "/srv/g.b")
    )
    img = Container(
        "analysis-img",
        Container.SINGULARITY,
        "docker://example/analysis:1.2",
        image_site="dockerhub",
        mounts=["/srv/ref:/ref:ro"],
        checksum={"sha256": "0" * 64},
        arguments="--cleanenv",
    )
    pre = Transformation(
        "preprocess",
        namespace="demo",
        version="1.0",
        site="condorpool",
        pfn="/opt/demo/bin/preprocess",
        container=img,
    )
    ana = (
        Transformation(
            "analyze",
            site="local",
            pfn="/srv/wf/bin/analyze.py",
            is_stageable=True,
            checksum={"sha256": "1" * 64},
        )
        .add_sites(TransformationSite("osg", "http://127.0.0.1/analyze.py", is_stageable=True, bypass_staging=True))
        .add_pegasus_profile(cores=2, memory="2 GB", runtime=600)
        .add_requirement(pre)
    )
    tc = TransformationCatalog().add_containers(img).add_transformations(pre, ana)
    local = Site("local", arch=Arch.X86_64, os_type=OS.LINUX).add_directories(
        Directory(Directory.SHARED_SCRATCH, "/srv/wf/scratch").add_file_servers(
            FileServer("file:///srv/wf/scratch", Operation.ALL)
        ),
        Directory(Directory.LOCAL_STORAGE, "/srv/wf/outputs", shared_file_system=True).add_file_servers(
            FileServer("file:///srv/wf/outputs", Operation.PUT)
        ),
    )
    pool = Site("condorpool").add_pegasus_profile(style="condor").add_env(PATH="/usr/bin:/bin")
    sc = SiteCatalog().add_sites(local, pool)
    return rc, tc, sc


def check_catalogs(wf) -> None:
    rc, tc, sc = wf.replica_catalog, wf.transformation_catalog, wf.site_catalog
    fa = rc.entries["f.a"]
    assert {(r.site, r.pfn) for r in fa} == {
        ("local", "/srv/wf/inputs/f.a"),
        ("archive", "https://127.0.0.1:8443/f.a"),
    }
    assert all(r.sha256 == SHA_A for r in fa) and rc.checksums["f.a"] == SHA_A
    assert rc.metadata["g.b"] == {"owner": "alice"}
    assert [(r.site, r.pfn) for r in replicas_for(rc, "raw.42.dat")] == [
        ("local", "/srv/raw/42/raw.42.dat")
    ]
    assert replicas_for(rc, "raw.42.dat.x") == []
    img = tc.containers["analysis-img"]
    assert (img.type, img.image, img.image_site) == (
        "singularity",
        "docker://example/analysis:1.2",
        "dockerhub",
    )
    assert img.mounts == ["/srv/ref:/ref:ro"] and img.sha256 == "0" * 64
    assert img.profiles == {"pegasus": {"container.arguments": "--cleanenv"}}
    pre = tc.transformations["demo::preprocess:1.0"]
    assert pre.sites[0].container == "analysis-img" and pre.sites[0].type == "installed"
    ana = tc.transformations["analyze"]
    assert ana.sha256 == "1" * 64 and ana.requires == ["demo::preprocess:1.0"]
    assert ana.profiles == {"pegasus": {"cores": 2, "memory": 2048, "runtime": 600}}
    assert [(s.name, s.type, s.bypass) for s in ana.sites] == [
        ("local", "stageable", False),
        ("osg", "stageable", True),
    ]
    local = sc.sites["local"]
    assert (local.arch, local.os_type) == ("x86_64", "linux")
    scratch = local.directory("sharedScratch")
    assert scratch.path == "/srv/wf/scratch" and scratch.file_servers[0].url == "file:///srv/wf/scratch"
    storage = local.directory("localStorage")
    assert storage.shared_file_system and storage.file_servers[0].operation == "put"
    assert sc.sites["condorpool"].profiles == {
        "pegasus": {"style": "condor"},
        "env": {"PATH": "/usr/bin:/bin"},
    }


def test_embedded_catalogs(tmp_path: Path) -> None:
    rc, tc, sc = catalogs()
    wf = seed_pipeline()
    wf.add_replica_catalog(rc).add_transformation_catalog(tc).add_site_catalog(sc)
    wf.write(str(tmp_path / "wf.yml"))
    check_catalogs(both(tmp_path / "wf.yml", cwd=tmp_path))


def test_catalog_files_given(tmp_path: Path) -> None:
    rc, tc, sc = catalogs()
    rc.write(str(tmp_path / "my-rc.yml"))
    tc.write(str(tmp_path / "my-tc.yml"))
    sc.write(str(tmp_path / "my-sc.json"))
    seed_pipeline().write(str(tmp_path / "wf.yml"))
    got = both(
        tmp_path / "wf.yml",
        cwd=tmp_path,
        replica_files=[tmp_path / "my-rc.yml"],
        transformation_files=[tmp_path / "my-tc.yml"],
        site_files=[tmp_path / "my-sc.json"],
    )
    check_catalogs(got)


def test_catalogs_named_in_properties(tmp_path: Path) -> None:
    rc, tc, sc = catalogs()
    (tmp_path / "cat").mkdir()
    rc.write(str(tmp_path / "cat" / "r.yml"))
    tc.write(str(tmp_path / "cat" / "t.yml"))
    sc.write(str(tmp_path / "cat" / "s.yml"))
    props = Properties()
    props["pegasus.catalog.replica.file"] = "cat/r.yml"
    props["pegasus.catalog.transformation.file"] = "cat/t.yml"
    props["pegasus.catalog.site.file"] = str(tmp_path / "cat" / "s.yml")
    props["dagman.retry"] = "2"
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        props.write()  # ./pegasus.properties
    finally:
        os.chdir(cwd)
    seed_pipeline().write(str(tmp_path / "wf.yml"))
    got = both(tmp_path / "wf.yml", cwd=tmp_path)
    check_catalogs(got)
    assert got.properties["dagman.retry"] == "2"


def test_catalogs_from_conf_file(tmp_path: Path) -> None:
    rc, _, _ = catalogs()
    rc.write(str(tmp_path / "elsewhere.yml"))
    (tmp_path / "pegasus.properties").write_text("pegasus.catalog.replica.file = nothere.yml\n")
    (tmp_path / "my.conf").write_text(
        "# comment\npegasus.catalog.replica.file = elsewhere.yml\npegasus.mode = development\n"
    )
    seed_pipeline().write(str(tmp_path / "wf.yml"))
    got = load_workflow(tmp_path / "wf.yml", cwd=tmp_path, conf=tmp_path / "my.conf")
    assert "f.a" in got.replica_catalog.entries
    assert got.properties["pegasus.mode"] == "development"
    # without --conf the cwd file names a missing catalog: a clear error
    msg = error_of(tmp_path / "wf.yml", cwd=tmp_path)
    assert "nothere.yml" in msg and "cannot read the replica catalog" in msg


def test_catalogs_found_in_cwd(tmp_path: Path) -> None:
    rc, tc, sc = catalogs()
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        rc.write()  # replicas.yml
        tc.write()  # transformations.yml
        sc.write()  # sites.yml
        seed_pipeline().write()  # workflow.yml
        got = both(Path("workflow.yml"))
    finally:
        os.chdir(cwd)
    check_catalogs(got)


def test_embedded_replicas_override_file_entries(tmp_path: Path) -> None:
    (
        ReplicaCatalog()
        .add_replica("local", "f.a", "/file/f.a", checksum={"sha256": SHA_A})
        .add_replica("local", "only-in-file", "/file/x")
        .write(str(tmp_path / "replicas.yml"))
    )
    wf = seed_pipeline().add_replica_catalog(
        ReplicaCatalog().add_replica("embedded", "f.a", "/embedded/f.a")
    )
    wf.write(str(tmp_path / "wf.yml"))
    got = load_workflow(tmp_path / "wf.yml", cwd=tmp_path)
    assert [(r.site, r.pfn) for r in got.replica_catalog.entries["f.a"]] == [
        ("embedded", "/embedded/f.a")
    ]
    assert "f.a" not in got.replica_catalog.checksums
    assert "only-in-file" in got.replica_catalog.entries
    merged = load_workflow(
        tmp_path / "wf.yml", cwd=tmp_path, properties={"pegasus.catalog.replica.dax.asrc": "true"}
    )
    assert [r.site for r in merged.replica_catalog.entries["f.a"]] == ["embedded", "local"]


def test_properties_syntax() -> None:
    props = parse_properties(
        "# c\n! also\npegasus.a = 1\npegasus.b:2\npegasus.c 3\n\npegasus.d = x \\\n   y\n"
    )
    assert props == {"pegasus.a": "1", "pegasus.b": "2", "pegasus.c": "3", "pegasus.d": "x y"}


# --- errors -------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "wf.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


HEAD = "pegasus: 5.0.4\nname: t\n"


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    bad = HEAD + "jobs:\n- type: job\n  name: a\n  id: j1\n  arguments: [a, b\n  uses: []\n"
    p = write(tmp_path, bad)
    for fast in (True, False):
        msg = error_of(p, fast=fast, cwd=tmp_path)
        assert msg.startswith(f"{p}:"), msg
        assert "YAML syntax error" in msg
        line = int(msg.split(":")[1])
        assert 6 <= line <= 9, msg


@pytest.mark.parametrize("confirm", [True, False])
def test_yaml_error_deep_in_a_big_file(tmp_path: Path, monkeypatch, confirm: bool) -> None:
    """Line numbers stay right when the error is in a batch far down the file."""
    from ferry.planner import pegasus

    if not confirm:  # as for a file too big to parse whole again
        monkeypatch.setattr(pegasus, "CONFIRM_LIMIT", 0)
    jobs = "".join(
        f"- type: job\n  name: t\n  id: j{i}\n  arguments: []\n  uses: []\n" for i in range(3000)
    )
    lines = (HEAD + "jobs:\n" + jobs).split("\n")
    index = 3 + 5 * 2500 + 2  # the id line of job 2500
    lines[index] = "  id: : j2500"
    p = write(tmp_path, "\n".join(lines))
    msg = error_of(p, cwd=tmp_path)
    assert msg.startswith(f"{p}:{index + 1}:7: YAML syntax error"), msg


def test_wrong_types_point_at_the_line(tmp_path: Path) -> None:
    cases = {
        "  arguments: {a: 1}\n": ("arguments must be a list", 7),
        "  arguments: [[1]]\n": ("arguments[0] must be a string", 7),
        "  uses:\n  - lfn: x\n    type: input\n    stageOut: maybe\n": ("stageOut must be true or false", 10),
        "  uses:\n  - lfn: [x]\n    type: input\n": ("lfn must be a string", 8),
        "  profiles:\n    env: [1]\n": ("profiles.env must be a mapping", 8),
        "  uses:\n  - lfn: x\n    type: inputt\n": ("unknown type 'inputt'", 9),
        "  uses:\n  - lfn: x\n    type: input\n    size: big\n": ("size must be an integer", 10),
        "  uses:\n  - lfn: ''\n    type: input\n": ("lfn is empty", 8),
    }
    for extra, (words, line) in cases.items():
        p = write(tmp_path, HEAD + "jobs:\n- type: job\n  name: a\n  id: j1\n" + extra)
        for fast in (True, False):
            msg = error_of(p, fast=fast, cwd=tmp_path)
            assert words in msg, msg
            assert msg.startswith(f"{p}:{line}:"), msg
            assert "'j1'" in msg, msg


def test_misindented_lines_are_errors_on_every_path(tmp_path: Path) -> None:
    base = HEAD + "jobs:\n- type: job\n  name: a\n  id: j1\n  arguments: []\n  uses: []\n"
    for extra in (
        "  profiles:\n    env:\n      A: '1'\n     B: '2'\n",
        "  metadata:\n    a: x\n     b: y\n",
    ):
        p = write(tmp_path, base + extra)
        for fast in (True, False):
            assert "YAML syntax error" in error_of(p, fast=fast, cwd=tmp_path)
    # a more indented line after an argument continues it
    p = write(tmp_path, base.replace("  arguments: []\n", "  arguments:\n  - a\n   - b\n"))
    assert both(p, cwd=tmp_path).jobs[0].arguments == ["a - b"]


def test_duplicate_job_ids_name_both_lines(tmp_path: Path) -> None:
    text = HEAD + "jobs:\n" + "".join(
        f"- type: job\n  name: a\n  id: {jid}\n  arguments: []\n  uses: []\n"
        for jid in ("j1", "j2", "j1")
    )
    p = write(tmp_path, text)
    for fast in (True, False):
        msg = error_of(p, fast=fast, cwd=tmp_path)
        assert msg == f"{p}:14: duplicate job id 'j1' (first defined at line 4)", msg


def test_dependency_on_unknown_job(tmp_path: Path) -> None:
    text = (
        HEAD
        + "jobs:\n- type: job\n  name: a\n  id: j1\n  arguments: []\n  uses: []\n"
        + "jobDependencies:\n- id: j1\n  children:\n  - nope\n  - j1x\n"
    )
    p = write(tmp_path, text)
    for fast in (True, False):
        msg = error_of(p, fast=fast, cwd=tmp_path)
        assert msg.startswith(f"{p}:12:"), msg
        assert "'nope'" in msg and "'j1x'" in msg


def test_control_characters_are_refused(tmp_path: Path) -> None:
    for bad in ("\x07", "\x00", "\ufffe"):
        p = write(tmp_path, HEAD + f"jobs:\n- type: job\n  name: a\n  id: j1\n  arguments:\n  - a{bad}b\n")
        for fast in (True, False):
            msg = error_of(p, fast=fast, cwd=tmp_path)
            assert msg.startswith(f"{p}:8:6: YAML syntax error: special characters"), msg
    p = write(tmp_path, HEAD + "jobs:\n- type: job\n  name: a\n  id: j1\n  arguments:\n  - é→✓\n")
    assert both(p, cwd=tmp_path).jobs[0].arguments == ["é→✓"]


def test_json_errors_point_at_the_line(tmp_path: Path) -> None:
    wf = seed_pipeline()
    wf.write(str(tmp_path / "wf.json"))
    text = (tmp_path / "wf.json").read_text()
    bad = text.replace('"-l"', '{"x": 1}')
    p = write(tmp_path, bad, "bad.json")
    line = bad[: bad.index('{"x": 1}')].count("\n") + 1
    msg = error_of(p, cwd=tmp_path)
    assert msg.startswith(f"{p}:{line}:") and "arguments[0] must be a string" in msg, msg
    dup = text.replace('"ID0000002"', '"ID0000001"')
    p = write(tmp_path, dup, "dup.json")
    first = dup.index('"ID0000001"')
    l1 = dup[:first].count("\n") + 1
    l2 = dup[: dup.index('"ID0000001"', first + 1)].count("\n") + 1
    msg = error_of(p, cwd=tmp_path)
    assert "duplicate job id 'ID0000001'" in msg and f"line {l1 - 3}" in msg, msg
    assert msg.startswith(f"{p}:{l2 - 3}:"), msg
    syntax = text.replace('"name": "pipeline",', '"name": "pipeline"')
    p = write(tmp_path, syntax, "syntax.json")
    msg = error_of(p, cwd=tmp_path)
    line = syntax[: syntax.index('"name": "pipeline"')].count("\n") + 1
    assert f"{p}:" in msg and "YAML syntax error" in msg, msg


def test_wrong_pegasus_version(tmp_path: Path) -> None:
    p = write(tmp_path, "pegasus: 4.9\nname: t\njobs: []\n")
    assert "not supported" in error_of(p, cwd=tmp_path)
    for v in ("5.0", "'5.0'", "5", "5.0.4", "'5.1.3'"):
        p = write(tmp_path, f"pegasus: {v}\nname: t\njobs: []\n")
        assert load_workflow(p, cwd=tmp_path).name == "t"


def test_bad_catalog_entries_point_at_the_line(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "pegasus: 5.0\nreplicas:\n- lfn: a\n  pfns:\n  - site: local\n    pfn: /a\n"
        "  checksum:\n    sha256: xyz\n",
        "rc.yml",
    )
    seed_pipeline().write(str(tmp_path / "wf.yml"))
    msg = error_of(tmp_path / "wf.yml", cwd=tmp_path, replica_files=[p])
    assert msg.startswith(f"{p}:8:") and "64 hex digits" in msg, msg
    p = write(
        tmp_path,
        "pegasus: 5.0\ntransformations:\n- name: a\n  sites:\n  - name: local\n    pfn: /a\n"
        "    type: instaled\n",
        "tc.yml",
    )
    msg = error_of(tmp_path / "wf.yml", cwd=tmp_path, transformation_files=[p])
    assert msg.startswith(f"{p}:7:") and "instaled" in msg, msg


def test_empty_jobs_key(tmp_path: Path) -> None:
    p = write(tmp_path, HEAD + "jobs:\n# nothing\njobDependencies:\n")
    for fast in (True, False):
        assert "jobs must be a list, not null" in error_of(p, fast=fast, cwd=tmp_path)
    p = write(tmp_path, HEAD + "jobs: []\njobDependencies:\n")
    assert both(p, cwd=tmp_path).jobs == []


def test_unknown_keys_warn(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        HEAD + "x-mine: 1\nextra: 2\njobs:\n- type: job\n  name: a\n  id: j1\n  argument: [x]\n",
    )
    got = load_workflow(p, cwd=tmp_path)
    text = "\n".join(got.warnings)
    assert "'extra'" in text and "'argument'" in text and "x-mine" not in text


# --- fast path and whole-document parse -------------------------------------------------------


TRICKY = [
    "1e3",
    "0o7",
    "007",
    "12:30",
    "2020-01-01",
    "yes",
    "on",
    "True",
    ".inf",
    "-.5",
    "'quoted: yes'",
    '"dq \\t tab"',
    "a # comment",
    "'multi\n\n        line'",
    "plain\n        continued",
    "!!str 5",
    "a[0]",
    "x{1}",
    "http://x/?a=1&b=*",
    "-1",
    "4096",
    "1.5",
]


@pytest.mark.parametrize("batch", [1, 1000])
def test_fast_and_whole_agree_on_tricky_scalars(tmp_path: Path, monkeypatch, batch: int) -> None:
    from ferry.planner import pegasus

    monkeypatch.setattr(pegasus, "BATCH", batch)  # 1: each job parsed on its own
    jobs = []
    for i, v in enumerate(TRICKY):
        jobs.append(
            f"- type: job\n  name: t{i}\n  id: j{i}\n  arguments:\n  - {v}\n"
            f"  uses:\n  - lfn: f{i}\n    type: output\n  profiles:\n    env:\n      V: {v}\n"
        )
    p = write(tmp_path, HEAD + "jobs:\n" + "".join(jobs))
    got = both(p, cwd=tmp_path)
    assert job(got, "j0").arguments == ["1e3"]
    assert job(got, "j2").arguments == ["7"]  # YAML 1.1 reads 007 as an int
    assert job(got, "j5").arguments == ["yes"]  # Pegasus reads only true/false as booleans
    assert job(got, "j6").profiles == {"env": {"V": "on"}}
    assert job(got, "j7").arguments == ["true"]


SCALARS = TRICKY + [
    "0x1F", "+1", "1_000", "0b101", "1:20:30", "1.10", "01.5", "5.0.4", "10000000000000000000000",
    "0.", "1e", "nan", "NaN", "Yes", "NO", "Off", "FALSE", "tRuE", "-", "--x", "8080:80", "x#y",
    "'it''s'", "\"\\u00e9\"", "é", "a: b", "- - x", "-0", "-0.0", ".5", "+.5", "1.5e-3", "",
    "2001-12-14t21:59:43.10-05:00", "<< : x", "? x", "@x", "`x", "%x", "x\ty", "|\n  lit", ">\n  fold",
    "*x", "&a x", "!x", "{}", "[]", "{a: 1}", "[1, 2]", "6.0e+2", "1:2", "0:59", "''", "' '",
]


def test_fast_parser_reads_what_pyyaml_reads() -> None:
    """Whenever fast_ok lets yaml-rs read a text, it reads what PegasusLoader reads."""
    if not yamlread.fast_available():
        pytest.skip("yaml-rs is not installed: only PyYAML is used")
    accepted = 0
    for v in SCALARS:
        docs = (
            f"- {v}\n",
            f"- k: {v}\n  other: 1\n",
            f"- - {v}\n",
            f"- {v}: 1\n",
            f"- a: 1\n  {v}: 1\n",
            f"- a: 1\n  {v}:\n    b: 1\n",
        )
        for doc in docs:
            if not yamlread.fast_ok(doc):
                continue
            fast = yamlread.fast_loads(doc)
            if fast is None:
                continue
            try:
                slow = yamlread.parse(doc, "x")
            except ConfigError:
                raise AssertionError(f"yaml-rs accepted what PyYAML refuses: {doc!r}") from None
            assert repr(fast) == repr(slow), doc
            accepted += 1
    assert accepted > 40
    # the API's own output is plain enough for the fast parser
    text = synthetic(10)
    start = text.index("jobs:\n") + 6
    assert yamlread.fast_ok(text[start : text.index("jobDependencies:")])


def test_fast_and_whole_agree_without_yaml_rs(tmp_path: Path, monkeypatch) -> None:
    rich_workflow().write(str(tmp_path / "wf.yml"))
    with_rs = load_workflow(tmp_path / "wf.yml", cwd=tmp_path)
    monkeypatch.setattr(yamlread, "_yaml_rs", None)
    assert_same(with_rs, both(tmp_path / "wf.yml", cwd=tmp_path))


def test_irregular_documents_fall_back(tmp_path: Path) -> None:
    flow = (
        "{pegasus: '5.0', name: f, jobs: [{type: job, name: a, id: j1, arguments: [x],"
        " uses: [{lfn: o, type: output}]}], jobDependencies: []}\n"
    )
    got = parse_workflow(flow, "flow.yml")
    assert got.jobs[0].arguments == ["x"]
    anchors = (
        HEAD + "jobs:\n- &j type: job\n  name: a\n  id: j1\n  profiles: &p {env: {A: '1'}}\n"
        "- type: job\n  name: b\n  id: j2\n  profiles: *p\n"
    )
    got = parse_workflow(anchors, "anchors.yml")
    assert got.jobs[1].profiles == {"env": {"A": "1"}}
    indented = HEAD + "jobs:\n  - type: job\n    name: a\n    id: j1\n  - type: job\n    name: b\n    id: j2\n"
    got = parse_workflow(indented, "indented.yml")
    assert [j.id for j in got.jobs] == ["j1", "j2"]


def mixed(n: int) -> str:
    """API-shaped jobs with, every 7th, one the strict reader refuses (hooks, quotes...)."""
    text = synthetic(n)
    odd = [
        '  hooks:\n    shell:\n    - _on: end\n      cmd: /bin/true\n',
        '  nodeLabel: "double quoted"\n',
        "  profiles:\n    ENV:\n      X: 007\n",
        "  metadata:\n    k: yes\n",
        "  metadata:\n    1: one\n    2.5: x\n",
        "  profiles:\n    env:\n      '1': one\n      X: 1.50\n",
    ]
    parts = text.split("\n- type: job\n")
    for i in range(1, len(parts), 7):
        head, sep, tail = parts[i].partition("  arguments:")
        parts[i] = head + odd[i % len(odd)] + sep + tail if "jobDependencies" not in head else parts[i]
    return "\n- type: job\n".join(parts)


@pytest.mark.parametrize("parallel", [False, True])
def test_strict_reader_with_refused_jobs_in_between(tmp_path: Path, monkeypatch, parallel: bool) -> None:
    from ferry.planner import pegasus

    monkeypatch.setattr(pegasus, "BATCH", 50)
    if parallel:  # forked workers scan, this process applies
        monkeypatch.setattr(pegasus, "PARALLEL_MIN", 0)
    p = write(tmp_path, mixed(700))
    got = both(p, cwd=tmp_path)
    assert len(got.jobs) == 700
    assert any("hooks" in w for w in got.warnings)
    assert job(got, "ID0000008").profiles == {"env": {"X": 7}}  # ENV, 007
    assert job(got, "ID0000001").node_label == "double quoted"
    # a dependency on an unknown job, far down: the error still names its line
    text = p.read_text().replace("  - ID0000600\n", "  - ID9999999\n")
    p.write_text(text)
    line = text[: text.index("ID9999999")].count("\n") + 1
    msg = error_of(p, cwd=tmp_path)
    assert msg.startswith(f"{p}:{line}:") and "'ID9999999'" in msg, msg


def random_workflow(rng, tricky: float) -> str:
    """A workflow in the API's layout whose values are, now and then, tricky scalars."""
    odd = [v for v in SCALARS if "\n" not in v] + ["-", "- x", "a: b", "x #y", "#x", "'", "input"]

    def v() -> str:
        return rng.choice(odd) if rng.random() < tricky else rng.choice(["abc", "f1.in", "-o", "x.y"])

    out = ["pegasus: 5.0.4\nname: fz\njobs:\n"]
    for j in range(8):
        s = "- type: job\n"
        if rng.random() < 0.2:
            s += f"  namespace: {v()}\n"
        if rng.random() < 0.2:
            s += f"  version: {v()}\n"
        s += f"  name: {v()}\n  id: {f'j{j}' if rng.random() < 0.97 else v()}\n"
        for k in ("stdin", "stdout", "stderr", "nodeLabel"):
            if rng.random() < 0.15:
                s += f"  {k}: {v()}\n"
        s += "  arguments:\n" + "".join(f"  - {v()}\n" for _ in range(rng.randint(0, 3)))
        s += "  uses:\n"
        for _ in range(rng.randint(0, 3)):
            t = rng.choice(["input", "output", "checkpoint", "inout", "none"])
            s += f"  - lfn: {v()}\n    type: {t if rng.random() < 0.98 else v()}\n"
            for fl in ("stageOut", "registerReplica", "optional", "bypass", "executable", "size"):
                if rng.random() < 0.2:
                    good = "12" if fl == "size" else rng.choice(["true", "false"])
                    s += f"    {fl}: {good if rng.random() < 0.97 else v()}\n"
        if rng.random() < 0.3:
            s += "  profiles:\n"
            for _ in range(rng.randint(1, 2)):
                s += f"    {rng.choice(['env', 'ENV', 'dagman', 'pegasus', v()])}:\n"
                for _ in range(rng.randint(1, 2)):
                    s += f"      {rng.choice(['retry', 'RETRY', 'X', v()])}: {v()}\n"
        if rng.random() < 0.2:
            s += "  metadata:\n" + "".join(
                f"    {rng.choice(['k', 'm', v()])}: {v()}\n" for _ in range(rng.randint(1, 2))
            )
        out.append(s)
    return "".join(out)


def test_random_workflows_read_the_same_three_ways() -> None:
    """Fuzz: the strict reader, parser batches and the whole document agree (or all refuse)."""
    import random

    from ferry.planner import pegasus

    rng = random.Random(20261125)
    agreed = 0
    for _ in range(150):
        text = random_workflow(rng, 0.015)
        res = []
        for mode in ("strict", "batch", "whole"):
            pegasus.STRICT = mode == "strict"
            try:
                res.append(parse_workflow(text, "fz.yml", fast=mode != "whole"))
            except ConfigError as exc:
                res.append(exc)
            finally:
                pegasus.STRICT = True
        errors = [isinstance(r, ConfigError) for r in res]
        assert len(set(errors)) == 1, (text, res)
        if not errors[0]:
            assert_same(res[0], res[2])
            assert_same(res[1], res[2])
            agreed += 1
    assert agreed > 20


# --- size -----------------------------------------------------------------------------------------


def synthetic(n: int) -> str:
    out = ["x-pegasus:\n  apiLang: python\npegasus: 5.0.4\nname: synthetic\njobs:\n"]
    for i in range(n):
        out.append(
            f"- type: job\n  name: proc\n  id: ID{i + 1:07d}\n  arguments:\n  - -i\n  - f{i}.in\n"
            f"  uses:\n  - lfn: f{i}.out\n    type: output\n    stageOut: true\n"
            f"    registerReplica: true\n  - lfn: f{i}.in\n    type: input\n"
        )
    out.append("jobDependencies:\n")
    for i in range(n):
        kids = [c for c in (2 * i + 1, 2 * i + 2) if c < n]
        if kids:
            out.append(f"- id: ID{i + 1:07d}\n  children:\n")
            out.extend(f"  - ID{c + 1:07d}\n" for c in kids)
    return "".join(out)


def test_20k_jobs_in_bounded_time(tmp_path: Path) -> None:
    p = write(tmp_path, synthetic(20000))
    t = time.process_time()
    wf = load_workflow(p, cwd=tmp_path)
    took = time.process_time() - t
    assert len(wf.jobs) == 20000 and len(wf.lfns) == 40000
    assert wf.children[0] == [1, 2] and wf.children[9999] == [19999]
    # yaml-rs reads this in ~1 s of CPU; PyYAML alone needs ~10 s
    assert took < (15 if yamlread.fast_available() else 60), took


TOKENS = [
    "no", "nose", "No", "NOPE", "nopes", "off", "Off", "on", "onto", "y", "n", "t", "f", "o",
    "yes", "true", "false", "null", "Null", "~", "-x", "-1", "-", "--x", "/a/b", "_x", "a.b",
    "a-b_c.d/e", "x:", "a1", "f0.in", "ID0000001", "J-1", ".x", "1a", "tRuE", "nullx", "offer",
]


def test_token_tier_reads_what_the_checking_tier_reads() -> None:
    """strictread's first tier (one regex per batch) gives parse_job's records exactly."""
    import random

    from ferry.planner import strictread as strict

    rng = random.Random(6)
    fast_items = 0
    for _ in range(60):
        text = random_workflow(rng, 0.05)
        for tok in rng.sample(TOKENS, 6):  # words near the token tier's edge, as values
            text = text.replace("abc", tok, 1).replace("x.y", tok, 1)
        start = text.index("jobs:\n") + 6
        fast = strict.scan_jobs(text, start, len(text))
        slow = strict.scan(text, start, len(text), strict.JOB, strict.parse_job)
        assert fast == slow, text
        fast_items += sum(
            1 for _m in strict.FAST_JOB.finditer(text, start, len(text))
        )
    assert fast_items > 50
    triples = zip(TOKENS[:-2], TOKENS[1:-1], TOKENS[2:], strict=True)
    deps = "".join(f"- id: {a}\n  children:\n  - {b}\n  - {c}\n" for a, b, c in triples)
    deps += "- id: z\n  children: []\n"
    fast = strict.scan_deps(deps, 0, len(deps))
    assert fast == strict.scan(deps, 0, len(deps), strict.DEP, strict.parse_dep)
    assert fast[-1] == ("z", [])
