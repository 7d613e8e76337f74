"""The sftp:// and scp:// plugin against a real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ferry.plugins.errors import (
    AuthError,
    ConnectError,
    IncompleteTransfer,
    IntegrityError,
    NotFound,
    PermanentError,
    TransientError,
)
from ferry.plugins.protocol import Capability, ProtocolContext, Sink, Source
from ferry.plugins.registry import Registry
from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance
from ferry.plugins.url import parse_url
from ferry.worker.engine import Engine, TransferConfig
from ferry.worker.request import Endpoint, TransferRequest
from tests.fixtures.sftp import (
    CutProxy,
    SshServer,
    keygen,
    sftp_credentials_fixture,  # noqa: F401 - the `sftp_credentials` fixture
    sshd_server_fixture,  # noqa: F401 - the `sshd_server` fixture
    start_sshd,
    write_credentials,
)

PASSPHRASE = "c0rrect-h0rse-Battery-staple"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def hermetic_ssh(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ssh-agent, no ~/.ssh keys or known_hosts, no SSH_PRIVATE_KEY from outside."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SSH_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("FERRY_CREDENTIALS", raising=False)
    monkeypatch.delenv("PEGASUS_CREDENTIALS", raising=False)


def registry(credentials: Path, **context: object) -> Registry:
    return Registry(ProtocolContext(credentials_file=str(credentials), **context))  # type: ignore[arg-type]


@pytest.fixture
def proto(sftp_credentials: Path) -> Iterator[object]:
    reg = registry(sftp_credentials)
    yield reg.protocol("sftp")
    reg.close()


def put_bytes(proto: object, url: str, data: bytes, tmp: Path, expected: str | None = None) -> None:
    src = tmp / f"src-{sha(url.encode())[:8]}"
    src.write_bytes(data)
    proto.put(Source(str(src), expected_sha256=expected), parse_url(url))  # type: ignore[attr-defined]


def get_bytes(proto: object, url: str, tmp: Path) -> tuple[bytes, Sink]:
    path = tmp / f"get-{sha(url.encode())[:8]}"
    sink = Sink(str(path))
    try:
        proto.get(parse_url(url), sink)  # type: ignore[attr-defined]
    finally:
        sink.close()
    return path.read_bytes(), sink


def remote_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- conformance ------------------------------------------------------------------------


class TestSftpConformance(ProtocolConformance):
    __test__ = True

    @pytest.fixture
    def endpoint(self, sshd_server: SshServer, sftp_credentials: Path) -> ConformanceEndpoint:
        @contextlib.contextmanager
        def fault(n: int) -> Iterator[None]:
            # cut every open SSH connection: the plugin must reconnect (or fail transiently)
            sshd_server.kill_sessions()
            yield

        return ConformanceEndpoint(
            base_url=sshd_server.url("kit"),
            registry=registry(sftp_credentials),
            fault=fault,
        )


def test_capabilities_and_lazy_import() -> None:
    caps = Registry().capabilities("scp")
    assert {Capability.GET, Capability.PUT, Capability.MKDIR, Capability.REMOVE} <= caps
    code = "import sys, ferry.plugins.sftp; assert 'paramiko' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- URLs, connection reuse -------------------------------------------------------------


def test_scp_urls_work_like_sftp(
    sshd_server: SshServer, sftp_credentials: Path, tmp_path: Path
) -> None:
    reg = registry(sftp_credentials)
    try:
        scp, sftp = reg.protocol("scp"), reg.protocol("sftp")
        assert scp is sftp
        data = os.urandom(70_000)
        put_bytes(scp, sshd_server.url("scp/a/b.bin", scheme="scp"), data, tmp_path)
        assert (sshd_server.root / "scp/a/b.bin").read_bytes() == data
        got, _ = get_bytes(sftp, sshd_server.url("scp/a/b.bin"), tmp_path)
        assert got == data
        assert scp.stat(parse_url(sshd_server.url("scp/a/b.bin", scheme="scp"))).size == len(data)
        assert scp.connections() == 1  # both schemes share the connection
    finally:
        reg.close()


def test_scp_urls_read_sftp_sections(sshd_server: SshServer, tmp_path: Path) -> None:
    """A ``[sftp://host:port]`` section serves scp:// URLs too; ``[scp://...]`` wins over it."""
    wrong = keygen(tmp_path / "wrong_key")
    hostport = f"127.0.0.1:{sshd_server.port}"
    cred = write_credentials(
        tmp_path / "schemes.conf",
        {
            hostport: {"key": str(wrong)},
            f"sftp://{hostport}": {
                "key": str(sshd_server.client_key),
                "known_hosts": str(sshd_server.known_hosts),
            },
        },
    )
    reg = registry(cred)
    try:
        assert reg.protocol("scp").stat(parse_url(sshd_server.url(scheme="scp"))).is_dir
    finally:
        reg.close()


def test_parallel_transfers_share_one_connection(
    sshd_server: SshServer, sftp_credentials: Path, tmp_path: Path
) -> None:
    reg = registry(sftp_credentials, concurrency=8)
    proto = reg.protocol("sftp")
    blobs = {f"p{i}.bin": os.urandom(20_000 + 997 * i) for i in range(40)}
    try:
        with ThreadPoolExecutor(12) as pool:
            list(
                pool.map(
                    lambda kv: put_bytes(proto, sshd_server.url(f"par/{kv[0]}"), kv[1], tmp_path),
                    blobs.items(),
                )
            )
            got = list(
                pool.map(
                    lambda n: get_bytes(proto, sshd_server.url(f"par/{n}"), tmp_path)[0], blobs
                )
            )
        assert got == list(blobs.values())
        assert proto.connections() == 1
        conn = next(iter(proto._conns.values()))
        assert 1 < conn._open <= 8  # several channels, never more than the pool's size
    finally:
        reg.close()


def test_server_with_few_sessions_still_works(tmp_path: Path) -> None:
    """MaxSessions 2: the pool shrinks to what the server allows instead of failing."""
    server = start_sshd(tmp_path / "sshd2", max_sessions=2)
    try:
        cred = write_credentials(
            tmp_path / "c.conf",
            {
                f"127.0.0.1:{server.port}": {
                    "key": str(server.client_key),
                    "known_hosts": str(server.known_hosts),
                }
            },
        )
        reg = registry(cred, concurrency=8)
        proto = reg.protocol("sftp")
        blobs = {f"m{i}": os.urandom(5000 + i) for i in range(16)}
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda kv: put_bytes(proto, server.url(kv[0]), kv[1], tmp_path), blobs.items()
                )
            )
        for name, data in blobs.items():
            assert (server.root / name).read_bytes() == data
        assert next(iter(proto._conns.values())).limit <= 2
        reg.close()
    finally:
        server.stop()


