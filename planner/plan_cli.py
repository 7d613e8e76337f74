"""``ferry plan WORKFLOW``: read a Pegasus 5 workflow and its catalogs, write a run directory."""

from __future__ import annotations

import argparse
import os
import sys

from ferry.plugins.errors import ConfigError

__all__ = ["DESCRIPTION", "add_arguments", "add_plan_arguments", "plan_from_args", "run"]

DESCRIPTION = """\
Plan a Pegasus 5 workflow (YAML or JSON, as pegasus-wms-api writes it): read it
and its replica, transformation and site catalogs (given here, named in
pegasus.properties, or replicas.yml / transformations.yml / sites.yml in the
current directory), check it (dependency cycles, undefined transformations,
inputs nobody produces), prune jobs whose outputs exist (data reuse), cluster,
and write the run directory: plan.json and one job spec per job
(docs/rundir.md). `ferry run --resume DIR` runs it here; with `--backend
htcondor`, `ferry submit DIR` submits it to HTCondor.
"""


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``ferry plan`` and ``ferry run`` share."""
    parser.add_argument("workflow", metavar="WORKFLOW", nargs="?", help="the workflow file")
    parser.add_argument(
        "-d",
        "--dir",
        metavar="DIR",
        help="the run directory to create (default: ./runs/<workflow>/runNNNN)",
    )
    parser.add_argument(
        "-s",
        "--sites",
        metavar="SITE[,SITE]",
        type=_csv,
        help="compute sites (default: local)",
    )
    parser.add_argument(
        "-o",
        "--output-sites",
        metavar="SITE[,SITE]",
        type=_csv,
        help="where staged-out outputs go (default: local)",
    )
    parser.add_argument(
        "-O",
        "--output-dir",
        metavar="DIR",
        help="put outputs in this directory (default: the output site's storage, else ./outputs)",
    )
    parser.add_argument(
        "--staging-site",
        metavar="[COMPUTE=]STAGING[,...]",
        type=_csv,
        help="stage through another site's shared scratch (default: the compute site's)",
    )
    parser.add_argument(
        "--cleanup",
        choices=("none", "leaf", "inplace"),
        default="inplace",
        help="remove intermediate files from staging: right after their last reader"
        " (inplace, the default), when the workflow is done (leaf), or never (none)",
    )
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="no data reuse: run every job even if its outputs exist",
    )
    parser.add_argument(
        "--reuse-output-site",
        action="store_true",
        help="data reuse also looks for outputs at the output site",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help="retries of a failed job without a dagman.retry profile (default: 1, as Pegasus)",
    )
    parser.add_argument(
        "-C",
        "--cluster",
        choices=("horizontal", "none"),
        default="horizontal",
        help="horizontal: cluster jobs whose clusters.size / clusters.num profiles ask"
        " (the default); none: never cluster",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "htcondor"),
        default="local",
        help="local: run with `ferry run`; htcondor: also write a DAGMan workflow into"
        " DIR/htcondor for `ferry submit` (docs/htcondor.md) (default: local)",
    )
    parser.add_argument(
        "--spec-layout",
        choices=("auto", "files", "packed"),
        default="auto",
        help="one job spec file per job (files), or JSON lines, 1,000 jobs per file (packed);"
        " auto: packed above 20,000 jobs (docs/rundir.md)",
    )
    cat = parser.add_argument_group("catalogs and properties")
    cat.add_argument(
        "-r",
        "--replicas",
        metavar="FILE",
        action="append",
        default=[],
        help="replica catalog file (repeatable)",
    )
    cat.add_argument(
        "-t",
        "--transformations",
        metavar="FILE",
        action="append",
        default=[],
        help="transformation catalog file (repeatable)",
    )
    cat.add_argument(
        "--site-catalog",
        metavar="FILE",
        action="append",
        default=[],
        help="site catalog file (repeatable)",
    )
    cat.add_argument("--conf", metavar="FILE", help="a pegasus.properties file")
    cat.add_argument(
        "-D",
        dest="defines",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="set a property",
    )


def _staging(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        cs, sep, ss = item.partition("=")
        if sep:
            out[cs.strip()] = ss.strip()
        else:
            out["*"] = cs.strip()
    return out


def _default_dir(name: str) -> str:
    base = os.path.join("runs", name)
    n = 1
    while os.path.exists(os.path.join(base, f"run{n:04d}")):
        n += 1
    return os.path.join(base, f"run{n:04d}")


def plan_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Read and plan as the arguments say; returns a :class:`~ferry.planner.plan.PlanResult`."""
    from .pegasus import load_workflow
    from .plan import PlanOptions, plan_workflow

    if not args.workflow:
        raise ConfigError("no workflow file given")
    props = {}
    for d in args.defines:
        k, sep, v = d.partition("=")
        if not sep:
            raise ConfigError(f"-D {d}: expected KEY=VALUE")
        props[k.strip()] = v.strip()
    wf = load_workflow(
        args.workflow,
        replica_files=args.replicas,
        transformation_files=args.transformations,
        site_files=args.site_catalog,
        conf=args.conf,
        properties=props or None,
    )
    if args.retries < 0:
        raise ConfigError("--retries must be 0 or more")
    options = PlanOptions(
        run_dir=os.path.abspath(args.dir or _default_dir(wf.name)),
        sites=args.sites,
        output_sites=args.output_sites,
        output_dir=os.path.abspath(args.output_dir) if args.output_dir else None,
        staging_sites=_staging(args.staging_site),
        cleanup=args.cleanup,
        force=args.force,
        reuse_output_site=args.reuse_output_site,
        retries=args.retries,
        cluster=args.cluster != "none",
        backend=args.backend,
        spec_layout=args.spec_layout,
        backend_options={
            "staging": getattr(args, "staging", None),
            "ep_python": getattr(args, "ep_python", None),
        }
        if args.backend == "htcondor"
        else {},
    )
    return plan_workflow(wf, options)


