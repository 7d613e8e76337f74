"""Charliecloud for real: stage, unpack and run the busybox image with ch-run.

Needs Debian's ``charliecloud`` (ch-run) and ``busybox-static``; a missing
ch-run fails these tests (the CI test command installs both). ch-run 0.31
runs unprivileged and, on this kind of host, as root too (it maps root into
its user namespace); both are run here. As root, the unprivileged run uses
``setpriv`` to become ``nobody`` for the ch-run process only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.containers import (
    Charliecloud,
    ImageCache,
    ImageSpec,
    load_runtimes,
    select_runtime,
)
from tests.containers.images import build_busybox_archive, copy_fetch

pytestmark = pytest.mark.container

NOBODY = 65534


def _require_ch_run() -> str:
    path = shutil.which("ch-run")
    if path is None:
        pytest.fail("ch-run is not installed (apt-get install -y charliecloud)")
    return path


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="ferry-ch-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(
    argv: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_run_busybox_image_with_the_work_dir_bound(tmp_path: Path) -> None:
    _require_ch_run()
    archive = build_busybox_archive(tmp_path / "busybox.tar", gzip_layer=True)
    cache = ImageCache(tmp_path / "cache")
    spec = ImageSpec(f"file://{archive.path}", sha256=archive.sha256, mounts=[])
    staged = cache.stage(spec, copy_fetch)
    host = {
        **os.environ,
        "SECRET_HOST_VAR": "must-not-leak",
        "USER": os.environ.get("USER", "root"),
    }
    runtime = select_runtime(
        ImageSpec(spec.image, runtime="charliecloud"), staged, load_runtimes(), environ=host
    )
    assert isinstance(runtime, Charliecloud) and runtime.probe() is None

    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "genome.txt").write_text("ACGT\n")
    mounts = [f"{refs}:/refs"]
    prepared = runtime.prepare(staged, cache, mounts=mounts)
    assert prepared.action == "unpacked"
    assert Path(prepared.image).is_relative_to(cache.root / "rootfs")

    work = tmp_path / "work"
    work.mkdir()
    data = os.urandom(100_000)
    (work / "input.txt").write_bytes(data)
    argv, env = runtime.command(
        prepared,
        ["sh", "-c", "cat input.txt | sha256sum > output.txt"],
        workdir=str(work),
        env={"FOO": "bar"},
        mounts=mounts,
    )
    res = _run(argv, env)
    assert res.returncode == 0, res.stderr
    assert (work / "output.txt").read_text() == f"{hashlib.sha256(data).hexdigest()}  -\n"

    script = (
        'echo "FOO=$FOO HOME=$HOME IMG=$FERRY_IMAGE_VAR PATH=$PATH'
        ' SECRET=${SECRET_HOST_VAR:-unset} PWD=$(pwd)"; cat /hello.txt /refs/genome.txt;'
        " test ! -e /etc/removed.txt && ls /data"
    )
    argv, env = runtime.command(
        prepared, ["sh", "-c", script], workdir=str(work), env={"FOO": "bar"}, mounts=mounts
    )
    res = _run(argv, env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "FOO=bar HOME=/srv IMG=from-image"
        " PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SECRET=unset PWD=/srv",
        "hello from layer 2",
        "ACGT",
        "new.txt",
    ]

    # the exit code comes through
    argv, env = runtime.command(prepared, ["sh", "-c", "exit 3"], workdir=str(work), env={})
    assert _run(argv, env).returncode == 3

    # a second job reuses the unpacked image
    again = runtime.prepare(cache.stage(spec, copy_fetch), cache, mounts=mounts)
    assert again.action is None and again.image == prepared.image
    assert again.config == prepared.config


def test_run_as_an_unprivileged_user(public_tmp: Path) -> None:
    """ch-run needs no privilege: as root, drop to nobody for the ch-run process."""
    _require_ch_run()
    archive = build_busybox_archive(public_tmp / "busybox.tar")
    cache = ImageCache(public_tmp / "cache")
    staged = cache.stage(ImageSpec(str(archive.path), sha256=archive.sha256), copy_fetch)
    as_root = os.getuid() == 0
    uid = NOBODY if as_root else os.getuid()
    runtime = Charliecloud(
        {**os.environ, "USER": "nobody" if as_root else os.environ.get("USER", "")}, uid=uid
    )
    prepared = runtime.prepare(staged, cache)
    if as_root:
        # the cache is per user and private; let nobody into this one for the test
        for p in (cache.root, cache.root / "rootfs"):
            p.chmod(0o755)
    work = public_tmp / "work"
    work.mkdir()
    work.chmod(0o777)
    (work / "input.txt").write_text("abc\n")
    argv, env = runtime.command(
        prepared,
        ["sh", "-c", "id -u > uid.txt; sha256sum input.txt > output.txt"],
        workdir=str(work),
        env={},
    )
    if as_root:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    res = _run(argv, env)
    assert res.returncode == 0, res.stderr
    assert (work / "uid.txt").read_text().strip() == str(uid)
    digest = hashlib.sha256(b"abc\n").hexdigest()
    assert (work / "output.txt").read_text() == f"{digest}  input.txt\n"
    assert (work / "output.txt").stat().st_uid == uid


def test_directory_image_runs_in_place(tmp_path: Path) -> None:
    """A dir image (say, on CVMFS) is neither copied nor modified."""
    _require_ch_run()
    archive = build_busybox_archive(tmp_path / "busybox.tar")
    cache = ImageCache(tmp_path / "cache")
    runtime = Charliecloud()
    prepared = runtime.prepare(cache.stage(ImageSpec(str(archive.path)), copy_fetch), cache)
    rootfs = prepared.image  # an unpacked tree to use as a "shared" directory image
    before = sorted(os.listdir(rootfs))

    spec = ImageSpec(rootfs, kind="dir")
    staged = cache.stage(spec, copy_fetch)
    assert staged.linked and staged.path == rootfs
    in_place = runtime.prepare(staged, cache)
    assert in_place.image == rootfs and in_place.action is None
    work = tmp_path / "work"
    work.mkdir()
    argv, env = runtime.command(
        in_place, ["sh", "-c", "echo ok > out.txt"], workdir=str(work), env={}
    )
    res = _run(argv, env)
    assert res.returncode == 0, res.stderr
    assert (work / "out.txt").read_text() == "ok\n"
    assert sorted(os.listdir(rootfs)) == before
