"""Shared helpers for the ratio benchmarks: interleaved timing, ORT sessions, floors.

Rows are timed round-robin within a group of the same runtime (eager rows
together, ORT rows together): a ratio only ever compares rows of one group.
Mixing runtimes call by call is avoided on purpose: each runtime's worker
threads spin-wait after a call and steal the cores from the next one (measured
here: torch eager 10-100x slower right after an ORT run). ORT sessions are
made with spinning off, since separate sessions have separate thread pools.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def compare(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int = 30,
    warmup: int = 2,
    min_seconds: float = 2.0,
    block: int = 1,
) -> dict[str, float]:
    """Median milliseconds of each candidate, timed round-robin.

    At least ``rounds`` rounds, more (up to 2000) while a round is cheap, aiming at ``min_seconds``.
    With ``block > 1`` each round calls a candidate ``block`` times in a row and keeps all but the
    first call: the steady state of calling one op repeatedly (as a training loop does), where
    the allocator hands a large output the block its previous call freed. Call-by-call
    interleaving instead lets other rows' allocations decide whether a large output lands in
    fresh pages (measured: ``torch.zeros`` of 29 MB took 1.5 or 8.4 ms depending on its neighbours).
    """
    start = time.perf_counter()
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    per_round = (time.perf_counter() - start) / warmup * block
    rounds = max(rounds, min(2000, int(min_seconds / max(per_round, 1e-9))))  # cheap rows get more rounds
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            for call in range(block):
                t0 = time.perf_counter()
                fn()
                if call or block == 1:
                    times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def ort_session(model_bytes: bytes, threads: int):
    """An ORT CPU session with ``threads`` intra-op threads, full optimisation and no thread spinning."""
    from export_tools.runtimes.ort import NO_SPINNING
    from export_tools.runtimes.ort import ort_session as make_session

    return make_session(model_bytes, config=NO_SPINNING, threads=threads)


def ort_runner(model_bytes: bytes, threads: int, *arrays) -> Callable[[], object]:
    """A zero-argument callable running the model on ``arrays`` (fed by position)."""
    session = ort_session(model_bytes, threads)
    feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
    return lambda: session.run(None, feeds)


def exp_floor_model(shape: tuple[int, ...]) -> bytes:
    """A one-node ONNX ``Exp`` over a float32 tensor of ``shape``: the exp-bound floor."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node("Exp", ["x"], ["y"])], "exp_floor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def machine() -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}; python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )
