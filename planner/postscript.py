"""``ferry postscript DIR NODE ...``: the DAGMan POST script of the HTCondor backend.

DAGMan runs it on the access point after each attempt of a node's job
(``SCRIPT POST <node> <python> -m ferry.planner.cli postscript DIR $JOB
--return $RETURN --retry $RETRY --max-retries $MAX_RETRIES --jobid $JOBID``),
after each NOOP cleanup node, and after the FINAL node. Under a lock on
``DIR/htcondor/post.lock`` (DAGMan runs several POST scripts at once):

**Job nodes.** The attempt gets the next number (the records of earlier
attempts, resubmissions from a rescue DAG included, are never overwritten).
When a cluster's attempt fails, the members that succeeded are written into
the node file's ``done``: the next attempt runs only the others (their last
records count for the replica catalog and the output sums).
Each member's invocation record, brought back by file transfer, goes to
``DIR/records/<id>.<attempt>.json``. In condorio mode each output the worker
staged into the sandbox came back too: its sha256 must match the one the
worker recorded, then it is copied to its ``file://`` destinations (atomically,
under a temporary name first) and the record's transfer entries name those
destinations (``route`` ``htcondor``), as a local run's would; a mismatch or a
failed copy fails the attempt (worker exit code 4 or 5, written into the
record). A succeeded node whose children check intermediate files gets its
output sums written to ``_ferry_sums_<node>.json`` beside its node file, which
the children's jobs bring in. Then ``journal.jsonl`` gets ``started`` (at the
record's start), ``succeeded`` or ``failed`` (with the exit code) and, while DAGMan has retries
left, ``retry``; a success registers the outputs in ``replicas.out.yml``.
The exit status is 0 for a success, else the worker's exit code (1 for a job
killed by a signal or removed from the queue), so DAGMan retries the node.

**Cleanup nodes** remove their files (``file://`` directly, other URLs
through the transfer engine), journal ``cleanup`` and exit 0.

**The FINAL node** journals ``workflow-finished`` (success when
``$DAG_STATUS`` is 0 and no node failed; removed when the DAG was removed),
runs the ``leaf`` cleanup after a success, and exits 1 unless the workflow
succeeded (the FINAL node decides the DAG's status).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

from ferry.plugins.errors import ConfigError

from .htcondor import CONDOR_DIR, load_config, node_file_path, sums_file_name
from .rundir import Journal, ReplicaWriter, RunDir, read_journal

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = """\
The DAGMan POST script of a run planned with --backend htcondor (DAGMan runs
it; not meant to be run by hand): record a node's attempt (records, condorio
outputs checked against their sha256 and put in place, journal, replica
catalog), run a cleanup node's removals, or end the workflow (FINAL node).
"""

EXIT_WORKER_ERROR = 2
EXIT_INTEGRITY = 4
EXIT_STAGE_OUT = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument("node", metavar="NODE", help="the DAG node ($JOB)")
    parser.add_argument("--return", dest="ret", default="0", help="$RETURN")
    parser.add_argument("--retry", default="0", help="$RETRY")
    parser.add_argument("--max-retries", default="0", help="$MAX_RETRIES")
    parser.add_argument("--jobid", default=None, help="$JOBID")
    parser.add_argument("--dag-status", default=None, help="$DAG_STATUS (FINAL node)")
    parser.add_argument("--failed-count", default=None, help="$FAILED_COUNT (FINAL node)")


def _int(text: object, default: int | None = None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(args: argparse.Namespace) -> int:
    rd = RunDir(args.run_dir)
    try:
        cfg = load_config(rd)
        path = node_file_path(rd.join(CONDOR_DIR), args.node, int(cfg["shards"]))
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        print(f"ferry postscript: node {args.node}: {exc}", file=sys.stderr)
        return EXIT_WORKER_ERROR
    with _locked(rd.join(CONDOR_DIR, "post.lock")):
        kind = doc.get("kind")
        if kind == "job":
            return _job(rd, doc, os.path.dirname(path), args)
        if kind == "cleanup":
            _cleanup(rd, doc["action"], doc.get("remove", []))
            return 0
        if kind == "final":
            return _final(rd, doc, args)
    print(f"ferry postscript: {path}: unknown node kind {kind!r}", file=sys.stderr)
    return EXIT_WORKER_ERROR


# -- job nodes ---------------------------------------------------------------------------


def _load_record(path: str, job_id: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
        rec = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("job_id") != job_id:
        return None  # the stand-in the node job leaves when the worker wrote no record
    return rec


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _put(src: str, dst: str, move: bool) -> None:
    """Copy (or move) ``src`` to ``dst`` under a temporary name first, then rename."""
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    tmp = f"{dst}.ferry-part-{os.getpid()}"
    try:
        if move:
            try:
                os.replace(src, tmp)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copy2(src, tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fail(rec: dict[str, Any], code: int, step: str, reason: str, **where: str | None) -> None:
    rec["status"] = "failed"
    rec["worker_exit_code"] = code
    if not rec.get("failed_step"):
        rec["failed_step"] = step
    rec.setdefault("failures", []).append(
        {"step": step, "reason": reason, **{k: v for k, v in where.items() if v}}
    )


def _place_outputs(shard_dir: str, doc: dict[str, Any], member: str, rec: dict[str, Any]) -> None:
    """Check each output the worker staged into the sandbox against its recorded sha256
    and copy it to its destinations; a problem fails the record."""
    node = doc["node"]
    transfers = rec.setdefault("transfers", [])
    for k, ret in enumerate(doc.get("returns", [])):
        if ret["member"] != member:
            continue
        name = ret["name"]
        idx = next(
            (
                i
                for i, t in enumerate(transfers)
                if t.get("direction") == "output"
                and t.get("lfn") == ret["lfn"]
                and str(t.get("dest", "")).endswith("/" + name)
            ),
            None,
        )
        if idx is None or not transfers[idx].get("ok"):
            continue  # not staged (an optional output the job did not write)
        t = transfers[idx]
        src = os.path.join(shard_dir, f"{node}.o{k}")
        expected = str(t.get("sha256") or "").removeprefix("sha256:")
        try:
            actual = _sha256(src)
        except OSError as exc:
            _fail(
                rec,
                EXIT_STAGE_OUT,
                "stage-out",
                f"output {ret['lfn']} did not come back from the execute point: {exc}",
                lfn=ret["lfn"],
            )
            return
        if expected and actual != expected and doc.get("integrity", True):
            _fail(
                rec,
                EXIT_INTEGRITY,
                "integrity",
                f"output {ret['lfn']} changed in HTCondor's file transfer: sha256 {actual},"
                f" the worker staged {expected}",
                lfn=ret["lfn"],
                expected=expected,  # bare hex, as the worker records them
                actual=actual,
            )
            return
        placed = []
        from ferry.plugins.url import parse_url

        dests = ret["dests"]
        for n, d in enumerate(dests):
            try:
                _put(src, parse_url(d["url"]).local_path, move=n == len(dests) - 1)
            except (OSError, ConfigError) as exc:
                _fail(
                    rec,
                    EXIT_STAGE_OUT,
                    "stage-out",
                    f"cannot store output {ret['lfn']}: {exc}",
                    lfn=ret["lfn"],
                    url=d["url"],
                )
                return
            placed.append({**t, "dest": d["url"], "route": "htcondor"})
        transfers[idx : idx + 1] = placed


def _sandbox_sources(doc: dict[str, Any], rec: dict[str, Any]) -> None:
    """Inputs HTCondor brought in: name the URL they came from, as a local run would."""
    inputs = doc.get("inputs") or {}
    if not inputs:
        return
    for t in rec.get("transfers", []):
        if t.get("direction") != "input":
            continue
        src = str(t.get("source") or "")
        base = src.rsplit("/", 1)[-1]
        if src.startswith("file:") and base in inputs:
            t["source"] = inputs[base]
            t["route"] = "htcondor"


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _job(rd: RunDir, doc: dict[str, Any], shard_dir: str, args: argparse.Namespace) -> int:
    node, entry, members = doc["node"], doc["entry"], doc["members"]
    ret = _int(args.ret, 0)
    now = time.time()
    # the attempt's number: after every earlier one (rescue DAGs restart $RETRY at 0)
    counter = os.path.join(shard_dir, f"{node}.attempts")
    try:
        with open(counter) as f:
            attempt = int(f.read().strip() or 0) + 1
    except (OSError, ValueError):
        attempt = 1
    while any(os.path.exists(rd.record_path(m, attempt)) for m in members):
        attempt += 1
    with open(counter, "w") as f:
        f.write(f"{attempt}\n")

    done = set(doc.get("done") or ())  # a cluster's members that succeeded earlier: not run
    records = [
        None if m in done else _load_record(os.path.join(shard_dir, f"{node}.r{i}.json"), m)
        for i, m in enumerate(members)
    ]
    for m, rec in zip(members, records, strict=True):
        if rec is None:
            continue
        _sandbox_sources(doc, rec)
        if rec.get("status") == "succeeded":
            _place_outputs(shard_dir, doc, m, rec)
        rec["attempt"] = attempt
        rec.setdefault("labels", {})
        backend = {"backend": "htcondor", "node": node, "dagman_retry": _int(args.retry)}
        if args.jobid:
            backend["jobid"] = args.jobid
        rec["condor"] = backend
        os.makedirs(rd.records, exist_ok=True)
        _write_json(rd.record_path(m, attempt), rec)

    code = 0
    for m, rec in zip(members, records, strict=True):
        if m in done:
            continue
        if rec is None:
            code = ret if ret else EXIT_WORKER_ERROR
            break
        if rec.get("status") != "succeeded":
            code = _int(rec.get("worker_exit_code"), 1) or 1
            break
    if code == 0 and ret:
        code = ret  # the node job failed after its records were written
    starts = [r["start"] for r in records if r and isinstance(r.get("start"), (int, float))]
    journal = Journal(rd.journal_file)
    try:
        extra: dict[str, Any] = {"t": round(min(starts), 6) if starts else now, "node": node}
        if args.jobid:
            extra["jobid"] = args.jobid
        journal.write(entry, "started", attempt, **extra)
        if code == 0:
            journal.write(entry, "succeeded", attempt, exit=0)
        else:
            journal.write(
                entry, "failed", attempt, exit=code, **({"return": ret} if ret != code else {})
            )
            retry, most = _int(args.retry, 0) or 0, _int(args.max_retries, 0) or 0
            if retry < most:
                journal.write(entry, "retry", attempt + 1)
    finally:
        journal.close()
    # the members that succeeded in earlier attempts count with their last records
    every = records + [_last_success(rd, m, attempt) for m in members if m in done]
    if code == 0 and doc.get("register"):
        _register(rd, doc["register"], every)
    if code == 0 and doc.get("sums_out"):
        # what the children check these files against on stage-in (their submit
        # descriptions bring this file in: it must exist before DAGMan submits them)
        _write_json(os.path.join(shard_dir, sums_file_name(node)), _output_sums(every)[0])
    if len(members) > 1:
        # the next attempt (a retry, or a rescue DAG's) runs only the members that
        # have not succeeded, as a local run does; a success forgets them
        ok = {
            m for m, r in zip(members, records, strict=True) if r and r.get("status") == "succeeded"
        }
        now = sorted(done | ok) if code else []
        if now != sorted(done):
            doc["done"] = now
            _write_json(os.path.join(shard_dir, f"{node}.json"), doc)
    for i in range(len(doc.get("returns", []))):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(shard_dir, f"{node}.o{i}"))
    for i in range(len(members)):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(shard_dir, f"{node}.r{i}.json"))
    if code == 0:
        return 0
    return code if 1 <= code <= 255 else 1


def _last_success(rd: RunDir, member: str, before: int) -> dict[str, Any] | None:
    """The record of ``member``'s last succeeded attempt before attempt ``before``."""
    for attempt in range(before - 1, 0, -1):
        rec = _load_record(rd.record_path(member, attempt), member)
        if rec is not None and rec.get("status") == "succeeded":
            return rec
    return None


