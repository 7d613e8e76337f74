"""The run directory (docs/rundir.md): the plan file, the journal, the output replica catalog.

Everything a backend writes and every monitoring command reads goes through
here, so the layout is defined once:

``plan.json``, ``jobs/NNNN/<id>.json`` (job specs, 1,000 plan entries per
shard directory), ``records/<id>.<attempt>.json``, ``journal.jsonl``,
``replicas.out.yml``, ``run.pid``, ``scratch/`` (the default staging area),
``work/`` (work directories of local runs), ``local.log`` (what local jobs'
workers logged).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from ferry.plugins.errors import ConfigError

__all__ = [
    "PLAN_VERSION",
    "CleanupAction",
    "ClusterFile",
    "Journal",
    "Plan",
    "PlanJob",
    "Register",
    "ReplicaWriter",
    "RunDir",
    "read_journal",
    "read_ref",
    "read_replicas_out",
]

PLAN_VERSION = 1
SHARD = 1000


class Register(msgspec.Struct, array_like=True):
    """An output to register in ``replicas.out.yml``: ``[lfn, url, site]``."""

    lfn: str
    url: str
    site: str


class PlanJob(msgspec.Struct, omit_defaults=True):
    """One entry of the plan: a job, or a cluster of jobs run by one worker process."""

    id: str
    transformation: str
    #: the job spec (or, for a cluster, the cluster file), relative to the run directory
    spec: str
    #: how often a failed attempt is retried
    retries: int
    parents: list[str] = []
    #: the ids of the jobs of a cluster; None for a plain job
    members: list[str] | None = None
    site: str = "local"
    register: list[Register] = []
    #: HTCondor backend only: the job's merged ``condor`` and ``dagman`` profiles and the
    #: ``pegasus`` keys it maps (docs/htcondor.md), as strings
    profiles: dict[str, dict[str, str]] = {}


class CleanupAction(msgspec.Struct, omit_defaults=True):
    """Remove ``remove`` (URLs) once every job in ``after`` has succeeded (None: all jobs)."""

    id: str
    remove: list[str]
    after: list[str] | None = None


class Plan(msgspec.Struct):
    version: int
    workflow: str
    created: float
    backend: str
    options: dict[str, Any]
    jobs: list[PlanJob]
    cleanup: list[CleanupAction] = []
    #: jobs left out by data reuse (their outputs exist)
    pruned: list[str] = []
    warnings: list[str] = []


class ClusterFile(msgspec.Struct):
    """``jobs/NNNN/<cluster>.cluster.json``: the member job specs, run one after another."""

    version: int
    id: str
    #: member job spec paths, relative to the run directory
    members: list[str]


_PLAN_DECODER = msgspec.json.Decoder(Plan)
_CLUSTER_DECODER = msgspec.json.Decoder(ClusterFile)


class RunDir:
    """Paths inside one run directory."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def __str__(self) -> str:
        return self.path

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def plan_file(self) -> str:
        return self.join("plan.json")

    @property
    def journal_file(self) -> str:
        return self.join("journal.jsonl")

    @property
    def records(self) -> str:
        return self.join("records")

    @property
    def pid_file(self) -> str:
        return self.join("run.pid")

    @property
    def replicas_out(self) -> str:
        return self.join("replicas.out.yml")

    @property
    def work(self) -> str:
        return self.join("work")

    @property
    def log_file(self) -> str:
        return self.join("local.log")

    def spec_path(self, position: int, name: str) -> str:
        """Relative path of a spec for the plan entry at ``position``."""
        return f"jobs/{position // SHARD:04d}/{name}"

    def pack_path(self, shard: int) -> str:
        """Relative path of a packed shard: one spec (or cluster) per line."""
        return f"jobs/{shard:04d}.jsonl"

    def read_spec_bytes(self, ref: str) -> bytes:
        """The JSON of a spec (or cluster) by its plan reference: a path, or ``path@offset``."""
        return read_ref(self.join(ref) if not os.path.isabs(ref) else ref)

    def record_path(self, job_id: str, attempt: int) -> str:
        return os.path.join(self.records, f"{job_id}.{attempt}.json")

    def exists(self) -> bool:
        return os.path.exists(self.plan_file)

    # -- the plan ------------------------------------------------------------

    def load_plan(self) -> Plan:
        try:
            with open(self.plan_file, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ConfigError(f"{self.path} is not a ferry run directory (no plan.json)") from None
        except OSError as exc:
            raise ConfigError(f"{self.plan_file}: {exc.strerror}") from None
        try:
            plan = _PLAN_DECODER.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"{self.plan_file}: not a valid plan: {exc}") from None
        if plan.version != PLAN_VERSION:
            raise ConfigError(f"{self.plan_file}: plan version {plan.version} is not supported")
        return plan

    def write_plan(self, plan: Plan) -> None:
        _atomic_write(self.plan_file, msgspec.json.encode(plan))

    def load_cluster(self, ref: str) -> ClusterFile:
        return _CLUSTER_DECODER.decode(self.read_spec_bytes(ref))

    # -- records ---------------------------------------------------------------

    def read_record(self, job_id: str, attempt: int) -> dict[str, Any] | None:
        """The record as a JSON object; None when it is missing, unreadable or not one."""
        try:
            with open(self.record_path(job_id, attempt), "rb") as f:
                record = json.loads(f.read())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def record_attempts(self) -> dict[str, list[int]]:
        """Job id -> the attempt numbers that have a record (sorted)."""
        out: dict[str, list[int]] = {}
        try:
            names = os.listdir(self.records)
        except FileNotFoundError:
            return out
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            stem = name[:-5]
            job, _, attempt = stem.rpartition(".")
            if job and attempt.isdigit():
                out.setdefault(job, []).append(int(attempt))
        for v in out.values():
            v.sort()
        return out

    # -- run.pid ---------------------------------------------------------------

    def running_pid(self) -> int | None:
        """The pid in run.pid if that process is alive, else None."""
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid


