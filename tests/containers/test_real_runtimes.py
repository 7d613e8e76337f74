"""apptainer, singularity, docker, podman for real -- where the machine has them working.

Their command lines are pinned in test_runtimes.py. Here each runtime runs
the busybox image when it is installed and works; otherwise the test skips
and says why (the only skips in the container tests: on the CI machine docker
is a client without a daemon, podman cannot set rlimits in the sandbox, and
apptainer/singularity are not packaged for Debian 12).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ferry.containers import (
    Apptainer,
    Docker,
    ImageCache,
    ImageSpec,
    Podman,
    Runtime,
    Singularity,
)
from tests.containers.images import build_busybox_archive, copy_fetch

pytestmark = pytest.mark.container


def _working(cls: type[Runtime]) -> Runtime:
    rt = cls()
    if not rt.available():
        pytest.skip(f"{cls.name} is not installed on this machine ({rt.unavailable_reason()})")
    reason = rt.probe(timeout=60)
    if reason:
        pytest.skip(f"{cls.name} is installed but does not work on this machine: {reason}")
    return rt


def _job(rt: Runtime, tmp_path: Path, image: str, kind: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    data = os.urandom(50_000)
    (work / "input.txt").write_bytes(data)
    cache = ImageCache(tmp_path / "cache")
    staged = cache.stage(ImageSpec(image, kind=kind), copy_fetch)
    prepared = rt.prepare(staged, cache)
    argv, env = rt.command(
        prepared,
        ["sh", "-c", 'cat input.txt | sha256sum > output.txt; echo "$FOO $HOME" > env.txt'],
        workdir=str(work),
        env={"FOO": "bar"},
    )
    import subprocess

    res = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert res.returncode == 0, res.stderr
    assert (work / "output.txt").read_text() == f"{hashlib.sha256(data).hexdigest()}  -\n"
    assert (work / "env.txt").read_text() == "bar /srv\n"


@pytest.mark.parametrize("cls", [Apptainer, Singularity], ids=["apptainer", "singularity"])
def test_apptainer_like(cls: type[Runtime], tmp_path: Path) -> None:
    rt = _working(cls)
    archive = build_busybox_archive(tmp_path / "busybox.tar")
    _job(rt, tmp_path, str(archive.path), "docker-archive")


@pytest.mark.parametrize("cls", [Docker, Podman], ids=["docker", "podman"])
def test_docker_like(cls: type[Runtime], tmp_path: Path) -> None:
    rt = _working(cls)
    archive = build_busybox_archive(tmp_path / "busybox.tar")
    cache = ImageCache(tmp_path / "probe-cache")
    prepared = rt.prepare(cache.stage(ImageSpec(str(archive.path)), copy_fetch), cache)
    try:
        # can this machine run any container at all? (a bare command, not ferry's)
        smoke = rt.run_tool(
            ["run", "--rm", "--pull=never", prepared.image, "/bin/true"], timeout=300
        )
        if smoke.returncode != 0:
            lines = (smoke.stderr or smoke.stdout).strip().splitlines() or ["(no output)"]
            pytest.skip(
                f"{cls.name} loads images but cannot run containers on this machine: {lines[-1]}"
            )
        _job(rt, tmp_path, str(archive.path), "docker-archive")
    finally:
        rt.run_tool(["rmi", "--force", prepared.image], timeout=300)
