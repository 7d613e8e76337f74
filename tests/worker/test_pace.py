"""How many transfer threads work at once: the engine adds threads only while the
transfers leave the CPU idle (they wait on servers), never while they keep it busy."""

from __future__ import annotations

import threading
import time

from ferry.worker.pace import WINDOW, Pace


def _pool(pace: Pace, items: int, work: object) -> list[int]:
    """Run ``items`` calls of ``work`` on ``pace.workers`` threads as the engine does;
    return which thread ran each."""
    todo = iter(range(items))
    lock = threading.Lock()
    ran: list[int] = []

    def worker(k: int) -> None:
        while pace.wait_turn(k):
            with lock:
                item = next(todo, None)
            if item is None:
                break
            work()  # type: ignore[operator]
            with lock:
                ran.append(k)
            pace.tick()
        pace.finish()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(pace.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a parked thread was never woken"
    return ran


def test_waiting_work_gets_every_thread() -> None:
    pace = Pace(workers=8, cores=2)
    assert pace.working == 2  # one per CPU to start with
    ran = _pool(pace, 60, lambda: time.sleep(0.02))  # a server that takes 20 ms to answer
    assert len(ran) == 60
    assert pace.peak == pace.working == 8
    assert set(ran) == set(range(8))


def test_busy_work_keeps_one_thread_per_cpu() -> None:
    def spin() -> None:  # Python work holding the GIL: one CPU's worth at most
        end = time.process_time() + 0.004
        while time.process_time() < end:
            pass

    pace = Pace(workers=8, cores=1)
    started = time.monotonic()
    ran = _pool(pace, 150, spin)
    assert time.monotonic() - started > 4 * WINDOW  # long enough to have been looked at
    assert len(ran) == 150
    assert pace.peak == 1 and set(ran) == {0}


def test_a_few_long_transfers_get_company_before_one_ends() -> None:
    # 4 transfers of 0.6 s each on 4 threads: the first parked thread wakes by itself
    # every window, sees the CPU idle and lets the others in
    pace = Pace(workers=4, cores=1)
    started = time.monotonic()
    ran = _pool(pace, 4, lambda: time.sleep(0.6))
    elapsed = time.monotonic() - started
    assert sorted(ran) == [0, 1, 2, 3]
    assert elapsed < 1.5, elapsed  # not 4 x 0.6 s one after the other


def test_finish_wakes_every_parked_thread() -> None:
    pace = Pace(workers=6, cores=1)
    results: list[bool] = []
    lock = threading.Lock()

    def parked(k: int) -> None:
        ok = pace.wait_turn(k)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=parked, args=(k,)) for k in range(1, 6)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    pace.finish()
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()
    # the work ran out while they waited, unless they had been let in before it did
    assert len(results) == 5
    assert pace.wait_turn(5) is (5 < pace.working)


def test_no_more_threads_than_given() -> None:
    assert Pace(workers=1, cores=8).working == 1
    assert Pace(workers=3, cores=8).working == 3
    pace = Pace(workers=3, cores=1)
    ran = _pool(pace, 30, lambda: time.sleep(0.02))
    assert pace.peak == 3 and len(ran) == 30
