"""``docker://``, ``shub://`` and ``library://`` sources: container images pulled by
the tools that speak those registries, as pegasus-transfer pulls them.

Pegasus writes a container's stage-in as an ordinary transfer whose source is
the image reference and whose destination carries the image ``type``::

    {"type": "transfer", "lfn": "centos-base",
     "src_urls": [{"site_label": "dockerhub", "url": "docker://centos:7"}],
     "dest_urls": [{"site_label": "local", "type": "docker",
                    "url": "file:///scratch/run0001/centos-base"}]}

What each pulls (pegasus-transfer's handlers, ``reference/pegasus-transfer.md``):

- ``docker://`` to a destination of type ``docker`` (or none): ``docker pull IMG``
  then ``docker save -o FILE IMG``, a docker-archive tar;
- ``docker://`` to a destination of type ``singularity``, and every ``shub://``
  and ``library://``: ``apptainer pull --allow-unauthenticated FILE URL``
  (``singularity`` where there is no ``apptainer``), a ``.sif``.

The tool writes into a private directory beside the destination, then the
file streams into the engine's sink like any download (hashed, checked
against the expected sha256, named only when it matches), and the directory
goes. A missing tool is a permanent error that names it; a failed pull is a
transient one (registries time out) carrying the tool's last line of output.

Settings (``--set image.NAME=VALUE`` or ``$FERRY_IMAGE_NAME``): ``timeout``
(seconds one tool may run, 3600).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable

from .errors import PermanentError, TransferTimeout, TransientError
from .file import FileProtocol
from .protocol import Protocol, ProtocolContext, Sink
from .url import URL, parse_url

__all__ = ["ImageProtocol", "ImageSettings", "pull_commands"]

#: destination types that want a Singularity/Apptainer image (``file::singularity``)
SIF_TYPES = frozenset({"singularity", "apptainer", "sif"})


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """Tunables of the image plugin (``--set image.NAME=VALUE``, ``$FERRY_IMAGE_NAME``)."""

    #: seconds one pull (or save) may take
    timeout: float = 3600.0


def _find(tool: str) -> str | None:
    # pegasus-transfer appends the system directories to PATH when it looks tools up
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/bin:/bin:/usr/sbin"
    return shutil.which(tool, path=path)


def pull_commands(url: URL, dest_type: str | None, out: str) -> list[list[str]]:
    """The commands that write the image ``url`` into the file ``out``."""
    reference = url.raw.split("://", 1)[1]
    if url.scheme == "docker" and (dest_type or "docker").lower() not in SIF_TYPES:
        docker = _find("docker")
        if docker is None:
            raise PermanentError(
                f"{url}: docker could not be found on PATH (needed to pull a docker image)",
                url=str(url),
            )
        return [[docker, "pull", reference], [docker, "save", "-o", out, reference]]
    tool = _find("apptainer") or _find("singularity")
    if tool is None:
        raise PermanentError(
            f"{url}: neither apptainer nor singularity could be found on PATH"
            " (needed to pull a Singularity image)",
            url=str(url),
        )
    return [[tool, "pull", "--allow-unauthenticated", out, f"{url.scheme}://{reference}"]]


class ImageProtocol(Protocol):
    """Container images from registries, pulled by docker, apptainer or singularity."""

    name = "image"
    schemes = ("docker", "shub", "library")

    def __init__(self, context: ProtocolContext | None = None) -> None:
        super().__init__(context)
        from .settings import load_settings

        self.settings = load_settings(ImageSettings, self.context, "image")

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        import tempfile

        workdir = tempfile.mkdtemp(prefix=".ferry-image-", dir=sink.directory)
        try:
            out = os.path.join(workdir, "image")
            for argv in pull_commands(url, sink.type, out):
                self._run(argv, url)
            if not os.path.isfile(out):
                raise TransientError(
                    f"{url}: {os.path.basename(argv[0])} exited 0 but wrote no image",
                    url=str(url),
                )
            if sink.offset:
                sink.reset()  # a new pull: the bytes of an earlier try may differ
            FileProtocol(self.context).get(parse_url(f"file://{out}"), sink, progress)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, argv: list[str], url: URL) -> None:
        tool = os.path.basename(argv[0])
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.settings.timeout,
                start_new_session=True,  # its own process group, as pegasus-transfer runs tools
            )
        except subprocess.TimeoutExpired:
            raise TransferTimeout(
                f"{url}: {tool} {argv[1]} took more than {self.settings.timeout:g} s",
                url=str(url),
            ) from None
        except OSError as exc:
            raise PermanentError(f"{url}: cannot run {argv[0]}: {exc}", url=str(url)) from exc
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            last = lines[-1].strip() if lines else "no output"
            raise TransientError(
                f"{url}: {tool} {argv[1]} exited {done.returncode}: {last}", url=str(url)
            )
