"""gs:// against fake-gcs-server on 127.0.0.1 (see tests/fixtures/gs.py)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ferry.plugins.errors import (
    AuthError,
    ConnectError,
    IncompleteTransfer,
    IntegrityError,
    NotFound,
    PermanentError,
    PermissionDenied,
    ThrottledError,
    TransferTimeout,
    TransientError,
    UnsupportedScheme,
)
from ferry.plugins.gs import GsProtocol, GsSettings, _scrub, map_gcs_exceptions
from ferry.plugins.protocol import ProtocolContext, Sink, Source
from ferry.plugins.registry import Registry
from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance
from ferry.plugins.url import parse_url
from tests.fixtures.gs import (
    KIT_BUCKET,
    GcsServer,
    gcs_env_fixture,  # noqa: F401 - the `gcs_env` fixture
    gcs_fault_server_fixture,  # noqa: F401 - the `gcs_fault_server` fixture
    gcs_server_fixture,  # noqa: F401 - the `gcs_server` fixture
)

KiB = 1 << 10
MiB = 1 << 20
#: small limits so that a few MiB exercise the resumable path
FAST = {"gs.resumable_threshold": "1MiB", "gs.chunk_size": "512KiB", "gs.retry_timeout": "5"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _isolate(monkeypatch: pytest.MonkeyPatch, server: GcsServer, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "FERRY_CREDENTIALS", "PEGASUS_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    for var in [v for v in os.environ if v.startswith("FERRY_GS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _lib_client(server: GcsServer) -> Any:
    """A google-cloud-storage client of our own, to look behind the plugin's back."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="ferry-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": server.url},
    )


@pytest.fixture
def proto(gcs_env: GcsServer) -> Iterator[GsProtocol]:
    p = GsProtocol(ProtocolContext(settings=dict(FAST)))
    yield p
    p.close()


@pytest.fixture
def lib(gcs_env: GcsServer) -> Any:
    return _lib_client(gcs_env)


def _url(name: str) -> str:
    return f"gs://{KIT_BUCKET}/t-{secrets.token_hex(4)}/{name}"


def _put(
    proto: GsProtocol, tmp_path: Path, url: str, data: bytes, expected: str | None = None
) -> Source:
    src = tmp_path / f"src-{secrets.token_hex(4)}"
    src.write_bytes(data)
    source = Source(str(src), expected_sha256=expected)
    proto.put(source, parse_url(url))
    return source


def _get(proto: GsProtocol, tmp_path: Path, url: str) -> tuple[bytes, str]:
    path = tmp_path / f"get-{secrets.token_hex(4)}"
    sink = Sink(str(path))
    try:
        proto.get(parse_url(url), sink)
    finally:
        sink.close()
    return path.read_bytes(), sink.sha256


def _blob(lib: Any, url: str) -> Any:
    u = parse_url(url)
    return lib.bucket(u.host).get_blob(u.path[1:])


# -- the conformance kit -------------------------------------------------------


