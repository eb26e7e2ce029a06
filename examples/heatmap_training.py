"""Training targets in a data pipeline: gaussian_heatmaps in DataLoader workers and on the device.

    python examples/heatmap_training.py [--samples 384] [--workers 2] [--steps 40] [--device auto]

Synthetic data only (no downloads): each sample is an image with K bright blobs
at random keypoints (some invisible, some off the map). Two ways to render
the training targets, both shown:

1. In DataLoader workers, per sample, on CPU tensors (``__getitem__`` returns
   heatmaps and weights ready to batch).
2. In the training step, for the whole batch at once, on the training device
   (CUDA when available): one call, no Python loop over keypoints. On CUDA the
   call runs under ``torch.cuda.set_sync_debug_mode("error")``, which raises on
   any host synchronisation inside it.

The script checks that both give the same targets, trains a small heatmap
network for a few steps with the weighted MSE loss used by MSRA/HRNet-style
heads, and prints throughput and the loss.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import custom_ops

IMAGE = (3, 128, 96)  # C, H, W of the input images
HEATMAP = (32, 24)  # H, W of the heatmaps (stride 4)
KEYPOINTS = 17
SIGMA = 2.0


class SyntheticKeypoints(Dataset):
    """Images with a Gaussian blob at each visible keypoint; keypoints in heatmap pixels."""

    def __init__(self, samples: int, render_in_worker: bool, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        h, w = HEATMAP
        # mostly on the map, a few just off it (partly drawn windows) and some invisible
        self.keypoints = torch.rand(samples, KEYPOINTS, 2, generator=g) * torch.tensor([w + 4.0, h + 4.0]) - 2.0
        self.visibility = (torch.rand(samples, KEYPOINTS, generator=g) > 0.15).float()
        self.render_in_worker = render_in_worker

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        kp, vis = self.keypoints[i], self.visibility[i]
        # the image: one blob per visible keypoint, drawn at image resolution
        stride = IMAGE[1] / HEATMAP[0]
        blobs, _ = custom_ops.gaussian_heatmaps(
            (kp[None] + 0.5) * stride - 0.5, IMAGE[1:], 2 * stride, visibility=vis[None], subpixel=True
        )
        image = blobs[0].amax(0, keepdim=True).expand(IMAGE).contiguous() + 0.05 * torch.randn(IMAGE)
        item = {"image": image, "keypoints": kp, "visibility": vis}
        if self.render_in_worker:  # 1. targets rendered here, in the worker process, on CPU tensors
            heatmaps, weights = custom_ops.gaussian_heatmaps(kp[None], HEATMAP, SIGMA, visibility=vis[None])
            item |= {"heatmaps": heatmaps[0], "weights": weights[0]}
        return item


class TinyPoseNet(nn.Module):
    """images (B, 3, 128, 96) -> heatmaps (B, K, 32, 24)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, KEYPOINTS, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MSRA/HRNet JointsMSELoss: per-keypoint MSE, masked by the target weights."""
    return (((pred - target) ** 2).mean((2, 3)) * weights).mean()


def no_sync_guard(device: torch.device):
    """Raises on any host synchronisation inside the block (CUDA only)."""
    if device.type != "cuda":
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def guard():
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)

    return guard()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gaussian_heatmaps in a data pipeline and a training step.")
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    torch.manual_seed(0)

    # 1. targets rendered in DataLoader workers (CPU tensors)
    loader = DataLoader(SyntheticKeypoints(args.samples, render_in_worker=True), batch_size=args.batch,
                        num_workers=args.workers, shuffle=False)  # fmt: skip
    start = time.perf_counter()
    batches = list(loader)
    elapsed = time.perf_counter() - start
    print(f"1. {args.samples} samples through {args.workers} DataLoader workers, targets rendered per sample: "
          f"{args.samples / elapsed:.0f} samples/s")  # fmt: skip

    # 2. the same targets rendered per batch on the training device, inside the step
    worst = 0.0
    for batch in batches:
        kp, vis = batch["keypoints"].to(device), batch["visibility"].to(device)
        with no_sync_guard(device):
            heatmaps, weights = custom_ops.gaussian_heatmaps(kp, HEATMAP, SIGMA, visibility=vis)
        worst = max(worst, (heatmaps.cpu() - batch["heatmaps"]).abs().max().item())
        assert torch.equal(weights.cpu(), batch["weights"]), "weights differ between worker and device rendering"
    guard = "no host sync (set_sync_debug_mode='error')" if device.type == "cuda" else "CUDA not available: on CPU"
    print(f"2. batched rendering on {device} ({guard}): max |diff| vs worker targets {worst:.1e}")
    if worst > 1e-6:
        print("FAIL: worker and batched targets differ")
        return 1

    # a short training run with device-side targets
    model = TinyPoseNet().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    start = time.perf_counter()
    for step in range(args.steps):
        batch = batches[step % len(batches)]
        images = batch["image"].to(device, non_blocking=True)
        kp, vis = batch["keypoints"].to(device), batch["visibility"].to(device)
        targets, weights = custom_ops.gaussian_heatmaps(kp, HEATMAP, SIGMA, visibility=vis)
        loss = weighted_mse(model(images), targets, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"3. {args.steps} training steps on {device}: {args.steps * args.batch / elapsed:.0f} samples/s, "
          f"loss {first:.2e} -> {last:.2e}")  # fmt: skip
    return 0 if last < first else 1


if __name__ == "__main__":
    raise SystemExit(main())
