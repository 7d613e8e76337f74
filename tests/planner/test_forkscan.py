"""planner/forkscan.py: batches scanned in forked processes come back in order."""

from __future__ import annotations

import os

import pytest

from ferry.planner import forkscan


def upper(text: str, s: int, e: int) -> list:
    return [text[s:e].upper(), s]


def fails_at_40(text: str, s: int, e: int) -> list:
    if s == 40:
        raise ValueError("no batch 40 here")
    return [s]


def spans(n: int, size: int = 10) -> list[tuple[int, int]]:
    return [(k * size, (k + 1) * size) for k in range(n)]


def reaped(procs: forkscan.Workers) -> bool:
    for pid, _f in procs:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_in_order(workers: int) -> None:
    text = "abcdefghij" * 30
    procs = forkscan.fork_scanners(text, spans(30), upper, workers)
    assert procs is not None and len(procs) == workers
    got = list(forkscan.results(procs, 30))
    forkscan.stop(procs, kill=False)
    assert got == [["ABCDEFGHIJ", k * 10] for k in range(30)]
    assert reaped(procs)


def test_a_failing_worker_is_an_error_and_all_are_reaped() -> None:
    procs = forkscan.fork_scanners("x" * 100, spans(10), fails_at_40, 2)
    assert procs is not None
    it = forkscan.results(procs, 10)
    assert [next(it) for _ in range(4)] == [[0], [10], [20], [30]]
    with pytest.raises(RuntimeError, match="no batch 40 here"):
        next(it)
    forkscan.stop(procs, kill=True)
    assert reaped(procs)


def test_stopped_early_the_workers_are_killed() -> None:
    big = "y" * (1 << 20)
    procs = forkscan.fork_scanners(big, spans(64, 1 << 14), upper, 2)  # more than a pipe holds
    assert procs is not None
    it = forkscan.results(procs, 64)
    next(it)
    it.close()
    forkscan.stop(procs, kill=True)
    assert reaped(procs)
