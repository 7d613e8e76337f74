"""``python -m ferry.planner.condor_node NODE.json``: an HTCondor node job, on the execute point.

The HTCondor backend (:mod:`ferry.planner.htcondor`) makes every DAG node's
job run this module in the job's scratch directory, where HTCondor has put the
node file (and, in condorio mode, the node's ``file://`` inputs). It imports
only the worker: the execute point needs ferry installed, not the planner's
dependencies.

For each job spec of the node (one, or a cluster's members in order) it runs
the worker exactly as ``ferry worker`` does (work directory under
``$_CONDOR_SCRATCH_DIR``, sha256-checked stage-in, the job, stage-out, the
invocation record), then puts the record where file transfer takes it back
(``_ferry_r<i>.json``). A cluster's member that succeeded in an earlier
attempt (the node file's ``done``, written by the POST script) does not run
again. An input without a sha256 of its own that a parent
staged out is checked against the sum the parent's record gave (the parents'
``_ferry_sums_<node>.json``, brought in with the node file), as PegasusLite
checks intermediate files against the parents' ``.meta``. Every file the submit description lists in
``transfer_output_files`` exists when it exits (an empty one stands in for an
output the job did not write: a missing one would put the job on hold); the
POST script only uses what the records say was staged. The exit code is the
first failed member's worker exit code (docs/worker.md), 0 when all succeeded;
TERM (eviction) stops the node after the running member (143).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

__all__ = ["main", "run_node"]


def run_node(node_file: str) -> int:
    from ferry.plugins.errors import ConfigError
    from ferry.worker.job import JobWorker
    from ferry.worker.jobspec import load_jobspec

    scratch = os.path.abspath(os.environ.get("_CONDOR_SCRATCH_DIR") or os.getcwd())
    os.environ["_CONDOR_SCRATCH_DIR"] = scratch  # the specs' sandbox URLs expand it
    try:
        with open(node_file, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError) as exc:
        print(f"ferry node: cannot read {node_file}: {exc}", file=sys.stderr)
        return 2
    records_dir = os.path.join(scratch, "_ferry_records")
    os.makedirs(records_dir, exist_ok=True)
    sums = _parent_sums(scratch, doc.get("sums") or [])
    done = set(doc.get("done") or ())
    worst = 0
    for i, spec_doc in enumerate(doc.get("specs", [])):
        target = os.path.join(scratch, doc["records"][i])
        if spec_doc.get("id") in done:
            print(
                f"ferry node: job {spec_doc['id']} succeeded in an earlier attempt", file=sys.stderr
            )
            continue
        for inp in spec_doc.get("inputs") or []:  # files the parents staged out: checked too
            lfn = inp.get("lfn")
            if not inp.get("sha256") and not inp.get("executable") and lfn in sums:
                inp["sha256"] = sums[lfn]
        try:
            spec = load_jobspec(json.dumps(spec_doc), source=f"{node_file}[{i}]")
        except ConfigError as exc:
            print(f"ferry node: {exc}", file=sys.stderr)
            worst = worst or 2
            continue
        worker = JobWorker(spec, records_dir=records_dir, workdir_base=scratch)
        code = worker.run()
        rec = worker.record
        for f in rec.failures:
            print(f"ferry node: job {spec.id}: {f.step}: {f.reason}", file=sys.stderr)
        made = os.path.join(records_dir, f"{rec.job_id}.{rec.attempt}.json")
        if os.path.exists(made):
            os.replace(made, target)
        if code != 0 and not worst:
            worst = code
        if worker.evicted:
            worst = 143
            break
    names = [r["name"] for r in doc.get("returns", [])] + list(doc.get("records", []))
    for name in names:
        path = os.path.join(scratch, name)
        if not os.path.exists(path):
            open(path, "wb").close()
    return worst


def _parent_sums(scratch: str, names: list[str]) -> dict[str, str]:
    """``{lfn: sha256}`` from the parents' sums files in the sandbox; an LFN two parents
    give different sums for is left unchecked, as is anything unreadable."""
    sums: dict[str, str] = {}
    clash: set[str] = set()
    for name in names:
        try:
            with open(os.path.join(scratch, name), "rb") as f:
                got = json.loads(f.read())
        except (OSError, ValueError):
            continue
        for lfn, digest in got.items() if isinstance(got, dict) else ():
            if sums.get(lfn, digest) != digest:
                clash.add(lfn)
            sums[lfn] = digest
    for lfn in clash:
        del sums[lfn]
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferry-condor-node", description="Run an HTCondor node's job specs (ferry)."
    )
    parser.add_argument("node_file", metavar="NODE.json")
    parser.add_argument("-d", "--debug", action="store_true", help="log debug detail")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="ferry worker: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    return run_node(args.node_file)


if __name__ == "__main__":
    sys.exit(main())
