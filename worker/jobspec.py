"""The job spec: one versioned JSON document per job, written by the planner, read by the worker.

Documented field by field in docs/jobspec.md; validated on load with errors
that name the offending field (``$.inputs[2].sha256``). ``msgspec`` does the
decoding, so loading a spec costs microseconds, not an import of a schema
library.
"""

# No ``from __future__ import annotations`` here: msgspec would then resolve
# every string annotation with eval() when it builds the decoder (at import,
# on every job); evaluated annotations cost nothing.
import re

import msgspec

from ferry.plugins.errors import ConfigError

from .request import normalize_sha256

__all__ = [
    "JOBSPEC_VERSION",
    "Checkpoint",
    "Container",
    "Destination",
    "Input",
    "JobSpec",
    "Output",
    "Resources",
    "SourceURL",
    "Success",
    "TransferSettings",
    "dump_jobspec",
    "json_schema",
    "load_jobspec",
]

JOBSPEC_VERSION = 1


class _Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class SourceURL(_Base):
    """A replica of an input: higher ``priority`` is tried first."""

    url: str
    priority: float | None = None
    site: str = "local"


class Destination(_Base):
    url: str
    site: str = "local"


class Input(_Base):
    """A file staged into the work directory before the job runs."""

    lfn: str
    sources: list[SourceURL]
    #: expected sha256 (hex or ``sha256:<hex>``); a mismatch fails the job before it runs
    sha256: str | None = None
    #: where in the work directory (default: the LFN)
    path: str | None = None
    executable: bool = False
    size: int | None = None
    #: make a symlink instead of copying when the source is a local file
    symlink: bool = False


class Output(_Base):
    """A file the job writes, staged out after it succeeds."""

    lfn: str
    destinations: list[Destination] = []
    path: str | None = None
    #: a missing required output fails the job
    required: bool = True


class Checkpoint(_Base):
    """A file the job keeps its progress in, staged out and restored across attempts."""

    lfn: str
    #: where the checkpoint is kept between attempts
    url: str
    path: str | None = None


class Container(_Base):
    """The image the job runs in, staged like any input."""

    #: URL or path of a docker-archive tar, a .sif, or an unpacked root filesystem
    #: directory; or a registry reference (docker://..., library://...)
    image: str
    #: docker-archive | sif | dir | docker | library; None: guessed from the image
    kind: str | None = None
    sha256: str | None = None
    #: apptainer | singularity | docker | podman | charliecloud; None: what the node has
    runtime: str | None = None
    #: extra host paths to bind, "HOST[:CONTAINER]"
    mounts: list[str] = []
    #: a name for the node-wide cache (default: the image's basename)
    name: str | None = None
    #: extra arguments for the runtime, before the image (Pegasus's
    #: ``pegasus.container.arguments``: ``--nv``, ``--gpus all``, ...)
    arguments: list[str] = []
    #: a program (and its arguments) the runtime's command runs under: ``srun``,
    #: ``mpiexec -n 4`` (Pegasus's ``container.launcher`` and ``.arguments``)
    launcher: list[str] = []
    #: use a local image where it is, never copied into the node cache (the planner
    #: sets it when the container's ``image.site`` is the job's compute site)
    in_place: bool = False


class Resources(_Base):
    cpus: int = 1
    memory_mb: int | None = None
    disk_mb: int | None = None
    gpus: int = 0
    gpu_vendor: str = "nvidia"


class Success(_Base):
    """When an exit counts as success."""

    exit_codes: list[int] = msgspec.field(default_factory=lambda: [0])
    #: regular expressions that must (or must not) match stdout / stderr
    stdout_must: list[str] = []
    stdout_must_not: list[str] = []
    stderr_must: list[str] = []
    stderr_must_not: list[str] = []


class TransferSettings(_Base):
    threads: int = 4
    max_attempts: int = 3
    backoff: float = 1.0


class JobSpec(_Base):
    """Everything the worker needs to run one job on a node."""

    version: int
    id: str
    executable: str
    arguments: list[str] = []
    name: str | None = None
    environment: dict[str, str] = {}
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    inputs: list[Input] = []
    outputs: list[Output] = []
    checkpoints: list[Checkpoint] = []
    #: seconds between periodic checkpoint stage-outs while the job runs
    checkpoint_interval: float | None = None
    container: Container | None = None
    resources: Resources = msgspec.field(default_factory=Resources)
    #: wall-clock limit in seconds; then TERM, and KILL after ``kill_grace``
    timeout: float | None = None
    kill_grace: float = 10.0
    success: Success = msgspec.field(default_factory=Success)
    transfer: TransferSettings = msgspec.field(default_factory=TransferSettings)
    #: directory for invocation records (default: beside the spec)
    records_dir: str | None = None
    #: keep the work directory when the job fails (its path goes into the record)
    keep_workdir_on_failure: bool = False
    #: free-form labels copied into the record (workflow, transformation, ...)
    labels: dict[str, str] = {}