# -- host keys ----------------------------------------------------------------------------


def host_fingerprint(server: SshServer) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(server.host_key.with_suffix(".pub"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def creds_with_known_hosts(
    server: SshServer, tmp_path: Path, known: str, **extra: str
) -> tuple[Path, Path]:
    known_file = tmp_path / "known_hosts"
    known_file.write_text(known)
    cred = write_credentials(
        tmp_path / "hk.conf",
        {
            f"127.0.0.1:{server.port}": {
                "key": str(server.client_key),
                "known_hosts": str(known_file),
                **extra,
            }
        },
    )
    return cred, known_file


def test_unknown_host_key_is_refused_by_default(sshd_server: SshServer, tmp_path: Path) -> None:
    cred, known = creds_with_known_hosts(sshd_server, tmp_path, "")
    reg = registry(cred)
    try:
        with pytest.raises(AuthError) as info:
            reg.protocol("sftp").stat(parse_url(sshd_server.url()))
    finally:
        reg.close()
    msg = str(info.value)
    assert "\n" not in msg
    assert f"[127.0.0.1]:{sshd_server.port}" in msg and "not known" in msg
    assert "ssh-ed25519" in msg and host_fingerprint(sshd_server) in msg
    assert "ssh-keyscan" in msg and "accept-new" in msg
    assert known.read_text() == ""


def test_accept_new_adds_the_key(sshd_server: SshServer, tmp_path: Path) -> None:
    cred, known = creds_with_known_hosts(sshd_server, tmp_path, "", host_key_policy="accept-new")
    reg = registry(cred)
    try:
        assert reg.protocol("sftp").stat(parse_url(sshd_server.url())).is_dir
    finally:
        reg.close()
    assert known.read_text().split() == sshd_server.host_key_line.split()
    # and now the default policy accepts the server from that file
    cred2 = write_credentials(
        tmp_path / "strict.conf",
        {
            f"127.0.0.1:{sshd_server.port}": {
                "key": str(sshd_server.client_key),
                "known_hosts": str(known),
            }
        },
    )
    reg = registry(cred2)
    try:
        assert reg.protocol("sftp").stat(parse_url(sshd_server.url())).is_dir
    finally:
        reg.close()


def test_auto_add_trusts_without_writing(sshd_server: SshServer, tmp_path: Path) -> None:
    cred, known = creds_with_known_hosts(sshd_server, tmp_path, "", host_key_policy="auto-add")
    reg = registry(cred)
    try:
        assert reg.protocol("sftp").stat(parse_url(sshd_server.url())).is_dir
    finally:
        reg.close()
    assert known.read_text() == ""


@pytest.mark.parametrize("policy", ["reject", "accept-new", "auto-add"])
def test_changed_host_key_is_refused(sshd_server: SshServer, tmp_path: Path, policy: str) -> None:
    other = keygen(tmp_path / "other_host_key")
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    line = f"[127.0.0.1]:{sshd_server.port} {kind} {blob}\n"
    cred, known = creds_with_known_hosts(sshd_server, tmp_path, line, host_key_policy=policy)
    reg = registry(cred)
    try:
        with pytest.raises(AuthError) as info:
            reg.protocol("sftp").stat(parse_url(sshd_server.url()))
    finally:
        reg.close()
    msg = str(info.value)
    assert "CHANGED" in msg and host_fingerprint(sshd_server) in msg and "\n" not in msg
    assert known.read_text() == line


def test_bad_host_key_policy_is_a_config_error(sshd_server: SshServer, tmp_path: Path) -> None:
    cred, _ = creds_with_known_hosts(sshd_server, tmp_path, "", host_key_policy="yolo")
    reg = registry(cred)
    try:
        with pytest.raises(Exception, match="host_key_policy"):
            reg.protocol("sftp").stat(parse_url(sshd_server.url()))
    finally:
        reg.close()


# -- authentication -------------------------------------------------------------------------


def test_wrong_key_is_an_auth_error(sshd_server: SshServer, tmp_path: Path) -> None:
    wrong = keygen(tmp_path / "wrong_key")
    cred = write_credentials(
        tmp_path / "w.conf",
        {
            f"127.0.0.1:{sshd_server.port}": {
                "key": str(wrong),
                "known_hosts": str(sshd_server.known_hosts),
            }
        },
    )
    reg = registry(cred)
    try:
        with pytest.raises(AuthError) as info:
            get_bytes(reg.protocol("sftp"), sshd_server.url("x"), tmp_path)
    finally:
        reg.close()
    assert str(wrong) in str(info.value) and "refused" in str(info.value)
    assert not isinstance(info.value, TransientError)


def test_no_key_at_all_is_an_auth_error(sshd_server: SshServer, tmp_path: Path) -> None:
    cred = write_credentials(
        tmp_path / "n.conf",
        {f"127.0.0.1:{sshd_server.port}": {"known_hosts": str(sshd_server.known_hosts)}},
    )
    reg = registry(cred)
    try:
        with pytest.raises(AuthError, match="SSH_PRIVATE_KEY"):
            reg.protocol("sftp").stat(parse_url(sshd_server.url()))
    finally:
        reg.close()


def test_key_from_ssh_private_key_env(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cred = write_credentials(
        tmp_path / "e.conf",
        {f"127.0.0.1:{sshd_server.port}": {"known_hosts": str(sshd_server.known_hosts)}},
    )
    monkeypatch.setenv("SSH_PRIVATE_KEY", str(sshd_server.client_key))
    reg = registry(cred)
    try:
        data = b"via SSH_PRIVATE_KEY\n"
        put_bytes(reg.protocol("sftp"), sshd_server.url("env/k.txt"), data, tmp_path)
        assert (sshd_server.root / "env/k.txt").read_bytes() == data
    finally:
        reg.close()


def test_keys_found_in_home_ssh(sshd_server: SshServer, tmp_path: Path) -> None:
    """With no key configured, ~/.ssh/id_ed25519 and ~/.ssh/known_hosts are used."""
    ssh_dir = Path(os.environ["HOME"]) / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "id_ed25519").write_bytes(sshd_server.client_key.read_bytes())
    (ssh_dir / "id_ed25519").chmod(0o600)
    (ssh_dir / "known_hosts").write_text(sshd_server.host_key_line + "\n")
    reg = Registry(ProtocolContext())  # no credentials file at all
    try:
        assert reg.protocol("sftp").stat(parse_url(sshd_server.url())).is_dir
    finally:
        reg.close()


def encrypted_key(server: SshServer, tmp_path: Path) -> Path:
    key = tmp_path / "enc_key"
    key.write_bytes(server.client_key.read_bytes())
    key.chmod(0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", PASSPHRASE, "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key


def test_passphrase_protected_key(
    sshd_server: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = encrypted_key(sshd_server, tmp_path)
    base = {"key": str(key), "known_hosts": str(sshd_server.known_hosts)}
    good = write_credentials(
        tmp_path / "good.conf",
        {f"127.0.0.1:{sshd_server.port}": {**base, "passphrase": PASSPHRASE}},
    )
    bad = write_credentials(
        tmp_path / "bad.conf",
        {f"127.0.0.1:{sshd_server.port}": {**base, "passphrase": PASSPHRASE + "-nope"}},
    )
    caplog.set_level(logging.DEBUG)
    reg = registry(good)
    try:
        proto = reg.protocol("sftp")
        put_bytes(proto, sshd_server.url("enc/ok.txt"), b"ok", tmp_path)
        assert PASSPHRASE not in repr(proto) and PASSPHRASE not in repr(proto._conns)
    finally:
        reg.close()
    reg = registry(bad)
    try:
        with pytest.raises(AuthError) as info:
            reg.protocol("sftp").stat(parse_url(sshd_server.url()))
    finally:
        reg.close()
    assert "passphrase" in str(info.value) and str(key) in str(info.value)
    for text in (str(info.value), repr(info.value), caplog.text):
        assert PASSPHRASE not in text


def test_password_never_shows(
    sshd_server: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server refuses passwords; the refusal names no secret."""
    secret = "Pa55-w0rd-that-must-not-leak"
    cred = write_credentials(
        tmp_path / "pw.conf",
        {
            f"127.0.0.1:{sshd_server.port}": {
                "password": secret,
                "known_hosts": str(sshd_server.known_hosts),
            }
        },
    )
    caplog.set_level(logging.DEBUG)
    reg = registry(cred)
    try:
        with pytest.raises(AuthError) as info:
            reg.protocol("sftp").stat(parse_url(sshd_server.url()))
        assert "password (refused)" in str(info.value)
        for text in (
            str(info.value),
            repr(info.value),
            caplog.text,
            repr(reg.protocol("sftp")._conns),
        ):
            assert secret not in text
    finally:
        reg.close()


# -- put / get behaviour ---------------------------------------------------------------------


def test_put_leaves_no_temporary_files(
    proto: object, sshd_server: SshServer, tmp_path: Path
) -> None:
    base = sshd_server.root / "tmpcheck"
    data = os.urandom(300_000)
    put_bytes(proto, sshd_server.url("tmpcheck/ok.bin"), data, tmp_path)
    put_bytes(proto, sshd_server.url("tmpcheck/ok.bin"), data[::-1], tmp_path)  # overwrite
    assert remote_files(base) == ["ok.bin"] and (base / "ok.bin").read_bytes() == data[::-1]
    with pytest.raises(IntegrityError):
        put_bytes(proto, sshd_server.url("tmpcheck/bad.bin"), data, tmp_path, expected="0" * 64)
    with pytest.raises(IntegrityError):  # a bad overwrite keeps the old bytes
        put_bytes(proto, sshd_server.url("tmpcheck/ok.bin"), data, tmp_path, expected="1" * 64)
    big = os.urandom(6 << 20)  # read and hashed on a second thread
    with pytest.raises(IntegrityError):
        put_bytes(proto, sshd_server.url("tmpcheck/big.bin"), big, tmp_path, expected="2" * 64)
    assert remote_files(base) == ["ok.bin"] and (base / "ok.bin").read_bytes() == data[::-1]
    put_bytes(proto, sshd_server.url("tmpcheck/big.bin"), big, tmp_path, expected=sha(big))
    assert remote_files(base) == ["big.bin", "ok.bin"] and (base / "big.bin").read_bytes() == big


def test_get_20_mib(proto: object, sshd_server: SshServer, tmp_path: Path) -> None:
    data = os.urandom(20 << 20)
    (sshd_server.root / "big").mkdir(exist_ok=True)
    (sshd_server.root / "big/20m.bin").write_bytes(data)
    got, sink = get_bytes(proto, sshd_server.url("big/20m.bin"), tmp_path)
    assert sink.sha256 == sha(data) and got == data and sink.expected_size == len(data)


def test_get_resumes_from_sink_offset(
    proto: object, sshd_server: SshServer, tmp_path: Path
) -> None:
    data = os.urandom(1_000_000)
    (sshd_server.root / "resume.bin").write_bytes(data)
    path = tmp_path / "partial"
    sink = Sink(str(path))
    sink.write(data[:400_000])
    proto.get(parse_url(sshd_server.url("resume.bin")), sink)  # type: ignore[attr-defined]
    sink.close()
    assert path.read_bytes() == data and sink.sha256 == sha(data) and sink.restarts == 0


def test_local_disk_full_is_not_a_network_error(proto: object, sshd_server: SshServer) -> None:
    (sshd_server.root / "full.bin").write_bytes(os.urandom(100_000))
    sink = Sink("/dev/full")
    try:
        with pytest.raises(PermanentError) as info:
            proto.get(parse_url(sshd_server.url("full.bin")), sink)  # type: ignore[attr-defined]
    finally:
        sink.close()
    assert "/dev/full" in str(info.value) and "No space left" in str(info.value)
    assert proto.connections() == 1  # type: ignore[attr-defined]  # no reconnect for a local error


def test_get_of_a_directory_fails_permanently(
    proto: object, sshd_server: SshServer, tmp_path: Path
) -> None:
    (sshd_server.root / "adir").mkdir(exist_ok=True)
    with pytest.raises(Exception) as info:
        get_bytes(proto, sshd_server.url("adir"), tmp_path)
    assert not isinstance(info.value, TransientError) and "directory" in str(info.value)


def test_stat_mkdir_remove(proto: object, sshd_server: SshServer, tmp_path: Path) -> None:
    url = lambda p: parse_url(sshd_server.url(p))  # noqa: E731
    proto.mkdir(url("tree/a/b/c"))  # type: ignore[attr-defined]
    proto.mkdir(url("tree/a/b/c"))  # type: ignore[attr-defined]
    assert proto.stat(url("tree/a/b")).is_dir  # type: ignore[attr-defined]
    put_bytes(proto, sshd_server.url("tree/a/b/c/f1"), b"1", tmp_path)
    put_bytes(proto, sshd_server.url("tree/a/f2"), b"22", tmp_path)
    st = proto.stat(url("tree/a/f2"))  # type: ignore[attr-defined]
    assert st.size == 2 and not st.is_dir and st.mtime
    with pytest.raises(Exception, match="tree/a"):
        proto.remove(url("tree/a"))  # type: ignore[attr-defined]  # not empty, not recursive
    proto.remove(url("tree/a/f2"))  # type: ignore[attr-defined]
    assert not (sshd_server.root / "tree/a/f2").exists()
    proto.remove(url("tree"), recursive=True)  # type: ignore[attr-defined]
    assert not (sshd_server.root / "tree").exists()
    proto.remove(url("tree"), recursive=True)  # type: ignore[attr-defined]  # missing: fine
    with pytest.raises(NotFound):
        proto.stat(url("tree"))  # type: ignore[attr-defined]
    # a put into the removed tree creates it again (the directory cache was dropped)
    put_bytes(proto, sshd_server.url("tree/a/b/c/f3"), b"3", tmp_path)
    assert (sshd_server.root / "tree/a/b/c/f3").read_bytes() == b"3"


def test_checksum_runs_sha256sum_on_the_server(
    proto: object, sshd_server: SshServer, tmp_path: Path
) -> None:
    data = os.urandom(12345)
    put_bytes(proto, sshd_server.url("sum/it's a file.bin"), data, tmp_path)
    assert proto.checksum(parse_url(sshd_server.url("sum/it's a file.bin"))) == sha(data)  # type: ignore[attr-defined]
    assert proto.checksum(parse_url(sshd_server.url("sum/missing"))) is None  # type: ignore[attr-defined]


# -- lost connections --------------------------------------------------------------------------


def proxied(server: SshServer, proxy: CutProxy, tmp_path: Path) -> tuple[Registry, str]:
    known = tmp_path / "proxy_known_hosts"
    kind_blob = server.host_key_line.split(" ", 1)[1]
    known.write_text(f"[127.0.0.1]:{proxy.port} {kind_blob}\n")
    cred = write_credentials(
        tmp_path / "proxy.conf",
        {f"127.0.0.1:{proxy.port}": {"key": str(server.client_key), "known_hosts": str(known)}},
    )
    path = f"{server.root}/cut/data.bin"
    return registry(cred), f"sftp://root@127.0.0.1:{proxy.port}{path}"


@pytest.fixture
def cut_file(sshd_server: SshServer) -> bytes:
    data = os.urandom(8 << 20)
    (sshd_server.root / "cut").mkdir(exist_ok=True)
    (sshd_server.root / "cut/data.bin").write_bytes(data)
    return data


def test_cut_once_mid_get_is_absorbed(
    sshd_server: SshServer, cut_file: bytes, tmp_path: Path
) -> None:
    proxy = CutProxy((sshd_server.host, sshd_server.port), cut_after=2 << 20, cuts=1)
    reg, url = proxied(sshd_server, proxy, tmp_path)
    try:
        got, sink = get_bytes(reg.protocol("sftp"), url, tmp_path)
        assert got == cut_file and sink.sha256 == sha(cut_file)
        assert sink.restarts == 0  # resumed where the cut left it, not from byte 0
        assert proxy.connections == 2
    finally:
        reg.close()
        proxy.stop()


def test_cut_twice_mid_get_is_transient(
    sshd_server: SshServer, cut_file: bytes, tmp_path: Path
) -> None:
    proxy = CutProxy((sshd_server.host, sshd_server.port), cut_after=2 << 20, cuts=5)
    reg, url = proxied(sshd_server, proxy, tmp_path)
    try:
        with pytest.raises(IncompleteTransfer) as info:
            get_bytes(reg.protocol("sftp"), url, tmp_path)
        assert "connection lost" in str(info.value) and "cut/data.bin" in str(info.value)
        assert proxy.connections == 2  # one transparent reconnect, no more
    finally:
        reg.close()
        proxy.stop()


def test_server_gone_mid_put_is_a_connect_error(sshd_server: SshServer, tmp_path: Path) -> None:
    proxy = CutProxy((sshd_server.host, sshd_server.port), refuse_after=1)
    reg, url = proxied(sshd_server, proxy, tmp_path)
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(4 << 20))
    try:
        proto = reg.protocol("sftp")
        proto.stat(parse_url(url.rsplit("/", 2)[0]))  # connect through the proxy
        proxy.cut_all()
        with pytest.raises(ConnectError) as info:
            proto.put(Source(str(src)), parse_url(url.replace("data.bin", "up.bin")))
        assert isinstance(info.value, TransientError) and "cannot connect" in str(info.value)
    finally:
        reg.close()
        proxy.stop()
    assert not any(".ferry-part-" in f for f in remote_files(sshd_server.root / "cut"))


def test_engine_retries_after_cuts(sshd_server: SshServer, cut_file: bytes, tmp_path: Path) -> None:
    """Two cuts fail the first try (transiently); the engine's second round succeeds."""
    proxy = CutProxy((sshd_server.host, sshd_server.port), cut_after=2 << 20, cuts=2)
    reg, url = proxied(sshd_server, proxy, tmp_path)
    dest = tmp_path / "engine.bin"
    req = TransferRequest(
        sources=[Endpoint(parse_url(url))],
        dest=Endpoint(parse_url(str(dest))),
        sha256=sha(cut_file),
    )
    try:
        engine = Engine(reg, TransferConfig(threads=1, max_attempts=3, sleep=lambda s: None))
        (result,) = engine.run([req])
    finally:
        reg.close()
        proxy.stop()
    assert result.ok, result.error
    assert dest.read_bytes() == cut_file
    assert [a.ok for a in result.attempts] == [False, True]
    assert result.attempts[0].error_type == "IncompleteTransfer" and result.attempts[0].transient


def test_killed_sessions_reconnect_transparently(
    proto: object, sshd_server: SshServer, tmp_path: Path
) -> None:
    put_bytes(proto, sshd_server.url("kill/a.bin"), b"a" * 1000, tmp_path)
    assert sshd_server.kill_sessions() > 0
    got, _ = get_bytes(proto, sshd_server.url("kill/a.bin"), tmp_path)
    assert got == b"a" * 1000
    assert proto.connections() == 2  # type: ignore[attr-defined]


def test_kill_mid_transfer(proto: object, sshd_server: SshServer, tmp_path: Path) -> None:
    """sshd's connection child killed while a 24 MiB get runs: bytes right, or a TransientError."""
    data = os.urandom(24 << 20)
    (sshd_server.root / "kill").mkdir(exist_ok=True)
    (sshd_server.root / "kill/big.bin").write_bytes(data)
    proto.stat(parse_url(sshd_server.url("kill")))  # type: ignore[attr-defined]  # connected
    sink = Sink(str(tmp_path / "k.bin"))
    outcome: list[object] = []

    def run() -> None:
        try:
            proto.get(parse_url(sshd_server.url("kill/big.bin")), sink, progress)  # type: ignore[attr-defined]
            outcome.append("ok")
        except Exception as exc:  # noqa: BLE001
            outcome.append(exc)

    started = threading.Event()

    def progress(n: int) -> None:
        if sink.offset > (4 << 20):
            started.set()

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(30)
    sshd_server.kill_sessions()
    t.join(60)
    sink.close()
    assert outcome
    if outcome[0] == "ok":
        assert sink.sha256 == sha(data)
    else:
        assert isinstance(outcome[0], TransientError), outcome[0]


# -- ferry transfer, end to end -------------------------------------------------------------------


def transfer(
    credentials: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``ferry transfer --credentials FILE --json ARGS...`` as a subprocess."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry.planner.cli",
            "transfer",
            "--credentials",
            str(credentials),
            "--json",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ferry_transfer_both_directions(
    sshd_server: SshServer, sftp_credentials: Path, tmp_path: Path
) -> None:
    data = os.urandom(1_500_000)
    local = tmp_path / "in.bin"
    local.write_bytes(data)
    remote = sshd_server.url("cli/deep/er/in.bin")
    p = transfer(sftp_credentials, "--sha256", sha(data), str(local), remote)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["ok"] and report["transfers"][0]["sha256"] == f"sha256:{sha(data)}"
    assert report["transfers"][0]["route"] == "upload"
    assert (sshd_server.root / "cli/deep/er/in.bin").read_bytes() == data

    back = tmp_path / "back/out.bin"
    p = transfer(
        sftp_credentials, "--sha256", sha(data), remote.replace("sftp://", "scp://"), str(back)
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["ok"] and report["transfers"][0]["sha256"] == f"sha256:{sha(data)}"
    assert back.read_bytes() == data

    # a wrong --sha256 on download: exit 1, nothing left at the destination
    p = transfer(sftp_credentials, "--sha256", "0" * 64, remote, str(tmp_path / "no.bin"))
    assert p.returncode == 1 and not (tmp_path / "no.bin").exists()
    assert json.loads(p.stdout)["transfers"][0]["error_type"] == "IntegrityError"


def test_ferry_transfer_uses_one_connection(
    sshd_server: SshServer, sftp_credentials: Path, tmp_path: Path
) -> None:
    files = {f"f{i:02}.dat": os.urandom(4096 + i) for i in range(50)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    lst = [
        {
            "type": "transfer",
            "lfn": name,
            "id": i,
            "src_urls": [
                {"site_label": "local", "url": f"file://{tmp_path}/{name}", "priority": 1}
            ],
            "dest_urls": [{"site_label": "remote", "url": sshd_server.url(f"many/{name}")}],
        }
        for i, name in enumerate(files)
    ]
    before = sshd_server.logins()
    p = transfer(sftp_credentials, "-n", "8", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["summary"]["succeeded"] == 50
    for t in report["transfers"]:
        assert t["sha256"] == f"sha256:{sha(files[t['lfn']])}"
    assert sshd_server.logins() - before == 1
    assert remote_files(sshd_server.root / "many") == sorted(files)
