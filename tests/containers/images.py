"""Build docker-archive tars in tests, the way ``docker save`` writes them.

The busybox image needs Debian's ``busybox-static`` (``/bin/busybox``, a
static binary, so the image needs no libraries).

Layer 1: ``bin/busybox`` and applet symlinks, ``etc/passwd``, ``etc/group``,
``tmp`` (1777), a setuid file, ``etc/removed.txt``, ``data/old1.txt``,
``data/sub/old2.txt``,
``bin/busybox-hardlink`` (a hard link), ``lib -> usr/lib``.
Layer 2: ``hello.txt``, a whiteout of ``etc/removed.txt``, ``data/`` made
opaque with ``data/new.txt``, a file written through ``lib``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"
APPLETS = (
    "sh",
    "echo",
    "cat",
    "ls",
    "sha256sum",
    "sleep",
    "env",
    "id",
    "true",
    "false",
    "pwd",
    "wc",
    "test",
    "mkdir",
    "rm",
    "printf",
)
MTIME = 1_700_000_000  # fixed, so the archives are byte-for-byte reproducible
IMAGE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "FERRY_IMAGE_VAR=from-image",
)


@dataclass(frozen=True)
class Entry:
    """One tar member: kind is file, dir, symlink, hardlink, chr, blk or fifo."""

    kind: str
    name: str
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


def f(name: str, data: bytes | str = b"", mode: int = 0o644) -> Entry:
    return Entry("file", name, data.encode() if isinstance(data, str) else data, mode)


def d(name: str, mode: int = 0o755) -> Entry:
    return Entry("dir", name, mode=mode)


def sym(name: str, target: str) -> Entry:
    return Entry("symlink", name, mode=0o777, target=target)


def hard(name: str, target: str) -> Entry:
    return Entry("hardlink", name, target=target)


def make_layer(entries: Iterable[Entry]) -> bytes:
    """An uncompressed layer tar holding ``entries`` in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime = MTIME
            info.mode = e.mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            data = None
            if e.kind == "file":
                info.type = tarfile.REGTYPE
                info.size = len(e.data)
                data = io.BytesIO(e.data)
            elif e.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
            elif e.kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = e.target
            elif e.kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            elif e.kind == "blk":
                info.type = tarfile.BLKTYPE
                info.devmajor, info.devminor = 8, 0
            elif e.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                raise ValueError(e.kind)
            tar.addfile(info, data)
    return buf.getvalue()


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str
    #: sha256 of the config JSON: the image ID docker/podman give it
    config_digest: str
    diff_ids: tuple[str, ...]


def write_docker_archive(
    path: Path,
    layers: Sequence[bytes],
    *,
    gzip_layers: Iterable[int] = (),
    oci_layout: bool = False,
    env: Sequence[str] = IMAGE_ENV,
    cmd: Sequence[str] = ("sh",),
    repo_tag: str = "ferry-test/busybox:latest",
    compress_archive: bool = False,
    diff_ids: Sequence[str] | None = None,
) -> Archive:
    """Write a docker-archive: ``manifest.json``, the config, and the layers.

    The classic layout (``<id>/layer.tar``, ``<id>/VERSION``, ``<id>/json``,
    ``<config-sha>.json``, ``repositories``) as docker < 25 writes it, or with
    ``oci_layout`` the Docker 25+ one (``blobs/sha256/<hex>``, ``index.json``,
    ``oci-layout``, plus ``manifest.json``). ``gzip_layers`` are indexes of
    layers stored gzip-compressed.
    """
    gz = set(gzip_layers)
    real_diff_ids = [hashlib.sha256(layer).hexdigest() for layer in layers]
    stored = [gzip.compress(layer, mtime=0) if i in gz else layer for i, layer in enumerate(layers)]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": list(env),
            "Cmd": list(cmd),
            "WorkingDir": "/",
            "User": "",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{h}" for h in (diff_ids or real_diff_ids)],
        },
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": "ferry tests"} for _ in layers
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    files: list[tuple[str, bytes]] = []
    if oci_layout:
        layer_names = []
        for blob in stored:
            h = hashlib.sha256(blob).hexdigest()
            layer_names.append(f"blobs/sha256/{h}")
            files.append((f"blobs/sha256/{h}", blob))
        files.append((f"blobs/sha256/{config_digest}", config_bytes))
        oci_manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar"
                    + ("+gzip" if i in gz else ""),
                    "digest": f"sha256:{hashlib.sha256(blob).hexdigest()}",
                    "size": len(blob),
                }
                for i, blob in enumerate(stored)
            ],
        }
        m_bytes = json.dumps(oci_manifest, sort_keys=True).encode()
        m_digest = hashlib.sha256(m_bytes).hexdigest()
        files.append((f"blobs/sha256/{m_digest}", m_bytes))
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{m_digest}",
                    "size": len(m_bytes),
                    "annotations": {"io.containerd.image.name": repo_tag},
                }
            ],
        }
        files.append(("index.json", json.dumps(index).encode()))
        files.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
        config_name = f"blobs/sha256/{config_digest}"
    else:
        layer_names = []
        parent = ""
        for i, blob in enumerate(stored):
            layer_id = hashlib.sha256(f"{parent}|{real_diff_ids[i]}".encode()).hexdigest()
            name = f"{layer_id}/layer.tar"
            layer_names.append(name)
            files.append((f"{layer_id}/VERSION", b"1.0"))
            files.append(
                (f"{layer_id}/json", json.dumps({"id": layer_id, "parent": parent}).encode())
            )
            files.append((name, blob))
            parent = layer_id
        config_name = f"{config_digest}.json"
        files.append((config_name, config_bytes))
        repo, _, tag = repo_tag.rpartition(":")
        files.append(("repositories", json.dumps({repo: {tag: parent}}).encode()))
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]
    files.append(("manifest.json", json.dumps(manifest).encode()))

    path.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs_done: set[str] = set()
        for name, data in files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dname = "/".join(parts[:i])
                if dname not in dirs_done:
                    dirs_done.add(dname)
                    info = tarfile.TarInfo(dname)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = MTIME
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))
    payload = raw.getvalue()
    if compress_archive:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return Archive(
        path=path,
        sha256=hashlib.sha256(payload).hexdigest(),
        config_digest=config_digest,
        diff_ids=tuple(real_diff_ids),
    )


