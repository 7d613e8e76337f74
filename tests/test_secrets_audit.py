"""Audit: secrets never appear in what ferry prints or writes (DESIGN.md, docs/credentials.md).

Each test plants a distinctive secret where a user gives one, drives ferry as a user
does (a subprocess, real servers on 127.0.0.1) and greps every byte ferry wrote.
Each test here failed before its fix."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import NginxServer, WebdavServer, start_wsgidav


def planted(tag: str) -> str:
    return f"S3CR3T-{tag}-{secrets.token_hex(6)}"


def ferry(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def written(*places: Path | str) -> str:
    """Every byte under ``places`` (files, directories) and the given strings, as text."""
    out: list[str] = []
    for place in places:
        if isinstance(place, str):
            out.append(place)
            continue
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for f in files:
            out.append(f.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    """wsgidav that needs basic auth (a planted password)."""
    server = start_wsgidav(
        tmp_path_factory.mktemp("dav-secrets"), user="alice", password=planted("davpw")
    )
    (server.root / "g.txt").write_bytes(b"world\n")
    try:
        yield server
    finally:
        server.stop()


# -- a URL whose password holds an unescaped "/" -----------------------------------------


@pytest.mark.parametrize("json_report", [False, True])
def test_malformed_url_with_slash_in_password(tmp_path: Path, json_report: bool) -> None:
    """`http://alice:ab/SECRET@host/f` does not parse (the "/" ends the host part): the
    error quoted the URL unmasked, and the "port" ("ab", a piece of the password)."""
    secret = planted("slashpw")
    url = f"http://alice:ab/{secret}@127.0.0.1/f"
    args = ["transfer", "-d", *(["--json"] if json_report else []), url, "out"]
    p = ferry(*args, cwd=tmp_path)
    assert p.returncode == 1
    assert "bad port" in p.stderr
    assert secret not in written(tmp_path, p.stdout, p.stderr)
    assert "'ab'" not in p.stderr


def test_url_without_slashes_masks_password_with_slash(tmp_path: Path) -> None:
    secret = planted("noslash")
    p = ferry("transfer", "--json", f"sftp:alice:x/{secret}@host/f", "out", cwd=tmp_path)
    assert p.returncode == 1
    assert "malformed URL" in p.stdout
    assert secret not in written(tmp_path, p.stdout, p.stderr)


# -- credential values that HTTP cannot carry ----------------------------------------------


def _creds(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("scheme", ["http", "webdav"])
def test_header_value_with_line_break_is_not_quoted(
    nginx_server: NginxServer, dav: WebdavServer, tmp_path: Path, scheme: str
) -> None:
    """A `header.*` value that spans lines (an INI continuation line) cannot be sent:
    http.client's "Invalid header value b'...'" quoted the token in logs and --json."""
    secret = planted("hdr")
    (nginx_server.root / "sa-h.txt").write_bytes(b"hello\n")
    port, path = (nginx_server.port, "sa-h.txt") if scheme == "http" else (dav.port, "g.txt")
    creds = _creds(
        tmp_path / "c.conf", f"[127.0.0.1:{port}]\nheader.X-Token = {secret}\n  more-{secret}\n"
    )
    work = tmp_path / "w"
    work.mkdir()
    p = ferry(
        "transfer", "-d", "--json", "-m", "1", "--credentials", str(creds),
        f"{scheme}://127.0.0.1:{port}/{path}", "o.txt", cwd=work,
    )  # fmt: skip
    assert p.returncode == 1
    assert "header" in json.loads(p.stdout)["transfers"][0]["error"]
    assert secret not in written(work, p.stdout, p.stderr)


# -- the HTCondor plugin: a $_CONDOR_CREDS token that HTTP cannot carry -----------------------


def _plugin(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "ferry_plugin"
    exe = str(beside) if beside.exists() else shutil.which("ferry_plugin")
    assert exe, "the ferry_plugin console script is not installed"
    full = {**os.environ, "FERRY_CONDOR_BACKOFF": "0.05", "FERRY_CONDOR_ATTEMPTS": "1", **env}
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=full
    )


