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


# name -> examples for its --help (a module's own EPILOG may already carry them)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "worker": (
        "ferry worker run1/jobs/0000/pre.json          # run one planned job as on a node",
        "ferry worker --keep-workdir -d job.json --records records/",
    ),
    "plugins": (
        "ferry plugins          # a table: protocol, plugin, schemes, capabilities, status",
        "ferry plugins --json",
    ),
    "plan": (
        "ferry plan workflow.yml --dir run1",
        "ferry plan workflow.yml -s condorpool -o local --cleanup leaf --dir run1",
        "ferry plan workflow.yml --backend htcondor --dir run2 --submit",
    ),
    "run": (
        "ferry run workflow.yml --dir run1 -j 4",
        "ferry run --resume run1          # after a crash: what succeeded does not run again",
    ),
    "status": ("ferry status run1", "ferry status --json run1"),
    "statistics": ("ferry statistics run1", "ferry statistics --json run1"),
    "analyze": ("ferry analyze run1", "ferry analyze -n 50 run1"),
    "remove": ("ferry remove run1", "ferry remove --wait 30 run1"),
    "submit": ("ferry submit run2", "ferry submit --max-jobs 200 run2"),
    "postscript": ("(DAGMan runs it) ferry postscript --return $RETURN --retry $RETRY DIR $JOB",),
}

TOP_EPILOG = """\
examples:
  ferry transfer data/in.dat /scratch/run1/in.dat --sha256 HEX
  ferry transfer -f transfers.json --json      # pegasus-transfer's JSON list
  ferry run workflow.yml --dir run1; ferry status run1

Run 'ferry COMMAND --help' for a command's options and examples.
"""

PLUGINS_DESCRIPTION = """\
List the protocol plugins ferry found (the built-in ones and those registered
under the `ferry` entry-point group): each protocol's schemes, what it can do
(get, put, stat, mkdir, remove, checksum, resume, third-party copy) and whether
it is available, or why not (a missing library says what to install). Plugins
that failed to load are listed with the reason, then the container runtimes.
"""


def _help_texts(name: str, mod: Any) -> tuple[str, str | None]:
    """A command's description and epilog, with examples if its module has none."""
    description = getattr(mod, "DESCRIPTION", None) or (
        PLUGINS_DESCRIPTION if name == "plugins" else COMMANDS[name][1]
    )
    epilog = getattr(mod, "EPILOG", None) or ""
    if name in EXAMPLES and "example" not in epilog:
        lines = "".join(f"  {line}\n" for line in EXAMPLES[name])
        epilog = f"examples:\n{lines}" + (f"\n{epilog}" if epilog else "")
    return description, epilog or None


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
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_version_action(), nargs=0, help="show ferry's version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    asks_help = any(a in ("-h", "--help") for a in argv)
    if chosen is not None and chosen not in COMMANDS and not asks_help:
        import difflib

        close = difflib.get_close_matches(chosen, COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        parser.error(f"unknown command '{chosen}'{hint}; the commands: {', '.join(COMMANDS)}")
    # a known command needs only its own parser; the full list is for help
    names = [chosen] if chosen in COMMANDS else list(COMMANDS)
    command = None
    for name in names:
        module, help_text = COMMANDS[name]
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            mod = importlib.import_module(module)
            p.description, p.epilog = _help_texts(name, mod)
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
            command = p
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the parser they were given to, with its usage
        before = argv[: argv.index(chosen)] if chosen in argv else argv
        owner = parser if command is None or any(a in before for a in extra) else command
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
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
