"""Frames in, keypoints out: an RTMPose-style model exported with its crop and its SimCC decoding as one file.

A top-down pose model is deployed as: detector boxes -> pad each box and fix its aspect ratio -> affine-crop
the frame to the network's input size -> network -> decode -> map back to the frame. This example trains a
small RTMPose-style model (a conv backbone and a SimCC head, split ratio 2) on synthetic frames with several
people each, in under a minute on a CPU, then exports it with::

    kpx export examples/rtmpose.py:make --weights rtmpose.pt --input images:2x3x64x48 \\
        --decode simcc --crop 48x64 --boxes xyxy -o rtmpose.onnx

into one file ``frames (1, 3, H, W), boxes (N, 4) -> keypoints (N, K, 2), scores (N, K)`` in frame pixels: the
crop (``kpx.TopdownCrop``, mmpose's ``bbox_xyxy2cs`` with padding 1.25, aspect fix, affine warp), the network,
``kpx.DecodeSimCC`` and ``kpx.HeatmapToImage`` (the crop's centre/scale, so frame -> crop -> frame is one
definition). It runs the file on ONNX Runtime on held-out frames (and, for ``--emit inline``, on OpenVINO when
installed), and prints:

- the PyTorch vs ONNX Runtime keypoint difference in frame pixels;
- the mean error against the ground truth in frame pixels for ``--decode simcc`` and ``simcc:dark``;
- a baseline for scale: every keypoint at its box's centre.

No downloads: the people are coloured discs (one colour per joint) joined by grey limbs, on noise. Exit status 1
if PyTorch and a runtime differ by more than ``TOLERANCE`` px or if the decoded error is not well below the
baseline.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import custom_ops

KEYPOINTS = 5
FRAME = (240, 320)  # (H, W) of the frames
INPUT = (48, 64)  # (w, h) of the network input, mmpose's order: crops are (N, 3, 64, 48)
SPLIT = 2.0  # SimCC bins per input pixel: Lx = 96, Ly = 128
SIGMA = (2.4, 2.8)  # SimCC label sigma in bins (x, y), RTMPose's sigma scaled to this input size
PEOPLE = 3  # per frame
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.2, 1.0], [1.0, 1.0, 0.1], [1.0, 0.1, 1.0]])
TOLERANCE = 1e-2
"""PyTorch vs runtime, frame pixels: the decoded bin is exact; what differs is the float32 rounding of the crop
(~1e-6 of the frame values), the network, and the mapping back (frame coordinates ~300 px: ulp 3e-5)."""
MAX_ERROR_RATIO = 0.5
"""Training learned if the decoded error is below this fraction of the box-centre baseline."""


def make_frames(frames: int, generator: torch.Generator) -> dict[str, Tensor]:
    """``frames (F, 3, H, W)`` with ``PEOPLE`` people each, their ``keypoints (F, P, K, 2)`` and detector
    ``boxes (F, P, 4)`` xyxy (the joints' bounding box, grown by 10-30% and shifted a little, as a detector's)."""
    height, width = FRAME
    n = frames * PEOPLE
    turns = (torch.rand(n, KEYPOINTS - 1, generator=generator) - 0.5) * 2.0
    angles = torch.rand(n, 1, generator=generator) * 2 * math.pi + turns.cumsum(1)
    bones = (torch.rand(n, KEYPOINTS - 1, 1, generator=generator) * 0.5 + 0.75) * torch.stack(
        [angles.cos(), angles.sin()], -1
    )
    chain = torch.cat([torch.zeros(n, 1, 2), bones.cumsum(1)], 1)  # (n, K, 2)
    size = torch.rand(n, 1, 1, generator=generator) * 40.0 + 30.0  # bone length 30-70 px / K
    chain = (chain - chain.mean(1, keepdim=True)) * size / 2.0
    centre = torch.stack([torch.rand(n, generator=generator) * (width - 100) + 50,
                          torch.rand(n, generator=generator) * (height - 100) + 50], -1)  # fmt: skip
    keypoints = chain + centre[:, None]
    low, high = keypoints.amin(1), keypoints.amax(1)
    grow = (high - low).clamp(min=8.0) * (torch.rand(n, 2, generator=generator) * 0.2 + 0.1)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.1 * (high - low)
    boxes = torch.cat([low - grow + shift, high + grow + shift], -1)

    # render: per person, coloured discs at the joints and grey limbs, max over people, on tinted noise
    points = keypoints.view(frames, PEOPLE * KEYPOINTS, 2)
    discs, _ = custom_ops.gaussian_heatmaps(points, FRAME, 2.5, subpixel=True)  # (F, P*K, H, W)
    colours = COLOURS.repeat(PEOPLE, 1)
    images = torch.einsum("fkhw,kc->fchw", discs, colours)
    first = keypoints[:, :-1].reshape(frames, -1, 2)[..., None, None, :]
    bone = (keypoints[:, 1:] - keypoints[:, :-1]).reshape(frames, -1, 2)[..., None, None, :]
    dx = torch.arange(width, dtype=torch.float32) - first[..., 0]
    dy = torch.arange(height, dtype=torch.float32).view(height, 1) - first[..., 1]
    ex, ey = bone[..., 0], bone[..., 1]
    t = ((dx * ex + dy * ey) / (ex * ex + ey * ey).clamp(min=1e-6)).clamp(0, 1)
    squared = ((dx - t * ex) ** 2 + (dy - t * ey) ** 2).amin(1, keepdim=True)
    images = images + 0.5 * torch.exp(squared * (-0.5 / 1.5**2))
    images = images + 0.1 * torch.rand(frames, 3, height, width, generator=generator)
    return {"frames": images * 255.0, "keypoints": keypoints.view(frames, PEOPLE, KEYPOINTS, 2),
            "boxes": boxes.view(frames, PEOPLE, 4)}  # fmt: skip


class RTMPoseLike(nn.Module):
    """crops ``(N, 3, 64, 48)`` -> ``simcc_x (N, K, 96)``, ``simcc_y (N, K, 128)``: a stride-8 conv backbone,
    a 1x1 conv to K maps, each map flattened into a per-keypoint vector, an MLP and two linear classifiers
    (RTMCC's layout, without its gated attention unit)."""

    def __init__(self, keypoints: int = KEYPOINTS, width: int = 48, hidden: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.backbone = nn.Sequential(*block(3, 32, 2), *block(32, width, 2), *block(width, width, 1),
                                      *block(width, width, 2), *block(width, width, 1))  # fmt: skip
        self.to_keypoints = nn.Conv2d(width, keypoints, 1)
        cells = (INPUT[1] // 8) * (INPUT[0] // 8)
        self.mlp = nn.Sequential(nn.Linear(cells, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.cls_x = nn.Linear(hidden, int(INPUT[0] * SPLIT))
        self.cls_y = nn.Linear(hidden, int(INPUT[1] * SPLIT))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.mlp(self.to_keypoints(self.backbone(images / 255.0)).flatten(2))  # (N, K, hidden)
        return self.cls_x(features), self.cls_y(features)


def make() -> nn.Module:
    """The model factory ``kpx export examples/rtmpose.py:make --weights ...`` loads (untrained weights)."""
    return RTMPoseLike().eval()


def crop_targets(pool: dict[str, Tensor], frames: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Every person of ``frames`` random frames of the pool, cropped through jittered boxes (scale and position,
    as a detector's boxes vary): crops ``(frames * PEOPLE, 3, 64, 48)`` and the ground truth in crop pixels."""
    pick = torch.randperm(pool["frames"].shape[0], generator=generator)[:frames]
    box = pool["boxes"][pick].reshape(-1, 4)
    people = box.shape[0]
    size = box[:, 2:] - box[:, :2]
    centre = (box[:, :2] + box[:, 2:]) / 2 + (torch.rand(people, 2, generator=generator) - 0.5) * 0.2 * size
    size = size * (torch.rand(people, 1, generator=generator) * 0.3 + 0.85)
    box = torch.cat([centre - size / 2, centre + size / 2], 1)
    index = torch.arange(frames).repeat_interleave(PEOPLE)
    crops, centre_scale = custom_ops.topdown_crop(pool["frames"][pick], box, index, input_size=INPUT)
    origin = centre_scale[:, None, :2] - 0.5 * centre_scale[:, None, 2:]
    truth = pool["keypoints"][pick].reshape(-1, KEYPOINTS, 2)
    return crops, (truth - origin) / centre_scale[:, None, 2:] * torch.tensor(INPUT, dtype=torch.float32)


def train(net: RTMPoseLike, steps: int, pool: dict[str, Tensor], batch: int, seed: int) -> tuple[float, float, float]:
    """AdamW, RTMPose's KL loss on normalised SimCC labels (``simcc_targets``); (seconds, first, last loss)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=4e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=4e-3, total_steps=max(steps, 1), pct_start=0.2)
    net.train()
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        with torch.no_grad():
            crops, truth = crop_targets(pool, max(1, batch // PEOPLE), generator)
            tx, ty, weights = custom_ops.simcc_targets(truth, INPUT, SIGMA, split_ratio=SPLIT)
        px, py = net(crops)
        loss = torch.zeros(())
        for logits, target in ((px, tx), (py, ty)):
            label = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
            loss = loss - ((label * torch.log_softmax(logits, -1)).sum(-1) * weights).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    net.eval()
    window = max(1, min(10, steps // 5))
    return time.perf_counter() - start, sum(losses[:window]) / window, sum(losses[-window:]) / window


def export(weights: Path, out: Path, decode: str, emit: str) -> None:
    """The CLI call a user makes (the same Python, as a subprocess)."""
    command = [sys.executable, "-m", "export_tools", "export", f"{Path(__file__).resolve()}:make",
               "--weights", str(weights), "--input", "images:2x3x64x48", "--decode", decode,
               "--simcc-sigma", *map(str, SIGMA), "--split-ratio", str(SPLIT),
               "--crop", f"{INPUT[0]}x{INPUT[1]}", "--boxes", "xyxy", "--emit", emit,
               "-o", str(out), "--force"]  # fmt: skip
    print("$ kpx export " + " ".join(command[4:]).replace(str(Path(__file__).resolve()), "examples/rtmpose.py"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"kpx export failed ({result.returncode}): {result.stderr.strip()}")
    print(result.stdout.strip())


def run_onnx(path: Path, held_out: dict[str, Tensor], runtime: str) -> list[np.ndarray]:
    """Keypoints ``(P, K, 2)`` per held-out frame, from the file on ``runtime`` ("ort" or "openvino")."""
    feeds = [(data[None].numpy(), boxes.numpy()) for data, boxes in zip(held_out["frames"], held_out["boxes"])]
    if runtime == "ort":
        from export_tools.runtimes.ort import ort_session

        session = ort_session(path.read_bytes())
        return [session.run(["keypoints"], {"frames": f, "boxes": b})[0] for f, b in feeds]
    from export_tools.runtimes import make_runner

    # the project's runner: it compiles at f32 inference precision (OpenVINO's CPU default is bf16 on CPUs with
    # AVX-512 BF16 / AMX, measured here: ~100 px off through the network) and checks that it got it
    runner = make_runner("openvino", path.read_bytes())
    return [runner.run([f, b])[0] for f, b in feeds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train an RTMPose-style model, export frames -> keypoints.")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=30, help="crops per step (every person of batch / 3 frames)")
    parser.add_argument("--pool", type=int, default=64, help="training frames (x3 people), rendered once")
    parser.add_argument("--eval-frames", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a short run (150 steps, 8 evaluation frames)")
    parser.add_argument(
        "--emit",
        choices=("function", "inline", "both"),
        default="both",
        help="kpx nodes with bodies (ORT), standard ONNX only (ORT and OpenVINO), or both",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint and the .onnx files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_frames = 150, 8
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    out = args.out or Path(tempfile.mkdtemp(prefix="kpx-rtmpose-"))
    out.mkdir(parents=True, exist_ok=True)

    net = RTMPoseLike()
    pool = make_frames(args.pool, torch.Generator().manual_seed(args.seed))
    seconds, first, last = train(net, args.steps, pool, args.batch, args.seed)
    print(f"trained {args.steps} steps x {args.batch} crops (from {args.pool} frames) in {seconds:.1f} s: loss "
          f"{first:.3f} -> {last:.3f}")  # fmt: skip
    weights = out / "rtmpose.pt"
    torch.save(net.state_dict(), weights)

    held_out = make_frames(args.eval_frames, torch.Generator().manual_seed(args.seed + 1))
    truth = held_out["keypoints"]
    centres = (held_out["boxes"][..., :2] + held_out["boxes"][..., 2:]) / 2
    baseline = float((centres[:, :, None] - truth).norm(dim=-1).mean())
    print(f"held out: {args.eval_frames} frames {FRAME[1]}x{FRAME[0]}, {PEOPLE} people each, {KEYPOINTS} keypoints; "
          f"baseline (box centre) {baseline:.2f} px")  # fmt: skip

    from export_tools.decoding import PoseDecoder

    status = 0
    errors = {}
    emits = ("function", "inline") if args.emit == "both" else (args.emit,)
    for decode in ("simcc", "simcc:dark"):
        pipeline = PoseDecoder(net, decode, input_size=INPUT, split_ratio=SPLIT, sigma=SIGMA, boxes="xyxy", crop=True)
        with torch.no_grad():
            torch_kp = [pipeline(f[None], b)[0] for f, b in zip(held_out["frames"], held_out["boxes"])]
        for emit in emits:
            path = out / f"rtmpose-{decode.replace(':', '-')}-{emit}.onnx"
            export(weights, path, decode, emit)
            runtimes = ["ort"] + (["openvino"] if emit == "inline" and _has_openvino() else [])
            for runtime in runtimes:
                onnx_kp = run_onnx(path, held_out, runtime)
                diff = max(float(np.abs(o - t.numpy()).max()) for o, t in zip(onnx_kp, torch_kp))
                ok = diff <= TOLERANCE
                status |= not ok
                error = float(np.mean([np.linalg.norm(o - g.numpy(), axis=-1).mean() for o, g in zip(onnx_kp, truth)]))
                errors[decode] = error
                verdict = f"{'PASS' if ok else 'FAIL'}, tolerance {TOLERANCE:g}"
                print(f"{decode:<11} {emit:<8} {runtime:<9} PyTorch vs runtime max |diff| {diff:.2e} px ({verdict}); "
                      f"error vs ground truth {error:.2f} px")  # fmt: skip
    best = min(errors.values())
    learned = best < MAX_ERROR_RATIO * baseline
    status |= not learned
    print(f"error / baseline: none {errors['simcc'] / baseline:.3f}, dark {errors['simcc:dark'] / baseline:.3f} "
          f"({'PASS' if learned else 'FAIL'}: below {MAX_ERROR_RATIO})")  # fmt: skip
    print(f"files in {out}")
    return int(status)


def _has_openvino() -> bool:
    from export_tools.errors import RunnerUnavailableError
    from export_tools.runtimes import get_runner

    try:
        get_runner("openvino").check_available()
    except RunnerUnavailableError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
