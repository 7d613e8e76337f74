"""Transfers in every direction among file, http, webdav, s3, gs and sftp, each against
its real server on 127.0.0.1, with sha256 checks: one `ferry transfer` run per step."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.gs import KIT_BUCKET, GcsServer, gcs_server_fixture  # noqa: F401
from tests.fixtures.s3 import SITE, USER, SeaweedS3, s3_server_fixture  # noqa: F401
from tests.fixtures.sftp import SshServer, sshd_server_fixture  # noqa: F401
from tests.servers import NginxServer, WebdavServer

SOURCES = ["file", "http", "webdav", "s3", "gs", "sftp"]
DESTS = ["file", "webdav", "s3", "gs", "sftp"]  # plain http cannot store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(lst: list[dict[str, object]], env: dict[str, str]) -> dict[str, object]:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry.planner.cli",
            "transfer",
            "--json",
            "-n",
            "8",
            "-m",
            "2",
            "--backoff",
            "0.1",
        ],
        input=json.dumps(lst),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    report = json.loads(p.stdout)
    failed = [t.get("error") for t in report["transfers"] if not t["ok"]]
    assert p.returncode == 0 and not failed, failed or p.stderr[-2000:]
    return report


def entry(lfn: str, src: str, dst: str, digest: str) -> dict[str, object]:
    return {
        "type": "transfer",
        "lfn": lfn,
        "sha256": digest,
        "src_urls": [{"site_label": "s", "url": src}],
        "dest_urls": [{"site_label": "d", "url": dst}],
    }


def test_every_direction(
    tmp_path: Path,
    nginx_server: NginxServer,
    webdav_server: WebdavServer,
    s3_server: SeaweedS3,
    gcs_server: GcsServer,
    sshd_server: SshServer,
) -> None:
    creds = tmp_path / "credentials.conf"
    creds.write_text(
        f"[{SITE}]\nendpoint = {s3_server.endpoint}\nregion = us-east-1\naddressing_style = path\n\n"
        f"[{USER}@{SITE}]\naccess_key = {s3_server.access_key}\nsecret_key = {s3_server.secret_key}\n\n"
        f"[{sshd_server.host}:{sshd_server.port}]\nkey = {sshd_server.client_key}\n"
        f"known_hosts = {sshd_server.known_hosts}\n"
    )
    creds.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FERRY_"))}
    env.update(
        FERRY_CREDENTIALS=str(creds),
        STORAGE_EMULATOR_HOST=gcs_server.url,
        HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path),
    )
    sftp_root = f"sftp://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}{sshd_server.root}"
    base = {
        "file": f"file://{tmp_path}/local",
        "webdav": f"{webdav_server.url}/matrix",
        "s3": f"s3://{USER}@{SITE}/matrix",
        "gs": f"gs://{KIT_BUCKET}/matrix",
        "sftp": f"{sftp_root}/matrix",
    }
    # one payload per source, placed there first (http: straight into nginx's root)
    payload = {s: os.urandom(300_000 + i * 7919) for i, s in enumerate(SOURCES)}
    (tmp_path / "seed").mkdir()
    seeds, src_url = [], {}
    for s, data in payload.items():
        (tmp_path / "seed" / s).write_bytes(data)
        if s == "http":
            (nginx_server.root / "matrix-http.bin").write_bytes(data)
            src_url[s] = f"{nginx_server.url}/matrix-http.bin"
        else:
            src_url[s] = f"{base[s]}/seed-{s}.bin"
            seeds.append(entry(f"seed-{s}", f"file://{tmp_path}/seed/{s}", src_url[s], sha(data)))
    run(seeds, env)

    pairs = [(s, d) for s in SOURCES for d in DESTS if s != d]
    report = run(
        [
            entry(f"{s}-to-{d}", src_url[s], f"{base[d]}/{s}-to-{d}.bin", sha(payload[s]))
            for s, d in pairs
        ],
        env,
    )
    routes = {t["lfn"]: t["route"] for t in report["transfers"]}
    assert routes["s3-to-gs"] == "two-stage" and routes["http-to-sftp"] == "two-stage"
    assert routes["file-to-s3"] == "upload" and routes["gs-to-file"] == "download"

    # read every copy back (through ferry, to local files) and compare the bytes
    back = [
        entry(
            f"back-{s}-{d}",
            f"{base[d]}/{s}-to-{d}.bin",
            f"file://{tmp_path}/back/{s}-{d}",
            sha(payload[s]),
        )
        for s, d in pairs
    ]
    run(back, env)
    for s, d in pairs:
        assert (tmp_path / "back" / f"{s}-{d}").read_bytes() == payload[s], (s, d)
    # what landed on the servers' own disks is right too
    assert (webdav_server.root / "matrix" / "s3-to-webdav.bin").read_bytes() == payload["s3"]
    assert (Path(str(sshd_server.root)) / "matrix" / "gs-to-sftp.bin").read_bytes() == payload["gs"]
    assert not list(tmp_path.glob("ferry-*.data"))  # two-stage temporaries are gone
