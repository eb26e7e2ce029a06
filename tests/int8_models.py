"""Small trained pose networks for the INT8 tests and benchmarks (tests/test_quantize.py, benchmarks/bench_int8.py).

Synthetic data only (nothing is downloaded): each image ``(3, 64, 48)`` holds ``K`` coloured Gaussian blobs on a
dark, noisy background, one per keypoint, keypoint ``k`` coloured with hue ``k / K``; the network learns to find
each colour (``K`` = 17 as COCO for the benchmark, 8 in the tests: see :data:`TEST_KEYPOINTS`). Two heads:

- :class:`HeatmapNet`: six convolutions, heatmaps ``(B, K, 32, 24)`` (stride 2), trained with MSE on UDP targets
  (``gaussian_heatmaps(..., subpixel=True)``, sigma 1.5 heatmap px): decode with ``heatmap:dark``, blur kernel 7.
- :class:`SimCCNet`: four convolutions and two linear classifiers, SimCC ``(B, K, 96)``, ``(B, K, 128)`` (split
  ratio 2), trained with cross-entropy on ``simcc_targets`` (sigma 3 bins): decode with ``simcc:dark``.

INT8 comparisons need trained networks: a random network's heatmaps are nearly flat, and on flat maps any rounding
moves the argmax anywhere. :func:`peakedness` says how peaked the maps are (tests assert it).
"""

from __future__ import annotations

import colorsys
import time

import torch
from torch import Tensor, nn

import custom_ops

K = 17
INPUT = (64, 48)  # H, W of the network input
HEATMAP = (32, 24)  # H, W of the heatmaps (stride 2)
HEATMAP_SIGMA = 1.5  # target sigma in heatmap px
BLUR_KERNEL = 7  # DARK's blur: sigma 0.3 * (3 - 1) + 0.8 = 1.4, matched to HEATMAP_SIGMA as mmpose does
SIMCC_SIGMA = 3.0  # label sigma in bins
SPLIT_RATIO = 2.0
BLOB_SIGMA = 1.6  # blob size in input px
MARGIN = 4.0  # keypoints stay this many input px inside the image


def colours(keypoints: int) -> Tensor:
    """``(keypoints, 3)`` RGB colours, hue ``k / keypoints``, full saturation."""
    return torch.tensor([colorsys.hsv_to_rgb(k / keypoints, 1.0, 1.0) for k in range(keypoints)], dtype=torch.float32)


def make_batch(n: int, generator: torch.Generator, keypoints: int = K) -> tuple[Tensor, Tensor]:
    """``images (n, 3, 64, 48)`` and ``keypoints (n, keypoints, 2)`` as ``(x, y)`` in input pixels (pixel centres
    at integers)."""
    h, w = INPUT
    low = torch.tensor([MARGIN, MARGIN])
    span = torch.tensor([w - 1 - 2 * MARGIN, h - 1 - 2 * MARGIN])
    points = low + torch.rand(n, keypoints, 2, generator=generator) * span
    blobs, _ = custom_ops.gaussian_heatmaps(points, INPUT, BLOB_SIGMA, subpixel=True)  # (n, K, h, w), peak 1
    images = torch.einsum("nkhw,kc->nchw", blobs, colours(keypoints))
    images = images + 0.1 * torch.rand(n, 3, 1, 1, generator=generator)
    images = images + 0.05 * torch.randn(n, 3, h, w, generator=generator)
    return images, points


def heatmap_targets(keypoints: Tensor) -> Tensor:
    """UDP targets ``(n, K, 32, 24)``: input pixel ``p`` is heatmap pixel ``p * (w_hm - 1) / (w_in - 1)``."""
    scale = torch.tensor([(HEATMAP[1] - 1) / (INPUT[1] - 1), (HEATMAP[0] - 1) / (INPUT[0] - 1)])
    targets, _ = custom_ops.gaussian_heatmaps(keypoints * scale, HEATMAP, HEATMAP_SIGMA, subpixel=True)
    return targets


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU()]


class HeatmapNet(nn.Module):
    """images ``(B, 3, 64, 48)`` -> heatmaps ``(B, K, 32, 24)``: six convolutions (the last a 1x1 head)."""

    def __init__(self, width: int = 32, keypoints: int = K) -> None:
        super().__init__()
        self.keypoints = keypoints
        self.body = nn.Sequential(
            *_block(3, width), *_block(width, width, stride=2), *_block(width, width),
            *_block(width, width, dilation=2), *_block(width, width, dilation=4), nn.Conv2d(width, keypoints, 1),
        )  # fmt: skip

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)


