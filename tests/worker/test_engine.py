"""The engine over local files and in-process test protocols: routes, retries, integrity."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from ferry.plugins.errors import ConnectError, NotFound
from ferry.plugins.protocol import Capability, Protocol, ProtocolInfo, Sink
from ferry.plugins.registry import Registry
from ferry.plugins.spec import hookimpl
from ferry.plugins.url import URL, parse_url
from ferry.worker.engine import Engine, TransferConfig
from ferry.worker.request import Endpoint, MkdirRequest, RemoveRequest, TransferRequest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def req(src: str | list[tuple[str, float]], dest: str, **kw: object) -> TransferRequest:
    if isinstance(src, str):
        sources = [Endpoint(parse_url(src))]
    else:
        sources = [Endpoint(parse_url(u), priority=p) for u, p in src]
    return TransferRequest(sources=sources, dest=Endpoint(parse_url(dest)), **kw)  # type: ignore[arg-type]


def no_sleep(_: float) -> None:
    pass


def engine(registry: Registry | None = None, **kw: object) -> Engine:
    cfg = TransferConfig(sleep=no_sleep, **kw)  # type: ignore[arg-type]
    return Engine(registry or Registry(), cfg)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if "ferry-part" in p.name]


# -- an in-process protocol whose faults the test controls -----------------


class FlakyProtocol(Protocol):
    """Serves ``flaky://host/<name>`` from a dict; fails as told, counts calls."""

    name = "flaky"
    objects: dict[str, bytes] = {}
    failures: dict[str, list[type[Exception]]] = {}
    calls: dict[str, int] = {}
    cut_after: dict[str, int] = {}
    #: objects whose get writes half, then waits for the event
    hold: dict[str, threading.Event] = {}
    lock = threading.Lock()

    def get(self, url: URL, sink: Sink, progress=None) -> None:  # type: ignore[no-untyped-def]
        key = url.path.lstrip("/")
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            plan = self.failures.get(key, [])
            fault = plan.pop(0) if plan else None
        if key not in self.objects:
            raise NotFound(f"flaky: {url} not found", url=str(url))
        data = self.objects[key]
        sink.set_size(len(data))
        if fault is not None:
            half = len(data) // 2
            sink.write(data[:half])  # bytes land in the temp file, then the fault
            raise fault(f"flaky: injected {fault.__name__} on {url}", url=str(url))
        gate = self.hold.get(key)
        if gate is not None:
            sink.write(data[: len(data) // 2])
            gate.wait(10)
            sink.write(data[len(data) // 2 :])
            return
        sink.write(data)

    def mkdir(self, url: URL) -> None:
        raise NotADirectoryError(f"a plugin bug, on {url.path}")  # not a ferry error


@hookimpl
def ferry_protocols() -> list[ProtocolInfo]:
    return [
        ProtocolInfo(
            name="flaky",
            schemes=("flaky",),
            capabilities=frozenset({Capability.GET}),
            implementation=f"{__name__}:FlakyProtocol",
        )
    ]


@pytest.fixture
def flaky() -> type[FlakyProtocol]:
    FlakyProtocol.objects.clear()
    FlakyProtocol.failures.clear()
    FlakyProtocol.calls.clear()
    FlakyProtocol.hold.clear()
    return FlakyProtocol


@pytest.fixture
def flaky_registry(flaky: type[FlakyProtocol]) -> Registry:
    import sys

    return Registry(plugins={"flaky-test": sys.modules[__name__]})


# -- local copies ----------------------------------------------------------


def test_copy_checks_sha256_and_creates_dirs(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # > one pump buffer: the threaded path
    (tmp_path / "a").write_bytes(data)
    dest = tmp_path / "x" / "y" / "b"
    [res] = engine().run([req(str(tmp_path / "a"), f"file://{dest}", sha256=sha(data))])
    assert res.ok, res.error
    assert dest.read_bytes() == data
    assert res.sha256 == sha(data)
    assert res.bytes == len(data)
    assert res.route == "download"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [0, 1, 16 * 1024])
def test_small_and_empty_files(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "a").write_bytes(data)
    [res] = engine().run([req(str(tmp_path / "a"), str(tmp_path / "b"))])
    assert res.ok and (tmp_path / "b").read_bytes() == data and res.sha256 == sha(data)


def test_mismatch_leaves_nothing_and_names_both_sums(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"hello\n")
    wrong = "0" * 64
    [res] = engine().run([req(str(tmp_path / "a"), str(tmp_path / "out" / "b"), sha256=wrong)])
    assert not res.ok
    assert not (tmp_path / "out" / "b").exists()
    assert leftovers(tmp_path) == []
    assert wrong in res.error and sha(b"hello\n") in res.error
    assert res.error_type == "IntegrityError"
    # a mismatch is permanent for that source: one try, no retry rounds
    assert len(res.attempts) == 1


def test_mismatch_keeps_existing_destination(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"new")
    (tmp_path / "b").write_bytes(b"old")
    [res] = engine().run([req(str(tmp_path / "a"), str(tmp_path / "b"), sha256="1" * 64)])
    assert not res.ok and (tmp_path / "b").read_bytes() == b"old"


def test_copy_replaces_an_existing_destination(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"new contents")
    (tmp_path / "b").write_bytes(b"old")
    [res] = engine().run([req(str(tmp_path / "a"), str(tmp_path / "b"), executable=True)])
    assert res.ok, res.error
    assert (tmp_path / "b").read_bytes() == b"new contents"
    assert os.access(tmp_path / "b", os.X_OK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_unnamed_sink_is_readable_by_path_and_commits(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    sink = Sink.beside(str(dest), str(tmp_path / "d.part"))
    try:
        sink.write(b"abc")
        # protocols reopen the file by its path while writing (ranged streams hash it)
        with open(sink.path, "rb") as f:
            assert f.read() == b"abc"
        if sink.path.startswith("/proc/"):
            assert list(tmp_path.iterdir()) == []  # no name until the commit
        sink.commit(str(dest))
    finally:
        sink.discard()
    assert dest.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_named_part_files_where_unnamed_files_cannot_be_made(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flaky: type[FlakyProtocol],
    flaky_registry: Registry,
) -> None:
    # a file system without O_TMPFILE (or no /proc): the engine falls back to part files
    import ferry.plugins.protocol as protocol

    monkeypatch.setattr(protocol, "_PROC_FD", False)
    sink = Sink.beside(str(tmp_path / "x"), str(tmp_path / "x.part"))
    assert sink.path == str(tmp_path / "x.part") and (tmp_path / "x.part").exists()
    sink.discard()
    assert not (tmp_path / "x.part").exists()
    (tmp_path / "a").write_bytes(b"data")
    [ok] = engine().run([req(str(tmp_path / "a"), str(tmp_path / "out" / "b"))])
    assert ok.ok and (tmp_path / "out" / "b").read_bytes() == b"data"
    flaky.objects["f"] = b"0123456789"
    flaky.failures["f"] = [NotFound]
    [bad] = engine(flaky_registry, max_attempts=1).run(
        [req("flaky://host/f", str(tmp_path / "out" / "c"))]
    )
    assert not bad.ok
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]


def test_abort_removes_the_named_files_of_running_transfers(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flaky: type[FlakyProtocol],
    flaky_registry: Registry,
) -> None:
    # what `ferry transfer` does on SIGTERM before it ends by the signal: a part file
    # (a file system without unnamed files) must not outlive the process
    import ferry.plugins.protocol as protocol

    monkeypatch.setattr(protocol, "_PROC_FD", False)
    flaky.objects["big"] = os.urandom(100_000)
    gate = flaky.hold["big"] = threading.Event()
    eng = engine(flaky_registry, max_attempts=1)
    out = tmp_path / "out"
    results: list[object] = []
    t = threading.Thread(
        target=lambda: results.extend(eng.run([req("flaky://h/big", str(out / "big"))]))
    )
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not (out.is_dir() and leftovers(out)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(leftovers(out)) == 1  # the running transfer's part file
        eng.abort()
        assert leftovers(out) == []  # gone at once, while the transfer still runs
    finally:
        gate.set()
        t.join(10)
    [res] = results
    assert not res.ok  # type: ignore[attr-defined]
    assert os.listdir(out) == []  # and what it wrote afterwards got no name


def test_refused_link_copies_the_file_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where naming an unnamed file is refused (a sandbox, some file systems: not
    reproducible here, so os.link is made to refuse), the bytes are copied to the
    part file and renamed, and later sinks on that device use part files."""
    import errno

    import ferry.plugins.protocol as protocol

    def refuse(*args: object, **kw: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(protocol, "_no_tmpfile_devices", set())
    sink = Sink.beside(str(tmp_path / "d"), str(tmp_path / "d.part"))
    if not sink.path.startswith("/proc/"):
        pytest.skip("this file system has no unnamed files")
    data = os.urandom(3 << 20)
    sink.write(data)
    with monkeypatch.context() as m:
        m.setattr(os, "link", refuse)
        sink.commit(str(tmp_path / "d"), executable=True)
    assert (tmp_path / "d").read_bytes() == data
    assert os.access(tmp_path / "d", os.X_OK)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert os.stat(tmp_path).st_dev in protocol._no_tmpfile_devices
    later = Sink.beside(str(tmp_path / "e"), str(tmp_path / "e.part"))
    assert later.path == str(tmp_path / "e.part")
    later.discard()


def test_a_killed_transfer_leaves_nothing(tmp_path: Path) -> None:
    """A process killed mid-write (kill -9) leaves no partial file beside the destination."""
    import signal
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "from ferry.plugins.protocol import Sink\n"
        "sink = Sink.beside(sys.argv[1], sys.argv[1] + '.part')\n"
        "sink.write(b'x' * 100000)\n"
        "print(sink.path, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "dest")], capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.startswith("/proc/self/fd/")  # this machine's file systems have O_TMPFILE
    assert list(tmp_path.iterdir()) == []


def test_missing_source_falls_back_to_next_replica(tmp_path: Path) -> None:
    (tmp_path / "good").write_bytes(b"data")
    r = req([(str(tmp_path / "missing"), 50), (str(tmp_path / "good"), 10)], str(tmp_path / "d"))
    [res] = engine().run([r])
    assert res.ok and res.source == f"file://{tmp_path}/good"
    assert [a.ok for a in res.attempts] == [False, True]
    assert res.attempts[0].error_type == "NotFound"
    assert (tmp_path / "d").read_bytes() == b"data"


def test_priorities_order_sources(tmp_path: Path) -> None:
    (tmp_path / "low").write_bytes(b"low")
    (tmp_path / "high").write_bytes(b"high")
    r = req([(str(tmp_path / "low"), 1), (str(tmp_path / "high"), 100)], str(tmp_path / "d"))
    [res] = engine().run([r])
    assert (tmp_path / "d").read_bytes() == b"high" and len(res.attempts) == 1


def test_permanent_failure_does_not_burn_rounds(tmp_path: Path) -> None:
    [res] = engine(max_attempts=5).run([req(str(tmp_path / "nope"), str(tmp_path / "d"))])
    assert not res.ok and len(res.attempts) == 1 and res.error_type == "NotFound"
    assert str(tmp_path / "nope") in res.error
    assert not (tmp_path / "d").exists()


def test_unwritable_destination(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "file").write_bytes(b"")  # a file where a directory should be
    [res] = engine().run([req(str(tmp_path / "a"), str(tmp_path / "file" / "sub" / "b"))])
    assert not res.ok and str(tmp_path / "file") in res.error


def test_executable_bit(tmp_path: Path) -> None:
    (tmp_path / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    [res] = engine().run(
        [req(str(tmp_path / "tool"), str(tmp_path / "bin" / "t"), executable=True)]
    )
    assert res.ok and os.access(tmp_path / "bin" / "t", os.X_OK)


def test_symlink_routes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    [r1, r2] = engine().run(
        [
            req(str(tmp_path / "a"), f"symlink://{tmp_path}/l1"),
            req(str(tmp_path / "a"), str(tmp_path / "l2"), symlink=True),
        ]
    )
    assert r1.ok and r2.ok
    assert os.readlink(tmp_path / "l1") == str(tmp_path / "a")
    assert os.readlink(tmp_path / "l2") == str(tmp_path / "a")
    [bad] = engine().run([req(str(tmp_path / "none"), f"symlink://{tmp_path}/l3")])
    assert not bad.ok and not os.path.lexists(tmp_path / "l3")
    [lazy] = engine().run(
        [req(str(tmp_path / "none"), f"symlink://{tmp_path}/l4", verify_symlink_source=False)]
    )
    assert lazy.ok and os.path.islink(tmp_path / "l4")


def test_linking_a_file_onto_itself_keeps_it(tmp_path: Path) -> None:
    # pegasus-transfer leaves a file alone when source and destination are one file;
    # a link put in its place would point at itself and the bytes would be gone
    (tmp_path / "a").write_bytes(b"keep me")
    (tmp_path / "via").symlink_to(tmp_path / "a")
    results = engine().run(
        [
            req(str(tmp_path / "a"), str(tmp_path / "a"), symlink=True),
            req(str(tmp_path / "a"), f"symlink://{tmp_path}/a"),
            req(str(tmp_path / "via"), str(tmp_path / "a"), symlink=True),
        ]
    )
    assert all(r.ok for r in results), [r.error for r in results]
    assert not (tmp_path / "a").is_symlink()
    assert (tmp_path / "a").read_bytes() == b"keep me"


def test_same_file_is_not_copied(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"same")
    [res] = engine().run([req(str(tmp_path / "a"), str(tmp_path / "a"))])
    assert res.ok and (tmp_path / "a").read_bytes() == b"same"


def test_moveto(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"moved")
    [res] = engine().run([req(str(tmp_path / "a"), f"moveto://{tmp_path}/d/b")])
    assert res.ok and not (tmp_path / "a").exists()
    assert (tmp_path / "d" / "b").read_bytes() == b"moved"


def test_mkdir_and_remove(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y"
    [mk] = engine().run([MkdirRequest(Endpoint(parse_url(str(target))))])
    assert mk.ok and target.is_dir()
    (target / "f").write_bytes(b"1")
    [rm] = engine().run([RemoveRequest(Endpoint(parse_url(str(tmp_path / "x"))), recursive=True)])
    assert rm.ok and not (tmp_path / "x").exists()
    [again] = engine().run([RemoveRequest(Endpoint(parse_url(str(tmp_path / "x" / "f"))))])
    assert again.ok  # removing what is gone is fine


def test_many_files_in_parallel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blobs = {f"f{i}": os.urandom(1000 + i) for i in range(200)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    reqs = [
        req(str(src / n), str(tmp_path / "dst" / n), sha256=sha(d), lfn=n) for n, d in blobs.items()
    ]
    results = engine(threads=8).run(reqs)
    assert all(r.ok for r in results)
    assert [r.request.lfn for r in results] == list(blobs)  # type: ignore[union-attr]
    for n, d in blobs.items():
        assert (tmp_path / "dst" / n).read_bytes() == d


def test_source_that_grows_while_read_is_caught(tmp_path: Path) -> None:
    """A source appended to during the copy: the try fails, nothing is left behind."""
    src = tmp_path / "growing"
    # large enough that each try spans many GIL switch intervals (5 ms) while it reads
    src.write_bytes(os.urandom(48 << 20))
    stop, growing = threading.Event(), threading.Event()

    def grow() -> None:
        with open(src, "ab") as f:
            while not stop.is_set():
                f.write(b"x" * 4096)
                f.flush()
                growing.set()
                time.sleep(0.0005)

    t = threading.Thread(target=grow)
    t.start()
    assert growing.wait(10)
    try:
        [res] = engine(max_attempts=2).run([req(str(src), str(tmp_path / "out"))])
    finally:
        stop.set()
        t.join()
    assert not res.ok
    assert res.error_type == "IncompleteTransfer"
    assert "changed while it was read" in res.error
    assert len(res.attempts) == 2  # transient: retried
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# -- retries with an in-process protocol -----------------------------------


def test_transient_faults_are_retried_then_succeed(
    tmp_path: Path, flaky: type[FlakyProtocol], flaky_registry: Registry
) -> None:
    data = os.urandom(5000)
    flaky.objects["obj"] = data
    flaky.failures["obj"] = [ConnectError, ConnectError]
    pauses: list[float] = []
    eng = Engine(flaky_registry, TransferConfig(max_attempts=3, sleep=pauses.append))
    [res] = eng.run([req("flaky://h/obj", str(tmp_path / "o"), sha256=sha(data))])
    assert res.ok and (tmp_path / "o").read_bytes() == data
    assert flaky.calls["obj"] == 3
    assert [a.ok for a in res.attempts] == [False, False, True]
    assert len(pauses) == 2 and pauses[1] >= pauses[0] * 1.0 > 0  # backoff between rounds
    assert leftovers(tmp_path) == []


def test_transient_exhausts_attempts(
    tmp_path: Path,
    flaky: type[FlakyProtocol],
    flaky_registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky.objects["obj"] = b"abc" * 1000
    flaky.failures["obj"] = [ConnectError] * 10
    eng = Engine(flaky_registry, TransferConfig(max_attempts=3, sleep=no_sleep))
    with caplog.at_level("INFO", logger="ferry.worker.engine"):
        [res] = eng.run([req("flaky://h/obj", str(tmp_path / "o"), lfn="obj")])
    # each pause is said before it is taken (a long one should not look like a hang)
    waits = [r.getMessage() for r in caplog.records if "next round in" in r.getMessage()]
    assert len(waits) == 2 and waits[0].startswith("obj: round 1 failed; next round in ")
    assert not res.ok and flaky.calls["obj"] == 3
    assert "failed after 3 round(s)" in res.error and "flaky://h/obj" in res.error
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_each_round_walks_every_replica(
    tmp_path: Path, flaky: type[FlakyProtocol], flaky_registry: Registry
) -> None:
    flaky.objects["a"] = flaky.objects["b"] = b"payload"
    flaky.failures["a"] = [ConnectError] * 5
    flaky.failures["b"] = [ConnectError]
    eng = Engine(flaky_registry, TransferConfig(max_attempts=3, sleep=no_sleep))
    [res] = eng.run([req([("flaky://h/a", 2), ("flaky://h/b", 1)], str(tmp_path / "o"))])
    assert res.ok and res.source == "flaky://h/b"
    # round 1: a fails, b fails; round 2: a fails, b succeeds
    assert [(a.attempt, a.source, a.ok) for a in res.attempts] == [
        (1, "flaky://h/a", False),
        (1, "flaky://h/b", False),
        (2, "flaky://h/a", False),
        (2, "flaky://h/b", True),
    ]


def test_unknown_scheme_is_a_clear_error(tmp_path: Path) -> None:
    [res] = engine().run([req("nosuch://h/x", str(tmp_path / "o"))])
    assert not res.ok and "no plugin serves nosuch://" in res.error
    assert len(res.attempts) == 1


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /mnt/shared rw,relatime shared:7 - nfs4 filer:/export rw,vers=4.2
41 27 0:51 / /lustre rw - lustre 10.0.0.1@tcp:/fs rw
42 27 0:52 / /home/u/remote rw - fuse.sshfs u@host: rw
43 27 0:53 / /mnt/my\\040data rw - ext4 /dev/vdb rw
"""


def test_network_file_systems_are_told_from_local_ones(tmp_path: Path) -> None:
    """Local copies run one thread per CPU, except on NFS, Lustre, FUSE, ... where
    every open is a round trip that threads overlap."""
    from ferry.plugins.file import on_network_fs, parse_mountinfo

    assert ("/mnt/my data", "ext4") in parse_mountinfo(MOUNTINFO)
    assert not on_network_fs(["/scratch/a", "/mnt/my data/x", "/mnt/sharedx/y"], MOUNTINFO)
    assert on_network_fs(["/scratch/a", "/mnt/shared/job/in"], MOUNTINFO)
    assert on_network_fs(["/lustre/proj"], MOUNTINFO)
    assert on_network_fs(["/home/u/remote/f"], MOUNTINFO)
    (tmp_path / "link").symlink_to("/mnt/shared/data")  # resolved before the lookup
    assert on_network_fs([str(tmp_path / "link" / "f")], MOUNTINFO)
    # this machine's own mount table: the test's directory is local
    assert not on_network_fs([str(tmp_path)])


def test_a_plugin_s_plain_exception_in_mkdir_fails_only_that_request(
    flaky_registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "a.dat").write_bytes(b"data")
    results = engine(flaky_registry).run(
        [
            MkdirRequest(Endpoint(parse_url("flaky://h/dir"))),
            req(f"file://{tmp_path}/a.dat", f"file://{tmp_path}/out/a.dat"),
        ]
    )
    made, copied = results
    assert not made.ok and "NotADirectoryError: a plugin bug, on /dir" in (made.error or "")
    assert copied.ok and (tmp_path / "out" / "a.dat").read_bytes() == b"data"


def test_two_stage_to_a_scheme_that_cannot_put_fails_before_downloading(
    flaky: type[FlakyProtocol], flaky_registry: Registry, tmp_path: Path
) -> None:
    flaky.objects["a.dat"] = b"x" * 1000
    (result,) = engine(flaky_registry).run([req("flaky://h/a.dat", "flaky://h/copy.dat")])
    assert not result.ok and "flaky cannot put flaky:// URLs" in (result.error or "")
    assert flaky.calls == {}  # nothing was downloaded first


def test_unwritable_destination_is_named_not_its_part_file(tmp_path: Path) -> None:
    (tmp_path / "a.dat").write_bytes(b"data")
    # /proc takes no new files, whoever runs the test (root included)
    [res] = engine().run([req(f"file://{tmp_path}/a.dat", "file:///proc/ferry-test.dat")])
    assert not res.ok
    assert "cannot write /proc/ferry-test.dat: " in (res.error or "")
    assert ".ferry-part-" not in (res.error or "")
