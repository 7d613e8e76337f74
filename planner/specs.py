"""One abstract job -> one worker job spec (docs/jobspec.md).

What the planner puts into a spec, and from where (docs/planner.md has the
user-facing version):

* **executable**: from the transformation catalog. An ``installed`` entry for
  the job's compute site is used in place (its PFN path); else a ``stageable``
  entry (any site) is staged into the work directory as an input with
  ``executable: true`` and the transformation's sha256; else an ``installed``
  entry of another site is used in place, with a warning. With no
  transformation catalog at all, the job's transformation name is the
  executable: an input of the job with that LFN, or a program on ``PATH``.
* **container**: the chosen entry's container (image, sha256, mounts), used in
  place when its ``image.site`` is the job's compute site and the image is a local
  path; ``arguments`` and ``launcher`` from the job's merged ``pegasus`` profiles
  ``container.arguments`` and ``container.launcher`` (+ ``.arguments``), each
  split as a shell would split it (see :func:`container_words`).
* **arguments, stdin/stdout/stderr**: as the workflow has them.
* **environment**: the ``env`` profiles; **resources**: ``condor.request_*``
  before ``pegasus.cores/memory/diskspace/gpus``; **timeout**:
  ``pegasus.checkpoint.time`` / ``pegasus.maxwalltime`` as kickstart uses them
  (see :func:`timeouts`); ``pegasus.exitcode.successmsg``/``failuremsg`` become
  output checks; ``pegasus.transfer.threads`` the stage-in/out threads.
* **inputs**: a file another planned job outputs comes from the staging
  location its producer writes to; any other from every replica in the replica
  catalog, ``file://`` first (priority 100), then replicas at the job's compute
  site (50), then the rest (10), unless the replica carries its own priority;
  the replica catalog's sha256 is checked on stage-in.
* **outputs**: to the staging location when a planned job reads them or they are
  not staged out; to every output site when ``stageOut`` is set.
* **checkpoints**: kept at ``<staging>/.checkpoints/<job id>/<lfn>``; a
  checkpoint with ``stageOut`` also goes to the output sites (optional).
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
from dataclasses import dataclass, field, replace

import msgspec

from ferry.worker.jobspec import (
    JOBSPEC_VERSION,
    Checkpoint,
    Destination,
    Input,
    JobSpec,
    Output,
    Resources,
    SourceURL,
    Success,
    TransferSettings,
)
from ferry.worker.jobspec import (
    Container as SpecContainer,
)

from . import profiles as prof
from .graph import Graph, PlanError, job_inputs
from .model import (
    USE_CHECKPOINT,
    USE_INOUT,
    USE_INPUT,
    USE_OUTPUT,
    Container,
    Job,
    Profiles,
    Replica,
    Transformation,
    TransformationSite,
    Workflow,
)
from .rundir import Register
from .sites import SiteLayout, to_url

__all__ = ["Executable", "SpecBuilder", "container_words", "replica_sources", "timeouts"]

PRIO_FILE = 100.0
PRIO_SITE = 50.0
PRIO_OTHER = 10.0


def replica_sources(replicas: list[Replica], site: str) -> list[SourceURL]:
    """Every replica as a source URL, highest priority first (Pegasus's default selector)."""
    out = []
    for r in replicas:
        url = to_url(r.pfn)
        if r.priority is not None:
            pr = float(r.priority)
        elif url.startswith("file:"):
            pr = PRIO_FILE
        elif r.site == site:
            pr = PRIO_SITE
        else:
            pr = PRIO_OTHER
        out.append(SourceURL(url=url, priority=pr, site=r.site))
    if len(out) > 1:
        out.sort(key=lambda s: -(s.priority or 0.0))
    return out


def timeouts(p: Profiles, where: str) -> tuple[float | None, float | None]:
    """(timeout, kill_grace) in seconds from ``pegasus.checkpoint.time`` / ``maxwalltime``.

    Both profiles are in minutes. ``checkpoint.time`` is when the job is sent
    TERM (so it can write its checkpoint); with ``maxwalltime`` as well, KILL
    follows half of the remaining time later, and a ``checkpoint.time`` less
    than 10 s before ``maxwalltime`` is a planning error, as in pegasus-plan.
    With only ``maxwalltime``, TERM comes 5 minutes before it (10 s before for
    jobs shorter than 5 minutes) and KILL at it. These are kickstart's
    ``-k``/``-K`` as pegasus-plan sets them.
    """
    ck = prof.get_float(p, "pegasus", "checkpoint.time", where=where)
    mw = prof.get_float(p, "pegasus", "maxwalltime", where=where)
    total = mw * 60.0 if mw is not None and mw > 0 else None
    if ck is not None and ck > 0:
        term = ck * 60.0
        if total is not None and total - term < MIN_KILL_GAP:
            raise PlanError(
                f"{where}profile pegasus.checkpoint.time ({_num(ck)} min) must come at least"
                f" {MIN_KILL_GAP:.0f} s before pegasus.maxwalltime ({_num(mw)} min)"
            )
        if total is None:
            return term, None
        return term, (total - term) / 2.0
    if total is not None:
        term = total - 300.0 if total - 300.0 > 0 else total - MIN_KILL_GAP
        if term <= 0:
            return total, None
        return term, total - term
    return None, None


#: kickstart's least gap between the TERM (checkpoint) and the wall time, seconds
MIN_KILL_GAP = 10.0


def _num(v: float | None) -> str:
    return "" if v is None else (str(int(v)) if v == int(v) else str(v))


@dataclass
class Executable:
    """How a transformation runs on a compute site (cached per transformation and site)."""

    executable: str
    stage: Input | None = None
    container: SpecContainer | None = None
    #: profile layers of the transformation, its site entry and its container
    layers: list[Profiles] = field(default_factory=list)
    warning: str | None = None


@dataclass
class _Template:
    """What jobs of one transformation, compute site and profile set share."""

    exe: Executable
    environment: dict[str, str]
    resources: Resources
    timeout: float | None
    kill_grace: float | None
    success: Success | None
    transfer: TransferSettings | None
    labels: dict[str, str]
    retries: int
    clusters_size: int | None
    clusters_num: int | None


def _exe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", key.replace("::", "-"))


class SpecBuilder:
    """Builds the job spec of each planned job; caches what jobs share."""

    def __init__(
        self,
        wf: Workflow,
        graph: Graph,
        layout: SiteLayout,
        *,
        records_dir: str,
        kept: bytearray,
        staged: bytearray,
        reused_sources: dict[int, list[SourceURL]],
        job_site: list[str] | None,
        default_retries: int,
    ) -> None:
        self.wf = wf
        self.graph = graph
        self.layout = layout
        self.records_dir = records_dir
        self.kept = kept
        self.staged = staged
        self.reused_sources = reused_sources
        self.job_site = job_site
        self.default_retries = default_retries
        self.tc = wf.transformation_catalog
        self.has_tc = bool(self.tc.transformations)
        self.base_profiles = prof.merge([prof.from_properties(wf.properties), wf.profiles])
        self._exe: dict[tuple[str, str], Executable] = {}
        self._merged: dict[tuple[str, str], Profiles] = {}
        self._templates: dict[tuple[str, str, int], _Template] = {}
        self._by_job: list[_Template | None] = [None] * len(wf.jobs)
        self._first_output = layout.outputs[0] if layout.outputs else None
        #: whether any job has a checkpoint file (set by the planner's staging pass)
        self.has_checkpoints = False
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self._warned_containers: set[str] = set()
        self._which: dict[str, bool] = {}
        #: pegasus.integrity.checking = nosymlink: no sha256 check of what is used in place
        self._check_linked = (
            str(wf.properties.get("pegasus.integrity.checking", "full")).strip().lower()
            != "nosymlink"
        )

    # -- where a job runs ----------------------------------------------------

    def site_of(self, j: int) -> str:
        return self.job_site[j] if self.job_site is not None else self.layout.compute_sites[0]

    # -- transformations -----------------------------------------------------

    def check_transformation(self, job: Job) -> str | None:
        """Why the job's transformation cannot be resolved, or None."""
        if self.has_tc:
            tx = self.tc.lookup(job)
            if tx is None:
                return (
                    f"job {job.id}: transformation {job.transformation!r} is not in the"
                    " transformation catalog"
                )
            if not tx.sites:
                return f"job {job.id}: transformation {tx.key!r} has no sites in the catalog"
            for ts in tx.sites:
                if ts.container and ts.container not in self.tc.containers:
                    return (
                        f"transformation {tx.key!r} (site {ts.name}) uses container"
                        f" {ts.container!r}, which the transformation catalog does not define"
                    )
            return None
        name = job.name
        if any(self.wf.lfns[u.lfn] == name for u in job_inputs(job)):
            return None
        found = self._which.get(name)
        if found is None:
            found = self._which[name] = shutil.which(name) is not None
        if not found:
            return (
                f"job {job.id}: transformation {name!r} is undefined: there is no transformation"
                f" catalog, no program {name!r} on PATH and no input of the job named {name!r}"
            )
        return None

    def executable(self, job: Job, site: str) -> Executable:
        key = (job.transformation, site)
        exe = self._exe.get(key)
        if exe is None:
            exe = self._exe[key] = self._resolve(job, site)
            if exe.warning and exe.warning not in self._warned:
                self._warned.add(exe.warning)
                self.warnings.append(exe.warning)
        return exe

    def _resolve(self, job: Job, site: str) -> Executable:
        if not self.has_tc:
            return Executable(executable=job.name)
        tx = self.tc.lookup(job)
        if tx is None:  # validated before: cannot happen
            raise PlanError(f"job {job.id}: transformation {job.transformation!r} is undefined")
        installed_here = [s for s in tx.sites if s.type == "installed" and s.name == site]
        stageable = [s for s in tx.sites if s.type == "stageable"]
        installed = [s for s in tx.sites if s.type == "installed"]
        if installed_here:
            return self._installed(tx, installed_here[0], site)
        if stageable:
            return self._stageable(tx, stageable, site)
        ts = installed[0]
        exe = self._installed(tx, ts, site)
        exe.warning = (
            f"transformation {tx.key!r} is installed at site {ts.name}, not at compute site"
            f" {site}; using {ts.pfn} in place"
        )
        return exe

    def _container(
        self, ts: TransformationSite, site: str
    ) -> tuple[SpecContainer | None, Profiles | None]:
        if not ts.container:
            return None, None
        c: Container = self.tc.containers[ts.container]
        self._container_warnings(c)
        kind = None
        try:
            from ferry.containers.image import guess_kind

            guess_kind(c.image)
        except Exception:  # Pegasus names: a docker image file is a `docker save` tar
            kind = {"docker": "docker-archive", "singularity": "sif"}.get(c.type)
        image = c.image if "://" in c.image else to_url(c.image)
        # an image on the compute site itself is used where it is, as pegasus-lite
        # symlinks a file:// input that is already on the compute site
        in_place = c.image_site == site and image.startswith("file:")
        return (
            SpecContainer(
                image=image,
                kind=kind,
                sha256=c.sha256 if self._check_linked or not in_place else None,
                mounts=list(c.mounts),
                name=c.name,
                in_place=in_place,
            ),
            c.profiles,
        )

    def _container_warnings(self, c: Container) -> None:
        """Warn once per container about what the job spec cannot carry."""
        if c.name in self._warned_containers:
            return
        self._warned_containers.add(c.name)
        said: list[str] = []
        if c.type == "shifter":
            said.append(
                f"container {c.name!r} is of type shifter, for which ferry has no runtime:"
                f" the worker will try {c.image} with another one (apptainer, docker, ...)"
            )
        for w in said:
            if w not in self._warned:
                self._warned.add(w)
                self.warnings.append(w)

    def _installed(self, tx: Transformation, ts: TransformationSite, site: str) -> Executable:
        pfn = ts.pfn
        if pfn.startswith("file://"):
            pfn = pfn[len("file://") :]
        elif "://" in pfn:
            return self._stageable(tx, [ts], ts.name, compute_site=site)
        container, cprof = self._container(ts, site)
        return Executable(
            executable=pfn, container=container, layers=[tx.profiles, ts.profiles, cprof or {}]
        )

    def _stageable(
        self,
        tx: Transformation,
        entries: list[TransformationSite],
        site: str,
        *,
        compute_site: str | None = None,
    ) -> Executable:
        name = _exe_name(tx.key)
        reps = [Replica(site=ts.name, pfn=ts.pfn) for ts in entries]
        stage = Input(
            lfn=name,
            sources=replica_sources(reps, site),
            sha256=tx.sha256,
            executable=True,
        )
        container, cprof = self._container(entries[0], compute_site or site)
        return Executable(
            executable=name,
            stage=stage,
            container=container,
            layers=[tx.profiles, entries[0].profiles, cprof or {}],
        )

    # -- profiles --------------------------------------------------------------

    def profiles(self, job: Job, site: str) -> Profiles:
        """The job's profiles after merging every layer (see :mod:`ferry.planner.profiles`)."""
        key = (job.transformation, site)
        if job.profiles is None:
            merged = self._merged.get(key)
            if merged is None:
                merged = self._merged[key] = self._merge(job, site)
            return merged
        return self._merge(job, site)

    def _merge(self, job: Job, site: str) -> Profiles:
        layers: list[Profiles | None] = [
            self.base_profiles,
            job.profiles,
            self.layout.profiles(site),
        ]
        if self.has_tc and self.tc.lookup(job) is not None:
            layers.extend(self.executable(job, site).layers)
        return prof.merge(layers)

    def _retries(self, p: Profiles, where: str) -> int:
        n = prof.get_int(p, "dagman", "retry", where=where)
        return self.default_retries if n is None else max(0, n)

    def templates(self) -> list[_Template | None]:
        """The template of every kept job, by job index (None for the others)."""
        by_job = self._by_job
        kept = self.kept
        seen: dict[tuple, _Template] = {}
        job_site = self.job_site
        site = self.layout.compute_sites[0]
        for j, job in enumerate(self.wf.jobs):
            if by_job[j] is not None or not kept[j]:
                continue
            if job_site is not None:
                site = job_site[j]
            p = job.profiles
            key = (job.name, job.namespace, job.version, site, id(p) if p else 0)
            t = seen.get(key)
            if t is None:
                t = seen[key] = self._template(job, site)
            by_job[j] = t
        return by_job

    def template(self, j: int) -> _Template:
        """The template of job ``j`` (cached per job)."""
        t = self._by_job[j]
        if t is None:
            t = self._by_job[j] = self._template(self.wf.jobs[j], self.site_of(j))
        return t

    # -- the spec ----------------------------------------------------------------

    def _template(self, job: Job, site: str) -> _Template:
        """What jobs of one transformation, site and profile set share (computed once)."""
        key = (job.transformation, site, id(job.profiles) if job.profiles else 0)
        t = self._templates.get(key)
        if t is not None:
            return t
        exe = self.executable(job, site)
        p = self.profiles(job, site)
        where = f"job {job.id}: "
        if exe.container is not None:
            exe = self._run_options(exe, p)
        env = p.get("env")
        timeout, grace = timeouts(p, where)
        threads = prof.get_int(p, "pegasus", "transfer.threads", where=where)
        t = _Template(
            exe=exe,
            environment={str(k): str(v) for k, v in env.items()} if env else {},
            resources=_resources(p, where),
            timeout=timeout,
            kill_grace=grace,
            success=_success(p),
            transfer=TransferSettings(threads=max(1, threads)) if threads else None,
            labels={"workflow": self.wf.name, "transformation": job.transformation, "site": site},
            retries=self._retries(p, where),
            clusters_size=prof.get_int(p, "pegasus", "clusters.size", where=where),
            clusters_num=prof.get_int(p, "pegasus", "clusters.num", where=where),
        )
        self._templates[key] = t
        return t

    def _run_options(self, exe: Executable, p: Profiles) -> Executable:
        """``exe`` with its container's ``arguments`` and ``launcher`` from the job's merged
        ``pegasus`` profiles (the container's own, where ``Container(arguments=...)`` puts
        them, or any other level: pegasus-lite reads them from the job's profiles)."""
        c = exe.container
        assert c is not None
        arguments = container_words(p, _ARGUMENTS, c.name)
        launcher = container_words(p, _LAUNCHER, c.name)
        if launcher:
            launcher += container_words(p, _LAUNCHER_ARGUMENTS, c.name)
        elif prof.get(p, "pegasus", _LAUNCHER_ARGUMENTS) not in (None, ""):
            w = (
                f"container {c.name!r}: profile pegasus.{_LAUNCHER_ARGUMENTS} is set without"
                f" pegasus.{_LAUNCHER} and is ignored"
            )
            if w not in self._warned:
                self._warned.add(w)
                self.warnings.append(w)
        if not arguments and not launcher:
            return exe
        return replace(
            exe, container=msgspec.structs.replace(c, arguments=arguments, launcher=launcher)
        )

    def _input(self, j: int, job: Job, li: int, site: str, executable: bool, size) -> Input:  # type: ignore[no-untyped-def]
        lfn = self.wf.lfns[li]
        pj = self.graph.producer[li]
        if pj >= 0 and pj != j and self.kept[pj]:
            loc = self.layout.staging[self.site_of(pj)]
            return Input(
                lfn=lfn,
                sources=[SourceURL(url=loc.get(lfn), priority=PRIO_FILE, site=loc.site)],
                executable=executable,
                size=size,
            )
        rc = self.wf.replica_catalog
        reps = _replicas(rc, lfn)
        sha = None
        if reps:
            sources = replica_sources(reps, site)
            for r in reps:
                if r.sha256:
                    sha = r.sha256
                    break
            else:
                sha = rc.checksums.get(lfn)
        else:
            sources = self.reused_sources.get(li, [])
        return Input(lfn=lfn, sources=sources, sha256=sha, executable=executable, size=size)

    def build(self, j: int) -> JobSpec:
        wf = self.wf
        lfns = wf.lfns
        job = wf.jobs[j]
        t = self.template(j)
        site = t.labels["site"]
        exe = t.exe
        staged = self.staged
        no_tc = not self.has_tc
        loc = self.layout.staging[site]
        out_locs = self.layout.outputs

        inputs: list[Input] = []
        outputs: list[Output] = []
        checkpoints: list[Checkpoint] = []
        if exe.stage is not None:
            inputs.append(exe.stage)
        seen_stdin = job.stdin is None
        seen_out = 0
        for u in job.uses:
            t_ = u.type
            li = u.lfn
            if t_ == USE_INPUT or t_ == USE_INOUT:
                inputs.append(
                    self._input(
                        j,
                        job,
                        li,
                        site,
                        u.executable or (no_tc and lfns[li] == job.name),
                        u.size,
                    )
                )
                if li == job.stdin:
                    seen_stdin = True
            if t_ == USE_OUTPUT or t_ == USE_INOUT:
                lfn = lfns[li]
                if staged[li]:
                    dests = [Destination(url=loc.put(lfn), site=loc.site)]
                else:
                    dests = []
                if u.stage_out:
                    for o in out_locs:
                        dests.append(Destination(url=o.put(lfn), site=o.site))
                outputs.append(Output(lfn=lfn, destinations=dests, required=not u.optional))
                if li == job.stdout or li == job.stderr:
                    seen_out += 1
            elif t_ == USE_CHECKPOINT:
                lfn = lfns[li]
                checkpoints.append(Checkpoint(lfn=lfn, url=loc.put(f".checkpoints/{job.id}/{lfn}")))
                if u.stage_out:
                    outputs.append(
                        Output(
                            lfn=lfn,
                            destinations=[
                                Destination(url=o.put(lfn), site=o.site) for o in out_locs
                            ],
                            required=False,
                        )
                    )
        if not seen_stdin:
            inputs.append(self._input(j, job, job.stdin, site, False, None))  # type: ignore[arg-type]
        if seen_out < (job.stdout is not None) + (job.stderr is not None):
            have = {o.lfn for o in outputs}
            for std in (job.stdout, job.stderr):
                if std is not None and lfns[std] not in have:
                    outputs.append(
                        Output(
                            lfn=lfns[std],
                            destinations=[Destination(url=loc.put(lfns[std]), site=loc.site)],
                        )
                    )
        spec = JobSpec(
            version=JOBSPEC_VERSION,
            id=job.id,
            name=t.labels["transformation"],
            executable=exe.executable,
            arguments=job.arguments,
            environment=t.environment,
            stdin=lfns[job.stdin] if job.stdin is not None else None,
            stdout=lfns[job.stdout] if job.stdout is not None else None,
            stderr=lfns[job.stderr] if job.stderr is not None else None,
            inputs=inputs,
            outputs=outputs,
            checkpoints=checkpoints,
            container=exe.container,
            resources=t.resources,
            timeout=t.timeout,
            records_dir=self.records_dir,
            labels=t.labels,
        )
        if t.kill_grace is not None:
            spec.kill_grace = t.kill_grace
        if t.success is not None:
            spec.success = t.success
        if t.transfer is not None:
            spec.transfer = t.transfer
        return spec

    def register(self, j: int) -> list[Register]:
        """The job's outputs for the output replica catalog (``replicas.out.yml``).

        Only files staged out are registered: their output-site location (the
        first output site's). Checkpoint files too (``add_checkpoint(...,
        register_replica=True)``): the backends register one only if the job
        staged it out.
        """
        out: list[Register] = []
        first = self._first_output
        if first is None:
            return out
        lfns = self.wf.lfns
        for u in self.wf.jobs[j].uses:
            t = u.type
            if t in _REGISTERED and u.register_replica and u.stage_out:
                lfn = lfns[u.lfn]
                out.append(Register(lfn, first.get(lfn), first.site))
        return out

    def distinct_templates(self) -> list[_Template]:
        """Every template made so far (one per transformation, site and profile set)."""
        return list(self._templates.values())


_GROUP = re.compile(r"\[(\d+)\]")
#: pegasus profiles of a container job's runtime command line (Container(arguments=...)
#: writes the first)
_ARGUMENTS = "container.arguments"
_LAUNCHER = "container.launcher"
_LAUNCHER_ARGUMENTS = "container.launcher.arguments"


def container_words(p: Profiles, key: str, container: str | None) -> list[str]:
    """The ``pegasus.<key>`` profile split into words as a shell splits them (quotes
    group, backslashes escape; no variables or globs are expanded, nothing is run):
    pegasus-lite writes the value into its bash script as it is.

    :raises PlanError: an unbalanced quote, naming the container and the profile
    """
    value = prof.get(p, "pegasus", key)
    if value is None or value == "":
        return []
    text = str(value)
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise PlanError(
            f"container {container!r}: profile pegasus.{key} {text!r} cannot be split into"
            f" arguments: {str(exc).lower()}"
        ) from None


#: use types whose staged-out files go to the output replica catalog
_REGISTERED = (USE_OUTPUT, USE_INOUT, USE_CHECKPOINT)
_PFN_PARTS: dict[str, list[str | int]] = {}


def _pfn_parts(pfn: str) -> list[str | int]:
    parts = _PFN_PARTS.get(pfn)
    if parts is None:
        parts = []
        pos = 0
        for m in _GROUP.finditer(pfn):
            parts.append(pfn[pos : m.start()])
            parts.append(int(m.group(1)))
            pos = m.end()
        parts.append(pfn[pos:])
        _PFN_PARTS[pfn] = parts
    return parts


def _replicas(rc, lfn: str) -> list[Replica]:  # type: ignore[no-untyped-def]
    """Every replica of ``lfn``: exact entries, then regex entries (``[n]`` is group n),
    as :func:`ferry.planner.catalogs.replicas_for` has it, with the PFN templates parsed once."""
    exact = rc.entries.get(lfn)
    if not rc.regex:
        return exact or []
    out = list(exact) if exact else []
    for pattern, reps in rc.regex:
        m = pattern.fullmatch(lfn)
        if m is None:
            continue
        groups = (m.group(0), *m.groups())
        for r in reps:
            pfn = "".join(
                p if isinstance(p, str) else ((groups[p] or "") if p < len(groups) else f"[{p}]")
                for p in _pfn_parts(r.pfn)
            )
            out.append(Replica(r.site, pfn, r.sha256, r.priority))
    return out


def _resources(p: Profiles, where: str) -> Resources:
    def first(*keys: tuple[str, str]) -> float | None:
        for ns, key in keys:
            v = prof.get_float(p, ns, key, where=where)
            if v is not None:
                return v
        return None

    cpus = first(("condor", "request_cpus"), ("pegasus", "cores"))
    # HTCondor's units: request_memory in MiB, request_disk in KiB, unless a suffix says
    mem = prof.get_size(p, "condor", "request_memory", unit="m", where=where)
    if mem is None:
        mem = first(("pegasus", "memory"))
    disk = prof.get_size(p, "condor", "request_disk", unit="k", where=where)
    if disk is None:
        disk = first(("pegasus", "diskspace"))
    gpus = first(("condor", "request_gpus"), ("pegasus", "gpus"))
    if cpus is None and mem is None and disk is None and gpus is None:
        return Resources()
    return Resources(
        cpus=max(1, int(cpus or 1)),
        memory_mb=math.ceil(mem) if mem is not None else None,  # 1000 KiB: 1 MiB, not 0
        disk_mb=math.ceil(disk) if disk is not None else None,
        gpus=int(gpus or 0),
    )


def _success(p: Profiles) -> Success | None:
    ok = prof.get(p, "pegasus", "exitcode.successmsg")
    bad = prof.get(p, "pegasus", "exitcode.failuremsg")
    if not ok and not bad:
        return None
    s = Success()
    if ok:
        s.stdout_must = [re.escape(str(ok))]
    if bad:
        s.stdout_must_not = [re.escape(str(bad))]
        s.stderr_must_not = [re.escape(str(bad))]
    return s
