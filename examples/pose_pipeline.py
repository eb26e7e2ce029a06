"""A deployable top-down pose head: train, export ONE ONNX file (images + boxes in, frame keypoints out), check.

    python examples/pose_pipeline.py [--steps 600] [--quick] [--emit function|inline|both] [--out pose.onnx]

Top-down setting, simulated with synthetic data only (no downloads). A person detector gives a box in a
720x1280 frame; the box (aspect 3:4, random position and size, 96 to 400 px tall) is warped to the 64x48
network input; the network predicts K=5 heatmaps at stride 4 (16x12); the keypoints are decoded and mapped
back to frame pixels through the box. The "person" is a 5-joint articulated chain (bones of random length
at random-walk angles, scaled and placed at random inside the box), drawn as grey limbs with a differently
coloured disc at each joint on a noisy background of random tint. The crop is rendered directly in input
pixels, which is what an exact warp of the frame would give; the ground truth lives in frame pixels, and
every error below is in frame pixels.

The exported graph holds the whole post-processing, as kpx nodes::

    images (B, 3, 64, 48), boxes (B, 4) xywh  ->  network  ->  heatmaps (B, 5, 16, 12)
        ->  kpx.DecodeHeatmaps(refine=dark)  ->  kpx.HeatmapToImage(boxes, udp)  ->  keypoints (B, 5, 2), scores (B, 5)

with a dynamic batch (exported at B=2, run at B=1 and on the whole held-out set). ``--emit function``
(default) keeps one kpx node per op with its ONNX function body attached; ``--emit inline`` writes standard
ONNX only; ``both`` writes and checks both files.

Encoding and decoding are UDP throughout (Huang et al., CVPR 2020), chosen so that nothing but the network
limits the sub-pixel accuracy:

- training targets: ``gaussian_heatmaps(..., subpixel=True)``, the Gaussian centred at the exact sub-pixel
  keypoint. MSRA targets (``subpixel=False``) centre it at ``floor(p + 0.5)``: the network learns the
  rounded position, an error of up to 0.5 heatmap px per axis (~14 frame px for the largest boxes) that no
  decoder can undo, and DARK would refine a quantised target;
- box <-> heatmap: pixel centres at integer coordinates, so the ``W`` heatmap columns span the box width in
  ``W - 1`` intervals (``x_hm = (x - x0) * (W - 1) / w``), and ``heatmap_to_image(..., scale_mode="udp")``
  inverts exactly that (``x = x0 + x_hm * w / (W - 1)``). Pairing UDP targets with ``scale_mode="msra"``
  (``w / W``) would shrink every keypoint towards the box corner by 11/12 in x and 15/16 in y.

Joints stay >= 2.2 heatmap px from the heatmap edges (``MARGIN``; the person fills the middle of the box,
as after mmpose's 1.25 box padding). kpx's DARK narrows its blur near the heatmap edges so that it never
reads beyond the map (docs/spec.md; a padded blur pulls a peak near the edge towards it), so the margin is
not needed for accuracy any more; it keeps the example's synthetic people inside their boxes. The round trip
printed first (exact targets -> DARK -> frame) measures the conventions alone.

The script prints that round trip, trains for ``--steps`` steps (fresh samples every step, fixed seed),
exports, runs the file on ONNX Runtime CPU and prints:

- PyTorch vs ORT: max |diff| of the frame keypoints (and the scores) over the held-out crops;
- the mean keypoint error against the ground truth in frame pixels, for the ORT graph (DARK) and, for
  context, the same network decoded in PyTorch with ``refine="none"`` and ``"quarter"``, and the trivial
  baseline that puts every keypoint at the box centre.

Exit status 1 if PyTorch and ORT differ by more than ``TOLERANCE`` px, or if the DARK error is not below
``MAX_ERROR_RATIO`` times the baseline (training failed to learn).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import custom_ops
from custom_ops.registry import DEFAULT_OPSET
from export_tools import EMIT_MODES, export, kpx_nodes

FRAME = (720, 1280)  # H, W of the image frame the boxes and the ground truth live in
INPUT = (64, 48)  # H, W of the network input (the warped crop)
HEATMAP = (16, 12)  # H, W of the heatmaps (stride 4)
KEYPOINTS = 5
SIGMA = 1.0  # target sigma in heatmap pixels (~4 input pixels)
BLUR_KERNEL = 5  # DARK blur sigma 0.3 * (2 - 1) + 0.8 = 1.1, matched to SIGMA as mmpose does (sigma 2 -> 11)
MARGIN = (0.2, 0.15)  # (x, y) fraction of the crop kept free of joints: >= 2.2 heatmap px from every edge
BLOB_SIGMA = 2.0  # joint disc size in input pixels
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.2, 1.0], [1.0, 0.9, 0.1], [0.9, 0.1, 1.0]])
TOLERANCE = 1e-2
"""PyTorch vs ORT, frame pixels. The graph is float32; one ulp of a coordinate near 1280 px is 1.2e-4 px. The
network's heatmaps differ by ~1e-6 between the runtimes (convolution summation order), and DARK's Newton
step ``-H^-1 g`` divides such differences by the determinant of the log-map Hessian: on weak, flat peaks of a
briefly trained network (det ~1e-3) they grow to ~1e-4 heatmap px, and the box scale (up to 27 frame px per
heatmap px) makes that ~3e-3 px (measured: 1.8e-3 px after 30 steps, 7e-4 px after 100, 1.2e-4 px = 1 ulp
after 600). 1e-2 px keeps a 3x margin over that and is still 1/2700 of a heatmap px; any real mismatch (a
box format or scale mode, an argmax on another pixel) is >= 1 frame px."""
SCORE_TOLERANCE = 1e-4
"""PyTorch vs ORT for the scores, the heatmap maxima (values ~1): the network's float32 output differs by ~1e-6."""
MAX_ERROR_RATIO = 0.5
"""Training learned if the DARK error is below this fraction of the box-centre baseline (the default run gets
~0.05, ``--quick`` ~0.2; 0.5 already needs keypoints found near their own joints, not just near the person)."""


