"""Audit of the remote protocols' contract (issue 4) through `ferry transfer`, against
real servers on 127.0.0.1: credentials from each library's own sources, host keys,
wrong sums, secrets and error messages. Each test here failed before its fix."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.gs import (
    KIT_BUCKET,
    GcsServer,
    gcs_server_fixture,  # noqa: F401 - the `gcs_server` fixture
)
from tests.fixtures.s3 import (
    SeaweedS3,
    s3_server_fixture,  # noqa: F401 - the `s3_server` fixture
)
from tests.fixtures.sftp import (
    SshServer,
    keygen,
    sshd_server_fixture,  # noqa: F401 - the `sshd_server` fixture
    write_credentials,
)

PASSPHRASE = "Audit-Passphrase-planted-7f3a"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ferry(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``ferry transfer --json ARGS...`` as a subprocess with exactly ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "transfer", "--json", "-m", "1", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def clean_env(home: Path) -> dict[str, str]:
    """The environment without credentials of any kind, HOME at ``home``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "FERRY_CREDENTIALS", "PEGASUS_", "GOOGLE_", "SSH_"))
        and k != "STORAGE_EMULATOR_HOST"
    }
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    return env


# -- sftp: one passphrase, several keys --------------------------------------------------


def test_passphrase_does_not_break_unencrypted_keys(sshd_server: SshServer, tmp_path: Path) -> None:
    """A `passphrase` in the credentials file (meant for an encrypted key) must not make
    the unencrypted keys unusable: the `key` of the section and ~/.ssh/id_* are tried
    as OpenSSH tries them (docs/protocols/sftp.md: "unencrypted, or with the passphrase")."""
    home = tmp_path / "home"
    env = clean_env(home)
    data = os.urandom(3000)
    (tmp_path / "in.bin").write_bytes(data)
    section = f"127.0.0.1:{sshd_server.port}"

    # the unencrypted key named in the file, with a passphrase beside it
    creds = write_credentials(
        tmp_path / "key.conf",
        {
            section: {
                "key": str(sshd_server.client_key),
                "known_hosts": str(sshd_server.known_hosts),
                "passphrase": PASSPHRASE,
            }
        },
    )
    url = sshd_server.url("audit/pp/one.bin")
    p = ferry(
        "--credentials", str(creds), "--sha256", sha(data), str(tmp_path / "in.bin"), url, env=env
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert (sshd_server.root / "audit/pp/one.bin").read_bytes() == data
    assert PASSPHRASE not in p.stdout + p.stderr

    # the unencrypted ~/.ssh/id_ed25519, with a passphrase for another (refused) key
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "id_ed25519").write_bytes(sshd_server.client_key.read_bytes())
    (ssh / "id_ed25519").chmod(0o600)
    other = keygen(tmp_path / "other_key")
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", PASSPHRASE, "-f", str(other)],
        check=True,
        capture_output=True,
    )
    creds = write_credentials(
        tmp_path / "home.conf",
        {
            section: {
                "key": str(other),
                "known_hosts": str(sshd_server.known_hosts),
                "passphrase": PASSPHRASE,
            }
        },
    )
    back = tmp_path / "back.bin"
    p = ferry("--credentials", str(creds), "--sha256", sha(data), url, str(back), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert back.read_bytes() == data
    assert PASSPHRASE not in p.stdout + p.stderr


def test_upload_onto_a_remote_directory_says_so(sshd_server: SshServer, tmp_path: Path) -> None:
    """An upload whose destination is an existing directory fails with one line that
    names the URL and says why (it said only "failure"), and leaves no temporary file."""
    env = clean_env(tmp_path / "home")
    creds = write_credentials(
        tmp_path / "c.conf",
        {
            f"127.0.0.1:{sshd_server.port}": {
                "key": str(sshd_server.client_key),
                "known_hosts": str(sshd_server.known_hosts),
            }
        },
    )
    (sshd_server.root / "audit/isdir").mkdir(parents=True, exist_ok=True)
    (tmp_path / "in.bin").write_bytes(b"x" * 100)
    url = sshd_server.url("audit/isdir")
    p = ferry("--credentials", str(creds), str(tmp_path / "in.bin"), url, env=env)
    assert p.returncode == 1
    error = json.loads(p.stdout)["transfers"][0]["error"]
    assert "\n" not in error and f"put {url}: is a directory" in error
    assert not [f for f in (sshd_server.root / "audit").iterdir() if "ferry-part" in f.name]


# -- gs: which of bucket or object is missing -------------------------------------------


@pytest.fixture
def gcs(gcs_server: GcsServer) -> GcsServer:
    return gcs_server  # the session's fake-gcs-server


def test_gs_missing_bucket_is_named(gcs: GcsServer, tmp_path: Path) -> None:
    """Credentials from the environment only (STORAGE_EMULATOR_HOST, no file); a missing
    bucket is one short line that says so, for a download, an upload and a copy (an
    upload used to quote the library's request URL, JSON body and status tuple)."""
    env = {**clean_env(tmp_path / "home"), **gcs.env}
    data = os.urandom(2000)
    (tmp_path / "in.bin").write_bytes(data)
    there = f"gs://{KIT_BUCKET}/audit/{os.urandom(4).hex()}.bin"
    p = ferry("--sha256", sha(data), str(tmp_path / "in.bin"), there, env=env)
    assert p.returncode == 0, p.stdout + p.stderr

    cases = [
        ("gs://no-such-bucket-a1/x.bin", str(tmp_path / "out.bin"), "GET"),
        (str(tmp_path / "in.bin"), "gs://no-such-bucket-a1/x.bin", "PUT"),
        (there, "gs://no-such-bucket-a1/x.bin", "COPY"),
    ]
    for src, dst, what in cases:
        p = ferry(src, dst, env=env)
        assert p.returncode == 1
        error = json.loads(p.stdout)["transfers"][0]["attempts"][0]["error"]
        assert error == f"{what} gs://no-such-bucket-a1/x.bin: no such bucket 'no-such-bucket-a1'"
    assert not (tmp_path / "out.bin").exists()
    p = ferry(f"gs://{KIT_BUCKET}/audit/missing.bin", str(tmp_path / "out.bin"), env=env)
    error = json.loads(p.stdout)["transfers"][0]["attempts"][0]["error"]
    assert error == f"GET gs://{KIT_BUCKET}/audit/missing.bin: no such object"


# -- sftp: known_hosts read as OpenSSH reads it ------------------------------------------


def _known_line(server: SshServer, pub: Path, *, prefix: str = "") -> str:
    kind, blob = pub.read_text().split()[:2]
    return f"{prefix}[{server.host}]:{server.port} {kind} {blob}\n"


def _sftp_get(server: SshServer, creds: Path, env: dict[str, str], dest: Path) -> str:
    """Download one file; return the attempt's error ('' on success)."""
    p = ferry("--credentials", str(creds), server.url("audit/kh/f.txt"), str(dest), env=env)
    report = json.loads(p.stdout)["transfers"][0]
    assert p.returncode == (0 if report["ok"] else 1)
    return "" if report["ok"] else report["attempts"][0]["error"]


def test_host_key_in_any_known_hosts_file_is_accepted(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """OpenSSH accepts a host key that any known_hosts file lists; a stale line for the
    host in ~/.ssh/known_hosts must not veto the right key in the configured file (nor
    the other way round). A changed key everywhere is still refused, naming the file."""
    (sshd_server.root / "audit/kh").mkdir(parents=True, exist_ok=True)
    (sshd_server.root / "audit/kh/f.txt").write_bytes(b"hello")
    home = tmp_path / "home"
    env = clean_env(home)
    (home / ".ssh").mkdir(mode=0o700)
    stale = keygen(tmp_path / "stale_host_key")
    user_known = home / ".ssh/known_hosts"
    configured = tmp_path / "known_hosts"
    creds = write_credentials(
        tmp_path / "c.conf",
        {
            f"127.0.0.1:{sshd_server.port}": {
                "key": str(sshd_server.client_key),
                "known_hosts": str(configured),
            }
        },
    )
    right = _known_line(sshd_server, sshd_server.host_key.with_suffix(".pub"))
    wrong = _known_line(sshd_server, stale.with_suffix(".pub"))

    user_known.write_text(wrong)
    configured.write_text(right)
    assert _sftp_get(sshd_server, creds, env, tmp_path / "a.txt") == ""
    assert (tmp_path / "a.txt").read_bytes() == b"hello"

    user_known.write_text(right)
    configured.write_text(wrong)
    assert _sftp_get(sshd_server, creds, env, tmp_path / "b.txt") == ""

    user_known.write_text(wrong)
    error = _sftp_get(sshd_server, creds, env, tmp_path / "c.txt")
    assert "CHANGED" in error and sshd_server.url("audit/kh/f.txt") in error and "\n" not in error
    assert not (tmp_path / "c.txt").exists()


def test_host_key_in_known_hosts2_is_accepted(sshd_server: SshServer, tmp_path: Path) -> None:
    """~/.ssh/known_hosts2 is one of OpenSSH's default UserKnownHostsFile entries."""
    (sshd_server.root / "audit/kh2").mkdir(parents=True, exist_ok=True)
    (sshd_server.root / "audit/kh2/f.txt").write_bytes(b"two")
    home = tmp_path / "home"
    env = clean_env(home)
    (home / ".ssh").mkdir(mode=0o700)
    creds = write_credentials(
        tmp_path / "c.conf", {f"127.0.0.1:{sshd_server.port}": {"key": str(sshd_server.client_key)}}
    )
    (home / ".ssh/known_hosts2").write_text(
        _known_line(sshd_server, sshd_server.host_key.with_suffix(".pub"))
    )
    url = sshd_server.url("audit/kh2/f.txt")
    p = ferry("--credentials", str(creds), url, str(tmp_path / "f.txt"), env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "f.txt").read_bytes() == b"two"


def test_known_hosts_markers_and_revoked_keys(sshd_server: SshServer, tmp_path: Path) -> None:
    """A `@revoked` line (or any marker or malformed line) must not make the whole
    known_hosts file unreadable (it did: every connection failed with paramiko's
    InvalidHostKey), and a revoked host key is refused whatever the policy."""
    (sshd_server.root / "audit/kh").mkdir(parents=True, exist_ok=True)
    (sshd_server.root / "audit/kh/f.txt").write_bytes(b"hello")
    env = clean_env(tmp_path / "home")
    other = keygen(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    right = _known_line(sshd_server, sshd_server.host_key.with_suffix(".pub"))
    known.write_text(
        _known_line(sshd_server, other.with_suffix(".pub"), prefix="@revoked ")
        + "not a known_hosts line\n"
        + right
    )
    section = {"key": str(sshd_server.client_key), "known_hosts": str(known)}
    creds = write_credentials(tmp_path / "c.conf", {f"127.0.0.1:{sshd_server.port}": section})
    assert _sftp_get(sshd_server, creds, env, tmp_path / "a.txt") == ""
    assert (tmp_path / "a.txt").read_bytes() == b"hello"

    revoked = _known_line(sshd_server, sshd_server.host_key.with_suffix(".pub"), prefix="@revoked ")
    known.write_text(revoked + right)
    for policy in ("reject", "accept-new"):
        creds = write_credentials(
            tmp_path / "c.conf",
            {f"127.0.0.1:{sshd_server.port}": {**section, "host_key_policy": policy}},
        )
        error = _sftp_get(sshd_server, creds, env, tmp_path / "b.txt")
        assert "@revoked" in error and sshd_server.url("audit/kh/f.txt") in error
        assert not (tmp_path / "b.txt").exists()


# -- s3 ------------------------------------------------------------------------------------


@pytest.fixture
def seaweed(s3_server: SeaweedS3) -> SeaweedS3:
    return s3_server  # the session's SeaweedFS (each test makes its own buckets)


def test_s3s_urls_read_the_s3_sections(seaweed: SeaweedS3, tmp_path: Path) -> None:
    """s3s:// is the same protocol as s3:// (docs/protocols/s3.md), so the
    scheme-qualified `[s3://site]`, `[s3://user@site]` sections apply to it too (as
    `[sftp://...]` ones do to scp://); an `[s3s://...]` section still wins."""
    env = clean_env(tmp_path / "home")
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    bucket = seaweed.create_bucket()
    data = os.urandom(1000)
    (tmp_path / "in.bin").write_bytes(data)
    creds = tmp_path / "c.conf"
    creds.write_text(
        f"[s3://audit]\nendpoint = {seaweed.endpoint}\n\n"
        f"[s3://u@audit]\naccess_key = {seaweed.access_key}\nsecret_key = {seaweed.secret_key}\n"
    )
    creds.chmod(0o600)
    for scheme in ("s3", "s3s"):
        url = f"{scheme}://u@audit/{bucket}/{scheme}.bin"
        p = ferry(
            "--credentials",
            str(creds),
            "--sha256",
            sha(data),
            str(tmp_path / "in.bin"),
            url,
            env=env,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        back = tmp_path / f"{scheme}.back"
        p = ferry("--credentials", str(creds), "--sha256", sha(data), url, str(back), env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert back.read_bytes() == data
    # a more specific s3s:// section wins over its s3:// twin
    creds.write_text(
        creds.read_text() + "\n[s3s://u@audit]\nsecret_key = Wrong-Secret-planted-0001\n"
    )
    p = ferry(
        "--credentials", str(creds), f"s3s://u@audit/{bucket}/s3s.bin", str(tmp_path / "x"), env=env
    )
    assert p.returncode == 1 and "Wrong-Secret-planted-0001" not in p.stdout + p.stderr
    assert json.loads(p.stdout)["transfers"][0]["error_type"] == "AuthError"
    assert not (tmp_path / "x").exists()


def test_s3_server_side_copy_into_a_new_bucket_env_only(seaweed: SeaweedS3, tmp_path: Path) -> None:
    """Credentials from the AWS environment only (no credentials file); a server-side
    copy into a bucket that does not exist yet creates it, as a put does (SeaweedFS
    answers that CopyObject with 500 InternalError, not NoSuchBucket: it failed)."""
    env = clean_env(tmp_path / "home")
    env.update(
        AWS_ACCESS_KEY_ID=seaweed.access_key,
        AWS_SECRET_ACCESS_KEY=seaweed.secret_key,
        AWS_ENDPOINT_URL_S3=seaweed.endpoint,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    data = os.urandom(5000)
    (tmp_path / "in.bin").write_bytes(data)
    src = f"s3://anysite/{seaweed.create_bucket()}/src.bin"
    dst = f"s3://anysite/b-new-{os.urandom(5).hex()}/dst.bin"
    p = ferry("--sha256", sha(data), str(tmp_path / "in.bin"), src, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    p = ferry("--sha256", sha(data), src, dst, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["transfers"][0]["route"] == "third-party"
    p = ferry("--sha256", sha(data), dst, str(tmp_path / "back.bin"), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "back.bin").read_bytes() == data
    assert seaweed.secret_key not in p.stdout + p.stderr


def test_aws_style_secret_key_in_the_credentials_file_is_a_secret(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    """The s3 plugin takes `aws_secret_access_key` for `secret_key` (as in
    ~/.aws/credentials): it must load as a Secret too (it was a plain string), and work."""
    from ferry.plugins.credentials import load_credentials
    from ferry.plugins.url import parse_url

    creds = tmp_path / "c.conf"
    creds.write_text(
        f"[aws]\nendpoint = {seaweed.endpoint}\n\n"
        f"[u@aws]\naws_access_key_id = {seaweed.access_key}\n"
        f"aws_secret_access_key = {seaweed.secret_key}\n"
    )
    creds.chmod(0o600)
    conf = load_credentials(str(creds)).for_url(parse_url("s3://u@aws/b/k"))
    value = conf["aws_secret_access_key"]
    assert str(value) == "***" and f"{value}" == "***" and seaweed.secret_key not in repr(conf)

    env = clean_env(tmp_path / "home")
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    data = os.urandom(100)
    (tmp_path / "in.bin").write_bytes(data)
    url = f"s3://u@aws/{seaweed.create_bucket()}/k.bin"
    p = ferry(
        "--credentials", str(creds), "--sha256", sha(data), str(tmp_path / "in.bin"), url, env=env
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_malformed_credentials_file_names_the_line_not_the_secret(tmp_path: Path) -> None:
    """docs/credentials.md: errors about a malformed file give the line number, never
    the line (a line that is no `key = value` gave no line number at all)."""
    creds = tmp_path / "c.conf"
    creds.write_text("[site]\nsecret_key = Planted-Secret-1\nPlanted-Secret-2 without equals\n")
    creds.chmod(0o600)
    (tmp_path / "in.bin").write_bytes(b"x")
    p = ferry(
        "--credentials",
        str(creds),
        str(tmp_path / "in.bin"),
        str(tmp_path / "out.bin"),
        env=clean_env(tmp_path / "home"),
    )
    assert p.returncode == 1 and not (tmp_path / "out.bin").exists()
    error = json.loads(p.stdout)["error"]
    assert f"credentials file {creds}: line 3 " in error
    assert "Planted-Secret" not in p.stdout + p.stderr


def test_known_hosts_patterns_and_bare_host_as_openssh(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """Host patterns (`[127.0.0.1]:*`, `*`) and, on a port other than 22, the key
    listed for the bare host are accepted, as `ssh` accepts them (ferry refused them as
    unknown); a different key for the bare host leaves the host unknown."""
    (sshd_server.root / "audit/kh").mkdir(parents=True, exist_ok=True)
    (sshd_server.root / "audit/kh/f.txt").write_bytes(b"hello")
    env = clean_env(tmp_path / "home")
    known = tmp_path / "known_hosts"
    creds = write_credentials(
        tmp_path / "c.conf",
        {
            f"127.0.0.1:{sshd_server.port}": {
                "key": str(sshd_server.client_key),
                "known_hosts": str(known),
            }
        },
    )
    blob = " ".join(sshd_server.host_key.with_suffix(".pub").read_text().split()[:2])
    other = " ".join(keygen(tmp_path / "other").with_suffix(".pub").read_text().split()[:2])
    for i, line in enumerate(
        [
            f"[127.0.0.1]:* {blob}",
            f"10.0.0.1,[127.0.0.?]:{sshd_server.port} {blob}",
            f"127.0.0.1 {blob}",
        ]
    ):
        known.write_text(f"{line}\n")
        assert _sftp_get(sshd_server, creds, env, tmp_path / f"{i}.txt") == "", line
        assert (tmp_path / f"{i}.txt").read_bytes() == b"hello"
    for line in (f"127.0.0.1 {other}", f"*,![127.0.0.1]:{sshd_server.port},!127.0.0.1 {blob}"):
        known.write_text(f"{line}\n")
        error = _sftp_get(sshd_server, creds, env, tmp_path / "no.txt")
        assert "is not known" in error, line
        assert not (tmp_path / "no.txt").exists()


def test_s3_copy_from_a_missing_source_says_what_is_missing(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    """s3 -> s3 from a missing object or bucket: one line naming the URL and what is
    missing (it was the bare "HEAD ...: 404 Not Found" of a body-less HEAD answer)."""
    env = clean_env(tmp_path / "home")
    env.update(
        AWS_ACCESS_KEY_ID=seaweed.access_key,
        AWS_SECRET_ACCESS_KEY=seaweed.secret_key,
        AWS_ENDPOINT_URL=seaweed.endpoint,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    bucket = seaweed.create_bucket()
    for src, missing in (
        (f"s3://site/{bucket}/nothing.bin", "object"),
        ("s3://site/no-such-bucket-q7/nothing.bin", "bucket 'no-such-bucket-q7'"),
    ):
        p = ferry(src, f"s3://site/{bucket}/copy.bin", env=env)
        assert p.returncode == 1
        report = json.loads(p.stdout)["transfers"][0]
        assert report["error_type"] == "NotFound"
        assert report["attempts"][0]["error"] == f"COPY {src}: no such {missing}"


def test_upload_below_a_remote_file_says_so(sshd_server: SshServer, tmp_path: Path) -> None:
    """An upload whose parent "directory" is a file: one line naming the URL and the
    file in the way (it said only "failure"); nothing is created."""
    env = clean_env(tmp_path / "home")
    creds = write_credentials(
        tmp_path / "c.conf",
        {
            f"127.0.0.1:{sshd_server.port}": {
                "key": str(sshd_server.client_key),
                "known_hosts": str(sshd_server.known_hosts),
            }
        },
    )
    blocker = sshd_server.root / "audit/blocker"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"a file")
    (tmp_path / "in.bin").write_bytes(b"x")
    url = sshd_server.url("audit/blocker/sub/f.bin")
    p = ferry("--credentials", str(creds), str(tmp_path / "in.bin"), url, env=env)
    assert p.returncode == 1
    error = json.loads(p.stdout)["transfers"][0]["attempts"][0]["error"]
    assert error == f"put {url}: {blocker} exists and is not a directory"
    assert blocker.read_bytes() == b"a file"