def read_ref(ref: str) -> bytes:
    """Read ``path`` whole, or the line at byte ``offset`` of ``path@offset``."""
    path, sep, off = ref.rpartition("@")
    if sep and off.isdigit():
        with open(path, "rb") as f:
            f.seek(int(off))
            return f.readline()
    with open(ref, "rb") as f:
        return f.read()


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# -- the journal ---------------------------------------------------------------


class Journal:
    """Append-only JSON lines, flushed per event; tolerant of a torn last line."""

    def __init__(self, path: str) -> None:
        torn = False
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
        except FileNotFoundError:
            pass
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115
        if torn:  # a writer was killed mid-line: end that line so ours parse
            self._f.write("\n")
            self._f.flush()

    def write(self, job: str | None, event: str, attempt: int | None = None, **extra: Any) -> None:
        entry: dict[str, Any] = {"t": round(time.time(), 6), "job": job, "event": event}
        if attempt is not None:
            entry["attempt"] = attempt
        entry.update(extra)
        self._f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_journal(path: str) -> Iterator[dict[str, Any]]:
    """The journal's events; unparsable lines (a torn write) are skipped."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        for line in f:
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                yield ev


# -- replicas.out.yml -------------------------------------------------------------

_HEADER = "pegasus: 5.0.4\nreplicas:\n"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


class ReplicaWriter:
    """Appends entries to ``replicas.out.yml`` (Pegasus replica-catalog YAML) as jobs succeed.

    Each entry is written whole and flushed, so a reader sees a valid catalog
    between entries. :func:`read_replicas_out` reads it back (a torn last entry
    is dropped); :meth:`rewrite` writes it afresh from a mapping.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = None

    def _open(self) -> Any:
        if self._f is None:
            fresh = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            if fresh:
                self._f.write(_HEADER)
        return self._f

    @staticmethod
    def entry(lfn: str, url: str, site: str, sha256: str | None) -> str:
        text = f"- lfn: {_q(lfn)}\n  pfns:\n  - site: {_q(site)}\n    pfn: {_q(url)}\n"
        if sha256:
            text += f"  checksum:\n    sha256: {_q(sha256)}\n"
        return text

    def add(self, lfn: str, url: str, site: str, sha256: str | None) -> None:
        f = self._open()
        f.write(self.entry(lfn, url, site, sha256))
        f.flush()

    def rewrite(self, entries: dict[str, tuple[str, str, str | None]]) -> None:
        self.close()
        parts = [_HEADER] + [self.entry(lfn, u, s, h) for lfn, (u, s, h) in entries.items()]
        _atomic_write(self.path, "".join(parts).encode())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_replicas_out(path: str) -> dict[str, tuple[str, str, str | None]]:
    """LFN -> (url, site, sha256) from a ``replicas.out.yml`` this module wrote."""
    out: dict[str, tuple[str, str, str | None]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return out
    cur: dict[str, str] = {}

    def flush() -> None:
        if "lfn" in cur and "pfn" in cur and "site" in cur:
            out[cur["lfn"]] = (cur["pfn"], cur["site"], cur.get("sha256"))

    for line in text.splitlines():
        s = line.strip()
        key, sep, value = s.lstrip("- ").partition(": ")
        if not sep:
            continue
        try:
            v = json.loads(value)
        except ValueError:
            continue  # a torn line
        if s.startswith("- lfn:"):
            flush()
            cur = {}
        cur[key] = v
    flush()
    return out
