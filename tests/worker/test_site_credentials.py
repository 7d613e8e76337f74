"""pegasus-transfer's per-site credentials, by the ``site_label`` of each end of a
transfer in the JSON list: ``SSH_PRIVATE_KEY_<label>`` and, for S3,
``PEGASUS_CREDENTIALS_<label>`` (``-`` in a label read as ``_``). The source's site
counts for a download, the destination's for an upload."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.s3 import (
    SeaweedS3,
    s3_server_fixture,  # noqa: F401 - the `s3_server` fixture
    write_s3_credentials,
)
from tests.fixtures.sftp import (
    SshServer,
    keygen,
    sshd_server_fixture,  # noqa: F401 - the `sshd_server` fixture
    write_credentials,
)
from tests.worker.test_transfer_cli import ferry


def transfer(src: str, src_site: str, dest: str, dest_site: str) -> str:
    return json.dumps(
        [
            {
                "type": "transfer",
                "lfn": "f.dat",
                "id": 1,
                "src_urls": [{"site_label": src_site, "url": src}],
                "dest_urls": [{"site_label": dest_site, "url": dest}],
            }
        ]
    )


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No agent, no ~/.ssh, no AWS or ferry settings from outside: only what a test sets."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("AWS_", "SSH_PRIVATE_KEY", "PEGASUS_CREDENTIALS", "FERRY_")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return {}


def test_ssh_key_of_each_end_s_site(
    sshd_server: SshServer, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    known = write_credentials(
        tmp_path / "known.conf",
        {f"{sshd_server.host}:{sshd_server.port}": {"known_hosts": str(sshd_server.known_hosts)}},
    )
    wrong = keygen(tmp_path / "not_authorized")
    env = {
        "PEGASUS_CREDENTIALS": str(known),
        "SSH_PRIVATE_KEY": str(wrong),  # the general key is refused by the server
        "SSH_PRIVATE_KEY_remote_site": str(sshd_server.client_key),
    }
    data = os.urandom(50_000)
    (tmp_path / "f.dat").write_bytes(data)
    up = transfer(
        f"file://{tmp_path}/f.dat", "local", sshd_server.url("sites/f.dat"), "remote-site"
    )
    p = ferry("transfer", "-m", "1", stdin=up, env=env)
    assert p.returncode == 0, p.stderr
    assert (sshd_server.root / "sites/f.dat").read_bytes() == data

    down = transfer(
        sshd_server.url("sites/f.dat"), "remote-site", f"file://{tmp_path}/back.dat", "local"
    )
    p = ferry("transfer", "-m", "1", stdin=down, env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "back.dat").read_bytes() == data

    # the upload's key is the destination's site's: with the labels swapped, only the
    # refused general key is left for the server
    swapped = transfer(
        f"file://{tmp_path}/f.dat", "remote-site", sshd_server.url("sites/g.dat"), "local"
    )
    p = ferry("transfer", "-m", "1", stdin=swapped, env=env)
    assert p.returncode == 1
    assert "SSH_PRIVATE_KEY" in p.stderr
    assert not (sshd_server.root / "sites/g.dat").exists()


def test_s3_credentials_file_of_the_site(
    s3_server: SeaweedS3, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    general = write_s3_credentials(tmp_path / "general.conf", s3_server, secret_key="wrong-secret")
    own = write_s3_credentials(tmp_path / "osn.conf", s3_server)
    env = {"PEGASUS_CREDENTIALS": str(general), "PEGASUS_CREDENTIALS_osn": str(own)}
    bucket = s3_server.create_bucket()
    data = os.urandom(70_000)
    (tmp_path / "f.dat").write_bytes(data)
    url = f"s3://tester@seaweed/{bucket}/sites/f.dat"
    p = ferry(
        "transfer",
        "-m",
        "1",
        stdin=transfer(f"file://{tmp_path}/f.dat", "local", url, "osn"),
        env=env,
    )
    assert p.returncode == 0, p.stderr
    got = s3_server.client().get_object(Bucket=bucket, Key="sites/f.dat")["Body"].read()
    assert got == data

    back = transfer(url, "osn", f"file://{tmp_path}/back.dat", "local")
    p = ferry("transfer", "-m", "1", stdin=back, env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "back.dat").read_bytes() == data

    # another site reads the general file, whose secret the server refuses
    other = transfer(url, "elsewhere", f"file://{tmp_path}/other.dat", "local")
    p = ferry("transfer", "-m", "1", stdin=other, env=env)
    assert p.returncode == 1
    assert "wrong-secret" not in p.stderr
    assert not (tmp_path / "other.dat").exists()
