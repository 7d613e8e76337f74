"""Shared helpers for the planner tests: write workflows with pegasus-wms-api, run `ferry`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ferry.worker.jobspec import JobSpec, load_jobspec

PY = sys.executable


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def script(path: Path, body: str) -> Path:
    """An executable Python script run by this interpreter (no PATH shim)."""
    path.write_text(f"#!{PY}\n{body}")
    path.chmod(0o755)
    return path


def ferry(
    *args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "ferry.planner.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def ferry_bg(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "ferry.planner.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def plan_doc(run: Path) -> dict[str, Any]:
    return json.loads((run / "plan.json").read_text())


def specs(run: Path) -> dict[str, JobSpec]:
    """Every job spec in the run directory, loaded (and so validated) by the worker's loader."""
    out = {}
    for p in sorted((run / "jobs").rglob("*.json")):
        if p.name.endswith(".cluster.json"):
            continue
        spec = load_jobspec(p.read_bytes(), source=str(p))
        out[spec.id] = spec
    return out


def journal(run: Path) -> list[dict[str, Any]]:
    path = run / "journal.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a torn line (a writer killed mid-write), as the readers skip it
            continue
    return out


def events(run: Path, job: str, event: str) -> list[dict[str, Any]]:
    return [e for e in journal(run) if e.get("job") == job and e.get("event") == event]


def records(run: Path, job: str) -> list[dict[str, Any]]:
    out = []
    for p in sorted((run / "records").glob(f"{job}.*.json")):
        stem = p.name[: -len(".json")]
        if stem.rpartition(".")[0] == job:
            out.append(json.loads(p.read_text()))
    return sorted(out, key=lambda r: r["attempt"])


def wait_for(cond, timeout: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def files_under(path: Path) -> Iterator[Path]:
    return (p for p in path.rglob("*") if p.is_file())


def intermediate_workflow(tmp: Path, tampered: str) -> None:
    """Write ``tmp/workflow.yml``: ``mk`` writes a.txt (``good``), its child ``tamper``
    overwrites every file matching the glob ``tampered`` with ``evil`` and writes b.txt,
    and ``use`` (no retries) cats a.txt and b.txt into out.txt. With ``tampered``
    matching nothing, a clean diamond's middle and end."""
    from Pegasus.api import File, Job, Transformation, TransformationCatalog, Workflow

    mk = script(tmp / "mk", "open('a.txt', 'w').write('good')\n")
    tamper = script(
        tmp / "tamper",
        "import glob\n"
        f"for f in glob.glob({tampered!r}, recursive=True):\n"
        "    open(f, 'w').write('evil')\n"
        "open('b.txt', 'w').write('b')\n",
    )
    tc = TransformationCatalog().add_transformations(
        Transformation("mk", site="local", pfn=str(mk)),
        Transformation("tamper", site="local", pfn=str(tamper)),
        Transformation("cat", site="local", pfn="/bin/cat"),
    )
    a, b = File("a.txt"), File("b.txt")
    j1 = Job("mk", _id="mk").add_outputs(a, stage_out=False)
    j2 = Job("tamper", _id="tamper").add_outputs(b, stage_out=False)
    j3 = Job("cat", _id="use").add_args(a, b).add_inputs(a, b).set_stdout(File("out.txt"))
    j3.add_dagman_profile(retry=0)
    wf = Workflow("inter").add_jobs(j1, j2, j3).add_dependency(j1, children=[j2])
    wf.add_transformation_catalog(tc)
    wf.write(str(tmp / "workflow.yml"))
