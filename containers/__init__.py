"""ferry.containers: container images as data, and the runtimes that run them.

What the worker calls, in order (see docs/containers.md)::

    spec = ImageSpec.from_container(jobspec.container)
    cache = ImageCache()                                  # $FERRY_IMAGE_CACHE
    staged = cache.stage(spec, fetch)                     # fetch(url, dest, sha) -> sha
    runtime = select_runtime(spec, staged, load_runtimes(registry))
    prepared = runtime.prepare(staged, cache, mounts=spec.mounts)
    argv, env = runtime.command(prepared, [exe, *args], workdir=workdir,
                                env=job_env, gpus=n, gpu_vendor=vendor,
                                mounts=spec.mounts)
    subprocess.Popen(argv, env=env, ...)

This package depends on :mod:`ferry.plugins` only; the download goes through
the ``fetch`` callable the worker passes in.
"""

from __future__ import annotations

import ferry.plugins  # noqa: F401  (imports msgspec the lean way, see there)

from .cache import (
    DEFAULT_SHARED_PREFIXES,
    Fetch,
    ImageCache,
    LockTimeout,
    StagedImage,
    default_cache_root,
    shared_prefixes,
)
from .image import (
    KINDS,
    REGISTRY_KINDS,
    ImageSpec,
    guess_kind,
    is_registry_reference,
)
from .runtimes import (
    BUILTIN_RUNTIMES,
    CONTAINER_WORKDIR,
    DEFAULT_ORDER,
    Apptainer,
    Charliecloud,
    Docker,
    Mount,
    Podman,
    Prepared,
    Runtime,
    RuntimeCommandFailed,
    RuntimeUnavailable,
    Singularity,
    load_runtimes,
    parse_mounts,
    select_runtime,
)
from .unpack import (
    ArchiveManifest,
    ImageConfig,
    ImageError,
    UnsafeImage,
    read_image_config,
    read_manifest,
    unpack_docker_archive,
)

__all__ = [
    "BUILTIN_RUNTIMES",
    "CONTAINER_WORKDIR",
    "DEFAULT_ORDER",
    "DEFAULT_SHARED_PREFIXES",
    "KINDS",
    "REGISTRY_KINDS",
    "Apptainer",
    "ArchiveManifest",
    "Charliecloud",
    "Docker",
    "Fetch",
    "ImageCache",
    "ImageConfig",
    "ImageError",
    "ImageSpec",
    "LockTimeout",
    "Mount",
    "Podman",
    "Prepared",
    "Runtime",
    "RuntimeCommandFailed",
    "RuntimeUnavailable",
    "Singularity",
    "StagedImage",
    "UnsafeImage",
    "default_cache_root",
    "guess_kind",
    "is_registry_reference",
    "load_runtimes",
    "parse_mounts",
    "read_image_config",
    "read_manifest",
    "select_runtime",
    "shared_prefixes",
    "unpack_docker_archive",
]
