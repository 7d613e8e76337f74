"""The webdav plugin against a real wsgidav server (cheroot), anonymous and with basic auth."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from ferry.plugins.errors import (
    AuthError,
    IntegrityError,
    NotFound,
    PermanentError,
)
from ferry.plugins.protocol import Capability, Sink, Source
from ferry.plugins.registry import Registry
from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance
from ferry.plugins.url import parse_url
from ferry.plugins.webdav import WebdavProtocol
from tests.plugins.conftest import secret_free
from tests.servers import WebdavServer

pytestmark = pytest.mark.live


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if "ferry-part" in p.name]


@pytest.fixture
def dav(registry: Registry) -> WebdavProtocol:
    proto = registry.protocol("webdav")
    assert isinstance(proto, WebdavProtocol)
    return proto


def local(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def fetch(dav: WebdavProtocol, url: str, dest: Path) -> Sink:
    sink = Sink(str(dest))
    try:
        dav.get(parse_url(url), sink)
    finally:
        sink.close()
    return sink


def test_declared_capabilities() -> None:
    caps = Registry().capabilities("webdavs")
    assert {Capability.GET, Capability.PUT, Capability.STAT, Capability.MKDIR} <= caps
    assert Capability.REMOVE in caps and Capability.CHECKSUM not in caps


@pytest.mark.parametrize("size", [300_000, 0, 5 << 20], ids=["300kB", "empty", "5MiB"])
def test_put_into_new_collections_then_get_back(
    webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    url = f"{webdav_server.url}/put-{size}/a/b/c/f.bin"
    seen: list[int] = []
    dav.put(
        Source(str(local(tmp_path, data)), expected_sha256=sha(data)), parse_url(url), seen.append
    )
    assert sum(seen) == size
    on_disk = webdav_server.root / f"put-{size}/a/b/c/f.bin"
    assert on_disk.read_bytes() == data
    assert leftovers(webdav_server.root) == []
    sink = fetch(dav, url, tmp_path / "back")
    assert sink.sha256 == sha(data)
    assert (tmp_path / "back").read_bytes() == data


def test_wrong_sha256_leaves_nothing_at_the_destination(
    webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    url = f"{webdav_server.url}/bad/f.bin"
    with pytest.raises(IntegrityError) as info:
        dav.put(Source(str(local(tmp_path, data)), expected_sha256="0" * 64), parse_url(url))
    assert info.value.actual == sha(data)
    assert not (webdav_server.root / "bad/f.bin").exists()
    assert leftovers(webdav_server.root) == []


def test_wrong_sha256_keeps_the_previous_version(
    webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path
) -> None:
    old, new = b"old contents\n", b"new contents\n"
    url = parse_url(f"{webdav_server.url}/keep/f.txt")
    dav.put(Source(str(local(tmp_path, old, "old"))), url)
    with pytest.raises(IntegrityError):
        dav.put(Source(str(local(tmp_path, new, "new")), expected_sha256=sha(old)), url)
    assert (webdav_server.root / "keep/f.txt").read_bytes() == old
    assert leftovers(webdav_server.root) == []


def test_put_overwrites(webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path) -> None:
    url = parse_url(f"{webdav_server.url}/over/f.bin")
    for i, data in enumerate([os.urandom(5000), os.urandom(1234), b""]):
        dav.put(Source(str(local(tmp_path, data, f"v{i}")), expected_sha256=sha(data)), url)
        assert (webdav_server.root / "over/f.bin").read_bytes() == data
        assert dav.stat(url).size == len(data)
    assert leftovers(webdav_server.root) == []


def test_put_after_the_parent_vanished(
    webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path
) -> None:
    data = os.urandom(2000)
    src = str(local(tmp_path, data))
    dav.put(Source(src), parse_url(f"{webdav_server.url}/gone/x/f1"))
    # removed behind ferry's back: its memory of /gone/x is stale, the PUT gets a 409
    shutil.rmtree(webdav_server.root / "gone")
    dav.put(Source(src, expected_sha256=sha(data)), parse_url(f"{webdav_server.url}/gone/x/f2"))
    assert (webdav_server.root / "gone/x/f2").read_bytes() == data
    # and through ferry's own remove
    dav.remove(parse_url(f"{webdav_server.url}/gone"), recursive=True)
    dav.put(Source(src), parse_url(f"{webdav_server.url}/gone/x/f3"))
    assert sorted(p.name for p in (webdav_server.root / "gone/x").iterdir()) == ["f3"]


def test_mkdir(webdav_server: WebdavServer, dav: WebdavProtocol) -> None:
    dav.mkdir(parse_url(f"{webdav_server.url}/mk/a/b/c"))
    assert (webdav_server.root / "mk/a/b/c").is_dir()
    dav.mkdir(parse_url(f"{webdav_server.url}/mk/a/b/c"))  # existing is fine
    dav.mkdir(parse_url(f"{webdav_server.url}/mk/a/"))
    assert (webdav_server.root / "mk/a/b/c").is_dir()


def test_stat(webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path) -> None:
    (webdav_server.root / "st/sub").mkdir(parents=True)
    (webdav_server.root / "st/f.bin").write_bytes(b"x" * 4321)
    mtime = 1_700_000_000
    os.utime(webdav_server.root / "st/f.bin", (mtime, mtime))
    st = dav.stat(parse_url(f"{webdav_server.url}/st/f.bin"))
    assert (st.size, st.mtime, st.is_dir) == (4321, mtime, False)
    assert dav.stat(parse_url(f"{webdav_server.url}/st/sub")).is_dir
    assert dav.stat(parse_url(f"{webdav_server.url}/st/sub/")).is_dir
    with pytest.raises(NotFound):
        dav.stat(parse_url(f"{webdav_server.url}/st/missing"))


def test_get_missing_is_not_found(
    webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path
) -> None:
    url = f"{webdav_server.url}/nope.bin"
    with pytest.raises(NotFound) as info:
        fetch(dav, url, tmp_path / "x")
    assert str(info.value) == f"GET {url}: 404 Not Found"


def test_remove(webdav_server: WebdavServer, dav: WebdavProtocol) -> None:
    root = webdav_server.root
    (root / "rm/full/deeper").mkdir(parents=True)
    (root / "rm/full/deeper/f").write_bytes(b"1")
    (root / "rm/empty").mkdir()
    (root / "rm/file").write_bytes(b"2")
    base = webdav_server.url + "/rm"
    dav.remove(parse_url(f"{base}/file"))
    assert not (root / "rm/file").exists()
    dav.remove(parse_url(f"{base}/file"))  # missing is fine
    dav.remove(parse_url(f"{base}/empty"))
    assert not (root / "rm/empty").exists()
    with pytest.raises(PermanentError):
        dav.remove(parse_url(f"{base}/full"))
    assert (root / "rm/full/deeper/f").exists()
    dav.remove(parse_url(f"{base}/full"), recursive=True)
    assert not (root / "rm/full").exists()


def test_names_with_spaces_and_unicode(
    webdav_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path
) -> None:
    data = os.urandom(999)
    url = parse_url(f"{webdav_server.url}/odd names/ü dir/f #1 %.bin")
    dav.put(Source(str(local(tmp_path, data))), url)
    assert (webdav_server.root / "odd names/ü dir/f #1 %.bin").read_bytes() == data
    assert dav.stat(url).size == 999
    assert fetch(dav, url.raw, tmp_path / "back").sha256 == sha(data)


# -- basic auth ----------------------------------------------------------------


def test_basic_auth_accepted(
    webdav_auth_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path
) -> None:
    data = os.urandom(10_000)
    url = f"{webdav_auth_server.auth_url()}/auth/ok/f.bin"
    dav.put(Source(str(local(tmp_path, data)), expected_sha256=sha(data)), parse_url(url))
    assert (webdav_auth_server.root / "auth/ok/f.bin").read_bytes() == data
    assert fetch(dav, url, tmp_path / "back").sha256 == sha(data)
    assert dav.stat(parse_url(url)).size == len(data)
    dav.remove(parse_url(url))
    assert not (webdav_auth_server.root / "auth/ok/f.bin").exists()


def test_wrong_password_is_auth_error_and_never_shown(
    webdav_auth_server: WebdavServer, dav: WebdavProtocol, tmp_path: Path
) -> None:
    wrong = "Wr0ng-pa55word-xyz"
    base = webdav_auth_server.auth_url(password=wrong)
    src = str(local(tmp_path, b"data"))
    calls = [
        lambda: dav.put(Source(src), parse_url(f"{base}/auth/bad/f.bin")),
        lambda: fetch(dav, f"{base}/auth/f.bin", tmp_path / "x"),
        lambda: dav.stat(parse_url(f"{base}/auth")),
        lambda: dav.mkdir(parse_url(f"{base}/auth/new")),
        lambda: dav.remove(parse_url(f"{base}/auth")),
    ]
    for call in calls:
        with pytest.raises(AuthError) as info:
            call()
        secret_free(info.value, wrong)
        secret_free(info.value, webdav_auth_server.password or "")
        assert f"{webdav_auth_server.user}:***@" in str(info.value)
    # no credentials at all
    with pytest.raises(AuthError):
        dav.stat(parse_url(f"{webdav_auth_server.url}/"))
    assert not (webdav_auth_server.root / "auth/bad").exists()
    assert leftovers(webdav_auth_server.root) == []


# -- the conformance kit ---------------------------------------------------------


class TestWebdavConformance(ProtocolConformance):
    """The kit against wsgidav, anonymous (wsgidav cannot inject faults)."""

    __test__ = True

    @pytest.fixture
    def endpoint(self, webdav_server: WebdavServer) -> ConformanceEndpoint:
        return ConformanceEndpoint(base_url=f"{webdav_server.url}/kit")


class TestWebdavConformanceBasicAuth(ProtocolConformance):
    """The kit against wsgidav with user:password in every URL."""

    __test__ = True

    @pytest.fixture
    def endpoint(self, webdav_auth_server: WebdavServer) -> ConformanceEndpoint:
        return ConformanceEndpoint(base_url=f"{webdav_auth_server.auth_url()}/kit")