_DECODER = msgspec.json.Decoder(JobSpec)


def _check(spec: JobSpec, source: str) -> JobSpec:
    if spec.version != JOBSPEC_VERSION:
        raise ConfigError(
            f"{source}: job spec version {spec.version} is not supported (this worker reads"
            f" version {JOBSPEC_VERSION})"
        )
    if not spec.id or "/" in spec.id or "\0" in spec.id or spec.id in (".", ".."):
        raise ConfigError(
            f"{source}: $.id: {spec.id!r} cannot name the invocation records"
            " (<id>.<attempt>.json): it must be a file name, without '/'"
        )
    for i, inp in enumerate(spec.inputs):
        where = f"{source}: $.inputs[{i}]"
        if not inp.sources:
            raise ConfigError(f"{where}.sources: no source URL for input {inp.lfn}")
        inp.sha256 = normalize_sha256(inp.sha256, where=f"{where}.sha256")
        _relative(inp.path or inp.lfn, f"{where}.path")
    for i, out in enumerate(spec.outputs):
        _relative(out.path or out.lfn, f"{source}: $.outputs[{i}].path")
    for i, ck in enumerate(spec.checkpoints):
        _relative(ck.path or ck.lfn, f"{source}: $.checkpoints[{i}].path")
    for name in ("stdin", "stdout", "stderr"):
        value = getattr(spec, name)
        if value is not None:
            _relative(value, f"{source}: $.{name}")
    for name in ("stdout_must", "stdout_must_not", "stderr_must", "stderr_must_not"):
        for i, pattern in enumerate(getattr(spec.success, name)):
            _regex(pattern, f"{source}: $.success.{name}[{i}]")
    if spec.container is not None:
        _container(spec.container, f"{source}: $.container")
    if spec.timeout is not None and spec.timeout <= 0:
        raise ConfigError(f"{source}: $.timeout must be positive, not {spec.timeout}")
    if spec.checkpoint_interval is not None and spec.checkpoint_interval <= 0:
        raise ConfigError(
            f"{source}: $.checkpoint_interval must be positive, not {spec.checkpoint_interval}"
        )
    if spec.kill_grace < 0:
        raise ConfigError(f"{source}: $.kill_grace must not be negative, not {spec.kill_grace}")
    return spec


def _container(c: Container, where: str) -> None:
    c.sha256 = normalize_sha256(c.sha256, where=f"{where}.sha256")
    for name in ("arguments", "launcher"):
        for i, arg in enumerate(getattr(c, name)):
            if "\0" in arg:
                raise ConfigError(f"{where}.{name}[{i}]: {arg!r} has a NUL byte")
    if c.launcher and not c.launcher[0]:
        raise ConfigError(f"{where}.launcher[0]: the launcher's program is empty")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", c.image)
    if c.in_place and scheme and scheme.group(1).lower() != "file":
        raise ConfigError(
            f"{where}.in_place: only a local image (a path or file:// URL) can be used in"
            f" place, not a {scheme.group(1)}:// one"
        )


def _regex(pattern: str, where: str) -> None:
    """Refuse a success pattern that is no regular expression before the job runs."""
    try:
        re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise ConfigError(f"{where}: {pattern!r} is not a regular expression: {exc}") from None


def _relative(path: str, where: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or not path:
        raise ConfigError(f"{where}: {path!r} must be a relative path inside the work directory")


def load_jobspec(data: bytes | str, *, source: str = "<job spec>") -> JobSpec:
    """Decode and validate a job spec; errors name ``source`` and the field."""
    try:
        spec = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: invalid job spec: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: malformed JSON: {exc}") from None
    return _check(spec, source)


def dump_jobspec(spec: JobSpec) -> bytes:
    return msgspec.json.format(msgspec.json.encode(spec), indent=2)


def json_schema() -> dict[str, object]:
    """The JSON Schema of the job spec (for docs and other tools)."""
    return msgspec.json.schema(JobSpec)
