"""A small DSNT keypoint head, exported with kpx and checked on ONNX Runtime.

    python examples/dsnt_head.py [--keypoints 17] [--out dsnt_head.onnx] [--emit function|inline]

Builds conv features -> K heatmap logits -> soft-argmax (learned temperature,
normalized coordinates) -> keypoints ``(B, K, 2)``, exports it with dynamic
batch and image size, runs the file on ONNX Runtime CPU at sizes other than
the export size, and prints the PyTorch vs ORT difference. Exits 1 if the
difference exceeds 1e-5.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import custom_ops
from custom_ops.registry import DEFAULT_OPSET
from export_tools import EMIT_MODES, export, kpx_nodes

TOLERANCE = 1e-5


class DSNTHead(nn.Module):
    """images ``(B, 3, H, W)`` -> keypoints ``(B, K, 2)`` in ``[-1, 1]`` and heatmaps ``(B, K, H/4, W/4)``."""

    def __init__(self, keypoints: int = 17) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, keypoints, 1),
        )
        self.temperature = nn.Parameter(torch.tensor(2.0))  # learned, as in DSNT heads
        self.soft_argmax = custom_ops.SpatialSoftArgmax2d(self.temperature, normalized_coordinates=True)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.features(images)
        heatmaps = custom_ops.spatial_softmax2d(logits, self.temperature)
        return self.soft_argmax(logits), heatmaps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a DSNT keypoint head with kpx and check parity on ORT.")
    parser.add_argument("--keypoints", type=int, default=17)
    parser.add_argument("--out", type=Path, default=None, help="output .onnx (default: a temporary file)")
    parser.add_argument("--emit", choices=EMIT_MODES, default=EMIT_MODES[0])
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = DSNTHead(args.keypoints).eval()
    example = torch.randn(2, 3, 128, 96)
    dynamic = ({0: "batch", 2: "height", 3: "width"},)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or Path(tmp) / "dsnt_head.onnx"
        proto = export(model, (example,), path, opset=args.opset, dynamic_shapes=dynamic, emit=args.emit,
                       input_names=["images"], output_names=["keypoints", "heatmaps"])  # fmt: skip
        ops = sorted({n.op_type for n in kpx_nodes(proto)})
        print(f"exported {path.name}: opset {args.opset}, emit={args.emit}, kpx nodes: {ops or 'none (inlined)'}")

        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst = 0.0
        print(f"{'input (B,3,H,W)':>18} | {'keypoints max |diff|':>20} | {'heatmaps max |diff|':>19}")
        for shape in [(2, 3, 128, 96), (1, 3, 256, 192), (5, 3, 64, 64), (3, 3, 100, 76)]:
            images = torch.randn(*shape)
            with torch.no_grad():
                expected = [t.numpy() for t in model(images)]
            actual = session.run(None, {"images": images.numpy()})
            diffs = [float(np.abs(a - e).max()) for a, e in zip(actual, expected)]
            worst = max(worst, *diffs)
            print(f"{shape!s:>18} | {diffs[0]:20.2e} | {diffs[1]:19.2e}")
    verdict = "PASS" if worst <= TOLERANCE else "FAIL"
    print(f"PyTorch vs ONNX Runtime CPU: max |diff| {worst:.2e} (tolerance {TOLERANCE:.0e}): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
