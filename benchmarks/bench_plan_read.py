"""Reading synthetic Pegasus 5 workflows: time and peak memory of ``load_workflow``.

The workflows are shaped like pegasus-wms-api's output (each job: type, name, id,
two arguments, one input and one output in ``uses``; ``jobDependencies`` a binary
tree) and cached under ``benchmarks/_work/plan-read/``. Each measurement runs in a
fresh Python process so that its peak RSS (``ru_maxrss``) is its own.

    python benchmarks/bench_plan_read.py                  # 10k, 100k, 1M jobs
    python benchmarks/bench_plan_read.py --sizes 10000 --baseline
    python benchmarks/bench_plan_read.py --json out.json
    python benchmarks/bench_plan_read.py --sizes 100000 --candidates

``--baseline`` adds PyYAML's ``CSafeLoader`` on the 10k file (the whole document
into dicts, as a generic reader would). Results go to stdout as a Markdown table:
wall time, CPU time of the reading process and of its forked workers, the reading
process's peak RSS (``ru_maxrss``), and the peak total PSS of the process and its
workers (sampled every 0.2 s from ``/proc``; shared pages counted once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "_work" / "plan-read"


def generate(n: int, path: Path) -> None:
    """Write ``n`` jobs the way Pegasus.api's writer lays them out (PyYAML block style)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        w = f.write
        w(
            "x-pegasus:\n  apiLang: python\n  createdBy: bench\n  createdOn: 11-25-26T19:41:59Z\n"
            "pegasus: 5.0.4\nname: synthetic\njobs:\n"
        )
        for i in range(n):
            w(
                f"- type: job\n  name: proc\n  id: ID{i + 1:07d}\n  arguments:\n  - -i\n"
                f"  - f{i}.in\n  uses:\n  - lfn: f{i}.out\n    type: output\n"
                f"    stageOut: true\n    registerReplica: true\n  - lfn: f{i}.in\n"
                f"    type: input\n"
            )
        w("jobDependencies:\n")
        for i in range(n):
            kids = [c for c in (2 * i + 1, 2 * i + 2) if c < n]
            if kids:
                w(f"- id: ID{i + 1:07d}\n  children:\n")
                for c in kids:
                    w(f"  - ID{c + 1:07d}\n")
    os.replace(tmp, path)


def workflow(n: int) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"wf-{n}.yml"
    if not path.exists():
        generate(n, path)
    return path


NAMES = {
    "ferry": "ferry load_workflow",
    "ferry-1proc": "ferry load_workflow, one process",
    "ferry-batches": "ferry, yaml-rs batches + builder (no strict reader)",
    "pyyaml": "PyYAML CSafeLoader (dicts)",
    "yaml-rs": "yaml-rs loads (dicts)",
    "rapidyaml": "rapidyaml parse + emit_json + msgspec (dicts)",
    "pyyaml-events": "PyYAML CParser events only",
}


def child(mode: str, path: str) -> None:
    """Measure one read in this (fresh) process and print a JSON line."""
    import resource

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    if mode in ("ferry", "ferry-1proc", "ferry-batches"):
        from ferry.planner import pegasus

        if mode != "ferry":
            pegasus.PARALLEL_MIN = 1 << 62
        if mode == "ferry-batches":
            pegasus.STRICT = False
        c0, w0 = cpu(), time.perf_counter()
        wf = pegasus.load_workflow(path, cwd=os.path.dirname(path))
        jobs = len(wf.jobs)
    elif mode == "yaml-rs":
        import yaml_rs

        c0, w0 = cpu(), time.perf_counter()
        with open(path, encoding="utf-8") as f:
            data = yaml_rs.loads(f.read(), parse_datetime=False)
        jobs = len(data["jobs"])
    elif mode == "rapidyaml":
        import msgspec
        import ryml

        c0, w0 = cpu(), time.perf_counter()
        with open(path, "rb") as f:
            tree = ryml.parse_in_arena(f.read())
        js = ryml.emit_json_malloc(tree, tree.root_id())
        del tree
        data = msgspec.json.decode(js)
        jobs = len(data["jobs"])
    elif mode == "pyyaml-events":
        import yaml

        c0, w0 = cpu(), time.perf_counter()
        with open(path, encoding="utf-8") as f:
            jobs = sum(1 for _ in yaml.parse(f, Loader=yaml.CSafeLoader)) // 40
    else:
        import yaml

        c0, w0 = cpu(), time.perf_counter()
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=yaml.CSafeLoader)  # noqa: S506
        jobs = len(data["jobs"])
    wall, used = time.perf_counter() - w0, cpu() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "mode": mode,
                "jobs": jobs,
                "wall": wall,
                "cpu": used,
                "rss": rss,
                "workers_cpu": kids.ru_utime + kids.ru_stime,
                "workers_rss": kids.ru_maxrss * 1024,
            }
        )
    )


def _pss(pid: int) -> int:
    """Proportional set size of ``pid`` and its descendants, in bytes (0 if gone)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except (OSError, ValueError):
        return total
    return total + sum(_pss(k) for k in kids)


def run(mode: str, path: Path) -> dict:
    """One measurement in a fresh process; samples the PSS of it and its workers."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _pss(proc.pid))
        time.sleep(0.2)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"measurement failed: {mode} {path}")
    result = json.loads(out.strip().splitlines()[-1])
    result["size"] = path.stat().st_size
    result["pss"] = peak
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--baseline", action="store_true", help="also PyYAML CSafeLoader at 10k")
    ap.add_argument(
        "--candidates",
        action="store_true",
        help="also the parsers considered (yaml-rs, rapidyaml, PyYAML events, ferry in one"
        " process, ferry without the strict reader) on the 100k file",
    )
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON too")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        path = workflow(n)
        results.append(run("ferry", path))
    if args.baseline:
        results.append(run("pyyaml", workflow(10000)))
    if args.candidates:
        for mode in ("ferry-1proc", "ferry-batches", "yaml-rs", "rapidyaml", "pyyaml-events"):
            try:
                results.append(run(mode, workflow(100000)))
            except SystemExit as exc:
                print(f"# {mode}: {exc}", file=sys.stderr)
    print(f"# load average before: {load:.1f}; cores: {os.cpu_count()}")
    print(
        "| reader | jobs | YAML size | wall s | CPU s (main) | CPU s (workers) | peak RSS (main)"
        " | peak PSS (all) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        name = NAMES[r["mode"]]
        print(
            f"| {name} | {r['jobs']:,} | {r['size'] / 1e6:.0f} MB | {r['wall']:.1f} |"
            f" {r['cpu']:.1f} | {r['workers_cpu']:.1f} | {r['rss'] / 2**30:.2f} GiB |"
            f" {r['pss'] / 2**30:.2f} GiB |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
