"""Run a ferry HTCondor DAG on this machine the way HTCondor would, without HTCondor.

No HTCondor daemons can run here (and the 25.x bindings need a schedd for
``Submit.jobs()`` and ``condor_dagman`` for ``Submit.from_dag``), so the tests
do by hand what DAGMan, the schedd and a starter would do with the files
``ferry plan --backend htcondor`` wrote, and nothing more:

* read the DAG file (JOB, VARS, RETRY, SCRIPT POST, PRIORITY, PARENT/CHILD,
  FINAL, NOOP), rejecting lines DAGMan's parser would reject (:func:`check_line`),
  and, like DAGMan, skip the nodes a rescue DAG lists as DONE;
* for each node job: parse its submit file with ``htcondor2.Submit``, set the
  node's VARS as submit macros and expand ``executable``, ``arguments``,
  ``transfer_input_files``, ``transfer_output_files``,
  ``transfer_output_remaps``, ``output`` and ``error`` with the bindings;
* make a scratch execute directory, copy every ``transfer_input_files`` entry
  into it by its basename (as the shadow and starter do), run the executable
  with the arguments exactly as the submit file gives them (HTCondor's argument
  syntax), in the scratch directory, with ``_CONDOR_SCRATCH_DIR`` set and a
  clean environment (``getenv`` is off);
* copy each ``transfer_output_files`` entry back, to its remap or into the
  submit directory; a missing one puts the job "on hold" (reported, and the
  tests require it never happens);
* run the POST script with ``$JOB``, ``$RETURN``, ``$RETRY``,
  ``$MAX_RETRIES``, ``$JOBID`` substituted, retry the node while RETRY allows,
  run ready nodes a few at a time (DAGMan runs POST scripts concurrently), run
  the FINAL node's POST script with ``$DAG_STATUS`` and ``$FAILED_COUNT``, and
  write a rescue DAG (``DONE`` lines) when the DAG fails.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import htcondor2

_VARS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Node:
    name: str
    submit: str
    vars: dict[str, str] = field(default_factory=dict)
    retry: int = 0
    post: list[str] | None = None
    priority: int = 0
    category: str | None = None
    noop: bool = False
    parents: set[str] = field(default_factory=set)


@dataclass
class Dag:
    path: Path
    nodes: dict[str, Node]
    final: Node | None
    meta: list[str]
    maxjobs: dict[str, int]


_VARS_LINE = re.compile(r'\s*(\w+)="((?:[^"\\]|\\.)*)"')
_INT = re.compile(r"-?\d+\Z")


def check_line(words: list[str], line: str) -> None:
    """Reject what DAGMan's parser rejects for the commands ferry writes (added to make
    the simulation as strict as DAGMan: extra or missing tokens, a value that is not an
    integer, a VARS value that is not quoted, a macro name DAGMan refuses)."""
    kw, n = words[0].upper(), len(words)

    def bad(why: str) -> None:
        raise ValueError(f"DAGMan would reject {line!r}: {why}")

    if kw in ("JOB", "FINAL"):
        if n < 3 or any(w.upper() not in ("NOOP", "DONE") for w in words[3:]):
            bad("JOB/FINAL name submit-file [NOOP] [DONE]")
        if re.search(r"[+.]", words[1]) or words[1].upper() in ("PARENT", "CHILD", "ALL_NODES"):
            bad("node name with a reserved character or word")
    elif kw == "VARS":
        rest = line.split(None, 2)[2] if n >= 3 else ""
        pos = 0
        while pos < len(rest.rstrip()):
            m = _VARS_LINE.match(rest, pos)
            if not m:
                bad(f'VARS macro="value" expected at {rest[pos:]!r}')
            if m.group(1).lower().startswith("queue"):
                bad("a VARS macro name cannot begin with queue")
            pos = m.end()
        if pos == 0:
            bad("VARS without a macro")
    elif kw == "RETRY":
        if (
            n not in (3, 5)
            or not _INT.match(words[2])
            or (n == 5 and (words[3].upper() != "UNLESS-EXIT" or not _INT.match(words[4])))
        ):
            bad("RETRY name n [UNLESS-EXIT code]")
    elif kw == "SCRIPT":
        if n < 4 or words[1].upper() not in ("PRE", "POST"):
            bad("SCRIPT PRE|POST name executable [arguments]")
    elif kw in ("PRIORITY", "MAXJOBS"):
        if n != 3 or not _INT.match(words[2]):
            bad(f"{kw} name integer")
    elif kw in ("CATEGORY", "CONFIG", "JOBSTATE_LOG"):
        if n != (3 if kw == "CATEGORY" else 2):
            bad("extra or missing tokens (names cannot contain white space)")
    elif kw == "NODE_STATUS_FILE":
        if n > 4 or (n >= 3 and not _INT.match(words[2])):
            bad("NODE_STATUS_FILE file [seconds] [ALWAYS-UPDATE]")
    elif kw == "PARENT":
        if "CHILD" not in words[2:] or words[-1] == "CHILD":
            bad("PARENT ... CHILD ...")
    else:
        bad("a command ferry does not write")


def parse_dag(path: Path) -> Dag:
    nodes: dict[str, Node] = {}
    final = None
    meta: list[str] = []
    maxjobs: dict[str, int] = {}

    def get(name: str) -> Node:
        if final is not None and name == final.name:
            return final
        return nodes[name]

    # like DAGMan, two passes: node definitions first (the bindings write a PARENT line
    # right after the parent, before the child's JOB line), then everything else
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines:
        words = line.split()
        check_line(words, line)
        if words[0].upper() == "JOB":
            nodes[words[1]] = Node(words[1], words[2], noop="NOOP" in words[3:])
        elif words[0].upper() == "FINAL":
            final = Node(words[1], words[2])
    for line in lines:
        words = line.split()
        kw = words[0].upper()
        if kw in ("JOB", "FINAL"):
            continue
        if kw == "VARS":
            rest = line.split(None, 2)[2]
            for k, v in _VARS.findall(rest):
                get(words[1]).vars[k] = re.sub(r"\\(.)", r"\1", v)
        elif kw == "RETRY":
            get(words[1]).retry = int(words[2])
        elif kw == "SCRIPT":
            assert words[1] == "POST", line
            get(words[2]).post = words[3:]
        elif kw == "PRIORITY":
            get(words[1]).priority = int(words[2])
        elif kw == "CATEGORY":
            get(words[1]).category = words[2]
        elif kw == "PARENT":
            i = words.index("CHILD")
            for p in words[1:i]:
                assert p in nodes, f"PARENT names an undefined node {p}"
            for c in words[i + 1 :]:
                nodes[c].parents.update(words[1:i])
        elif kw == "MAXJOBS":
            maxjobs[words[1]] = int(words[2])
        else:
            meta.append(line)
    return Dag(path, nodes, final, meta, maxjobs)


def condor_args(value: str) -> list[str]:
    """HTCondor's argument syntax: the new one (in double quotes: white space
    separates, single quotes group, '' is a quote) or the old one (white space)."""
    value = value.strip()
    if not (value.startswith('"') and value.endswith('"')):
        return value.split()
    text = value[1:-1].replace('""', '"')
    out: list[str] = []
    cur: list[str] = []
    have = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            have = True
            i += 1
            while i < len(text):
                if text[i] == "'":
                    if text[i + 1 : i + 2] == "'":
                        cur.append("'")
                        i += 2
                        continue
                    break
                cur.append(text[i])
                i += 1
        elif ch.isspace():
            if have or cur:
                out.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(ch)
        i += 1
    if have or cur:
        out.append("".join(cur))
    return out


def file_list(value: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s]+", value) if p.strip()]


def remap_list(value: str) -> dict[str, str]:
    value = value.strip().strip('"')
    out = {}
    for part in value.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def expanded(submit_file: Path, vars: dict[str, str]) -> htcondor2.Submit:
    """The node's submit description with its VARS set, as DAGMan hands it to the schedd."""
    sub = htcondor2.Submit(submit_file.read_text())
    for k, v in vars.items():
        sub[k] = v
    return sub


