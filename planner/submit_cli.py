"""``ferry submit DIR``: submit a run planned with ``--backend htcondor`` to the local schedd.

Through the HTCondor Python bindings, as ``condor_submit_dag`` does:
``htcondor2.Submit.from_dag(DAG, options)`` builds the DAGMan job's submit
description (it needs ``condor_dagman`` on PATH), ``htcondor2.Schedd().submit``
queues it. Run from ``DIR/htcondor``, so DAGMan's files land there.

Submitting again after a failure, or after ``condor_rm`` of the DAGMan job,
continues the workflow: DAGMan itself picks the newest rescue DAG
(``<workflow>.dag.rescueNNN``) beside the DAG and skips the nodes it lists as
done (``AutoRescue``; never ``Force``, which would ignore it). ``--force`` runs
everything again instead (every member of a cluster too), and is needed to
submit a workflow that succeeded. Records and the journal go on from where they
were: attempt numbers continue, nothing is overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from ferry.plugins.errors import ConfigError

from .htcondor import CONDOR_DIR, load_config, node_file_path
from .rundir import Journal, RunDir, read_journal

__all__ = ["DESCRIPTION", "add_arguments", "latest_rescue", "run", "submit", "submit_and_report"]

DESCRIPTION = """\
Submit a run directory planned with `ferry plan --backend htcondor` to the
local schedd: its DAG (DIR/htcondor/<workflow>.dag) runs under DAGMan, every
job through the ferry worker on the pool's execute points. Submitting it again
after a failure continues from DAGMan's rescue DAG: nodes that succeeded do
not run again. Watch it with `ferry status DIR`.
"""

EPILOG = """\
exit status:
  0    submitted
  1    not submitted (no schedd, no condor_dagman, DAGMan refused the DAG)
  2    DIR is not a run directory planned for HTCondor
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument(
        "--force",
        action="store_true",
        help="run every node again: ignore rescue DAGs (DAGMan's -force)",
    )
    parser.add_argument("--max-jobs", type=int, metavar="N", help="DAGMan -maxjobs")
    parser.add_argument("--max-idle", type=int, metavar="N", help="DAGMan -maxidle")
    parser.add_argument("--max-post", type=int, metavar="N", help="DAGMan -maxpost")
    parser.add_argument("--batch-name", metavar="NAME", help="(default: the workflow and run id)")


_RESCUE = re.compile(r"\.rescue(\d{3})$")


def latest_rescue(condor_dir: str, dag: str) -> str | None:
    """The rescue DAG DAGMan would use (the highest number), or None."""
    best: tuple[int, str] | None = None
    try:
        names = os.listdir(condor_dir)
    except FileNotFoundError:
        return None
    for name in names:
        if not name.startswith(dag + ".rescue"):
            continue
        m = _RESCUE.search(name)
        if m and name == f"{dag}.rescue{m.group(1)}":
            n = int(m.group(1))
            if best is None or n > best[0]:
                best = (n, name)
    return os.path.join(condor_dir, best[1]) if best else None


def _last_finish(rd: RunDir) -> str | None:
    """The status of the last ``workflow-finished`` after the last submission, or None."""
    status = None
    for ev in read_journal(rd.journal_file):
        if ev.get("event") == "workflow-started":
            status = None
        elif ev.get("event") == "workflow-finished":
            status = ev.get("status")
    return status


def _forget_done(rd: RunDir, plan: Any, cfg: dict[str, Any]) -> None:
    """``--force`` runs every member of a cluster again: drop the ``done`` members a
    failed attempt left in the cluster's node file (see ferry.planner.postscript)."""
    clusters = {pj.id for pj in plan.jobs if pj.members}
    if not clusters:
        return
    cdir = rd.join(CONDOR_DIR)
    with open(os.path.join(cdir, "nodes.json"), "rb") as f:
        nodes = json.loads(f.read())["nodes"]
    for node, info in nodes.items():
        if info and info[1] == "job" and info[0] in clusters:
            path = node_file_path(cdir, node, int(cfg["shards"]))
            with open(path, "rb") as f:
                doc = json.loads(f.read())
            if doc.get("done"):
                doc["done"] = []
                tmp = f"{path}.tmp.{os.getpid()}"
                with open(tmp, "w") as f:
                    json.dump(doc, f)
                os.replace(tmp, path)


@contextlib.contextmanager
def _cwd(path: str) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def submit(
    run_dir: str,
    *,
    force: bool = False,
    max_jobs: int | None = None,
    max_idle: int | None = None,
    max_post: int | None = None,
    batch_name: str | None = None,
) -> dict[str, Any]:
    """Submit the run's DAG; returns ``{"cluster", "dag", "rescue"}``. Raises
    :class:`ConfigError` for a directory that is not an HTCondor run, and
    ``htcondor2.HTCondorException`` when HTCondor refuses."""
    rd = RunDir(run_dir)
    plan = rd.load_plan()
    if plan.backend != "htcondor":
        raise ConfigError(
            f"{rd} was planned for the {plan.backend} backend; plan it with --backend htcondor"
        )
    if not plan.jobs:
        raise ConfigError(f"{rd}: nothing to run (the plan has no jobs; see its pruned list)")
    cfg = load_config(rd)
    cdir = rd.join(CONDOR_DIR)
    dag = cfg["dag"]
    rescue = None if force else latest_rescue(cdir, dag)
    if not force and _last_finish(rd) == "success":
        # DAGMan would run again every node the newest rescue DAG (if any, from an
        # earlier failure) does not list as done
        raise ConfigError(f"{rd}: the workflow already succeeded; --force runs every node again")
    if force:
        _forget_done(rd, plan, cfg)
    import htcondor2

    options: dict[str, Any] = {
        "BatchName": batch_name or f"{plan.workflow}-{plan.options.get('run_id', '')}",
        "AutoRescue": 1,
    }
    if force:
        options["Force"] = True
    for key, value in (("MaxJobs", max_jobs), ("MaxIdle", max_idle), ("MaxPost", max_post)):
        if value is not None:
            options[key] = value
    with _cwd(cdir):
        description = htcondor2.Submit.from_dag(os.path.join(cdir, dag), options)
        result = htcondor2.Schedd().submit(description)
    cluster = result.cluster()
    journal = Journal(rd.journal_file)
    try:
        journal.write(
            None,
            "workflow-started",
            backend="htcondor",
            dagman=cluster,
            rescue=os.path.basename(rescue) if rescue else None,
            jobs=len(plan.jobs),
        )
    finally:
        journal.close()
    return {"cluster": cluster, "dag": os.path.join(cdir, dag), "rescue": rescue}


def submit_and_report(run_dir: str, **kw: Any) -> int:
    try:
        done = submit(run_dir, **kw)
    except ConfigError as exc:
        print(f"ferry submit: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # htcondor2.HTCondorException and friends
        print(
            f"ferry submit: HTCondor did not take the DAG: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    if done["rescue"]:
        print(f"Resubmitting from the rescue DAG {done['rescue']}: done nodes are skipped")
    print(f"Submitted {done['dag']} to the local schedd: DAGMan job {done['cluster']}")
    print(f"Watch it with: ferry status {os.path.abspath(run_dir)}")
    return 0


def run(args: argparse.Namespace) -> int:
    return submit_and_report(
        args.run_dir,
        force=args.force,
        max_jobs=args.max_jobs,
        max_idle=args.max_idle,
        max_post=args.max_post,
        batch_name=args.batch_name,
    )
