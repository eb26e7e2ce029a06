"""What running the runtimes in worker processes costs a parity check.

Run: ``python benchmarks/bench_isolation.py [--rounds 7]``. Times ``check_parity`` of the DSNT head of
``examples/dsnt_head.py`` (exported once, batch 2 at 128x96 and 8 at 256x192) on ORT CPU, in this process
and isolated (a worker reused across checks, as a test suite or a loop of checks runs), alternating, and
prints the medians and their ratio; then the first isolated check in a fresh process (the worker starts:
the cost ``kpx check`` pays once).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from _common import machine  # noqa: E402
from dsnt_head import DSNTHead  # noqa: E402

from export_tools import to_onnx  # noqa: E402
from export_tools.parity import check_parity  # noqa: E402

COLD = """
import sys, time, torch
sys.path[:0] = [{root!r}, {examples!r}]
from dsnt_head import DSNTHead
from export_tools.parity import check_parity
model, x, onnx_bytes = DSNTHead().eval(), torch.randn({shape}), open({path!r}, "rb").read()
check_parity(model, (x,), model=onnx_bytes, isolate=False, resized=False)  # warm the in-process path first
t0 = time.perf_counter()
check_parity(model, (x,), model=onnx_bytes, resized=False)
print(time.perf_counter() - t0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(machine())
    torch.manual_seed(0)
    model = DSNTHead().eval()
    print(f"{'inputs':<16} {'in-process ms':>14} {'isolated ms':>12} {'ratio':>7} {'first isolated check ms':>24}")
    for shape in [(2, 3, 128, 96), (8, 3, 256, 192)]:
        x = torch.randn(shape)
        onnx_bytes = to_onnx(model, (x,), dynamic_shapes=({0: "B", 2: "H", 3: "W"},)).SerializeToString()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds + 1):  # the first round warms both paths (and starts the worker)
            for isolate in (False, True):
                t0 = time.perf_counter()
                report = check_parity(model, (x,), model=onnx_bytes, isolate=isolate, resized=False)
                times[isolate].append(time.perf_counter() - t0)
                assert report.passed, report.table()
        plain, isolated = (statistics.median(times[k][1:]) * 1e3 for k in (False, True))
        path = Path(f"/tmp/kpx_bench_isolation_{shape[0]}.onnx")
        path.write_bytes(onnx_bytes)
        code = COLD.format(root=str(ROOT), examples=str(ROOT / "examples"), shape=shape, path=str(path))
        cold = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        label = "x".join(map(str, shape))
        print(f"{label:<16} {plain:>14.1f} {isolated:>12.1f} {isolated / plain:>6.2f}x {cold * 1e3:>24.1f}")


if __name__ == "__main__":
    main()
