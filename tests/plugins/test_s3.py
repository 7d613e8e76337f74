"""The s3 plugin against a real SeaweedFS S3 gateway on 127.0.0.1 (tests/fixtures/s3.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ferry.plugins.errors import (
    AuthError,
    ConnectError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    ThrottledError,
    TransientError,
    UnsupportedScheme,
)
from ferry.plugins.protocol import ProtocolContext, Sink, Source
from ferry.plugins.registry import Registry
from ferry.plugins.s3 import S3Protocol, S3Settings
from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance
from ferry.plugins.url import parse_url
from ferry.worker.engine import Engine, TransferConfig
from ferry.worker.request import Endpoint, TransferRequest
from tests.fixtures.s3 import (
    FaultyS3,
    S3Site,
    SeaweedS3,
    s3_credentials_fixture,  # noqa: F401 - the `s3_credentials` fixture
    s3_server_fixture,  # noqa: F401 - the `s3_server` fixture
    write_s3_credentials,
)
from tests.servers import free_port

MiB = 1 << 20
#: small parts so multipart and ranged paths run on modest objects
FAST = {
    "s3.multipart_threshold": "6MiB",
    "s3.part_size": "5MiB",
    "s3.download_part_size": "2MiB",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry(creds: S3Site | Path | None, **settings: str) -> Registry:
    path = creds.path if isinstance(creds, S3Site) else creds
    context = ProtocolContext(
        concurrency=4,
        timeout=20,
        credentials_file=str(path) if path else None,
        settings={**FAST, **settings},
    )
    return Registry(context)


def s3(reg: Registry) -> S3Protocol:
    proto = reg.protocol("s3")
    assert isinstance(proto, S3Protocol)
    return proto


def put_bytes(
    proto: S3Protocol, url: str, data: bytes, tmp: Path, expected: str | None = None
) -> None:
    src = tmp / f"src-{sha(url.encode())[:8]}"
    src.write_bytes(data)
    proto.put(Source(str(src), expected_sha256=expected), parse_url(url))


def get_bytes(proto: S3Protocol, url: str, tmp: Path) -> tuple[bytes, str]:
    path = tmp / "got"
    sink = Sink(str(path))
    try:
        proto.get(parse_url(url), sink)
    finally:
        sink.close()
    return path.read_bytes(), sink.sha256


def count_requests(proto: S3Protocol, url: str) -> Counter[str]:
    """Count the S3 operations the protocol sends from now on (lean path and botocore)."""
    proto.requests.clear()
    return proto.requests


def ferry(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the conformance kit -------------------------------------------------------------


class TestS3Conformance(ProtocolConformance):
    __test__ = True

    @pytest.fixture
    def endpoint(self, s3_credentials: S3Site) -> ConformanceEndpoint:
        bucket = s3_credentials.server.create_bucket(f"bucket-kit-{os.urandom(3).hex()}")
        return ConformanceEndpoint(
            base_url=s3_credentials.url(bucket),
            registry=registry(s3_credentials),
            large_size=9 * MiB + 123,  # above the (test) multipart threshold and range size
        )


# -- protocol-specific ---------------------------------------------------------------


def test_plugin_module_does_not_import_botocore() -> None:
    code = "import sys, ferry.plugins.s3; assert 'botocore' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_settings_from_context_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_S3_DOWNLOAD_STREAMS", "7")
    s = S3Settings.from_context(
        ProtocolContext(settings={"s3.part_size": "16M", "s3.create_bucket": "no"})
    )
    assert (s.part_size, s.download_streams, s.create_bucket) == (16 * MiB, 7, False)
    assert s.multipart_threshold == 32 * MiB


@pytest.mark.parametrize("expected", [True, False], ids=["sum-known", "sum-unknown"])
def test_large_object_multipart_roundtrip(
    s3_credentials: S3Site, tmp_path: Path, expected: bool
) -> None:
    server = s3_credentials.server
    bucket = server.create_bucket()
    data = os.urandom(40 * MiB + 17)
    url = s3_credentials.url(bucket, "big/object.bin")
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        calls = count_requests(proto, url)
        put_bytes(proto, url, data, tmp_path, sha(data) if expected else None)
        # 40 MiB in 5 MiB parts: create, 9 parts, complete; nothing else
        assert calls == Counter(CreateMultipartUpload=1, UploadPart=9, CompleteMultipartUpload=1)
        head = server.client().head_object(Bucket=bucket, Key="big/object.bin")
        assert head["Metadata"]["sha256"] == sha(data)
        assert head["ETag"].strip('"').endswith("-9")  # really a multipart object
        st = proto.stat(parse_url(url))
        assert st.size == len(data) and st.checksums == {"sha256": sha(data)}
        assert proto.checksum(parse_url(url)) == sha(data)
        calls.clear()
        got, digest = get_bytes(proto, url, tmp_path)
        assert got == data and digest == sha(data)
        assert calls == Counter(GetObject=21)  # 2 MiB ranges, no HEAD


def test_small_objects_take_one_request_each(s3_credentials: S3Site, tmp_path: Path) -> None:
    bucket = s3_credentials.server.create_bucket()
    url = s3_credentials.url(bucket, "small.bin")
    data = os.urandom(64 * 1024)
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        calls = count_requests(proto, url)
        put_bytes(proto, url, data, tmp_path)
        assert get_bytes(proto, url, tmp_path) == (data, sha(data))
        assert calls == Counter(PutObject=1, GetObject=1)
        assert proto.describe_path(parse_url(url)) == "lean"
    head = s3_credentials.server.client().head_object(Bucket=bucket, Key="small.bin")
    assert head["Metadata"]["sha256"] == sha(data)


def test_multipart_failure_aborts_the_upload(s3_credentials: S3Site, tmp_path: Path) -> None:
    bucket = s3_credentials.server.create_bucket()
    url = s3_credentials.url(bucket, "guarded-big.bin")
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        with pytest.raises(IntegrityError):
            put_bytes(proto, url, os.urandom(12 * MiB), tmp_path, expected="0" * 64)
        with pytest.raises(NotFound):
            proto.stat(parse_url(url))
    uploads = s3_credentials.server.client().list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")


def test_wrong_secret_is_auth_error_without_the_secret(
    s3_credentials: S3Site, tmp_path: Path
) -> None:
    server = s3_credentials.server
    bucket = server.create_bucket()
    server.client().put_object(Bucket=bucket, Key="k", Body=b"x")
    wrong = "Wrong-Secret/Value+abcdef0123456789XYZ"
    creds = write_s3_credentials(tmp_path / "bad.conf", server, secret_key=wrong)
    with registry(creds) as reg:
        proto = s3(reg)
        url = s3_credentials.url(bucket, "k")
        with pytest.raises(AuthError) as get_err:
            get_bytes(proto, url, tmp_path)
        with pytest.raises(AuthError) as put_err:
            put_bytes(proto, s3_credentials.url(bucket, "new"), b"data", tmp_path)
        for err in (get_err.value, put_err.value):
            text = f"{err} {err!r} {err.url}"
            assert wrong not in text and server.access_key not in text
            assert bucket in text
        shown = repr(proto) + repr(proto.site(parse_url(url)))
        assert wrong not in shown and server.access_key not in shown


def test_server_side_copy(s3_credentials: S3Site, tmp_path: Path) -> None:
    server = s3_credentials.server
    src_bucket, dst_bucket = server.create_bucket(), server.create_bucket()
    data = os.urandom(300_000)
    src = s3_credentials.url(src_bucket, "a/src.bin")
    dst = s3_credentials.url(dst_bucket, "b/dst.bin")
    with registry(s3_credentials) as reg:
        put_bytes(s3(reg), src, data, tmp_path)
    p = ferry("transfer", src, dst, "--sha256", sha(data), "--json", "--progress", "none")
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)["transfers"][0]
    assert t["route"] == "third-party" and t["sha256"] == f"sha256:{sha(data)}"
    assert [a["route"] for a in t["attempts"]] == ["third-party"]
    body = server.client().get_object(Bucket=dst_bucket, Key="b/dst.bin")
    assert body["Body"].read() == data and body["Metadata"]["sha256"] == sha(data)


def test_copy_between_credentials_goes_two_stage(s3_credentials: S3Site, tmp_path: Path) -> None:
    server = s3_credentials.server
    bucket = server.create_bucket()
    data = os.urandom(50_000)
    src = s3_credentials.url(bucket, "src.bin")
    dst = f"s3://other@seaweed/{bucket}/dst.bin"
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        put_bytes(proto, src, data, tmp_path)
        with pytest.raises(UnsupportedScheme):
            proto.copy(parse_url(src), parse_url(dst))
        [result] = Engine(reg, TransferConfig(max_attempts=1)).run(
            [
                TransferRequest(
                    [Endpoint(parse_url(src))], Endpoint(parse_url(dst)), sha256=sha(data)
                )
            ]
        )
        assert result.ok, result.error
        assert result.sha256 == sha(data)
    assert server.client().get_object(Bucket=bucket, Key="dst.bin")["Body"].read() == data


def test_mkdir_creates_the_bucket(s3_credentials: S3Site) -> None:
    name = f"made-by-mkdir-{os.urandom(3).hex()}"
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        proto.mkdir(parse_url(s3_credentials.url(name, "some/prefix")))
        proto.mkdir(parse_url(s3_credentials.url(name)))  # again: fine
        assert proto.stat(parse_url(s3_credentials.url(name))).is_dir
    s3_credentials.server.client().head_bucket(Bucket=name)


def test_put_creates_a_missing_bucket(s3_credentials: S3Site, tmp_path: Path) -> None:
    name = f"made-by-put-{os.urandom(3).hex()}"
    with registry(s3_credentials) as reg:
        put_bytes(s3(reg), s3_credentials.url(name, "x/y.txt"), b"hello", tmp_path)
    assert (
        s3_credentials.server.client().get_object(Bucket=name, Key="x/y.txt")["Body"].read()
        == b"hello"
    )


def test_recursive_remove(s3_credentials: S3Site) -> None:
    server = s3_credentials.server
    bucket = server.create_bucket()
    client = server.client()
    keys = ["dir", "dir/a", "dir/b/c", "dir/b/d e", "dir2/keep", "keep"]
    for k in keys:
        client.put_object(Bucket=bucket, Key=k, Body=k.encode())
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        assert proto.stat(parse_url(s3_credentials.url(bucket, "dir/b"))).is_dir
        proto.remove(parse_url(s3_credentials.url(bucket, "dir")), recursive=True)
        proto.remove(parse_url(s3_credentials.url(bucket, "dir")), recursive=True)  # missing: fine
        proto.remove(parse_url(s3_credentials.url(bucket, "keep")))
    left = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert left == ["dir2/keep"]


def test_aws_environment_without_credentials_file(
    s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "FERRY_", "PEGASUS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ferry, ~/.pegasus or ~/.aws
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = s3_server.create_bucket()
    data = os.urandom(10_000)
    for scheme in ("s3", "s3s"):
        url = f"{scheme}://anysite/{bucket}/env-{scheme}.bin"
        with registry(None) as reg:
            proto = s3(reg)
            assert proto.site(parse_url(url)).endpoint is None  # botocore finds it
            # botocore's client tells where the bucket lives; the requests go lean
            assert proto.describe_path(parse_url(url)) == "lean"
            put_bytes(proto, url, data, tmp_path)
            assert get_bytes(proto, url, tmp_path) == (data, sha(data))
    head = s3_server.client().head_object(Bucket=bucket, Key="env-s3s.bin")
    assert head["Metadata"]["sha256"] == sha(data)


@pytest.mark.parametrize("size", [1000, 7 * MiB], ids=["single-get", "ranged"])
def test_stored_sum_mismatch_is_integrity_error_and_leaves_no_file(
    s3_credentials: S3Site, tmp_path: Path, size: int
) -> None:
    server = s3_credentials.server
    bucket = server.create_bucket()
    server.client().put_object(
        Bucket=bucket, Key="bad.bin", Body=os.urandom(size), Metadata={"sha256": "ab" * 32}
    )
    url = parse_url(s3_credentials.url(bucket, "bad.bin"))
    dest = tmp_path / "out" / "bad.bin"
    with registry(s3_credentials) as reg:
        with pytest.raises(IntegrityError) as info:
            get_bytes(s3(reg), str(url), tmp_path)
        assert info.value.expected == "ab" * 32
        [result] = Engine(reg, TransferConfig(max_attempts=1)).run(
            [TransferRequest([Endpoint(url)], Endpoint(parse_url(f"file://{dest}")))]
        )
    assert not result.ok and result.error_type == "IntegrityError"
    assert not dest.exists() and os.listdir(dest.parent) == []


def test_missing_bucket_and_unreachable_endpoint(s3_credentials: S3Site, tmp_path: Path) -> None:
    with registry(s3_credentials) as reg:
        with pytest.raises(NotFound):
            get_bytes(s3(reg), s3_credentials.url("no-such-bucket-here", "k"), tmp_path)
    creds = tmp_path / "closed.conf"
    creds.write_text(
        f"[closed]\nendpoint = http://127.0.0.1:{free_port()}\n"
        "[u@closed]\naccess_key = A\nsecret_key = B\n"
    )
    os.chmod(creds, 0o600)
    with registry(creds) as reg:
        with pytest.raises(ConnectError):
            s3(reg).stat(parse_url("s3://u@closed/bucket/key"))


def test_ferry_transfer_both_directions(s3_credentials: S3Site, tmp_path: Path) -> None:
    bucket = s3_credentials.server.create_bucket()
    files = {"small.dat": os.urandom(70_000), "big.dat": os.urandom(9 * MiB + 5)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        up = s3_credentials.url(bucket, f"cli/{name}")
        p = ferry(
            "transfer",
            str(tmp_path / name),
            up,
            "--sha256",
            sha(data),
            "--json",
            "--progress",
            "none",
        )
        assert p.returncode == 0, p.stderr
        t = json.loads(p.stdout)["transfers"][0]
        assert t["route"] == "upload" and t["sha256"] == f"sha256:{sha(data)}"
    listing = [
        {
            "type": "transfer",
            "lfn": name,
            "id": i,
            "src_urls": [
                {"site_label": "seaweed", "url": s3_credentials.url(bucket, f"cli/{name}")}
            ],
            "dest_urls": [{"site_label": "local", "url": f"file://{tmp_path}/back/{name}"}],
            "sha256": sha(data),
        }
        for i, (name, data) in enumerate(files.items())
    ]
    p = ferry("transfer", "--json", "-n", "4", "--progress", "none", stdin=json.dumps(listing))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["ok"]
    for t in report["transfers"]:
        data = files[t["lfn"]]
        assert t["route"] == "download" and t["sha256"] == f"sha256:{sha(data)}"
        assert (tmp_path / "back" / t["lfn"]).read_bytes() == data
    assert s3_credentials.server.secret_key not in p.stderr + p.stdout


# -- the lean request path (SigV4 signed here, pooled http.client) ----------------------

LEAN_ROUNDTRIP = """
import json, os, sys
from ferry.plugins.protocol import ProtocolContext, Sink, Source
from ferry.plugins.registry import Registry
from ferry.plugins.url import parse_url
src, url, out = sys.argv[1:4]
with Registry(ProtocolContext(concurrency=4)) as reg:
    proto = reg.protocol("s3")
    proto.put(Source(src), parse_url(url))
    sink = Sink(out)
    proto.get(parse_url(url), sink)
    sink.close()
    st = proto.stat(parse_url(url))
    print(json.dumps({
        "botocore": "botocore" in sys.modules,
        "requests": dict(proto.requests),
        "sha256": sink.sha256,
        "stat": [st.size, st.checksums.get("sha256")],
    }))
