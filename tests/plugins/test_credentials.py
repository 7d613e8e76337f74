"""The credentials file: lookup by URL, permissions, secrets kept out of sight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.plugins.credentials import Secret, load_credentials
from ferry.plugins.errors import ConfigError
from ferry.plugins.url import parse_url

CONF = """\
[osn]
endpoint = http://127.0.0.1:8333
region = us-east-1

[alice@osn]
access_key = AKIAEXAMPLEKEY
secret_key = wJalrXUtnFEMI-very-secret

[127.0.0.1:8080]
username = bob
password = pa55-w0rd-secret
header.X-Token = tok-secret-123

[sftp://login.example.org]
key = ~/.ssh/id_ed25519
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "credentials.conf"
    path.write_text(CONF)
    path.chmod(0o600)
    return path


def test_lookup_by_url(conf: Path) -> None:
    creds = load_credentials(str(conf))
    s3 = creds.for_url(parse_url("s3://alice@osn/bucket/key"))
    assert s3["endpoint"] == "http://127.0.0.1:8333"
    assert s3["access_key"] == "AKIAEXAMPLEKEY"
    assert s3["secret_key"].reveal() == "wJalrXUtnFEMI-very-secret"
    web = creds.for_url(parse_url("webdav://127.0.0.1:8080/dir/f"))
    assert web["username"] == "bob" and isinstance(web["password"], Secret)
    assert creds.for_url(parse_url("sftp://login.example.org/x"))["key"] == "~/.ssh/id_ed25519"
    assert creds.for_url(parse_url("http://elsewhere/x")) == {}


def test_secrets_do_not_show(conf: Path) -> None:
    creds = load_credentials(str(conf))
    values = creds.for_url(parse_url("s3://alice@osn/b/k"))
    shown = f"{values} {values!r} {creds!r} {values['secret_key']} " + str(values["secret_key"])
    assert "very-secret" not in shown
    assert "very-secret" not in json.dumps({k: str(v) for k, v in values.items()})


def test_group_readable_file_is_refused(conf: Path) -> None:
    conf.chmod(0o640)
    with pytest.raises(ConfigError, match=r"chmod 600"):
        load_credentials(str(conf))


def test_env_and_missing(conf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FERRY_CREDENTIALS", str(conf))
    assert "osn" in load_credentials()
    monkeypatch.setenv("FERRY_CREDENTIALS", str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="nope.conf"):
        load_credentials()


def test_bad_file_error_does_not_quote_secrets(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("password = leaked-secret-value\n")  # no section header
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_credentials(str(path))
    assert "leaked-secret-value" not in str(info.value)


def test_transfer_refuses_open_credentials_file(conf: Path, tmp_path: Path) -> None:
    conf.chmod(0o644)
    (tmp_path / "a").write_bytes(b"x")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry.planner.cli",
            "transfer",
            "--credentials",
            str(conf),
            str(tmp_path / "a"),
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert p.returncode == 1 and "chmod 600" in p.stderr and not (tmp_path / "b").exists()
