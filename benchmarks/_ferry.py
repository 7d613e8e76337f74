"""ferry as a user has it, for the benchmarks: installed from this checkout into a venv.

The development venv holds ferry as an editable install, whose import hook
costs 20-30 ms in every process (it imports pathlib and walks a finder per
import). A user, and a compute node, have a wheel that pip byte-compiled. The
benchmarks time the command users run, so they install ferry (not editable)
into a venv of their own under ``benchmarks/_work/`` (git-ignored): made on the
first run with ferry's dependencies and the extras asked for, and ferry itself
reinstalled from the checkout on every run, so that the code timed is the code
checked out.

``--ferry checkout`` in each benchmark times the development venv's ferry instead.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "_work"


def installed_python(
    name: str = "cli-venv", extras: tuple[str, ...] = ("http", "s3", "sftp")
) -> Path:
    """The Python of ``benchmarks/_work/NAME`` with ferry (and ``extras``) freshly installed."""
    root = WORK / name
    py = root / "bin" / "python"
    spec = f"{REPO}[{','.join(extras)}]" if extras else str(REPO)
    if not py.exists():
        print(f"making {root} (once) ...", file=sys.stderr)
        venv.create(root, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", spec], check=True)
    print(f"installing ferry from this checkout into {root} ...", file=sys.stderr)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(REPO)],
        check=True,
    )
    return py


def ferry_python(which: str) -> Path:
    """The Python whose ferry is timed: ``installed`` (default) or ``checkout``."""
    if which == "checkout":
        return Path(sys.executable)
    return installed_python()