"""


def lean_roundtrip(url: str, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """put + get + stat of one small object in a fresh process; what it saw."""
    data = os.urandom(70_000)
    src = tmp / "lean-src"
    src.write_bytes(data)
    p = subprocess.run(
        [sys.executable, "-c", LEAN_ROUNDTRIP, str(src), url, str(tmp / "lean-out")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    result: dict[str, Any] = json.loads(p.stdout)
    assert result["sha256"] == sha(data)
    assert result["stat"] == [len(data), sha(data)]
    assert (tmp / "lean-out").read_bytes() == data
    return result


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FERRY_", "PEGASUS_"))}
    env.update(
        HOME=str(tmp),
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
    )
    return env


def test_lean_path_with_file_credentials_needs_no_botocore(
    s3_credentials: S3Site, tmp_path: Path
) -> None:
    bucket = s3_credentials.server.create_bucket()
    env = {**clean_env(tmp_path), "FERRY_CREDENTIALS": str(s3_credentials.path)}
    result = lean_roundtrip(s3_credentials.url(bucket, "lean/a b+c=d~e.bin"), tmp_path, env)
    # signed here and accepted by the server; one request per operation; no botocore
    assert result["requests"] == {"PutObject": 1, "GetObject": 1, "HeadObject": 1}
    assert result["botocore"] is False


def test_lean_path_with_keys_from_the_environment(s3_server: SeaweedS3, tmp_path: Path) -> None:
    """The file names only the endpoint: the keys come from AWS_* (as botocore would)."""
    bucket = s3_server.create_bucket()
    creds = tmp_path / "endpoint-only.conf"
    creds.write_text(f"[envsite]\nendpoint = {s3_server.endpoint}\n")
    os.chmod(creds, 0o600)
    env = {
        **clean_env(tmp_path),
        "FERRY_CREDENTIALS": str(creds),
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    result = lean_roundtrip(f"s3://envsite/{bucket}/from-env.bin", tmp_path, env)
    assert result["botocore"] is False
    # a wrong secret in the environment: AuthError, without the secret in the message
    wrong = "Wrong-Env-Secret/abcdef0123456789"
    env["AWS_SECRET_ACCESS_KEY"] = wrong
    code = (
        "import sys\nfrom ferry.plugins.protocol import ProtocolContext, Sink\n"
        "from ferry.plugins.registry import Registry\nfrom ferry.plugins.url import parse_url\n"
        "from ferry.plugins.errors import AuthError\n"
        "reg = Registry(ProtocolContext())\n"
        "try:\n"
        f"    reg.protocol('s3').get(parse_url('s3://envsite/{bucket}/from-env.bin'),"
        f" Sink(sys.argv[1]))\n"
        "except AuthError as exc:\n    print('AuthError', exc)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.stdout.startswith("AuthError"), p.stdout + p.stderr
    assert wrong not in p.stdout + p.stderr


def test_lean_path_with_a_profile(s3_server: SeaweedS3, tmp_path: Path) -> None:
    """``profile`` in the file: botocore's session gives the keys, and they outrank AWS_*."""
    bucket = s3_server.create_bucket()
    aws = tmp_path / "aws-credentials"
    aws.write_text(
        f"[ferryprof]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    creds = tmp_path / "profile.conf"
    creds.write_text(f"[profsite]\nendpoint = {s3_server.endpoint}\nprofile = ferryprof\n")
    os.chmod(creds, 0o600)
    env = {
        **clean_env(tmp_path),
        "FERRY_CREDENTIALS": str(creds),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws),
        # an explicitly named profile wins over these, as in botocore
        "AWS_ACCESS_KEY_ID": "AKIDNOTTHEONE",
        "AWS_SECRET_ACCESS_KEY": "not-the-secret",
    }
    result = lean_roundtrip(f"s3://profsite/{bucket}/from-profile.bin", tmp_path, env)
    assert result["requests"] == {"PutObject": 1, "GetObject": 1, "HeadObject": 1}


