"""Safe unpacking of docker-archive tars (what ``docker save`` writes).

An archive holds ``manifest.json`` (a list of ``{"Config", "RepoTags",
"Layers"}``), the image config JSON, and the layers: tars, optionally
gzip/bzip2/xz compressed, either as ``<id>/layer.tar`` (the classic layout) or
as OCI blobs ``blobs/sha256/<hex>`` (Docker 25+). The archive as a whole may
be compressed too.

:func:`unpack_docker_archive` applies the layers in order into a fresh
temporary directory beside the target, then renames it into place; on any
error the temporary directory is removed, so nothing half-unpacked remains.

Layer semantics (OCI image spec): ``.wh.<name>`` deletes ``<name>`` of lower
layers; ``.wh..wh..opq`` in a directory hides everything lower layers put in
it; other ``.wh..wh.*`` entries (aufs metadata) are ignored. A later entry
replaces an earlier one, except that a directory merges with a directory.

Safety rules -- a member is refused (:class:`UnsafeImage`, one line naming the
archive, the layer and the member) when it:

* has an absolute path or a ``..`` component;
* is a character or block device or a fifo (or any type but file, directory,
  symlink, hard link);
* is a symlink whose target, resolved relative to the link's directory with
  absolute targets taken relative to the image root (as inside the container),
  climbs above the root -- following symlinks already unpacked;
* is a hard link to an absolute path, through ``..``, or to something missing;
* would be written (or whited-out) through a symlink planted by an earlier
  member or layer that points outside the root (absolute targets count as
  outside here: on the host they are).

Paths are resolved by this module, component by component, never by letting
the kernel follow a symlink inside the tree (files are created with
``O_NOFOLLOW | O_EXCL``). After the last layer every symlink is checked again,
since a later symlink can change where an earlier one leads.

Ownership and permissions: files belong to the user who unpacks (tar uid/gid
are ignored, root or not); setuid/setgid bits are dropped unless
``keep_setid=True``; directories get ``u+rwx`` and files ``u+r`` so the owner
can always read and remove the tree; extended attributes (file capabilities
among them) are not restored.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import logging
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ferry.plugins.errors import IntegrityError, PermanentError

__all__ = [
    "ArchiveManifest",
    "ImageConfig",
    "ImageError",
    "UnsafeImage",
    "read_image_config",
    "read_manifest",
    "unpack_docker_archive",
]

log = logging.getLogger("ferry.containers")

_MAX_JSON = 16 * 1024 * 1024  # manifest.json and config JSON are small
_MAX_SYMLINK_HOPS = 40


class ImageError(PermanentError):
    """The image is malformed or cannot be used (not a refusal for safety)."""


class UnsafeImage(ImageError):
    """A member of an image would escape the root or create a device: refused."""

    def __init__(self, archive: str, layer: str, member: str, reason: str) -> None:
        super().__init__(
            f"refusing container image {archive}: layer {layer}: member {member!r}: {reason}",
            url=archive,
        )
        self.archive = archive
        self.layer = layer
        self.member = member
        self.reason = reason


@dataclass(frozen=True)
class ImageConfig:
    """What the image says about running it (from the image config JSON)."""

    #: ``KEY=VALUE`` strings, in order
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""

    def env_dict(self) -> dict[str, str]:
        """``env`` as a dict (a later duplicate wins)."""
        out: dict[str, str] = {}
        for item in self.env:
            key, sep, value = item.partition("=")
            if key and sep:
                out[key] = value
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "Env": list(self.env),
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "WorkingDir": self.workdir,
            "User": self.user,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageConfig:
        """From a docker image config (``{"config": {...}}``) or its ``config`` part."""
        cfg = data.get("config") if isinstance(data.get("config"), Mapping) else data
        if not isinstance(cfg, Mapping):
            cfg = {}

        def strings(value: Any) -> tuple[str, ...]:
            if value is None:
                return ()
            if isinstance(value, str):
                return (value,)
            if isinstance(value, list):
                return tuple(str(v) for v in value)
            return ()

        return cls(
            env=strings(cfg.get("Env")),
            entrypoint=strings(cfg.get("Entrypoint")),
            cmd=strings(cfg.get("Cmd")),
            workdir=str(cfg.get("WorkingDir") or ""),
            user=str(cfg.get("User") or ""),
        )


@dataclass(frozen=True)
class ArchiveManifest:
    """The first image of a docker-archive's ``manifest.json``, with its config."""

    config_name: str
    #: sha256 of the config JSON: the image ID docker and podman give the image
    config_digest: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...]
    #: sha256 of each uncompressed layer, from the config's ``rootfs.diff_ids``
    diff_ids: tuple[str, ...]
    config: ImageConfig


