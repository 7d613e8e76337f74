"""`ferry-transfer` fed what Pegasus feeds pegasus-transfer (reference: pegasus-transfer.md,
integrity.md): each test is one point where pegasus-transfer 5.1.3's behaviour is the contract."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import FaultServer, ServerUnavailable, start_wsgidav


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def transfer(
    *args: str, stdin: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.worker.transfer_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def entry(lfn: str | None, src: str, dest: str, **extra: object) -> dict[str, object]:
    e: dict[str, object] = {
        "type": "transfer",
        "id": 1,
        "linkage": "input",
        "src_urls": [{"site_label": "local", "url": src, "priority": 100}],
        "dest_urls": [{"site_label": "staging", "url": dest}],
        **extra,
    }
    if lfn is not None:
        e["lfn"] = lfn
    return e


def meta(lfn: str, value: str) -> str:
    attrs = {"checksum.type": "sha256", "checksum.value": value}
    return json.dumps([{"_id": lfn, "_type": "file", "_attributes": attrs}])


@pytest.fixture
def server() -> Iterator[FaultServer]:
    s = FaultServer()
    yield s
    s.stop()


# -- the JSON list: pegasus-transfer ignores attributes, reads recursive loosely ------------


def test_attributes_of_any_json_and_null_linkage_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    attrs = {"size": "3", "owner": None, "nested": {"k": [1, 2]}}
    lst = [entry("a", str(tmp_path / "a"), f"file://{tmp_path}/b", attributes=attrs, linkage=None)]
    p = transfer(stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b").read_bytes() == b"abc"


@pytest.mark.parametrize("value", [1, "1", "T", "yes", True])
def test_remove_recursive_spellings(tmp_path: Path, value: object) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    target = {"site_label": "l", "url": f"file://{tmp_path}/d", "recursive": value}
    p = transfer(stdin=json.dumps([{"id": 1, "type": "remove", "target": target}]))
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "d").exists()


def test_bad_recursive_names_file_and_entry(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(
        json.dumps([{"id": 4, "type": "remove", "target": {"url": "/x", "recursive": "maybe"}}])
    )
    p = transfer("-f", str(tmp_path / "list.json"), stdin="")
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if "CRITICAL" in ln]
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert f"{tmp_path}/list.json: entry 1 (id 4)" in lines[0] and "maybe" in lines[0]


def test_invalid_entry_names_entry_number_id_and_lfn(tmp_path: Path) -> None:
    good = entry("x", "/a", "/b")
    bad = {"type": "transfer", "lfn": "y", "id": 7, "src_urls": [{"url": "/a"}]}
    (tmp_path / "list.json").write_text(json.dumps([good, bad]))
    p = transfer("--file", str(tmp_path / "list.json"), stdin="")
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if "CRITICAL" in ln]
    assert len(lines) == 1, p.stderr
    assert f"{tmp_path}/list.json: entry 2 (id 7) (lfn y)" in lines[0]
    assert "dest_urls" in lines[0]


# -- verify_checksum_remote: the expected sum is the one in ./*.meta -----------------------


def test_verify_checksum_remote_checks_meta_not_attributes(tmp_path: Path) -> None:
    """pegasus-integrity --verify reads ./*.meta; the planner's attributes are ignored."""
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "job.meta").write_text(meta("f.a", sha(b"abc")))
    attrs = {"checksum.type": "sha256", "checksum.value": "0" * 64}
    lst = [
        entry(
            "f.a",
            str(tmp_path / "a"),
            f"file://{tmp_path}/out/f.a",
            linkage="output",
            verify_checksum_remote=True,
            attributes=attrs,
        )
    ]
    p = transfer(stdin=json.dumps(lst), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "f.a").read_bytes() == b"abc"


def test_verify_checksum_remote_without_lfn_fails_the_transfer(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    lst = [entry(None, str(tmp_path / "a"), f"file://{tmp_path}/o", verify_checksum_remote=True)]
    p = transfer(stdin=json.dumps(lst), cwd=tmp_path)
    assert p.returncode == 1
    assert "no lfn" in p.stderr
    assert not (tmp_path / "o").exists()


def test_verify_without_known_sum_fails_only_that_transfer(tmp_path: Path) -> None:
    """pegasus-transfer still does the other transfers of the list."""
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "job.meta").write_text(meta("known", sha(b"abc")))
    lst = [
        entry(
            "known", str(tmp_path / "a"), f"file://{tmp_path}/o/known", verify_checksum_remote=True
        ),
        entry(
            "lost", str(tmp_path / "a"), f"file://{tmp_path}/o/lost", verify_checksum_remote=True
        ),
        entry("plain", str(tmp_path / "a"), f"file://{tmp_path}/o/plain"),
    ]
    p = transfer("--json", stdin=json.dumps(lst), cwd=tmp_path)
    assert p.returncode == 1
    report = json.loads(p.stdout)
    assert [t["ok"] for t in report["transfers"]] == [True, False, True]
    assert "no sha256 is known for lost" in report["transfers"][1]["error"]
    assert (tmp_path / "o" / "known").exists() and (tmp_path / "o" / "plain").exists()
    assert not (tmp_path / "o" / "lost").exists()
    assert "Some transfers failed! See above, and possibly stderr." in p.stderr


def test_integrity_check_metrics_line(tmp_path: Path) -> None:
    """pegasus-monitord reads the int.metric payload from the job's output."""
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "job.meta").write_text(meta("f.a", sha(b"abc")) + "\n")
    lst = [
        entry(
            "f.a",
            str(tmp_path / "a"),
            f"file://{tmp_path}/o",
            linkage="output",
            verify_checksum_remote=True,
        )
    ]
    p = transfer(stdin=json.dumps(lst), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    start, end = "@@@MONITORING_PAYLOAD - START@@@", "@@@MONITORING_PAYLOAD - END@@@"
    line = next(ln for ln in p.stderr.splitlines() if start in ln)
    data = json.loads(line.split(start)[1].split(end)[0])
    assert data["monitoring_event"] == "int.metric"
    payload = data["payload"][0]
    assert payload["event"] == "check" and payload["file_type"] == "output"
    assert (payload["succeeded"], payload["failed"]) == (1, 0)


# -- generate_checksum: pegasus-integrity --generate-fullstat-yaml on the local side -------


def test_generate_checksum_on_file_source_when_dest_is_not_a_file(tmp_path: Path) -> None:
    """A file:// source is checksummed even when the destination is not file:// (here a
    symlink; on a stage-in job, the staging site)."""
    (tmp_path / "a").write_bytes(b"abc")
    lst = [entry("f.a", str(tmp_path / "a"), f"symlink://{tmp_path}/l", generate_checksum=True)]
    ks = tmp_path / "ks.yml"
    p = transfer(stdin=json.dumps(lst), env={"KICKSTART_INTEGRITY_DATA": str(ks)})
    assert p.returncode == 0, p.stderr
    text = ks.read_text()
    assert text.startswith('    "f.a":\n')
    assert f'      file_name: "{tmp_path}/a"\n' in text
    assert f"      sha256: {sha(b'abc')}\n" in text


def test_generate_checksum_without_kickstart_goes_to_stdout(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    lst = [entry("f.a", str(tmp_path / "a"), f"file://{tmp_path}/b", generate_checksum=True)]
    env = {k: v for k, v in os.environ.items() if k != "KICKSTART_INTEGRITY_DATA"}
    p = subprocess.run(
        [sys.executable, "-m", "ferry.worker.transfer_cli"],
        input=json.dumps(lst),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith('    "f.a":\n')
    assert f"      sha256: {sha(b'abc')}\n" in p.stdout


def test_generate_checksum_once_per_lfn(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    lst = [
        entry("f.a", str(tmp_path / "a"), f"file://{tmp_path}/b1", generate_checksum=True),
        entry("f.a", str(tmp_path / "a"), f"file://{tmp_path}/b2", generate_checksum=True),
    ]
    ks = tmp_path / "ks.yml"
    p = transfer(stdin=json.dumps(lst), env={"KICKSTART_INTEGRITY_DATA": str(ks)})
    assert p.returncode == 0, p.stderr
    assert ks.read_text().count('    "f.a":\n') == 1


def test_generate_checksum_of_a_moved_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    lst = [entry("f.a", str(tmp_path / "a"), f"moveto://{tmp_path}/m", generate_checksum=True)]
    ks = tmp_path / "ks.yml"
    p = transfer(stdin=json.dumps(lst), env={"KICKSTART_INTEGRITY_DATA": str(ks)})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "m").read_bytes() == b"abc" and not (tmp_path / "a").exists()
    assert f"      sha256: {sha(b'abc')}\n" in ks.read_text()


def test_generate_checksum_between_two_remote_ends(tmp_path: Path, server: FaultServer) -> None:
    """http -> webdav goes through a local temporary file, whose sum pegasus-transfer takes."""
    try:
        dav = start_wsgidav(tmp_path / "dav")
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        server.add("/f.a", b"abc")
        lst = [entry("f.a", f"{server.url}/f.a", f"{dav.url}/run/f.a", generate_checksum=True)]
        ks = tmp_path / "ks.yml"
        p = transfer(stdin=json.dumps(lst), env={"KICKSTART_INTEGRITY_DATA": str(ks)})
        assert p.returncode == 0, p.stderr
        assert (dav.root / "run" / "f.a").read_bytes() == b"abc"
        text = ks.read_text()
        assert text.startswith('    "f.a":\n') and "      size: 3\n" in text
        assert f"      sha256: {sha(b'abc')}\n" in text
    finally:
        dav.stop()


# -- $PEGASUS_MULTIPART_DIR: the transfer attempts PegasusLite appends to the job output ----


def test_multipart_transfer_attempts(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    mp = tmp_path / ".pegasus.mulitpart.d"
    mp.mkdir()
    lst = [
        {
            "type": "transfer",
            "lfn": "f.a",
            "id": 1,
            "linkage": "input",
            "src_urls": [
                {"site_label": "arch-1", "url": f"file://{tmp_path}/missing", "priority": 50},
                {"site_label": "local", "url": f"file://{tmp_path}/a", "priority": 10},
            ],
            "dest_urls": [{"site_label": "condorpool", "url": f"file://{tmp_path}/w/f.a"}],
        }
    ]
    before = int(time.time())
    p = transfer(stdin=json.dumps(lst), env={"PEGASUS_MULTIPART_DIR": str(mp)})
    assert p.returncode == 0, p.stderr
    (name,) = os.listdir(mp)
    assert name.endswith("-transfer") and int(name.split("-")[0]) >= before
    text = (mp / name).read_text()
    assert text.startswith("- transfer_attempts:\n  - src_url: ")
    assert f'  - src_url: "file://{tmp_path}/missing"\n    src_label: "arch_1"\n' in text
    assert f'    dst_url: "file://{tmp_path}/w/f.a"\n    dst_label: "condorpool"\n' in text
    assert text.count("    success: False\n") == 1 and text.count("    success: True\n") == 1
    assert text.count('    lfn: "f.a"\n') == 2
    assert "    bytes: 3\n" in text
    starts = [int(ln.split(": ")[1]) for ln in text.splitlines() if ln.startswith("    start: ")]
    assert len(starts) == 2 and all(before - 1 <= s <= time.time() + 1 for s in starts)


# -- signals: SIGTERM has no handler in pegasus-transfer ------------------------------------


def test_sigterm_ends_the_process_by_the_signal(tmp_path: Path, server: FaultServer) -> None:
    server.add("/slow", b"x" * 1000, delay=30)
    lst = [entry("s", f"{server.url}/slow", f"file://{tmp_path}/s")]
    (tmp_path / "list.json").write_text(json.dumps(lst))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry.worker.transfer_cli", "-f", str(tmp_path / "list.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        route = server.routes["/slow"]
        while route.count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert route.count > 0
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM, err
    assert not (tmp_path / "s").exists()
    assert sorted(os.listdir(tmp_path)) == ["list.json"]


# -- input detection: a list that starts with "# src" is the legacy v1 text format ---------


def test_legacy_v1_text_list(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    text = (
        f"# src 1 local\nfile://{tmp_path}/a\n# dst 1 stage-1\nfile://{tmp_path}/o/a\n"
        f"# src 2 local\n{tmp_path}/a\n# dst 2 local\n{tmp_path}/o/b\n"
    )
    p = transfer("--json", stdin=text)
    assert p.returncode == 0, p.stderr
    assert [t["id"] for t in json.loads(p.stdout)["transfers"]] == ["1", "2"]
    assert (tmp_path / "o" / "a").read_bytes() == b"abc"
    assert (tmp_path / "o" / "b").read_bytes() == b"abc"


def test_dangling_link_only_for_symlink_destinations(tmp_path: Path) -> None:
    """verify_symlink_source=false lets symlink:// point at a file yet to come; a file://
    destination, linked with --symlink, still needs its source (pegasus-transfer's file->file)."""
    missing = str(tmp_path / "later")
    lst = [entry("a", missing, f"symlink://{tmp_path}/l", verify_symlink_source=False)]
    p = transfer("-m", "1", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    assert os.readlink(tmp_path / "l") == missing
    lst = [entry("a", missing, f"file://{tmp_path}/f", verify_symlink_source=False)]
    p = transfer("-m", "1", "--symlink", stdin=json.dumps(lst))
    assert p.returncode == 1
    assert not os.path.lexists(tmp_path / "f")
