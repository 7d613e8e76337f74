"""Plain HTTP PUT uploads (``http://``/``https://`` destinations), as HTCondor's curl
plugin makes them: to nginx with PUT enabled, and to a pre-signed SeaweedFS URL."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.fixtures.s3 import (
    SeaweedS3,
    s3_server_fixture,  # noqa: F401 - the `s3_server` fixture
)
from tests.servers import NginxServer
from tests.worker.test_transfer_cli import ferry


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_to_nginx_with_sha256_reported(nginx_server: NginxServer, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "out.dat").write_bytes(data)
    url = f"{nginx_server.url}/upload/run1/sub/out.dat"
    p = ferry("transfer", "--json", "--sha256", sha(data), str(tmp_path / "out.dat"), url)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)["transfers"][0]
    assert result["route"] == "upload"
    assert result["sha256"] == f"sha256:{sha(data)}"
    assert (nginx_server.root / "upload/run1/sub/out.dat").read_bytes() == data


def test_put_refused_by_the_server_is_a_permanent_failure(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    (tmp_path / "out.dat").write_bytes(b"refused")
    url = f"{nginx_server.url}/not-for-uploads/out.dat"  # no PUT here: 405
    p = ferry("transfer", "-m", "3", str(tmp_path / "out.dat"), url)
    assert p.returncode == 1
    assert "405" in p.stderr
    assert "failed after 1 round(s)" in p.stderr
    assert not (nginx_server.root / "not-for-uploads").exists()


def test_put_to_a_directory_url_is_refused(nginx_server: NginxServer, tmp_path: Path) -> None:
    (tmp_path / "out.dat").write_bytes(b"x")
    p = ferry("transfer", "--json", str(tmp_path / "out.dat"), f"{nginx_server.url}/upload/")
    # a DEST ending in / keeps the source's name, as for a local directory
    assert p.returncode == 0, p.stderr
    assert (nginx_server.root / "upload/out.dat").read_bytes() == b"x"


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_put_to_a_presigned_s3_url_keeps_the_signature_secret(
    s3_server: SeaweedS3, tmp_path: Path, version: str
) -> None:
    bucket = s3_server.create_bucket()
    client = s3_server.client(signature_version=version)
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "runs/out.dat"}, ExpiresIn=600
    )
    query = parse_qs(urlsplit(url).query)
    signature = (query.get("X-Amz-Signature") or query["Signature"])[0]
    data = os.urandom(200_000)
    (tmp_path / "out.dat").write_bytes(data)
    p = ferry("transfer", "--json", "-d", str(tmp_path / "out.dat"), url)
    assert p.returncode == 0, p.stderr
    got = client.get_object(Bucket=bucket, Key="runs/out.dat")["Body"].read()
    assert got == data
    for form in (signature, quote(signature, safe="")):
        assert form not in p.stdout + p.stderr


def test_two_stage_http_to_http_put(nginx_server: NginxServer, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (nginx_server.root / "two-stage").mkdir(exist_ok=True)
    (nginx_server.root / "two-stage/in.dat").write_bytes(data)
    p = ferry(
        "transfer",
        "--json",
        f"{nginx_server.url}/two-stage/in.dat",
        f"{nginx_server.url}/upload/two-stage/copy.dat",
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["transfers"][0]["route"] == "two-stage"
    assert (nginx_server.root / "upload/two-stage/copy.dat").read_bytes() == data


def test_upload_with_a_wrong_sum_is_worded_as_a_mismatch(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    (tmp_path / "out.dat").write_bytes(b"these bytes")
    url = f"{nginx_server.url}/upload/wrong/out.dat"
    p = ferry("transfer", "--sha256", "0" * 64, str(tmp_path / "out.dat"), url)
    assert p.returncode == 1
    assert f"sha256 mismatch for {url} from file://{tmp_path}/out.dat: expected {'0' * 64}" in (
        p.stderr
    )
    assert not (nginx_server.root / "upload/wrong/out.dat").exists()


def test_a_refused_connection_is_not_called_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "out.dat").write_bytes(b"x" * 1000)
    p = ferry("transfer", "-m", "1", str(tmp_path / "out.dat"), "http://127.0.0.1:9/up/out.dat")
    assert p.returncode == 1
    assert "cannot connect" in p.stderr and "changed while it was read" not in p.stderr
