"""The op x runtime parity matrix: every registered op on every runtime of the table that can run it here.

Run: ``python benchmarks/edge_matrix.py [--runtimes cpu,openvino,mnn,ncnn,litert,executorch] [--ops a,b]``.

Each op's export sample (registry), exported ``--emit inline --opset 17`` (the file edge runtimes read) and
lowered for the runtime where it has a lowering (``lower_for_target``: mnn, ncnn, litert), run through the
parity harness in worker processes against PyTorch eager; ``executorch`` runs the op lowered from PyTorch
(``ExecuTorchRunner.from_pytorch``). A last row runs a small pose network with ``DecodeHeatmaps(refine="dark")``
and ``HeatmapToImage``. Cells: the largest |diff| over the op's outputs, ``FAIL (why)`` when the runtime cannot
run it (a converter failure, an op it lacks), ``-`` when the runtime is not installed here. The verdict column
of each cell (``ok``/``NO``) is the registry tolerance of the op.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from custom_ops import list_ops  # noqa: E402
from export_tools.errors import RunnerUnavailableError  # noqa: E402
from export_tools.exporter import finalize, trace  # noqa: E402
from export_tools.lowering import LOWERINGS, lower_for_target  # noqa: E402
from export_tools.models import OpModel  # noqa: E402
from export_tools.runtimes import availability, runtime_names  # noqa: E402

RUNTIMES = ("cpu", "openvino", "ort-mobile", "mnn", "ncnn", "litert", "executorch")


class PoseNet(torch.nn.Module):
    """Six convolutions (stride 4) -> 5 heatmaps -> DARK decoding -> frame pixels through a box."""

    def __init__(self) -> None:
        import custom_ops

        super().__init__()
        torch.manual_seed(0)
        layers, c = [], 3
        for i, out in enumerate((16, 16, 32, 32, 32)):
            layers += [torch.nn.Conv2d(c, out, 3, stride=2 if i < 2 else 1, padding=1), torch.nn.ReLU()]
            c = out
        self.net = torch.nn.Sequential(*layers, torch.nn.Conv2d(c, 5, 1))
        self.decode = custom_ops.DecodeHeatmaps(refine="dark", blur_kernel=5)
        self.to_image = custom_ops.HeatmapToImage((12, 16), box_format="xywh", scale_mode="udp")

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keypoints, scores = self.decode(self.net(images))
        return self.to_image(keypoints, boxes), scores


def pose_case() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], tuple, list[str], tuple[float, float]]:
    """The pose network, a peaked example input (blobs where the keypoints are), dynamic batch."""
    g = torch.Generator().manual_seed(0)
    images = 0.1 * torch.randn(2, 3, 64, 48, generator=g)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    for b in range(2):
        for _ in range(5):
            cy, cx = float(torch.randint(8, 56, (1,), generator=g)), float(torch.randint(8, 40, (1,), generator=g))
            images[b] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    boxes = torch.tensor([[10.0, 20.0, 96.0, 128.0], [0.0, 0.0, 48.0, 64.0]])
    dynamic = ({0: "B"}, {0: "B"})
    return PoseNet().eval(), (images, boxes), dynamic, ["images", "boxes"], (1e-4, 1e-3)


def cases(names: list[str] | None):
    """``(name, module, inputs, dynamic_shapes, input_names, (rtol, atol))`` per registered op, then the pose net."""
    for spec in list_ops():
        if names and spec.name not in names:
            continue
        sample = spec.export_sample()
        model = OpModel(spec, sample).eval()
        yield (spec.name, model, model.example_inputs(), model.dynamic_shapes(sample), model.input_names(),
               spec.tolerances[torch.float32])  # fmt: skip
    if not names or "pose_dark" in names:
        yield ("pose_dark", *pose_case())


def run_cell(kind: str, module, inputs, onnx_proto, tolerance) -> str:
    from export_tools.parity import check_parity

    try:
        if kind == "executorch":
            return executorch_cell(module, inputs, tolerance)
        proto = lower_for_target(onnx_proto, kind) if kind in LOWERINGS else onnx_proto
        names = [o.name for o in proto.graph.output]
        report = check_parity(module, {"example": inputs}, runtimes=[kind], model=proto.SerializeToString(),
                              tolerances=dict.fromkeys(names, tolerance), resized=False, localize=False)  # fmt: skip
    except RunnerUnavailableError as exc:
        return f"FAIL ({type(exc).__name__}: {str(exc)[:60]})"
    (case,) = [c for c in report.cases]
    if case.failure:
        detail = case.failure["detail"]
        return f"FAIL ({detail.split('):', 1)[-1].strip()[:90]})"
    worst = max((o.max_abs for o in case.outputs), default=0.0)
    return f"{worst:.1e} {'ok' if case.passed else 'NO'}"


def executorch_cell(module, inputs, tolerance) -> str:
    from export_tools.runtimes.executorch import ExecuTorchRunner
    from export_tools.runtimes.isolation import IsolatedRunner

    pte = ExecuTorchRunner.from_pytorch(module, tuple(inputs))
    outputs = IsolatedRunner("executorch", pte).run([t.numpy() for t in inputs])
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    worst, ok = 0.0, True
    for e, a in zip(expected, outputs, strict=True):
        e = e.numpy()
        if e.size:
            worst = max(worst, float(np.nanmax(np.abs(e.astype(np.float64) - a.astype(np.float64)))))
        ok &= bool(np.allclose(a, e, rtol=tolerance[0], atol=tolerance[1], equal_nan=True))
    return f"{worst:.1e} {'ok' if ok else 'NO'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--ops", help="comma-separated op names (and pose_dark); default all")
    args = p.parse_args(argv)
    kinds = [k for k in args.runtimes.split(",") if k]
    unknown = sorted(set(kinds) - set(runtime_names()))
    if unknown:
        p.error(f"--runtimes {unknown}: not in the runtime table {runtime_names()}")
    present = {k: availability(k) == "available" for k in kinds}
    warnings.filterwarnings("ignore")
    rows = []
    for name, module, inputs, dynamic, input_names, tolerance in cases(args.ops.split(",") if args.ops else None):
        raw = trace(module, tuple(inputs), dynamic_shapes=dynamic, input_names=input_names)
        proto = finalize(raw, opset=17, emit="inline")
        cells = [run_cell(k, module, inputs, proto, tolerance) if present[k] else "-" for k in kinds]
        rows.append((name, cells))
        print(f"{name}: " + " | ".join(cells), file=sys.stderr, flush=True)
    print("| op | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
