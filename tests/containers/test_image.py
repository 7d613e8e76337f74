"""Image references: kinds, specs, registry references."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ferry.containers import ImageSpec, guess_kind, is_registry_reference
from ferry.plugins.errors import ConfigError

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("docker://busybox:1.36", "docker"),
        ("DOCKER://busybox", "docker"),
        ("library://alpine:latest", "library"),
        ("oras://ghcr.io/x/y:1", "oras"),
        ("shub://vsoch/hello", "shub"),
        ("https://example.org/images/tool.sif", "sif"),
        ("https://example.org/images/tool.SIF?sig=abc", "sif"),
        ("/cvmfs/x/old.simg", "sif"),
        ("s3://bucket/img.tar", "docker-archive"),
        ("http://h/img.tar.gz", "docker-archive"),
        ("file:///data/img.tgz", "docker-archive"),
        ("img.tar.xz", "docker-archive"),
        ("/cvmfs/unpacked.opensciencegrid.org/x/y:latest/", "dir"),
    ],
)
def test_guess_kind(image: str, kind: str) -> None:
    assert guess_kind(image) == kind


def test_a_local_directory_is_a_dir_image(tmp_path: Path) -> None:
    assert guess_kind(str(tmp_path)) == "dir"
    assert guess_kind(f"file://{tmp_path}") == "dir"


def test_unknown_kind_asks_for_container_kind() -> None:
    with pytest.raises(ConfigError, match=r"container\.kind") as exc:
        guess_kind("https://user:s3cret@example.org/image")
    assert "s3cret" not in str(exc.value)


def test_spec_validates_kind_and_sha256() -> None:
    spec = ImageSpec("docker://x", sha256="SHA256:" + SHA.upper(), runtime=" Apptainer ")
    assert spec.sha256 == SHA
    assert spec.runtime == "apptainer"
    with pytest.raises(ConfigError, match="container.kind"):
        ImageSpec("x.tar", kind="vm")
    with pytest.raises(ConfigError, match="container.sha256"):
        ImageSpec("x.tar", sha256="1234")
    with pytest.raises(ConfigError, match="container.image"):
        ImageSpec("  ")


def test_spec_from_jobspec_container_object_or_mapping() -> None:
    obj = SimpleNamespace(
        image="https://h/a/tool.sif", kind=None, sha256=SHA, runtime=None, mounts=["/d"], name=None
    )
    spec = ImageSpec.from_container(obj)
    assert (spec.image, spec.resolved_kind, spec.sha256, spec.mounts) == (
        "https://h/a/tool.sif",
        "sif",
        SHA,
        ["/d"],
    )
    assert spec.basename == "tool.sif"
    spec = ImageSpec.from_container({"image": "docker://busybox", "name": "bb"})
    assert spec.resolved_kind == "docker" and spec.basename == "bb"


def test_registry_references() -> None:
    assert is_registry_reference("docker://busybox")
    assert is_registry_reference(ImageSpec("library://a/b/c"))
    assert not is_registry_reference(ImageSpec("https://h/x.sif"))
    assert not is_registry_reference(ImageSpec("/data/x", kind="docker-archive"))


def test_display_masks_secrets() -> None:
    spec = ImageSpec("https://alice:pw@h/x.tar?X-Amz-Signature=deadbeef")
    assert "pw" not in spec.display and "deadbeef" not in spec.display