def make_batch(n: int, generator: torch.Generator) -> dict[str, Tensor]:
    """``n`` synthetic crops: ``images (n, 3, 64, 48)``, ``boxes (n, 4)`` xywh in frame pixels,
    ``keypoints (n, K, 2)`` ground truth in frame pixels and ``heatmap_keypoints (n, K, 2)`` (UDP)."""
    h_in, w_in = INPUT
    extent = torch.tensor([w_in - 1.0, h_in - 1.0])  # (x, y): UDP, input pixel centres 0 .. W-1 span the box
    # the articulated chain: bones of length 0.7 to 1.3 at a random-walk angle, root at 0 ...
    turns = (torch.rand(n, KEYPOINTS - 1, generator=generator) - 0.5) * 2.4
    angles = torch.rand(n, 1, generator=generator) * 2 * math.pi + turns.cumsum(1)
    lengths = torch.rand(n, KEYPOINTS - 1, 1, generator=generator) * 0.6 + 0.7
    bones = lengths * torch.stack([angles.cos(), angles.sin()], -1)
    chain = torch.cat([torch.zeros(n, 1, 2), bones.cumsum(1)], 1)  # (n, K, 2)
    # ... scaled (60-100% of the largest fit) and placed at random inside the crop less MARGIN
    low, span = chain.amin(1, keepdim=True), chain.amax(1, keepdim=True) - chain.amin(1, keepdim=True)
    room = extent * (1 - 2 * torch.tensor(MARGIN))
    fit = (room / span.clamp(min=1e-3)).amin(-1, keepdim=True)  # the largest scale that fits
    scale = fit * (torch.rand(n, 1, 1, generator=generator) * 0.4 + 0.6)
    corner = extent * torch.tensor(MARGIN) + torch.rand(n, 1, 2, generator=generator) * (room - span * scale)
    joints = corner + (chain - low) * scale  # (n, K, 2) in input pixels
    unit = joints / extent  # position in the box, 0 .. 1

    # the detector's box in the frame: aspect 3:4 (the input's), random size and position
    box_h = torch.rand(n, 1, generator=generator) * 304.0 + 96.0
    size = torch.cat([box_h * (w_in / h_in), box_h], 1)
    origin = torch.rand(n, 2, generator=generator) * (torch.tensor([FRAME[1], FRAME[0]]) - size)
    boxes = torch.cat([origin, size], 1)
    keypoints = origin.unsqueeze(1) + unit * size.unsqueeze(1)
    heatmap_keypoints = unit * torch.tensor([HEATMAP[1] - 1.0, HEATMAP[0] - 1.0])

    # the crop: tinted noise, grey limbs (distance to each bone segment), a coloured disc per joint
    first, bone = joints[:, :-1, None, None], (joints[:, 1:] - joints[:, :-1])[:, :, None, None]  # (n, K-1, 1, 1, 2)
    dx = torch.arange(w_in, dtype=torch.float32) - first[..., 0]  # (n, K-1, 1, W): per axis, broadcast to (H, W)
    dy = torch.arange(h_in, dtype=torch.float32).view(h_in, 1) - first[..., 1]  # (n, K-1, H, 1)
    ex, ey = bone[..., 0], bone[..., 1]
    t = ((dx * ex + dy * ey) / (ex * ex + ey * ey).clamp(min=1e-6)).clamp(0, 1)  # nearest point on the segment
    squared = ((dx - t * ex) ** 2 + (dy - t * ey) ** 2).amin(1, keepdim=True)  # (n, 1, H, W), nearest bone
    limbs = 0.5 * torch.exp(squared * (-0.5 / 1.2**2))
    discs, _ = custom_ops.gaussian_heatmaps(joints, INPUT, BLOB_SIGMA, subpixel=True)
    images = torch.einsum("nkhw,kc->nchw", discs, COLOURS) + limbs
    images = images + 0.3 * torch.rand(n, 3, 1, 1, generator=generator)
    images = images + 0.15 * torch.randn(n, 3, h_in, w_in, generator=generator)
    return {"images": images, "boxes": boxes, "keypoints": keypoints, "heatmap_keypoints": heatmap_keypoints}


