"""``kpx bench``: latency of PyTorch eager vs any runtime of the table (default ORT CPU, and CUDA when it
works), median and spread.

Each runtime is timed in its own block (warm-up, then calls until its share of the time budget is spent),
each runner built with its latency settings (``benchmark=True``: ORT's thread spinning off). Timings on a
shared machine are noisy: compare rows of one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from export_tools.timing import time_calls


@dataclass
class Timing:
    runtime: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    calls: int
    #: the runtime crashed, hung or raised instead (``RunFailedError``'s text); the figures are NaN
    failed: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def bench(
    model: bytes,
    feeds: Sequence[np.ndarray],
    *,
    module=None,
    runtimes: Sequence[str] = ("cpu",),
    seconds: float = 3.0,
    tick=None,
    isolate: bool = True,
) -> list[Timing]:
    """Times ``module`` (PyTorch eager, when given) and ``model`` on each runtime of the table.

    With ``isolate`` (default) each runtime is timed inside its worker process (the loop runs there: no pipe
    in the timings), so a runtime that crashes on the file is a row saying so, retried with its safer
    options like a parity check."""
    import torch

    share = seconds / (len(runtimes) + (module is not None))
    rows = []
    if module is not None:
        args = [torch.from_numpy(np.ascontiguousarray(f)) for f in feeds]
        module = module.eval()

        def eager():
            with torch.inference_mode():
                module(*args)

        rows.append(Timing("torch-eager", *time_calls(eager, share, tick=tick)))
    for kind in runtimes:
        rows += _time_runtime(kind, model, feeds, share, isolate, tick)
    return rows


def _time_runtime(kind: str, model: bytes, feeds: Sequence[np.ndarray], seconds: float, isolate: bool, tick):
    """Rows for one runtime: its timing, after a row per options it crashed with."""
    from export_tools.errors import RunFailedError
    from export_tools.runtimes import get_runner, make_runner
    from export_tools.runtimes.isolation import IsolatedRunner

    rows = []
    for options in [{}, *get_runner(kind).fallback_options({})]:
        try:
            if isolate:
                runner = IsolatedRunner(kind, model, benchmark=True, **options)
                stats = runner.time(feeds, seconds)
                runner.close()
            else:
                runner = make_runner(kind, model, benchmark=True, **options)
                stats = time_calls(lambda r=runner: r.run(feeds), seconds, tick=tick)
            return [*rows, Timing(runner.name, *stats)]
        except RunFailedError as failure:
            rows.append(
                Timing(failure.runtime, *(float("nan"),) * 3, 0, failed=f"{failure.what} during {failure.phase}")
            )
            if not failure.crashed:
                break
    return rows


def format_timings(rows: Sequence[Timing]) -> str:
    timed = [r for r in rows if not r.failed]
    base = timed[0].median_ms if timed else 1.0
    lines = [f"{'runtime':<18} {'median ms':>10} {'p10 ms':>9} {'p90 ms':>9} {'calls':>6} {'vs first':>9}"]
    for r in rows:
        if r.failed:
            lines.append(f"{r.runtime:<18} FAILED: {r.failed}")
            continue
        ratio = base / r.median_ms if r.median_ms else float("inf")
        lines.append(f"{r.runtime:<18} {r.median_ms:>10.3f} {r.p10_ms:>9.3f} {r.p90_ms:>9.3f} {r.calls:>6} "
                     f"{ratio:>8.2f}x")  # fmt: skip
    return "\n".join(lines)