class SimCCNet(nn.Module):
    """images ``(B, 3, 64, 48)`` -> SimCC ``(B, K, 96)``, ``(B, K, 128)``: convolutions to ``K`` maps at stride 4,
    then one linear classifier per axis over each map's 16x12 positions (RTMPose's head, without its GAU)."""

    def __init__(self, width: int = 32, keypoints: int = K) -> None:
        super().__init__()
        self.keypoints = keypoints
        self.body = nn.Sequential(
            *_block(3, width), *_block(width, width, stride=2), *_block(width, width, stride=2),
            *_block(width, width, dilation=2), nn.Conv2d(width, keypoints, 1),
        )  # fmt: skip
        cells = (INPUT[0] // 4) * (INPUT[1] // 4)
        self.x = nn.Linear(cells, int(INPUT[1] * SPLIT_RATIO))
        self.y = nn.Linear(cells, int(INPUT[0] * SPLIT_RATIO))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(images).flatten(2)
        return self.x(features), self.y(features)


def train(net: nn.Module, steps: int, *, batch: int = 16, seed: int = 0, lr: float = 3e-3) -> dict[str, float]:
    """Adam on fresh samples for ``steps`` steps, one thread (measured here: several threads on a shared 2-core
    machine made each step 7x slower); returns the seconds and the first and last loss (means of 10 steps)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    simcc = isinstance(net, SimCCNet)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net.train()
    losses: list[float] = []
    start = time.perf_counter()
    try:
        for _ in range(steps):
            images, keypoints = make_batch(batch, generator, net.keypoints)
            if simcc:
                tx, ty, _ = custom_ops.simcc_targets(keypoints, (INPUT[1], INPUT[0]), SIMCC_SIGMA,
                                                     split_ratio=SPLIT_RATIO, subpixel=True)  # fmt: skip
                px, py = net(images)
                loss = -(tx / tx.sum(-1, keepdim=True) * px.log_softmax(-1)).sum(-1).mean()
                loss = loss - (ty / ty.sum(-1, keepdim=True) * py.log_softmax(-1)).sum(-1).mean()
            else:
                loss = ((net(images) - heatmap_targets(keypoints)) ** 2).mean() * 100
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    net.eval()
    window = max(1, min(10, len(losses)))
    return {"steps": len(losses), "seconds": time.perf_counter() - start,
            "first_loss": sum(losses[:window]) / window, "last_loss": sum(losses[-window:]) / window}  # fmt: skip


def peakedness(net: nn.Module, images: Tensor) -> float:
    """Median over keypoints of (peak - median) / peak of the network's maps (heatmaps; SimCC: the x vectors):
    ~1 for trained, sharply peaked maps, near 0 for a random network's nearly flat ones."""
    with torch.no_grad():
        out = net(images)
    maps = (out if isinstance(out, Tensor) else out[0].softmax(-1)).flatten(2)
    peak = maps.amax(-1)
    return float(((peak - maps.median(-1).values) / peak.abs().clamp(min=1e-12)).median())


def decoder_options(net: nn.Module) -> dict[str, object]:
    """The ``PoseDecoder`` options that decode this network's output (``decode``, sizes, DARK's kernel)."""
    if isinstance(net, SimCCNet):
        return {"decode": "simcc:dark", "input_size": (INPUT[1], INPUT[0]), "split_ratio": SPLIT_RATIO,
                "sigma": SIMCC_SIGMA}  # fmt: skip
    return {"decode": "heatmap:dark", "input_size": (INPUT[1], INPUT[0]), "heatmap_size": HEATMAP,
            "blur_kernel": BLUR_KERNEL, "udp": True}  # fmt: skip


#: keypoints of the tests' networks: 8 hues 45 degrees apart train to decisive peaks in a few hundred steps (17
#: hues, 21 degrees apart, need thousands: benchmarks/bench_int8.py trains those)
TEST_KEYPOINTS = 8


def heatmap_net() -> HeatmapNet:
    """Model spec ``tests/int8_models.py:heatmap_net`` (with ``--weights``): the tests' heatmap network."""
    return HeatmapNet(keypoints=TEST_KEYPOINTS).eval()


def simcc_net() -> SimCCNet:
    """Model spec ``tests/int8_models.py:simcc_net`` (with ``--weights``): the tests' SimCC network."""
    return SimCCNet(keypoints=TEST_KEYPOINTS).eval()


def heatmap_net17() -> HeatmapNet:
    """Model spec ``tests/int8_models.py:heatmap_net17``: benchmarks/bench_int8.py's 17-keypoint heatmap network."""
    return HeatmapNet().eval()
