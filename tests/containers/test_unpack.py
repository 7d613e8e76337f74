"""Unpacking docker-archives: layers, whiteouts, and the refusal of unsafe members."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from ferry.containers import (
    ImageError,
    UnsafeImage,
    read_image_config,
    read_manifest,
    unpack_docker_archive,
)
from ferry.plugins.errors import IntegrityError, PermanentError
from tests.containers.images import (
    APPLETS,
    Entry,
    build_busybox_archive,
    busybox_layers,
    d,
    f,
    hard,
    make_layer,
    sym,
    write_docker_archive,
)

FORMATS = {
    "classic": {},
    "gzip-layer": {"gzip_layer": True},
    "oci-layout": {"oci_layout": True, "gzip_layer": True},
    "gzipped-archive": {"compress_archive": True},
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_layers_whiteouts_and_opaque_dirs(tmp_path: Path, fmt: str) -> None:
    archive = build_busybox_archive(tmp_path / "busybox.tar", **FORMATS[fmt])
    root = tmp_path / "rootfs"
    config = unpack_docker_archive(archive.path, root)

    # layer 1
    busybox = root / "bin" / "busybox"
    assert busybox.read_bytes() == Path("/bin/busybox").read_bytes()
    assert os.access(busybox, os.X_OK)
    for applet in APPLETS:
        assert os.readlink(root / "bin" / applet) == "busybox"
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert (root / "etc" / "kept.txt").read_text() == "still here\n"
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    # layer 2: a new file, a whiteout, an opaque directory, a hard link
    assert (root / "hello.txt").read_text() == "hello from layer 2\n"
    assert not (root / "etc" / "removed.txt").exists()
    assert not (root / "etc" / ".wh.removed.txt").exists()
    assert sorted(os.listdir(root / "data")) == ["new.txt"]
    assert (root / "bin" / "busybox-hardlink").stat().st_ino == busybox.stat().st_ino
    # a file written through an in-image relative symlink (lib -> usr/lib) lands inside
    assert (root / "usr" / "lib" / "through-inside-symlink.txt").is_file()
    # setuid bits are dropped
    assert stat.S_IMODE((root / "bin" / "suid-tool").stat().st_mode) == 0o755
    # the config
    assert config.env_dict()["FERRY_IMAGE_VAR"] == "from-image"
    assert config.cmd == ("sh",)
    assert read_image_config(archive.path) == config
    assert read_manifest(archive.path).config_digest == archive.config_digest
    # nothing left beside the result
    assert sorted(os.listdir(tmp_path)) == ["busybox.tar", "rootfs"]


def test_setid_bits_are_kept_only_when_asked(tmp_path: Path) -> None:
    archive = build_busybox_archive(tmp_path / "busybox.tar")
    unpack_docker_archive(archive.path, tmp_path / "root", keep_setid=True)
    assert stat.S_IMODE((tmp_path / "root" / "bin" / "suid-tool").stat().st_mode) == 0o4755


def test_target_must_not_exist(tmp_path: Path) -> None:
    archive = build_busybox_archive(tmp_path / "busybox.tar")
    (tmp_path / "root").mkdir()
    with pytest.raises(FileExistsError):
        unpack_docker_archive(archive.path, tmp_path / "root")


def test_layer_not_matching_the_config_diff_id_is_refused(tmp_path: Path) -> None:
    layers = busybox_layers()
    archive = write_docker_archive(tmp_path / "img.tar", layers, diff_ids=["00" * 32, "11" * 32])
    with pytest.raises(IntegrityError, match="does not match the image config") as exc:
        unpack_docker_archive(archive.path, tmp_path / "root")
    assert exc.value.expected == "00" * 32
    assert sorted(os.listdir(tmp_path)) == ["img.tar"]


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar at all" * 100)
    with pytest.raises(ImageError, match="not a docker-archive"):
        unpack_docker_archive(bad, tmp_path / "root")
    no_manifest = tmp_path / "plain.tar"
    write_docker_archive(tmp_path / "x.tar", [make_layer([f("a", "b")])])
    import tarfile

    with tarfile.open(no_manifest, "w") as tar:
        tar.add(tmp_path / "x.tar", arcname="layer.tar")
    with pytest.raises(ImageError, match="no manifest.json"):
        unpack_docker_archive(no_manifest, tmp_path / "root2")
    assert not (tmp_path / "root").exists() and not (tmp_path / "root2").exists()


# -- unsafe archives -----------------------------------------------------------------


def _cases(outside: Path) -> dict[str, tuple[list[list[Entry]], str, str]]:
    """name -> (layers, offending member, words in the reason)."""
    marker = f"ferry-unpack-test-{uuid.uuid4().hex}"
    return {
        "absolute path": ([[f("/etc/" + marker, "x")]], "/etc/" + marker, "absolute path"),
        "dotdot": ([[f("../" + marker, "x")]], "../" + marker, "'..'"),
        "dotdot inside": ([[d("a"), f("a/../../" + marker, "x")]], "a/../../" + marker, "'..'"),
        "write through symlink to /etc": (
            [[sym("etc-link", "/etc"), f(f"etc-link/{marker}", "x")]],
            f"etc-link/{marker}",
            "written through symlink etc-link -> /etc",
        ),
        "write through symlink planted by a lower layer": (
            [[sym("x", str(outside))], [f("x/pwned", "x")]],
            "x/pwned",
            f"symlink x -> {outside}",
        ),
        "write through a directory symlink chain": (
            [[d("a"), sym("a/up", ".."), sym("b", "/tmp")], [f("a/up/b/pwned", "x")]],
            "a/up/b/pwned",
            "symlink b -> /tmp",
        ),
        "hard link outside (relative)": (
            [[hard("hl", "../../etc/passwd")]],
            "hl",
            "hard link target",
        ),
        "hard link outside (absolute)": ([[hard("hl", "/etc/passwd")]], "hl", "absolute path"),
        "hard link through an outside symlink": (
            [[sym("x", str(outside)), hard("hl", "x/secret.txt")]],
            "hl",
            "points outside",
        ),
        "character device": ([[Entry("chr", "dev/null-copy")]], "dev/null-copy", "device"),
        "block device": ([[Entry("blk", "disk")]], "disk", "device"),
        "fifo": ([[Entry("fifo", "pipe")]], "pipe", "fifo"),
        "relative symlink escaping": (
            [[d("a"), sym("a/evil", "../../../etc")]],
            "a/evil",
            "escapes the image root",
        ),
        "symlink chain escaping": (
            [[d("a"), d("a/b"), sym("a/b/up", "../.."), sym("esc", "a/b/up/..")]],
            "esc",
            "escapes the image root",
        ),
        "symlink chain escaping, planted in reverse order": (
            [[sym("esc", "a/b/up/.."), d("a"), d("a/b"), sym("a/b/up", "../..")]],
            "esc",
            "escapes the image root",
        ),
        "whiteout through an outside symlink": (
            [[sym("x", str(outside))], [f("x/.wh.secret.txt")]],
            "x/.wh.secret.txt",
            "whiteout would act through",
        ),
    }


CASE_NAMES = sorted(_cases(Path("/nonexistent")))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_unsafe_member_is_refused_and_nothing_is_left(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host file\n")
    layers, member, reason = _cases(outside)[case]
    work = tmp_path / "work"
    archive = write_docker_archive(work / "evil.tar", [make_layer(entries) for entries in layers])
    target = work / "rootfs"

    with pytest.raises(UnsafeImage) as exc:
        unpack_docker_archive(archive.path, target)

    err = exc.value
    message = str(err)
    assert "\n" not in message
    assert str(archive.path) in message
    assert "layer " in message and repr(member) in message
    assert reason in message, message
    assert err.member == member
    assert isinstance(err, PermanentError)
    # nothing half-unpacked, and nothing written or deleted outside
    assert sorted(os.listdir(work)) == ["evil.tar"]
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "host file\n"
    for p in ("/etc", "/tmp"):
        assert not any(n.startswith("ferry-unpack-test-") for n in os.listdir(p))
        assert not os.path.exists(os.path.join(p, "pwned"))


def test_absolute_symlinks_inside_the_image_are_fine(tmp_path: Path) -> None:
    """/usr/bin/awk -> /etc/alternatives/awk is everyday: kept, read as inside the image."""
    archive = write_docker_archive(
        tmp_path / "img.tar",
        [
            make_layer(
                [
                    d("etc"),
                    d("etc/alternatives"),
                    sym("etc/alternatives/awk", "/bin/gawk"),
                    d("usr"),
                    d("usr/bin"),
                    sym("usr/bin/awk", "/etc/alternatives/awk"),
                    sym("var-run", "/run"),
                ]
            )
        ],
    )
    unpack_docker_archive(archive.path, tmp_path / "root")
    assert os.readlink(tmp_path / "root" / "usr" / "bin" / "awk") == "/etc/alternatives/awk"


def test_later_layer_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = write_docker_archive(
        tmp_path / "img.tar",
        [make_layer([sym("conf", str(outside / "conf"))]), make_layer([f("conf", "new\n")])],
    )
    unpack_docker_archive(archive.path, tmp_path / "root")
    conf = tmp_path / "root" / "conf"
    assert not conf.is_symlink() and conf.read_text() == "new\n"
    assert os.listdir(outside) == []


def test_zstd_layers_are_reported(tmp_path: Path) -> None:
    archive = write_docker_archive(
        tmp_path / "img.tar", [b"\x28\xb5\x2f\xfd" + b"\0" * 600], diff_ids=["00" * 32]
    )
    with pytest.raises(ImageError, match="zstd"):
        unpack_docker_archive(archive.path, tmp_path / "root")
    assert not (tmp_path / "root").exists()
