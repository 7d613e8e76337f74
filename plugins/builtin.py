"""ferry's own plugins, as declarations: what each serves, not how.

Each object here is one plugin, registered under the ``ferry`` entry-point
group exactly as a third-party plugin is (``file = "ferry.plugins.builtin:file"``
in pyproject.toml). The declarations name their implementation as
``"module:Class"``, so nothing heavier than this module is imported until a
URL of the scheme shows up: the worker wraps a ``file://`` job without loading
the code of the eight protocols it does not use.
"""

from __future__ import annotations

from .protocol import Capability, ProtocolInfo
from .spec import hookimpl

__all__ = ["file", "globus", "gs", "http", "images", "runtimes", "s3", "sftp", "webdav"]

_C = Capability
_LOCAL = frozenset({_C.GET, _C.PUT, _C.STAT, _C.MKDIR, _C.REMOVE})
_STORE = frozenset({_C.GET, _C.PUT, _C.COPY, _C.STAT, _C.MKDIR, _C.REMOVE, _C.CHECKSUM})


class _Protocols:
    """A plugin that declares a fixed list of protocols."""

    def __init__(self, *infos: ProtocolInfo) -> None:
        self._infos = infos

    @hookimpl
    def ferry_protocols(self) -> list[ProtocolInfo]:
        return list(self._infos)

    def __repr__(self) -> str:
        return f"<ferry built-in plugin {', '.join(i.name for i in self._infos)}>"


class _Runtimes:
    """The built-in container runtimes (their module is imported when asked for)."""

    @hookimpl
    def ferry_runtimes(self) -> list[object]:
        from ferry.containers.runtimes import BUILTIN_RUNTIMES

        return list(BUILTIN_RUNTIMES)

    def __repr__(self) -> str:
        return "<ferry built-in plugin runtimes>"


file = _Protocols(
    ProtocolInfo(
        name="file",
        schemes=("file",),
        capabilities=_LOCAL,
        implementation="ferry.plugins.file:FileProtocol",
        description="local files and plain paths",
    ),
    ProtocolInfo(
        name="symlink",
        schemes=("symlink", "moveto"),
        capabilities=_LOCAL,
        implementation="ferry.plugins.file:FileProtocol",
        description="symbolic links and moves on this machine, as pegasus-transfer makes them",
    ),
)

images = _Protocols(
    ProtocolInfo(
        name="image",
        schemes=("docker", "shub", "library"),
        capabilities=frozenset({_C.GET}),
        implementation="ferry.plugins.images:ImageProtocol",
        description="container images pulled by docker, apptainer or singularity",
    )
)

http = _Protocols(
    ProtocolInfo(
        name="http",
        schemes=("http", "https"),
        capabilities=frozenset({_C.GET, _C.PUT, _C.STAT, _C.RESUME}),
        implementation="ferry.plugins.http:HttpProtocol",
        requires=("httpx",),
        extra="http",
        description="HTTP(S) downloads, resumed with Range requests, and plain PUT uploads",
    )
)

webdav = _Protocols(
    ProtocolInfo(
        name="webdav",
        schemes=("webdav", "webdavs"),
        capabilities=_LOCAL | {_C.RESUME},
        implementation="ferry.plugins.webdav:WebdavProtocol",
        requires=("httpx",),
        extra="http",
        description="WebDAV servers; webdav:// over http, webdavs:// over https",
    )
)

s3 = _Protocols(
    ProtocolInfo(
        name="s3",
        schemes=("s3", "s3s"),
        capabilities=_STORE,
        implementation="ferry.plugins.s3:S3Protocol",
        requires=("botocore",),
        extra="s3",
        description="S3 and S3-compatible stores (s3://[user@]site/bucket/key)",
    )
)

gs = _Protocols(
    ProtocolInfo(
        name="gs",
        schemes=("gs",),
        capabilities=_STORE | {_C.RESUME},
        implementation="ferry.plugins.gs:GsProtocol",
        requires=("google.cloud.storage",),
        extra="gs",
        description="Google Cloud Storage (sha256 kept in object metadata)",
    )
)

sftp = _Protocols(
    ProtocolInfo(
        name="sftp",
        schemes=("sftp", "scp"),
        capabilities=_LOCAL | {_C.RESUME, _C.CHECKSUM},
        implementation="ferry.plugins.sftp:SftpProtocol",
        requires=("paramiko",),
        extra="sftp",
        description="SSH servers over SFTP (scp:// URLs too); key, agent and known_hosts",
    )
)

globus = _Protocols(
    ProtocolInfo(
        name="globus",
        schemes=("go",),
        capabilities=frozenset({_C.COPY, _C.STAT, _C.MKDIR, _C.REMOVE}),
        implementation="ferry.plugins.globus:GlobusProtocol",
        requires=("globus_sdk",),
        extra="globus",
        description="third-party copies between Globus collections, batched into tasks",
    )
)

runtimes = _Runtimes()
