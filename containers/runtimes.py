"""Container runtimes, driven as subprocesses (no Python bindings).

A :class:`Runtime` knows its binaries, the image kinds it runs, how to make a
staged image runnable once per node (:meth:`Runtime.prepare`) and how to build
the host command line and host environment that run a job's argv inside the
image (:meth:`Runtime.command`). The worker runs that command itself (with its
own timeout, signals and stdio).

Built in: ``apptainer``, ``singularity``, ``docker``, ``podman`` and
``charliecloud``. More come from plugins: a module registered under the
``ferry`` entry-point group whose ``ferry_runtimes()`` hook returns Runtime
subclasses; see :func:`load_runtimes` and docs/containers.md.

Conventions shared by every runtime (after pegasus-lite):

* the job's work directory is bound at ``/srv`` and is the working directory
  (apptainer, docker and podman also bind it at its own host path, as
  pegasus-lite binds ``$_CONDOR_SCRATCH_DIR``, so absolute host paths in the
  job's environment still resolve);
* the environment is clean: the job sees ``PATH`` (a default, overridden by the
  image's ``Env``), the image's ``Env``, ``HOME=/srv``, then the job's own
  variables, which win -- nothing else from the host;
* variable values travel in the runtime process's environment, not on its
  command line (which every user on the node can read in ``ps``), except for
  names the runtime binary itself would obey (``LD_*``, ``DOCKER_*``, ``PATH``
  for docker ...), which go on the command line;
* GPUs: ``--nv``/``--rocm`` (apptainer, singularity), ``--gpus all`` or the
  AMD devices (docker), CDI ``nvidia.com/gpu=all`` or the AMD devices (podman);
  which GPUs the job may use is told by ``CUDA_VISIBLE_DEVICES`` and friends in
  the job's environment (set by the batch system).

``FERRY_<NAME>_BIN`` (e.g. ``FERRY_APPTAINER_BIN``, ``FERRY_CHARLIECLOUD_BIN``)
in the environment given to a runtime overrides where its binary is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ferry.plugins.errors import ConfigError, PermanentError, PluginUnavailable

from .cache import ImageCache, StagedImage
from .image import REGISTRY_KINDS, ImageSpec
from .unpack import ImageConfig, read_manifest, unpack_docker_archive

if TYPE_CHECKING:
    from ferry.plugins.registry import Registry

__all__ = [
    "BUILTIN_RUNTIMES",
    "CONTAINER_WORKDIR",
    "DEFAULT_ORDER",
    "DEFAULT_PATH",
    "LAUNCHER_ENV_PREFIXES",
    "Apptainer",
    "Charliecloud",
    "Docker",
    "Mount",
    "Podman",
    "Prepared",
    "Runtime",
    "RuntimeCommandFailed",
    "RuntimeUnavailable",
    "Singularity",
    "load_runtimes",
    "parse_mounts",
    "select_runtime",
]

log = logging.getLogger("ferry.containers")

#: where the job's work directory appears inside the container (pegasus-lite's choice)
CONTAINER_WORKDIR = "/srv"
#: PATH inside the container when neither the image nor the job sets one
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GPU_VENDORS = ("nvidia", "amd")
#: host variables (batch system, MPI) the runtime process is given when the job has a
#: launcher: ``srun`` and ``mpiexec`` need them to run inside the job's allocation
LAUNCHER_ENV_PREFIXES = (
    "SLURM_",
    "PMI_",
    "PMIX_",
    "OMPI_",
    "PRTE_",
    "I_MPI_",
    "HYDRA_",
    "FLUX_",
    "PBS_",
    "LSB_",
)

#: which runtimes to try, in order, for each image kind when the spec names none
DEFAULT_ORDER: dict[str, tuple[str, ...]] = {
    "sif": ("apptainer", "singularity"),
    "docker-archive": ("apptainer", "singularity", "charliecloud", "podman", "docker"),
    "dir": ("charliecloud", "apptainer", "singularity"),
    "docker": ("apptainer", "singularity", "podman", "docker"),
    "library": ("apptainer", "singularity"),
    "oras": ("apptainer", "singularity"),
    "shub": ("apptainer", "singularity"),
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROXY_NAMES = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)


class RuntimeUnavailable(PluginUnavailable):
    """No runtime on this node can run the image (or the one asked for is missing)."""


class RuntimeCommandFailed(PermanentError):
    """A runtime command ferry ran itself (``docker load`` ...) failed."""


# -- mounts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """An extra bind mount: ``HOST[:CONTAINER[:ro|rw]]``."""

    host: str
    container: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Mount:
        parts = text.split(":")
        if not text or len(parts) > 3:
            raise ConfigError(f"container.mounts: {text!r} is not HOST[:CONTAINER[:ro|rw]]")
        host = parts[0]
        container = parts[1] if len(parts) > 1 and parts[1] else host
        mode = parts[2] if len(parts) > 2 else "rw"
        if mode not in ("ro", "rw"):
            raise ConfigError(f"container.mounts: {text!r}: mode must be ro or rw, not {mode!r}")
        for what, path in (("host", host), ("container", container)):
            if not path.startswith("/"):
                raise ConfigError(f"container.mounts: {text!r}: the {what} path must be absolute")
            if "," in path or "\0" in path or "\n" in path:
                raise ConfigError(
                    f"container.mounts: {text!r}: the {what} path has a character"
                    " runtimes cannot take (',' or a control character)"
                )
            if ".." in path.split("/"):
                raise ConfigError(f"container.mounts: {text!r}: '..' in the {what} path")
        container = os.path.normpath(container)
        if container in ("/", CONTAINER_WORKDIR) or container.startswith(CONTAINER_WORKDIR + "/"):
            raise ConfigError(
                f"container.mounts: {text!r}: {container} is reserved (the work directory"
                f" is {CONTAINER_WORKDIR})"
            )
        return cls(os.path.normpath(host), container, mode == "ro")


def parse_mounts(mounts: Iterable[str | Mount]) -> list[Mount]:
    """Parse and check ``HOST[:CONTAINER[:ro|rw]]`` strings (Mount objects pass through)."""
    return [m if isinstance(m, Mount) else Mount.parse(m) for m in mounts]


# -- the base class --------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A staged image made runnable by one runtime.

    :param runtime: the runtime's name
    :param image: what goes on the runtime's command line: an image file or
        directory, ``docker-archive://...``, a loaded image ID, or a reference
    :param kind: the image kind
    :param staged: the staged image this came from
    :param config: the image config when ferry read it (charliecloud, docker)
    :param action: what this prepare did: ``"unpacked"``, ``"loaded"``, or
        None when it reused the work of an earlier job
    """

    runtime: str
    image: str
    kind: str
    staged: StagedImage
    config: ImageConfig | None = None
    action: str | None = None