@pytest.mark.parametrize(
    ("key", "error", "retry_after"),
    [
        ("slow", ThrottledError, 7.0),
        ("boom", TransientError, None),
        ("denied", PermissionDenied, None),
        ("badsig", AuthError, None),
        ("gone", NotFound, None),
    ],
)
def test_error_responses_map_to_the_error_tree(
    tmp_path: Path, key: str, error: type[Exception], retry_after: float | None
) -> None:
    secret = "Faulty-Secret/Value+0123456789"
    creds = tmp_path / "faulty.conf"
    with FaultyS3() as server:
        creds.write_text(
            f"[faulty]\nendpoint = {server.endpoint}\n"
            f"[u@faulty]\naccess_key = AKIDFAULTY\nsecret_key = {secret}\n"
        )
        os.chmod(creds, 0o600)
        url = f"s3://u@faulty/bucket/{key}"
        with registry(creds, **{"s3.request_retries": "1"}) as reg:
            proto = s3(reg)
            for op in ("get", "put", "stat"):
                before = len(server.requests)
                # a HEAD's error has no body: a bare 403 cannot tell a bad signature
                expected = PermissionDenied if (op, key) == ("stat", "badsig") else error
                with pytest.raises(expected) as info:
                    if op == "get":
                        get_bytes(proto, url, tmp_path)
                    elif op == "put":
                        put_bytes(proto, url, b"payload", tmp_path)
                    else:
                        proto.stat(parse_url(url))
                err = info.value
                assert isinstance(err, TransientError) == (key in ("slow", "boom"))
                if retry_after is not None:
                    assert isinstance(err, ThrottledError) and err.retry_after == retry_after
                assert secret not in f"{err} {err!r}" and key in str(err)
                # the retry got the server's answer too (a HEAD's unread error response
                # once made the retry fail on its own connection instead)
                assert "connection lost" not in str(err)
                # a 500 is tried once more at once; a long Retry-After goes to the engine;
                # a missing key's stat also asks whether it is a prefix (ListObjectsV2)
                sent = 2 if key == "boom" or (op, key) == ("stat", "gone") else 1
                assert len(server.requests) - before == sent
        # every request was signed with SigV4 (the access key, never the secret)
        for method, _path, headers in server.requests:
            assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAULTY/")
            assert secret not in str(headers)
            if method == "PUT":
                assert headers["x-amz-meta-sha256"] == sha(b"payload")


