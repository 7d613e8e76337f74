"""What DAGMan knows about an HTCondor run, for the monitoring commands.

The journal (written by ``ferry submit`` and the POST scripts) and the
invocation records say what finished. Between POST scripts, DAGMan's **node
status file** (``DIR/htcondor/<workflow>.dag.status``, ClassAds rewritten at
most every 30 s, read with ``classad2``) says which nodes are ready, queued,
running or in their POST script; a **rescue DAG** (``<dag>.rescueNNN``, written
when DAGMan stops short) lists the nodes that are done. :func:`apply` lays both
over a :class:`~ferry.planner.state.RunState`: only where they are newer than
the journal's last word on an entry, and never over a finished attempt the
journal recorded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .htcondor import CONDOR_DIR
from .rundir import RunDir

__all__ = ["NodeStatus", "apply", "read_node_status", "read_rescue"]

#: NodeStatus / DagStatus values (DAGMan's node status file)
NOT_READY, READY, PRERUN, SUBMITTED, POSTRUN, DONE, ERROR, FUTILE = range(8)


@dataclass
class NodeStatus:
    """One reading of a node status file."""

    timestamp: float = 0.0
    dag_status: int | None = None
    #: node -> (NodeStatus, StatusDetails, RetryCount)
    nodes: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    #: DagStatus's counts (NodesDone, NodesFailed, ...)
    counts: dict[str, int] = field(default_factory=dict)


def read_node_status(path: str) -> NodeStatus | None:
    """Parse a node status file; None when there is none (or it is torn)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    import classad2

    out = NodeStatus()
    try:
        ads = list(classad2.parseAds(text))
    except Exception:  # noqa: BLE001 - DAGMan was rewriting it
        return None
    for ad in ads:
        kind = ad.get("Type")
        if kind == "DagStatus":
            out.timestamp = float(ad.get("Timestamp", 0) or 0)
            out.dag_status = int(ad.get("DagStatus", 0))
            for k in (
                "NodesTotal",
                "NodesDone",
                "NodesFailed",
                "NodesQueued",
                "NodesPost",
                "NodesPre",
                "NodesReady",
                "NodesUnready",
                "NodesFutile",
            ):
                if k in ad:
                    out.counts[k] = int(ad[k])
        elif kind == "NodeStatus":
            out.nodes[str(ad.get("Node"))] = (
                int(ad.get("NodeStatus", 0)),
                str(ad.get("StatusDetails", "")),
                int(ad.get("RetryCount", 0) or 0),
            )
    return out


def read_rescue(path: str) -> tuple[set[str], dict[str, int]]:
    """(done nodes, node -> retries left) of a (partial) rescue DAG.

    Read here rather than with ``htcondor2.dags.rescue``: that parser strips
    the characters of "DONE " from the left of each line (``Node1`` would lose
    its ``N``) and fails on the RETRY lines a rescue DAG has for nodes with
    retries left.
    """
    done: set[str] = set()
    retries: dict[str, int] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return done, retries
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0].upper() == "DONE":
            done.add(parts[1])
        elif len(parts) >= 3 and parts[0].upper() == "RETRY" and parts[2].isdigit():
            retries[parts[1]] = int(parts[2])
    return done, retries


def _nodes(rd: RunDir) -> dict[str, list[Any]]:
    try:
        with open(rd.join(CONDOR_DIR, "nodes.json"), "rb") as f:
            return json.loads(f.read()).get("nodes", {})
    except (OSError, ValueError):
        return {}


_RUNNING = {SUBMITTED: "running", POSTRUN: "running", READY: "queued", PRERUN: "queued"}


def apply(rd: RunDir, rs: Any) -> None:
    """Lay DAGMan's node status file and rescue DAG over ``rs`` (a RunState)."""
    from .submit_cli import latest_rescue

    try:
        with open(rd.join(CONDOR_DIR, "ferry.json"), "rb") as f:
            cfg = json.loads(f.read())
    except (OSError, ValueError):
        return
    cdir = rd.join(CONDOR_DIR)
    dag = str(cfg.get("dag", ""))
    last_start = max((s for s, _ in rs.sessions), default=None)
    nodes = _nodes(rd)
    rescue = latest_rescue(cdir, dag)
    if rescue is not None:
        mtime = os.path.getmtime(rescue)
        done, _ = read_rescue(rescue)
        for node in done:
            info = nodes.get(node)
            js = rs.jobs.get(info[0]) if info and info[1] == "job" else None
            if js is not None and js.state != "succeeded":
                js.state = "succeeded"
        if rs.status == "running" and last_start is not None and mtime >= last_start:
            rs.status = "failure"  # DAGMan stopped short of its FINAL node
            if rs.sessions and rs.sessions[-1][1] is None:
                rs.sessions[-1] = (rs.sessions[-1][0], mtime)
    ns = read_node_status(os.path.join(cdir, f"{dag}.status"))
    if ns is None or (last_start is not None and ns.timestamp < last_start):
        return  # none yet, or left from an earlier submission
    for node, (st, details, _) in ns.nodes.items():
        info = nodes.get(node)
        if not info or info[1] != "job":
            continue
        js = rs.jobs.get(info[0])
        if js is None or (js.since is not None and js.since > ns.timestamp):
            continue  # the journal knows better (a POST script ran since)
        if st in _RUNNING:
            state = _RUNNING[st]
            if st == SUBMITTED and details.lower() in ("idle", "held"):
                state = "queued"
            if js.state not in ("succeeded",):
                js.state = state
        elif st == DONE and js.state != "succeeded":
            js.state = "succeeded"
        elif st == ERROR and js.state not in ("failed", "succeeded"):
            js.state = "failed"
    if rs.status == "running" and ns.dag_status in (DONE, ERROR):
        rs.status = "success" if ns.dag_status == DONE else "failure"


def node_logs(rd: RunDir) -> dict[str, tuple[str, str]]:
    """Plan entry -> the stdout and stderr files of its node job (``DIR/htcondor/nodes``)."""
    from .htcondor import shard_of

    try:
        with open(rd.join(CONDOR_DIR, "ferry.json"), "rb") as f:
            shards = int(json.loads(f.read())["shards"])
    except (OSError, ValueError, KeyError):
        return {}
    out = {}
    for node, info in _nodes(rd).items():
        if info and info[1] == "job":
            base = rd.join(CONDOR_DIR, "nodes", shard_of(node, shards), node)
            out[info[0]] = (base + ".out", base + ".err")
    return out