class Runtime:
    """A container runtime. Subclass it to add one (see docs/containers.md).

    :param environ: the host environment to look binaries up in (``PATH``,
        ``FERRY_<NAME>_BIN``) and to draw the runtime process's own variables
        from (default ``os.environ``)
    :param binary: the binary to use, overriding any look-up
    :param uid: user ID the container runs as where the runtime needs it
        (docker, podman; default: this process's)
    :param gid: group ID likewise
    """

    #: the name used in job specs (``container.runtime``)
    name: ClassVar[str] = ""
    #: binaries looked for on PATH, first found wins
    binaries: ClassVar[tuple[str, ...]] = ()
    #: image kinds this runtime can run
    kinds: ClassVar[frozenset[str]] = frozenset()
    #: host variables the runtime process itself gets (never the container)
    host_env_names: ClassVar[tuple[str, ...]] = ("PATH", "HOME", "USER", "LOGNAME", "LANG")
    #: host variable prefixes the runtime process itself gets
    host_env_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        binary: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        self.environ: dict[str, str] = dict(os.environ if environ is None else environ)
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self._reason: str | None = None
        self._binary = self._find_binary(binary)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._binary or '(not found)'}>"

    # -- finding the binary ----------------------------------------------------

    @classmethod
    def binary_env_var(cls) -> str:
        """``FERRY_<NAME>_BIN``: overrides where the binary is."""
        return "FERRY_" + re.sub(r"[^A-Z0-9]", "_", cls.name.upper()) + "_BIN"

    def _find_binary(self, explicit: str | None) -> str | None:
        override = explicit or self.environ.get(self.binary_env_var())
        if override:
            path = override if "/" in override else shutil.which(override, path=self._path())
            if path and os.path.isfile(path) and os.access(path, os.X_OK):
                return os.path.abspath(path)
            self._reason = f"{override} (from {self.binary_env_var()}) is not an executable file"
            return None
        for name in self.binaries:
            path = shutil.which(name, path=self._path())
            if path:
                return path
        self._reason = f"{' or '.join(self.binaries) or 'its binary'} not found on PATH"
        return None

    def _path(self) -> str:
        return self.environ.get("PATH") or os.defpath

    @property
    def binary(self) -> str | None:
        """The runtime's binary, or None when it is not on this node."""
        return self._binary

    def available(self) -> bool:
        """Whether the binary is here (cheap: no process is started)."""
        return self._binary is not None

    def unavailable_reason(self) -> str | None:
        """Why :meth:`available` is false, or None."""
        return None if self._binary else self._reason

    def accepts(self, kind: str) -> bool:
        return kind in self.kinds

    def probe(self, timeout: float = 30.0) -> str | None:
        """Run a cheap command to see whether the runtime works here.

        :return: None when it works, else the reason (for messages and skips).
        """
        if self._binary is None:
            return self.unavailable_reason()
        try:
            res = self.run_tool(self.probe_args(), timeout=timeout)
        except RuntimeCommandFailed as exc:
            return str(exc)
        if res.returncode != 0:
            return f"{' '.join(self.probe_args())} failed: {_last_line(res)}"
        return None

    def probe_args(self) -> list[str]:
        """The arguments of :meth:`probe` (default ``--version``)."""
        return ["--version"]

    # -- running the runtime's own tools -------------------------------------------

    def host_env(self) -> dict[str, str]:
        """The environment of the runtime process, without the job's variables."""
        out = {
            k: v
            for k, v in self.environ.items()
            if k in self.host_env_names
            or k in _PROXY_NAMES
            or any(k.startswith(p) for p in self.host_env_prefixes)
        }
        out.setdefault("PATH", DEFAULT_PATH)
        if "USER" not in out:
            with contextlib.suppress(KeyError):
                out["USER"] = pwd.getpwuid(self.uid).pw_name
        return out

    def run_tool(
        self, args: Sequence[str], *, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``<binary> args...`` with :meth:`host_env`, capturing its output."""
        if self._binary is None:
            raise RuntimeUnavailable(f"{self.name}: {self.unavailable_reason()}", plugin=self.name)
        cmd = [self._binary, *args]
        try:
            return subprocess.run(
                cmd,
                env=self.host_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeCommandFailed(
                f"{' '.join(cmd)} did not finish within {timeout:.0f} s"
            ) from None
        except OSError as exc:
            raise RuntimeCommandFailed(f"cannot run {cmd[0]}: {exc}") from exc

    # -- the two steps -------------------------------------------------------------

    def prepare(
        self, staged: StagedImage, cache: ImageCache, *, mounts: Sequence[str | Mount] = ()
    ) -> Prepared:
        """Make ``staged`` runnable by this runtime; once per node and image.

        The default uses the staged image as it is. ``mounts`` lets a runtime
        create mount points it needs in an image it owns (charliecloud).
        """
        self._check_kind(staged.kind)
        return Prepared(self.name, staged.path, staged.kind, staged)

    def command(
        self,
        prepared: Prepared,
        argv: Sequence[str],
        *,
        workdir: str,
        env: Mapping[str, str],
        gpus: int = 0,
        gpu_vendor: str = "nvidia",
        mounts: Sequence[str | Mount] = (),
        name: str | None = None,
        arguments: Sequence[str] = (),
    ) -> tuple[list[str], dict[str, str]]:
        """The host command line and host environment that run ``argv`` in the image.

        :param argv: the job's executable and arguments, as run inside
        :param workdir: the job's work directory on the host (bound at /srv)
        :param env: the job's environment variables (the container gets these,
            see :meth:`container_env`)
        :param gpus: how many GPUs the job asked for (0: none)
        :param gpu_vendor: ``nvidia`` or ``amd``
        :param mounts: extra binds, ``HOST[:CONTAINER[:ro|rw]]``
        :param name: a container name, for runtimes that have one (docker,
            podman); lets :meth:`cleanup_command` remove it after a kill
        :param arguments: extra arguments for the runtime, placed before the
            image as pegasus-lite places ``pegasus.container.arguments``
        :return: ``(argv, env)`` for ``subprocess.Popen(argv, env=env)``
        """
        raise NotImplementedError

    def launch(
        self, cmd: Sequence[str], env: Mapping[str, str], launcher: Sequence[str]
    ) -> tuple[list[str], dict[str, str]]:
        """Put ``launcher`` (``srun --kill-on-bad-exit``, ``mpiexec -n 4``) in front of
        the command :meth:`command` built, as pegasus-lite puts ``container.launcher``.

        The launcher's program is looked up on the host's ``PATH`` (the runtime
        process's own environment may be the job's, as for charliecloud), and the
        host's batch and MPI variables (:data:`LAUNCHER_ENV_PREFIXES`) are added to
        that environment, so that ``srun`` or ``mpiexec`` works inside the job's
        allocation.

        :raises RuntimeUnavailable: the launcher's program is not on this node
        """
        if not launcher:
            return list(cmd), dict(env)
        out = dict(env)
        for key, value in self.environ.items():
            if key.startswith(LAUNCHER_ENV_PREFIXES) and key not in out:
                out[key] = value
        return [self.launcher_path(launcher[0]), *launcher[1:], *cmd], out

    def launcher_path(self, prog: str) -> str:
        """The launcher's program ``prog`` on this node (on the host's ``PATH``).

        :raises RuntimeUnavailable: it is not there
        """
        path = prog if "/" in prog else shutil.which(prog, path=self._path())
        if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise RuntimeUnavailable(
                f"container.launcher {prog!r} is not an executable file"
                + ("" if "/" in prog else " on this node's PATH"),
                plugin=self.name,
            )
        return os.path.abspath(path)

    def cleanup_command(self, name: str) -> list[str] | None:
        """A command that removes the container ``name`` after a kill, if any."""
        return None

    # -- helpers for subclasses ------------------------------------------------------

    def _check_kind(self, kind: str) -> None:
        if not self.accepts(kind):
            raise ConfigError(
                f"container runtime {self.name} cannot run {kind} images (it runs"
                f" {', '.join(sorted(self.kinds))})"
            )

    def _check_call(
        self,
        prepared: Prepared,
        argv: Sequence[str],
        workdir: str,
        env: Mapping[str, str],
        gpus: int,
        gpu_vendor: str,
        mounts: Sequence[str | Mount],
    ) -> list[Mount]:
        if prepared.runtime != self.name:
            raise ConfigError(f"image prepared for {prepared.runtime} cannot be run by {self.name}")
        if not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise ConfigError("the command to run in the container is empty")
        if not os.path.isabs(workdir):
            raise ConfigError(f"work directory {workdir!r} must be an absolute path")
        if ":" in workdir or "," in workdir:
            raise ConfigError(
                f"work directory {workdir!r} has a ':' or ',', which bind mounts cannot take"
            )
        for key, value in env.items():
            if not _ENV_NAME.match(key):
                raise ConfigError(f"environment variable name {key!r} is not valid")
            if "\0" in value:
                raise ConfigError(f"environment variable {key} has a NUL byte")
        if gpus < 0:
            raise ConfigError(f"resources.gpus must not be negative ({gpus})")
        if gpus and gpu_vendor not in GPU_VENDORS:
            raise ConfigError(
                f"resources.gpu_vendor {gpu_vendor!r} is not supported by {self.name}"
                f" (supported: {', '.join(GPU_VENDORS)})"
            )
        if self._binary is None:
            raise RuntimeUnavailable(
                f"container runtime {self.name} is not available: {self.unavailable_reason()}",
                plugin=self.name,
            )
        return parse_mounts(mounts)

    def _check_arguments(self, arguments: Sequence[str]) -> list[str]:
        out = list(arguments)
        if not all(isinstance(a, str) and "\0" not in a for a in out):
            raise ConfigError("container.arguments must be strings without NUL bytes")
        return out

    def container_env(self, prepared: Prepared, env: Mapping[str, str]) -> dict[str, str]:
        """The job's environment inside the container, as ferry defines it.

        ``PATH`` default < the image's ``Env`` < ``HOME=/srv`` < the job's ``env``.
        Runtimes that apply the image's ``Env`` themselves (apptainer, docker,
        podman) are given only what ferry adds on top of it.
        """
        out = {"PATH": DEFAULT_PATH}
        if prepared.config is not None:
            out.update(prepared.config.env_dict())
        out["HOME"] = CONTAINER_WORKDIR
        out.update(env)
        return out


def _last_line(res: subprocess.CompletedProcess[str]) -> str:
    text = (res.stderr or "").strip() or (res.stdout or "").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"exit {res.returncode}: {lines[-1].strip()}" if lines else f"exit {res.returncode}"


# -- apptainer / singularity -------------------------------------------------------


class Apptainer(Runtime):
    """``apptainer exec`` (pegasus-lite's choice when both are there).

    Command line::

        apptainer exec --cleanenv --no-home --home HOME --bind WORKDIR:/srv
            --bind WORKDIR:WORKDIR --pwd /srv [--nv | --rocm] [--bind H:C[:ro] ...]
            [ARGUMENTS ...] IMAGE ARGV...

    ``--no-home`` as pegasus-lite (the user's home is not mounted); ``--home``
    only sets ``$HOME`` (``/srv`` unless the job sets HOME; apptainer refuses
    HOME through ``APPTAINERENV_HOME``). ``--cleanenv`` keeps the host
    environment out; the job's variables go in as ``APPTAINERENV_<NAME>`` in
    the apptainer process's environment. A docker-archive runs as
    ``docker-archive://PATH`` (apptainer converts it to a SIF in its own cache).
    """

    name = "apptainer"
    binaries = ("apptainer",)
    kinds = frozenset({"sif", "dir", "docker-archive", *REGISTRY_KINDS})
    env_prefix: ClassVar[str] = "APPTAINERENV_"
    host_env_names = (*Runtime.host_env_names, "TMPDIR", "XDG_RUNTIME_DIR")
    host_env_prefixes = ("APPTAINER_", "SINGULARITY_")

    def host_env(self) -> dict[str, str]:
        env = super().host_env()
        # *ENV_ variables would go into the container: only the job's may
        return {
            k: v for k, v in env.items() if not k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))
        }

    def prepare(
        self, staged: StagedImage, cache: ImageCache, *, mounts: Sequence[str | Mount] = ()
    ) -> Prepared:
        self._check_kind(staged.kind)
        image = staged.path
        if staged.kind == "docker-archive":
            image = "docker-archive://" + os.path.abspath(staged.path)
        return Prepared(self.name, image, staged.kind, staged)

    def command(
        self,
        prepared: Prepared,
        argv: Sequence[str],
        *,
        workdir: str,
        env: Mapping[str, str],
        gpus: int = 0,
        gpu_vendor: str = "nvidia",
        mounts: Sequence[str | Mount] = (),
        name: str | None = None,
        arguments: Sequence[str] = (),
    ) -> tuple[list[str], dict[str, str]]:
        extra = self._check_call(prepared, argv, workdir, env, gpus, gpu_vendor, mounts)
        assert self._binary is not None
        job_env = dict(env)
        home = job_env.pop("HOME", CONTAINER_WORKDIR)
        if not home.startswith("/") or ":" in home or "," in home:
            raise ConfigError(
                f"HOME={home!r}: {self.name} takes HOME through --home, which needs an"
                " absolute path without ':' or ','"
            )
        cmd = [
            self._binary,
            "exec",
            "--cleanenv",
            "--no-home",
            "--home",
            home,
            "--bind",
            f"{workdir}:{CONTAINER_WORKDIR}",
        ]
        if workdir != CONTAINER_WORKDIR:
            cmd += ["--bind", f"{workdir}:{workdir}"]
        cmd += ["--pwd", CONTAINER_WORKDIR]
        if gpus:
            cmd.append("--nv" if gpu_vendor == "nvidia" else "--rocm")
        for m in extra:
            cmd += ["--bind", f"{m.host}:{m.container}" + (":ro" if m.read_only else "")]
        cmd += [*self._check_arguments(arguments), prepared.image, *argv]
        host = self.host_env()
        for key, value in job_env.items():
            host[self.env_prefix + key] = value
        return cmd, host


class Singularity(Apptainer):
    """``singularity exec`` (SingularityCE, or apptainer's ``singularity`` link).

    The same command line as :class:`Apptainer`; the job's variables go in as
    ``SINGULARITYENV_<NAME>``.
    """

    name = "singularity"
    binaries = ("singularity",)
    env_prefix = "SINGULARITYENV_"


# -- docker / podman -----------------------------------------------------------------


class Docker(Runtime):
    """``docker run``.

    Command line::

        docker run --rm -i --init --user UID:GID [--pull=never]
            -v WORKDIR:/srv -v WORKDIR:WORKDIR -w /srv
            [--gpus all | --device /dev/kfd --device /dev/dri --group-add video]
            [-v H:C[:ro] ...] [--name NAME] -e NAME ... -e NAME=VALUE ...
            [ARGUMENTS ...] --entrypoint ARGV0 IMAGE ARGV1...

    Unlike pegasus-lite (``--user root`` and an ``su`` inside to a user it
    creates), the container runs directly as the job's uid:gid, so its files
    in the work directory belong to the job's user. ``--entrypoint`` makes
    ``argv`` run as it is, whatever the image's ENTRYPOINT (as ``apptainer
    exec`` and ``ch-run`` do). ``-i`` passes the job's stdin; ``--init`` reaps
    zombies and forwards signals. A docker-archive is ``docker load``-ed once
    per node and image (recorded in the cache, checked with ``image inspect``;
    not loaded at all when the daemon already has its image ID) and run by
    its image ID (the sha256 of its config) with ``--pull=never``.
    """

    name = "docker"
    binaries = ("docker",)
    kinds = frozenset({"docker-archive", "docker"})
    host_env_names = (*Runtime.host_env_names, "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")
    host_env_prefixes: ClassVar[tuple[str, ...]] = ("DOCKER_",)
    #: job variables with these names/prefixes would steer the client: passed by value
    client_names: ClassVar[frozenset[str]] = frozenset(
        {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "TMPDIR", "LANG", "LANGUAGE", "TERM"}
        | set(_PROXY_NAMES)
    )
    client_prefixes: ClassVar[tuple[str, ...]] = (
        "LD_",
        "LC_",
        "XDG_",
        "DOCKER_",
        "CONTAINER",
        "PODMAN_",
        "BUILDAH_",
        "REGISTRY_",
        "GO",
        "SSL_",
        "DBUS_",
    )
    #: seconds a ``docker load`` may take
    load_timeout: ClassVar[float] = 3600.0

    def probe_args(self) -> list[str]:
        return ["info", "--format", "{{.ServerVersion}}"]

    def prepare(
        self, staged: StagedImage, cache: ImageCache, *, mounts: Sequence[str | Mount] = ()
    ) -> Prepared:
        self._check_kind(staged.kind)
        if staged.kind == "docker":
            ref = (
                staged.path[len("docker://") :]
                if staged.path.startswith("docker://")
                else staged.path
            )
            return Prepared(self.name, ref, staged.kind, staged)
        record = f"{self.name}-loaded-{staged.key}"
        with cache.lock(record):
            rec = cache.read_record(record)
            if rec and isinstance(rec.get("image"), str) and self._exists(rec["image"]):
                config = ImageConfig.from_json(rec.get("config") or {})
                return Prepared(self.name, rec["image"], staged.kind, staged, config)
            manifest = read_manifest(staged.path)
            image = "sha256:" + manifest.config_digest
            action: str | None = None
            started = time.monotonic()
            if self._exists(image):  # loaded by another user's job: the daemon is node-wide
                res = None
            else:
                action = "loaded"
                res = self.run_tool(["load", "-i", staged.path], timeout=self.load_timeout)
                if res.returncode != 0:
                    raise RuntimeCommandFailed(
                        f"{self.name} load -i {staged.path} failed ({_last_line(res)})"
                    )
            if res is not None and not self._exists(image):
                loaded = _loaded_names(res.stdout)
                image = next((n for n in loaded if self._exists(n)), "")
                if not image:
                    raise RuntimeCommandFailed(
                        f"{self.name} load -i {staged.path} succeeded but the image is not"
                        f" there (looked for sha256:{manifest.config_digest} and"
                        f" {', '.join(loaded) or 'no name in its output'})"
                    )
            cache.write_record(
                record,
                {
                    "image": image,
                    "sha256": staged.sha256,
                    "tags": list(manifest.repo_tags),
                    "config": manifest.config.to_json(),
                    "time": time.time(),
                },
            )
            if action:
                log.info(
                    "%s loaded %s as %s in %.1f s",
                    self.name,
                    staged.path,
                    image,
                    time.monotonic() - started,
                )
            return Prepared(self.name, image, staged.kind, staged, manifest.config, action)

    def _exists(self, image: str) -> bool:
        try:
            res = self.run_tool(["image", "inspect", "--format", "{{.Id}}", image], timeout=120)
        except RuntimeCommandFailed:
            return False
        return res.returncode == 0

    def _user_args(self) -> list[str]:
        return ["--user", f"{self.uid}:{self.gid}"]

    def _init_args(self) -> list[str]:
        # docker-init (tini) ships with the docker daemon
        return ["--init"]

    def _gpu_args(self, gpu_vendor: str) -> list[str]:
        if gpu_vendor == "nvidia":
            return ["--gpus", "all"]
        return ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]

    def _extra_run_args(self) -> list[str]:
        return []

    def command(
        self,
        prepared: Prepared,
        argv: Sequence[str],
        *,
        workdir: str,
        env: Mapping[str, str],
        gpus: int = 0,
        gpu_vendor: str = "nvidia",
        mounts: Sequence[str | Mount] = (),
        name: str | None = None,
        arguments: Sequence[str] = (),
    ) -> tuple[list[str], dict[str, str]]:
        extra = self._check_call(prepared, argv, workdir, env, gpus, gpu_vendor, mounts)
        assert self._binary is not None
        cmd = [self._binary, "run", "--rm", "-i", *self._init_args(), *self._user_args()]
        cmd += self._extra_run_args()
        if prepared.kind == "docker-archive":
            cmd.append("--pull=never")
        cmd += ["-v", f"{workdir}:{CONTAINER_WORKDIR}"]
        if workdir != CONTAINER_WORKDIR:
            cmd += ["-v", f"{workdir}:{workdir}"]
        cmd += ["-w", CONTAINER_WORKDIR]
        if gpus:
            cmd += self._gpu_args(gpu_vendor)
        for m in extra:
            cmd += ["-v", f"{m.host}:{m.container}" + (":ro" if m.read_only else "")]
        if name:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
                raise ConfigError(f"container name {name!r} is not valid for {self.name}")
            cmd += ["--name", name]
        host = self.host_env()
        job_env = dict(env)
        job_env.setdefault("HOME", CONTAINER_WORKDIR)
        for key, value in job_env.items():
            if self._by_value(key, host):
                cmd += ["-e", f"{key}={value}"]
            else:
                cmd += ["-e", key]
                host[key] = value
        cmd += self._check_arguments(arguments)
        cmd += ["--entrypoint", argv[0], prepared.image, *argv[1:]]
        return cmd, host

    def _by_value(self, key: str, host: Mapping[str, str]) -> bool:
        return (
            key in host
            or key in self.client_names
            or any(key.startswith(p) for p in self.client_prefixes)
        )

    def cleanup_command(self, name: str) -> list[str] | None:
        return [self._binary or self.binaries[0], "rm", "--force", name]


class Podman(Docker):
    """``podman run``: as :class:`Docker`, with podman's own user and GPU handling.

    ``--init`` only when catatonit (podman's init) is installed: podman refuses
    ``--init`` without it. As root: ``--user 0:0``; otherwise ``--userns=keep-id`` (rootless podman
    maps the job's uid to itself inside, so files in the work directory stay
    the user's). ``--security-opt label=disable`` lets the bind mounts work on
    SELinux hosts without relabelling the user's files. GPUs: CDI
    ``--device nvidia.com/gpu=all`` (NVIDIA Container Toolkit's CDI spec
    needed), AMD ``--device /dev/kfd --device /dev/dri`` with
    ``--group-add keep-groups`` (rootless) or ``video`` (root).
    """

    name = "podman"
    binaries = ("podman",)
    host_env_names = (
        *Docker.host_env_names,
        "XDG_DATA_HOME",
        "DBUS_SESSION_BUS_ADDRESS",
        "CONTAINER_HOST",
        "CONTAINER_CONNECTION",
        "REGISTRY_AUTH_FILE",
    )
    host_env_prefixes = ("CONTAINERS_",)

    def probe_args(self) -> list[str]:
        return ["info", "--format", "{{.Version.Version}}"]

    #: where podman looks for its init (containers.conf ``init_path``, then packages)
    init_paths: ClassVar[tuple[str, ...]] = (
        "/usr/libexec/podman/catatonit",
        "/usr/libexec/catatonit/catatonit",
        "/usr/bin/catatonit",
    )

    def _init_args(self) -> list[str]:
        # --init needs catatonit, only a Recommends of Debian's podman: without it,
        # podman refuses to start the container, so leave --init out
        if any(os.path.exists(p) for p in self.init_paths) or shutil.which(
            "catatonit", path=self._path()
        ):
            return ["--init"]
        return []

    def _user_args(self) -> list[str]:
        if self.uid == 0:
            return ["--user", f"0:{self.gid}"]
        return ["--userns=keep-id"]

    def _extra_run_args(self) -> list[str]:
        return ["--security-opt", "label=disable"]

    def _gpu_args(self, gpu_vendor: str) -> list[str]:
        if gpu_vendor == "nvidia":
            return ["--device", "nvidia.com/gpu=all"]
        group = "video" if self.uid == 0 else "keep-groups"
        return ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", group]


def _loaded_names(output: str) -> list[str]:
    """Image names from ``docker load`` / ``podman load`` output."""
    names: list[str] = []
    for line in (output or "").splitlines():
        match = re.match(r"^\s*Loaded image(?:\(s\))?(?: ID)?:\s*(.+?)\s*$", line)
        if match:
            names += [n.strip() for n in match.group(1).split(",") if n.strip()]
    return names


# -- charliecloud -------------------------------------------------------------------


#: mount points ch-run 0.31 refuses to run without (it binds the host's /dev,
#: /proc, /sys and its own /etc/passwd and /etc/group), plus /srv for the work dir
_CH_REQUIRED_DIRS = ("dev", "proc", "sys", "srv")
_CH_REQUIRED_FILES = ("etc/passwd", "etc/group")
#: also created in images ferry unpacks (charliecloud's own conversions add them)
_CH_EXTRA_DIRS = ("tmp", "home", "mnt")


class Charliecloud(Runtime):
    """``ch-run``: fully unprivileged, runs an unpacked directory.

    Command line (ch-run 0.31 flags)::

        ch-run -b WORKDIR:/srv -c /srv [-b H:C ...] [--env-no-expand
            --set-env=NAME=VALUE ...] [ARGUMENTS ...] ROOTFS -- ARGV...

    A docker-archive is unpacked (:func:`ferry.containers.unpack.unpack_docker_archive`)
    into the cache once per image, under a lock, and the mount points ch-run
    needs are added; a ``dir`` image runs in place (it must have them, and
    ``/srv``). ch-run passes its own environment into the container, so the
    ch-run process gets exactly the job's environment (PATH default < image
    Env < HOME=/srv < job env, plus USER, which ch-run requires); only
    ``LD_*`` and ``CH_*`` names, which would steer ch-run itself, go on the
    command line as ``--set-env``. Works as root too (ch-run 0.31 maps root
    into its user namespace). GPUs: ch-run binds the host's /dev, so AMD GPUs
    work with a ROCm image; NVIDIA needs the driver libraries in the image
    (``ch-fromhost --nvidia``). Binds are read-write: a ``:ro`` mount is
    refused rather than silently made writable.
    """

    name = "charliecloud"
    binaries = ("ch-run",)
    kinds = frozenset({"docker-archive", "dir"})
    host_env_names = ("PATH", "USER")
    client_prefixes: ClassVar[tuple[str, ...]] = ("LD_", "CH_")

    def prepare(
        self, staged: StagedImage, cache: ImageCache, *, mounts: Sequence[str | Mount] = ()
    ) -> Prepared:
        self._check_kind(staged.kind)
        extra = parse_mounts(mounts)
        if staged.kind == "dir":
            _check_rootfs(staged.path, extra, own=False)
            return Prepared(self.name, staged.path, staged.kind, staged)
        area = cache.area("rootfs")
        final = area / staged.key
        with cache.lock(f"rootfs-{staged.key}"):
            config_file = final / "config.json"
            if (final / "rootfs").is_dir() and config_file.is_file():
                config = _read_config(config_file)
                _check_rootfs(str(final / "rootfs"), extra, own=True)
                return Prepared(self.name, str(final / "rootfs"), staged.kind, staged, config)
            if os.path.lexists(final):  # a crash between unpack and publish
                shutil.rmtree(final, ignore_errors=True)
            tmp = cache.tempdir("unpack")
            try:
                config = unpack_docker_archive(staged.path, tmp / "rootfs")
                _check_rootfs(str(tmp / "rootfs"), extra, own=True)
                (tmp / "config.json").write_text(_config_json(config))
                os.chmod(tmp, 0o755)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return Prepared(self.name, str(final / "rootfs"), staged.kind, staged, config, "unpacked")

    def command(
        self,
        prepared: Prepared,
        argv: Sequence[str],
        *,
        workdir: str,
        env: Mapping[str, str],
        gpus: int = 0,
        gpu_vendor: str = "nvidia",
        mounts: Sequence[str | Mount] = (),
        name: str | None = None,
        arguments: Sequence[str] = (),
    ) -> tuple[list[str], dict[str, str]]:
        extra = self._check_call(prepared, argv, workdir, env, gpus, gpu_vendor, mounts)
        assert self._binary is not None
        for m in extra:
            if m.read_only:
                raise ConfigError(
                    f"container.mounts: {m.host}:{m.container}:ro -- charliecloud binds are"
                    " read-write; it cannot honour a read-only mount"
                )
        _check_rootfs(prepared.image, extra, own=False)
        cmd = [self._binary, "-b", f"{workdir}:{CONTAINER_WORKDIR}", "-c", CONTAINER_WORKDIR]
        for m in extra:
            cmd += ["-b", f"{m.host}:{m.container}"]
        inside = self.container_env(prepared, env)
        host: dict[str, str] = {}
        by_value: list[str] = []
        for key, value in inside.items():
            if any(key.startswith(p) for p in self.client_prefixes):
                by_value.append(f"--set-env={key}={value}")
            else:
                host[key] = value
        if by_value:
            cmd += ["--env-no-expand", *by_value]
        if "USER" not in host:
            host["USER"] = self.host_env().get("USER", "nobody")
        cmd += [*self._check_arguments(arguments), prepared.image, "--", *argv]
        return cmd, host


def _config_json(config: ImageConfig) -> str:
    import json

    return json.dumps(config.to_json(), sort_keys=True)


def _read_config(path: Path) -> ImageConfig:
    import json

    try:
        return ImageConfig.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return ImageConfig()


def _check_rootfs(rootfs: str, mounts: Sequence[Mount], *, own: bool) -> None:
    """Make sure ch-run finds its mount points; create them when ``own`` (our unpack)."""
    dirs = [*_CH_REQUIRED_DIRS, *(_CH_EXTRA_DIRS if own else ())]
    files = list(_CH_REQUIRED_FILES)
    for m in mounts:
        (dirs if os.path.isdir(m.host) else files).append(m.container.lstrip("/"))
    for rel in dirs:
        _mount_point(rootfs, rel, directory=True, create=own)
    for rel in files:
        _mount_point(rootfs, rel, directory=False, create=own)


def _mount_point(rootfs: str, rel: str, *, directory: bool, create: bool) -> None:
    """Check (or create, never through a symlink) ``rel`` inside ``rootfs``."""
    parts = [p for p in rel.split("/") if p]
    cur = rootfs
    for i, comp in enumerate(parts):
        cur = os.path.join(cur, comp)
        last = i == len(parts) - 1
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            if not create:
                raise ConfigError(
                    f"container image {rootfs} has no /{rel}, which charliecloud needs as a"
                    " mount point (a directory image must provide it)"
                ) from None
            if last and not directory:
                fd = os.open(cur, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                os.close(fd)
            else:
                os.mkdir(cur, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(
                f"container image {rootfs}: /{'/'.join(parts[: i + 1])} is a symlink; charliecloud"
                " cannot mount over it"
            )
        if not last and not stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                f"container image {rootfs}: /{'/'.join(parts[: i + 1])} is not a directory"
            )
        if last and directory and not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"container image {rootfs}: mount point /{rel} is not a directory")


# -- plugins and selection ------------------------------------------------------------

BUILTIN_RUNTIMES: tuple[type[Runtime], ...] = (
    Apptainer,
    Singularity,
    Docker,
    Podman,
    Charliecloud,
)


def load_runtimes(
    registry: Registry | Any | None = None, *, failures: list[str] | None = None
) -> dict[str, type[Runtime]]:
    """Every runtime class, by name: the built-ins, then the plugins' ``ferry_runtimes()``.

    A plugin's runtime replaces a built-in of the same name (so a site can
    ship its own ``apptainer`` wrapper); between two plugins declaring one
    name, the first registered wins. The built-ins are there even when the
    ``runtimes`` plugin (:mod:`ferry.plugins.builtin`) is not registered. A
    plugin whose hook raises, or that returns something other than Runtime
    subclasses, is skipped (and noted in ``failures`` when given).
    """
    found: dict[str, type[Runtime]] = {cls.name: cls for cls in BUILTIN_RUNTIMES}
    if registry is None:
        return found
    from_plugin: dict[str, str] = {}
    hook = registry.pm.hook.ferry_runtimes
    for impl in hook.get_hookimpls():  # registration order (calls would be LIFO)
        plugin = impl.plugin_name
        try:
            classes = list(impl.function() or [])
        except Exception as exc:  # a broken plugin must not stop the others
            _note(failures, f"plugin {plugin!r}: ferry_runtimes() failed: {exc}")
            continue
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Runtime) and cls.name):
                _note(
                    failures,
                    f"plugin {plugin!r}: ferry_runtimes() returned {cls!r}, not a named"
                    " Runtime subclass",
                )
                continue
            if cls in BUILTIN_RUNTIMES:
                continue
            if cls.name in from_plugin:
                _note(
                    failures,
                    f"plugin {plugin!r}: runtime {cls.name!r} is already declared by plugin"
                    f" {from_plugin[cls.name]!r}; ignored",
                )
                continue
            from_plugin[cls.name] = plugin
            found[cls.name] = cls
    return found


def _note(failures: list[str] | None, message: str) -> None:
    log.warning("%s", message)
    if failures is not None:
        failures.append(message)


def select_runtime(
    spec: ImageSpec,
    staged: StagedImage,
    runtimes: Mapping[str, type[Runtime] | Runtime],
    *,
    environ: Mapping[str, str] | None = None,
) -> Runtime:
    """The runtime to run ``staged`` with.

    ``spec.runtime`` when given (an error if it is unknown, cannot run the
    image's kind, or is not on this node -- the message names what is);
    otherwise the first available runtime in :data:`DEFAULT_ORDER` for the
    image's kind, then any plugin runtime that accepts the kind.

    :param runtimes: as :func:`load_runtimes` returns (classes are
        instantiated with ``environ``; instances are used as they are)
    :raises ConfigError: unknown runtime, or one that cannot run the kind
    :raises RuntimeUnavailable: nothing suitable is installed
    """
    kind = staged.kind

    def instance(name: str) -> Runtime:
        value = runtimes[name]
        return value(environ) if isinstance(value, type) else value

    if spec.runtime:
        if spec.runtime not in runtimes:
            raise ConfigError(
                f"container.runtime {spec.runtime!r} is not a known runtime (known:"
                f" {', '.join(sorted(runtimes))})"
            )
        rt = instance(spec.runtime)
        rt._check_kind(kind)
        if not rt.available():
            others = [n for n in sorted(runtimes) if n != spec.runtime and instance(n).available()]
            raise RuntimeUnavailable(
                f"container runtime {spec.runtime} is not available on this node"
                f" ({rt.unavailable_reason()}); available here:"
                f" {', '.join(others) or 'none'}",
                plugin=spec.runtime,
            )
        return rt
    order = [n for n in DEFAULT_ORDER.get(kind, ()) if n in runtimes]
    order += [n for n in runtimes if n not in order]
    tried: list[str] = []
    for name in order:
        rt = instance(name)
        if not rt.accepts(kind):
            continue
        if rt.available():
            return rt
        tried.append(f"{name} ({rt.unavailable_reason()})")
    raise RuntimeUnavailable(
        f"no container runtime on this node can run {kind} image {staged.source or staged.path}:"
        f" tried {'; '.join(tried) or 'none'}"
    )