def _output_sums(records: list[dict[str, Any] | None]) -> tuple[dict[str, str], set[str]]:
    """The sha256 of each file the records say was staged out, and the files staged out."""
    sums: dict[str, str] = {}
    sent: set[str] = set()  # staged out (a checkpoint file may never have been written)
    for rec in records:
        for t in (rec or {}).get("transfers", ()):
            if t.get("direction") == "output" and t.get("ok"):
                sent.add(t["lfn"])
                if t.get("sha256"):
                    sums[t["lfn"]] = str(t["sha256"]).removeprefix("sha256:")
    return sums, sent


def _register(rd: RunDir, register: list[list[str]], records: list[dict[str, Any] | None]) -> None:
    sums, sent = _output_sums(records)
    seen = any(rec is not None for rec in records)
    writer = ReplicaWriter(rd.replicas_out)
    try:
        for lfn, url, site in register:
            if seen and lfn not in sent:
                continue
            writer.add(lfn, url, site, sums.get(lfn))
    finally:
        writer.close()


# -- cleanup and the end -------------------------------------------------------------------


def _remove(urls: list[str]) -> list[str]:
    """Remove files: local ones directly, others through the transfer engine."""
    from ferry.plugins.url import parse_url

    errors: list[str] = []
    remote = []
    for u in urls:
        try:
            url = parse_url(u)
        except ConfigError as exc:
            errors.append(f"{u}: {exc}")
            continue
        if url.is_local:
            try:
                os.unlink(url.local_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"{u}: {exc.strerror}")
        else:
            remote.append(url)
    if remote:
        from ferry.plugins.registry import Registry
        from ferry.worker.engine import Engine, TransferConfig
        from ferry.worker.request import Endpoint, RemoveRequest

        registry = Registry()
        try:
            engine = Engine(registry, TransferConfig(threads=4, max_attempts=2))
            for res in engine.run([RemoveRequest(Endpoint(u)) for u in remote]):
                if not res.ok:
                    errors.append(res.error or "remove failed")
        finally:
            registry.close()
    return errors


