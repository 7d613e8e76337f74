"""Resource requests as HTCondor reads them: ``condor.request_memory`` in MiB and
``condor.request_disk`` in KiB unless a unit says otherwise (a hand-written catalog or
workflow may say ``"2 GB"``; the Pegasus API writes plain numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.planner.helpers import ferry, specs

WORKFLOW = """\
pegasus: "5.0"
name: res
jobs:
- type: job
  name: "true"
  id: j1
  arguments: []
  uses: []
  profiles:
    condor: {{request_memory: {mem}, request_disk: {disk}, request_cpus: 2}}
jobDependencies: []
"""


@pytest.mark.parametrize(
    ("mem", "disk", "memory_mb", "disk_mb"),
    [
        ("4096", "10485760", 4096, 10240),  # what the API writes: MiB, KiB
        ('"2 GB"', '"512MB"', 2048, 512),
        ('"1.5g"', '"1000"', 1536, 1),  # 1000 KiB is 1 MiB, not 0
        ('"2048 M"', '"3 T"', 2048, 3 * 1024 * 1024),
    ],
)
def test_sizes_with_and_without_units(
    tmp_path: Path, mem: str, disk: str, memory_mb: int, disk_mb: int
) -> None:
    (tmp_path / "workflow.yml").write_text(WORKFLOW.format(mem=mem, disk=disk))
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    [spec] = specs(tmp_path / "run").values()
    assert (spec.resources.memory_mb, spec.resources.disk_mb) == (memory_mb, disk_mb)


def test_a_size_that_is_no_size_is_a_planning_error(tmp_path: Path) -> None:
    (tmp_path / "workflow.yml").write_text(WORKFLOW.format(mem='"lots"', disk="1"))
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode != 0
    assert "condor.request_memory must be a size" in res.stderr and "'lots'" in res.stderr


def test_a_run_directory_htcondor_cannot_use_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    where = tmp_path / "with space"
    where.mkdir()
    (where / "workflow.yml").write_text(WORKFLOW.format(mem="1", disk="1"))
    res = ferry("plan", "workflow.yml", "--dir", "run", "--backend", "htcondor", cwd=where)
    assert res.returncode == 2
    assert "must not contain white space" in res.stderr
    assert not (where / "run").exists()  # no jobs/, records/ or htcondor/ left behind


def test_the_run_directory_is_its_owner_s_only(tmp_path: Path) -> None:
    # its job specs and plan.json keep catalog URLs as given, passwords included
    (tmp_path / "workflow.yml").write_text(WORKFLOW.format(mem="1", disk="1"))
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
