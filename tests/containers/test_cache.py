"""The node image cache: keys, integrity, locking between real processes, shared paths."""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import threading
from pathlib import Path

import pytest

from ferry.containers import ImageCache, ImageSpec, LockTimeout, default_cache_root, shared_prefixes
from ferry.plugins.errors import ConfigError, IntegrityError, NotFound, TransientError
from tests.containers.images import copy_fetch, slow_counting_fetch


class CountingFetch:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    def __call__(self, url: str, dest: str, expected: str | None) -> str:
        self.calls.append((url, dest, expected))
        return copy_fetch(url, dest, expected)


@pytest.fixture
def image_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "tool.tar"
    path.parent.mkdir()
    data = os.urandom(300_000)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_sha256_keyed_hit_needs_no_download(tmp_path: Path, image_file: tuple[Path, str]) -> None:
    src, sha = image_file
    cache = ImageCache(tmp_path / "cache")
    fetch = CountingFetch()
    spec = ImageSpec(f"file://{src}", sha256=sha)

    first = cache.stage(spec, fetch)
    assert len(fetch.calls) == 1
    url, dest, expected = fetch.calls[0]
    assert url == f"file://{src}" and expected == sha
    assert Path(dest).parent.parent == cache.root / "tmp"  # downloads land in tmp/ first
    assert (first.kind, first.sha256, first.cached, first.linked) == (
        "docker-archive",
        sha,
        False,
        False,
    )
    assert first.path == str(cache.root / "blobs" / f"{sha}.tar")
    assert hashlib.sha256(Path(first.path).read_bytes()).hexdigest() == sha

    # any URL naming that sha256 is a hit: the URL is not even looked at
    again = cache.stage(ImageSpec("https://elsewhere.example/other-name.tar", sha256=sha), fetch)
    assert len(fetch.calls) == 1
    assert again.path == first.path and again.cached
    assert os.listdir(cache.root / "tmp") == []


def test_url_keyed_then_sha_recorded(tmp_path: Path, image_file: tuple[Path, str]) -> None:
    src, sha = image_file
    cache = ImageCache(tmp_path / "cache")
    fetch = CountingFetch()
    first = cache.stage(ImageSpec(str(src)), fetch)  # a plain path goes as file://
    assert fetch.calls[0][0] == f"file://{src}" and fetch.calls[0][2] is None
    assert first.sha256 == sha and first.key == sha
    second = cache.stage(ImageSpec(f"file://{src}"), fetch)
    assert len(fetch.calls) == 1 and second.cached and second.path == first.path
    third = cache.stage(ImageSpec("https://mirror/tool.tar", sha256=sha), fetch)
    assert len(fetch.calls) == 1 and third.path == first.path
    hit = cache.lookup(ImageSpec(str(src)))
    assert hit is not None and hit.path == first.path and hit.cached


def test_wrong_sha256_fails_and_caches_nothing(
    tmp_path: Path, image_file: tuple[Path, str]
) -> None:
    src, sha = image_file
    cache = ImageCache(tmp_path / "cache")
    wrong = "0" * 64
    with pytest.raises(IntegrityError) as exc:
        cache.stage(ImageSpec(f"file://{src}", sha256=wrong), CountingFetch())
    assert exc.value.expected == wrong and exc.value.actual == sha
    assert str(src) in str(exc.value)
    assert _tree(cache.root / "blobs") == [] and os.listdir(cache.root / "tmp") == []
    assert cache.lookup(ImageSpec(f"file://{src}", sha256=wrong)) is None