# -- reading the archive -------------------------------------------------------


def _norm_member(name: str) -> str:
    name = posixpath.normpath(name.lstrip("/")) if name else ""
    return "" if name == "." else name


class _Archive:
    """An open docker-archive with its member index."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self.tar = tarfile.open(self.path, "r:*")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise ImageError(f"container image {self.path} does not exist") from None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ImageError(
                f"container image {self.path} is not a docker-archive (not a tar: {exc})"
            ) from exc
        try:
            self.index = {_norm_member(m.name): m for m in self.tar.getmembers()}
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            self.tar.close()
            raise ImageError(f"container image {self.path} is truncated or corrupt: {exc}") from exc

    def close(self) -> None:
        self.tar.close()

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def member(self, name: str, what: str) -> tarfile.TarInfo:
        key = _norm_member(name)
        if not key or key.startswith("../"):
            raise ImageError(f"container image {self.path}: bad {what} path {name!r}")
        info = self.index.get(key)
        if info is None:
            raise ImageError(f"container image {self.path}: {what} {name!r} is missing")
        return info

    def open(self, name: str, what: str) -> IO[bytes]:
        info = self.member(name, what)
        try:
            fobj = self.tar.extractfile(info)
        except (tarfile.TarError, KeyError) as exc:
            raise ImageError(
                f"container image {self.path}: cannot read {what} {name!r}: {exc}"
            ) from exc
        if fobj is None:
            raise ImageError(f"container image {self.path}: {what} {name!r} is not a file")
        return fobj

    def read_json(self, name: str, what: str) -> tuple[Any, bytes]:
        info = self.member(name, what)
        if info.size > _MAX_JSON:
            raise ImageError(f"container image {self.path}: {what} {name!r} is too large")
        data = self.open(name, what).read()
        try:
            return json.loads(data), data
        except ValueError as exc:
            raise ImageError(
                f"container image {self.path}: {what} {name!r} is not JSON: {exc}"
            ) from exc

    def manifest(self) -> ArchiveManifest:
        if "manifest.json" not in self.index:
            raise ImageError(
                f"container image {self.path} has no manifest.json (not a docker-archive, or"
                " one from docker < 1.10)"
            )
        doc, _ = self.read_json("manifest.json", "manifest")
        if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
            raise ImageError(f"container image {self.path}: manifest.json lists no image")
        entry = doc[0]
        config_name = entry.get("Config")
        layers = entry.get("Layers")
        if (
            not isinstance(config_name, str)
            or not isinstance(layers, list)
            or not all(isinstance(x, str) for x in layers)
        ):
            raise ImageError(f"container image {self.path}: manifest.json needs Config and Layers")
        config, raw = self.read_json(config_name, "config")
        if not isinstance(config, dict):
            raise ImageError(
                f"container image {self.path}: config {config_name!r} is not an object"
            )
        rootfs = config.get("rootfs")
        if not isinstance(rootfs, dict):
            rootfs = {}
        diff_ids = tuple(
            d[len("sha256:") :]
            for d in (rootfs.get("diff_ids") or [])
            if isinstance(d, str) and d.startswith("sha256:")
        )
        tags = entry.get("RepoTags") or []
        return ArchiveManifest(
            config_name=config_name,
            config_digest=hashlib.sha256(raw).hexdigest(),
            layers=tuple(layers),
            repo_tags=tuple(t for t in tags if isinstance(t, str)),
            diff_ids=diff_ids,
            config=ImageConfig.from_json(config),
        )


def read_manifest(archive: str | os.PathLike[str]) -> ArchiveManifest:
    """Read a docker-archive's manifest and config (the first image listed)."""
    with _Archive(archive) as arc:
        return arc.manifest()


