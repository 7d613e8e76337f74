"""A directory as a ``file://`` source: copied as pegasus-transfer's ``cp -f -R -L``
copies it, all or nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.worker.test_transfer_cli import entry, ferry, sha


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def make_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.dat").write_bytes(os.urandom(5000))
    (src / "sub" / "b.dat").write_bytes(os.urandom(70_000))
    (src / "sub" / "deeper" / "c.dat").write_bytes(b"")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (tmp_path / "outside.dat").write_bytes(b"reached through a link")
    (src / "link.dat").symlink_to(tmp_path / "outside.dat")
    return src


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".ferry-part-" in p.name]


def test_directory_source_is_copied_recursively_with_links_followed(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dest = tmp_path / "out" / "copy"
    lst = [entry("dir", [(f"file://{src}", 100)], f"file://{dest}")]
    p = ferry("transfer", "--json", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    expected = tree(src)
    assert tree(dest) == expected
    assert not (dest / "link.dat").is_symlink()  # -L: the link's target is copied
    assert os.access(dest / "run.sh", os.X_OK)  # modes are kept
    result = json.loads(p.stdout)["transfers"][0]
    assert result["ok"] and result["bytes"] == sum(len(d) for d in expected.values())
    assert result["sha256"] is None  # a directory has no sum of its own
    assert leftovers(dest.parent) == []


def test_directory_destination_is_replaced_whole(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dest = tmp_path / "copy"
    (dest / "sub").mkdir(parents=True)
    (dest / "stale.dat").write_bytes(b"from an earlier run")
    (dest / "a.dat").write_bytes(b"old")
    lst = [entry("dir", [(f"file://{src}", 100)], f"file://{dest}")]
    for _ in range(2):  # and a second run of the same list gives the same tree
        p = ferry("transfer", stdin=json.dumps(lst))
        assert p.returncode == 0, p.stderr
        assert tree(dest) == tree(src)
    assert leftovers(tmp_path) == []


def test_failed_directory_copy_leaves_nothing_and_names_the_file(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    (src / "sub" / "dangling.dat").symlink_to(tmp_path / "missing.dat")
    dest = tmp_path / "out" / "copy"
    lst = [entry("dir", [(f"file://{src}", 100)], f"file://{dest}")]
    p = ferry("transfer", "-m", "1", stdin=json.dumps(lst))
    assert p.returncode == 1
    assert "dangling.dat" in p.stderr
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_failed_directory_copy_keeps_the_previous_copy(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dest = tmp_path / "copy"
    dest.mkdir()
    (dest / "kept.dat").write_bytes(b"previous copy")
    (src / "dangling.dat").symlink_to(tmp_path / "missing.dat")
    lst = [entry("dir", [(f"file://{src}", 100)], f"file://{dest}")]
    p = ferry("transfer", "-m", "1", stdin=json.dumps(lst))
    assert p.returncode == 1
    assert tree(dest) == {"kept.dat": b"previous copy"}
    assert leftovers(tmp_path) == []


def test_directory_with_expected_sha256_fails_clearly(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    p = ferry("transfer", "--sha256", sha(b"x"), str(src), str(tmp_path / "copy"))
    assert p.returncode == 1
    assert "is a directory: a sha256 can only be checked for a file" in p.stderr
    assert not (tmp_path / "copy").exists()


def test_directory_into_itself_is_refused(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    before = tree(src)
    p = ferry("transfer", str(src), str(src / "sub" / "again"))
    assert p.returncode == 1
    assert "into itself" in p.stderr
    assert tree(src) == before


def test_directory_onto_itself_succeeds_without_copying(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    before = tree(src)
    lst = [entry("dir", [(f"file://{src}", 100)], f"file://{src}")]
    p = ferry("transfer", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    assert tree(src) == before


def test_directory_onto_a_file_fails_and_keeps_the_file(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    (tmp_path / "plain.dat").write_bytes(b"keep me")
    lst = [entry("dir", [(f"file://{src}", 100)], f"file://{tmp_path}/plain.dat")]
    p = ferry("transfer", stdin=json.dumps(lst))
    assert p.returncode == 1
    assert "not a directory" in p.stderr
    assert (tmp_path / "plain.dat").read_bytes() == b"keep me"


def test_directory_to_a_remote_destination_fails_at_once(tmp_path: Path) -> None:
    # only file -> file copies take a directory; an upload is refused before any
    # connection (nothing listens on port 1), so no round is spent retrying it
    src = make_source(tmp_path)
    p = ferry("transfer", "-m", "3", str(src), "webdav://127.0.0.1:1/run/copy")
    assert p.returncode == 1
    assert "is a directory, not a file to upload" in p.stderr
    assert "failed after 1 round(s)" in p.stderr


def test_file_onto_a_directory_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "a.dat").write_bytes(b"data")
    (tmp_path / "there" / "inside").mkdir(parents=True)
    lst = [entry("a", [(f"file://{tmp_path}/a.dat", 100)], f"file://{tmp_path}/there")]
    p = ferry("transfer", stdin=json.dumps(lst))
    assert p.returncode == 1
    assert f"cannot write {tmp_path}/there: a directory is there" in p.stderr
    assert ".ferry-part-" not in p.stderr
    assert [q.name for q in (tmp_path / "there").iterdir()] == ["inside"]
    assert leftovers(tmp_path) == []


def test_worker_stages_a_directory_input(tmp_path: Path) -> None:
    from tests.worker.test_worker import record, worker, write_spec

    src = make_source(tmp_path)
    spec = write_spec(
        tmp_path,
        arguments=["-c", "cat data/sub/b.dat data/a.dat > joined.dat"],
        inputs=[{"lfn": "data", "sources": [{"url": f"file://{src}"}]}],
        outputs=[
            {"lfn": "joined.dat", "destinations": [{"url": f"file://{tmp_path}/out/joined.dat"}]}
        ],
    )
    p = worker(spec)
    assert p.returncode == 0, p.stderr
    expected = (src / "sub" / "b.dat").read_bytes() + (src / "a.dat").read_bytes()
    assert (tmp_path / "out" / "joined.dat").read_bytes() == expected
    staged = next(t for t in record(tmp_path)["transfers"] if t["lfn"] == "data")
    assert staged["ok"] and staged["sha256"] is None
    assert staged["bytes"] == sum(len(d) for d in tree(src).values())
