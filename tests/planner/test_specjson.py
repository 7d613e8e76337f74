"""The job spec fast path (planner/specjson.py) writes what the builder + msgspec write."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from ferry.planner.pegasus import load_workflow
from ferry.planner.plan import PlanOptions, plan_workflow
from ferry.planner.specjson import SpecJSON
from ferry.worker.jobspec import load_jobspec

from .helpers import specs

SHA = "ab" * 32

SITES = """\
pegasus: 5.0.4
sites:
- name: local
  directories:
  - type: sharedScratch
    path: /srv/scratch
    fileServers:
    - url: file:///srv/scratch
      operation: all
  - type: localStorage
    path: /srv/out
    fileServers:
    - url: file:///srv/out
      operation: all
- name: hpc
  directories:
  - type: sharedScratch
    path: /hpc/scratch dir
    fileServers:
    - url: https://hpc.example.org/scr "q"/é
      operation: all
  profiles:
    env:
      SITE_VAR: hpc
- name: archive
  directories:
  - type: localStorage
    path: /archive
    fileServers:
    - url: s3://bucket/archive
      operation: all
"""

TC = f"""\
pegasus: 5.0.4
transformations:
- name: proc
  sites:
  - name: local
    pfn: /bin/true
    type: installed
  - name: hpc
    pfn: /opt/proc
    type: installed
    container: img
  profiles:
    env:
      TX: "1"
    pegasus:
      maxwalltime: 30
      exitcode.successmsg: all good
      transfer.threads: 3
- name: staged
  sites:
  - name: local
    pfn: /srv/bin/staged tool
    type: stageable
  checksum:
    sha256: '{SHA}'
containers:
- name: img
  type: singularity
  image: docker://example/img:1
  mounts:
  - /a:/b
"""

RC = f"""\
pegasus: 5.0.4
replicas:
- lfn: raw.a
  pfns:
  - site: local
    pfn: /data/raw.a
  - site: hpc
    pfn: https://hpc.example.org/raw.a
  - site: archive
    pfn: s3://bucket/raw.a
  checksum:
    sha256: '{SHA}'
- lfn: 'odd name "q" é.dat'
  pfns:
  - site: local
    pfn: /data/odd name.dat
- lfn: prio.dat
  pfns:
  - site: archive
    pfn: s3://b/prio.dat
    priority: 7
  - site: local
    pfn: relative/prio.dat
- lfn: inout(\\d+)
  regex: true
  pfns:
  - site: archive
    pfn: s3://bucket/[0]
- lfn: in(\\d+)\\.x
  regex: true
  pfns:
  - site: local
    pfn: /data/in/x[1]
  - site: hpc
    pfn: gsiftp://hpc/in/[1]/[2]
