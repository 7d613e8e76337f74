"""The http plugin against real servers: nginx, and a fault-injecting stdlib server."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ferry.plugins.errors import (
    AuthError,
    ConnectError,
    IncompleteTransfer,
    NotFound,
    PermanentError,
    PermissionDenied,
    ThrottledError,
    TransientError,
)
from ferry.plugins.http import MAX_RESUMES, HttpProtocol
from ferry.plugins.protocol import Capability, ProtocolContext, Sink
from ferry.plugins.registry import Registry
from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance
from ferry.plugins.url import parse_url
from tests.plugins.conftest import secret_free
from tests.servers import FaultServer, NginxServer, free_port

pytestmark = pytest.mark.live

SECRET = "pa55-w0rd-never-shown"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def http(registry: Registry) -> HttpProtocol:
    proto = registry.protocol("http")
    assert isinstance(proto, HttpProtocol)
    return proto


def publish(server: NginxServer, name: str, data: bytes) -> str:
    path = server.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.url}/{name}"


def download(proto: HttpProtocol, url: str, dest: Path, sink: Sink | None = None) -> Sink:
    sink = sink or Sink(str(dest))
    try:
        proto.get(parse_url(url), sink)
    finally:
        sink.close()
    return sink


# -- discovery ---------------------------------------------------------------


def test_declared_through_the_entry_point_without_importing_httpx() -> None:
    reg = Registry()
    assert {Capability.GET, Capability.STAT, Capability.RESUME} <= reg.capabilities("https")
    code = "import sys, ferry.plugins.http as m; m.ferry_protocols(); print('httpx' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


# -- nginx -----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 100_000, 0], ids=["1B", "100kB", "empty"])
def test_get_from_nginx(
    nginx_server: NginxServer, http: HttpProtocol, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    url = publish(nginx_server, f"get/{size}.bin", data)
    seen: list[int] = []
    sink = Sink(str(tmp_path / "out"))
    http.get(parse_url(url), sink, seen.append)
    sink.close()
    assert sink.sha256 == sha(data)
    assert (tmp_path / "out").read_bytes() == data
    assert sink.offset == sink.expected_size == size
    assert sum(seen) == size


def test_get_20_mib_from_nginx(
    nginx_server: NginxServer, http: HttpProtocol, tmp_path: Path
) -> None:
    data = os.urandom(20 << 20)
    url = publish(nginx_server, "get/big.bin", data)
    sink = download(http, url, tmp_path / "big")
    assert sink.sha256 == sha(data)
    assert (tmp_path / "big").stat().st_size == len(data)
    assert sink.restarts == 0


def test_get_many_in_parallel_share_one_client(
    nginx_server: NginxServer, http: HttpProtocol, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    blobs = {f"par/{i}.bin": os.urandom(65536 + i) for i in range(40)}
    for name, data in blobs.items():
        publish(nginx_server, name, data)

    def one(name: str) -> str:
        return download(
            http, f"{nginx_server.url}/{name}", tmp_path / name.replace("/", "_")
        ).sha256

    with ThreadPoolExecutor(8) as pool:
        sums = dict(zip(blobs, pool.map(one, blobs), strict=True))
    assert sums == {name: sha(data) for name, data in blobs.items()}


def test_missing_file_is_not_found(
    nginx_server: NginxServer, http: HttpProtocol, tmp_path: Path
) -> None:
    url = f"{nginx_server.url}/no/such/file"
    with pytest.raises(NotFound) as info:
        download(http, url, tmp_path / "x")
    assert str(info.value) == f"GET {url}: 404 Not Found"
    assert info.value.url == url
    with pytest.raises(NotFound):
        http.stat(parse_url(url))


def test_stat(nginx_server: NginxServer, http: HttpProtocol) -> None:
    data = os.urandom(12345)
    url = publish(nginx_server, "stat/f.bin", data)
    mtime = time.time() - 3600
    os.utime(nginx_server.root / "stat/f.bin", (mtime, mtime))
    st = http.stat(parse_url(url))
    assert st.size == 12345
    assert st.mtime == int(mtime)
    assert not st.is_dir
    assert http.stat(parse_url(publish(nginx_server, "stat/empty", b""))).size == 0


def test_connection_refused_is_connect_error(http: HttpProtocol, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(ConnectError) as info:
        download(http, url, tmp_path / "x")
    assert str(info.value).startswith(f"GET {url}: cannot connect: ")
    assert "\n" not in str(info.value)


# -- resume --------------------------------------------------------------------


def test_dropped_body_is_resumed_with_range(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    data = os.urandom(1 << 20)
    route = fault_server.add("/resume", data, drop_after=300_000, drop_times=2)
    sink = download(http, f"{fault_server.url}/resume", tmp_path / "out")
    assert sink.sha256 == sha(data)
    assert (tmp_path / "out").read_bytes() == data
    # the first GET broke at 300000, the second (from 300000) at 600000
    assert route.range_requests == ["bytes=300000-", "bytes=600000-"]
    assert route.count == 3
    assert sink.restarts == 0


def test_server_ignoring_range_restarts_from_zero(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    data = os.urandom(500_000)
    # says Accept-Ranges: bytes, yet answers a Range request with 200 and the whole body
    route = fault_server.add(
        "/liar", data, drop_after=200_000, drop_times=1, ranges=False, advertise_ranges=True
    )
    sink = download(http, f"{fault_server.url}/liar", tmp_path / "out")
    assert sink.sha256 == sha(data)
    assert (tmp_path / "out").read_bytes() == data
    assert route.range_requests == ["bytes=200000-"]
    assert sink.restarts == 1


def test_no_accept_ranges_fails_then_a_retry_with_the_same_sink_completes(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    data = os.urandom(400_000)
    route = fault_server.add("/noranges", data, drop_after=100_000, drop_times=1, ranges=False)
    sink = Sink(str(tmp_path / "out"))
    with pytest.raises(IncompleteTransfer) as info:
        http.get(parse_url(f"{fault_server.url}/noranges"), sink)
    assert str(info.value).startswith(f"GET {fault_server.url}/noranges: connection lost: ")
    assert route.count == 1 and sink.offset == 100_000
    # the engine retries with the sink it has: ferry asks for the rest, gets it all
    http.get(parse_url(f"{fault_server.url}/noranges"), sink)
    sink.close()
    assert route.range_requests == ["bytes=100000-"]
    assert sink.sha256 == sha(data) and sink.restarts == 1
    assert (tmp_path / "out").read_bytes() == data


def test_resume_from_an_engine_offset(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    route = fault_server.add("/partial", data)
    sink = Sink(str(tmp_path / "out"))
    sink.write(data[:123_456])  # what an earlier attempt left
    http.get(parse_url(f"{fault_server.url}/partial"), sink)
    sink.close()
    assert route.range_requests == ["bytes=123456-"]
    assert sink.sha256 == sha(data) and sink.restarts == 0
    assert (tmp_path / "out").read_bytes() == data


def test_complete_sink_and_416_is_done(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    route = fault_server.add("/whole", data)
    sink = Sink(str(tmp_path / "out"))
    sink.write(data)
    http.get(parse_url(f"{fault_server.url}/whole"), sink)
    sink.close()
    assert route.range_requests == ["bytes=5000-"]
    assert sink.sha256 == sha(data) and sink.restarts == 0


def test_resumes_are_bounded(fault_server: FaultServer, http: HttpProtocol, tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    route = fault_server.add("/flaky", data, drop_after=1000, drop_times=1000)
    with pytest.raises(IncompleteTransfer):
        download(http, f"{fault_server.url}/flaky", tmp_path / "out")
    assert route.count == 1 + MAX_RESUMES
    assert len(route.range_requests) == MAX_RESUMES


# -- statuses ------------------------------------------------------------------


def test_503_with_retry_after_seconds_is_throttled(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    data = b"payload"
    route = fault_server.add(
        "/busy", data, status=503, status_times=1, status_headers={"Retry-After": "7"}
    )
    url = f"{fault_server.url}/busy"
    with pytest.raises(ThrottledError) as info:
        download(http, url, tmp_path / "a")
    assert info.value.retry_after == 7
    assert str(info.value).startswith(f"GET {url}: 503 Service Unavailable")
    assert download(http, url, tmp_path / "b").sha256 == sha(data)
    assert route.count == 2


def test_429_with_retry_after_date_is_throttled(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fault_server.add(
        "/slow-down", b"x", status=429, status_times=1, status_headers={"Retry-After": when}
    )
    with pytest.raises(ThrottledError) as info:
        download(http, f"{fault_server.url}/slow-down", tmp_path / "a")
    assert info.value.retry_after is not None and 20 < info.value.retry_after <= 30


@pytest.mark.parametrize(
    ("status", "error", "transient"),
    [
        (500, TransientError, True),
        (502, TransientError, True),
        (408, TransientError, True),
        (404, NotFound, False),
        (410, NotFound, False),
        (401, AuthError, False),
        (403, PermissionDenied, False),
        (400, PermanentError, False),
    ],
)
def test_status_mapping(
    fault_server: FaultServer,
    http: HttpProtocol,
    tmp_path: Path,
    status: int,
    error: type[Exception],
    transient: bool,
) -> None:
    route = fault_server.add(f"/status/{status}", b"x", status=status, status_times=99)
    url = f"{fault_server.url}/status/{status}"
    with pytest.raises(error) as info:
        download(http, url, tmp_path / "out")
    assert info.value.transient is transient  # type: ignore[attr-defined]
    assert str(info.value).startswith(f"GET {url}: {status} ")
    with pytest.raises(error):
        http.stat(parse_url(url))
    assert route.count == 2


def test_credentials_are_sent_and_never_shown(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    route = fault_server.add("/private", b"x", status=401, status_times=99)
    url = f"http://bob:{SECRET}@127.0.0.1:{fault_server.port}/private?sig=abc123"
    with pytest.raises(AuthError) as info:
        download(http, url, tmp_path / "out")
    assert route.requests[0].authorization
    secret_free(info.value, SECRET)
    secret_free(info.value, "abc123")
    assert str(info.value).startswith(f"GET http://bob:***@127.0.0.1:{fault_server.port}/private")
    # a connection failure names the URL too, without the password
    with pytest.raises(ConnectError) as info2:
        download(http, f"http://bob:{SECRET}@127.0.0.1:{free_port()}/x", tmp_path / "out2")
    secret_free(info2.value, SECRET)


@pytest.mark.parametrize(
    ("client", "logger", "level"),
    [("auto", "ferry.plugins.http", logging.DEBUG), ("httpx", "httpx", logging.INFO)],
)
def test_request_log_masks_signed_query(
    fault_server: FaultServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    client: str,
    logger: str,
    level: int,
) -> None:
    fault_server.add("/signed", b"abc")
    url = f"{fault_server.url}/signed?X-Amz-Signature=deadbeef42&x=1"
    proto = HttpProtocol(ProtocolContext(settings={"http.client": client}))
    try:
        with caplog.at_level(level, logger=logger):
            assert download(proto, url, tmp_path / "out").sha256 == sha(b"abc")
    finally:
        proto.close()
    logged = [r.getMessage() for r in caplog.records if r.name == logger]
    assert logged and all("deadbeef42" not in m for m in logged)
    assert any("/signed?" in m for m in logged)


def test_injected_faults_hit_the_next_requests_only(
    fault_server: FaultServer, http: HttpProtocol, tmp_path: Path
) -> None:
    route = fault_server.add("/inject", b"abc")
    url = f"{fault_server.url}/inject"
    with fault_server.inject(2, status=503, headers={"Retry-After": "3"}):
        for name in ("a", "b"):
            with pytest.raises(ThrottledError) as info:
                download(http, url, tmp_path / name)
            assert info.value.retry_after == 3
        assert download(http, url, tmp_path / "c").sha256 == sha(b"abc")
    assert route.count == 3


# -- the conformance kit ---------------------------------------------------------


class TestHttpConformanceNginx(ProtocolConformance):
    """The kit against nginx; objects are placed by writing into its docroot."""

    __test__ = True

    @pytest.fixture
    def endpoint(self, nginx_server: NginxServer) -> ConformanceEndpoint:
        def seed(url: str, data: bytes) -> None:
            path = nginx_server.root / unquote(urlsplit(url).path).lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return ConformanceEndpoint(base_url=f"{nginx_server.url}/kit", seed=seed)


class TestHttpConformanceFaults(ProtocolConformance):
    """The kit against the fault server, whose next request loses its body mid-way."""

    __test__ = True

    @pytest.fixture
    def endpoint(self, fault_server: FaultServer) -> ConformanceEndpoint:
        def seed(url: str, data: bytes) -> None:
            fault_server.add(unquote(urlsplit(url).path), data)

        return ConformanceEndpoint(
            base_url=f"{fault_server.url}/kit",
            seed=seed,
            fault=lambda n: fault_server.inject(n, drop_after=40_000),
        )


class TestHttpConformanceThrottled(ProtocolConformance):
    """The kit against the fault server answering 503 + Retry-After while faulty."""

    __test__ = True

    @pytest.fixture
    def endpoint(self, fault_server: FaultServer) -> ConformanceEndpoint:
        def seed(url: str, data: bytes) -> None:
            fault_server.add(unquote(urlsplit(url).path), data)

        return ConformanceEndpoint(
            base_url=f"{fault_server.url}/kit",
            seed=seed,
            fault=lambda n: fault_server.inject(n, status=503, headers={"Retry-After": "1"}),
        )