def busybox_layers() -> list[bytes]:
    """The two layers of the test image (see the module docstring)."""
    if not os.path.exists(BUSYBOX):
        raise RuntimeError(
            f"{BUSYBOX} is missing: install Debian's busybox-static (apt-get install -y busybox-static)"
        )
    busybox = Path(BUSYBOX).read_bytes()
    layer1 = [
        d("bin"),
        f("bin/busybox", busybox, 0o755),
        hard("bin/busybox-hardlink", "bin/busybox"),  # docker only links within a layer
        *(sym(f"bin/{a}", "busybox") for a in APPLETS),
        d("etc"),
        f(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        f("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        f("etc/removed.txt", "whited out by layer 2\n"),
        f("etc/kept.txt", "still here\n"),
        d("tmp", 0o1777),
        f("bin/suid-tool", "#!/bin/sh\necho suid\n", 0o4755),
        d("data"),
        f("data/old1.txt", "hidden by the opaque dir\n"),
        d("data/sub"),
        f("data/sub/old2.txt", "hidden too\n"),
        d("usr"),
        d("usr/lib"),
        sym("lib", "usr/lib"),
    ]
    layer2 = [
        f("hello.txt", "hello from layer 2\n"),
        d("etc"),
        f("etc/.wh.removed.txt"),
        d("data"),
        f("data/.wh..wh..opq"),
        f("data/new.txt", "new in layer 2\n"),
        f("lib/through-inside-symlink.txt", "written via lib -> usr/lib\n"),
    ]
    return [make_layer(layer1), make_layer(layer2)]


def build_busybox_archive(
    path: Path,
    *,
    gzip_layer: bool = False,
    oci_layout: bool = False,
    compress_archive: bool = False,
) -> Archive:
    """The busybox test image as a docker-archive at ``path``."""
    return write_docker_archive(
        path,
        busybox_layers(),
        gzip_layers=(1,) if gzip_layer else (),
        oci_layout=oci_layout,
        compress_archive=compress_archive,
    )


def copy_fetch(url: str, dest: str, expected: str | None) -> str:
    """A ``fetch`` for the image cache: copy a file:// URL atomically, return its sha256.

    (The worker passes its transfer engine instead; this one keeps the tests
    free of the worker.)
    """
    assert url.startswith("file://"), url
    src = url[len("file://") :]
    tmp = dest + ".part"
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            fout.write(chunk)
    os.replace(tmp, dest)
    return h.hexdigest()


def slow_counting_fetch(count_file: str, delay: float):  # type: ignore[no-untyped-def]
    """A fetch that records each call in ``count_file`` and takes ``delay`` seconds."""

    def fetch(url: str, dest: str, expected: str | None) -> str:
        import time

        with open(count_file, "a") as fh:
            fh.write(f"{os.getpid()} {url}\n")
        time.sleep(delay)
        return copy_fetch(url, dest, expected)

    return fetch


def which_busybox() -> str | None:
    return BUSYBOX if os.path.exists(BUSYBOX) else shutil.which("busybox")
