"""The worker's side of containers: stage the image through the engine, pick and
prepare a runtime, and wrap the job's command line (docs/containers.md)."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferry.containers import ImageCache, ImageSpec, load_runtimes, select_runtime
from ferry.plugins.errors import ConfigError, IntegrityError, TransferError
from ferry.plugins.url import parse_url

from .record import TransferEntry
from .request import Endpoint, TransferRequest

if TYPE_CHECKING:
    from .job import JobWorker

__all__ = ["SLOT_VARIABLES", "ContainerRun", "prepare_container"]

log = logging.getLogger("ferry.worker")

#: what the batch slot tells the job about the devices it was given (HTCondor sets
#: these): passed into the container's otherwise clean environment, unless the job
#: spec sets them, so that a job sees its own GPUs, not every GPU of the node
SLOT_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
)


@dataclass
class ContainerRun:
    """A prepared image and runtime; :meth:`command` wraps the job's argv."""

    runtime: Any
    prepared: Any
    workdir: str
    job_env: dict[str, str]
    gpus: int
    gpu_vendor: str
    mounts: list[str]
    name: str
    #: extra runtime arguments, before the image (``container.arguments``)
    arguments: list[str] = field(default_factory=list)
    #: a program the runtime's command runs under (``container.launcher``)
    launcher: list[str] = field(default_factory=list)

    def command(
        self, argv: list[str], *, env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        """Host argv and host environment; the container sees only the job's variables."""
        del env  # the node's environment stays outside the container
        inner = list(argv)
        if inner and inner[0].startswith(self.workdir + "/"):
            # a staged executable: the work directory is mounted at /srv inside
            inner[0] = "/srv/" + inner[0][len(self.workdir) + 1 :]
        extra: dict[str, Any] = {}
        if self.arguments:  # a plugin runtime written before them need not take them
            params = inspect.signature(self.runtime.command).parameters.values()
            if not any(p.name == "arguments" or p.kind is p.VAR_KEYWORD for p in params):
                raise ConfigError(
                    f"container runtime {self.runtime.name} does not take container.arguments"
                )
            extra["arguments"] = self.arguments
        cmd, host_env = self.runtime.command(
            self.prepared,
            inner,
            workdir=self.workdir,
            env=self.job_env,
            gpus=self.gpus,
            gpu_vendor=self.gpu_vendor,
            mounts=self.mounts,
            name=self.name,
            **extra,
        )
        return self.runtime.launch(cmd, host_env, self.launcher)

    def cleanup(self) -> None:
        """Remove the container after its client was killed (``docker rm --force NAME``,
        as pegasus-lite does after its job): a killed ``docker run`` leaves it running."""
        cmd = self.runtime.cleanup_command(self.name)
        if not cmd:
            return
        try:
            res = subprocess.run(
                cmd,
                env=self.runtime.host_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("cannot remove container %s: %s", self.name, exc)
            return
        if res.returncode != 0:
            log.debug("%s: exit %d: %s", " ".join(cmd), res.returncode, res.stderr.strip())


def _credentials(workdir: str) -> dict[str, str]:
    """Copy the node's credential files into the work directory (mode 0600), where the
    container sees them; their variables point there (pegasus-lite's container_env)."""
    import shutil

    from .job import CREDENTIALS_DIR, credential_files

    out = {}
    for i, (name, path) in enumerate(sorted(credential_files(os.environ, os.getcwd()).items())):
        rel = f"{CREDENTIALS_DIR}/{i}/{os.path.basename(path)}"
        dest = os.path.join(workdir, rel)
        try:
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except OSError as exc:
            log.warning("credential %s (%s) not given to the container: %s", name, path, exc)
            continue
        out[name] = f"/srv/{rel}"
    return out


def prepare_container(worker: JobWorker) -> ContainerRun:
    """Stage the job's image into the node cache and prepare a runtime for it."""
    spec = worker.spec
    assert spec.container is not None
    image = ImageSpec.from_container(spec.container)

    def fetch(url: str, dest: str, expected: str | None) -> str:
        t0 = time.monotonic()
        req = TransferRequest(
            sources=[Endpoint(parse_url(url))],
            dest=Endpoint(parse_url(f"file://{dest}")),
            lfn=image.name or parse_url(url).basename,
            sha256=expected,
        )
        [res] = worker.engine.run([req])
        worker.record.transfers.append(
            TransferEntry(
                direction="image",
                lfn=req.lfn or url,
                ok=res.ok,
                source=res.source,
                dest=f"file://{dest}",
                bytes=res.bytes,
                duration=round(time.monotonic() - t0, 6),
                attempts=len(res.attempts),
                sha256=f"sha256:{res.sha256}" if res.sha256 else None,
                expected_sha256=f"sha256:{expected}" if expected else None,
                route=res.route,
                error=res.error,
                tried=[a.to_json() for a in res.attempts if not a.ok],
            )
        )
        if not res.ok:
            if res.error_type == "IntegrityError":
                details = next((a.details for a in res.attempts if a.details), {})
                raise IntegrityError(
                    res.error or "image sha256 mismatch",
                    expected=details.get("expected", expected or ""),
                    actual=details.get("actual", ""),
                    url=url,
                )
            raise TransferError(res.error or f"cannot fetch image {url}", url=url)
        assert res.sha256 is not None
        return res.sha256

    cache = ImageCache()
    staged = cache.stage(image, fetch)
    runtime = select_runtime(image, staged, load_runtimes(worker.registry))
    if image.launcher:  # a node without it fails here, before the inputs are staged
        runtime.launcher_path(image.launcher[0])
    prepared = runtime.prepare(staged, cache, mounts=image.mounts)
    worker.record.container = {
        "image": staged.source or spec.container.image,
        "kind": staged.kind,
        "runtime": runtime.name,
        "sha256": f"sha256:{staged.sha256}" if staged.sha256 else None,
        "cached": staged.cached,
        "linked": staged.linked,
        "path": staged.path,
    }
    if image.arguments:
        worker.record.container["arguments"] = list(image.arguments)
    if image.launcher:
        worker.record.container["launcher"] = list(image.launcher)
    job_env = {k: os.environ[k] for k in SLOT_VARIABLES if k in os.environ}
    job_env.update(_credentials(worker.workdir))
    job_env.update(spec.environment)
    job_env.update(FERRY_JOB_ID=spec.id, FERRY_WORK_DIR="/srv")
    return ContainerRun(
        runtime=runtime,
        prepared=prepared,
        workdir=worker.workdir,
        job_env=job_env,
        gpus=spec.resources.gpus,
        gpu_vendor=spec.resources.gpu_vendor,
        mounts=list(image.mounts),
        # unique on the node (job ids repeat across workflows) and a valid container name
        # whatever the job id: the work directory's name (ferry-<id>-<random>)
        name=f"{os.path.basename(worker.workdir)}-{worker.record.attempt}",
        arguments=list(image.arguments),
        launcher=list(image.launcher),
    )
