"""``ferry run WORKFLOW`` / ``ferry run --resume DIR``: plan (or continue) and run here."""

from __future__ import annotations

import argparse
import sys

from ferry.plugins.errors import ConfigError

from .plan_cli import add_plan_arguments

__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run"]

DESCRIPTION = """\
Plan a workflow as `ferry plan` does and run it here: up to --jobs jobs at a
time in dependency order, each through the real worker (its own work
directory, sha256-checked stage-in, invocation record, stage-out), failed jobs
retried, with a progress bar and the statistics table at the end. With
--resume DIR, continue a planned or interrupted run (even one killed with -9):
nothing that succeeded runs again.
"""

EPILOG = """\
exit status:
  0    every job succeeded
  1    some job failed (see ferry analyze DIR)
  2    bad input: the workflow or the options could not be planned
  130  interrupted (INT); 143  stopped by ferry remove (TERM)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)
    parser.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR instead of planning a new one"
    )
    parser.add_argument(
        "-j", "--jobs", type=int, metavar="N", help="jobs at a time (default: the number of CPUs)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="plain lines instead of a progress bar"
    )
    parser.add_argument(
        "--work-dir",
        metavar="DIR",
        help="make the jobs' work directories here (default: DIR/work of the run directory)",
    )
    parser.add_argument(
        "--jobs-per-process",
        type=int,
        default=100,
        metavar="N",
        help="jobs a warm worker process runs before it is replaced (default: 100;"
        " 1: a freshly forked process per job)",
    )


def run(args: argparse.Namespace) -> int:
    from .local import LocalRunner

    if args.resume and args.workflow:
        print("ferry run: error: give a WORKFLOW or --resume DIR, not both", file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print("ferry run: error: --jobs must be at least 1", file=sys.stderr)
        return 2
    if args.jobs_per_process < 1:
        print("ferry run: error: --jobs-per-process must be at least 1", file=sys.stderr)
        return 2
    run_dir = args.resume
    if run_dir is None:
        from .plan_cli import plan_from_args, report

        try:
            result = plan_from_args(args)
        except ConfigError as exc:
            print(f"ferry run: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("ferry run: interrupted while planning", file=sys.stderr)
            return 130
        report(result)
        run_dir = result.run_dir
    runner = LocalRunner(
        run_dir,
        slots=args.jobs,
        progress=False if args.no_progress else None,
        jobs_per_process=args.jobs_per_process,
        work_dir=args.work_dir,
    )
    try:
        return runner.run()
    except ConfigError as exc:
        print(f"ferry run: error: {exc}", file=sys.stderr)
        return 2
