"""``ferry worker JOBSPEC``: run one planned job on this node (ferry's pegasus-lite)."""

from __future__ import annotations

import logging
import os
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING

from ferry.plugins.errors import ConfigError

if TYPE_CHECKING:
    import argparse

__all__ = ["DEFAULTS", "DESCRIPTION", "add_arguments", "fast_args", "run"]

#: every option's value when only JOBSPEC is given
DEFAULTS: dict[str, object] = {
    "records": None,
    "keep_workdir": False,
    "workdir_base": None,
    "debug": False,
}

DESCRIPTION = """\
Run one job from its job spec (docs/jobspec.md): make a work directory, stage
the container image and the inputs in with sha256 checks, restore checkpoints,
run the job, check it succeeded, stage the outputs out, and write an
invocation record (docs/worker.md).
"""

EPILOG = """\
exit status:
  0    success
  1    the job failed (exit code, signal, timeout, missing output or output check)
  2    worker error (bad job spec, no usable work directory, internal error)
  3    stage-in failed
  4    integrity failure (an input's sha256 did not match)
  5    stage-out failed
  6    the container image could not be staged or prepared
  143  the worker was sent TERM (eviction): the job was stopped and its
       checkpoints staged out, or it had not started
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "jobspec",
        metavar="JOBSPEC",
        help="the job spec: a JSON file, or FILE@OFFSET for a line of a packed shard",
    )
    parser.add_argument(
        "--records",
        metavar="DIR",
        help="where to write the invocation record (default: the spec's records_dir,"
        " else the spec's directory)",
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the work directory when the job fails (its path goes into the record)",
    )
    parser.add_argument(
        "--workdir-base",
        metavar="DIR",
        help="make the work directory here (default: $FERRY_WORK_DIR, $_CONDOR_SCRATCH_DIR,"
        " $TMPDIR, the current directory)",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="log debug detail")
    parser.set_defaults(**DEFAULTS)


def fast_args(argv: list[str]) -> SimpleNamespace | None:
    """The arguments of ``ferry worker JOBSPEC`` without argparse, when ``argv`` is
    just that one path: the call a node makes for every job. Importing argparse
    (with shutil, gettext and locale) and building its parsers is ~10 ms of the
    worker's start-up. Anything else (an option, ``--help``) returns None and
    goes through argparse."""
    if len(argv) != 1 or argv[0].startswith("-") or not argv[0]:
        return None
    return SimpleNamespace(jobspec=argv[0], **DEFAULTS)


def run(args: argparse.Namespace | SimpleNamespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="ferry worker: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    from .job import JobWorker, load_spec_file, spec_file_part

    try:
        spec = load_spec_file(args.jobspec)
    except ConfigError as exc:
        print(f"ferry worker: {exc}", file=sys.stderr)
        return 2
    records = (
        args.records
        or spec.records_dir
        or os.path.dirname(os.path.abspath(spec_file_part(args.jobspec)))
    )
    worker = JobWorker(
        spec,
        records_dir=records,
        keep_workdir=True if args.keep_workdir else None,
        workdir_base=args.workdir_base,
    )
    code = worker.run()
    rec = worker.record
    if code != 0:
        for f in rec.failures:
            print(f"ferry worker: job {spec.id}: {f.step}: {f.reason}", file=sys.stderr)
        if rec.workdir_kept:
            print(f"ferry worker: work directory kept: {rec.workdir}", file=sys.stderr)
    return code
