"""Run a function from several threads at once (each with its own pooled connection)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_concurrently(function: Callable[[int], T], workers: int) -> list[T]:
    """Call ``function(i)`` for i in range(workers), all released together by a barrier.

    Returns the results in ``i`` order; re-raises the first exception.
    """
    barrier = threading.Barrier(workers)

    def call(i: int) -> T:
        barrier.wait(timeout=30)
        return function(i)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(call, i) for i in range(workers)]
        return [future.result(timeout=120) for future in futures]
