"""Local-run throughput: a 2,000-job fan-out of no-op jobs, each through the real worker.

The workflow: one root job, then N jobs that each depend on it (``jobDependencies``),
every one ``/bin/true`` with no files. ``ferry run`` plans it and runs it with
``--jobs`` slots (default: the number of CPUs); every job goes through the worker
exactly as on a node (own work directory, invocation record, checks), in the
warm zygote's forked children. Reported: jobs/s over the run (the runner's
``workflow-started`` to ``workflow-finished`` journal events, and the whole
``ferry run`` command's wall time, planning and start-up included), median of 3.

A second variant (``--with-files``) gives every job a 1 KiB input file from the
replica catalog (sha256-checked on stage-in) and a staged-out output.

    python benchmarks/bench_local_run.py                    # 2,000 jobs, 3 runs
    python benchmarks/bench_local_run.py --jobs 500 --runs 1 --with-files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "_work" / "local-run"


def write_workflow(base: Path, n: int, with_files: bool) -> Path:
    from Pegasus.api import File, Job, ReplicaCatalog, Workflow

    wf = Workflow("fanout", infer_dependencies=False)
    root = Job("true", _id="root")
    wf.add_jobs(root)
    rc = ReplicaCatalog()
    if with_files:
        data = base / "data"
        data.mkdir(parents=True, exist_ok=True)
    kids = []
    for i in range(n):
        job = Job("true", _id=f"j{i:05d}")
        if with_files:
            body = f"input {i}\n".encode() * 100
            (data / f"in{i}").write_bytes(body[:1024])
            rc.add_replica(
                "local",
                f"in{i}",
                str(data / f"in{i}"),
                checksum={"sha256": hashlib.sha256(body[:1024]).hexdigest()},
            )
            job = Job("cp", _id=f"j{i:05d}").add_args(f"in{i}", f"out{i}")
            job.add_inputs(File(f"in{i}")).add_outputs(File(f"out{i}"), register_replica=False)
        kids.append(job)
    wf.add_jobs(*kids)
    wf.add_dependency(root, children=kids)
    if with_files:
        wf.add_replica_catalog(rc)
    path = base / "workflow.yml"
    wf.write(str(path))
    return path


def one_run(
    n: int, slots: int | None, with_files: bool, per_process: int | None = None
) -> dict[str, float]:
    base = WORK / f"n{n}{'-files' if with_files else ''}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    write_workflow(base, n, with_files)
    cmd = [
        sys.executable,
        "-m",
        "ferry.planner.cli",
        "run",
        "workflow.yml",
        "--dir",
        "run",
        "-O",
        "outputs",
        "--no-progress",
    ]
    if slots:
        cmd += ["-j", str(slots)]
    if per_process:
        cmd += ["--jobs-per-process", str(per_process)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=base, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"ferry run failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    events = [json.loads(x) for x in (base / "run" / "journal.jsonl").read_text().splitlines()]
    start = next(e["t"] for e in events if e["event"] == "workflow-started")
    end = next(e["t"] for e in events if e["event"] == "workflow-finished")
    records = len(os.listdir(base / "run" / "records"))
    if records != n + 1:
        raise SystemExit(f"expected {n + 1} invocation records, found {records}")
    shutil.rmtree(base, ignore_errors=True)
    return {"run": end - start, "command": wall, "jobs": n + 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2000, help="fan-out width (default: 2000)")
    ap.add_argument("--slots", type=int, help="ferry run -j (default: the number of CPUs)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--with-files", action="store_true", help="one input and one output per job")
    ap.add_argument(
        "--jobs-per-process", type=int, help="ferry run --jobs-per-process (default: its default)"
    )
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    runs = [
        one_run(args.jobs, args.slots, args.with_files, args.jobs_per_process)
        for _ in range(args.runs)
    ]
    jobs = runs[0]["jobs"]
    run_rates = [jobs / r["run"] for r in runs]
    cmd_rates = [jobs / r["command"] for r in runs]
    print(
        f"# load average before: {load:.1f}; cores: {os.cpu_count()}; slots: "
        f"{args.slots or os.cpu_count()}; {'with files' if args.with_files else 'no files'};"
        f" jobs per process: {args.jobs_per_process or 'default (100)'}"
    )
    print("| jobs | runs | run jobs/s (median) | all runs | ferry run command jobs/s (median) |")
    print("|---|---|---|---|---|")
    print(
        f"| {jobs:,} | {len(runs)} | {statistics.median(run_rates):.0f} |"
        f" {', '.join(f'{r:.0f}' for r in run_rates)} | {statistics.median(cmd_rates):.0f} |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