class PoseNet(nn.Module):
    """images ``(B, 3, 64, 48)`` -> heatmaps ``(B, K, 16, 12)``: two stride-2 convs, two at stride 4, a 1x1 head."""

    def __init__(self, keypoints: int = KEYPOINTS, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(
            *block(3, 32, stride=2),
            *block(32, width, stride=2),
            *block(width, width),
            *block(width, width, dilation=2),
            nn.Conv2d(width, keypoints, 1),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class PosePipeline(nn.Module):
    """``(images (B, 3, H, W), boxes (B, 4) xywh)`` -> ``(keypoints (B, K, 2)`` in frame pixels, ``scores (B, K))``."""

    def __init__(self, net: nn.Module, refine: str = "dark") -> None:
        super().__init__()
        self.net = net
        self.decode = custom_ops.DecodeHeatmaps(refine=refine, blur_kernel=BLUR_KERNEL)
        self.to_image = custom_ops.HeatmapToImage(HEATMAP, box_format="xywh", scale_mode="udp")

    def forward(self, images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        keypoints, scores = self.decode(self.net(images))
        return self.to_image(keypoints, boxes), scores


def mean_error(predicted: Tensor | np.ndarray, truth: Tensor) -> float:
    """Mean Euclidean distance in frame pixels over all samples and keypoints."""
    return float((torch.as_tensor(predicted) - truth).norm(dim=-1).mean())


def train(net: PoseNet, steps: int, batch: int, seed: int) -> tuple[float, float, float]:
    """Adam with a one-cycle schedule, MSE to UDP targets, fresh samples every step; (seconds, first, last loss)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=max(steps, 1), pct_start=0.15)
    net.train()
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        data = make_batch(batch, generator)
        targets, _ = custom_ops.gaussian_heatmaps(data["heatmap_keypoints"], HEATMAP, SIGMA, subpixel=True)
        loss = ((net(data["images"]) - targets) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    net.eval()
    window = max(1, min(10, steps // 5))
    return elapsed, sum(losses[:window]) / window, sum(losses[-window:]) / window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a tiny top-down pose head, export it with kpx, check on ORT.")
    parser.add_argument("--steps", type=int, default=600, help="training steps (batch --batch each)")
    parser.add_argument("--quick", action="store_true", help="a short run: 100 steps, 64 evaluation samples")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=256)
    parser.add_argument("--emit", choices=[*EMIT_MODES, "both"], default=EMIT_MODES[0])
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--out", type=Path, default=None, help="output .onnx (default: a temporary file)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ORT CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_samples = 100, 64
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    held_out = make_batch(args.eval_samples, torch.Generator().manual_seed(args.seed + 1))
    truth, boxes = held_out["keypoints"], held_out["boxes"]

    # the conventions alone: exact UDP targets, decoded with DARK and mapped back through the box
    targets, _ = custom_ops.gaussian_heatmaps(held_out["heatmap_keypoints"], HEATMAP, SIGMA, subpixel=True)
    decoded, _ = custom_ops.decode_heatmaps(targets, refine="dark", blur_kernel=BLUR_KERNEL)
    round_trip = mean_error(custom_ops.heatmap_to_image(decoded, boxes, HEATMAP, scale_mode="udp"), truth)
    print(f"targets: UDP (subpixel) sigma {SIGMA} on {HEATMAP[0]}x{HEATMAP[1]} heatmaps; encode -> DARK -> frame "
          f"round trip on exact targets: {round_trip:.3f} px mean")  # fmt: skip

    net = PoseNet()
    seconds, first, last = train(net, args.steps, args.batch, args.seed)
    print(f"trained {args.steps} steps x {args.batch} samples on CPU (threads={args.threads}): {seconds:.1f} s, "
          f"loss {first:.2e} -> {last:.2e}")  # fmt: skip

    pipeline = PosePipeline(net).eval()
    with torch.no_grad():
        expected, expected_scores = pipeline(held_out["images"], boxes)
        others = {refine: PosePipeline(net, refine)(held_out["images"], boxes)[0] for refine in ("none", "quarter")}

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    emits = list(EMIT_MODES) if args.emit == "both" else [args.emit]
    worst, worst_scores, deployed = 0.0, 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp) / "pose_pipeline.onnx"
        for emit in emits:
            path = base if emit == emits[0] else base.with_name(f"{base.stem}_{emit}{base.suffix}")
            example = (held_out["images"][:2], boxes[:2])  # exported at B=2, run at other batch sizes
            proto = export(pipeline, example, path, opset=args.opset, emit=emit,
                           dynamic_shapes=({0: "batch"}, {0: "batch"}), input_names=["images", "boxes"],
                           output_names=["keypoints", "scores"])  # fmt: skip
            ops = [n.op_type for n in kpx_nodes(proto)]
            inputs = ", ".join(f"{i.name} {[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]}"
                               for i in proto.graph.input)  # fmt: skip
            print(f"exported {path.name} (emit={emit}, opset {args.opset}): inputs {inputs}; "
                  f"kpx nodes: {ops or 'none (inlined)'}")  # fmt: skip
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feeds = {"images": held_out["images"].numpy(), "boxes": boxes.numpy()}
            keypoints, scores = session.run(None, feeds)
            single, _ = session.run(None, {name: value[:1] for name, value in feeds.items()})
            diff = float(np.abs(keypoints - expected.numpy()).max())
            diff_single = float(np.abs(single - expected[:1].numpy()).max())
            diff_scores = float(np.abs(scores - expected_scores.numpy()).max())
            worst = float(np.max([worst, diff, diff_single]))  # NaN propagates (and fails)
            worst_scores = float(np.max([worst_scores, diff_scores]))
            deployed.append(mean_error(keypoints, truth))
            print(f"  PyTorch vs ORT CPU: keypoints max |diff| {diff:.2e} px at B={len(keypoints)}, {diff_single:.2e} "
                  f"px at B=1; scores max |diff| {diff_scores:.2e}; ORT DARK error {deployed[-1]:.2f} px")  # fmt: skip

    dark = max(deployed)  # the deployed graph's error (the same in both emit modes, up to the parity)
    centre = (boxes[:, :2] + boxes[:, 2:] / 2).unsqueeze(1).expand_as(truth)
    baseline = mean_error(centre, truth)
    print(f"mean keypoint error over {len(truth)} held-out crops, frame px (one heatmap px ~ "
          f"{float(boxes[:, 3].mean()) / (HEATMAP[0] - 1):.1f} px): ORT dark {dark:.2f}; PyTorch quarter "
          f"{mean_error(others['quarter'], truth):.2f}, none {mean_error(others['none'], truth):.2f}; "
          f"box-centre baseline {baseline:.2f}")  # fmt: skip
    parity = "PASS" if worst <= TOLERANCE and worst_scores <= SCORE_TOLERANCE else "FAIL"
    learned = "PASS" if dark < MAX_ERROR_RATIO * baseline else "FAIL"  # NaN fails
    print(f"parity: keypoints max |diff| {worst:.2e} px (tolerance {TOLERANCE:.0e}), scores {worst_scores:.2e} "
          f"(tolerance {SCORE_TOLERANCE:.0e}): {parity}; learning: dark / baseline {dark / baseline:.3f} "
          f"(must be < {MAX_ERROR_RATIO}): {learned}")  # fmt: skip
    return 0 if parity == learned == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
