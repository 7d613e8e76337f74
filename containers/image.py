"""Container images as data: what a job asks for, and what kind of image it is.

The worker turns the ``container`` section of a job spec into an
:class:`ImageSpec` (see :meth:`ImageSpec.from_container`); everything else in
:mod:`ferry.containers` works on that.

Image kinds
-----------

``docker-archive``
    a ``docker save`` tar (optionally gzip/bzip2/xz compressed as a whole);
    staged into the node cache like any input.
``sif``
    a Singularity/Apptainer image file (``.sif``; ``.simg`` and ``.img`` too);
    staged into the node cache.
``dir``
    an unpacked root filesystem (a "sandbox"), e.g. on CVMFS; used in place.
``docker``, ``library``, ``oras``, ``shub``
    registry references (``docker://...`` and so on); never staged, passed
    to a runtime that can pull them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry.plugins.errors import ConfigError
from ferry.plugins.url import parse_url, redact

__all__ = [
    "FILE_KINDS",
    "KINDS",
    "REGISTRY_KINDS",
    "ImageSpec",
    "guess_kind",
    "is_registry_reference",
    "local_image_path",
    "normalize_sha256",
]

#: every image kind ferry knows
KINDS = frozenset({"docker-archive", "sif", "dir", "docker", "library", "oras", "shub"})
#: kinds that name an image in a registry: never downloaded by ferry
REGISTRY_KINDS = frozenset({"docker", "library", "oras", "shub"})
#: kinds that are one file, staged into the cache
FILE_KINDS = frozenset({"docker-archive", "sif"})

_REGISTRY_SCHEMES = {
    "docker": "docker",
    "library": "library",
    "oras": "oras",
    "shub": "shub",
}
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_SIF_SUFFIXES = (".sif", ".simg", ".img")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(value: str | None, *, where: str = "sha256") -> str | None:
    """``<hex>`` or ``sha256:<hex>`` (any case) -> lowercase hex; None stays None."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _HEX64.match(text):
        raise ConfigError(f"{where}: {value!r} is not a sha256 (64 hex digits)")
    return text


def _scheme(image: str) -> str | None:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", image)
    return match.group(1).lower() if match else None


def local_image_path(image: str) -> str | None:
    """The absolute local path of a plain path or ``file://`` URL, else None."""
    scheme = _scheme(image)
    if scheme is None:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", image):  # e.g. file:/p
            url = parse_url(image)
            return url.path if url.scheme == "file" else None
        return os.path.abspath(image)
    if scheme == "file":
        return parse_url(image).path
    return None


def _path_part(image: str) -> str:
    """The path of an image URL or path, without query string."""
    local = local_image_path(image)
    if local is not None:
        return local
    return image.split("?", 1)[0].split("#", 1)[0]


def guess_kind(image: str) -> str:
    """Tell an image's kind from its reference.

    By scheme (``docker://`` -> ``docker``, ``library://`` -> ``library``,
    ``oras://``, ``shub://``), then by suffix (``.sif``/``.simg``/``.img`` ->
    ``sif``; ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz`` ->
    ``docker-archive``), then a local directory (or a path ending in ``/``) ->
    ``dir``.

    :raises ConfigError: when none of these says what the image is; the
        message asks for ``container.kind``.
    """
    if not image or not image.strip():
        raise ConfigError("container.image is empty")
    scheme = _scheme(image)
    if scheme in _REGISTRY_SCHEMES:
        return _REGISTRY_SCHEMES[scheme]
    path = _path_part(image)
    lower = path.lower().rstrip("/")
    if lower.endswith(_SIF_SUFFIXES):
        return "sif"
    if lower.endswith(_ARCHIVE_SUFFIXES):
        return "docker-archive"
    local = local_image_path(image)
    trailing_slash = image.split("?", 1)[0].endswith("/")
    if trailing_slash or (local is not None and os.path.isdir(local)):
        return "dir"
    raise ConfigError(
        f"cannot tell what kind of container image {redact(image)} is (no known scheme or"
        f" suffix); set container.kind to one of {', '.join(sorted(KINDS))}"
    )