def report(result, out=sys.stdout) -> None:  # type: ignore[no-untyped-def]
    for w in result.warnings:
        print(f"ferry: warning: {w}", file=sys.stderr)
    extra = []
    if result.clusters:
        extra.append(f"{result.clusters} cluster(s)")
    if result.pruned:
        extra.append(f"{result.pruned} job(s) pruned by data reuse")
    if result.cleanup_actions:
        extra.append(f"{result.cleanup_actions} cleanup action(s)")
    more = f" ({'; '.join(extra)})" if extra else ""
    print(
        f"Planned {result.jobs} job(s) of workflow {result.workflow} as {result.entries}"
        f" plan entries{more} in {result.seconds:.2f} s: {result.run_dir}",
        file=out,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)
    condor = parser.add_argument_group("HTCondor backend (--backend htcondor, docs/htcondor.md)")
    condor.add_argument(
        "--staging",
        choices=("condorio", "nonsharedfs"),
        help="condorio: HTCondor's file transfer moves the job spec, file:// inputs, outputs"
        " and records; nonsharedfs: the worker stages everything through URLs (default: the"
        " pegasus.data.configuration profile or property, else condorio)",
    )
    condor.add_argument(
        "--ep-python",
        metavar="PATH",
        help="the Python interpreter with ferry installed on the execute points"
        " (default: this one, " + sys.executable + ")",
    )
    condor.add_argument(
        "--submit",
        action="store_true",
        help="submit the DAG to the local schedd right away (as `ferry submit DIR`)",
    )


def run(args: argparse.Namespace) -> int:
    if getattr(args, "submit", False) and args.backend != "htcondor":
        print("ferry plan: error: --submit needs --backend htcondor", file=sys.stderr)
        return 2
    try:
        result = plan_from_args(args)
    except ConfigError as exc:
        print(f"ferry plan: error: {exc}", file=sys.stderr)
        return 2
    report(result)
    if args.backend == "htcondor":
        if getattr(args, "submit", False):
            from .submit_cli import submit_and_report

            return submit_and_report(result.run_dir)
        print(f"Submit it with: ferry submit {result.run_dir}")
        return 0
    print(f"Run it with: ferry run --resume {result.run_dir}")
    return 0
