"""`ferry worker` running a job inside a real container (charliecloud), with the image
staged over HTTP from nginx into the node cache, inputs staged in, outputs staged out."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers.images import build_busybox_archive
from tests.servers import NginxServer

pytestmark = pytest.mark.container


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_worker(spec: dict[str, object], tmp: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / f"{spec['id']}.json"
    path.write_text(json.dumps(spec))
    return subprocess.run(
        [sys.executable, "-m", "ferry.worker", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FERRY_WORK_DIR": str(tmp), "FERRY_IMAGE_CACHE": str(cache)},
    )


def test_job_runs_in_charliecloud(nginx_server: NginxServer, tmp_path: Path) -> None:
    image = build_busybox_archive(tmp_path / "busybox.tar").path
    (nginx_server.root / "images").mkdir(exist_ok=True)
    served = nginx_server.root / "images" / "busybox.tar"
    served.write_bytes(image.read_bytes())
    image_sha = sha(served.read_bytes())
    data = b"container input\n" * 100
    (nginx_server.root / "cin.txt").write_bytes(data)
    cache = tmp_path / "cache"
    spec = {
        "version": 1,
        "id": "cjob",
        "executable": "/bin/sh",
        "arguments": [
            "-c",
            "sha256sum cin.txt > cout.txt && cat /etc/os-release 2>/dev/null; "
            "echo in-container=$FERRY_JOB_ID",
        ],
        "environment": {"SECRET_TOKEN": "tok-123"},
        "inputs": [
            {
                "lfn": "cin.txt",
                "sources": [{"url": f"{nginx_server.url}/cin.txt"}],
                "sha256": sha(data),
            }
        ],
        "outputs": [
            {"lfn": "cout.txt", "destinations": [{"url": f"file://{tmp_path}/out/cout.txt"}]}
        ],
        "container": {
            "image": f"{nginx_server.url}/images/busybox.tar",
            "kind": "docker-archive",
            "sha256": image_sha,
            "runtime": "charliecloud",
        },
        "success": {"stdout_must": ["^in-container=cjob2?$"]},
    }
    p = run_worker(spec, tmp_path, cache)
    assert p.returncode == 0, p.stderr
    out = (tmp_path / "out" / "cout.txt").read_text()
    assert out.startswith(sha(data))
    rec = json.loads((tmp_path / "cjob.1.json").read_text())
    assert rec["container"]["runtime"] == "charliecloud"
    assert rec["container"]["sha256"] == f"sha256:{image_sha}" and not rec["container"]["cached"]
    assert [t["direction"] for t in rec["transfers"]].count("image") == 1
    # the second attempt finds the image in the node cache: nothing downloaded
    spec["id"] = "cjob2"
    p = run_worker(spec, tmp_path, cache)
    assert p.returncode == 0, p.stderr
    rec2 = json.loads((tmp_path / "cjob2.1.json").read_text())
    assert rec2["container"]["cached"] and not any(
        t["direction"] == "image" for t in rec2["transfers"]
    )


def test_wrong_image_sum_fails_with_container_code(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    archive = build_busybox_archive(tmp_path / "bb.tar").path
    (nginx_server.root / "images").mkdir(exist_ok=True)
    (nginx_server.root / "images" / "bb2.tar").write_bytes(archive.read_bytes())
    spec = {
        "version": 1,
        "id": "badimg",
        "executable": "/bin/true",
        "container": {
            "image": f"{nginx_server.url}/images/bb2.tar",
            "kind": "docker-archive",
            "sha256": "0" * 64,
            "runtime": "charliecloud",
        },
    }
    p = run_worker(spec, tmp_path, tmp_path / "cache")
    assert p.returncode == 6, p.stderr
    rec = json.loads((tmp_path / "badimg.1.json").read_text())
    assert rec["failed_step"] == "container"
    assert "0" * 64 in rec["failures"][0]["reason"]