class TestGsConformance(ProtocolConformance):
    """The kit, through a proxy that can cut responses short (``fault``)."""

    __test__ = True

    @pytest.fixture
    def endpoint(
        self, gcs_fault_server: GcsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> ConformanceEndpoint:
        _isolate(monkeypatch, gcs_fault_server, tmp_path)
        proxy = gcs_fault_server.proxy
        assert proxy is not None
        return ConformanceEndpoint(
            base_url=f"gs://{KIT_BUCKET}/conformance",
            registry=Registry(ProtocolContext(settings=dict(FAST))),
            fault=lambda n: proxy.cut(n, after=40_000),
            large_size=3 * MiB + 123,
        )


# -- get -----------------------------------------------------------------------


def test_cut_body_is_resumed_with_a_range_request(
    gcs_fault_server: GcsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _isolate(monkeypatch, gcs_fault_server, tmp_path)
    proxy = gcs_fault_server.proxy
    assert proxy is not None
    proto = GsProtocol(ProtocolContext(settings=dict(FAST)))
    data = os.urandom(700_000)
    url = _url("cut.bin")
    _put(proto, tmp_path, url, data)
    before = proxy.cuts
    with proxy.cut(2, after=100_000):
        got = _get(proto, tmp_path, url)
    assert got == (data, sha(data))
    assert proxy.cuts - before == 2  # two bodies cut, each picked up where it stopped
    proto.close()


def test_get_resumes_from_sink_offset(proto: GsProtocol, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    url = _url("resume.bin")
    _put(proto, tmp_path, url, data)
    path = tmp_path / "partial"
    sink = Sink(str(path))
    sink.write(data[:123_456])
    try:
        proto.get(parse_url(url), sink)
    finally:
        sink.close()
    assert path.read_bytes() == data and sink.sha256 == sha(data) and sink.restarts == 0


def test_wrong_sha256_in_metadata_is_integrity_error(
    proto: GsProtocol, lib: Any, tmp_path: Path
) -> None:
    url = _url("tampered.bin")
    data = os.urandom(5000)
    blob = lib.bucket(KIT_BUCKET).blob(parse_url(url).path[1:])
    blob.metadata = {"sha256": "0" * 64}
    blob.upload_from_file(io.BytesIO(data), size=len(data))
    with pytest.raises(IntegrityError) as info:
        _get(proto, tmp_path, url)
    assert info.value.expected == "0" * 64 and info.value.actual == sha(data)
    assert url.split("://")[1] in str(info.value)


def test_object_without_sha256_downloads(proto: GsProtocol, lib: Any, tmp_path: Path) -> None:
    url = _url("plain.bin")
    data = os.urandom(5000)
    lib.bucket(KIT_BUCKET).blob(parse_url(url).path[1:]).upload_from_file(
        io.BytesIO(data), size=len(data)
    )
    assert _get(proto, tmp_path, url) == (data, sha(data))
    assert proto.checksum(parse_url(url)) is None
    assert proto.stat(parse_url(url)).checksums == {}


# -- put -----------------------------------------------------------------------


@pytest.mark.parametrize("known_sum", [True, False], ids=["expected-sum", "no-expected-sum"])
def test_large_object_resumable_roundtrip(
    proto: GsProtocol, lib: Any, tmp_path: Path, known_sum: bool
) -> None:
    data = os.urandom(3 * MiB + 7)  # > 1 MiB threshold: 7 chunks of 512 KiB
    url = _url("large.bin")
    seen: list[int] = []
    src = tmp_path / "large.src"
    src.write_bytes(data)
    source = Source(str(src), expected_sha256=sha(data) if known_sum else None)
    proto.put(source, parse_url(url), seen.append)
    assert sum(seen) == len(data)
    blob = _blob(lib, url)
    assert blob.size == len(data) and blob.metadata == {"sha256": sha(data)}
    if known_sum:  # the sum went up with the bytes: no metadata patch after them
        assert blob.metageneration == 1
    # (fake-gcs-server does not bump metageneration on a patch, so the other case
    # cannot be told apart by it)
    assert proto.checksum(parse_url(url)) == sha(data)
    st = proto.stat(parse_url(url))
    assert st.size == len(data) and st.checksums == {"sha256": sha(data)} and st.mtime
    assert _get(proto, tmp_path, url) == (data, sha(data))


def test_small_object_one_request_with_sum(proto: GsProtocol, lib: Any, tmp_path: Path) -> None:
    data = os.urandom(64 * KiB)
    url = _url("small.bin")
    _put(proto, tmp_path, url, data)
    blob = _blob(lib, url)
    assert blob.metadata == {"sha256": sha(data)} and blob.metageneration == 1
    assert blob.content_type == "application/octet-stream"


@pytest.mark.parametrize("size", [64 * KiB, 2 * MiB + 5], ids=["multipart", "resumable"])
def test_wrong_sum_never_becomes_visible(
    proto: GsProtocol, lib: Any, tmp_path: Path, size: int
) -> None:
    """Neither a new object nor an overwrite: the old bytes stay."""
    url = _url("guarded.bin")
    with pytest.raises(IntegrityError):
        _put(proto, tmp_path, url, os.urandom(size), expected="1" * 64)
    assert _blob(lib, url) is None
    old = b"old version"
    _put(proto, tmp_path, url, old)
    with pytest.raises(IntegrityError):
        _put(proto, tmp_path, url, os.urandom(size), expected="1" * 64)
    assert _get(proto, tmp_path, url) == (old, sha(old))
    assert _blob(lib, url).generation is not None


def test_file_shrinking_during_resumable_upload_is_not_committed(
    proto: GsProtocol, lib: Any, tmp_path: Path
) -> None:
    src = tmp_path / "shrinks"
    src.write_bytes(os.urandom(2 * MiB))
    source = Source(str(src))
    url = _url("shrinks.bin")
    calls = []

    def shrink(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:
            with open(src, "r+b") as f:
                f.truncate(MiB)

    with pytest.raises(IncompleteTransfer):
        proto.put(source, parse_url(url), shrink)
    assert _blob(lib, url) is None


# -- copy, stat, remove, mkdir ---------------------------------------------------


def test_server_side_copy(proto: GsProtocol, lib: Any, tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    src = _url("copy-src.bin")
    dst = _url("copy-dst.bin")
    _put(proto, tmp_path, src, data)
    st = proto.copy(parse_url(src), parse_url(dst), sha(data))
    assert st.size == len(data) and st.checksums == {"sha256": sha(data)}
    assert _get(proto, tmp_path, dst) == (data, sha(data))
    with pytest.raises(IntegrityError):
        proto.copy(parse_url(src), parse_url(_url("other.bin")), "2" * 64)
    with pytest.raises(NotFound):
        proto.copy(parse_url(_url("missing.bin")), parse_url(dst))


def test_copy_of_unsummed_object_with_expected_sum_falls_back(
    proto: GsProtocol, lib: Any, tmp_path: Path
) -> None:
    """No stored sum to check: UnsupportedScheme makes the engine go two-stage (and verify)."""
    url = _url("nosum.bin")
    data = b"no sum stored"
    lib.bucket(KIT_BUCKET).blob(parse_url(url).path[1:]).upload_from_file(
        io.BytesIO(data), size=len(data)
    )
    with pytest.raises(UnsupportedScheme):
        proto.copy(parse_url(url), parse_url(_url("x.bin")), sha(data))
    st = proto.copy(parse_url(url), parse_url(_url("y.bin")))  # nothing to check: fine
    assert st.size == len(data) and st.checksums == {}


def test_stat_objects_prefixes_buckets(proto: GsProtocol, tmp_path: Path) -> None:
    url = _url("dir/file.txt")
    _put(proto, tmp_path, url, b"x")
    parent = url.rsplit("/", 1)[0]
    assert proto.stat(parse_url(parent)).is_dir
    assert proto.stat(parse_url(parent + "/")).is_dir
    assert proto.stat(parse_url(f"gs://{KIT_BUCKET}")).is_dir
    with pytest.raises(NotFound):
        proto.stat(parse_url(parent + "/nothing"))
    with pytest.raises(NotFound):
        proto.stat(parse_url("gs://no-such-bucket-ferry/x"))
    with pytest.raises(NotFound):
        _get(proto, tmp_path, "gs://no-such-bucket-ferry/x")


def test_recursive_remove(proto: GsProtocol, lib: Any, tmp_path: Path) -> None:
    base = _url("tree")
    names = ["a", "b/c", "b/d/e", "with space"]
    for n in names:
        _put(proto, tmp_path, f"{base}/{n}", n.encode())
    _put(proto, tmp_path, f"{base}-sibling", b"stays")
    _put(proto, tmp_path, base, b"the prefix itself is an object too")
    proto.remove(parse_url(base), recursive=True)
    prefix = parse_url(base).path[1:]
    left = sorted(b.name for b in lib.list_blobs(KIT_BUCKET, prefix=prefix))
    assert left == [prefix + "-sibling"]
    proto.remove(parse_url(base), recursive=True)  # again: nothing there, fine
    proto.remove(parse_url(base + "-sibling"))
    assert _blob(lib, base + "-sibling") is None
    proto.remove(parse_url("gs://no-such-bucket-ferry/x"), recursive=True)
    with pytest.raises(PermanentError):
        proto.remove(parse_url(f"gs://{KIT_BUCKET}"))  # a bucket root, not recursive


def test_mkdir_is_a_no_op_unless_create_bucket(gcs_env: GcsServer, lib: Any) -> None:
    name = f"ferry-mk-{secrets.token_hex(3)}"
    plain = GsProtocol(ProtocolContext())
    plain.mkdir(parse_url(f"gs://{name}/a/b"))
    assert lib.lookup_bucket(name) is None
    creating = GsProtocol(ProtocolContext(settings={"gs.create_bucket": "true"}))
    creating.mkdir(parse_url(f"gs://{name}/a/b"))
    creating.mkdir(parse_url(f"gs://{name}/a/b"))  # exists: fine
    assert lib.lookup_bucket(name) is not None
    plain.close()
    creating.close()


# -- clients, settings, laziness ---------------------------------------------------


def test_one_shared_client_with_a_sized_pool(gcs_env: GcsServer, tmp_path: Path) -> None:
    proto = GsProtocol(ProtocolContext(concurrency=16, settings=dict(FAST)))
    blobs = {f"{_url('c')}{i}": os.urandom(20_000 + i) for i in range(32)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: _put(proto, tmp_path, kv[0], kv[1]), blobs.items()))
        got = list(pool.map(lambda u: _get(proto, tmp_path, u), blobs))
    assert got == [(d, sha(d)) for d in blobs.values()]
    assert len(proto._clients) == 1
    client = next(iter(proto._clients.values()))
    assert client._http.get_adapter(gcs_env.url)._pool_maxsize == 32
    proto.close()


def test_settings_parse_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_GS_CHUNK_SIZE", "300K")  # rounded up to 512 KiB
    s = GsSettings.from_context(ProtocolContext(settings={"gs.resumable_threshold": "2MiB"}))
    assert s.resumable_threshold == 2 * MiB and s.chunk_size == 512 * KiB
    assert s.create_bucket is False and s.retry_timeout == 30.0
    from ferry.plugins.errors import ConfigError

    with pytest.raises(ConfigError):
        GsSettings.from_context(ProtocolContext(settings={"gs.chunk_size": "lots"}))


def test_plugin_listing_does_not_import_the_library() -> None:
    code = (
        "import sys\n"
        "from ferry.plugins.registry import Registry\n"
        "from ferry.plugins.gs import GsProtocol\n"
        "r = Registry(); e = r.entry_for('gs'); assert e.available, e.unavailable\n"
        "GsProtocol()\n"
        "print('google.cloud.storage' in sys.modules, 'google.api_core' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# -- errors and secrets -------------------------------------------------------------


def _api_error(cls_name: str) -> Exception:
    from google.api_core import exceptions as api

    return getattr(api, cls_name)("boom")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _api_error("NotFound"), NotFound),
        (lambda: _api_error("Forbidden"), PermissionDenied),
        (lambda: _api_error("Unauthorized"), AuthError),
        (lambda: _api_error("TooManyRequests"), ThrottledError),
        (lambda: _api_error("ServiceUnavailable"), ThrottledError),
        (lambda: _api_error("InternalServerError"), TransientError),
        (lambda: _api_error("BadGateway"), TransientError),
        (lambda: _api_error("GatewayTimeout"), TransientError),
        (lambda: _api_error("BadRequest"), PermanentError),
        (lambda: _api_error("Conflict"), PermanentError),
        (lambda: __import__("requests").exceptions.ConnectionError("refused"), ConnectError),
        (lambda: __import__("requests").exceptions.ReadTimeout("slow"), TransferTimeout),
        (lambda: __import__("requests").exceptions.ChunkedEncodingError("cut"), IncompleteTransfer),
        (lambda: __import__("urllib3").exceptions.IncompleteRead(5, 10), IncompleteTransfer),
        (
            lambda: __import__("google.auth.exceptions").auth.exceptions.RefreshError("no"),
            AuthError,
        ),
    ],
)
def test_error_mapping(make: Any, expected: type[Exception]) -> None:
    url = parse_url("gs://bucket/some/key")
    with pytest.raises(expected) as info, map_gcs_exceptions(url, "GET"):
        raise make()
    err = info.value
    assert type(err) is expected or expected is TransientError
    assert err.url == "gs://bucket/some/key" and err.plugin == "gs"
    assert "\n" not in str(err) and str(err).startswith("GET gs://bucket/some/key: ")
    assert isinstance(err.__cause__, Exception)


def test_scrub_masks_session_ids_and_tokens() -> None:
    text = (
        "PUT http://h/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=ABCsecret123 "
        "Authorization: Bearer ya29.secretTOKEN {'access_token': 'ya29.other'}"
    )
    out = _scrub(text)
    for secret in ("ABCsecret123", "ya29.secretTOKEN", "ya29.other"):
        assert secret not in out


def test_connection_refused_is_connect_error(
    gcs_env: GcsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.servers import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    proto = GsProtocol(ProtocolContext(settings={"gs.retry_timeout": "0"}))
    with pytest.raises(ConnectError) as info:
        _get(proto, tmp_path, "gs://bucket/x")
    assert "gs://bucket/x" in str(info.value)


class _TokenServer:
    """A stand-in OAuth token endpoint: hands out a known secret access token."""

    def __init__(self, token: str, status: int = 200) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if status == 200:
                    body = json.dumps(
                        {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
                    )
                else:
                    body = json.dumps({"error": "invalid_grant", "error_description": "bad key"})
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _service_account(path: Path, token_uri: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "ferry-sa-project",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "ferry@ferry-sa-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return pem


@pytest.mark.parametrize("section", ["gs", "gs://kit-bucket"])
def test_service_account_from_credentials_file_and_no_secret_leaks(
    gcs_env: GcsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, section: str
) -> None:
    token = "ya29.FERRY-SECRET-" + secrets.token_hex(8)
    tokens = _TokenServer(token)
    try:
        pem = _service_account(tmp_path / "sa.json", tokens.url)
        conf = tmp_path / "credentials.conf"
        conf.write_text(
            f"[{section}]\ncredentials = {tmp_path / 'sa.json'}\nproject = ferry-proj\n"
        )
        conf.chmod(0o600)
        proto = GsProtocol(ProtocolContext(credentials_file=str(conf), settings=dict(FAST)))
        caplog.set_level(logging.DEBUG)
        url = f"gs://{KIT_BUCKET}/sa-{secrets.token_hex(4)}.bin"
        data = os.urandom(1500)
        _put(proto, tmp_path, url, data)
        assert _get(proto, tmp_path, url) == (data, sha(data))
        with pytest.raises(NotFound) as info:
            _get(proto, tmp_path, url + ".missing")
        assert tokens.hits >= 1  # the key file was used to get a token
        client = next(iter(proto._clients.values()))
        assert client.project == "ferry-proj"
        shown = " ".join(
            [str(info.value), repr(info.value), repr(proto), caplog.text, str(info.value.__cause__)]
        )
        assert token not in shown
        assert pem.splitlines()[1] not in shown
        proto.close()
    finally:
        tokens.stop()


def test_token_endpoint_refusal_is_auth_error(gcs_env: GcsServer, tmp_path: Path) -> None:
    tokens = _TokenServer("unused", status=400)
    try:
        _service_account(tmp_path / "sa.json", tokens.url)
        conf = tmp_path / "credentials.conf"
        conf.write_text(f"[gs]\ncredentials = {tmp_path / 'sa.json'}\n")
        conf.chmod(0o600)
        proto = GsProtocol(
            ProtocolContext(credentials_file=str(conf), settings={"gs.retry_timeout": "0"})
        )
        with pytest.raises(AuthError):
            proto.stat(parse_url(f"gs://{KIT_BUCKET}/x"))
        bad = tmp_path / "bad.conf"
        bad.write_text(f"[gs]\ncredentials = {tmp_path / 'no-such.json'}\n")
        bad.chmod(0o600)
        with pytest.raises(AuthError, match="no-such.json"):
            GsProtocol(ProtocolContext(credentials_file=str(bad))).stat(
                parse_url(f"gs://{KIT_BUCKET}/x")
            )
    finally:
        tokens.stop()


# -- ferry transfer as a subprocess -----------------------------------------------------


def ferry(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "GOOGLE_"))}
    clean.pop("PEGASUS_CREDENTIALS", None)
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "transfer", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


@pytest.fixture
def cli_env(gcs_server: GcsServer, tmp_path: Path) -> dict[str, str]:
    return {
        **gcs_server.env,
        "HOME": str(tmp_path / "home"),
        "FERRY_GS_RESUMABLE_THRESHOLD": "1MiB",
        "FERRY_GS_CHUNK_SIZE": "512KiB",
    }


@pytest.mark.parametrize("size", [70_000, 2 * MiB + 3], ids=["multipart", "resumable"])
def test_ferry_transfer_file_to_gs_and_back(
    cli_env: dict[str, str], gcs_server: GcsServer, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    src = tmp_path / "in.dat"
    src.write_bytes(data)
    url = _url("cli.dat")
    up = ferry(str(src), url, "--sha256", sha(data), "--json", env=cli_env)
    assert up.returncode == 0, up.stderr
    t = json.loads(up.stdout)["transfers"][0]
    assert t["ok"] and t["route"] == "upload" and t["sha256"] == f"sha256:{sha(data)}"
    assert _blob(_lib_client(gcs_server), url).metadata == {"sha256": sha(data)}

    out = tmp_path / "out" / "back.dat"
    down = ferry(url, str(out), "--sha256", sha(data), "--json", env=cli_env)
    assert down.returncode == 0, down.stderr
    t = json.loads(down.stdout)["transfers"][0]
    assert t["route"] == "download" and t["sha256"] == f"sha256:{sha(data)}" and t["bytes"] == size
    assert out.read_bytes() == data


def test_ferry_transfer_gs_to_gs_is_third_party(
    cli_env: dict[str, str], gcs_server: GcsServer, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    src = tmp_path / "in.dat"
    src.write_bytes(data)
    a, b = _url("a.dat"), _url("b.dat")
    assert ferry(str(src), a, env=cli_env).returncode == 0
    p = ferry(a, b, "--sha256", sha(data), "--json", env=cli_env)
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)["transfers"][0]
    assert t["route"] == "third-party" and t["sha256"] == f"sha256:{sha(data)}"
    assert t["attempts"][0]["route"] == "third-party"
    blob = _blob(_lib_client(gcs_server), b)
    assert blob.size == len(data) and blob.metadata == {"sha256": sha(data)}


def test_ferry_transfer_tampered_object_leaves_no_file(
    cli_env: dict[str, str], gcs_server: GcsServer, tmp_path: Path
) -> None:
    url = _url("tampered.dat")
    data = os.urandom(10_000)
    blob = _lib_client(gcs_server).bucket(KIT_BUCKET).blob(parse_url(url).path[1:])
    blob.metadata = {"sha256": "3" * 64}
    blob.upload_from_file(io.BytesIO(data), size=len(data))
    outdir = tmp_path / "out"
    p = ferry(url, str(outdir / "t.dat"), "--json", "-m", "1", env=cli_env)
    assert p.returncode == 1
    t = json.loads(p.stdout)["transfers"][0]
    assert not t["ok"] and t["error_type"] == "IntegrityError"
    assert list(outdir.iterdir()) == []  # no file, no .ferry-part left behind
