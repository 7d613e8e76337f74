"""Audit of ``ferry_plugin`` against HTCondor's file-transfer plugin protocol
(shared/reference/htcondor-transfer-plugin.md), driven as the starter drives it:
``-infile IN -outfile OUT [-upload]`` with a pre-filled out file, input ads written
back to back, results read with classad2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import classad2
import pytest

from tests.servers import NginxServer

PREFILL = b" " * (301 * 64)


def plugin(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "ferry_plugin"
    exe = str(beside) if beside.exists() else shutil.which("ferry_plugin")
    assert exe, "the ferry_plugin console script is not installed"
    full = {**os.environ, "FERRY_CONDOR_BACKOFF": "0.05", "FERRY_CONDOR_ATTEMPTS": "2"}
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=full | (env or {})
    )


def run_raw(
    tmp: Path, text: str, upload: bool = False, env: dict[str, str] | None = None
) -> tuple[int, list[classad2.ClassAd]]:
    infile, outfile = tmp / ".ferry_plugin.in", tmp / ".ferry_plugin.out"
    infile.write_text(text)
    outfile.write_bytes(PREFILL)
    args = ["-infile", str(infile), "-outfile", str(outfile)] + (["-upload"] if upload else [])
    p = plugin(*args, cwd=tmp, env=env)
    return p.returncode, list(classad2.parseAds(outfile.read_text()))


def one_line(ad: dict[str, str]) -> str:
    """An input ad as HTCondor writes it (new format, one line)."""
    return "[ " + "; ".join(f"{k} = {v}" for k, v in ad.items()) + " ]"


def q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_local_file_name_is_a_path_not_a_url(nginx_server: NginxServer, tmp_path: Path) -> None:
    """LocalFileName is an absolute path: no $VAR expansion, no %XX decoding."""
    (nginx_server.root / "audit-sp.txt").write_bytes(b"special\n")
    sandbox = tmp_path / "sb"
    sandbox.mkdir()
    names = ["cost$HOME.txt", "a%20b.txt", "x y#1.txt"]
    text = "".join(
        one_line(
            {"Url": q(f"{nginx_server.url}/audit-sp.txt"), "LocalFileName": q(str(sandbox / n))}
        )
        for n in names
    )
    code, results = run_raw(sandbox, text)
    assert code == 0
    assert [r["TransferSuccess"] for r in results] == [True, True, True]
    assert [r["TransferFileName"] for r in results] == [str(sandbox / n) for n in names]
    for n in names:
        assert (sandbox / n).read_bytes() == b"special\n"
    assert sorted(p.name for p in sandbox.iterdir() if not p.name.startswith(".")) == sorted(names)


def test_upload_from_a_path_with_percent_and_dollar(tmp_path: Path) -> None:
    src = tmp_path / "out 100%25$USER.dat"
    src.write_bytes(b"payload")
    dest = tmp_path / "remote" / "out.dat"
    code, results = run_raw(
        tmp_path,
        one_line({"Url": q(f"file://{dest}"), "LocalFileName": q(str(src))}),
        upload=True,
    )
    assert code == 0 and results[0]["TransferSuccess"] is True
    assert results[0]["TransferType"] == "upload"
    assert dest.read_bytes() == b"payload"


def test_file_ad_without_local_file_name_is_reported_and_fails(tmp_path: Path) -> None:
    """One result per input ad; a malformed file ad fails (exit 1), it is not dropped."""
    src = tmp_path / "src.txt"
    src.write_text("hello\n")
    text = one_line({"Url": q(f"file://{src}")}) + one_line(
        {"Url": q(f"file://{src}"), "LocalFileName": q(str(tmp_path / "ok.txt"))}
    )
    code, results = run_raw(tmp_path, text)
    assert code == 1
    assert len(results) == 2
    bad = next(r for r in results if r["TransferSuccess"] is False)
    assert bad["TransferUrl"] == f"file://{src}"
    assert "LocalFileName" in bad["TransferError"]
    assert bad["TransferErrorData"][0]["ErrorType"] == "Parameter"
    good = next(r for r in results if r["TransferSuccess"] is True)
    assert good["TransferFileName"] == str(tmp_path / "ok.txt")
    assert (tmp_path / "ok.txt").read_text() == "hello\n"


def test_unknown_attributes_with_expressions_are_ignored(tmp_path: Path) -> None:
    """Input ads may carry attributes copied from the job ad (PluginData, ...): ignore them."""
    src = tmp_path / "src.txt"
    src.write_text("hello\n")
    ads = [
        {
            "Url": q(f"file://{src}"),
            "PluginData": 'strcat("a", "b")',
            "LocalFileName": q(str(tmp_path / "a.txt")),
            "Other": "(1 + 2) * 3 - 1 > 2 && true",
        },
        {
            "file_PluginData": "{ [ x = MY.y ], 'q' }",
            "URL": q(f"file://{src}"),
            "LOCALFILENAME": q(str(tmp_path / "b.txt")),
        },
    ]
    code, results = run_raw(tmp_path, "".join(one_line(a) for a in ads))
    assert code == 0
    assert [r["TransferSuccess"] for r in results] == [True, True]
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert (tmp_path / "b.txt").read_text() == "hello\n"


def test_truncated_input_still_fails_with_a_result(tmp_path: Path) -> None:
    code, results = run_raw(tmp_path, '[ Url = "file:///x"; LocalFileName = strcat("a"')
    assert code == 1
    assert len(results) == 1 and results[0]["TransferSuccess"] is False


class _BearerHandler(BaseHTTPRequestHandler):
    """Serves BODY at /data only to ``Authorization: Bearer TOKEN``; 401 otherwise."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == f"Bearer {TOKEN}" and self.path == "/data"
        body = BODY if ok else b"no"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815