"""


def workflow_text(n: int) -> str:
    """A workflow with some of everything a spec can hold, and a cycle of variations."""
    out = ["pegasus: 5.0.4\nname: varied\njobs:\n"]
    for i in range(n):
        k = i % 8
        tx = "staged" if k == 3 else "proc"
        s = f"- type: job\n  name: {tx}\n  id: j{i}\n"
        if k == 1:
            s += f"  stdin: in{i}.x\n  stdout: out{i}.log\n  stderr: err{i}.log\n"
        if k == 2:
            s += f"  stdout: mid{i}.txt\n"
        s += "  arguments:\n"
        s += "".join(f"  - {a}\n" for a in (["-i", f"in{i}.x"] if k != 4 else []))
        if k == 5:
            s += "  - 'quoted \"x\" é \\t'\n  - '007'\n"
        s += "  uses:\n"
        s += f"  - lfn: in{i}.x\n    type: input\n"
        if k == 1:
            s += f"    size: {i * 1000}\n"
        if i > 0:
            s += f"  - lfn: o{i - 1}.dat\n    type: input\n"
        if k == 2:
            s += f"  - lfn: mid{i}.txt\n    type: output\n    stageOut: false\n"
        if k == 4:
            s += "  - lfn: raw.a\n    type: input\n    executable: true\n"
            s += "  - lfn: 'odd name \"q\" é.dat'\n    type: input\n"
            s += "  - lfn: prio.dat\n    type: input\n    bypass: true\n"
        if k == 6:
            s += f"  - lfn: inout{i}\n    type: inout\n  - lfn: ck{i}\n    type: checkpoint\n"
        s += f"  - lfn: o{i}.dat\n    type: output\n"
        if k == 7:
            s += "    optional: true\n    registerReplica: false\n"
        if k == 0:
            s += f"  - lfn: x{i} y.dat\n    type: output\n    stageOut: false\n"
        if k == 5:
            s += (
                "  profiles:\n    env:\n      JOBVAR: x\n    selector:\n      execution.site: hpc\n"
            )
        if k == 6:
            s += "  profiles:\n    pegasus:\n      checkpoint.time: 2\n"
        out.append(s)
    return "".join(out)


def plain_text(n: int) -> str:
    """workflow_text without the LFNs that need quoting in a URL or JSON."""
    text = workflow_text(n)
    for i in range(n):
        text = text.replace(f"x{i} y.dat", f"x{i}_y.dat")
    return text.replace("  - lfn: 'odd name \"q\" é.dat'\n    type: input\n", "")


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("sites", [["local"], ["local", "hpc"]])
def test_fast_specs_are_the_builders_bytes(tmp_path: Path, sites: list[str], plain: bool) -> None:
    (tmp_path / "sites.yml").write_text(SITES)
    (tmp_path / "tc.yml").write_text(TC)
    # plain: one replica for the in*.x files (the commonest case, as in the benchmark)
    rc = RC.replace("  - site: hpc\n    pfn: gsiftp://hpc/in/[1]/[2]\n", "") if plain else RC
    (tmp_path / "rc.yml").write_text(rc)
    (tmp_path / "wf.yml").write_text(plain_text(48) if plain else workflow_text(48))
    wf = load_workflow(
        tmp_path / "wf.yml",
        replica_files=["rc.yml"],
        transformation_files=["tc.yml"],
        site_files=["sites.yml"],
        cwd=tmp_path,
    )
    run = tmp_path / "run"
    builders = []
    import ferry.planner.plan as plan_mod

    real = plan_mod.SpecJSON

    def spy(builder):  # type: ignore[no-untyped-def]
        builders.append(builder)
        return real(builder)

    plan_mod.SpecJSON = spy  # type: ignore[assignment]
    try:
        plan_workflow(
            wf,
            PlanOptions(run_dir=str(run), sites=sites, output_sites=["local", "archive"]),
        )
    finally:
        plan_mod.SpecJSON = real  # type: ignore[assignment]
    builder = builders[0]
    fast = SpecJSON(builder)
    assert fast.enabled and fast.plain == plain
    encode = msgspec.json.Encoder().encode
    fast_jobs = plain_jobs = 0
    for j in range(len(wf.jobs)):
        if not builder.kept[j]:
            continue
        old = encode(builder.build(j))
        new = fast(j)
        assert new == old, (wf.jobs[j].id, new, old)
        assert load_jobspec(new) == load_jobspec(old)
        fast_jobs += fast._spec(j, wf.jobs[j]) is not None
        plain_jobs += plain and fast._spec_plain(j, wf.jobs[j]) is not None
    assert 30 < fast_jobs < len(wf.jobs)  # most through the fast path; checkpoints not
    assert plain_jobs > (10 if plain else -1)  # and the commonest through plain mode
    # and what the plan wrote decodes with the worker's loader
    written = specs(run)
    assert len(written) == len(wf.jobs)
    assert written["j5"].environment["JOBVAR"] == "x"


def test_packed_specs_from_two_writers_decode_as_built(tmp_path: Path) -> None:
    """A plan big enough for forked writers, packed: every referenced line is the
    builder's spec of that job (decoded with the worker's loader)."""
    from ferry.planner.rundir import RunDir, read_ref

    n = 6000
    jobs = "".join(
        f"- type: job\n  name: proc\n  id: ID{i:07d}\n  arguments:\n  - -i\n  - f{i}.in\n"
        f"  uses:\n  - lfn: f{i}.out\n    type: output\n    stageOut: true\n"
        f"    registerReplica: true\n  - lfn: f{i}.in\n    type: input\n"
        + (f"  - lfn: f{i - 1}.out\n    type: input\n" if i % 3 else "")
        for i in range(n)
    )
    (tmp_path / "wf.yml").write_text("pegasus: 5.0.4\nname: packed\njobs:\n" + jobs)
    (tmp_path / "rc.yml").write_text(
        "pegasus: 5.0.4\nreplicas:\n- lfn: f(\\d+)\\.in\n  regex: true\n  pfns:\n"
        "  - site: local\n    pfn: /data/in/f[1].in\n"
    )
    (tmp_path / "tc.yml").write_text(
        "pegasus: 5.0.4\ntransformations:\n- name: proc\n  sites:\n  - name: local\n"
        "    pfn: /bin/true\n    type: installed\n"
    )
    wf = load_workflow(
        tmp_path / "wf.yml",
        replica_files=["rc.yml"],
        transformation_files=["tc.yml"],
        cwd=tmp_path,
    )
    run = tmp_path / "run"
    import ferry.planner.plan as plan_mod

    builders = []  # the builder of the plan (the writer process's copy is the same)
    real = plan_mod.SpecJSON
    plan_mod.SpecJSON = lambda b: builders.append(b) or real(b)  # type: ignore[assignment]
    try:
        plan_workflow(
            wf,
            PlanOptions(
                run_dir=str(run),
                output_dir=str(tmp_path / "out"),
                spec_layout="packed",
                writers=2,
            ),
        )
    finally:
        plan_mod.SpecJSON = real  # type: ignore[assignment]
    plan = RunDir(str(run)).load_plan()
    assert len(plan.jobs) == n and len(builders) == 1
    builder = builders[0]
    assert SpecJSON(builder).plain
    for e, pj in enumerate(plan.jobs):
        line = read_ref(str(run / pj.spec))
        spec = load_jobspec(line)
        assert spec.id == pj.id
        expect = msgspec.json.encode(builder.build(wf.job_index[pj.id]))
        assert line == expect + b"\n", e  # the builder's bytes, at the plan's offset
        assert spec == load_jobspec(expect)
