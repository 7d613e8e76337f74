"""The job graph: explicit edges plus the ones the files imply, order, levels, cycles.

A job that uses a file another job outputs depends on that job (Pegasus's
``infer_dependencies``), stdin/stdout/stderr included; checkpoint files imply
nothing. Everything is indexed by the job's position in ``Workflow.jobs``; the
per-job lists are plain ``list[list[int]]`` (a million jobs: ~100 MB each).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from ferry.plugins.errors import ConfigError

from .model import USE_INOUT, USE_INPUT, USE_OUTPUT, Job, Use, Workflow

__all__ = ["Graph", "PlanError", "build_graph", "job_inputs", "job_outputs"]


class PlanError(ConfigError):
    """The workflow cannot be planned; the message names the jobs and files."""


def job_inputs(job: Job) -> list[Use]:
    """The job's input uses (input and inout), plus stdin when ``uses`` lacks it."""
    ins = [u for u in job.uses if u.type == USE_INPUT or u.type == USE_INOUT]
    if job.stdin is not None and not any(u.lfn == job.stdin for u in ins):
        ins.append(Use(job.stdin, USE_INPUT))
    return ins


def job_outputs(job: Job) -> list[Use]:
    """The job's output uses (output and inout), plus stdout/stderr when ``uses`` lacks them."""
    outs = [u for u in job.uses if u.type == USE_OUTPUT or u.type == USE_INOUT]
    for std in (job.stdout, job.stderr):
        if std is not None and not any(u.lfn == std for u in outs):
            outs.append(Use(std, USE_OUTPUT, stage_out=False, register_replica=False))
    return outs


@dataclass
class Graph:
    """Parents and children of every job, a topological order and each job's level."""

    parents: list[list[int]]
    children: list[list[int]]
    #: LFN index -> index of the job that outputs it, -1 for none
    producer: array
    order: array
    #: longest distance from a root (roots are level 0)
    level: array

    @property
    def n(self) -> int:
        return len(self.parents)


def _producers(wf: Workflow) -> array:
    producer = array("i", [-1]) * len(wf.lfns)
    dups: list[str] = []
    for j, job in enumerate(wf.jobs):
        for u in job.uses:
            t = u.type
            if t != USE_OUTPUT and t != USE_INOUT:
                continue
            p = producer[u.lfn]
            if p == -1 or p == j:
                producer[u.lfn] = j
            elif len(dups) < 10:
                dups.append(
                    f"file {wf.lfns[u.lfn]!r} is an output of more than one job:"
                    f" {wf.jobs[p].id} and {job.id}"
                )
        for std in (job.stdout, job.stderr):
            if std is not None and producer[std] == -1:
                producer[std] = j
    if dups:
        raise PlanError("\n".join(dups))
    return producer


def build_graph(wf: Workflow) -> Graph:
    """Edges from jobDependencies and from files; raises :class:`PlanError` on a cycle.

    The implied edges are added to ``wf.children`` in place (the graph owns them).
    """
    n = len(wf.jobs)
    producer = _producers(wf)
    children = wf.children
    while len(children) < n:
        children.append([])
    for j, job in enumerate(wf.jobs):
        for u in job.uses:
            t = u.type
            if t == USE_INPUT or t == USE_INOUT:
                p = producer[u.lfn]
                if p >= 0 and p != j:
                    children[p].append(j)
        if job.stdin is not None:
            p = producer[job.stdin]
            if p >= 0 and p != j:
                children[p].append(j)
    parents: list[list[int]] = [[] for _ in range(n)]
    for p in range(n):
        ch = children[p]
        if not ch:
            continue
        if len(ch) > 1:
            ch = sorted(set(ch))
            children[p] = ch
        for c in ch:
            if c == p:
                raise PlanError(f"dependency cycle: job {wf.jobs[p].id} depends on itself")
            parents[c].append(p)
    order, level = _toposort(parents, children)
    if len(order) < n:
        raise PlanError("dependency cycle: " + _describe_cycle(wf, parents, order))
    return Graph(parents=parents, children=children, producer=producer, order=order, level=level)


def _toposort(parents: list[list[int]], children: list[list[int]]) -> tuple[array, array]:
    n = len(parents)
    indeg = array("i", (len(p) for p in parents))
    level = array("i", [0]) * n
    order = array("i", (j for j in range(n) if indeg[j] == 0))
    i = 0
    while i < len(order):
        p = order[i]
        i += 1
        lp = level[p] + 1
        for c in children[p]:
            if level[c] < lp:
                level[c] = lp
            indeg[c] -= 1
            if indeg[c] == 0:
                order.append(c)
    return order, level


def _describe_cycle(wf: Workflow, parents: list[list[int]], order: array) -> str:
    """Name the jobs of one cycle among the jobs the topological sort left over."""
    done = bytearray(len(parents))
    for j in order:
        done[j] = 1
    start = next(j for j in range(len(parents)) if not done[j])
    # walk up through unsorted parents: every unsorted job has one, so this loops
    seen: dict[int, int] = {}
    path: list[int] = []
    j = start
    while j not in seen:
        seen[j] = len(path)
        path.append(j)
        j = next(p for p in parents[j] if not done[p])
    cycle = path[seen[j] :]
    cycle.reverse()  # parent -> child order
    names = [wf.jobs[k].id for k in cycle]
    return " -> ".join([*names, names[0]])