@dataclass
class JobRun:
    node: str
    code: int
    scratch: Path
    held: str | None = None
    inputs: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)


_cluster = itertools.count(100)


def run_job(dag_dir: Path, node: Node, scratch_root: Path) -> JobRun:
    sub = expanded(dag_dir / node.submit, node.vars)
    exe = sub.expand("executable")
    argv = [exe, *condor_args(sub.expand("arguments"))]
    inputs = file_list(sub.expand("transfer_input_files"))
    scratch = Path(tempfile.mkdtemp(prefix=f"{node.name}-", dir=scratch_root))
    for path in inputs:  # the shadow sends each input; it lands under its basename
        src = Path(path) if os.path.isabs(path) else dag_dir / path
        if not src.exists():
            return JobRun(node.name, -1, scratch, held=f"input {src} is missing")
        shutil.copy2(src, scratch / src.name)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "_CONDOR_SCRATCH_DIR": str(scratch),
        "TMPDIR": str(scratch),
        "_CONDOR_JOB_IWD": str(dag_dir),
    }
    out, err = sub.expand("output"), sub.expand("error")
    with open(out, "wb") as so, open(err, "wb") as se:
        proc = subprocess.run(argv, cwd=scratch, env=env, stdout=so, stderr=se, timeout=300)
    code = proc.returncode
    remaps = remap_list(sub.expand("transfer_output_remaps"))
    for name in file_list(sub.expand("transfer_output_files")):
        src = scratch / name
        if not src.exists():
            return JobRun(node.name, code, scratch, held=f"output {name} is missing", argv=argv)
        dst = Path(remaps.get(name, dag_dir / name))
        shutil.copy2(src, dst)
    return JobRun(node.name, code, scratch, inputs=inputs, argv=argv)


