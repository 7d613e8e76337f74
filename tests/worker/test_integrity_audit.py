"""sha256 integrity metadata as Pegasus speaks it (reference: integrity.md), end to end:
the ``.meta`` files ``ferry transfer --meta`` writes, read as pegasus-integrity reads them,
and the ``.meta`` files Pegasus writes, read by ``verify_checksum_remote``, in every
variant a reader must accept. Each test pins one point an audit found wrong or unpinned."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from ferry.worker.integrity import FileSum, kickstart_fragment, read_meta_dir, write_meta
from tests.servers import ServerUnavailable, start_wsgidav

from .test_pegasus_compat import entry, sha, transfer

#: pegasus-integrity 5.1.3, when the peer benchmarks installed it
_PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "_peers" / "venv"
_PEGASUS_INTEGRITY = _PEERS / "lib/python3.11/site-packages/Pegasus/cli/pegasus-integrity.py"


def meta_entry(lfn: str, value: str, _type: str = "file", **attrs: str) -> dict[str, object]:
    return {
        "_id": lfn,
        "_type": _type,
        "_attributes": {"checksum.type": "sha256", "checksum.value": value, **attrs},
    }


def pegasus_verify(directory: Path, lfn: str, path: Path) -> bool:
    """pegasus-integrity --verify=LFN=PATH in ``directory``, as its code does it: every
    ``*.meta`` there, files of 2 bytes or less skipped, ``entry["_id"] == lfn`` with a
    ``checksum.value``, compared as a string with the file's lowercase hex sum."""
    entries: list[dict] = []
    for name in os.listdir(directory):
        p = directory / name
        if name.endswith(".meta") and not name.startswith(".") and p.stat().st_size > 2:
            entries.extend(json.loads(p.read_text()))
    expected = None
    for e in entries:
        if e["_id"] == lfn and "checksum.value" in e.get("_attributes", {}):
            expected = e["_attributes"]["checksum.value"]
    return expected == sha(path.read_bytes())


def verify_list(tmp: Path, lfn: str, dest: str, **extra: object) -> str:
    (tmp / "a").write_bytes(b"abc")
    lst = [entry(lfn, str(tmp / "a"), dest, linkage="output", verify_checksum_remote=True, **extra)]
    return json.dumps(lst)


# -- .meta files ferry writes, read as Pegasus reads them ----------------------------------


