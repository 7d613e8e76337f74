"""`ferry worker JOBSPEC` end to end, as a compute node runs it: a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_spec(tmp: Path, **fields: Any) -> Path:
    spec = {"version": 1, "id": "job1", "executable": "/bin/sh", **fields}
    path = tmp / "job1.json"
    path.write_text(json.dumps(spec))
    return path


def worker(
    spec: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "worker", str(spec), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FERRY_WORK_DIR": str(spec.parent), **(env or {})},
    )


def record(tmp: Path, attempt: int = 1) -> dict[str, Any]:
    return json.loads((tmp / f"job1.{attempt}.json").read_text())


def workdirs(tmp: Path) -> list[Path]:
    return [p for p in tmp.iterdir() if p.name.startswith("ferry-job1-")]


@pytest.fixture
def data(tmp_path: Path) -> bytes:
    payload = os.urandom(16 * 1024)
    (tmp_path / "in.dat").write_bytes(payload)
    return payload


def test_success_stages_runs_and_records(tmp_path: Path, data: bytes) -> None:
    spec = write_spec(
        tmp_path,
        arguments=["-c", "sha256sum in.dat > out.txt; echo ran; echo warn >&2"],
        inputs=[
            {
                "lfn": "in.dat",
                "sources": [
                    {"url": f"file://{tmp_path}/missing", "priority": 9},
                    {"url": f"file://{tmp_path}/in.dat", "priority": 1},
                ],
                "sha256": sha(data),
            }
        ],
        outputs=[
            {
                "lfn": "out.txt",
                "destinations": [
                    {"url": f"file://{tmp_path}/outputs/out.txt"},
                    {"url": f"file://{tmp_path}/copy/out.txt"},
                ],
            }
        ],
        success={"stdout_must": ["^ran$"]},
        labels={"workflow": "wf"},
    )
    p = worker(spec)
    assert p.returncode == 0, p.stderr
    out = (tmp_path / "outputs" / "out.txt").read_bytes()
    assert (
        out.startswith(sha(data).encode()) and (tmp_path / "copy" / "out.txt").read_bytes() == out
    )
    rec = record(tmp_path)
    assert rec["status"] == "succeeded" and rec["exit_code"] == 0 and rec["attempt"] == 1
    assert rec["cpu_user"] >= 0 and rec["peak_memory_bytes"] > 0 and rec["job_wall_time"] > 0
    assert rec["labels"] == {"workflow": "wf"}
    inp = [t for t in rec["transfers"] if t["direction"] == "input"][0]
    assert inp["sha256"] == f"sha256:{sha(data)}" and inp["attempts"] == 2
    assert inp["tried"][0]["error_type"] == "NotFound"
    outs = [t for t in rec["transfers"] if t["direction"] == "output"]
    assert len(outs) == 2 and all(t["sha256"] == f"sha256:{sha(out)}" for t in outs)
    assert "warn" in rec["stderr_tail"]
    assert workdirs(tmp_path) == []  # removed on success
    # a second run is attempt 2
    assert worker(spec).returncode == 0 and record(tmp_path, 2)["attempt"] == 2


def test_checksum_mismatch_fails_before_the_job_runs(tmp_path: Path, data: bytes) -> None:
    wrong = "ab" * 32
    spec = write_spec(
        tmp_path,
        arguments=["-c", f"touch {tmp_path}/ran"],
        inputs=[
            {"lfn": "in.dat", "sources": [{"url": f"file://{tmp_path}/in.dat"}], "sha256": wrong}
        ],
    )
    p = worker(spec)
    assert p.returncode == 4
    assert not (tmp_path / "ran").exists()
    rec = record(tmp_path)
    assert rec["failed_step"] == "integrity"
    f = rec["failures"][0]
    assert f["lfn"] == "in.dat" and f["expected"] == wrong and f["actual"] == sha(data)
    assert "in.dat" in p.stderr and wrong in p.stderr


def test_failing_job_keeps_workdir_when_asked(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, arguments=["-c", "echo broken >&2; exit 3"])
    p = worker(spec, "--keep-workdir")
    assert p.returncode == 1
    rec = record(tmp_path)
    assert rec["exit_code"] == 3 and rec["failed_step"] == "run"
    assert "broken" in rec["stderr_tail"]
    assert rec["workdir_kept"] and Path(rec["workdir"]).is_dir()
    assert rec["workdir"] in p.stderr


def test_allowed_exit_codes_and_missing_output(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        arguments=["-c", "exit 2"],
        success={"exit_codes": [0, 2]},
        outputs=[{"lfn": "never.txt", "destinations": [{"url": f"file://{tmp_path}/o"}]}],
    )
    p = worker(spec)
    assert p.returncode == 1
    rec = record(tmp_path)
    assert rec["failed_step"] == "success-check" and "never.txt" in rec["failures"][0]["reason"]
    assert workdirs(tmp_path) == []


def test_timeout_kills_the_job(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, arguments=["-c", "trap '' TERM; sleep 30"], timeout=1, kill_grace=1)
    t0 = time.monotonic()
    p = worker(spec)
    assert p.returncode == 1 and time.monotonic() - t0 < 15
    rec = record(tmp_path)
    assert rec["timed_out"] and rec["signal"] == signal.SIGKILL
    assert "timed out" in rec["failures"][0]["reason"]


def test_stage_in_and_stage_out_failures(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        arguments=["-c", "true"],
        inputs=[{"lfn": "gone", "sources": [{"url": f"file://{tmp_path}/gone"}]}],
    )
    assert worker(spec).returncode == 3
    assert record(tmp_path)["failed_step"] == "stage-in"
    (tmp_path / "blocker").write_text("")
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo x > o"],
        outputs=[{"lfn": "o", "destinations": [{"url": f"file://{tmp_path}/blocker/sub/o"}]}],
    )
    assert worker(spec).returncode == 5
    assert record(tmp_path, 2)["failed_step"] == "stage-out"


def test_bad_spec_names_the_field(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, inputs=[{"lfn": "a", "sources": [{"url": "/x"}], "sha256": "zz"}])
    p = worker(spec)
    assert p.returncode == 2 and "$.inputs[0].sha256" in p.stderr
    spec.write_text(json.dumps({"version": 1, "id": "j", "executable": "x", "argumnets": []}))
    p = worker(spec)
    assert p.returncode == 2 and "argumnets" in p.stderr


def test_executable_input_gets_its_bit_and_runs(tmp_path: Path) -> None:
    (tmp_path / "tool.sh").write_text("#!/bin/sh\necho tool-ran > result\n")
    spec = write_spec(
        tmp_path,
        executable="tool.sh",
        inputs=[
            {
                "lfn": "tool.sh",
                "sources": [{"url": f"file://{tmp_path}/tool.sh"}],
                "executable": True,
            }
        ],
        outputs=[{"lfn": "result", "destinations": [{"url": f"file://{tmp_path}/r"}]}],
    )
    p = worker(spec)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "r").read_text() == "tool-ran\n"


CKPT_JOB = r"""
n=0
[ -f state.ckpt ] && n=$(cat state.ckpt)
echo "start $n" >> progress.log
while [ $n -lt 6 ]; do
  n=$((n+1)); echo $n > state.ckpt.tmp; mv state.ckpt.tmp state.ckpt
  [ -n "$SLOW" ] && sleep 0.5
