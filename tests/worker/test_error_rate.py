"""``$PEGASUS_TRANSFER_ERROR_RATE``, pegasus-transfer's knob for testing integrity
checks: files written to local destinations get junk appended after their transfer,
and the worker's check of its staged inputs catches it, as pegasus-lite's does."""

from __future__ import annotations

import os
from pathlib import Path

from tests.worker.test_transfer_cli import ferry, sha
from tests.worker.test_worker import record, worker, write_spec

JUNK = b"Here be dragons! Eh, I mean pegai!"


def test_every_file_is_spoiled_at_100(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    (tmp_path / "a.dat").write_bytes(data)
    p = ferry(
        "transfer", "--sha256", sha(data), str(tmp_path / "a.dat"), str(tmp_path / "b.dat"),
        env={"PEGASUS_TRANSFER_ERROR_RATE": "100"},
    )  # fmt: skip
    # as pegasus-transfer: the transfer itself succeeds; a later check finds the error
    assert p.returncode == 0, p.stderr
    assert f"Introducing an error into {tmp_path}/b.dat" in p.stderr
    assert (tmp_path / "b.dat").read_bytes() == data + JUNK


def test_no_file_is_spoiled_at_0_or_with_a_bad_value(tmp_path: Path) -> None:
    (tmp_path / "a.dat").write_bytes(b"data")
    for i, value in enumerate(["0", "101", "many"]):
        dest = tmp_path / f"b{i}.dat"
        p = ferry("transfer", str(tmp_path / "a.dat"), str(dest),
                  env={"PEGASUS_TRANSFER_ERROR_RATE": value})  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert dest.read_bytes() == b"data"
        if value != "0":
            assert f"Invalid value for PEGASUS_TRANSFER_ERROR_RATE: {value}" in p.stderr


def test_the_worker_catches_a_spoiled_input(tmp_path: Path) -> None:
    data = os.urandom(5000)
    (tmp_path / "in.dat").write_bytes(data)
    spec = write_spec(
        tmp_path,
        arguments=["-c", f"touch {tmp_path}/ran"],
        inputs=[{"lfn": "in.dat", "sha256": sha(data),
                 "sources": [{"url": f"file://{tmp_path}/in.dat"}]}],
    )  # fmt: skip
    p = worker(spec, env={"PEGASUS_TRANSFER_ERROR_RATE": "100"})
    assert p.returncode == 4, p.stderr  # an integrity failure, before the job runs
    assert not (tmp_path / "ran").exists()
    failure = record(tmp_path)["failures"][0]
    assert failure["step"] == "integrity" and failure["lfn"] == "in.dat"
    assert failure["expected"] == sha(data) and failure["actual"] == sha(data + JUNK)


def test_verify_checksum_remote_catches_the_spoiled_file(tmp_path: Path) -> None:
    import json

    from tests.worker.test_transfer_cli import entry

    data = os.urandom(3000)
    (tmp_path / "a.dat").write_bytes(data)
    (tmp_path / "a.meta").write_text(json.dumps(
        [{"_id": "a.dat", "_type": "file", "_attributes": {
            "checksum.type": "sha256", "checksum.value": sha(data)}}]
    ))  # fmt: skip
    lst = [entry("a.dat", [(f"file://{tmp_path}/a.dat", 100)], f"file://{tmp_path}/out/a.dat",
                 verify_checksum_remote=True)]  # fmt: skip
    p = ferry("transfer", "-m", "2", "--backoff", "0.01", stdin=json.dumps(lst), cwd=tmp_path,
              env={"PEGASUS_TRANSFER_ERROR_RATE": "100"})  # fmt: skip
    # as pegasus-transfer: the check after the transfer fails, each round, and the
    # transfer fails; the spoiled file is not left
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("Introducing an error into") == 2
    assert "sha256" in p.stderr and "PEGASUS_TRANSFER_ERROR_RATE" in p.stderr
    assert not (tmp_path / "out" / "a.dat").exists()
