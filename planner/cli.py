"""The ``ferry`` command: one entry point, a subcommand per job.

Subcommand modules are imported only when chosen, so ``ferry transfer`` on a
compute node never pays for the planner's imports.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "transfer": (
        "ferry.worker.transfer_cli",
        "copy files between URLs (pegasus-transfer's JSON list, or SRC DEST)",
    ),
    "worker": ("ferry.worker.worker_cli", "run one job from its job spec on this node"),
    "plugins": ("ferry.worker.plugins_cli", "list protocol plugins, their schemes and status"),
    "plan": ("ferry.planner.plan_cli", "plan a Pegasus 5 workflow into a run directory"),
    "run": ("ferry.planner.run_cli", "plan and run a workflow on this machine (or --resume one)"),
    "status": ("ferry.planner.status", "show where a run stands"),
    "statistics": ("ferry.planner.statistics", "summary statistics of a run (pegasus-statistics)"),
    "analyze": ("ferry.planner.analyze", "report the failed jobs of a run (pegasus-analyzer)"),
    "remove": ("ferry.planner.remove", "stop a running workflow cleanly"),
    "submit": (
        "ferry.planner.submit_cli",
        "submit a run planned with --backend htcondor to the local schedd (DAGMan)",
    ),
    "postscript": (
        "ferry.planner.postscript",
        "(internal) DAGMan POST script of the HTCondor backend: record a node's attempt",
    ),
}


def _version_action() -> Any:
    """``--version``, looked up only when asked (reading package metadata costs start-up time)."""
    import argparse

    class VersionAction(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
            print(f"ferry {_version()}")
            parser.exit()

    return VersionAction


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ferry")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        # ``ferry worker JOBSPEC``, run for every job on a node: no argparse when
        # there are no options (see worker_cli.fast_args)
        from ferry.worker.worker_cli import fast_args, run

        fast = fast_args(argv[1:])
        if fast is not None:
            return int(run(fast))
    import argparse

    parser = argparse.ArgumentParser(
        prog="ferry",
        description="ferry: stage, verify, run and plan scientific workflow jobs.",
        epilog="Run 'ferry COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=_version_action(), nargs=0, help="show ferry's version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    # a known command needs only its own parser; the full list is for help and typos
    names = [chosen] if chosen in COMMANDS else list(COMMANDS)
    for name in names:
        module, help_text = COMMANDS[name]
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            mod = importlib.import_module(module)
            if getattr(mod, "DESCRIPTION", None):
                p.description = mod.DESCRIPTION
                p.epilog = getattr(mod, "EPILOG", None)
                p.formatter_class = argparse.RawDescriptionHelpFormatter
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args))
    except BrokenPipeError:  # `ferry status DIR | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