def read_image_config(archive: str | os.PathLike[str]) -> ImageConfig:
    """The image config (Env, Entrypoint, Cmd, WorkingDir, User) of a docker-archive."""
    return read_manifest(archive).config


class _HashingReader:
    """Pass reads through and hash what went by."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _decompressed(fobj: IO[bytes], archive: str, layer: str) -> IO[bytes]:
    head = fobj.read(6)
    fobj.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fobj, mode="rb")  # type: ignore[return-value]
    if head[:3] == b"BZh":
        return bz2.BZ2File(fobj)  # type: ignore[return-value]
    if head == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(fobj)  # type: ignore[return-value]
    if head[:4] == b"\x28\xb5\x2f\xfd":
        raise ImageError(
            f"container image {archive}: layer {layer} is zstd-compressed, which ferry"
            " cannot unpack (use a gzip or uncompressed docker-archive)"
        )
    return fobj


# -- resolving paths inside the tree ---------------------------------------------


class _Escape(Exception):
    """A path leaves the image root; the message says how."""


class _Tree:
    """The directory being unpacked into, and the rules for writing into it."""

    def __init__(self, root: str, archive: str, keep_setid: bool) -> None:
        self.root = root
        self.archive = archive
        self.keep_setid = keep_setid
        self.layer = ""
        self.this_layer: set[str] = set()
        self.dirs: dict[str, tuple[int, float | None]] = {}

    def refuse(self, member: str, reason: str) -> UnsafeImage:
        return UnsafeImage(self.archive, self.layer, member, reason)

    def bad(self, member: str, reason: str) -> ImageError:
        return ImageError(
            f"container image {self.archive}: layer {self.layer}: member {member!r}: {reason}"
        )

    def walk(self, parts: list[str], *, follow_last: bool, host: bool) -> list[str]:
        """Resolve ``parts`` (relative to the root) the way the kernel would.

        Symlinks already in the tree are followed. ``..`` above the root
        raises :class:`_Escape`; so does an absolute symlink target when
        ``host`` is true (on the host it leads out of the tree), while with
        ``host`` false it restarts at the root, as it would inside the
        container. Missing components are taken as they are.
        """
        resolved: list[str] = []
        todo = list(parts)
        hops = 0
        via = ""
        while todo:
            comp = todo.pop(0)
            if comp in ("", "."):
                continue
            if comp == "..":
                if not resolved:
                    raise _Escape(
                        "'..' climbs above the image root"
                        + (f" (through symlink {via})" if via else "")
                    )
                resolved.pop()
                continue
            path = os.path.join(self.root, *resolved, comp)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                resolved.append(comp)  # not there (yet): taken as it is
                continue
            if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise _Escape("too many levels of symbolic links")
                target = os.readlink(path)
                via = f"{'/'.join([*resolved, comp])} -> {target}"
                if target.startswith("/"):
                    if host:
                        raise _Escape(f"symlink {via}, which points outside the image root")
                    resolved = []
                todo = target.split("/") + todo
                continue
            resolved.append(comp)
        return resolved

    def mark(self, rel_parts: list[str]) -> None:
        for i in range(1, len(rel_parts) + 1):
            self.this_layer.add("/".join(rel_parts[:i]))

    def parent_dir(self, name: str, comps: list[str]) -> list[str]:
        """Resolve and create the parent directory of a member; refuse escapes."""
        try:
            resolved = self.walk(comps, follow_last=True, host=True)
        except _Escape as exc:
            raise self.refuse(name, f"would be written through {exc}") from None
        cur = self.root
        for i, comp in enumerate(resolved):
            cur = os.path.join(cur, comp)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                self.dirs.setdefault("/".join(resolved[: i + 1]), (0o755, None))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise self.bad(name, f"parent {'/'.join(resolved[: i + 1])} is not a directory")
        return resolved

    @staticmethod
    def remove(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    # -- members -------------------------------------------------------------

    def apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = m.name
        if name.startswith("/"):
            raise self.refuse(name, "absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(name, "path has a '..' component")
        if not parts:  # the root directory itself
            return
        base = parts[-1]
        if base.startswith(".wh."):
            self.whiteout(name, parts)
            return
        if any(p.startswith(".wh.") for p in parts[:-1]):
            raise self.bad(name, "a whiteout used as a directory")
        if m.ischr() or m.isblk():
            raise self.refuse(name, "device file (character or block device)")
        if m.isfifo():
            raise self.refuse(name, "fifo (named pipe)")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise self.refuse(name, f"unsupported member type {m.type!r}")

        parent = self.parent_dir(name, parts[:-1])
        rel_parts = [*parent, base]
        rel = "/".join(rel_parts)
        path = os.path.join(self.root, rel)
        self.mark(rel_parts)

        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
            self.remove(path)  # a later entry replaces (never writes through) an earlier one
            existing = None

        if m.isdir():
            if existing is None:
                os.mkdir(path, 0o700)
            self.dirs[rel] = (m.mode, m.mtime)
        elif m.isreg():
            self.write_file(tar, m, path)
        elif m.issym():
            self.check_symlink(name, parent, m.linkname)
            os.symlink(m.linkname, path)
            self.set_mtime(path, m.mtime)
        else:  # hard link
            target = self.hardlink_target(name, m.linkname)
            os.link(target, path, follow_symlinks=False)

    def write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, path: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            src = tar.extractfile(m)
            if src is not None:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = m.mode & (0o7777 if self.keep_setid else 0o777)
            os.fchmod(out.fileno(), mode | 0o400)
        self.set_mtime(path, m.mtime)

    @staticmethod
    def set_mtime(path: str, mtime: float | None) -> None:
        if mtime is None:
            return
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(path, (mtime, mtime), follow_symlinks=False)

    def check_symlink(self, name: str, parent: list[str], target: str) -> None:
        if not target:
            raise self.bad(name, "symlink with an empty target")
        start = [] if target.startswith("/") else list(parent)
        try:
            self.walk([*start, *target.split("/")], follow_last=True, host=False)
        except _Escape as exc:
            raise self.refuse(
                name, f"symlink to {target!r} escapes the image root: {exc}"
            ) from None

    def hardlink_target(self, name: str, linkname: str) -> str:
        if linkname.startswith("/"):
            raise self.refuse(name, f"hard link to absolute path {linkname!r}")
        parts = [p for p in linkname.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise self.refuse(name, f"hard link target {linkname!r} escapes the image root")
        try:
            resolved = self.walk(parts, follow_last=False, host=True)
        except _Escape as exc:
            raise self.refuse(name, f"hard link target {linkname!r} goes through {exc}") from None
        target = os.path.join(self.root, *resolved)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise self.bad(name, f"hard link target {linkname!r} does not exist") from None
        if stat.S_ISDIR(st.st_mode):
            raise self.bad(name, f"hard link to directory {linkname!r}")
        return target

    def whiteout(self, name: str, parts: list[str]) -> None:
        base = parts[-1]
        try:
            parent = self.walk(parts[:-1], follow_last=True, host=True)
        except _Escape as exc:
            raise self.refuse(name, f"whiteout would act through {exc}") from None
        pdir = os.path.join(self.root, *parent)
        try:
            if not stat.S_ISDIR(os.lstat(pdir).st_mode):
                return
        except FileNotFoundError:
            return
        if base == ".wh..wh..opq":
            self.opaque(parent)
            return
        if base.startswith(".wh..wh."):
            return  # aufs bookkeeping (.wh..wh.plnk, ...)
        victim = base[len(".wh.") :]
        if victim in ("", ".", ".."):
            raise self.bad(name, "malformed whiteout")
        rel = "/".join([*parent, victim])
        if rel in self.this_layer:
            return  # only lower layers are whited out
        self.remove(os.path.join(pdir, victim))

    def opaque(self, parent: list[str]) -> None:
        """Remove everything in ``parent`` that this layer did not put there."""
        pdir = os.path.join(self.root, *parent)
        for entry in list(os.scandir(pdir)):
            rel = "/".join([*parent, entry.name])
            if rel in self.this_layer:
                if entry.is_dir(follow_symlinks=False):
                    self.opaque([*parent, entry.name])
            else:
                self.remove(entry.path)

    # -- after the last layer ----------------------------------------------------

    def finish(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):
            for entry in (*dirnames, *filenames):
                path = os.path.join(dirpath, entry)
                if not os.path.islink(path):
                    continue
                rel = os.path.relpath(path, self.root)
                parent = [] if os.path.dirname(rel) == "" else os.path.dirname(rel).split("/")
                target = os.readlink(path)
                start = [] if target.startswith("/") else parent
                try:
                    self.walk([*start, *target.split("/")], follow_last=True, host=False)
                except _Escape as exc:
                    self.layer = "(after the last layer)"
                    raise self.refuse(
                        rel, f"symlink to {target!r} escapes the image root: {exc}"
                    ) from None
        setid = 0o7777 if self.keep_setid else 0o1777
        for rel in sorted(self.dirs, key=lambda r: r.count("/"), reverse=True):
            mode, mtime = self.dirs[rel]
            path = os.path.join(self.root, rel)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
            except FileNotFoundError:
                continue
            os.chmod(path, (mode & setid) | 0o700)
            self.set_mtime(path, mtime)
        os.chmod(self.root, 0o755)


# -- the entry point ------------------------------------------------------------------


def unpack_docker_archive(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    keep_setid: bool = False,
    verify_layers: bool = True,
) -> ImageConfig:
    """Unpack ``archive`` (a docker-archive) into the new directory ``target``.

    :param keep_setid: keep setuid/setgid bits (dropped by default)
    :param verify_layers: check each uncompressed layer against the config's
        ``rootfs.diff_ids`` when the config lists one per layer
    :return: the image config (Env, Entrypoint, Cmd, WorkingDir, User)
    :raises UnsafeImage: a member breaks a safety rule (see the module docstring)
    :raises ImageError: the archive is malformed
    :raises FileExistsError: ``target`` already exists
    """
    archive = os.fspath(archive)
    target_path = Path(target)
    if os.path.lexists(target_path):
        raise FileExistsError(f"{target_path} already exists")
    target_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix=f".{target_path.name}.unpack-", dir=target_path.parent)
    try:
        with _Archive(archive) as arc:
            manifest = arc.manifest()
            tree = _Tree(tmp, archive, keep_setid)
            check = verify_layers and len(manifest.diff_ids) == len(manifest.layers)
            for i, layer_name in enumerate(manifest.layers):
                tree.layer = f"{i + 1}/{len(manifest.layers)} ({layer_name})"
                tree.this_layer = set()
                digest = _apply_layer(arc, tree, layer_name)
                if check and digest != manifest.diff_ids[i]:
                    raise IntegrityError(
                        f"container image {archive}: layer {tree.layer} does not match the"
                        f" image config (diff_id sha256:{manifest.diff_ids[i]}, got"
                        f" sha256:{digest})",
                        expected=manifest.diff_ids[i],
                        actual=digest,
                        url=archive,
                    )
            tree.finish()
        os.rename(tmp, target_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "unpacked %s (%d layers) into %s in %.1f s",
        archive,
        len(manifest.layers),
        target_path,
        time.monotonic() - started,
    )
    return manifest.config


def _apply_layer(arc: _Archive, tree: _Tree, layer_name: str) -> str:
    """Apply one layer; return the sha256 of its uncompressed tar."""
    fobj = arc.open(layer_name, "layer")
    stream = _decompressed(fobj, arc.path, tree.layer)
    reader = _HashingReader(stream)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                tree.apply(tar, member)
        reader.drain()
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile) as exc:
        raise ImageError(
            f"container image {arc.path}: layer {tree.layer} is truncated or corrupt: {exc}"
        ) from exc
    except OSError as exc:
        raise PermanentError(
            f"container image {arc.path}: layer {tree.layer}: cannot unpack into {tree.root}: {exc}"
        ) from exc
    return reader.hash.hexdigest()
