"""ferry as an HTCondor file-transfer plugin, called exactly as the starter calls it:
`ferry_plugin -classad`, then `-infile IN -outfile OUT [-upload]` with a pre-filled
output file; results read back with HTCondor's own ClassAd parser (classad2)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import classad2
import pytest

from ferry.worker.classad import format_ad, parse_ads
from tests.servers import FaultServer, NginxServer, WebdavServer

PREFILL = b" " * (301 * 64)  # what HTCondor writes into the out file before starting


def plugin(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # the script installed with this interpreter's ferry (a ferry_plugin elsewhere on
    # PATH may belong to another installation with other entry points)
    beside = Path(sys.executable).parent / "ferry_plugin"
    exe = str(beside) if beside.exists() else shutil.which("ferry_plugin")
    assert exe, "the ferry_plugin console script is not installed"
    env = {**os.environ, "FERRY_CONDOR_BACKOFF": "0.05", "FERRY_CONDOR_ATTEMPTS": "2"}
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=env
    )


def run_transfer(
    tmp: Path, ads: list[dict[str, object]], upload: bool = False
) -> tuple[int, list[classad2.ClassAd]]:
    infile, outfile = tmp / ".ferry_plugin.in", tmp / ".ferry_plugin.out"
    infile.write_text("".join(str(classad2.ClassAd(ad)) for ad in ads))
    outfile.write_bytes(PREFILL)
    args = ["-infile", str(infile), "-outfile", str(outfile)] + (["-upload"] if upload else [])
    p = plugin(*args, cwd=tmp)
    return p.returncode, list(classad2.parseAds(outfile.read_text()))


def test_capabilities_ad() -> None:
    p = plugin("-classad", cwd=Path.cwd())
    assert p.returncode == 0
    ad = classad2.parseOne(p.stdout)
    assert ad["MultipleFileSupport"] is True and ad["PluginType"] == "FileTransfer"
    assert ad["ProtocolVersion"] == 2
    methods = ad["SupportedMethods"].split(",")
    assert {"http", "https", "s3", "gs", "sftp", "webdav"} <= set(methods)
    assert "file" not in methods
    # container image references are HTCondor's and the runtimes' to pull
    assert not {"docker", "shub", "library"} & set(methods)


def test_downloads_with_one_failure(nginx_server: NginxServer, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    (nginx_server.root / "condor-a.bin").write_bytes(data)
    good = f"{nginx_server.url}/condor-a.bin#sha256={hashlib.sha256(data).hexdigest()}"
    missing = f"{nginx_server.url}/condor-missing.bin"
    bad_sum = f"{nginx_server.url}/condor-a.bin#sha256={'0' * 64}"
    code, results = run_transfer(
        tmp_path,
        [
            {"Url": good, "LocalFileName": str(tmp_path / "a.bin")},
            {"Url": missing, "LocalFileName": str(tmp_path / "missing.bin")},
            {"Url": bad_sum, "LocalFileName": str(tmp_path / "bad.bin")},
        ],
    )
    assert code == 1  # any failure: non-zero, or HTCondor would run the job without the file
    assert [r["TransferSuccess"] for r in results] == [True, False, False]
    ok, nf, mismatch = results
    assert ok["TransferUrl"] == good and ok["TransferFileName"] == str(tmp_path / "a.bin")
    assert ok["TransferFileBytes"] == len(data) and ok["TransferType"] == "download"
    assert ok["TransferProtocol"] == "http"
    assert (tmp_path / "a.bin").read_bytes() == data
    err = nf["TransferErrorData"][0]
    assert err["ErrorType"] == "Specification" and err["FailedServer"] == "127.0.0.1"
    assert "404" in nf["TransferError"] and err["Retryable"] == -1
    assert err["ErrorCode"] == 404  # the server's status, as the curl plugin reports it
    assert "sha256" in mismatch["TransferError"]
    assert mismatch["TransferErrorData"][0]["ErrorCode"] == 1  # no server code for that
    assert not (tmp_path / "missing.bin").exists() and not (tmp_path / "bad.bin").exists()


def test_upload_to_webdav(webdav_server: WebdavServer, tmp_path: Path) -> None:
    (tmp_path / "out.dat").write_bytes(b"result bytes")
    url = f"{webdav_server.url}/condor/out.dat"
    code, results = run_transfer(
        tmp_path, [{"Url": url, "LocalFileName": str(tmp_path / "out.dat")}], upload=True
    )
    assert code == 0 and results[0]["TransferSuccess"] is True
    assert results[0]["TransferType"] == "upload"
    assert (webdav_server.root / "condor" / "out.dat").read_bytes() == b"result bytes"


def test_upload_to_https_style_url_is_a_plain_put(nginx_server: NginxServer, tmp_path: Path) -> None:
    # as HTCondor's curl plugin uploads: one PUT to the URL (nginx takes PUT under /upload/)
    data = os.urandom(300_000)
    (tmp_path / "out.dat").write_bytes(data)
    url = f"{nginx_server.url}/upload/condor/out.dat"
    code, results = run_transfer(
        tmp_path, [{"Url": url, "LocalFileName": str(tmp_path / "out.dat")}], upload=True
    )
    assert code == 0 and results[0]["TransferSuccess"] is True, results[0]
    assert results[0]["TransferTotalBytes"] == len(data)
    assert (nginx_server.root / "upload/condor/out.dat").read_bytes() == data


def test_each_file_has_its_own_times(fault_server: FaultServer, tmp_path: Path) -> None:
    fault_server.add("/times/slow.bin", b"s" * 1000, delay=1.5)
    fault_server.add("/times/fast.bin", b"f" * 1000)
    code, results = run_transfer(
        tmp_path,
        [
            {"Url": f"{fault_server.url}/times/slow.bin", "LocalFileName": str(tmp_path / "s")},
            {"Url": f"{fault_server.url}/times/fast.bin", "LocalFileName": str(tmp_path / "f")},
        ],
    )
    assert code == 0
    slow, fast = results
    assert slow["ConnectionTimeSeconds"] >= 1.5
    assert fast["ConnectionTimeSeconds"] < 1.0  # not the batch's time
    for r in results:
        assert r["TransferStartTime"] <= r["TransferEndTime"]


def test_insufficient_storage_is_no_space(fault_server: FaultServer, tmp_path: Path) -> None:
    (tmp_path / "out.dat").write_bytes(b"x" * 1000)
    url = f"{fault_server.url}/full/out.dat"
    with fault_server.inject(10, status=507):
        code, results = run_transfer(
            tmp_path, [{"Url": url, "LocalFileName": str(tmp_path / "out.dat")}], upload=True
        )
    assert code == 1 and results[0]["TransferSuccess"] is False
    err = results[0]["TransferErrorData"][0]
    assert err["ErrorType"] == "Transfer" and err["FailureType"] == "NoSpace"
    assert err["ErrorCode"] == 507 and err["Retryable"] == -1


def test_connection_refused_is_a_contact_error(tmp_path: Path) -> None:
    code, results = run_transfer(
        tmp_path, [{"Url": "http://127.0.0.1:9/x", "LocalFileName": str(tmp_path / "x")}]
    )
    assert code == 1
    assert results[0]["TransferErrorData"][0]["ErrorType"] == "Contact"
    assert results[0]["TransferErrorData"][0]["Retryable"] == 0


def test_unreadable_infile_still_reports(tmp_path: Path) -> None:
    (tmp_path / "in").write_text("[ Url = ")
    (tmp_path / "out").write_bytes(PREFILL)
    p = plugin("-infile", str(tmp_path / "in"), "-outfile", str(tmp_path / "out"), cwd=tmp_path)
    assert p.returncode == 1
    [ad] = classad2.parseAds((tmp_path / "out").read_text())
    assert ad["TransferSuccess"] is False and "cannot read" in ad["TransferError"]


@pytest.mark.parametrize(
    "ad",
    [
        {"Url": "s3://a@b/c/d", "LocalFileName": "/x/y", "N": 5, "R": 1.5, "B": False},
        {"TransferSuccess": True, "S": 'quote " and \\ back', "L": [{"E": "x", "C": 1}]},
    ],
)
def test_classad_codec_agrees_with_classad2(ad: dict[str, object]) -> None:
    ours = format_ad(ad)  # type: ignore[arg-type]
    theirs = classad2.parseOne(ours)
    assert {k: theirs[k] for k in ad if k != "L"} == {k: v for k, v in ad.items() if k != "L"}
    back = parse_ads(str(classad2.ClassAd({k: v for k, v in ad.items() if k != "L"})))
    assert back[0] == {k: v for k, v in ad.items() if k != "L"}