def test_ranged_download_through_the_lean_path(s3_credentials: S3Site, tmp_path: Path) -> None:
    """Large objects: parallel ranges (If-Match the first ETag), one pass of sha256."""
    bucket = s3_credentials.server.create_bucket()
    data = os.urandom(7 * MiB + 3)
    s3_credentials.server.client().put_object(
        Bucket=bucket, Key="ranged.bin", Body=data, Metadata={"sha256": sha(data)}
    )
    url = s3_credentials.url(bucket, "ranged.bin")
    with registry(s3_credentials, **{"s3.download_streams": "3"}) as reg:
        proto = s3(reg)
        calls = count_requests(proto, url)
        assert get_bytes(proto, url, tmp_path) == (data, sha(data))
        assert calls == Counter(GetObject=4)  # 2 MiB ranges


def test_a_proxy_in_the_environment_keeps_botocore(
    s3_credentials: S3Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean path does not speak to proxies: with one configured, botocore sends.

    The "proxy" is SeaweedFS itself (it accepts absolute request targets), so
    the requests really travel through botocore's proxy support.
    """
    monkeypatch.setenv("HTTP_PROXY", s3_credentials.server.endpoint)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    bucket = s3_credentials.server.create_bucket()
    url = s3_credentials.url(bucket, "via-proxy.bin")
    data = os.urandom(30_000)
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        calls = count_requests(proto, url)
        put_bytes(proto, url, data, tmp_path)
        assert get_bytes(proto, url, tmp_path) == (data, sha(data))
        assert proto.checksum(parse_url(url)) == sha(data)
        assert calls == Counter(PutObject=1, GetObject=1, HeadObject=1)
        assert proto.describe_path(parse_url(url)) == "botocore"


def test_a_dropped_keep_alive_connection_is_replaced(
    s3_credentials: S3Site, tmp_path: Path
) -> None:
    """An idle pooled connection that was closed meanwhile is noticed and not used."""
    import socket

    bucket = s3_credentials.server.create_bucket()
    url = s3_credentials.url(bucket, "keepalive.bin")
    data = os.urandom(5000)
    with registry(s3_credentials) as reg:
        proto = s3(reg)
        put_bytes(proto, url, data, tmp_path)
        _, hot, _, _ = proto._open_hot(parse_url(url))
        [pool] = hot.lean._pools.values()  # type: ignore[attr-defined]
        assert pool.opened == 1 and len(pool._idle) == 1  # kept alive after the PUT
        pool._idle[0].sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it
        assert get_bytes(proto, url, tmp_path) == (data, sha(data))
        assert pool.opened == 2 and len(pool._idle) == 1
        calls = count_requests(proto, url)
        assert get_bytes(proto, url, tmp_path) == (data, sha(data))
        assert pool.opened == 2 and calls == Counter(GetObject=1)  # reused
