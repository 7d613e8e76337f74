"""The http plugin against real servers: nginx, and a fault-injecting stdlib server."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from ferry.plugins import _httpranges
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
    code = (
        "import sys, ferry.plugins.builtin as b, ferry.plugins.http;"
        " b.http.ferry_protocols(); print('httpx' in sys.modules)"
    )
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

        # under /upload/, where nginx also takes PUT
        return ConformanceEndpoint(base_url=f"{nginx_server.url}/upload/kit", seed=seed)


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


# -- the lean path: keep-alive, redirects, proxies, TLS -------------------------------


def _ranged(**settings: str) -> HttpProtocol:
    """A protocol that splits anything over 1 MiB into 256 KiB ranges over 4 streams
    (all started at once unless ``streams_solo_rate`` says otherwise)."""
    base = {
        "http.streams": "4",
        "http.streams_min_size": "1M",
        "http.stream_chunk": "256K",
        "http.streams_solo_rate": "0",
        **{f"http.{k}": v for k, v in settings.items()},
    }
    return HttpProtocol(ProtocolContext(settings=base))


def test_keep_alive_one_connection_for_many_files(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    blobs = {f"/keep/{i}": os.urandom(1000 + i) for i in range(20)}
    for path, data in blobs.items():
        fault_server.add(path, data)
    missing = f"{fault_server.url}/keep/missing"
    log = _HandlerHook(fault_server)
    proto = HttpProtocol(ProtocolContext())
    try:
        for i, (path, data) in enumerate(blobs.items()):
            assert download(proto, fault_server.url + path, tmp_path / str(i)).sha256 == sha(data)
            if i == 10:  # an error status with a short body does not cost the connection
                with pytest.raises(NotFound):
                    download(proto, missing, tmp_path / "missing")
            assert proto.stat(parse_url(fault_server.url + path)).size == len(data)
    finally:
        proto.close()
        log.close()
    assert len(log.ports) == 41  # 20 GETs, 20 HEADs, the 404
    assert len(set(log.ports)) == 1  # ... all on one connection, as the server saw it
    assert proto._pool.opened == 1


def test_a_connection_the_server_closed_is_replaced(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom(3000)
    fault_server.add("/stale", data)
    proto = HttpProtocol(ProtocolContext())
    try:
        assert download(proto, f"{fault_server.url}/stale", tmp_path / "a").sha256 == sha(data)
        # the server drops the idle keep-alive connection (as on its keep-alive timeout)
        idle = proto._pool._idle
        (conn,) = [c for conns in idle.values() for c in conns]
        assert conn.sock is not None
        conn.sock.shutdown(2)
        assert download(proto, f"{fault_server.url}/stale", tmp_path / "b").sha256 == sha(data)
    finally:
        proto.close()
    assert proto._pool.opened == 2


def test_redirect_is_followed_through_httpx(tmp_path: Path) -> None:
    data = os.urandom(5000)
    with _MiniServer({"/real": data}, redirects={"/moved": "/real"}) as server:
        proto = HttpProtocol(ProtocolContext())
        try:
            sink = download(proto, f"{server.url}/moved", tmp_path / "out")
            assert proto.stat(parse_url(f"{server.url}/moved")).size == len(data)
        finally:
            proto.close()
    assert sink.sha256 == sha(data)
    assert (tmp_path / "out").read_bytes() == data
    assert server.paths == ["/moved", "/moved", "/real", "/moved", "/moved", "/real"]


def test_proxy_from_the_environment_goes_through_httpx(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2000)
    route = fault_server.add("/proxied", data)
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", fault_server.url)  # it answers absolute-form requests
    proto = HttpProtocol(ProtocolContext())
    try:
        sink = download(proto, "http://ferry-test.invalid/proxied", tmp_path / "out")
    finally:
        proto.close()
    assert sink.sha256 == sha(data) and route.count == 1
    assert proto._pool.opened == 0


def test_chunked_body_without_a_length(tmp_path: Path) -> None:
    small, big = os.urandom(5), os.urandom((2 << 20) + 3)
    with _MiniServer({"/small": small, "/big": big}, chunked=True) as server:
        proto = HttpProtocol(ProtocolContext())
        try:
            for name, data in (("small", small), ("big", big), ("small", small)):
                sink = download(proto, f"{server.url}/{name}", tmp_path / name)
                assert sink.sha256 == sha(data) and sink.expected_size is None
                assert (tmp_path / name).read_bytes() == data
        finally:
            proto.close()
    assert proto._pool.opened == 1  # a chunked body read to its end keeps the connection


def test_bad_client_setting_is_a_config_error() -> None:
    from ferry.plugins.errors import ConfigError

    with pytest.raises(ConfigError, match="http.client"):
        HttpProtocol(ProtocolContext(settings={"http.client": "curl"}))


def test_https_checks_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    data = os.urandom(70_000)
    with _MiniServer({"/tls.bin": data}, tls=(cert, key)) as server:
        url = server.url.replace("http://", "https://") + "/tls.bin"
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusting = HttpProtocol(ProtocolContext())
        try:
            with pytest.raises(PermanentError, match="TLS certificate rejected"):
                download(untrusting, url, tmp_path / "no")
        finally:
            untrusting.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusting = HttpProtocol(ProtocolContext())
        try:
            sink = download(trusting, f"https://bob:{SECRET}@{url[8:]}", tmp_path / "yes")
        finally:
            trusting.close()
    assert sink.sha256 == sha(data)
    assert server.authorized == [True]  # basic auth went over TLS


def test_https_parallel_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    data = os.urandom((2 << 20) + 321)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with _MiniServer({"/big": data}, tls=(cert, key), ranges=True) as server:
        url = server.url.replace("http://", "https://") + "/big"
        proto = _ranged()
        try:  # the streams read TLS into buffers (no splice), hashed in order all the same
            sink = download(proto, f"https://bob:{SECRET}@{url[8:]}", tmp_path / "out")
        finally:
            proto.close()
    assert sink.sha256 == sha(data) and (tmp_path / "out").read_bytes() == data
    chunk = 256 << 10
    assert sorted(server.ranges) == [
        (a, min(a + chunk, len(data)) - 1) for a in range(chunk, len(data), chunk)
    ]
    assert all(server.authorized)  # every range carried the credentials


# -- parallel ranged streams ------------------------------------------------------------


@pytest.mark.parametrize("splice", ["yes", "no"])
def test_parallel_streams_from_nginx(
    nginx_server: NginxServer, tmp_path: Path, splice: str
) -> None:
    data = os.urandom((5 << 20) + 12345)
    url = publish(nginx_server, f"ranged/big-{splice}.bin", data)
    proto = _ranged(splice=splice)
    seen: list[int] = []
    try:
        sink = Sink(str(tmp_path / "out"))
        proto.get(parse_url(url), sink, seen.append)
        sink.close()
    finally:
        proto.close()
    assert sink.sha256 == sha(data)
    assert (tmp_path / "out").read_bytes() == data
    assert sink.offset == sink.expected_size == len(data) and sum(seen) == len(data)
    assert proto._pool.opened >= 4  # the first GET plus a connection per stream


def test_parallel_streams_send_ordered_ranges(fault_server: FaultServer, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    route = fault_server.add("/ranged/plain", data)
    proto = _ranged()
    try:
        sink = download(proto, f"{fault_server.url}/ranged/plain", tmp_path / "out")
    finally:
        proto.close()
    assert sink.sha256 == sha(data) and sink.restarts == 0
    chunk = 256 << 10
    # chunk 0 came with the first (plain) GET; every other chunk was asked for once
    assert route.requests[0].range is None
    assert sorted(route.range_requests) == sorted(
        f"bytes={a}-{a + chunk - 1}" for a in range(chunk, len(data), chunk)
    )


# The streams join the first only when they help: when it is slow, or on spare CPUs. The
# CPU count is this machine's: these tests pin what the download sees of it.


def test_a_fast_first_stream_stays_alone_without_spare_cpus(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httpranges, "spare_cpus", lambda: 0)
    data = os.urandom((3 << 20) + 5)
    route = fault_server.add("/solo/fast", data)
    proto = _ranged(streams_solo_rate="1")  # 1 byte/s: any stream is fast
    try:
        sink = download(proto, f"{fault_server.url}/solo/fast", tmp_path / "out")
        opened = proto._pool.opened
    finally:
        proto.close()
    assert sink.sha256 == sha(data) and (tmp_path / "out").read_bytes() == data
    # one GET read to its end, chunk after chunk: no range asked for, no other connection
    assert route.count == 1 and route.range_requests == [] and opened == 1


def test_a_fast_first_stream_is_joined_only_on_spare_cpus(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httpranges, "spare_cpus", lambda: 1)
    data = os.urandom(3 << 20)
    route = fault_server.add("/solo/spare", data)
    log = _HandlerHook(fault_server)
    proto = _ranged(streams_solo_rate="1")
    try:
        sink = download(proto, f"{fault_server.url}/solo/spare", tmp_path / "out")
    finally:
        proto.close()
        log.close()
    assert sink.sha256 == sha(data) and (tmp_path / "out").read_bytes() == data
    chunk = 256 << 10
    # the first GET gave chunk 0; then two streams (not four) shared the other chunks
    assert route.requests[0].range is None
    assert sorted(route.range_requests) == sorted(
        f"bytes={a}-{a + chunk - 1}" for a in range(chunk, len(data), chunk)
    )
    assert 2 <= len(set(log.ports[1:])) <= 2 * 2  # at most a reconnect per stream


def test_a_slow_first_stream_is_joined_by_every_stream(
    nginx_server: NginxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httpranges, "spare_cpus", lambda: 0)
    data = os.urandom((5 << 20) + 1)
    url = publish(nginx_server, "ranged/slow.bin", data)
    proto = _ranged(streams_solo_rate=str(10**15))  # a petabyte a second: every stream is slow
    try:
        sink = download(proto, url, tmp_path / "out")
        opened = proto._pool.opened
    finally:
        proto.close()
    assert sink.sha256 == sha(data) and (tmp_path / "out").read_bytes() == data
    assert opened >= 4  # the first GET, then a connection per stream


def test_a_lone_stream_cut_in_a_later_chunk_resumes_from_the_byte(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_httpranges, "spare_cpus", lambda: 0)
    data = os.urandom((2 << 20) + 3)
    route = fault_server.add("/solo/cut", data, drop_after=1_000_000, drop_times=1)
    proto = _ranged(streams_solo_rate="1")
    try:
        sink = download(proto, f"{fault_server.url}/solo/cut", tmp_path / "out")
    finally:
        proto.close()
    assert sink.sha256 == sha(data) and (tmp_path / "out").read_bytes() == data
    chunk = 256 << 10
    # the body broke in chunk 3: the rest of that chunk, then one range per chunk
    assert route.range_requests == [f"bytes=1000000-{4 * chunk - 1}"] + [
        f"bytes={a}-{min(a + chunk, len(data)) - 1}" for a in range(4 * chunk, len(data), chunk)
    ]
    assert sink.restarts == 0


@pytest.mark.parametrize("splice", ["yes", "no"])
def test_parallel_drop_in_one_range_resumes_that_range(
    fault_server: FaultServer, tmp_path: Path, splice: str
) -> None:
    data = os.urandom((3 << 20) + 777)
    # the plain GET and the first range request both lose their connection mid-body
    route = fault_server.add(f"/ranged/drop-{splice}", data, drop_after=100_000, drop_times=2)
    proto = _ranged(splice=splice)
    try:
        sink = download(proto, f"{fault_server.url}/ranged/drop-{splice}", tmp_path / "out")
    finally:
        proto.close()
    assert sink.sha256 == sha(data)
    assert (tmp_path / "out").read_bytes() == data
    chunk = 256 << 10
    starts = [int(r.split("=")[1].split("-")[0]) for r in route.range_requests]
    resumed = [s for s in starts if s % chunk]
    # each cut range went on from where it broke (100000 bytes in, or 200000 when its
    # resume was the second GET to be cut), not from the start of its chunk
    assert len(resumed) == 2, route.range_requests
    assert all(s % chunk in (100_000, 200_000) for s in resumed), route.range_requests
    assert route.count == len(data) // chunk + 1 + 2
    assert sink.restarts == 0


def test_parallel_failure_leaves_only_the_hashed_prefix(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    fault_server.add("/ranged/dead", data, drop_after=1000, drop_times=10_000)
    proto = _ranged()
    sink = Sink(str(tmp_path / "out"))
    try:
        with pytest.raises(IncompleteTransfer):
            proto.get(parse_url(f"{fault_server.url}/ranged/dead"), sink)
    finally:
        sink.close()
        proto.close()
    # what is on disk is exactly what was hashed: a resume from sink.offset stays correct
    held = (tmp_path / "out").read_bytes()
    assert len(held) == sink.offset < len(data)
    assert held == data[: sink.offset]
    assert sink.sha256 == sha(held)


def test_server_that_ignores_ranges_falls_back_to_one_stream(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom(2 << 20)
    # says Accept-Ranges: bytes, yet answers every range request with 200 and the whole body
    route = fault_server.add("/ranged/liar", data, ranges=False, advertise_ranges=True)
    proto = _ranged()
    try:
        sink = download(proto, f"{fault_server.url}/ranged/liar", tmp_path / "out")
    finally:
        proto.close()
    assert sink.sha256 == sha(data)
    assert (tmp_path / "out").read_bytes() == data
    assert route.count >= 3  # the first GET, at least one refused range, the full retry


def test_throttled_range_stops_every_stream(fault_server: FaultServer, tmp_path: Path) -> None:
    data = os.urandom(4 << 20)
    route = fault_server.add("/ranged/throttled", data)

    def throttle(handler: Any) -> None:
        # from the first answer on, every request is told to come back later
        if handler.command == "GET" and handler.headers.get("Range") is None:
            route.status, route.status_times = 503, 10**6
            route.status_headers = {"Retry-After": "2"}

    hook = _HandlerHook(fault_server, before_end_headers=throttle)
    proto = _ranged()
    sink = Sink(str(tmp_path / "out"))
    try:
        with pytest.raises(ThrottledError) as info:
            proto.get(parse_url(f"{fault_server.url}/ranged/throttled"), sink)
    finally:
        sink.close()
        proto.close()
        hook.close()
    assert info.value.retry_after == 2
    # not resumed, not retried inside get: the engine's backoff takes over
    assert route.count <= 1 + 4
    held = (tmp_path / "out").read_bytes()
    assert len(held) == sink.offset and held == data[: sink.offset]


def test_large_body_without_ranges_is_spliced_on_one_stream(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom((3 << 20) + 5)
    route = fault_server.add("/oneway/whole", data, ranges=False)
    cut = fault_server.add("/oneway/cut", data, ranges=False, drop_after=1_500_000, drop_times=1)
    proto = _ranged()
    try:
        sink = download(proto, f"{fault_server.url}/oneway/whole", tmp_path / "whole")
        assert sink.sha256 == sha(data) and sink.offset == sink.expected_size == len(data)
        assert (tmp_path / "whole").read_bytes() == data
        assert route.count == 1  # one plain GET, no range asked of a server without them
        broken = Sink(str(tmp_path / "cut"))
        with pytest.raises(IncompleteTransfer, match="connection lost"):
            proto.get(parse_url(f"{fault_server.url}/oneway/cut"), broken)
        broken.close()
    finally:
        proto.close()
    held = (tmp_path / "cut").read_bytes()
    assert len(held) == broken.offset == 1_500_000 and held == data[:1_500_000]
    assert cut.count == 1


def test_one_stream_resumes_a_dropped_body_with_a_range(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom((3 << 20) + 5)
    route = fault_server.add("/oneway/resume", data, drop_after=1_000_000, drop_times=2)
    proto = _ranged(streams="1")
    try:
        sink = download(proto, f"{fault_server.url}/oneway/resume", tmp_path / "out")
    finally:
        proto.close()
    assert sink.sha256 == sha(data) and (tmp_path / "out").read_bytes() == data
    assert route.range_requests == [
        f"bytes=1000000-{len(data) - 1}",
        f"bytes=2000000-{len(data) - 1}",
    ]


def test_object_changing_between_ranges_is_caught(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom(2 << 20)
    route = fault_server.add("/ranged/changing", data)

    def grow(handler: Any) -> None:
        # the object grows right after the first answer's headers: its body is the old
        # one, every range after it reports the new total
        if handler.command == "GET" and handler.headers.get("Range") is None:
            route.data = data + b"more"

    hook = _HandlerHook(fault_server, before_end_headers=grow)
    proto = _ranged(streams="2")
    sink = Sink(str(tmp_path / "out"))
    try:
        with pytest.raises(TransientError, match="changed while it was downloaded"):
            proto.get(parse_url(f"{fault_server.url}/ranged/changing"), sink)
    finally:
        sink.close()
        proto.close()
        hook.close()
    held = (tmp_path / "out").read_bytes()
    assert len(held) == sink.offset and held == data[: sink.offset]


# -- test servers and hooks ------------------------------------------------------------------


class _HandlerHook:
    """Instruments a running fault server's handler: a callback before each response's
    headers end, and the client port of every request as the server saw it."""

    def __init__(
        self, server: FaultServer, before_end_headers: Callable[[Any], None] | None = None
    ) -> None:
        self.ports: list[int] = []
        hook = self
        handler = server._httpd.RequestHandlerClass

        class Hooked(handler):  # type: ignore[misc,valid-type]
            def parse_request(self) -> bool:
                ok = super().parse_request()
                if ok:
                    hook.ports.append(self.client_address[1])
                return ok

            def end_headers(self) -> None:
                if before_end_headers is not None:
                    before_end_headers(self)
                super().end_headers()

        self._server = server
        self._original = handler
        server._httpd.RequestHandlerClass = Hooked

    def close(self) -> None:
        self._server._httpd.RequestHandlerClass = self._original


class _MiniServer:
    """A stdlib HTTP(S) server in a thread: static bytes, redirects, basic-auth seen."""

    def __init__(
        self,
        files: dict[str, bytes],
        redirects: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        chunked: bool = False,
        ranges: bool = False,
    ) -> None:
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        mini = self
        self.paths: list[str] = []
        self.authorized: list[bool] = []
        self.ranges: list[tuple[int, int]] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = urlsplit(self.path).path
                mini.paths.append(path)
                if redirects and path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                if body:
                    mini.authorized.append("Authorization" in self.headers)
                wanted = self.headers.get("Range")
                if ranges and wanted:  # "bytes=a-b" or "bytes=a-"
                    first_text, _, last_text = wanted.partition("=")[2].partition("-")
                    first = int(first_text)
                    last = int(last_text) if last_text else len(data) - 1
                    mini.ranges.append((first, last))
                    part = data[first : last + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
                    self.send_header("Content-Length", str(len(part)))
                    self.end_headers()
                    if body:
                        self.wfile.write(part)
                    return
                self.send_response(200)
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                if chunked:  # no length known up front: the body comes in chunks
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if body:
                        for i in range(0, len(data), 10_000):
                            piece = data[i : i + 10_000]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def __enter__(self) -> _MiniServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],  # fmt: skip
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
