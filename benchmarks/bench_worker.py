"""The worker's own overhead around a no-op job, process start included.

One 16 KiB input and one output over file://, a job that copies one to the
other (`/bin/cp`), run as `ferry worker JOBSPEC` in a fresh process each time.
Reports the median wall time of many runs next to `python -c pass` and
`/bin/cp` alone measured in the same run, so the ratio survives a noisy machine.

Two installs of ferry are measured:

- **installed**: ferry installed from this checkout into its own venv
  (`benchmarks/_work/worker-venv`, made on the first run, ferry reinstalled on
  every run), as a compute node has it: a wheel, byte-code compiled by pip,
  with only ferry's own plugins;
- **checkout**: the development venv running this script (an editable
  install, whose import hook costs about 20 ms per process, plus any plugins
  installed there, such as the example plugin).

The target (under 150 ms) is judged on the installed one.

Wall times on a shared 2-core machine swing with the other work on it. With
``--instructions``, each command also runs once under valgrind's callgrind,
which counts the instructions the process executes: a figure that the load
does not change, for telling whether a change to the start-up helped.

    python benchmarks/bench_worker.py [--runs 30] [--json OUT] [--no-install] [--instructions]
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _ferry

REPO = Path(__file__).resolve().parents[1]


#: where the timed commands run: not the checkout, whose ferry.egg-info (the
#: development install's metadata) would be on ``python -m``'s path
NEUTRAL_CWD = _ferry.WORK


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, cwd=NEUTRAL_CWD)
    return time.perf_counter() - t0


def installed_python() -> str:
    """A venv with ferry installed from this checkout (not editable); ferry reinstalled."""
    return str(_ferry.installed_python("worker-venv", extras=()))


def instructions(cmds: dict[str, list[str]], env: dict[str, str]) -> dict[str, int]:
    """Instructions executed by each command (valgrind --tool=callgrind), once each."""
    out: dict[str, int] = {}
    for name, argv in cmds.items():
        with tempfile.NamedTemporaryFile(prefix="ferry-cg-") as cg:
            p = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg.name}", *argv],
                env=env, capture_output=True, text=True, check=True, cwd=NEUTRAL_CWD,
            )
        refs = [line for line in p.stderr.splitlines() if "Collected :" in line]
        out[name] = int(refs[-1].split(":")[-1].strip())
    return out


def make_job(work: Path) -> Path:
    data = os.urandom(16 * 1024)
    (work / "in.dat").write_bytes(data)
    spec = {
        "version": 1,
        "id": "noop",
        "executable": "/bin/cp",
        "arguments": ["in.dat", "out.dat"],
        "inputs": [
            {
                "lfn": "in.dat",
                "sources": [{"url": f"file://{work}/in.dat"}],
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
        "outputs": [{"lfn": "out.dat", "destinations": [{"url": f"file://{work}/out/out.dat"}]}],
        "records_dir": str(work / "records"),
    }
    path = work / "noop.json"
    path.write_text(json.dumps(spec))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument(
        "--no-install", action="store_true", help="measure the checkout's venv only"
    )
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="also count each command's instructions once with valgrind (callgrind)",
    )
    args = ap.parse_args()
    pythons = {"checkout": sys.executable}
    if not args.no_install:
        pythons = {"installed": installed_python(), **pythons}
    # the checkout's byte code, as an install has it (PYTHONDONTWRITEBYTECODE may be set)
    for part in ("plugins", "worker", "containers"):
        compileall.compile_dir(str(REPO / part), quiet=1)
    with tempfile.TemporaryDirectory(prefix="ferry-bench-worker-") as tmp:
        work = Path(tmp)
        spec = make_job(work)
        env = {**os.environ, "FERRY_WORK_DIR": str(work)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cmds: dict[str, list[str]] = {}
        for label, py in pythons.items():
            cmds[f"ferry worker ({label})"] = [py, "-m", "ferry.worker", str(spec)]
            cmds[f"python -c pass ({label})"] = [py, "-c", "pass"]
        cmds["/bin/cp alone"] = ["/bin/cp", str(work / "in.dat"), str(work / "cp.dat")]
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for argv in cmds.values():  # warm the page cache
            timed(argv, env)
        for _ in range(args.runs):
            for name, argv in cmds.items():  # interleaved: noise hits all alike
                times[name].append(timed(argv, env))
        counts = instructions(cmds, env) if args.instructions else {}
        records = list((work / "records").glob("noop.*.json"))
        runs_each = args.runs + 1 + (1 if counts else 0)
        assert len(records) == len(pythons) * runs_each, "every run must leave a record"
        assert (work / "out" / "out.dat").read_bytes() == (work / "in.dat").read_bytes()
    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f}")
    print(f"{'command':<26} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for k, v in times.items():
        print(f"{k:<26} {med[k] * 1000:>10.1f} {min(v) * 1000:>8.1f} {max(v) * 1000:>8.1f}")
    overhead = {}
    for label in pythons:
        overhead[label] = med[f"ferry worker ({label})"] - med["/bin/cp alone"]
        print(f"worker overhead, {label} (median wall, process start included):"
              f" {overhead[label] * 1000:.1f} ms")
    for k, n in counts.items():
        print(f"instructions, {k:<26} {n / 1e6:8.1f} M")
    judged = overhead.get("installed", overhead["checkout"])
    print(f"target < 150 ms: {'met' if judged < 0.150 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"runs": args.runs, "load": load, "seconds": times, "median": med,
                 "overhead": overhead, "instructions": counts},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
