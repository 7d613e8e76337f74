"""``python -m ferry.worker JOBSPEC``: the worker without the ``ferry`` command's dispatch."""

from __future__ import annotations

import argparse
import sys

from .worker_cli import DESCRIPTION, EPILOG, add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="ferry-worker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
