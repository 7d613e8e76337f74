"""Planning: an abstract workflow -> a run directory of job specs (docs/planner.md, docs/rundir.md).

The passes, in order:

1. **graph**: edges from ``jobDependencies`` and from files (:mod:`.graph`);
   a cycle or a file two jobs output is an error naming them.
2. **validation**, before anything is written: every job's transformation
   resolves (:meth:`.specs.SpecBuilder.check_transformation`), every input is
   produced by a job or has a replica, every LFN is a relative path.
3. **sites**: compute sites, staging and output locations (:mod:`.sites`).
4. **data reuse** (unless ``force``): a job whose outputs all exist already, in
   the replica catalog or (``reuse_output_site``) at the output site, is
   pruned; so is, in cascade, a job all of whose children are pruned and none
   of whose staged-out outputs is missing.
5. **clustering**: jobs of one transformation on one level of the graph are
   grouped when their ``pegasus`` profile ``clusters.size`` (jobs per
   cluster) or ``clusters.num`` (clusters per level) asks; ``size`` wins when
   both are set. A cluster is one plan entry run by one worker process.
6. **cleanup**: ``inplace`` removes each intermediate file from staging once
   the jobs that write and read it have succeeded; ``leaf`` removes them all
   when the whole workflow has succeeded; ``none`` keeps them.
7. **write**: the job specs (in parallel processes for large plans), then
   ``plan.json``.
"""

from __future__ import annotations

import gc
import os
import re
import time
import uuid
from array import array
from dataclasses import dataclass, field

import msgspec

from ferry.worker.jobspec import SourceURL

from . import profiles as prof
from .graph import Graph, PlanError, build_graph, job_inputs, job_outputs
from .model import USE_CHECKPOINT, USE_INOUT, USE_INPUT, USE_OUTPUT, Workflow
from .rundir import PLAN_VERSION, SHARD, CleanupAction, ClusterFile, Plan, PlanJob, RunDir
from .sites import SiteLayout, resolve_sites
from .specjson import SpecJSON
from .specs import SpecBuilder

__all__ = ["PlanError", "PlanOptions", "PlanResult", "plan_workflow"]

CLEANUP_MODES = ("none", "leaf", "inplace")
MAX_ERRORS = 20
#: plans with at least this many entries write their specs from several processes
PARALLEL_THRESHOLD = 5000
#: with spec_layout "auto", plans with more entries than this pack their specs
PACK_THRESHOLD = 20000
SPEC_LAYOUTS = ("auto", "files", "packed")
BACKENDS = ("local", "htcondor")


@dataclass
class PlanOptions:
    run_dir: str
    sites: list[str] | None = None
    output_sites: list[str] | None = None
    output_dir: str | None = None
    #: compute site (or "*") -> staging site
    staging_sites: dict[str, str] | None = None
    cleanup: str = "inplace"
    force: bool = False
    reuse_output_site: bool = False
    #: retries of a job without a dagman.retry profile
    retries: int = 1
    cluster: bool = True
    backend: str = "local"
    #: processes that write specs (None: the number of CPUs)
    writers: int | None = None
    #: files (one JSON file per job), packed (JSON lines, 1,000 plan entries per file),
    #: auto (packed above PACK_THRESHOLD entries)
    spec_layout: str = "auto"
    #: backend settings (htcondor: :class:`ferry.planner.htcondor.CondorOptions` as a dict)
    backend_options: dict = field(default_factory=dict)


@dataclass
class PlanResult:
    run_dir: str
    workflow: str
    jobs: int
    entries: int
    clusters: int
    pruned: int
    cleanup_actions: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: seconds per planning pass
    phases: dict[str, float] = field(default_factory=dict)
    #: CPU seconds of this process per planning pass (forked writers not included)
    cpu: dict[str, float] = field(default_factory=dict)


_BAD_ID = re.compile(r"[^A-Za-z0-9_.-]")
#: use types whose staged-out files are registered (SpecBuilder.register)
_OUT_TYPES = (USE_OUTPUT, USE_INOUT, USE_CHECKPOINT)


