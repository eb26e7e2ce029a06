"""Models for tests/test_verdicts.py, importable by path for the command line (``tests/verdict_models.py:build``).

- :class:`LargeActivations`: a conv heatmap net whose outputs reach ~5e3, as a random-init HRNet's do (float32
  rounding there is ~1e-2 absolute, 1e-6 of the largest value).
- :class:`TwoPeaks`: heatmaps with two separated peaks per keypoint; in ``CLOSE`` keypoints the later peak (in
  row-major order) is higher by less than float16's resolution at 1.0, so a float16 file sees a tie and takes the
  first: a flip between near-equal peaks, by construction.
- :class:`SimCCNet`: a small RTMPose-style SimCC head (conv, then per-axis linear classifiers).
- :class:`WithEncoder`: a network whose encoder returns a dict of three same-shaped tensors of which one is used
  (transformers' ``ModelOutput`` with hidden states): localisation must not pair them with the one ONNX value.
"""

from __future__ import annotations

import torch
from torch import nn

import custom_ops
from export_tools.decoding import PoseDecoder

K = 17
CLOSE = (2, 7, 11)  # the keypoints whose two peaks are closer than float16's resolution


class LargeActivations(nn.Module):
    """images ``(B, 3, H, W)`` -> heatmaps ``(B, 17, H/4, W/4)`` reaching ~5e3."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        self.body = nn.Sequential(*(nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.ReLU()) for _ in range(3)))
        self.head = nn.Conv2d(width, K, 1)
        with torch.no_grad():
            self.head.weight.mul_(1e5)  # outputs ~5e3 with no normalisation: the scale of a random-init HRNet

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(images)))


def build() -> LargeActivations:
    return LargeActivations().eval()


def _peak_maps(height: int, width: int) -> torch.Tensor:
    y = torch.arange(height, dtype=torch.float32)[:, None]
    x = torch.arange(width, dtype=torch.float32)[None, :]
    maps = []
    for k in range(K):
        first = (5 + k, 6 + k % 5)  # (x, y): the earlier one in row-major order
        second = (width - 8 - k, height - 10 - k % 7)
        height2 = 1.0 + 3e-4 if k in CLOSE else 0.6  # 3e-4 < half of float16's spacing at 1.0 (9.8e-4)
        blob = [torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 1.5**2)) for cx, cy in (first, second)]
        maps.append(torch.maximum(blob[0], height2 * blob[1]))
    return torch.stack(maps)


class TwoPeaks(nn.Module):
    """images ``(B, 3, H, W)`` -> keypoints and scores of fixed two-peak heatmaps ``(B, 17, 64, 48)``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("maps", _peak_maps(64, 48))
        self.decode = custom_ops.DecodeHeatmaps(refine="dark")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift = 1e-7 * images.mean(dim=(1, 2, 3))[:, None, None, None]  # the input matters, barely
        return self.decode(self.maps + shift)


def two_peaks() -> TwoPeaks:
    return TwoPeaks().eval()


class SimCCNet(nn.Module):
    """images ``(B, 3, 64, 48)`` -> SimCC ``(B, 17, 96)``, ``(B, 17, 128)`` (split ratio 2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU(), nn.Conv2d(16, K, 3, 2, 1))
        self.x = nn.Linear(8 * 6, 96)
        self.y = nn.Linear(8 * 6, 128)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conv(images).flatten(2)
        return self.x(features), self.y(features)


def simcc() -> SimCCNet:
    return SimCCNet().eval()


def rtm_crop() -> PoseDecoder:
    """A model spec that is a whole pipeline: frames and boxes in, keypoints out."""
    return PoseDecoder(simcc(), "simcc:dark", input_size=(48, 64), boxes="xyxy", crop=True, normalize="imagenet",
                       sigma=(2.4, 2.8)).eval()  # fmt: skip


class Encoder(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 3, 1, 1)
        self.b = nn.Conv2d(channels, channels, 3, 1, 1)
        self.gain = nn.Parameter(torch.full((channels, 1, 1), 1.5))  # the encoder's own code, in no submodule

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        first = torch.relu(self.a(x))
        return {"embedded": x * 2.0, "first": first, "last": torch.relu(self.b(first)) * self.gain}


class WithEncoder(nn.Module):
    """images ``(B, 3, 64, 48)`` -> heatmaps ``(B, 17, 16, 12)``; the encoder returns three same-shaped tensors."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.encoder = Encoder(8)
        self.head = nn.Conv2d(8, K, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.stem(images))["last"])


def with_encoder() -> WithEncoder:
    return WithEncoder().eval()


class DictHeatmaps(nn.Module):
    """Returns a dict, as transformers' models do: ``{"heatmaps": ..., "features": ...}``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, K, 4, 4)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        heatmaps = self.conv(images)
        return {"heatmaps": heatmaps, "features": heatmaps.mean(dim=(2, 3))}


def dict_heatmaps() -> DictHeatmaps:
    return DictHeatmaps().eval()


def vitpose() -> nn.Module:
    """transformers' ``VitPoseForPoseEstimation`` from a small config, random init (nothing is downloaded); it
    returns a ``VitPoseEstimatorOutput`` (a ``ModelOutput``) holding ``heatmaps`` ``(B, 17, 64, 48)``."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    torch.manual_seed(0)
    backbone = VitPoseBackboneConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=3, intermediate_size=192,
                                     image_size=[256, 192], patch_size=[16, 16], out_indices=[2])  # fmt: skip
    config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=True, num_labels=K)
    return VitPoseForPoseEstimation(config).eval()
