"""A replica's sum given as the metadata ``checksum.type``/``checksum.value`` (the way
Pegasus keeps ``checksum: {sha256: X}``) is checked like ``checksum``."""

from __future__ import annotations

from pathlib import Path

import pytest
from Pegasus.api import File, Job, ReplicaCatalog, Workflow

from tests.planner.helpers import ferry, sha, specs


def _workflow(tmp_path: Path, metadata: dict[str, str]) -> None:
    data = tmp_path / "f.a"
    data.write_text("hello\n")
    rc = ReplicaCatalog().add_replica("local", "f.a", data, metadata=metadata)
    wf = Workflow("mdsum")
    wf.add_jobs(Job("cat", _id="j1").add_args(File("f.a")).add_inputs(File("f.a"))
                .set_stdout(File("out.txt")))  # fmt: skip
    wf.add_replica_catalog(rc)
    wf.write(str(tmp_path / "workflow.yml"))


def test_a_wrong_sum_in_metadata_fails_the_job(tmp_path: Path) -> None:
    _workflow(tmp_path, {"checksum.type": "sha256", "checksum.value": "0" * 64})
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    assert res.returncode == 1
    assert "integrity: sha256 mismatch for f.a" in res.stdout
    assert not (tmp_path / "out" / "out.txt").exists()


def test_the_right_sum_in_metadata_is_carried_to_the_job(tmp_path: Path) -> None:
    _workflow(tmp_path, {"checksum.value": sha(b"hello\n").upper()})  # no type: a sha256
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    [spec] = specs(tmp_path / "run").values()
    assert [i.sha256 for i in spec.inputs if i.lfn == "f.a"] == [sha(b"hello\n")]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"checksum.type": "md5", "checksum.value": "00"}, "only checksum.type sha256"),
        ({"checksum.value": "abc"}, "not 64 hex digits"),
    ],
)
def test_a_sum_in_metadata_that_cannot_be_checked_is_a_planning_error(
    tmp_path: Path, metadata: dict[str, str], message: str
) -> None:
    _workflow(tmp_path, metadata)
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode != 0
    assert message in res.stderr


@pytest.mark.parametrize("fmt", ["yml", "json"])
@pytest.mark.parametrize("many", [False, True])
def test_a_sum_in_a_uses_metadata_is_checked(tmp_path: Path, fmt: str, many: bool) -> None:
    """``File("f.a").add_metadata(**{"checksum.value": ...})`` on a job's input: Pegasus
    checks it like a catalog's sum (``many``: enough jobs for the fast readers)."""
    data = tmp_path / "f.a"
    data.write_text("hello\n")
    rc = ReplicaCatalog().add_replica("local", "f.a", data)
    wf = Workflow("usesum")
    for i in range(300 if many else 1):
        f = File("f.a").add_metadata(**{"checksum.type": "sha256", "checksum.value": "0" * 64})
        wf.add_jobs(Job("cat", _id=f"j{i}").add_args(f).add_inputs(f)
                    .set_stdout(File(f"out{i}.txt")))  # fmt: skip
    wf.add_replica_catalog(rc)
    wf.write(str(tmp_path / f"workflow.{fmt}"), _format=fmt if fmt == "json" else "yml")
    res = ferry("plan", f"workflow.{fmt}", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    spec = specs(tmp_path / "run")["j0"]
    assert [i.sha256 for i in spec.inputs if i.lfn == "f.a"] == ["0" * 64]