@dataclass
class ImageSpec:
    """The container a job runs in, as the job spec gives it.

    :param image: URL or path of a docker-archive tar, a .sif or an unpacked
        root filesystem directory; or a registry reference (``docker://...``)
    :param kind: one of :data:`KINDS`; None: :func:`guess_kind`
    :param sha256: expected sha256 of the image file (hex or ``sha256:<hex>``)
    :param runtime: the runtime to use (``apptainer``, ``charliecloud``, ...);
        None: the first suitable one the node has
    :param mounts: extra host paths to bind, ``HOST[:CONTAINER[:ro|rw]]``
    :param name: a name for the image in the node cache (default: its basename)
    :param arguments: extra arguments for the runtime, placed before the image
        (Pegasus's ``pegasus.container.arguments``)
    :param launcher: a program and its arguments put in front of the runtime's
        command (``srun``, ``mpiexec -n 4``; Pegasus's ``container.launcher``)
    :param in_place: a local image is used where it is, never copied into the
        cache (the planner sets it for an image on the job's compute site)
    """

    image: str
    kind: str | None = None
    sha256: str | None = None
    runtime: str | None = None
    mounts: list[str] = field(default_factory=list)
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    launcher: list[str] = field(default_factory=list)
    in_place: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image.strip():
            raise ConfigError("container.image must be a non-empty string")
        # Pegasus writes docker:///user/image:tag (and strips every slash, "^docker:/+",
        # before it pulls): docker://user/image:tag, which every runtime takes
        self.image = re.sub(r"^docker:/{3,}", "docker://", self.image.strip(), flags=re.I)
        if self.kind is not None and self.kind not in KINDS:
            raise ConfigError(
                f"container.kind {self.kind!r} is not one of {', '.join(sorted(KINDS))}"
            )
        self.sha256 = normalize_sha256(self.sha256, where="container.sha256")
        self.mounts = list(self.mounts)
        if self.runtime is not None:
            self.runtime = self.runtime.strip().lower() or None
        for what in ("arguments", "launcher"):
            value = list(getattr(self, what))
            if not all(isinstance(a, str) and "\0" not in a for a in value):
                raise ConfigError(f"container.{what} must be strings without NUL bytes")
            setattr(self, what, value)
        if self.launcher and not self.launcher[0]:
            raise ConfigError("container.launcher: the launcher's program is empty")
        if self.in_place and local_image_path(self.image) is None:
            raise ConfigError(
                f"container.in_place: {self.display} is not a local path or file:// URL;"
                " only a local image can be used in place"
            )

    @property
    def resolved_kind(self) -> str:
        """``kind`` if given, else guessed from ``image``."""
        return self.kind or guess_kind(self.image)

    @property
    def display(self) -> str:
        """The image reference with secrets (passwords, signed queries) masked."""
        return redact(self.image) if "://" in self.image else self.image

    @property
    def basename(self) -> str:
        """``name`` if given, else the last path component of the image."""
        if self.name:
            return self.name
        return _path_part(self.image).rstrip("/").rsplit("/", 1)[-1] or "image"

    @classmethod
    def from_container(cls, container: Any) -> ImageSpec:
        """Build from any object (or mapping) with the job spec's container fields.

        Duck-typed, so :mod:`ferry.containers` needs no import of the worker.
        """

        def get(key: str, default: Any = None) -> Any:
            if isinstance(container, Mapping):
                return container.get(key, default)
            return getattr(container, key, default)

        return cls(
            image=get("image"),
            kind=get("kind"),
            sha256=get("sha256"),
            runtime=get("runtime"),
            mounts=list(get("mounts") or []),
            name=get("name"),
            arguments=list(get("arguments") or []),
            launcher=list(get("launcher") or []),
            in_place=bool(get("in_place", False)),
        )


def is_registry_reference(spec: ImageSpec | str) -> bool:
    """True when the image is pulled by the runtime from a registry (docker://...)."""
    if isinstance(spec, str):
        spec = ImageSpec(spec)
    return spec.resolved_kind in REGISTRY_KINDS
