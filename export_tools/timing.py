"""Timing one call repeatedly: the loop ``kpx bench`` runs in PyTorch's process and inside each runtime's worker
(:mod:`export_tools.runtimes.isolation`), so that neither imports the other."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np


def time_calls(
    fn: Callable[[], object], seconds: float, *, warmup: int = 2, max_calls: int = 10000, tick=None
) -> tuple[float, float, float, int]:
    """Median, 10th and 90th percentile milliseconds of ``fn`` over about ``seconds`` (at least 5 calls)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < 5 or (time.perf_counter() < end and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if tick is not None:
            tick()
    q = np.percentile(times, [10, 90])
    return statistics.median(times), float(q[0]), float(q[1]), len(times)