def test_meta_written_by_ferry_is_what_pegasus_exitcode_writes(tmp_path: Path) -> None:
    """Every entry has user, size, ctime, checksum.type, checksum.value and checksum.timing,
    all strings, as pegasus-exitcode writes them; size too for an empty file and for a
    linked one (no bytes were streamed), and ctime is the file's, with its zone, as
    pegasus-exitcode takes it from kickstart's stat."""
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "empty").write_bytes(b"")
    out = tmp_path / "out"
    lst = [
        entry("f.a", str(tmp_path / "a"), f"file://{out}/f.a"),
        entry("f.e", str(tmp_path / "empty"), f"file://{out}/f.e"),
        entry("f.l", str(tmp_path / "a"), f"symlink://{out}/f.l"),
    ]
    (tmp_path / "v").mkdir()
    p = transfer("--meta", str(tmp_path / "v" / "stage.meta"), stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    path = tmp_path / "v" / "stage.meta"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    entries = json.loads(path.read_text())
    assert [e["_id"] for e in entries] == ["f.a", "f.e", "f.l"]
    sizes = {e["_id"]: e["_attributes"].get("size") for e in entries}
    assert sizes == {"f.a": "3", "f.e": "0", "f.l": "3"}
    for e in entries:
        attrs = e["_attributes"]
        assert e["_type"] == "file" and all(isinstance(v, str) for v in attrs.values())
        keys = {"user", "size", "ctime", "checksum.type", "checksum.value", "checksum.timing"}
        assert set(attrs) == keys
        float(attrs["checksum.timing"])
        assert attrs["checksum.type"] == "sha256"
        stamp = datetime.fromisoformat(attrs["ctime"])
        assert stamp.tzinfo is not None
        assert abs(stamp.timestamp() - os.stat(out / e["_id"]).st_ctime) < 1.5
    for lfn in ("f.a", "f.e", "f.l"):
        assert pegasus_verify(tmp_path / "v", lfn, out / lfn), lfn


def test_meta_checksum_value_is_plain_lowercase_hex(tmp_path: Path) -> None:
    """pegasus-integrity compares checksum.value as a string with openssl's lowercase
    hex: a sum handed over as ``sha256:<HEX>`` is written as 64 lowercase hex digits."""
    (tmp_path / "a").write_bytes(b"abc")
    given = "sha256:" + sha(b"abc").upper()
    write_meta(str(tmp_path / "x.meta"), [FileSum("f.a", given, path=str(tmp_path / "a"))])
    (e,) = json.loads((tmp_path / "x.meta").read_text())
    assert e["_attributes"]["checksum.value"] == sha(b"abc")
    assert e["_attributes"]["size"] == "3"
    assert pegasus_verify(tmp_path, "f.a", tmp_path / "a")


def test_meta_has_one_entry_per_file_copied_twice(tmp_path: Path) -> None:
    """pegasus-exitcode writes one entry per LFN (kickstart's ``files:`` is a map): a file
    sent to two places is one entry; two different files under one LFN both stay."""
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "b").write_bytes(b"abd")
    lst = [
        entry("f.a", str(tmp_path / "a"), f"file://{tmp_path}/o1/f.a"),
        entry("f.a", str(tmp_path / "a"), f"file://{tmp_path}/o2/f.a"),
        entry("f.x", str(tmp_path / "a"), f"file://{tmp_path}/o1/f.x"),
        entry("f.x", str(tmp_path / "b"), f"file://{tmp_path}/o2/f.x"),
    ]
    p = transfer("--meta", str(tmp_path / "job.meta"), stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    entries = json.loads((tmp_path / "job.meta").read_text())
    got = [(e["_id"], e["_attributes"]["checksum.value"]) for e in entries]
    assert got == [("f.a", sha(b"abc")), ("f.x", sha(b"abc")), ("f.x", sha(b"abd"))]
    assert read_meta_dir(str(tmp_path)).conflicts.keys() == {"f.x"}


@pytest.mark.skipif(not _PEGASUS_INTEGRITY.exists(), reason="pegasus-integrity not installed")
def test_real_pegasus_integrity_verifies_ferry_meta(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "v").mkdir()
    lst = [entry("f.a", str(tmp_path / "a"), f"file://{tmp_path}/out/f.a")]
    p = transfer("--meta", str(tmp_path / "v" / "stage.meta"), stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    run = [str(_PEERS / "bin" / "python"), str(_PEGASUS_INTEGRITY)]
    ok = subprocess.run(
        [*run, f"--verify=f.a={tmp_path}/out/f.a"], cwd=tmp_path / "v", capture_output=True
    )
    assert ok.returncode == 0, ok.stdout
    (tmp_path / "out" / "f.a").write_bytes(b"abd")
    bad = subprocess.run(
        [*run, f"--verify=f.a={tmp_path}/out/f.a"], cwd=tmp_path / "v", capture_output=True
    )
    assert bad.returncode == 1


def test_kickstart_fragment_quotes_names_as_yaml(tmp_path: Path) -> None:
    """Kickstart pastes the fragment under its record's ``files:``: an LFN or a path with
    a ``"`` or a backslash must not break that YAML (a plain name reads as before)."""
    odd = tmp_path / 'we"ird\\name'
    odd.write_bytes(b"abc")
    plain = tmp_path / "f.a"
    plain.write_bytes(b"abc")
    text = kickstart_fragment(FileSum('f"1\\x', sha(b"abc"), path=str(odd)))
    text += kickstart_fragment(FileSum("f.a", sha(b"abc"), path=str(plain)))
    files = yaml.safe_load("files:\n" + text)["files"]
    assert files['f"1\\x']["file_name"] == str(odd)
    assert files['f"1\\x']["sha256"] == sha(b"abc") and files['f"1\\x']["output"] is True
    assert '\n    "f.a":\n' in "\n" + text and f'      file_name: "{plain}"\n' in text


# -- .meta files Pegasus writes, read by verify_checksum_remote ----------------------------


@pytest.mark.parametrize(
    "value",
    [
        sha(b"abc").upper(),
        "sha256:" + sha(b"abc"),
        "SHA256:" + sha(b"abc").upper(),
        f"  {sha(b'abc')}\n",
    ],
)
def test_verify_accepts_upper_case_and_prefixed_meta_sums(tmp_path: Path, value: str) -> None:
    """A sum spelled in upper case or with ``sha256:`` is the same sum (ferry accepts both
    everywhere else): it must not be taken for a mismatch."""
    (tmp_path / "job.meta").write_text(json.dumps([meta_entry("f.a", value)]))
    p = transfer(stdin=verify_list(tmp_path, "f.a", f"file://{tmp_path}/out/f.a"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "f.a").read_bytes() == b"abc"


def test_meta_reader_accepts_every_variant_pegasus_writes(tmp_path: Path) -> None:
    """The planner's ``<job>.in.meta`` (``_type`` data/executable/docker, user metadata
    beside the checksum, keys in any order, tab-indented as Integrity.java prints it),
    pegasus-exitcode's ``<job>.meta`` (all of
    its attributes) and its empty ``[]``; an empty file, a broken one, one that is not
    an array and a hidden one add nothing; a 2-byte file is skipped."""
    d = tmp_path / "m"
    d.mkdir()
    (d / "job.in.meta").write_text(
        json.dumps(
            [
                {"_attributes": {"owner": "lab-7", "checksum.value": "1" * 64}, "_id": "raw"},
                meta_entry("exe", "2" * 64, _type="executable"),
                meta_entry("img", "3" * 64, _type="docker"),
                {"_id": "nosum", "_type": "data", "_attributes": {"owner": "x"}},
                {"_id": "noattrs", "_type": "data"},
            ]
        )
    )
    exitcode = meta_entry(
        "f.b", "4" * 64, user="alice", size="6", ctime="2024-05-01T10:00:00-07:00"
    )
    exitcode["_attributes"]["checksum.timing"] = "0.002"  # type: ignore[index]
    (d / "parent.meta").write_text(json.dumps([exitcode], indent=2) + "\n")
    # Integrity.java writes <job>.in.meta by hand: tabs, "_type" first, no spaces after ":"
    (d / "other.in.meta").write_text(
        '[\n\n\t{\n\t\t"_type": "data",\n\t\t"_id": "f.c",\n\t\t"_attributes": {'
        f'\n\t\t\t"checksum.type":"sha256",\n\t\t\t"checksum.value":"{"6" * 64}",'
        '\n\t\t\t"size":"1024"\n\t\t}\n\t}\n]\n'
    )
    (d / "none.meta").write_text("[]")
    (d / "zero.meta").write_text("")
    (d / "small.meta").write_text("{}")
    (d / "broken.meta").write_text("[{")
    (d / "object.meta").write_text(json.dumps({"_id": "obj", "_attributes": {}}))
    (d / ".hidden.meta").write_text(json.dumps([meta_entry("hid", "5" * 64)]))
    sums = read_meta_dir(str(d))
    assert dict(sums) == {
        "raw": "1" * 64,
        "exe": "2" * 64,
        "img": "3" * 64,
        "f.b": "4" * 64,
        "f.c": "6" * 64,
    }
    assert sums.conflicts == {}


def test_a_broken_meta_file_is_named_and_the_others_still_count(tmp_path: Path) -> None:
    """pegasus-integrity logs a .meta it cannot parse and goes on with the others: so
    does ferry, so that "no sha256 is known" comes with the reason."""
    (tmp_path / "bad.meta").write_text('[{"_id": "f.a",]')
    (tmp_path / "obj.meta").write_text(json.dumps(meta_entry("f.a", "0" * 64)))
    (tmp_path / "good.meta").write_text(json.dumps([meta_entry("f.a", sha(b"abc"))]))
    p = transfer(stdin=verify_list(tmp_path, "f.a", f"file://{tmp_path}/out/f.a"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    warnings = [ln for ln in p.stderr.splitlines() if "WARNING" in ln and ".meta" in ln]
    assert len(warnings) == 2, p.stderr
    assert "bad.meta: skipped: " in warnings[0]
    assert "obj.meta: skipped: a .meta file holds a JSON array, not an object" in warnings[1]


def test_meta_with_a_value_that_is_no_sha256_fails_only_that_transfer(tmp_path: Path) -> None:
    """pegasus-integrity fails such a file (the value never equals a sum); ferry names the
    .meta file and the value, and still does the rest of the list."""
    (tmp_path / "job.meta").write_text(
        json.dumps([meta_entry("bad", "abc"), meta_entry("good", sha(b"abc"))])
    )
    (tmp_path / "a").write_bytes(b"abc")
    lst = [
        entry(n, str(tmp_path / "a"), f"file://{tmp_path}/o/{n}", verify_checksum_remote=True)
        for n in ("bad", "good")
    ]
    p = transfer("--json", stdin=json.dumps(lst), cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    bad, good = json.loads(p.stdout)["transfers"]
    assert good["ok"] and not bad["ok"] and bad["error_type"] == "IntegrityError"
    assert "checksum.value of bad in job.meta is not a sha256: 'abc'" in bad["error"]
    assert (tmp_path / "o" / "good").exists() and not (tmp_path / "o" / "bad").exists()


def test_attributes_with_a_value_that_is_no_sha256_fail_only_that_transfer(
    tmp_path: Path,
) -> None:
    """pegasus-transfer ignores ``attributes``, so a stage-in list whose planner copied a
    bogus catalog sum (``abc123``, the Pegasus docs' example) still moves the other
    files; ferry, which checks the sum, fails that one transfer, naming the value. The
    same sum in upper case with ``sha256:`` is checked."""
    (tmp_path / "a").write_bytes(b"abc")

    def attrs(value: str) -> dict[str, str]:
        return {"checksum.type": "sha256", "checksum.value": value}

    lst = [
        entry("bad", str(tmp_path / "a"), f"file://{tmp_path}/o/bad", attributes=attrs("abc123")),
        entry(
            "good",
            str(tmp_path / "a"),
            f"file://{tmp_path}/o/good",
            attributes=attrs("SHA256:" + sha(b"abc").upper()),
        ),
        entry(
            "wrong", str(tmp_path / "a"), f"file://{tmp_path}/o/wrong", attributes=attrs("0" * 64)
        ),
    ]
    p = transfer("--json", stdin=json.dumps(lst))
    assert p.returncode == 1, p.stderr
    bad, good, wrong = json.loads(p.stdout)["transfers"]
    assert good["ok"] and good["expected_sha256"] == sha(b"abc")
    assert not bad["ok"] and "attributes checksum.value: 'abc123' is not a sha256" in bad["error"]
    assert not wrong["ok"] and "sha256 mismatch for wrong" in wrong["error"]
    assert sorted(os.listdir(tmp_path / "o")) == ["good"]


def test_meta_files_that_disagree_fail_the_check(tmp_path: Path) -> None:
    """Two .meta files with different sums for one LFN: pegasus-integrity's pick depends
    on the directory's listing order; ferry trusts neither and names both, even when the
    file matches one of them. The same sum spelled twice is no conflict."""
    good, bad = sha(b"abc"), "0" * 64
    (tmp_path / "a.meta").write_text(json.dumps([meta_entry("f.a", good)]))
    (tmp_path / "b.meta").write_text(json.dumps([meta_entry("f.a", bad)]))
    p = transfer(stdin=verify_list(tmp_path, "f.a", f"file://{tmp_path}/out/f.a"), cwd=tmp_path)
    assert p.returncode == 1
    assert f"different sha256 for f.a (a.meta: {good}, b.meta: {bad})" in p.stderr
    assert not (tmp_path / "out").exists()

    (tmp_path / "b.meta").write_text(json.dumps([meta_entry("f.a", "sha256:" + good.upper())]))
    p = transfer(stdin=verify_list(tmp_path, "f.a", f"file://{tmp_path}/out/f.a"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_meta_round_trip_stage_in_then_verified_stage_out(tmp_path: Path) -> None:
    """What ``--meta`` wrote for one job is what the next job's verify_checksum_remote
    checks against, as a parent's .meta is for a stage-out job."""
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "job").mkdir()
    lst = [entry("f.a", str(tmp_path / "a"), f"file://{tmp_path}/scratch/f.a")]
    p = transfer("--meta", str(tmp_path / "job" / "compute.meta"), stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    out = json.dumps(
        [
            entry(
                "f.a",
                f"{tmp_path}/scratch/f.a",
                f"file://{tmp_path}/final/f.a",
                linkage="output",
                verify_checksum_remote=True,
            )
        ]
    )
    assert transfer(stdin=out, cwd=tmp_path / "job").returncode == 0
    (tmp_path / "scratch" / "f.a").write_bytes(b"abd")  # changed on the staging site
    (tmp_path / "final" / "f.a").unlink()
    p = transfer(stdin=out, cwd=tmp_path / "job")
    assert p.returncode == 1 and "sha256 mismatch for f.a" in p.stderr
    assert not (tmp_path / "final" / "f.a").exists()


def test_verify_checksum_remote_of_a_webdav_upload(tmp_path: Path) -> None:
    """Check point 1 over HTTP: a stage-out to WebDAV is checked against the compute
    job's .meta (its sum spelled ``sha256:``); a wrong sum leaves nothing on the server
    and is counted as a failed check in the int.metric line."""
    try:
        dav = start_wsgidav(tmp_path / "dav")
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        meta = tmp_path / "compute.meta"
        meta.write_text(json.dumps([meta_entry("f.a", "sha256:" + sha(b"abc"))]))
        p = transfer(stdin=verify_list(tmp_path, "f.a", f"{dav.url}/run/f.a"), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert (dav.root / "run" / "f.a").read_bytes() == b"abc"

        meta.write_text(json.dumps([meta_entry("f.a", "e" * 64)]))
        p = transfer(stdin=verify_list(tmp_path, "f.a", f"{dav.url}/run/f.b"), cwd=tmp_path)
        assert p.returncode == 1 and "e" * 64 in p.stderr and sha(b"abc") in p.stderr
        assert not (dav.root / "run" / "f.b").exists()
        start, end = "@@@MONITORING_PAYLOAD - START@@@", "@@@MONITORING_PAYLOAD - END@@@"
        line = next(ln for ln in p.stderr.splitlines() if start in ln)
        payload = json.loads(line.split(start)[1].split(end)[0])["payload"][0]
        assert (payload["event"], payload["file_type"]) == ("check", "output")
        assert (payload["succeeded"], payload["failed"]) == (0, 1)
    finally:
        dav.stop()


# -- the worker's check before the job runs -------------------------------------------------


def test_worker_checks_a_symlinked_input_and_records_both_sums(tmp_path: Path) -> None:
    """A linked input (an HTCondor sandbox copy) is checked like a copied one: with a
    wrong sum (spelled ``SHA256:<HEX>``) the job never runs, the worker exits 4 and the
    record names the file and both sums; with none known, it is linked unchecked."""
    (tmp_path / "in.dat").write_bytes(b"abc")
    wrong = "AB" * 32

    def run(sum_: str | None) -> tuple[int, dict]:
        inp = {"lfn": "in.dat", "symlink": True, "sources": [{"url": f"file://{tmp_path}/in.dat"}]}
        if sum_:
            inp["sha256"] = sum_
        spec = {
            "version": 1,
            "id": "job1",
            "executable": "/bin/sh",
            "arguments": ["-c", f"touch {tmp_path}/ran"],
            "inputs": [inp],
        }
        (tmp_path / "job1.json").write_text(json.dumps(spec))
        p = subprocess.run(
            [sys.executable, "-m", "ferry.planner.cli", "worker", str(tmp_path / "job1.json")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "FERRY_WORK_DIR": str(tmp_path)},
        )
        recs = sorted(tmp_path.glob("job1.*.json"), key=os.path.getmtime)
        return p.returncode, json.loads(recs[-1].read_text())

    code, rec = run("SHA256:" + wrong)
    assert code == 4 and not (tmp_path / "ran").exists()
    assert rec["failed_step"] == "integrity"
    (f,) = rec["failures"]
    assert (f["lfn"], f["expected"], f["actual"]) == ("in.dat", wrong.lower(), sha(b"abc"))
    (t,) = rec["transfers"]
    assert t["expected_sha256"] == f"sha256:{wrong.lower()}" and not t["ok"]

    code, rec = run(None)
    assert code == 0 and (tmp_path / "ran").exists()
    (t,) = rec["transfers"]
    assert t["ok"] and t["expected_sha256"] is None
