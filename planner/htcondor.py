"""The HTCondor backend: a plan -> a DAGMan workflow in ``DIR/htcondor`` (docs/htcondor.md).

Written through the HTCondor Python bindings (``htcondor2.dags`` for the DAG,
``htcondor2.Submit`` for the submit descriptions), never from text templates:

* **One DAG node per plan entry** (a job, or a cluster run by one worker
  process). Entries that share a submit description, their DAG settings
  (RETRY, PRIORITY, CATEGORY) and their level in the graph share a *layer*
  (one ``<layer>.sub``); what differs per node goes into its ``VARS``
  (``ferry_node``, ``ferry_shard``, ``ferry_inputs``, ``ferry_outputs``,
  ``ferry_remaps``). Node names are the entry ids made DAGMan-safe
  (``nodes.json`` maps them back); PARENT/CHILD edges are the plan's, written
  by an edge type that connects exactly the nodes the plan says.
* **The node's job** runs ``python -m ferry.planner.condor_node <node>.json``
  in the vanilla universe: the node file holds the member job specs, and the
  launcher runs each through the worker (docs/worker.md). Two staging modes:

  - ``condorio`` (the default, as Pegasus): HTCondor's file transfer brings
    the node file and every ``file://`` input (by its basename, or through a
    link ``_ferry_i<k>_<node><suffix>`` when a submit file cannot hold its path) into the
    scratch directory, and takes the outputs meant for ``file://``
    destinations and the invocation records back to ``DIR/htcondor/nodes``;
    the specs in the node file read those inputs from, and write those
    outputs to, ``file://${_CONDOR_SCRATCH_DIR}/...`` (sha256 still checked).
    The POST script then checks each returned output against the sha256 in
    the worker's record and moves it to its destinations.
  - ``nonsharedfs``: only the node file goes with the job; the worker stages
    everything through its URLs (a staging site the execute points reach).
    The records come back by file transfer all the same.

* **A POST script** (``ferry postscript``) per node records the attempt: it
  numbers it, files the records under ``DIR/records``, places condorio
  outputs, appends to ``journal.jsonl`` (the local backend's format), registers
  outputs, and exits with the worker's code so DAGMan retries (``RETRY`` from
  the plan). Cleanup actions are NOOP nodes whose POST script removes the
  files; the FINAL node's POST script ends the journal (and runs ``leaf``
  cleanup after a success).
* **Profiles** (as Pegasus maps them): ``pegasus.cores/memory/diskspace/gpus``
  -> ``request_cpus/request_memory`` (MB) ``/request_disk`` (KB)
  ``/request_gpus``, an explicit ``condor.request_*`` wins; every other
  ``condor`` key is copied as given (``+Attr`` becomes ``MY.Attr``, the value
  used verbatim, so a string keeps its own quotes); ``dagman.priority`` (else
  ``condor.priority``) is the node's PRIORITY, ``dagman.category`` its
  CATEGORY, ``dagman.<category>.maxjobs`` a MAXJOBS throttle, and
  ``dagman.maxjobs/maxidle/maxpre/maxpost`` the DAG's throttles (``CONFIG
  dagman.config``).

Files in ``DIR/htcondor``: ``<workflow>.dag``, ``<layer>.sub``,
``ferry_final.sub``, ``dagman.config`` (when throttled), ``ferry.json`` (what
the POST script needs), ``nodes.json`` (node -> plan entry), ``nodes/NNNN/``
(node files, the jobs' stdout/stderr and what file transfer returns; a node's
shard is a hash of its name), and, once DAGMan runs, its own files
(``.dagman.out``, ``.nodes.log``, ``.status``, ``jobstate.log``, rescue DAGs).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ferry.plugins.errors import ConfigError

from .rundir import Plan, PlanJob, RunDir

__all__ = [
    "CONDOR_DIR",
    "FINAL_NODE",
    "STAGING_MODES",
    "CondorOptions",
    "check_options",
    "load_config",
    "node_file_path",
    "node_names",
    "shard_of",
    "submit_commands",
    "sums_file_name",
    "write_htcondor",
]

CONDOR_DIR = "htcondor"
NODE_FILE_VERSION = 1
STAGING_MODES = ("condorio", "nonsharedfs")
FINAL_NODE = "ferry_final"
CLEANUP_LAYER = "ferry_cleanup"
#: node files per shard directory (about)
SHARD_SIZE = 1000
#: the sandbox (scratch directory) as the worker sees it: file:// URLs expand variables
SANDBOX = "file://${_CONDOR_SCRATCH_DIR}"
#: how long a held node job stays in the queue before it is removed (DAGMan then retries it)
HELD_REMOVE_SECONDS = 1800

#: submit commands ferry sets itself; a condor profile cannot change them
RESERVED = frozenset(
    {
        "executable",
        "arguments",
        "args",
        "transfer_executable",
        "transfer_input_files",
        "transfer_output_files",
        "transfer_output_remaps",
        "should_transfer_files",
        "when_to_transfer_output",
        "output",
        "error",
        "input",
        "initialdir",
        "iwd",
        "queue",
    }
)
#: what cannot appear in a path of a submit file's file lists or remaps
_UNSAFE_PATH = re.compile(r"[\s,;=\"'$\\#]")
#: a submit command's name (``MY.Attr`` included); anything else breaks the submit file
_SUBMIT_KEY = re.compile(r"(MY\.)?[A-Za-z_][A-Za-z0-9_.]*\Z")
#: submit commands whose value is a ClassAd expression (besides ``MY.*``)
_EXPR_KEYS = frozenset(
    {
        "requirements",
        "rank",
        "periodic_hold",
        "periodic_release",
        "periodic_remove",
        "on_exit_hold",
        "on_exit_remove",
    }
)
#: request_* commands: a cluster asks for the most any member asks for
_REQUESTS = ("request_cpus", "request_memory", "request_disk", "request_gpus")


def _plan_error(message: str) -> ConfigError:
    """A :class:`ferry.planner.graph.PlanError`, imported only when planning (the POST
    script imports this module and should start fast)."""
    from .graph import PlanError

    return PlanError(message)


_BAD_NODE = re.compile(r"[^A-Za-z0-9_-]")
_KEYWORDS = frozenset({"PARENT", "CHILD", "ALL_NODES"})


@dataclass
class CondorOptions:
    """``ferry plan --backend htcondor`` settings."""

    #: condorio | nonsharedfs for every job; None: the pegasus.data.configuration
    #: profile (properties included), else condorio
    staging: str | None = None
    #: the Python interpreter (with ferry installed) on the execute points
    ep_python: str | None = None
    #: the Python interpreter (with ferry installed) on the access point, for POST scripts
    ap_python: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> CondorOptions:
        d = d or {}
        return cls(
            staging=d.get("staging"), ep_python=d.get("ep_python"), ap_python=d.get("ap_python")
        )


# -- names and paths -------------------------------------------------------------------


def node_name(entry_id: str) -> str:
    """A DAGMan node name for an entry id: no white space, ``.`` or ``+`` (reserved),
    not PARENT/CHILD."""
    name = _BAD_NODE.sub("_", entry_id) or "node"
    if name.upper() in _KEYWORDS or name.startswith("__"):
        name = "n_" + name
    return name


def node_names(ids: Iterable[str], taken: set[str] | None = None) -> dict[str, str]:
    """Entry id -> unique node name (``_2``, ``_3``... after a clash)."""
    taken = set() if taken is None else taken
    out: dict[str, str] = {}
    for i in ids:
        base = node_name(i)
        name = base
        k = 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out[i] = name
    return out


def shard_of(node: str, shards: int) -> str:
    """The shard directory of a node (a stable hash of its name)."""
    return f"{zlib.crc32(node.encode()) % max(1, shards):04d}"


def sums_file_name(node: str) -> str:
    """The file (beside the node file, and in its children's sandboxes) with the sha256
    of the files ``node`` staged out, written by its POST script."""
    return f"_ferry_sums_{node}.json"


def node_file_path(condor_dir: str, node: str, shards: int) -> str:
    return os.path.join(condor_dir, "nodes", shard_of(node, shards), f"{node}.json")


def load_config(rd: RunDir) -> dict[str, Any]:
    """``DIR/htcondor/ferry.json``."""
    path = rd.join(CONDOR_DIR, "ferry.json")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"{rd} has no HTCondor workflow (no {path})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _safe_file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text).strip("_") or "x"


# -- submit descriptions -----------------------------------------------------------------


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _number(v: object, what: str) -> float:
    try:
        return float(str(v).strip())
    except ValueError:
        raise _plan_error(f"{what} must be a number, not {v!r}") from None


@dataclass
class _Res:
    cpus: int = 1
    memory_mb: int | None = None
    disk_mb: int | None = None
    gpus: int = 0


def _resources(specs: list[dict[str, Any]], pegasus: dict[str, str], where: str) -> _Res:
    """The largest request of the members (they run one after another), with the
    pegasus profiles for what the specs leave out."""
    res = _Res()
    for s in specs:
        r = s.get("resources") or {}
        res.cpus = max(res.cpus, int(r.get("cpus", 1) or 1))
        for name in ("memory_mb", "disk_mb"):
            v = r.get(name)
            if v is not None:
                cur = getattr(res, name)
                setattr(res, name, int(v) if cur is None else max(cur, int(v)))
        res.gpus = max(res.gpus, int(r.get("gpus", 0) or 0))
    for key, name in (("memory", "memory_mb"), ("diskspace", "disk_mb")):
        if getattr(res, name) is None and pegasus.get(key) not in (None, ""):
            setattr(res, name, int(_number(pegasus[key], f"{where}profile pegasus.{key}")))
    return res


def submit_commands(
    profiles: dict[str, dict[str, str]],
    res: _Res,
    *,
    ep_python: str,
    condor_dir: str,
    workflow: str,
    run_id: str,
    warnings: list[str] | None = None,
    where: str = "",
) -> dict[str, str]:
    """The submit description of a node (its per-node parts are ``$(ferry_*)`` VARS).

    ``request_cpus/memory/disk/gpus`` come from the job's resources
    (``condor.request_*``, else ``pegasus.cores/memory/diskspace/gpus``; disk in
    KB as HTCondor wants it); then every ``condor`` profile key is copied as
    given, overriding what ferry set (except the commands ferry needs to run the
    node: :data:`RESERVED`), but a ``request_*`` key never asks for less than
    the resources (a cluster's are the most any member asks for). ``+Attr`` and
    ``MY.Attr`` keys become ``MY.Attr``. A ``transfer_input_files`` profile is
    added to the node's own list, as Pegasus adds it. A key or value that a
    submit file cannot hold, or a ClassAd expression that does not parse, is a
    planning error.
    """
    d: dict[str, str] = {
        "universe": "vanilla",
        "executable": ep_python,
        "transfer_executable": "false",
        "arguments": '"-m ferry.planner.condor_node $(ferry_node).json"',
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "transfer_input_files": "$(ferry_inputs)",
        "transfer_output_files": "$(ferry_outputs)",
        "transfer_output_remaps": '"$(ferry_remaps)"',
        "output": f"{condor_dir}/nodes/$(ferry_shard)/$(ferry_node).out",
        "error": f"{condor_dir}/nodes/$(ferry_shard)/$(ferry_node).err",
        "request_cpus": str(res.cpus),
    }
    if res.memory_mb:  # 0: a request smaller than 1 MB, truncated by the spec
        d["request_memory"] = str(res.memory_mb)
    if res.disk_mb:
        d["request_disk"] = str(res.disk_mb * 1024)
    if res.gpus:
        d["request_gpus"] = str(res.gpus)
    d["periodic_remove"] = (
        f"(JobStatus == 5) && ((time() - EnteredCurrentStatus) > {HELD_REMOVE_SECONDS})"
    )
    # ClassAd strings: UTF-8 as is (ClassAds read the JSON escape \\u00e4 as "u00e4")
    d["MY.ferry_workflow"] = json.dumps(workflow, ensure_ascii=False)
    d["MY.ferry_run"] = json.dumps(run_id, ensure_ascii=False)
    d["MY.ferry_node"] = '"$(ferry_node)"'
    lower = {k.lower(): k for k in d}
    for key, value in (profiles.get("condor") or {}).items():
        k = str(key).strip()
        if k.startswith("+"):
            k = "MY." + k[1:]
        elif k[:3].lower() == "my.":
            k = "MY." + k[3:]
        low = k.lower()
        if low == "transfer_input_files" and _value(value):
            # as Pegasus does: added to the node's own (credentials for the sandbox, ...)
            text = _value(value)
            problem = _bad_submit_command(k, text)
            if problem:
                raise _plan_error(f"{where}condor profile {key!r} = {text!r}: {problem}")
            d["transfer_input_files"] = f"$(ferry_inputs), {text}"
            continue
        if low in RESERVED or low.startswith("ferry_"):  # ferry_*: the nodes' VARS
            if warnings is not None:
                msg = f"condor profile {key!r} is ignored: ferry sets {k} itself for HTCondor jobs"
                if msg not in warnings:
                    warnings.append(msg)
            continue
        text = _value(value)
        problem = _bad_submit_command(k, text)
        if problem:
            raise _plan_error(f"{where}condor profile {key!r} = {text!r}: {problem}")
        old = lower.pop(low, None)
        if old is not None:
            if low in _REQUESTS:  # a cluster member may ask for more
                text = _larger(d[old], text, 1024 if low == "request_disk" else 1)
            del d[old]
        d[k] = text
        lower[low] = k
    return d


def _larger(ours: str, theirs: str, grain: int = 1) -> str:
    """The larger of two request_* values (``theirs`` when either is not a number, or
    when ours is theirs rounded up to the ``grain`` the specs carry: whole MiB of KiB)."""
    try:
        return ours if float(ours) > math.ceil(float(theirs) / grain) * grain else theirs
    except ValueError:
        return theirs


@functools.lru_cache(maxsize=4096)
def _bad_submit_command(key: str, value: str) -> str | None:
    """Why ``key = value`` cannot go into a submit description, or None.

    A value that spans lines would add submit commands of its own (even a
    ``queue``); a ClassAd expression that does not parse (``requirements``,
    ``MY.Attr``, ...) would only fail when the schedd gets the job. Values that
    use submit macros (``$(...)``) are only checked once HTCondor expands them.
    """
    if not _SUBMIT_KEY.match(key) or (key.startswith("MY.") and "." in key[3:]):
        return "not a submit command name"
    if "\n" in value or "\r" in value:
        return "a submit command's value must be one line"
    if (key.startswith("MY.") or key.lower() in _EXPR_KEYS) and value and "$" not in value:
        import classad2

        try:
            classad2.ExprTree(value)
        except Exception:  # noqa: BLE001 - classad2.ClassAdException
            return "not a ClassAd expression (a string needs its own double quotes)"
    return None


#: DAG-wide throttles (Pegasus's dagman.maxjobs/maxidle/maxpre/maxpost properties)
#: -> the DAGMan configuration knobs they set
THROTTLES = {
    "maxjobs": "DAGMAN_MAX_JOBS_SUBMITTED",
    "maxidle": "DAGMAN_MAX_JOBS_IDLE",
    "maxpre": "DAGMAN_MAX_PRE_SCRIPTS",
    "maxpost": "DAGMAN_MAX_POST_SCRIPTS",
}
#: the per-node dagman keys the backend maps (besides <category>.maxjobs)
_NODE_KEYS = frozenset({"retry", "priority", "category"})


def _check_category(name: str, what: str) -> None:
    if not name or any(c.isspace() for c in name):
        raise _plan_error(f"{what}: {name!r} is not a DAGMan category name (no white space)")


def _dagman_settings(
    dagman: dict[str, str],
    where: str,
    maxjobs: dict[str, int],
    throttles: dict[str, int],
    warnings: list[str],
) -> None:
    """Collect a job's ``dagman`` profiles that apply to the whole DAG: category
    throttles (``<category>.maxjobs``) and the DAG's throttles (:data:`THROTTLES`;
    the smallest value wins); warn about keys the backend does not map."""
    for k, v in dagman.items():
        if v in (None, ""):
            continue
        if k.endswith(".maxjobs"):
            cat = k[: -len(".maxjobs")]
            _check_category(cat, f"{where}profile dagman.{k}")
            n = int(_number(v, f"{where}profile dagman.{k}"))
            maxjobs[cat] = min(n, maxjobs.get(cat, n))
        elif k in THROTTLES:
            n = int(_number(v, f"{where}profile dagman.{k}"))
            throttles[k] = min(n, throttles.get(k, n))
        elif k not in _NODE_KEYS:
            msg = (
                f"dagman profile {k!r} is ignored: the HTCondor backend maps retry, priority,"
                " category, <category>.maxjobs, maxjobs, maxidle, maxpre and maxpost"
                " (the POST script is ferry's own)"
            )
            if msg not in warnings:
                warnings.append(msg)


def _node_priority(profiles: dict[str, dict[str, str]], where: str) -> int:
    for ns in ("dagman", "condor"):
        v = (profiles.get(ns) or {}).get("priority")
        if v not in (None, ""):
            return int(_number(v, f"{where}profile {ns}.priority"))
    return 0


# -- the node files ------------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    shard: str
    doc: dict[str, Any]
    vars: dict[str, str]
    mode: str


def _file_path(url: str) -> str | None:
    if not url.startswith("file:"):
        return None
    from ferry.plugins.url import parse_url

    return parse_url(url).local_path


def _build_node(
    rd: RunDir,
    pj: PlanJob,
    name: str,
    shard_dir: str,
    shard: str,
    specs: list[dict[str, Any]],
    mode: str,
    warnings: list[str],
    sums_in: Sequence[str] = (),
    sums_out: bool = False,
    integrity: bool = True,
) -> _Node:
    node_file = os.path.join(shard_dir, f"{name}.json")
    transfers: dict[str, str] = {f"{name}.json": node_file}  # sandbox name -> submit-side path
    for path in sums_in:  # the parents' output sums (their POST scripts write them)
        transfers[os.path.basename(path)] = path
    inputs_map: dict[str, str] = {}
    returns: list[dict[str, Any]] = []
    records = [f"_ferry_r{i}.json" for i in range(len(specs))]
    reserved = set(records)
    ck_warned = False

    links: dict[str, str] = {}  # submit-side path -> the sandbox name of its link

    def take(url: str, what: str) -> str | None:
        """The sandbox name of a submit-side file HTCondor brings in, or None."""
        path = _file_path(url)
        if path is None:
            return None
        base = os.path.basename(path)
        why = None
        if base and _UNSAFE_PATH.search(path):
            # white space, quotes, commas...: a submit file cannot hold the path, so
            # HTCondor brings the file in through a link beside the node file (file
            # transfer sends what a link points to; the producer may not have made it yet)
            alias = links.get(path)
            if alias is None:
                # keep the suffix: it tells a container image's kind
                ext = re.search(r"(\.[A-Za-z0-9]+)*\Z", base).group()  # type: ignore[union-attr]
                alias = links[path] = f"_ferry_i{len(links)}_{name}{ext}"
                link = os.path.join(shard_dir, alias)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
                os.symlink(path, link)
                transfers[alias] = link
                inputs_map[alias] = url
            return alias
        if not base:
            why = "its path has no file name"
        elif base in reserved or base.startswith("_ferry_"):
            why = f"its name {base!r} is one ferry uses in the sandbox"
        elif base in transfers and transfers[base] != path:
            why = f"{transfers[base]} has the same name {base!r}"
        if why:
            warnings.append(
                f"node {name}: {what} ({path}) is not brought in by HTCondor file transfer:"
                f" {why}; the worker reads it from its URL (this needs a shared filesystem)"
            )
            return None
        transfers[base] = path
        inputs_map[base] = url
        return base

    for spec in specs:
        spec.pop("records_dir", None)
        if mode != "condorio":
            continue
        for inp in spec.get("inputs") or []:
            srcs = inp.get("sources") or []
            k = next((i for i, s in enumerate(srcs) if s.get("url", "").startswith("file:")), None)
            if k is None:
                continue
            base = take(srcs[k]["url"], f"input {inp.get('lfn')} of job {spec['id']}")
            if base is None:
                continue
            local = dict(srcs[k])
            local["url"] = f"{SANDBOX}/{base}"
            # the other file:// sources are on the access point too: out of reach
            inp["sources"] = [local] + [s for s in srcs if not s.get("url", "").startswith("file:")]
            inp["symlink"] = True  # the sandbox copy is the job's own: link, don't copy
        c = spec.get("container")
        if c and str(c.get("image", "")).startswith("file:"):
            base = take(c["image"], f"container image of job {spec['id']}")
            if base is not None:
                c["image"] = f"{SANDBOX}/{base}"
        for out in spec.get("outputs") or []:
            dests = out.get("destinations") or []
            local = [d for d in dests if d.get("url", "").startswith("file:")]
            if not local:
                continue
            sandbox = f"_ferry_o{len(returns)}"
            out["destinations"] = [d for d in dests if not d.get("url", "").startswith("file:")]
            out["destinations"].append(
                {"url": f"{SANDBOX}/{sandbox}", "site": local[0].get("site", "local")}
            )
            returns.append(
                {"name": sandbox, "member": spec["id"], "lfn": out["lfn"], "dests": local}
            )
        if not ck_warned and any(
            str(ck.get("url", "")).startswith("file:") for ck in spec.get("checkpoints") or []
        ):
            ck_warned = True
            warnings.append(
                f"node {name}: checkpoint files kept at file:// URLs are only reachable from"
                " the execute point on a shared filesystem (stage through a site the execute"
                " points reach, or use nonsharedfs)"
            )
    doc = {
        "version": NODE_FILE_VERSION,
        "kind": "job",
        "node": name,
        "entry": pj.id,
        "members": pj.members or [pj.id],
        "mode": mode,
        "specs": specs,
        "records": records,
        "returns": returns,
        "inputs": inputs_map,
        "register": [[r.lfn, r.url, r.site] for r in pj.register],
        "sums": [os.path.basename(path) for path in sums_in],
        "sums_out": sums_out,
        # pegasus.integrity.checking = none: the POST script checks no sums either
        "integrity": integrity,
    }
    outs = [r["name"] for r in returns] + records
    remaps = [f"{r['name']}={shard_dir}/{name}.o{i}" for i, r in enumerate(returns)]
    remaps += [f"{rec}={shard_dir}/{name}.r{i}.json" for i, rec in enumerate(records)]
    vars_ = {
        "ferry_node": name,
        "ferry_shard": shard,
        "ferry_inputs": ", ".join(transfers.values()),
        "ferry_outputs": ", ".join(outs),
        "ferry_remaps": ";".join(remaps),
    }
    return _Node(name=name, shard=shard, doc=doc, vars=vars_, mode=mode)


def _member_specs(rd: RunDir, pj: PlanJob) -> list[dict[str, Any]]:
    refs = rd.load_cluster(pj.spec).members if pj.members else [pj.spec]
    return [msgspec.json.decode(rd.read_spec_bytes(r)) for r in refs]


def _mode(pj: PlanJob, opts: CondorOptions, warned: set[str], warnings: list[str]) -> str:
    mode = opts.staging
    if mode is None:
        mode = str((pj.profiles.get("pegasus") or {}).get("data.configuration") or "condorio")
    mode = mode.strip().lower()
    if mode == "sharedfs":
        if "sharedfs" not in warned:
            warned.add("sharedfs")
            warnings.append(
                "pegasus.data.configuration sharedfs runs as nonsharedfs: the worker stages"
                " through the staging site's URLs (on a shared filesystem, file:// ones)"
            )
        mode = "nonsharedfs"
    if mode not in STAGING_MODES:
        raise _plan_error(
            f"job {pj.id}: data configuration {mode!r} is not one of"
            f" {', '.join(STAGING_MODES)} (or sharedfs)"
        )
    return mode


# -- the DAG ---------------------------------------------------------------------------------


class _Formatter:
    """Node names for (layer, index): the names ferry chose, and back (for rescue files)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.back: dict[str, tuple[str, int]] = {}

    def add(self, layer: str, names: list[str]) -> None:
        self.names[layer] = names
        for i, n in enumerate(names):
            self.back[n] = (layer, i)

    def generate(self, layer_name: str, node_index: int) -> str:
        names = self.names.get(layer_name)
        if names is None:  # a join node (never made by ferry's edges)
            return f"{layer_name}_{node_index}"
        return names[node_index]

    def parse(self, node_name: str) -> tuple[str, int]:
        return self.back[node_name]


def _edge_class():  # type: ignore[no-untyped-def]
    from htcondor2 import dags

    class PlanEdges(dags.BaseEdge):
        """Exactly the plan's edges between two layers: child index -> parent indices."""

        def __init__(self) -> None:
            self.parents: dict[int, list[int]] = {}

        def add(self, parent: int, child: int) -> None:
            self.parents.setdefault(child, []).append(parent)

        def get_edges(self, parent, child, join_factory) -> Iterator[tuple]:  # type: ignore[no-untyped-def,override]
            groups: dict[tuple[int, ...], list[int]] = {}
            for c, ps in sorted(self.parents.items()):
                groups.setdefault(tuple(sorted(set(ps))), []).append(c)
            for ps, cs in groups.items():
                yield ps, tuple(cs)

    return PlanEdges


def check_options(run_dir: str, opts: CondorOptions) -> None:
    """What makes a run directory and options unusable for HTCondor, as a planning error
    (:func:`write_htcondor` checks it too; call it before writing anything)."""
    if _UNSAFE_PATH.search(os.path.abspath(run_dir)):
        raise _plan_error(
            f"run directory {os.path.abspath(run_dir)}: for HTCondor its path must not contain"
            " white space or any of , ; = \" ' $ \\ # (it goes into submit files)"
        )
    for what, p in (
        ("--ep-python", opts.ep_python or sys.executable),
        ("the access point's Python", opts.ap_python or sys.executable),
    ):
        if not os.path.isabs(p) or _UNSAFE_PATH.search(p):
            raise _plan_error(f"{what} {p!r} must be an absolute path without white space")


@dataclass
class _Layer:
    name: str
    submit: dict[str, str]
    retries: int
    priority: int
    category: str | None
    nodes: list[_Node] = field(default_factory=list)
    entries: list[int] = field(default_factory=list)


def write_htcondor(
    rd: RunDir, plan: Plan, opts: CondorOptions, warnings: list[str]
) -> dict[str, Any]:
    """Write ``DIR/htcondor`` for ``plan`` (already complete but for ``plan.json``);
    returns what goes into ``plan.options["htcondor"]``."""
    try:
        import htcondor2
        from htcondor2 import dags
    except ImportError as exc:  # pragma: no cover - htcondor is a test dependency here
        raise _plan_error(
            f"the HTCondor backend needs the HTCondor Python bindings (pip install htcondor): {exc}"
        ) from None
    check_options(rd.path, opts)
    ep_python = opts.ep_python or sys.executable
    ap_python = opts.ap_python or sys.executable
    cdir = rd.join(CONDOR_DIR)
    run_id = str(plan.options.get("run_id", ""))
    base = _safe_file_name(plan.workflow)
    dag_file = f"{base}.dag"

    ids = [pj.id for pj in plan.jobs]
    taken = {FINAL_NODE}
    names = node_names(ids, taken)
    cleanups = [c for c in plan.cleanup if c.after is not None]
    cleanup_names = node_names([c.id for c in cleanups], taken)
    shards = max(1, -(-(len(ids) + len(cleanups) + 1) // SHARD_SIZE))
    os.makedirs(cdir, exist_ok=True)
    made: set[str] = set()

    def shard_dir(node: str) -> tuple[str, str]:
        s = shard_of(node, shards)
        d = os.path.join(cdir, "nodes", s)
        if s not in made:
            os.makedirs(d, exist_ok=True)
            made.add(s)
        return s, d

    # levels: the longest path from a root (plan entries are in topological order)
    index = {pj.id: e for e, pj in enumerate(plan.jobs)}
    level = [0] * len(plan.jobs)
    for e, pj in enumerate(plan.jobs):
        if pj.parents:
            level[e] = 1 + max(level[index[p]] for p in pj.parents)

    # intermediate files: each child checks what its parents staged out against the
    # sha256 their records gave, as PegasusLite checks the parents' .meta
    check = plan.options.get("integrity") != "none"
    with_children = {p for pj in plan.jobs for p in pj.parents} if check else set()
    warned: set[str] = set()
    layers: dict[tuple, _Layer] = {}
    layer_of: list[tuple[_Layer, int]] = []
    modes = dict.fromkeys(STAGING_MODES, 0)
    maxjobs: dict[str, int] = {}
    throttles: dict[str, int] = {}
    seen_dagman: set[int] = set()
    used_layer_names: set[str] = {CLEANUP_LAYER, FINAL_NODE}
    encode = msgspec.json.encode
    for e, pj in enumerate(plan.jobs):
        where = f"job {pj.id}: "
        name = names[pj.id]
        shard, sdir = shard_dir(name)
        specs = _member_specs(rd, pj)
        mode = _mode(pj, opts, warned, warnings)
        modes[mode] += 1
        sums_in = [
            os.path.join(shard_dir(names[p])[1], sums_file_name(names[p]))
            for p in (pj.parents if check else ())
        ]
        node = _build_node(
            rd, pj, name, sdir, shard, specs, mode, warnings,
            sums_in=sums_in, sums_out=pj.id in with_children, integrity=check,
        )  # fmt: skip
        with open(os.path.join(sdir, f"{name}.json"), "wb") as f:
            f.write(encode(node.doc))
        node.doc = {}  # written: a large plan need not keep every spec in memory
        profiles = pj.profiles or {}
        res = _resources(specs, profiles.get("pegasus") or {}, where)
        submit = submit_commands(
            profiles,
            res,
            ep_python=ep_python,
            condor_dir=cdir,
            workflow=plan.workflow,
            run_id=run_id,
            warnings=warnings,
            where=where,
        )
        dagman = profiles.get("dagman") or {}
        if id(dagman) not in seen_dagman:
            seen_dagman.add(id(dagman))
            _dagman_settings(dagman, where, maxjobs, throttles, warnings)
        category = str(dagman["category"]).strip() if dagman.get("category") else None
        if category is not None:
            _check_category(category, f"{where}profile dagman.category")
        key = (
            level[e],
            tuple(submit.items()),
            pj.retries,
            _node_priority(profiles, where),
            category,
        )
        layer = layers.get(key)
        if layer is None:
            lname = (
                f"{_safe_file_name(pj.transformation.split('::')[-1].split(':')[0])}_L{level[e]}"
            )
            n, cand = 1, lname
            while cand in used_layer_names:
                n += 1
                cand = f"{lname}_{n}"
            used_layer_names.add(cand)
            layer = layers[key] = _Layer(cand, submit, pj.retries, key[3], category)
        layer_of.append((layer, len(layer.nodes)))
        layer.nodes.append(node)
        layer.entries.append(e)

    fmt = _Formatter()
    status_file = os.path.join(cdir, f"{dag_file}.status")
    dag = dags.DAG(
        node_status_file=dags.NodeStatusFile(status_file, update_time=30),
        jobstate_log=os.path.join(cdir, "jobstate.log"),
        # the DAG-wide throttles: CONFIG dagman.config (ferry submit's --max-* win)
        dagman_config={THROTTLES[k]: n for k, n in sorted(throttles.items())},
    )
    post_args = ["-m", "ferry.planner.cli", "postscript", rd.path, "$JOB"]
    post = dags.Script(
        ap_python,
        arguments=[
            *post_args,
            "--return",
            "$RETURN",
            "--retry",
            "$RETRY",
            "--max-retries",
            "$MAX_RETRIES",
            "--jobid",
            "$JOBID",
        ],
    )
    made_layers = {}
    for layer in layers.values():
        made_layers[layer.name] = dag.layer(
            name=layer.name,
            submit_description=htcondor2.Submit(layer.submit),
            vars=[n.vars for n in layer.nodes],
            retries=layer.retries if layer.retries > 0 else None,
            post=post,
            priority=layer.priority,
            category=layer.category,
        )
        fmt.add(layer.name, [n.name for n in layer.nodes])
    PlanEdges = _edge_class()
    edges: dict[tuple[str, str], Any] = {}
    for e, pj in enumerate(plan.jobs):
        child, ci = layer_of[e]
        for p in pj.parents:
            parent, pi = layer_of[index[p]]
            edge = edges.get((parent.name, child.name))
            if edge is None:
                edge = edges[(parent.name, child.name)] = PlanEdges()
            edge.add(pi, ci)
    for (pname, cname), edge in edges.items():
        made_layers[cname].add_parents(made_layers[pname], edge=edge)

    nodes_map: dict[str, list[Any]] = {}
    for layer in layers.values():
        for i, n in enumerate(layer.nodes):
            nodes_map[n.name] = [plan.jobs[layer.entries[i]].id, "job", layer.name, i]

    # cleanup actions: NOOP nodes whose POST script removes the files
    noop_submit = htcondor2.Submit(
        {"universe": "local", "executable": ap_python, "arguments": '"-c pass"'}
    )
    if cleanups:
        cnames = [cleanup_names[c.id] for c in cleanups]
        for c, cname in zip(cleanups, cnames, strict=True):
            _, sdir = shard_dir(cname)
            doc = {
                "version": NODE_FILE_VERSION,
                "kind": "cleanup",
                "node": cname,
                "action": c.id,
                "remove": c.remove,
            }
            with open(os.path.join(sdir, f"{cname}.json"), "wb") as f:
                f.write(encode(doc))
            nodes_map[cname] = [c.id, "cleanup", CLEANUP_LAYER, 0]
        clayer = dag.layer(
            name=CLEANUP_LAYER,
            submit_description=noop_submit,
            vars=[{} for _ in cleanups],
            noop=dict.fromkeys(range(len(cleanups)), True),
            post=post,
        )
        fmt.add(CLEANUP_LAYER, cnames)
        cedges: dict[str, Any] = {}
        for ci, c in enumerate(cleanups):
            nodes_map[cnames[ci]][3] = ci
            for jid in c.after or []:
                parent, pi = layer_of[index[jid]]
                edge = cedges.get(parent.name)
                if edge is None:
                    edge = cedges[parent.name] = PlanEdges()
                edge.add(pi, ci)
        for pname, edge in cedges.items():
            clayer.add_parents(made_layers[pname], edge=edge)

    # the FINAL node: always runs; its POST script ends the journal
    leaf = [{"id": c.id, "remove": c.remove} for c in plan.cleanup if c.after is None]
    _, sdir = shard_dir(FINAL_NODE)
    with open(os.path.join(sdir, f"{FINAL_NODE}.json"), "wb") as f:
        f.write(
            encode(
                {
                    "version": NODE_FILE_VERSION,
                    "kind": "final",
                    "node": FINAL_NODE,
                    "cleanup": leaf,
                    "total": len(plan.jobs),
                }
            )
        )
    dag.final(
        name=FINAL_NODE,
        submit_description=noop_submit,
        post=dags.Script(
            ap_python,
            arguments=[
                *post_args,
                "--return",
                "$RETURN",
                "--dag-status",
                "$DAG_STATUS",
                "--failed-count",
                "$FAILED_COUNT",
            ],
        ),
    )
    nodes_map[FINAL_NODE] = [None, "final", FINAL_NODE, 0]

    path = dags.write_dag(dag, cdir, dag_file_name=dag_file, node_name_formatter=fmt)
    # the bindings reference the FINAL node's submit file but do not write it
    with open(os.path.join(cdir, f"{FINAL_NODE}.sub"), "w") as f:
        f.write(str(noop_submit))
    if maxjobs:
        # DAGMan's throttle is MAXJOBS <category> <n>; the bindings' max_jobs_by_category
        # writes "CATEGORY <category> <n>" instead, which DAGMan reads as a node's category
        with open(path, "a") as f:
            for cat, n in sorted(maxjobs.items()):
                f.write(f"MAXJOBS {cat} {n}\n")
    info = {
        "dag": dag_file,
        "shards": shards,
        "final": FINAL_NODE,
        "staging": {k: v for k, v in modes.items() if v},
        "ep_python": ep_python,
        "ap_python": ap_python,
        "layers": len(layers) + (1 if cleanups else 0),
        "nodes": len(plan.jobs) + len(cleanups) + 1,
    }
    with open(os.path.join(cdir, "ferry.json"), "w") as f:
        json.dump(
            {"version": 1, "run_dir": rd.path, "workflow": plan.workflow, **info}, f, indent=1
        )
    with open(os.path.join(cdir, "nodes.json"), "wb") as f:
        f.write(encode({"version": 1, "nodes": nodes_map}))
    return info


# -- profiles into the plan -------------------------------------------------------------

#: the pegasus profile keys the HTCondor backend reads (besides what the specs carry)
PEGASUS_KEYS = ("data.configuration", "cores", "memory", "diskspace", "gpus")


def profile_getter(builder):  # type: ignore[no-untyped-def]
    """``j -> PlanJob.profiles`` for job ``j``: its merged ``condor`` and ``dagman``
    profiles and the ``pegasus`` keys of :data:`PEGASUS_KEYS`, as strings (cached per
    merged profile set: jobs without their own profiles share one)."""
    cache: dict[int, tuple[object, dict[str, dict[str, str]]]] = {}
    jobs = builder.wf.jobs

    def get(j: int) -> dict[str, dict[str, str]]:
        p = builder.profiles(jobs[j], builder.site_of(j))
        hit = cache.get(id(p))
        if hit is not None and hit[0] is p:
            return hit[1]
        out: dict[str, dict[str, str]] = {}
        for ns in ("condor", "dagman"):
            kv = p.get(ns)
            if kv:
                out[ns] = {str(k): _value(v) for k, v in kv.items()}
        peg = p.get("pegasus") or {}
        sel = {k: _value(peg[k]) for k in PEGASUS_KEYS if peg.get(k) is not None}
        if sel:
            out["pegasus"] = sel
        check_profiles(out, f"job {jobs[j].id}: ")
        cache[id(p)] = (p, out)
        return out

    return get


def check_profiles(profiles: dict[str, dict[str, str]], where: str = "") -> None:
    """Raise the planning errors :func:`write_htcondor` would raise for a job's
    ``condor`` and ``dagman`` profiles, before the planner writes anything."""
    submit_commands(
        profiles, _Res(), ep_python="/", condor_dir="/", workflow="", run_id="", where=where
    )
    dagman = profiles.get("dagman") or {}
    if dagman.get("category"):
        _check_category(str(dagman["category"]).strip(), f"{where}profile dagman.category")
    _dagman_settings(dagman, where, {}, {}, [])
