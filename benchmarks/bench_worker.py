"""The worker's own overhead around a no-op job, process start included.

One 16 KiB input and one output over file://, a job that copies one to the
other (`/bin/cp`), run as `ferry worker JOBSPEC` in a fresh process each time.
Reports the median wall time of many runs next to `python -c pass` and
`/bin/cp` alone measured in the same run, so the ratio survives a noisy machine.

    python benchmarks/bench_worker.py [--runs 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-worker-") as tmp:
        work = Path(tmp)
        spec = make_job(work)
        env = {**os.environ, "FERRY_WORK_DIR": str(work)}
        cmds = {
            "ferry worker": [sys.executable, "-m", "ferry.worker", str(spec)],
            "python -c pass": [sys.executable, "-c", "pass"],
            "/bin/cp alone": ["/bin/cp", str(work / "in.dat"), str(work / "cp.dat")],
        }
        times: dict[str, list[float]] = {k: [] for k in cmds}
        timed(cmds["ferry worker"], env)  # warm the page cache
        for _ in range(args.runs):
            for name, argv in cmds.items():  # interleaved: noise hits all alike
                times[name].append(timed(argv, env))
        records = list((work / "records").glob("noop.*.json"))
        assert len(records) == args.runs + 1, "every run must leave a record"
        assert (work / "out" / "out.dat").read_bytes() == (work / "in.dat").read_bytes()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'command':<16} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for k, v in times.items():
        print(f"{k:<16} {med[k] * 1000:>10.1f} {min(v) * 1000:>8.1f} {max(v) * 1000:>8.1f}")
    overhead = med["ferry worker"] - med["/bin/cp alone"]
    print(
        f"worker overhead (median wall, process start included): {overhead * 1000:.1f} ms;"
        f" target < 150 ms: {'met' if overhead < 0.150 else 'NOT met'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": args.runs, "seconds": times, "median": med}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
