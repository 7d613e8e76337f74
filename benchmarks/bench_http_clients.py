#!/usr/bin/env python3
"""CPU per request and per GiB of Python HTTP clients, against nginx on 127.0.0.1.

The measurement behind the choice of ``http.client`` for ferry's lean GET path
(``plugins/_httpwire.py``, ``docs/protocols/http.md``). Every client hashes
every body with sha256 (as ferry does) and writes nothing, so the numbers are
the client's cost plus the hashing:

* ``httpx``        one shared ``httpx.Client``, ``stream()`` + ``iter_raw()``
* ``urllib3``      one ``PoolManager``, ``preload_content=False``, ``readinto``
* ``urllib3-fp``   the same, reading the underlying ``http.client`` response
                   (``resp._fp.readinto``, private: shown to explain the gap)
* ``http.client``  one keep-alive connection per thread, ``readinto``

Small: N x 64 KiB files over 16 threads (CPU ms per request). Big: one file
over one connection (CPU s per GiB). CPU is this process's user + system time
(``getrusage``), so run it when the machine is quiet, or compare clients
within one run only.

Usage::

    python benchmarks/bench_http_clients.py [--files 400] [--big-mib 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.servers import start_nginx  # noqa: E402

BUF = 256 << 10


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=400, help="64 KiB files (default 400)")
    p.add_argument("--big-mib", type=int, default=256, help="size of the big file (MiB)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=HERE / "_work" / "http-clients")
    args = p.parse_args()

    import httpx
    import urllib3

    root = args.workdir / "docroot"
    (root / "s").mkdir(parents=True, exist_ok=True)
    for i in range(args.files):
        path = root / "s" / f"{i}.bin"
        if not path.exists():
            path.write_bytes(os.urandom(64 << 10))
    big = root / "big.bin"
    big_size = args.big_mib << 20
    if not big.exists() or big.stat().st_size != big_size:
        big.write_bytes(os.urandom(big_size))
    server = start_nginx(args.workdir, root=root)
    base = f"http://127.0.0.1:{server.port}"
    local = threading.local()

    def buffer() -> memoryview:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = memoryview(bytearray(BUF))
        return buf

    client = httpx.Client(
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        headers={"Accept-Encoding": "identity"},
    )
    pool = urllib3.PoolManager(maxsize=16, block=False)

    def with_httpx(path: str) -> str:
        h = hashlib.sha256()
        with client.stream("GET", base + path) as r:
            for chunk in r.iter_raw():
                h.update(chunk)
        return h.hexdigest()

    def with_urllib3(path: str, private_fp: bool = False) -> str:
        view, h = buffer(), hashlib.sha256()
        r = pool.request(
            "GET", base + path, preload_content=False, headers={"Accept-Encoding": "identity"}
        )
        src = r._fp if private_fp else r  # type: ignore[attr-defined]
        while n := src.readinto(view):
            h.update(view[:n])
        r.release_conn()
        return h.hexdigest()

    def with_http_client(path: str) -> str:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        view, h = buffer(), hashlib.sha256()
        conn.request("GET", path, headers={"Accept-Encoding": "identity", "User-Agent": "ferry"})
        r = conn.getresponse()
        while n := r.readinto(view):
            h.update(view[:n])
        return h.hexdigest()

    clients: dict[str, Callable[[str], str]] = {
        "httpx": with_httpx,
        "urllib3": with_urllib3,
        "urllib3-fp": lambda path: with_urllib3(path, private_fp=True),
        "http.client": with_http_client,
    }
    paths = [f"/s/{i}.bin" for i in range(args.files)]

    def timed(fn: Callable[[str], str], items: list[str], threads: int) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), cpu()
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(fn, items))
        return time.perf_counter() - w0, cpu() - c0

    try:
        for fn in clients.values():  # open the connections, warm the caches
            timed(fn, paths[:32], 16)
        for _ in range(args.rounds):
            for name, fn in clients.items():
                wall, used = timed(fn, paths, 16)
                print(
                    f"small {name:12s} wall {wall:6.3f} s  cpu {used:6.3f} s"
                    f"  {1000 * used / len(paths):5.2f} ms CPU/request",
                    flush=True,
                )
        for _ in range(args.rounds):
            for name, fn in clients.items():
                wall, used = timed(fn, ["/big.bin"], 1)
                print(
                    f"big   {name:12s} wall {wall:6.3f} s  cpu {used:6.3f} s"
                    f"  {used * (1 << 30) / big_size:5.2f} s CPU/GiB (sha256 included)",
                    flush=True,
                )
        h, view = hashlib.sha256(), memoryview(bytearray(BUF))
        c0 = cpu()
        for _ in range(big_size // BUF):
            h.update(view)
        print(f"sha256 alone {(cpu() - c0) * (1 << 30) / big_size:.2f} s CPU/GiB")
    finally:
        client.close()
        pool.clear()
        server.stop()


if __name__ == "__main__":
    main()