@pytest.mark.parametrize("upload", [False, True])
def test_condor_token_with_line_break_not_in_result_ad(
    nginx_server: NginxServer, dav: WebdavServer, tmp_path: Path, upload: bool
) -> None:
    """`NAME+https://` sends $_CONDOR_CREDS/NAME.use as a bearer token; a token file with
    a line break inside made TransferError quote `Bearer <token>` (http.client on GET,
    h11 on PUT/MKCOL), which HTCondor puts in the job's hold reason."""
    secret = planted("condortok")
    (nginx_server.root / "sa-c.txt").write_bytes(b"hello\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mytok.use").write_text(f"{secret}\nline2\n")
    sandbox = tmp_path / "sb"
    sandbox.mkdir()
    (sandbox / "f").write_text("x")
    urls = [
        f"mytok+http://127.0.0.1:{nginx_server.port}/" + ("sa-up.txt" if upload else "sa-c.txt"),
        f"mytok+webdav://127.0.0.1:{dav.port}/" + ("up/sa.txt" if upload else "g.txt"),
    ]
    ads = "".join(
        f'[ Url = "{u}"; LocalFileName = "{sandbox}/{"f" if upload else f"d{i}"}" ]\n'
        for i, u in enumerate(urls)
    )
    infile, outfile = tmp_path / "in", tmp_path / "out"
    infile.write_text(ads)
    outfile.write_bytes(b" " * 19264)
    p = _plugin(
        ["-infile", str(infile), "-outfile", str(outfile), *(["-upload"] if upload else [])],
        sandbox,
        {"_CONDOR_CREDS": str(creds)},
    )
    assert p.returncode == 1
    shutil.rmtree(creds)
    out = outfile.read_text()
    assert out.count("TransferSuccess = false") == 2
    assert secret not in written(tmp_path, p.stdout, p.stderr)


# -- plan.json: a file server URL with a password ------------------------------------------


def test_plan_json_layout_masks_file_server_password(tmp_path: Path) -> None:
    """A site catalog file server `webdav://alice:PW@host/out` (the output site) was
    copied into plan.json's `options.layout`, which nothing reads back: it is masked
    there. (The job specs, and the `register` entries the backends register outputs
    from, carry the URL the worker and the registration need.)"""
    from Pegasus.api import (
        Directory,
        File,
        FileServer,
        Job,
        Operation,
        Site,
        SiteCatalog,
        Transformation,
        TransformationCatalog,
        Workflow,
    )

    secret = planted("fspw")
    sc = SiteCatalog().add_sites(
        Site("local").add_directories(
            Directory(Directory.SHARED_SCRATCH, str(tmp_path / "scratch")).add_file_servers(
                FileServer(f"file://{tmp_path}/scratch", Operation.ALL)
            )
        ),
        Site("davsite").add_directories(
            Directory(Directory.LOCAL_STORAGE, "/out").add_file_servers(
                FileServer(f"webdav://alice:{secret}@127.0.0.1:9/out", Operation.ALL),
                FileServer(f"https://dav.example.org/out?sig={secret}", Operation.GET),
            )
        ),
    )
    tc = TransformationCatalog().add_transformations(
        Transformation("echo", site="local", pfn="/bin/echo", is_stageable=False)
    )
    job = Job("echo", _id="e").set_stdout(File("o.txt"), stage_out=True)
    wf = Workflow("sec").add_jobs(job)
    wf.add_site_catalog(sc)
    wf.add_transformation_catalog(tc)
    wf.write(str(tmp_path / "wf.yml"))
    p = ferry("plan", "wf.yml", "--dir", "run", "-o", "davsite", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "run" / "plan.json").read_text())
    layout = json.dumps(doc["options"]["layout"])
    assert "webdav://alice:***@127.0.0.1:9/out" in layout
    assert secret not in layout
    assert secret not in p.stdout + p.stderr


# -- a URL that does not parse, with a signed query ----------------------------------------


def test_unparseable_url_masks_signed_query(tmp_path: Path) -> None:
    """A URL with a bad port and a signed query: the error masked the password but
    quoted `?sig=...`, in `ferry transfer`'s output and in the worker's record."""
    secret = planted("sig")
    url = f"http://alice:pw@127.0.0.1:99999/x?X-Amz-Signature={secret}&sig={secret}"
    p = ferry("transfer", "-d", "--json", url, "out", cwd=tmp_path)
    assert p.returncode == 1 and "bad port" in p.stdout
    assert secret not in p.stdout + p.stderr

    spec = {
        "version": 1,
        "id": "j",
        "executable": "/bin/true",
        "inputs": [{"lfn": "x", "sources": [{"url": url}]}],
    }
    work = tmp_path / "w"
    (work / "wd").mkdir(parents=True)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    p = ferry(
        "worker", "-d", "--records", str(work / "rec"), "--workdir-base", str(work / "wd"),
        str(tmp_path / "spec.json"), cwd=work,
    )  # fmt: skip
    assert p.returncode != 0
    record = written(work / "rec")
    assert "bad port" in record
    assert secret not in written(work, p.stdout, p.stderr)


@pytest.mark.parametrize("param", ["client_secret", "api_key", "refresh_token", "id_token"])
def test_oauth_and_api_key_query_parameters_are_masked(
    nginx_server: NginxServer, tmp_path: Path, param: str
) -> None:
    """`?client_secret=`, `?api_key=`, ... carry credentials as `sig` and `token` do:
    they were shown in the 404 error, the log lines and --json."""
    secret = planted(param)
    url = f"http://127.0.0.1:{nginx_server.port}/sa-none?{param}={secret}&a=1"
    p = ferry("transfer", "-d", "--json", "-m", "1", url, "out", cwd=tmp_path)
    assert p.returncode == 1 and f"{param}=***" in p.stdout
    assert secret not in written(tmp_path, p.stdout, p.stderr)