def _cleanup(rd: RunDir, action: str, urls: list[str]) -> None:
    errors = _remove(urls)
    extra: dict[str, Any] = {"action": action, "files": len(urls)}
    if errors:
        extra["errors"] = errors[:5]
    journal = Journal(rd.journal_file)
    try:
        journal.write(None, "cleanup", **extra)
    finally:
        journal.close()


_DAG_STATUS = {0: "success", 4: "removed"}


def _final(rd: RunDir, doc: dict[str, Any], args: argparse.Namespace) -> int:
    dag_status = _int(args.dag_status, 1)
    failed_count = _int(args.failed_count, 0) or 0
    status = _DAG_STATUS.get(dag_status if dag_status is not None else 1, "failure")
    if status == "success" and failed_count:
        status = "failure"
    if status == "success":
        for c in doc.get("cleanup", []):
            _cleanup(rd, c["id"], c["remove"])
    last: dict[str, str] = {}
    for ev in read_journal(rd.journal_file):
        job, event = ev.get("job"), ev.get("event")
        if job is not None and event in ("succeeded", "failed"):
            last[job] = event
    journal = Journal(rd.journal_file)
    try:
        journal.write(
            None,
            "workflow-finished",
            status=status,
            succeeded=sum(1 for v in last.values() if v == "succeeded"),
            failed=sum(1 for v in last.values() if v == "failed"),
            total=doc.get("total", len(last)),
            dag_status=dag_status,
        )
    finally:
        journal.close()
    return 0 if status == "success" else 1