def plan_workflow(wf: Workflow, options: PlanOptions) -> PlanResult:
    """Plan ``wf`` into ``options.run_dir``; bad input raises :class:`PlanError` first."""
    # millions of small lists and structs, none of them in a cycle: the cyclic
    # garbage collector would only walk them over and over
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _plan(wf, options)
    finally:
        if enabled:
            gc.enable()


def _plan(wf: Workflow, options: PlanOptions) -> PlanResult:
    t0 = time.monotonic()
    if options.spec_layout not in SPEC_LAYOUTS:
        raise PlanError(f"spec layout must be one of {', '.join(SPEC_LAYOUTS)}")
    if options.backend not in BACKENDS:
        raise PlanError(f"backend must be one of {', '.join(BACKENDS)}, not {options.backend!r}")
    if options.cleanup not in CLEANUP_MODES:
        raise PlanError(
            f"--cleanup must be one of {', '.join(CLEANUP_MODES)}, not {options.cleanup!r}"
        )
    rd = RunDir(options.run_dir)
    if rd.exists():
        raise PlanError(f"{rd} already holds a plan; choose another run directory")
    integrity = _integrity_checking(wf)
    warnings = list(wf.warnings)
    dropped = _drop_unsupported(wf, warnings)
    if all(dropped):
        raise PlanError(f"{wf.source}: the workflow has no jobs ferry can run")

    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}
    tick = [time.monotonic(), time.process_time()]

    def mark(name: str) -> None:
        now, now_cpu = time.monotonic(), time.process_time()
        phases[name] = round(now - tick[0], 3)
        cpu[name] = round(now_cpu - tick[1], 3)
        tick[:] = now, now_cpu

    graph = build_graph(wf)
    mark("graph")
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    layout = resolve_sites(
        wf.site_catalog,
        run_dir=rd.path,
        run_id=run_id,
        workflow=wf.name,
        sites=options.sites,
        output_sites=options.output_sites,
        output_dir=options.output_dir,
        staging_sites=options.staging_sites,
    )
    n = len(wf.jobs)
    kept = bytearray(b"\x01") * n
    if any(dropped):
        for j, d in enumerate(dropped):
            if d:
                kept[j] = 0
    builder = SpecBuilder(
        wf,
        graph,
        layout,
        records_dir=rd.records,
        kept=kept,
        staged=bytearray(len(wf.lfns)),
        reused_sources={},
        job_site=_job_sites(wf, layout),
        default_retries=options.retries,
    )
    _validate(wf, graph, builder, kept)
    mark("validate")

    pruned_ids: list[str] = []
    if not options.force:
        pruned_ids = _reuse(wf, graph, builder, layout, kept, options.reuse_output_site)
    staged, builder.has_checkpoints = _staged(wf, graph, kept)
    builder.staged = staged
    mark("reuse")

    entries = _entries(wf, graph, builder, kept, options.cluster)
    entry_of = array("i", [-1]) * n
    for e, members in enumerate(entries):
        for j in members:
            entry_of[j] = e
    ids = _entry_ids(wf, graph, builder, entries)
    mark("cluster")

    packed = options.spec_layout == "packed" or (
        options.spec_layout == "auto" and len(entries) > PACK_THRESHOLD
    )
    plan_jobs: list[PlanJob] = []
    profiles_of = None
    if options.backend == "htcondor":
        from .htcondor import profile_getter

        profiles_of = profile_getter(builder)
    append = plan_jobs.append
    gparents = graph.parents
    jobs = wf.jobs
    template = builder.template
    by_job = builder.templates()
    register_of = builder.register
    # what builder.register(j) tests, inline for single jobs: this runs a million times
    can_register = bool(layout.outputs)
    for e, members in enumerate(entries):
        j0 = members[0]
        t = by_job[j0]
        labels = t.labels
        eid = ids[e]
        if len(members) == 1:
            pj = PlanJob(
                eid,
                labels["transformation"],
                "" if packed else rd.spec_path(e, eid + ".json"),
                t.retries,
                [ids[entry_of[p]] for p in gparents[j0] if kept[p]],
                None,
                labels["site"],
            )
            if can_register:
                for u in jobs[j0].uses:
                    if u.register_replica and u.stage_out and u.type in _OUT_TYPES:
                        pj.register = register_of(j0)
                        break
        else:
            pe = sorted({entry_of[p] for j in members for p in gparents[j] if kept[p]} - {e})
            pj = PlanJob(
                id=eid,
                transformation=labels["transformation"],
                spec="" if packed else rd.spec_path(e, eid + ".cluster.json"),
                retries=max(template(j).retries for j in members),
                parents=[ids[p] for p in pe],
                members=[jobs[j].id for j in members],
                site=labels["site"],
                register=[r for j in members for r in register_of(j)],
            )
        if profiles_of is not None:
            pj.profiles = profiles_of(j0)
        append(pj)
    mark("entries")
    cleanup = _cleanup(wf, graph, builder, kept, staged, entry_of, ids, options.cleanup)
    mark("cleanup")

    if options.backend == "htcondor":  # a directory HTCondor cannot use: say so, write nothing
        from .htcondor import CondorOptions, check_options

        check_options(rd.path, CondorOptions.from_json(options.backend_options))
    # only its owner may read in: the specs and plan.json keep catalog URLs as given,
    # passwords and signed queries included (the worker needs them)
    os.makedirs(rd.path, mode=0o700, exist_ok=True)
    os.makedirs(rd.records, exist_ok=True)
    os.makedirs(rd.join("jobs"), exist_ok=True)
    offsets = _write_specs(rd, wf, builder, entries, ids, options.writers, packed)
    if packed:
        shards = [rd.pack_path(k) + "@" for k in range(-(-len(plan_jobs) // SHARD))]
        for e, pj in enumerate(plan_jobs):
            pj.spec = shards[e // SHARD] + str(offsets[e])
    mark("specs")
    warnings.extend(builder.warnings)
    plan = Plan(
        version=PLAN_VERSION,
        workflow=wf.name,
        created=time.time(),
        backend=options.backend,
        options={
            "source": os.path.abspath(wf.source) if os.path.exists(wf.source) else wf.source,
            "run_id": run_id,
            "sites": layout.compute_sites,
            "output_sites": [o.site for o in layout.outputs],
            "output_dir": options.output_dir,
            "cleanup": options.cleanup,
            "force": options.force,
            "reuse_output_site": options.reuse_output_site,
            "retries": options.retries,
            "cluster": options.cluster,
            "integrity": integrity,
            "spec_layout": "packed" if packed else "files",
            "layout": layout.to_json(),
        },
        jobs=plan_jobs,
        cleanup=cleanup,
        pruned=pruned_ids,
        warnings=warnings,
    )
    if options.backend == "htcondor":
        from .htcondor import CondorOptions, write_htcondor

        plan.options["htcondor"] = write_htcondor(
            rd, plan, CondorOptions.from_json(options.backend_options), warnings
        )
        mark("htcondor")
    rd.write_plan(plan)
    mark("plan.json")
    planned = sum(map(len, entries))
    return PlanResult(
        run_dir=rd.path,
        workflow=wf.name,
        jobs=planned,
        entries=len(entries),
        clusters=0 if planned == len(entries) else sum(1 for m in entries if len(m) > 1),
        pruned=len(pruned_ids),
        cleanup_actions=len(cleanup),
        warnings=warnings,
        seconds=time.monotonic() - t0,
        phases=phases,
        cpu=cpu,
    )


# -- passes ----------------------------------------------------------------------------


INTEGRITY_MODES = ("full", "nosymlink", "none")


def _integrity_checking(wf: Workflow) -> str:
    """The ``pegasus.integrity.checking`` property (default ``full``). With ``none`` no
    sha256 is checked, as in Pegasus: the catalogs' sums are dropped here (replicas,
    stageable executables, container images), and ``ferry run`` checks no intermediate
    file. ``nosymlink`` is ``full``: ferry copies inputs, it never links them (except
    container images used in place, whose sum ``specs.py`` drops under ``nosymlink``)."""
    mode = str(wf.properties.get("pegasus.integrity.checking", "full")).strip().lower()
    if mode not in INTEGRITY_MODES:
        raise PlanError(
            f"property pegasus.integrity.checking must be one of {', '.join(INTEGRITY_MODES)},"
            f" not {mode!r}"
        )
    if mode == "none":
        rc = wf.replica_catalog
        for reps in rc.entries.values():
            for r in reps:
                r.sha256 = None
        for _pattern, reps in rc.regex:
            for r in reps:
                r.sha256 = None
        rc.checksums.clear()
        tc = wf.transformation_catalog
        for tx in tc.transformations.values():
            tx.sha256 = None
        for c in tc.containers.values():
            c.sha256 = None
    return mode


def _drop_unsupported(wf: Workflow, warnings: list[str]) -> list[bool]:
    """Sub-workflow jobs are not planned (yet): warn, and cut them out.

    Their parents are linked to their children, so the order the workflow asks for
    stays (``a -> sub -> b`` still runs ``a`` before ``b``).
    """
    if all(job.kind == "job" for job in wf.jobs):
        return [False] * len(wf.jobs)
    dropped = [job.kind != "job" for job in wf.jobs]
    if any(dropped):
        names = [f"{job.id} ({job.kind})" for job, d in zip(wf.jobs, dropped, strict=True) if d]
        warnings.append(
            "sub-workflow jobs are not supported yet and were left out of the plan: "
            + ", ".join(names[:10])
            + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        )
        parents: list[list[int]] = [[] for _ in wf.jobs]
        for j, ch in enumerate(wf.children):
            for c in ch:
                parents[c].append(j)
        for j, d in enumerate(dropped):
            if d:  # splice it out: each parent gets its children (chains included)
                kids = [c for c in wf.children[j] if c != j]
                for p in parents[j]:
                    if p == j:
                        continue
                    ch = wf.children[p]
                    ch[:] = [c for c in ch if c != j]
                    for c in kids:
                        if c not in ch:
                            ch.append(c)
                            parents[c].append(p)
                for c in kids:
                    parents[c] = [x for x in parents[c] if x != j]
                wf.jobs[j].uses = []
                wf.children[j] = []
        for ch in wf.children:
            ch[:] = [c for c in ch if not dropped[c]]
    return dropped


def _job_sites(wf: Workflow, layout: SiteLayout) -> list[str] | None:
    """The compute site of each job: ``selector.execution.site`` if it names one of
    ``--sites``, else the first compute site where the transformation is installed,
    else the first compute site. None when there is only one site."""
    sites = layout.compute_sites
    if len(sites) == 1:
        return None
    tc = wf.transformation_catalog
    by_tx: dict[str, str] = {}
    out = []
    for job in wf.jobs:
        pinned = prof.get(job.profiles or {}, "selector", "execution.site")
        if pinned in sites:
            out.append(str(pinned))
            continue
        site = by_tx.get(job.transformation)
        if site is None:
            site = sites[0]
            tx = tc.lookup(job) if tc.transformations else None
            if tx is not None:
                names = {s.name for s in tx.sites if s.type == "installed"}
                site = next((s for s in sites if s in names), sites[0])
            by_tx[job.transformation] = site
        out.append(site)
    return out


def _bad_lfn(lfn: str) -> bool:
    if not lfn or lfn[0] == "/":
        return True
    return ".." in lfn and ".." in lfn.split("/")


def has_replica(rc, lfn: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether the replica catalog knows ``lfn`` (exactly or by a regex entry)."""
    if lfn in rc.entries:
        return True
    for pattern, _ in rc.regex:
        if pattern.fullmatch(lfn):
            return True
    return False


_DOTDOT = re.compile(r"(?:^|\x00|/)\.\.(?:/|\x00|\Z)")


def _all_lfns_good(lfns: list[str]) -> bool:
    """Whether no LFN is empty, absolute or has a '..' part: a few searches over them all."""
    text = "\x00".join(lfns)
    if text.count("\x00") != len(lfns) - 1:
        return False  # an LFN holds NUL itself: look at each
    if not text or text[0] in "/\x00" or text[-1] == "\x00":
        return False
    if "\x00/" in text or "\x00\x00" in text:
        return False
    return ".." not in text or _DOTDOT.search(text) is None


def _validate(wf: Workflow, graph: Graph, builder: SpecBuilder, kept: bytearray) -> None:
    errors: list[str] = []
    rc = wf.replica_catalog
    lfns = wf.lfns
    producer = graph.producer
    # LFNs checked one by one only when the search over all of them finds a bad one
    checked_lfn = b"\x01" * len(lfns) if _all_lfns_good(lfns) else bytearray(len(lfns))
    bad_tx: dict[str, list[str]] = {}  # one message per transformation, naming its jobs
    good_tx: set[str] = set()
    per_job = not builder.has_tc  # without a catalog the job's own inputs count
    for j, job in enumerate(wf.jobs):
        if not kept[j]:
            continue
        if len(errors) >= MAX_ERRORS:
            break
        tx = job.transformation
        if tx not in good_tx:
            seen = bad_tx.get(tx)
            if seen is not None and not per_job:
                seen.append(job.id)
            else:
                why = builder.check_transformation(job)
                if why:
                    bad_tx.setdefault(tx, []).append(job.id)
                    if len(bad_tx[tx]) == 1:
                        errors.append(why)
                elif not per_job:
                    good_tx.add(tx)
        for u in job.uses:
            li = u.lfn
            t = u.type
            if t == USE_INPUT or t == USE_INOUT:
                p = producer[li]
                if not (p >= 0 and p != j and kept[p]) and not has_replica(rc, lfns[li]):
                    errors.append(
                        f"job {job.id}: input {lfns[li]!r} is not produced by any job and has no"
                        " replica in the replica catalog"
                    )
            if not checked_lfn[li]:
                checked_lfn[li] = 1
                if _bad_lfn(lfns[li]):
                    errors.append(
                        f"job {job.id}: file {lfns[li]!r} must be a relative path"
                        " without '..' (it names a file in the job's work directory)"
                    )
        if job.stdin is not None:
            p = producer[job.stdin]
            if not (p >= 0 and p != j and kept[p]) and not has_replica(rc, lfns[job.stdin]):
                errors.append(
                    f"job {job.id}: stdin {lfns[job.stdin]!r} is not produced by any job and"
                    " has no replica in the replica catalog"
                )
    for tx, jobs in bad_tx.items():
        if len(jobs) > 1:
            errors.append(
                f"transformation {tx!r} is also used by {len(jobs) - 1} other job(s): "
                + ", ".join(jobs[1:6])
                + (" ..." if len(jobs) > 6 else "")
            )
    if errors:
        more = " (and maybe more)" if len(errors) >= MAX_ERRORS else ""
        raise PlanError(
            f"{wf.source}: {len(errors)} problem(s){more}:\n  " + "\n  ".join(errors[:MAX_ERRORS])
        )


def _exists_at_output(layout: SiteLayout, lfn: str, registry: list) -> str | None:  # type: ignore[type-arg]
    """The output-site URL of ``lfn`` if a file is there, else None."""
    from ferry.plugins.errors import FerryError
    from ferry.plugins.url import parse_url

    for loc in layout.outputs:
        url = parse_url(loc.get(lfn))
        if url.is_local:
            if os.path.isfile(url.local_path):
                return loc.get(lfn)
            continue
        if not registry:
            from ferry.plugins.registry import Registry

            registry.append(Registry())
        try:
            registry[0].protocol(url.scheme).stat(url)
            return loc.get(lfn)
        except FerryError:
            continue
    return None


def _reuse(
    wf: Workflow,
    graph: Graph,
    builder: SpecBuilder,
    layout: SiteLayout,
    kept: bytearray,
    look_at_output: bool,
) -> list[str]:
    """Prune jobs whose outputs exist; then ancestors left with no purpose. Returns their ids."""
    rc = wf.replica_catalog
    if not rc.entries and not rc.regex and not look_at_output:
        return []
    exists = bytearray(len(wf.lfns))  # 0 unknown, 1 exists, 2 missing
    registry: list = []

    def available(lfn_i: int) -> bool:
        state = exists[lfn_i]
        if state:
            return state == 1
        lfn = wf.lfns[lfn_i]
        ok = has_replica(rc, lfn)
        if not ok and look_at_output:
            url = _exists_at_output(layout, lfn, registry)
            if url is not None:
                ok = True
                builder.reused_sources[lfn_i] = [
                    SourceURL(url=url, priority=100.0, site=layout.outputs[0].site)
                ]
        exists[lfn_i] = 1 if ok else 2
        return ok

    n = len(wf.jobs)
    pruned = bytearray(n)
    for j, job in enumerate(wf.jobs):
        if not kept[j]:
            continue
        some = False
        for u in job.uses:
            t = u.type
            if t == USE_OUTPUT or t == USE_INOUT:
                some = True
                if not available(u.lfn):
                    break
        else:
            if some and all(available(x) for x in (job.stdout, job.stderr) if x is not None):
                pruned[j] = 1
    if not any(pruned):
        return []
    for j in reversed(graph.order):
        if pruned[j] or not kept[j]:
            continue
        ch = graph.children[j]
        if not ch or not all(pruned[c] or not kept[c] for c in ch):
            continue
        if any(u.stage_out and not available(u.lfn) for u in job_outputs(wf.jobs[j])):
            continue
        pruned[j] = 1
    ids = []
    for j in range(n):
        if pruned[j]:
            kept[j] = 0
            ids.append(wf.jobs[j].id)
    if registry:
        registry[0].close()
    return ids


def _staged(wf: Workflow, graph: Graph, kept: bytearray) -> tuple[bytearray, bool]:
    """Which files go to staging: those a planned job reads, and outputs not staged out.
    And whether any job (planned or not) has a checkpoint file."""
    staged = bytearray(len(wf.lfns))
    producer = graph.producer
    checkpoints = False
    for j, job in enumerate(wf.jobs):
        if not kept[j]:
            checkpoints = checkpoints or any(u.type == USE_CHECKPOINT for u in job.uses)
            continue
        for u in job.uses:
            t = u.type
            if t == USE_CHECKPOINT:
                checkpoints = True
            if t == USE_INPUT or t == USE_INOUT:
                p = producer[u.lfn]
                if p >= 0 and p != j and kept[p]:
                    staged[u.lfn] = 1
            if (t == USE_OUTPUT or t == USE_INOUT) and not u.stage_out:
                staged[u.lfn] = 1
        for x in (job.stdin,):
            if x is not None:
                p = producer[x]
                if p >= 0 and p != j and kept[p]:
                    staged[x] = 1
        for x in (job.stdout, job.stderr):
            if x is not None and not any(u.lfn == x for u in job.uses):
                staged[x] = 1  # synthesized uses are not staged out
    return staged, checkpoints


def _cluster_setting(builder: SpecBuilder, j: int) -> tuple[int | None, int | None]:
    t = builder.template(j)
    return t.clusters_size, t.clusters_num


def _entries(
    wf: Workflow, graph: Graph, builder: SpecBuilder, kept: bytearray, cluster: bool
) -> list[list[int]]:
    """Plan entries in a topological order (by level): each a job, or a cluster's jobs."""
    by_level: dict[int, list[int]] = {}
    level = graph.level
    for j in graph.order:
        if kept[j]:
            by_level.setdefault(level[j], []).append(j)
    entries: list[list[int]] = []
    if cluster:
        builder.templates()
        cluster = any(
            t.clusters_size is not None or t.clusters_num is not None
            for t in builder.distinct_templates()
        )
    for lv in sorted(by_level):
        jobs = by_level[lv]
        if not cluster:
            entries.extend([j] for j in jobs)
            continue
        groups: dict[tuple[str, str], list[int]] = {}
        order: list[tuple[str, str] | int] = []
        for j in jobs:
            size, num = _cluster_setting(builder, j)
            if (size is None or size <= 1) and (num is None or num < 1):
                order.append(j)
                continue
            key = (wf.jobs[j].transformation, builder.site_of(j))
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(j)
        for item in order:
            if isinstance(item, int):
                entries.append([item])
                continue
            members = groups[item]
            size, num = _cluster_setting(builder, members[0])
            if size is None or size <= 1:
                k = max(1, min(num or 1, len(members)))
                size = -(-len(members) // k)
            for i in range(0, len(members), size):
                entries.append(members[i : i + size])
    return entries


def _entry_ids(
    wf: Workflow, graph: Graph, builder: SpecBuilder, entries: list[list[int]]
) -> list[str]:
    if all(len(m) == 1 for m in entries):
        jobs = wf.jobs
        return [jobs[m[0]].id for m in entries]
    taken = set(wf.job_index)
    ids = []
    count: dict[tuple[str, int], int] = {}
    for members in entries:
        if len(members) == 1:
            ids.append(wf.jobs[members[0]].id)
            continue
        job = wf.jobs[members[0]]
        lv = graph.level[members[0]]
        key = (job.transformation, lv)
        count[key] = count.get(key, 0) + 1
        base = f"cluster_{_BAD_ID.sub('_', job.transformation)}_L{lv}_{count[key]}"
        cid = base
        k = 1
        while cid in taken:
            k += 1
            cid = f"{base}_{k}"
        taken.add(cid)
        ids.append(cid)
    return ids


def _cleanup(
    wf: Workflow,
    graph: Graph,
    builder: SpecBuilder,
    kept: bytearray,
    staged: bytearray,
    entry_of: array,
    ids: list[str],
    mode: str,
) -> list[CleanupAction]:
    if mode == "none":
        return []
    producer = graph.producer
    layout = builder.layout
    lfns = wf.lfns
    has_checkpoints = builder.has_checkpoints
    if not any(staged) and not has_checkpoints:
        return []
    # who reads each staged file (plan entries)
    readers: dict[int, set[int]] = {}
    for j, job in enumerate(wf.jobs):
        if not kept[j]:
            continue
        for u in job_inputs(job):
            li = u.lfn
            if staged[li]:
                p = producer[li]
                if p >= 0 and p != j and kept[p]:
                    readers.setdefault(li, set()).add(entry_of[j])
    outputs_urls = set()
    groups: dict[tuple[int, ...], list[str]] = {}
    for j, job in enumerate(wf.jobs):
        if not kept[j]:
            continue
        loc = None
        e = entry_of[j]
        for u in job_outputs(job):
            li = u.lfn
            if not staged[li] or producer[li] != j:
                continue
            lfn = lfns[li]
            if loc is None:
                loc = layout.staging[builder.site_of(j)]
            if u.stage_out:
                outputs_urls.update(o.put(lfn) for o in layout.outputs)
            r = readers.get(li)
            key = tuple(sorted(r | {e})) if r else (e,)
            groups.setdefault(key, []).append(loc.put(lfn))
        if has_checkpoints:
            for u in job.uses:
                if u.type == USE_CHECKPOINT:
                    loc = layout.staging[builder.site_of(j)]
                    groups.setdefault((e,), []).append(
                        loc.put(f".checkpoints/{job.id}/{lfns[u.lfn]}")
                    )
    actions: list[CleanupAction] = []
    if mode == "leaf":
        urls = [u for g in groups.values() for u in g if u not in outputs_urls]
        if urls:
            actions.append(CleanupAction(id="cleanup_leaf", remove=urls, after=None))
        return actions
    for i, (key, urls) in enumerate(sorted(groups.items())):
        urls = [u for u in urls if u not in outputs_urls]
        if urls:
            actions.append(
                CleanupAction(id=f"cleanup_{i + 1}", remove=urls, after=[ids[e] for e in key])
            )
    return actions


# -- writing specs -----------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()


def _write_range(
    rd: RunDir,
    wf: Workflow,
    builder: SpecBuilder,
    entries: list[list[int]],
    ids: list[str],
    start: int,
    stop: int,
    packed: bool,
) -> array:
    """Write the specs of entries ``start..stop``; for packed shards, return the byte
    offset of each entry's line (its spec, or its cluster's member list)."""
    encode = _ENCODER.encode
    spec_json = SpecJSON(builder)
    offsets = array("q")
    if not packed:
        made: set[str] = set()
        for e in range(start, stop):
            members = entries[e]
            shard = rd.spec_path(e, "")
            if shard not in made:
                os.makedirs(rd.join(shard), exist_ok=True)
                made.add(shard)
            paths = []
            for j in members:
                rel = shard + wf.jobs[j].id + ".json"
                with open(rd.join(rel), "wb") as f:
                    f.write(spec_json(j))
                paths.append(rel)
            if len(members) > 1:
                with open(rd.join(shard + ids[e] + ".cluster.json"), "wb") as f:
                    f.write(encode(ClusterFile(version=1, id=ids[e], members=paths)))
        return offsets
    e = start
    while e < stop:
        shard_no = e // SHARD
        rel = rd.pack_path(shard_no)
        end = min(stop, (shard_no + 1) * SHARD)
        parts: list[bytes] = []
        pos = 0
        for e2 in range(e, end):
            members = entries[e2]
            if len(members) == 1:
                data = spec_json(members[0]) + b"\n"
                offsets.append(pos)
                parts.append(data)
                pos += len(data)
                continue
            refs = []
            for j in members:
                data = spec_json(j)
                refs.append(f"{rel}@{pos}")
                parts.append(data)
                parts.append(b"\n")
                pos += len(data) + 1
            # a cluster's line: its member list, after the members' specs
            data = encode(ClusterFile(version=1, id=ids[e2], members=refs))
            offsets.append(pos)
            parts.append(data)
            parts.append(b"\n")
            pos += len(data) + 1
        with open(rd.join(rel), "wb") as f:
            f.write(b"".join(parts))
        e = end
    return offsets


def _write_specs(
    rd: RunDir,
    wf: Workflow,
    builder: SpecBuilder,
    entries: list[list[int]],
    ids: list[str],
    writers: int | None,
    packed: bool,
) -> array:
    """Write every spec; large plans fork writer processes that share the model."""
    n = len(entries)
    k = writers or os.cpu_count() or 1
    if n < PARALLEL_THRESHOLD or k <= 1 or not hasattr(os, "fork"):
        return _write_range(rd, wf, builder, entries, ids, 0, n, packed)
    # cut at shard boundaries: no two writers share a directory or a pack
    shards = -(-n // SHARD)
    per = -(-shards // k)
    bounds = [(i * per * SHARD, min(n, (i + 1) * per * SHARD)) for i in range(k)]
    bounds = [b for b in bounds if b[0] < b[1]]
    # resolve what every writer would otherwise work out again
    builder.templates()
    pids = []
    for start, stop in bounds[1:]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(r)
            code = 0
            try:
                offs = _write_range(rd, wf, builder, entries, ids, start, stop, packed)
                out = b"O" + offs.tobytes()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                out = b"E" + f"{type(exc).__name__}: {exc}".encode()[:4000]
                code = 1
            try:
                view = memoryview(out)
                while view:
                    view = view[os.write(w, view) :]
            finally:
                os._exit(code)
        os.close(w)
        pids.append((pid, r))
    error: Exception | None = None
    offsets = array("q")
    try:
        offsets = _write_range(rd, wf, builder, entries, ids, *bounds[0], packed)
    except Exception as exc:
        error = exc
    for pid, r in pids:
        with os.fdopen(r, "rb") as f:
            out = f.read()
        _, status = os.waitpid(pid, 0)
        if out[:1] == b"O" and status == 0:
            offsets.frombytes(out[1:])
        elif error is None:
            msg = out[1:].decode(errors="replace") if out[:1] == b"E" else f"exit status {status}"
            error = PlanError(f"writing job specs failed: {msg}")
    if error is not None:
        raise error
    return offsets