def run_post(dag_dir: Path, post: list[str], macros: dict[str, str]) -> int:
    argv = [macros.get(a, a) if a.startswith("$") else a for a in post]
    proc = subprocess.run(argv, cwd=dag_dir, capture_output=True, text=True, timeout=300)
    if proc.returncode not in (0, 1) or proc.stderr.strip():
        print(f"POST {argv[5:]}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode


@dataclass
class Result:
    done: set[str]
    failed: set[str]
    futile: set[str]
    runs: dict[str, list[JobRun]]
    posts: dict[str, list[int]]
    final_post: int | None
    rescue: Path | None


def simulate(dag_path: Path, scratch_root: Path, slots: int = min(4, os.cpu_count() or 1)) -> Result:
    """Run the DAG as DAGMan would (see the module docstring)."""
    dag = parse_dag(dag_path)
    dag_dir = dag_path.parent
    rescues = sorted(dag_dir.glob(dag_path.name + ".rescue[0-9][0-9][0-9]"))
    done: set[str] = set()
    if rescues:
        for line in rescues[-1].read_text().splitlines():
            if line.startswith("DONE "):
                done.add(line.split()[1])
    failed: set[str] = set()
    runs: dict[str, list[JobRun]] = {}
    posts: dict[str, list[int]] = {}
    cluster = next(_cluster)

    def attempt(node: Node) -> bool:
        for retry in range(node.retry + 1):
            if node.noop:
                ret = 0
                jobid = "0.0"
            else:
                run = run_job(dag_dir, node, scratch_root)
                runs.setdefault(node.name, []).append(run)
                assert run.held is None, f"node {node.name} would be held: {run.held}"
                ret = run.code
                jobid = f"{cluster}.{len(runs[node.name])}"
            if node.post is None:
                ok = ret == 0
            else:
                rc = run_post(dag_dir, node.post, {
                    "$JOB": node.name, "$RETURN": str(ret), "$RETRY": str(retry),
                    "$MAX_RETRIES": str(node.retry), "$JOBID": jobid,
                })
                posts.setdefault(node.name, []).append(rc)
                ok = rc == 0
            if ok:
                return True
        return False

    pending = {n for n in dag.nodes if n not in done}
    running: dict[object, str] = {}
    with ThreadPoolExecutor(slots) as pool:
        while pending or running:
            ready = sorted(
                (n for n in pending if dag.nodes[n].parents <= done),
                key=lambda n: -dag.nodes[n].priority,
            )
            for n in ready[: max(0, slots - len(running))]:
                pending.discard(n)
                running[pool.submit(attempt, dag.nodes[n])] = n
            if not running:
                break  # the rest can never run: a parent failed
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                n = running.pop(fut)
                (done if fut.result() else failed).add(n)
    futile = pending
    final_post = None
    if dag.final is not None and dag.final.post is not None:
        status = 0 if not failed else 2
        final_post = run_post(dag_dir, dag.final.post, {
            "$JOB": dag.final.name, "$RETURN": "0", "$DAG_STATUS": str(status),
            "$FAILED_COUNT": str(len(failed)), "$RETRY": "0", "$MAX_RETRIES": "0",
        })
    rescue = None
    if failed or futile or (final_post not in (None, 0)):
        num = len(rescues) + 1
        rescue = dag_dir / f"{dag_path.name}.rescue{num:03d}"
        lines = ["# Rescue DAG file, created by the test's DAGMan stand-in",
                 f"# Nodes premarked DONE: {len(done)}", f"# Nodes that failed: {len(failed)}"]
        lines += [f"DONE {n}" for n in sorted(done)]
        rescue.write_text("\n".join(lines) + "\n")
    return Result(done, failed, futile, runs, posts, final_post, rescue)
