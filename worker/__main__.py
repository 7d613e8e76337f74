"""``python -m ferry.worker JOBSPEC``: the worker without the ``ferry`` command's dispatch."""

from __future__ import annotations

import sys

from .worker_cli import DESCRIPTION, EPILOG, add_arguments, fast_args, run


def main() -> int:
    fast = fast_args(sys.argv[1:])
    if fast is not None:
        return run(fast)
    import argparse

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
