"""Soft-argmax speed: kpx vs kornia 0.9, eager and on ONNX Runtime CPU, against the exp floor.

Run: ``python benchmarks/bench_soft_argmax.py [--threads 2] [--rounds 30] [--quick]``.
Prints medians (ms) and ratios from one run; the rows of one size are timed
round-robin (see ``_common.compare``). Targets (issue 2): kpx eager >= 1.5x
faster than kornia eager; the kpx ONNX graph >= 1.3x faster than kornia's
exported graph on ORT, in both emit modes and with dynamic shapes.
"""

from __future__ import annotations

import argparse
import datetime
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _common import compare, exp_floor_model, machine, ort_runner  # noqa: E402

import custom_ops  # noqa: E402
from export_tools import EMIT_MODES, to_onnx  # noqa: E402

SIZES = [(1, 68, 64, 64), (32, 17, 64, 48), (32, 17, 128, 96), (64, 133, 64, 48)]
DYNAMIC = ({0: "B", 1: "N", 2: "H", 3: "W"},)


class KpxHead(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return custom_ops.spatial_soft_argmax2d(x)


class KorniaHead(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.geometry.subpix import spatial_soft_argmax2d

        return spatial_soft_argmax2d(x)


def export_kornia(x: torch.Tensor, dynamic: bool) -> bytes:
    """kornia through torch.onnx as a user would (dynamo exporter, default optimisation)."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        program = torch.onnx.export(KorniaHead(), (x,), dynamo=True, dynamic_shapes=DYNAMIC if dynamic else None)
    return program.model_proto.SerializeToString()


def candidates(x: torch.Tensor, threads: int) -> list[dict]:
    """Every row for one input as zero-argument callables, in groups timed together."""
    xn = x.numpy()
    eager = {
        "kpx eager": lambda: custom_ops.spatial_soft_argmax2d(x),
        "kornia eager": lambda: KorniaHead()(x),
    }
    rows = {}
    for tag, dyn in (("static", None), ("dynamic", DYNAMIC)):
        rows[f"kornia ORT {tag}"] = ort_runner(export_kornia(x, dyn is not None), threads, xn)
        for emit in EMIT_MODES:
            proto = to_onnx(KpxHead(), (x,), emit=emit, dynamic_shapes=dyn)
            rows[f"kpx ORT {emit} {tag}"] = ort_runner(proto.SerializeToString(), threads, xn)
    rows["floor: ORT Exp"] = ort_runner(exp_floor_model(tuple(x.shape)), threads, xn)
    return [eager, rows]


def baseline(row: str) -> str | None:
    """The kornia row a kpx row is compared with."""
    if row == "kpx eager":
        return "kornia eager"
    if row.startswith("kpx ORT"):
        return f"kornia ORT {row.split()[-1]}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="first size only, 3 rounds (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = SIZES[:1] if args.quick else SIZES
    rounds = 3 if args.quick else args.rounds
    torch.manual_seed(0)

    print(f"# soft-argmax, {datetime.date.today()}, float32, {args.threads} threads, {rounds} rounds")
    print(f"# {machine()}")
    print("| (B,N,H,W) | row | median ms | / exp floor | speed-up vs kornia |")
    print("|---|---|---:|---:|---:|")
    worst: dict[str, float] = {}
    for shape in sizes:
        x = torch.randn(*shape) * 3
        ms = {}
        with torch.inference_mode():
            for group in candidates(x, args.threads):
                ms |= compare(group, rounds=rounds)
        floor = ms["floor: ORT Exp"]
        for row, value in ms.items():
            base = baseline(row)
            ratio = ms[base] / value if base else None
            if ratio is not None:
                worst[row] = min(worst.get(row, ratio), ratio)
            shown = f"{ratio:.2f}x" if ratio is not None else ""
            print(f"| {shape} | {row} | {value:.3f} | {value / floor:.2f} | {shown} |")
    print()
    print("# smallest speed-up over kornia across sizes (targets: eager 1.5x, ORT 1.3x)")
    for row, ratio in worst.items():
        target = 1.5 if "eager" in row else 1.3
        print(f"#   {row}: {ratio:.2f}x {'meets target' if ratio >= target else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