TOKEN = "tok-123.abc"
BODY = b"secret bytes\n"


@pytest.fixture
def bearer_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _BearerHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_credential_prefixed_url_uses_the_job_token(bearer_url: str, tmp_path: Path) -> None:
    """``NAME+https://...``: HTCondor's URL form for $_CONDOR_CREDS/NAME.use (. -> _)."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "my_tok.use").write_text(f'{{"access_token": "{TOKEN}", "expires_in": 600}}\n')
    (creds / "plain.use").write_text(TOKEN + "\n")
    sandbox = tmp_path / "sb"
    sandbox.mkdir()
    urls = [f"my.tok+{bearer_url}/data", f"plain+{bearer_url}/data", f"absent+{bearer_url}/data"]
    text = "".join(
        one_line({"Url": q(u), "LocalFileName": q(str(sandbox / f"f{i}"))})
        for i, u in enumerate(urls)
    )
    code, results = run_raw(sandbox, text, env={"_CONDOR_CREDS": str(creds)})
    assert code == 1
    assert [r["TransferSuccess"] for r in results] == [True, True, False]
    assert [r["TransferUrl"] for r in results] == urls
    assert [r["TransferProtocol"] for r in results] == ["http", "http", "http"]
    assert (sandbox / "f0").read_bytes() == BODY and (sandbox / "f1").read_bytes() == BODY
    assert not (sandbox / "f2").exists()
    assert "absent.use" in results[2]["TransferError"]
    assert TOKEN not in "".join(str(r) for r in results)


def test_full_disk_is_a_transfer_error_of_type_no_space(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    """ENOSPC on the sandbox: ErrorType Transfer, FailureType NoSpace (not Specification).
    The sandbox is a 64 KiB tmpfs mounted in a private user+mount namespace."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed for this test"
    (nginx_server.root / "audit-big.bin").write_bytes(os.urandom(300_000))
    sandbox = tmp_path / "sb"
    sandbox.mkdir()
    infile, outfile = tmp_path / ".ferry_plugin.in", tmp_path / ".ferry_plugin.out"
    infile.write_text(
        one_line(
            {
                "Url": q(f"{nginx_server.url}/audit-big.bin"),
                "LocalFileName": q(str(sandbox / "big.bin")),
            }
        )
    )
    outfile.write_bytes(PREFILL)
    exe = Path(sys.executable).parent / "ferry_plugin"
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {sandbox} && "
        f"exec {exe} -infile {infile} -outfile {outfile}"
    )
    env = {**os.environ, "FERRY_CONDOR_BACKOFF": "0.05", "FERRY_CONDOR_ATTEMPTS": "2"}
    p = subprocess.run(
        [unshare, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert p.returncode == 1, p.stderr
    [ad] = classad2.parseAds(outfile.read_text())
    assert ad["TransferSuccess"] is False
    err = ad["TransferErrorData"][0]
    assert err["ErrorType"] == "Transfer" and err["FailureType"] == "NoSpace"
    assert err["FailedServer"] == "127.0.0.1" and err["Retryable"] == -1
    assert isinstance(err["ErrorCode"], int) and err["ErrorString"]


def test_unresolvable_host_is_a_resolution_error(tmp_path: Path) -> None:
    """A name that does not resolve: ErrorType Resolution with FailedName and FailureType."""
    url = "http://no-such-host.invalid/x"
    code, results = run_raw(
        tmp_path, one_line({"Url": q(url), "LocalFileName": q(str(tmp_path / "x"))})
    )
    assert code == 1
    err = results[0]["TransferErrorData"][0]
    assert err["ErrorType"] == "Resolution"
    assert err["FailedName"] == "no-such-host.invalid"
    assert err["FailureType"] in ("Definitive", "PreContact", "PostContact")
    assert isinstance(err["ErrorCode"], int) and err["ErrorString"]
    assert not (tmp_path / "x").exists()