def test_failed_fetch_caches_nothing(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")

    def failing(url: str, dest: str, expected: str | None) -> str:
        Path(dest + ".part").write_bytes(b"partial")
        raise NotFound("404", url=url)

    with pytest.raises(NotFound):
        cache.stage(ImageSpec("https://h/x.sif"), failing)
    assert _tree(cache.root / "blobs") == [] and os.listdir(cache.root / "tmp") == []


def _stage_in_process(
    root: str,
    image: str,
    sha: str | None,
    count_file: str,
    barrier: multiprocessing.synchronize.Barrier,
    out: str,
) -> None:
    """Runs in a child process: wait for the other one, then stage the image."""
    cache = ImageCache(root)
    barrier.wait()
    staged = cache.stage(ImageSpec(image, sha256=sha), slow_counting_fetch(count_file, 1.5))
    Path(out).write_text(f"{staged.path}\n{staged.cached}\n")


@pytest.mark.parametrize("with_sha", [True, False], ids=["sha256-key", "url-key"])
def test_two_processes_staging_at_once_share_one_download(
    tmp_path: Path, image_file: tuple[Path, str], with_sha: bool
) -> None:
    src, sha = image_file
    root = str(tmp_path / "cache")
    count = tmp_path / "fetches"
    count.touch()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [
        ctx.Process(
            target=_stage_in_process,
            args=(root, f"file://{src}", sha if with_sha else None, str(count), barrier, str(o)),
        )
        for o in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    calls = count.read_text().splitlines()
    assert len(calls) == 1, calls
    results = [o.read_text().split() for o in outs]
    assert results[0][0] == results[1][0] == str(Path(root) / "blobs" / f"{sha}.tar")
    assert sorted(r[1] for r in results) == ["False", "True"]  # one downloaded, one reused


def test_shared_filesystem_images_are_linked_not_copied(
    tmp_path: Path, image_file: tuple[Path, str]
) -> None:
    src, sha = image_file
    shared = src.parent
    cache = ImageCache(tmp_path / "cache", environ={"FERRY_SHARED_PATHS": f"/nowhere:{shared}"})
    assert cache.shared == ("/cvmfs", "/nowhere", str(shared))
    fetch = CountingFetch()
    for image in (str(src), f"file://{src}"):
        staged = cache.stage(ImageSpec(image, sha256=sha), fetch)
        assert staged.linked and staged.path == str(src) and staged.key == sha
    assert fetch.calls == [] and _tree(cache.root / "blobs") == []
    # without a sha256, derived data is keyed by path, size and mtime
    staged = cache.stage(ImageSpec(str(src)), fetch)
    assert staged.linked and staged.sha256 is None and staged.key.startswith("path-")
    with pytest.raises(NotFound):
        cache.stage(ImageSpec(str(shared / "missing.sif")), fetch)


def test_directory_images_are_used_in_place(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    cache = ImageCache(tmp_path / "cache", shared=())
    fetch = CountingFetch()
    staged = cache.stage(ImageSpec(str(rootfs)), fetch)
    assert (staged.kind, staged.path, staged.linked) == ("dir", str(rootfs), True)
    with pytest.raises(ConfigError, match="directory image"):
        cache.stage(ImageSpec("https://h/rootfs/", kind="dir"), fetch)
    assert fetch.calls == []


def test_registry_references_are_passed_through(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    staged = cache.stage(ImageSpec("docker://busybox:1.36"), CountingFetch())
    assert staged.registry and staged.path == "docker://busybox:1.36" and staged.kind == "docker"


def test_cache_location_and_shared_prefixes() -> None:
    assert default_cache_root({"FERRY_IMAGE_CACHE": "/scratch/imgs"}) == Path("/scratch/imgs")
    assert default_cache_root({}) == Path(f"/var/tmp/ferry-images-{os.getuid()}")
    assert shared_prefixes({}) == ("/cvmfs",)
    assert shared_prefixes({"FERRY_SHARED_PATHS": "/gpfs/apps::relative:/cvmfs/"}) == (
        "/cvmfs",
        "/gpfs/apps",
    )


def test_cache_root_from_environment(tmp_path: Path) -> None:
    cache = ImageCache(environ={"FERRY_IMAGE_CACHE": str(tmp_path / "c")})
    assert cache.root == tmp_path / "c"
    assert {p.name for p in cache.root.iterdir()} >= {"blobs", "locks", "tmp", "rootfs"}


def test_lock_timeout_is_transient(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with cache.lock("sha-x"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(LockTimeout, match="waited") as exc, cache.lock("sha-x", timeout=0.3):
            pass
        assert isinstance(exc.value, TransientError)
    finally:
        release.set()
        t.join()
    with cache.lock("sha-x", timeout=0.3):
        pass


def test_a_staged_url_is_remembered_for_specs_without_sha256(
    tmp_path: Path, image_file: tuple[Path, str]
) -> None:
    src, sha = image_file
    cache = ImageCache(tmp_path / "cache")
    fetch = CountingFetch()
    cache.stage(ImageSpec(f"file://{src}", sha256=sha), fetch)
    again = cache.stage(ImageSpec(f"file://{src}"), fetch)
    assert len(fetch.calls) == 1 and again.cached and again.sha256 == sha


def test_default_location_is_refused_when_not_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferry.containers import cache as cache_module
    from ferry.plugins.errors import PermissionDenied

    where = tmp_path / "ferry-images"
    monkeypatch.setattr(cache_module, "default_cache_root", lambda env=None: where)
    assert ImageCache(environ={}).root == where  # made 0700 on first use
    assert (where.stat().st_mode & 0o777) == 0o700
    shutil.rmtree(where)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where.symlink_to(elsewhere)
    with pytest.raises(PermissionDenied, match="not a plain directory"):
        ImageCache(environ={})
    if os.getuid() == 0:
        where.unlink()
        where.mkdir()
        os.chown(where, 65534, 65534)
        with pytest.raises(PermissionDenied, match="belongs to uid 65534"):
            ImageCache(environ={})
