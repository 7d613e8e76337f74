"""Planning synthetic Pegasus 5 workflows: time and peak memory of read + plan + write.

The workflows are bench_plan_read.py's (each job: two arguments, one input and one
output; ``jobDependencies`` a binary tree), with a replica catalog holding one
regex entry for every job's input (``f(\\d+)\\.in``) so that the inputs resolve.
Each measurement runs ``load_workflow`` then ``plan_workflow`` (graph, validation,
sites, data reuse, clustering, cleanup, one job spec file per job, plan.json) in a
fresh Python process, so that its peak RSS (``ru_maxrss``, children included for
the spec writers) is its own. Run directories go under ``benchmarks/_work/plan/``
and are removed afterwards.

    python benchmarks/bench_plan.py                       # 10k, 100k, 1M jobs
    python benchmarks/bench_plan.py --sizes 10000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "plan"
sys.path.insert(0, str(HERE))

from bench_plan_read import workflow  # noqa: E402

RC = """\
pegasus: 5.0.4
replicas:
- lfn: f(\\d+)\\.in
  regex: true
  pfns:
  - site: local
    pfn: /data/in/f[1].in
"""
TC = """\
pegasus: 5.0.4
transformations:
- name: proc
  sites:
  - name: local
    pfn: /bin/true
    type: installed
"""


def child(path: str, run_dir: str, writers: int | None) -> None:
    import resource

    def cpu() -> float:
        s = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    from ferry.planner.pegasus import load_workflow
    from ferry.planner.plan import PlanOptions, plan_workflow

    rc = Path(run_dir).with_suffix(".rc.yml")
    rc.write_text(RC)
    tc = Path(run_dir).with_suffix(".tc.yml")
    tc.write_text(TC)
    def cpu_self() -> float:
        s = resource.getrusage(resource.RUSAGE_SELF)
        return s.ru_utime + s.ru_stime

    c0, w0, s0 = cpu(), time.perf_counter(), cpu_self()
    wf = load_workflow(
        path, replica_files=[str(rc)], transformation_files=[str(tc)], cwd=os.path.dirname(path)
    )
    w1, c1, s1 = time.perf_counter(), cpu(), cpu_self()
    res = plan_workflow(
        wf, PlanOptions(run_dir=run_dir, output_dir=run_dir + ".out", writers=writers)
    )
    w2, c2, s2 = time.perf_counter(), cpu(), cpu_self()
    used = c2 - c0
    rss = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        * 1024
    )
    print(
        json.dumps(
            {
                "jobs": res.jobs,
                "read": w1 - w0,
                "plan": w2 - w1,
                "wall": w2 - w0,
                "cpu": used,
                "rss": rss,
                "plan_json": os.path.getsize(os.path.join(run_dir, "plan.json")),
                # CPU seconds: reading (this process, its reader workers), planning (this
                # process, its spec writers), and this process's per planning pass
                "cpu_read_main": s1 - s0,
                "cpu_read_workers": (c1 - c0) - (s1 - s0),
                "cpu_plan_main": s2 - s1,
                "cpu_plan_writers": (c2 - c1) - (s2 - s1),
                "phases": res.phases,
                "cpu_phases": res.cpu,
            }
        )
    )


def measure(n: int, writers: int | None) -> dict:
    path = workflow(n)
    WORK.mkdir(parents=True, exist_ok=True)
    run_dir = WORK / f"run-{n}"
    for p in (run_dir, Path(str(run_dir) + ".out")):
        shutil.rmtree(p, ignore_errors=True)
    args = [sys.executable, __file__, "--child", str(path), str(run_dir)]
    if writers:
        args += ["--writers", str(writers)]
    try:
        out = subprocess.run(args, check=True, capture_output=True, text=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(str(run_dir) + ".out", ignore_errors=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["size"] = path.stat().st_size
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--writers", type=int, help="spec-writing processes (default: CPUs)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON too")
    ap.add_argument("--child", nargs=2, metavar=("WORKFLOW", "RUN_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.writers)
        return 0
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    results = [measure(int(s), args.writers) for s in args.sizes.split(",")]
    try:
        after = os.getloadavg()[0]
    except OSError:
        after = float("nan")
    print(f"# load average before: {load:.1f}, after: {after:.1f}; cores: {os.cpu_count()}")
    print(
        "| jobs | YAML size | read s | plan + write s | total wall s | CPU s"
        " | CPU read (main + workers) | CPU plan (main + writers) | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['jobs']:,} | {r['size'] / 1e6:.0f} MB | {r['read']:.1f} | {r['plan']:.1f} |"
            f" {r['wall']:.1f} | {r['cpu']:.1f} |"
            f" {r['cpu_read_main']:.1f} + {r['cpu_read_workers']:.1f} |"
            f" {r['cpu_plan_main']:.1f} + {r['cpu_plan_writers']:.1f} |"
            f" {r['rss'] / 2**30:.2f} GiB |"
        )
    for r in results:
        passes = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_phases"].items())
        print(f"# {r['jobs']:,} jobs, CPU s per pass (planning process): {passes}")
    if args.json:
        for r in results:
            r["load_before"], r["load_after"] = load, after
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
