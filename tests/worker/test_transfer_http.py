"""`ferry transfer` over real HTTP and WebDAV servers: faults, retries, fallback, routes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import FaultServer, ForwardProxy, NginxServer, WebdavServer, free_port


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ferry(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "transfer", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def entry(lfn: str, srcs: list[tuple[str, int]], dest: str, **kw: object) -> dict[str, object]:
    return {
        "type": "transfer",
        "lfn": lfn,
        "id": 1,
        "src_urls": [{"site_label": "s", "url": u, "priority": p} for u, p in srcs],
        "dest_urls": [{"site_label": "d", "url": dest}],
        **kw,
    }


def test_dropped_connection_every_time_leaves_no_partial_file(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom(1 << 20)
    route = fault_server.add(
        "/always-drops.bin", data, drop_after=1000, drop_times=100, ranges=False
    )
    dest = tmp_path / "out" / "always-drops.bin"
    p = ferry(
        f"{fault_server.url}/always-drops.bin", str(dest), "-m", "2", "--backoff", "0.05", "--json"
    )
    assert p.returncode == 1
    t = json.loads(p.stdout)["transfers"][0]
    assert t["error_type"] == "IncompleteTransfer"
    assert len(t["attempts"]) == 2 and all(a["transient"] for a in t["attempts"])
    assert route.count >= 2  # both rounds really went to the server
    assert not dest.exists()
    assert not any("ferry-part" in p.name for p in (tmp_path / "out").iterdir())


def test_resume_after_drop_and_retry_after_503(fault_server: FaultServer, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    route = fault_server.add("/resumable.bin", data, drop_after=(1 << 20) + 5, drop_times=1)
    throttled = fault_server.add(
        "/throttled.bin", b"later", status=503, status_times=1, status_headers={"Retry-After": "1"}
    )
    lst = [
        entry(
            "resumable.bin",
            [(f"{fault_server.url}/resumable.bin", 1)],
            f"file://{tmp_path}/resumable.bin",
            sha256=sha(data),
        ),
        entry(
            "throttled.bin",
            [(f"{fault_server.url}/throttled.bin", 1)],
            f"file://{tmp_path}/throttled.bin",
            sha256=sha(b"later"),
        ),
    ]
    p = ferry("--json", "--backoff", "0.05", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "resumable.bin").read_bytes() == data
    assert route.range_requests == [f"bytes={(1 << 20) + 5}-"]  # resumed, not restarted
    rep = {t["lfn"]: t for t in json.loads(p.stdout)["transfers"]}
    assert rep["throttled.bin"]["retries"] == 1 and throttled.count == 2
    assert rep["throttled.bin"]["attempts"][0]["error_type"] == "ThrottledError"


def test_replica_fallback_404_then_mirror(
    fault_server: FaultServer, nginx_server: NginxServer, tmp_path: Path
) -> None:
    data = os.urandom(70_000)
    (nginx_server.root / "mirror.bin").write_bytes(data)
    lst = [
        entry(
            "mirror.bin",
            [
                (f"{nginx_server.url}/missing/mirror.bin", 100),
                (f"{nginx_server.url}/mirror.bin", 10),
            ],
            f"file://{tmp_path}/mirror.bin",
            sha256=sha(data),
        )
    ]
    p = ferry("--json", stdin=json.dumps(lst))
    assert p.returncode == 0
    t = json.loads(p.stdout)["transfers"][0]
    assert [a["error_type"] for a in t["attempts"] if not a["ok"]] == ["NotFound"]
    assert t["source"] == f"{nginx_server.url}/mirror.bin"
    assert (tmp_path / "mirror.bin").read_bytes() == data


def test_corrupt_replica_falls_back_to_good_one(nginx_server: NginxServer, tmp_path: Path) -> None:
    good = os.urandom(50_000)
    (nginx_server.root / "corrupt.bin").write_bytes(good[:-1] + b"X")
    (nginx_server.root / "good.bin").write_bytes(good)
    lst = [
        entry(
            "f",
            [(f"{nginx_server.url}/corrupt.bin", 9), (f"{nginx_server.url}/good.bin", 1)],
            f"file://{tmp_path}/f",
            sha256=sha(good),
        )
    ]
    p = ferry("--json", stdin=json.dumps(lst))
    assert p.returncode == 0
    t = json.loads(p.stdout)["transfers"][0]
    assert t["attempts"][0]["error_type"] == "IntegrityError"
    assert t["attempts"][0]["details"]["actual"] == sha(good[:-1] + b"X")
    assert (tmp_path / "f").read_bytes() == good


def test_many_files_from_nginx(nginx_server: NginxServer, tmp_path: Path) -> None:
    blobs = {f"many/{i}.dat": os.urandom(64 * 1024) for i in range(120)}
    (nginx_server.root / "many").mkdir(exist_ok=True)
    for name, d in blobs.items():
        (nginx_server.root / name).write_bytes(d)
    lst = [
        entry(n, [(f"{nginx_server.url}/{n}", 1)], f"file://{tmp_path}/{n}", sha256=sha(d))
        for n, d in blobs.items()
    ]
    p = ferry("-n", "16", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    for n, d in blobs.items():
        assert (tmp_path / n).read_bytes() == d


def test_two_stage_http_to_webdav(
    nginx_server: NginxServer, webdav_server: WebdavServer, tmp_path: Path
) -> None:
    data = os.urandom(2 << 20)
    (nginx_server.root / "two.bin").write_bytes(data)
    p = ferry(
        "--json",
        f"{nginx_server.url}/two.bin",
        f"{webdav_server.url}/stage/two.bin",
        "--sha256",
        sha(data),
        "--tmpdir",
        str(tmp_path),
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["transfers"][0]["route"] == "two-stage"
    assert (webdav_server.root / "stage" / "two.bin").read_bytes() == data
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_webdav_credentials_file_with_real_secrets(
    webdav_auth_server: WebdavServer, tmp_path: Path
) -> None:
    password = webdav_auth_server.password
    assert password
    conf = tmp_path / "creds.conf"
    conf.write_text(
        f"[127.0.0.1:{webdav_auth_server.port}]\nusername = {webdav_auth_server.user}\n"
        f"password = {password}\nheader.X-Extra = token-value-123\n"
    )
    conf.chmod(0o600)
    (tmp_path / "a.bin").write_bytes(b"authenticated bytes")
    url = f"{webdav_auth_server.url}/creds/a.bin"
    up = ferry("--json", "-d", "--credentials", str(conf), str(tmp_path / "a.bin"), url)
    assert up.returncode == 0, up.stderr
    assert (webdav_auth_server.root / "creds" / "a.bin").read_bytes() == b"authenticated bytes"
    down = ferry("--json", "-d", url, str(tmp_path / "b.bin"), env={"FERRY_CREDENTIALS": str(conf)})
    assert down.returncode == 0 and (tmp_path / "b.bin").read_bytes() == b"authenticated bytes"
    conf.write_text(conf.read_text().replace(password, "wrong-" + password))
    bad = ferry("--json", "-d", "--credentials", str(conf), url, str(tmp_path / "c.bin"))
    assert (
        bad.returncode == 1 and json.loads(bad.stdout)["transfers"][0]["error_type"] == "AuthError"
    )
    for p in (up, down, bad):
        assert password not in p.stdout + p.stderr
        assert "token-value-123" not in p.stdout + p.stderr


RANGED = [
    *("--set", "http.streams_min_size=1M"),
    *("--set", "http.stream_chunk=256K"),
    *("--set", "http.streams_solo_rate=0"),  # every stream at once, however fast the first
]


def test_parallel_ranges_with_a_dropped_range_give_the_exact_file(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom((4 << 20) + 99)
    route = fault_server.add("/cli-ranged.bin", data, drop_after=70_000, drop_times=3)
    dest = tmp_path / "out" / "cli-ranged.bin"
    p = ferry(
        f"{fault_server.url}/cli-ranged.bin", str(dest), "--sha256", sha(data), "--json", *RANGED
    )
    assert p.returncode == 0, p.stderr
    assert dest.read_bytes() == data
    t = json.loads(p.stdout)["transfers"][0]
    assert t["sha256"] == f"sha256:{sha(data)}" and t["retries"] == 0
    assert len(route.range_requests) >= 15  # 16 chunks: 15 ranges after the first GET, + resumes
    assert sorted(os.listdir(tmp_path / "out")) == ["cli-ranged.bin"]


def test_parallel_ranges_failing_leave_no_partial_file(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    route = fault_server.add("/cli-dead.bin", data, drop_after=5000, drop_times=100_000)
    dest = tmp_path / "out" / "cli-dead.bin"
    p = ferry(
        f"{fault_server.url}/cli-dead.bin",
        str(dest),
        "--sha256",
        sha(data),
        "-m",
        "2",
        "--backoff",
        "0.05",
        "--json",
        *RANGED,
    )
    assert p.returncode == 1
    t = json.loads(p.stdout)["transfers"][0]
    assert t["error_type"] == "IncompleteTransfer" and len(t["attempts"]) == 2
    assert route.range_requests  # the streams really ran
    assert not dest.exists()
    assert os.listdir(tmp_path / "out") == []


def test_log_lines_per_transfer_keep_the_format_and_hide_signed_queries(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    import re

    data = os.urandom(5000)
    (nginx_server.root / "signed.bin").write_bytes(data)
    url = f"{nginx_server.url}/signed.bin?X-Amz-Signature=s3cr3tsig&X-Amz-Credential=AKIDEXAMPLE"
    lst = [entry("signed.bin", [(url, 1)], f"file://{tmp_path}/signed.bin", sha256=sha(data))]
    p = ferry("--progress", "log", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "signed.bin").read_bytes() == data
    assert "s3cr3tsig" not in p.stderr and "AKIDEXAMPLE" not in p.stderr
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    [line] = [ln for ln in p.stderr.splitlines() if "signed.bin:" in ln]
    assert re.fullmatch(
        stamp
        + r"    INFO:  signed\.bin: http://127\.0\.0\.1:\d+/signed\.bin\?\S*X-Amz-Signature=\*\*\*\S*"
        r" -> file://\S+/signed\.bin, 4\.9 KiB in \d+\.\d{3} s \(download\), sha256:" + sha(data),
        line,
    ), line
    # the same layout as the lines that go through logging
    assert re.fullmatch(stamp + r"    INFO:  Stats: .*", p.stderr.splitlines()[-2])


def test_threads_join_while_a_slow_server_keeps_them_waiting(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    # every answer takes 0.2 s: one thread per CPU would leave the CPUs idle, so the
    # engine adds threads up to -n
    blobs = {f"slow{i}.dat": os.urandom(2000 + i) for i in range(24)}
    for name, data in blobs.items():
        fault_server.add(f"/slow/{name}", data, delay=0.2)
    lst = [
        entry(
            n, [(f"{fault_server.url}/slow/{n}", 10)], f"file://{tmp_path}/out/{n}", sha256=sha(d)
        )
        for n, d in blobs.items()
    ]
    p = ferry("-n", "8", "--json", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["summary"]["succeeded"] == 24
    assert report["summary"]["threads"] == 8
    for name, data in blobs.items():
        assert (tmp_path / "out" / name).read_bytes() == data


# -- proxies: an Open Science Grid site's Squid, and $http_proxy -----------------------

NO_PROXY_ENV = {"http_proxy": "", "HTTP_PROXY": "", "all_proxy": "", "ALL_PROXY": ""}


def _squid_run(
    nginx_server: NginxServer, tmp_path: Path, name: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], str, bytes]:
    data = os.urandom(50_000)
    (nginx_server.root / name).write_bytes(data)
    url = f"{nginx_server.url}/{name}"
    p = ferry(
        url, str(tmp_path / "out" / name), "--sha256", sha(data), "--json",
        env={**NO_PROXY_ENV, **env},
    )  # fmt: skip
    return p, url, data


def test_osg_squid_serves_http_downloads(nginx_server: NginxServer, tmp_path: Path) -> None:
    squid = ForwardProxy()
    try:
        p, url, data = _squid_run(
            nginx_server, tmp_path, "squid.bin", OSG_SQUID_LOCATION=squid.location
        )
    finally:
        squid.stop()
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "squid.bin").read_bytes() == data
    assert squid.seen == [url]


@pytest.mark.parametrize("how", ["down", "broken"])
def test_a_failing_squid_is_passed_by_in_the_same_try(
    nginx_server: NginxServer, tmp_path: Path, how: str
) -> None:
    squid = ForwardProxy(broken=True)
    location = squid.location if how == "broken" else f"127.0.0.1:{free_port()}"
    try:
        p, url, data = _squid_run(
            nginx_server, tmp_path, f"squid-{how}.bin", OSG_SQUID_LOCATION=location
        )
    finally:
        squid.stop()
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / f"squid-{how}.bin").read_bytes() == data
    [t] = json.loads(p.stdout)["transfers"]
    assert len(t["attempts"]) == 1 and t["retries"] == 0  # straight on, no second round
    assert squid.seen == ([url] if how == "broken" else [])


def test_http_proxy_wins_over_the_squid_and_unavailable_means_none(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    squid, proxy = ForwardProxy(), ForwardProxy()
    try:
        p, url, _ = _squid_run(
            nginx_server, tmp_path, "both.bin",
            OSG_SQUID_LOCATION=squid.location, http_proxy=f"http://{proxy.location}",
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert proxy.seen == [url] and squid.seen == []
        p, _, data = _squid_run(
            nginx_server, tmp_path, "none.bin", OSG_SQUID_LOCATION="UNAVAILABLE"
        )
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "out" / "none.bin").read_bytes() == data
        assert squid.seen == [] and proxy.seen == [url]
    finally:
        squid.stop()
        proxy.stop()


def test_a_remote_dest_ending_in_a_slash_keeps_the_name(
    webdav_server: WebdavServer, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    (tmp_path / "named.bin").write_bytes(data)
    p = ferry(str(tmp_path / "named.bin"), f"{webdav_server.url}/into/dir/", "--sha256", sha(data))
    assert p.returncode == 0, p.stderr
    assert (webdav_server.root / "into" / "dir" / "named.bin").read_bytes() == data
