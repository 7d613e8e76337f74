"""docker://, shub:// and library:// sources through ``ferry transfer``, as Pegasus writes
a container's stage-in.

docker, apptainer and singularity cannot run on this machine (no daemon, no
setuid runtime, no registry to reach), so the tests put stand-ins for them first
on PATH: shell scripts that record their arguments and write a recognisable
file where the real tool would write the image. That is the narrowest boundary:
everything from the transfer list to the committed, sha256-checked file is
ferry's real code.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.plugins.url import parse_url

DOCKER = """#!/bin/sh
echo "docker $*" >> "$FAKE_LOG"
case "$1" in
  pull)
    if [ -n "$FAKE_FAIL" ]; then
      echo "Using default tag: latest" >&2
      echo "Error response from daemon: manifest for $2 not found: manifest unknown" >&2
      exit 1
    fi
    echo "Status: Downloaded newer image for $2";;
  save) printf 'docker-archive of %s\\n' "$4" > "$3";;
  *) exit 2;;
esac
"""

SIF_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
[ "$1" = pull ] && [ "$2" = --allow-unauthenticated ] || exit 2
printf 'sif of %s\\n' "$4" > "$3"
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A bin directory with the stand-ins; each test links in the ones it wants."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stash = tmp_path / "tools"
    stash.mkdir()
    for name, text in (("docker", DOCKER), ("apptainer", SIF_TOOL), ("singularity", SIF_TOOL)):
        (stash / name).write_text(text)
        (stash / name).chmod(0o755)
    return bin_dir


def offer(bin_dir: Path, *names: str) -> None:
    for name in names:
        (bin_dir / name).symlink_to(bin_dir.parent / "tools" / name)


def transfer(
    tmp_path: Path, bin_dir: Path, entries: list[dict[str, object]], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "transfer", "--json", *args],
        input=json.dumps(entries),
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "FAKE_LOG": str(tmp_path / "calls.log"),
            **env,
        },
    )


def image_entry(src: str, dest: Path, kind: str | None, **extra: object) -> dict[str, object]:
    dest_url: dict[str, object] = {"site_label": "local", "url": f"file://{dest}"}
    if kind is not None:
        dest_url["type"] = kind
    return {
        "type": "transfer",
        "linkage": "input",
        "lfn": dest.name,
        "id": 1,
        "src_urls": [{"site_label": "dockerhub", "url": src}],
        "dest_urls": [dest_url],
        **extra,
    }


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.log").read_text().splitlines()


def test_image_references_keep_their_tags() -> None:
    url = parse_url("docker://ubuntu:latest")  # a tag, not a port
    assert url.raw.split("://", 1)[1] == "ubuntu:latest" and url.port is None
    assert parse_url("docker://localhost:5000/img:1").path == "/img:1"


def test_docker_image_is_pulled_and_saved_as_a_docker_archive(tmp_path: Path, tools: Path) -> None:
    offer(tools, "docker", "apptainer")
    dest = tmp_path / "run" / "centos-base"
    content = b"docker-archive of centos:7\n"
    p = transfer(
        tmp_path, tools, [image_entry("docker://centos:7", dest, "docker", sha256=sha(content))]
    )
    assert p.returncode == 0, p.stderr
    assert dest.read_bytes() == content
    log = calls(tmp_path)
    assert log[0] == "docker pull centos:7"
    assert log[1].startswith("docker save -o ") and log[1].endswith("/image centos:7")
    assert len(log) == 2
    # the pull's scratch directory beside the destination is gone
    assert sorted(os.listdir(dest.parent)) == ["centos-base"]
    assert json.loads(p.stdout)["transfers"][0]["sha256"] == f"sha256:{sha(content)}"


def test_docker_image_for_singularity_and_registry_schemes_go_through_apptainer(
    tmp_path: Path, tools: Path
) -> None:
    offer(tools, "docker", "apptainer")
    out = tmp_path / "out"
    entries = [
        image_entry("docker://ubuntu:22.04", out / "ubuntu.sif", "singularity"),
        image_entry("shub://vsoch/hello-world", out / "hello.sif", None),
        image_entry("library://sylabs/examples/lolcow:latest", out / "cow.sif", None),
    ]
    p = transfer(tmp_path, tools, entries)
    assert p.returncode == 0, p.stderr
    assert (out / "ubuntu.sif").read_text() == "sif of docker://ubuntu:22.04\n"
    assert (out / "hello.sif").read_text() == "sif of shub://vsoch/hello-world\n"
    assert (out / "cow.sif").read_text() == "sif of library://sylabs/examples/lolcow:latest\n"
    log = calls(tmp_path)
    assert len(log) == 3 and all(
        c.startswith("apptainer pull --allow-unauthenticated ") for c in log
    )
    assert sorted(os.listdir(out)) == ["cow.sif", "hello.sif", "ubuntu.sif"]


def test_singularity_where_there_is_no_apptainer(tmp_path: Path, tools: Path) -> None:
    offer(tools, "singularity")
    dest = tmp_path / "out" / "img.sif"
    p = transfer(tmp_path, tools, [image_entry("library://sylabs/examples/lolcow:1.0", dest, None)])
    assert p.returncode == 0, p.stderr
    assert calls(tmp_path)[0].startswith("singularity pull --allow-unauthenticated ")
    assert dest.read_text() == "sif of library://sylabs/examples/lolcow:1.0\n"


@pytest.mark.skipif(
    any(
        os.path.exists(f"{d}/{t}")
        for d in ("/usr/bin", "/bin", "/usr/sbin")
        for t in ("apptainer", "singularity")
    ),
    reason="apptainer or singularity is installed in a system directory",
)
def test_missing_tool_is_named_and_fails_only_that_transfer(tmp_path: Path, tools: Path) -> None:
    (tmp_path / "plain.txt").write_bytes(b"data")
    entries = [
        image_entry("shub://vsoch/hello-world", tmp_path / "out" / "hello.sif", None),
        {
            "type": "transfer",
            "lfn": "plain.txt",
            "id": 2,
            "src_urls": [{"site_label": "local", "url": f"file://{tmp_path}/plain.txt"}],
            "dest_urls": [{"site_label": "local", "url": f"file://{tmp_path}/out/plain.txt"}],
        },
    ]
    p = transfer(tmp_path, tools, entries)  # no stand-in offered, none installed
    assert p.returncode == 1
    [image, plain] = json.loads(p.stdout)["transfers"]
    assert not image["ok"]
    assert "neither apptainer nor singularity could be found on PATH" in image["error"]
    assert len(image["attempts"]) == 1  # permanent: not retried
    assert plain["ok"] and (tmp_path / "out" / "plain.txt").read_bytes() == b"data"
    assert sorted(os.listdir(tmp_path / "out")) == ["plain.txt"]


def test_failed_pull_is_retried_reported_and_leaves_nothing(tmp_path: Path, tools: Path) -> None:
    offer(tools, "docker")
    dest = tmp_path / "out" / "nosuch"
    p = transfer(
        tmp_path,
        tools,
        [image_entry("docker://nosuch/image:9", dest, "docker")],
        "-m",
        "2",
        "--backoff",
        "0.05",
        FAKE_FAIL="1",
    )
    assert p.returncode == 1
    [t] = json.loads(p.stdout)["transfers"]
    assert len(t["attempts"]) == 2  # a registry error is worth another try
    assert (
        "docker pull exited 1: Error response from daemon: manifest for nosuch/image:9"
        in (t["error"])
    )
    assert calls(tmp_path) == ["docker pull nosuch/image:9"] * 2
    assert os.listdir(tmp_path / "out") == []
