"""`ferry transfer` / `ferry-transfer` driven as a user drives it: a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ferry(
    *args: str, stdin: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def entry(lfn: str, srcs: list[tuple[str, int]], dest: str, **extra: object) -> dict[str, object]:
    return {
        "type": "transfer",
        "lfn": lfn,
        "id": 1,
        "linkage": "input",
        "src_urls": [{"site_label": "local", "url": u, "priority": p} for u, p in srcs],
        "dest_urls": [{"site_label": "local", "url": dest}],
        **extra,
    }


def test_json_list_from_stdin(tmp_path: Path) -> None:
    files = {f"f{i}.dat": os.urandom(100 * i) for i in range(5)}
    for n, d in files.items():
        (tmp_path / n).write_bytes(d)
    lst = [entry(n, [(f"file://{tmp_path}/{n}", 100)], f"file://{tmp_path}/out/{n}") for n in files]
    p = ferry("transfer", "--json", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["ok"] and report["summary"]["succeeded"] == 5
    for t in report["transfers"]:
        data = files[t["lfn"]]
        assert t["sha256"] == f"sha256:{sha(data)}"
        assert (tmp_path / "out" / t["lfn"]).read_bytes() == data
    assert "All transfers completed successfully." in p.stderr


def test_file_option_and_pegasus_options(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")
    lst = [entry("a", [(str(tmp_path / "a"), 1)], f"file://{tmp_path}/b")]
    (tmp_path / "list.json").write_text(json.dumps(lst))
    p = ferry("transfer", "-f", str(tmp_path / "list.json"), "-m", "2", "-n", "4", "-d")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b").read_bytes() == b"A"
    p = ferry("transfer", "--file", str(tmp_path / "list.json"), "--symlink")
    assert p.returncode == 0 and os.readlink(tmp_path / "b") == str(tmp_path / "a")


def test_replica_fallback_reports_both_sources(tmp_path: Path) -> None:
    (tmp_path / "good").write_bytes(b"ok")
    lst = [
        entry(
            "x",
            [(f"file://{tmp_path}/missing", 50), (f"file://{tmp_path}/good", 10)],
            f"file://{tmp_path}/out",
        )
    ]
    p = ferry("transfer", "--json", stdin=json.dumps(lst))
    assert p.returncode == 0
    t = json.loads(p.stdout)["transfers"][0]
    assert [a["ok"] for a in t["attempts"]] == [False, True]
    assert t["attempts"][0]["error_type"] == "NotFound"
    assert t["retries"] == 1


def test_failure_report_names_transfer_urls_and_causes(tmp_path: Path) -> None:
    lst = [
        entry(
            "lost.dat",
            [(f"file://{tmp_path}/m1", 2), (f"file://{tmp_path}/m2", 1)],
            f"file://{tmp_path}/out",
        )
    ]
    p = ferry("transfer", "-m", "3", stdin=json.dumps(lst))
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if "lost.dat ->" in ln]
    assert lines, p.stderr
    assert f"{tmp_path}/m1" in lines[0] and f"{tmp_path}/m2" in lines[0]
    assert "No such file" in lines[0]
    assert "Some transfers failed!" in p.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [
        ("[{", "malformed JSON"),
        ('[{"type": "copy", "src_urls": [], "dest_urls": []}]', "Invalid value 'copy'"),
        (
            '[{"type": "transfer", "src_urls": [{"url": 5}], "dest_urls": []}]',
            "$[0].src_urls[0].url",
        ),
        (
            '[{"type": "transfer", "src_urls": [], "dest_urls": [{"url": "/x"}]}]',
            "src_urls is empty",
        ),
        ("", "empty transfer list"),
    ],
)
def test_bad_input_is_one_clear_line(stdin: str, needle: str) -> None:
    p = ferry("transfer", stdin=stdin)
    assert p.returncode == 1
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


def test_unknown_scheme_fails_only_that_transfer(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    lst = [
        entry("good", [(str(tmp_path / "a"), 1)], f"file://{tmp_path}/g"),
        entry("bad", [("gopher://h/x", 1)], f"file://{tmp_path}/b"),
    ]
    p = ferry("transfer", "--json", stdin=json.dumps(lst))
    assert p.returncode == 1
    rep = json.loads(p.stdout)
    assert [t["ok"] for t in rep["transfers"]] == [True, False]
    assert "no plugin serves gopher://" in rep["transfers"][1]["error"]
    assert (tmp_path / "g").exists() and not (tmp_path / "b").exists()


def test_src_dest_with_sha256(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"payload")
    good = sha(b"payload")
    p = ferry("transfer", str(tmp_path / "a"), str(tmp_path / "d" / "b"), "--sha256", good)
    assert p.returncode == 0 and (tmp_path / "d" / "b").read_bytes() == b"payload"
    p = ferry(
        "transfer", str(tmp_path / "a"), str(tmp_path / "c"), "--sha256", f"sha256:{'f' * 64}"
    )
    assert p.returncode == 1 and not (tmp_path / "c").exists()
    assert good in p.stderr
    p = ferry("transfer", str(tmp_path / "a"), str(tmp_path / "c"), "--sha256", "nothex")
    assert p.returncode == 1 and "--sha256" in p.stderr


def test_copy_into_directory(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    p = ferry("transfer", str(tmp_path / "a"), str(tmp_path / "dir") + "/")
    assert p.returncode == 0 and (tmp_path / "dir" / "a").read_bytes() == b"x"


def test_checksum_from_planner_attributes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    lst = [
        entry(
            "a",
            [(str(tmp_path / "a"), 1)],
            f"file://{tmp_path}/b",
            attributes={"checksum.type": "sha256", "checksum.value": "0" * 64},
        )
    ]
    p = ferry("transfer", stdin=json.dumps(lst))
    assert p.returncode == 1 and not (tmp_path / "b").exists()
    assert "sha256 mismatch" in p.stderr


def test_verify_checksum_remote_reads_meta_files_in_cwd(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    meta = [
        {
            "_id": "a",
            "_type": "file",
            "_attributes": {"checksum.type": "sha256", "checksum.value": sha(b"abc")},
        }
    ]
    (tmp_path / "job.meta").write_text(json.dumps(meta))
    lst = [
        entry(
            "a", [(str(tmp_path / "a"), 1)], f"file://{tmp_path}/out/a", verify_checksum_remote=True
        )
    ]
    p = ferry("transfer", stdin=json.dumps(lst), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    meta[0]["_attributes"]["checksum.value"] = "e" * 64
    (tmp_path / "job.meta").write_text(json.dumps(meta))
    lst[0]["dest_urls"] = [{"site_label": "x", "url": f"file://{tmp_path}/out/a2"}]
    p = ferry("transfer", stdin=json.dumps(lst), cwd=tmp_path)
    assert p.returncode == 1 and not (tmp_path / "out" / "a2").exists()


def test_meta_output_and_kickstart_fragment(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    lst = [
        entry(
            "f.a", [(str(tmp_path / "a"), 1)], f"file://{tmp_path}/out/f.a", generate_checksum=True
        )
    ]
    ks = tmp_path / "ks.yml"
    p = ferry(
        "transfer",
        "--meta",
        str(tmp_path / "stage.meta"),
        stdin=json.dumps(lst),
        env={"KICKSTART_INTEGRITY_DATA": str(ks)},
    )
    assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "stage.meta").read_text())
    assert meta[0]["_id"] == "f.a"
    assert meta[0]["_attributes"]["checksum.type"] == "sha256"
    assert meta[0]["_attributes"]["checksum.value"] == sha(b"abc")
    assert meta[0]["_attributes"]["size"] == "3"
    text = ks.read_text()
    assert text.startswith('    "f.a":\n') and f"      sha256: {sha(b'abc')}\n" in text


def test_mkdir_and_remove_entries(tmp_path: Path) -> None:
    lst = [
        {"id": 1, "type": "mkdir", "target": {"site_label": "l", "url": f"file://{tmp_path}/d/e"}}
    ]
    assert ferry("transfer", stdin=json.dumps(lst)).returncode == 0
    assert (tmp_path / "d" / "e").is_dir()
    lst = [
        {
            "id": 1,
            "type": "remove",
            "target": {"site_label": "l", "url": f"file://{tmp_path}/d", "recursive": "True"},
        }
    ]
    assert ferry("transfer", stdin=json.dumps(lst)).returncode == 0
    assert not (tmp_path / "d").exists()


def test_password_never_printed(tmp_path: Path) -> None:
    lst = [
        entry(
            "s",
            [("http://alice:hunter2secret@127.0.0.1:9/x?X-Amz-Signature=abcd1234", 1)],
            f"file://{tmp_path}/o",
        )
    ]
    p = ferry("transfer", "--json", "-m", "1", stdin=json.dumps(lst))
    assert p.returncode == 1
    assert "hunter2secret" not in p.stdout + p.stderr
    assert "abcd1234" not in p.stdout + p.stderr


def test_help_for_every_command() -> None:
    for args in (["--help"], ["transfer", "--help"], ["plugins", "--help"]):
        p = ferry(*args)
        assert p.returncode == 0 and "usage:" in p.stdout
    assert "--sha256" in ferry("transfer", "--help").stdout


def test_standalone_entry_point(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"z")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry.worker.transfer_cli",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and (tmp_path / "b").read_bytes() == b"z"


@pytest.mark.parametrize(
    ("key", "src", "dest", "known"),
    [
        ("http.strems", "http://127.0.0.1:9/a", "{tmp}/b", "streams"),
        ("sftp.chanels", "{tmp}/a.dat", "sftp://127.0.0.1:9/b", "channels"),
        ("globus.poll_intervall", "go://c1/a", "go://c2/b", "poll_interval"),
    ],
)
def test_misspelt_setting_is_named_with_the_known_ones(
    tmp_path: Path, key: str, src: str, dest: str, known: str
) -> None:
    (tmp_path / "a.dat").write_bytes(b"x")
    src, dest = src.format(tmp=tmp_path), dest.format(tmp=tmp_path)
    p = ferry("transfer", "--set", f"{key}=2", src, dest)
    assert p.returncode == 1
    prefix = key.split(".")[0]
    assert f"{key}: no such setting (the {prefix} settings: " in p.stderr
    assert known in p.stderr
    assert "cannot connect" not in p.stderr  # nothing was tried with the typo


def test_meta_of_src_dest_names_the_sum_after_dest(tmp_path: Path) -> None:
    (tmp_path / "a.dat").write_bytes(b"")
    meta = tmp_path / "out.meta"
    p = ferry("transfer", "--meta", str(meta), str(tmp_path / "a.dat"), str(tmp_path / "b.dat"))
    assert p.returncode == 0, p.stderr
    [entry_] = json.loads(meta.read_text())
    assert entry_["_id"] == "b.dat"
    assert entry_["_attributes"]["checksum.value"] == sha(b"")
    assert entry_["_attributes"]["size"] == "0"


def test_generate_checksum_without_lfn_is_logged(tmp_path: Path) -> None:
    (tmp_path / "a.dat").write_bytes(b"x")
    lst = [entry("", [(f"file://{tmp_path}/a.dat", 100)], f"file://{tmp_path}/b.dat",
                 generate_checksum=True)]  # fmt: skip
    lst[0].pop("lfn")
    p = ferry("transfer", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    assert "lfn is required when enabling checksumming" in p.stderr
