"""Running work in threads released together, for the concurrency tests."""

from __future__ import annotations

import threading


def at_once(count: int, work) -> list:
    """Run work(i) in `count` threads released together; results (or exceptions) by i."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
