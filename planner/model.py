"""The abstract workflow in memory: compact enough for a million jobs.

File names (LFNs) are interned into one table and referred to by integer;
jobs and uses are ``msgspec.Struct`` objects (created in C, some four times
faster than a slotted dataclass, and not tracked by the cyclic garbage
collector: they hold no cycles); dependencies are integer lists. The
readers in :mod:`ferry.planner.pegasus` build this model directly and drop
the parsed document; the planning passes only read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

__all__ = [
    "USE_CHECKPOINT",
    "USE_INOUT",
    "USE_INPUT",
    "USE_NONE",
    "USE_OUTPUT",
    "Container",
    "Directory",
    "FileServer",
    "Job",
    "Replica",
    "ReplicaCatalog",
    "Site",
    "SiteCatalog",
    "Transformation",
    "TransformationCatalog",
    "TransformationSite",
    "Use",
    "Workflow",
]

USE_INPUT = 0
USE_OUTPUT = 1
USE_INOUT = 2
USE_CHECKPOINT = 3
USE_NONE = 4
USE_TYPES = {
    "input": USE_INPUT,
    "output": USE_OUTPUT,
    "inout": USE_INOUT,
    "checkpoint": USE_CHECKPOINT,
    "none": USE_NONE,
}

#: profiles: namespace -> key -> value (values kept as read: str, int or float)
Profiles = dict[str, dict[str, object]]


class Use(msgspec.Struct, gc=False):
    """A job's use of a file. ``lfn`` indexes :attr:`Workflow.lfns`."""

    lfn: int
    type: int
    stage_out: bool = True
    register_replica: bool = True
    optional: bool = False
    executable: bool = False
    bypass: bool = False
    size: int | None = None

    @property
    def is_input(self) -> bool:
        return self.type in (USE_INPUT, USE_INOUT)

    @property
    def is_output(self) -> bool:
        return self.type in (USE_OUTPUT, USE_INOUT)


class Job(msgspec.Struct, gc=False):
    """One abstract job. ``transformation`` is ``namespace::name:version`` as written."""

    id: str
    name: str
    namespace: str | None = None
    version: str | None = None
    arguments: list[str] = []
    uses: list[Use] = []
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    profiles: Profiles | None = None
    node_label: str | None = None
    #: "job", "pegasusWorkflow" or "condorWorkflow"
    kind: str = "job"
    #: the job's ``metadata`` mapping, if any
    metadata: dict[str, object] | None = None

    @property
    def transformation(self) -> str:
        key = self.name
        if self.namespace:
            key = f"{self.namespace}::{key}"
        if self.version:
            key = f"{key}:{self.version}"
        return key


@dataclass(slots=True)
class Replica:
    site: str
    pfn: str
    sha256: str | None = None
    priority: int | None = None


@dataclass
class ReplicaCatalog:
    """LFN -> replicas; ``regex`` entries are (compiled pattern, replicas with ``[n]`` PFNs)."""

    entries: dict[str, list[Replica]] = field(default_factory=dict)
    regex: list[tuple[object, list[Replica]]] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    #: LFN -> the entry's ``metadata`` mapping
    metadata: dict[str, dict[str, object]] = field(default_factory=dict)


@dataclass
class Container:
    name: str
    type: str  # docker | singularity | shifter
    image: str
    image_site: str | None = None
    mounts: list[str] = field(default_factory=list)
    sha256: str | None = None
    bypass: bool = False
    profiles: Profiles = field(default_factory=dict)


@dataclass
class TransformationSite:
    name: str
    pfn: str
    type: str  # installed | stageable
    container: str | None = None
    bypass: bool = False
    profiles: Profiles = field(default_factory=dict)


@dataclass
class Transformation:
    name: str
    namespace: str | None = None
    version: str | None = None
    sites: list[TransformationSite] = field(default_factory=list)
    sha256: str | None = None
    requires: list[str] = field(default_factory=list)
    profiles: Profiles = field(default_factory=dict)

    @property
    def key(self) -> str:
        key = self.name
        if self.namespace:
            key = f"{self.namespace}::{key}"
        if self.version:
            key = f"{key}:{self.version}"
        return key


@dataclass
class TransformationCatalog:
    transformations: dict[str, Transformation] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)

    def lookup(self, job: Job) -> Transformation | None:
        """By ``namespace::name:version``, then less specific keys."""
        for key in (
            job.transformation,
            f"{job.namespace}::{job.name}" if job.namespace else None,
            job.name,
        ):
            if key and key in self.transformations:
                return self.transformations[key]
        return None


@dataclass
class FileServer:
    url: str
    operation: str = "all"


@dataclass
class Directory:
    type: str  # sharedScratch | sharedStorage | localScratch | localStorage
    path: str
    file_servers: list[FileServer] = field(default_factory=list)
    shared_file_system: bool = False


@dataclass
class Site:
    name: str
    directories: list[Directory] = field(default_factory=list)
    profiles: Profiles = field(default_factory=dict)
    arch: str | None = None
    os_type: str | None = None

    def directory(self, *types: str) -> Directory | None:
        for t in types:
            for d in self.directories:
                if d.type == t:
                    return d
        return None


@dataclass
class SiteCatalog:
    sites: dict[str, Site] = field(default_factory=dict)


@dataclass
class Workflow:
    """The abstract workflow: jobs, interned LFNs, edges, catalogs."""

    name: str
    jobs: list[Job] = field(default_factory=list)
    lfns: list[str] = field(default_factory=list)
    lfn_index: dict[str, int] = field(default_factory=dict)
    job_index: dict[str, int] = field(default_factory=dict)
    #: explicit edges from jobDependencies: parent index -> child indexes
    children: list[list[int]] = field(default_factory=list)
    profiles: Profiles = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)
    replica_catalog: ReplicaCatalog = field(default_factory=ReplicaCatalog)
    transformation_catalog: TransformationCatalog = field(default_factory=TransformationCatalog)
    site_catalog: SiteCatalog = field(default_factory=SiteCatalog)
    #: things read but not supported yet (hooks, sub-workflows): one line each
    warnings: list[str] = field(default_factory=list)
    source: str = "<workflow>"
    #: the Pegasus properties in force (pegasus.properties, --conf, overrides)
    properties: dict[str, str] = field(default_factory=dict)
    #: LFN -> a sha256 given as ``checksum.value`` in a job's ``uses`` metadata (Pegasus
    #: checks it like a replica catalog's, which wins where both give one)
    use_sums: dict[str, str] = field(default_factory=dict)

    def intern(self, lfn: str) -> int:
        idx = self.lfn_index.get(lfn)
        if idx is None:
            idx = len(self.lfns)
            self.lfns.append(lfn)
            self.lfn_index[lfn] = idx
        return idx

    def add_job(self, job: Job) -> int:
        idx = len(self.jobs)
        self.jobs.append(job)
        self.job_index[job.id] = idx
        self.children.append([])
        return idx