done
echo "done from $n" > result.txt
"""


def test_eviction_stages_checkpoint_out_and_next_attempt_restores_it(tmp_path: Path) -> None:
    ck_url = f"file://{tmp_path}/checkpoints/state.ckpt"
    spec = write_spec(
        tmp_path,
        arguments=["-c", CKPT_JOB],
        environment={"SLOW": "1"},
        checkpoints=[{"lfn": "state.ckpt", "url": ck_url}],
        outputs=[{"lfn": "result.txt", "destinations": [{"url": f"file://{tmp_path}/result.txt"}]}],
        kill_grace=2,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry.planner.cli", "worker", str(spec)],
        env={**os.environ, "FERRY_WORK_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait until the job has made some progress, then evict it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = list(tmp_path.glob("ferry-job1-*/state.ckpt"))
        if states and states[0].read_text().strip() not in ("", "1"):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    rec = record(tmp_path)
    assert rec["evicted"] and rec["status"] == "failed"
    saved = int((tmp_path / "checkpoints" / "state.ckpt").read_text())
    assert 2 <= saved < 6
    assert any(t["direction"] == "checkpoint-out" and t["ok"] for t in rec["transfers"])
    assert not (tmp_path / "result.txt").exists()
    # attempt 2 restores the checkpoint and finishes from where it stopped
    spec_data = json.loads(spec.read_text())
    spec_data["environment"] = {}
    spec.write_text(json.dumps(spec_data))
    p = worker(spec)
    assert p.returncode == 0, p.stderr
    rec2 = record(tmp_path, 2)
    assert any(t["direction"] == "checkpoint-in" for t in rec2["transfers"])
    assert (tmp_path / "result.txt").read_text() == "done from 6\n"


def test_periodic_checkpoint_stage_out(tmp_path: Path) -> None:
    ck_url = f"file://{tmp_path}/ck/state.ckpt"
    spec = write_spec(
        tmp_path,
        arguments=["-c", "for i in 1 2 3 4 5 6 7 8; do echo $i > s.tmp; mv s.tmp state.ckpt; sleep 0.25; done"],
        checkpoints=[{"lfn": "state.ckpt", "url": ck_url}],
        checkpoint_interval=0.5,
    )
    p = worker(spec)
    assert p.returncode == 0, p.stderr
    # the job succeeded, so no final checkpoint stage-out: what is there was staged while it ran
    assert 1 <= int((tmp_path / "ck" / "state.ckpt").read_text()) <= 8
    assert not any(t["direction"] == "checkpoint-out" for t in record(tmp_path)["transfers"])


def test_spec_from_a_packed_shard(tmp_path: Path) -> None:
    """`ferry worker FILE@OFFSET` runs the JSON line at that offset (large plans pack specs)."""
    lines = [
        json.dumps({"version": 1, "id": f"job{i}", "executable": "/bin/sh",
                    "arguments": ["-c", f"echo {i} > o"],
                    "outputs": [{"lfn": "o", "destinations": [{"url": f"file://{tmp_path}/o{i}"}]}],
                    "records_dir": str(tmp_path / "records")})
        for i in range(3)
    ]
    shard = tmp_path / "0000.jsonl"
    shard.write_text("\n".join(lines) + "\n")
    offset = len(lines[0]) + 1
    p = subprocess.run(
        [sys.executable, "-m", "ferry.worker", f"{shard}@{offset}"], capture_output=True,
        text=True, timeout=120, env={**os.environ, "FERRY_WORK_DIR": str(tmp_path)},
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o1").read_text() == "1\n" and not (tmp_path / "o0").exists()
    assert (tmp_path / "records" / "job1.1.json").exists()


def test_worker_arguments_without_argparse_match_argparse() -> None:
    """``ferry worker JOBSPEC`` skips argparse; it must mean exactly what argparse parses."""
    import argparse

    from ferry.worker.worker_cli import add_arguments, fast_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert vars(fast_args(["spec.json"])) == vars(parser.parse_args(["spec.json"]))
    assert vars(fast_args(["shard.jsonl@120"])) == vars(parser.parse_args(["shard.jsonl@120"]))
    # options, help and anything but one path go through argparse
    for argv in (["-d", "s.json"], ["s.json", "--keep-workdir"], ["--help"], [], ["a", "b"]):
        assert fast_args(argv) is None
