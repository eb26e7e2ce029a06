"""Real pose networks for the verdict measurements (benchmarks/verdict_noise.py, benchmarks/verdicts_real_models.py).

All random-init from configs, 256x192 input, 17 keypoints; nothing is downloaded. ``vitpose_s`` and ``vitpose_b``
need transformers; ``hrnet`` and ``convnext_simcc`` need timm (which needs torchvision: not in kpx's CI
environment); ``own`` needs nothing. Usable as model specs: ``kpx export benchmarks/real_models.py:hrnet``.
"""

from __future__ import annotations

import torch
from torch import nn


class HeatmapsOf(nn.Module):
    """A transformers pose model's ``heatmaps`` entry."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.m(pixel_values=images).heatmaps


def _vitpose(hidden: int, layers: int, heads: int) -> nn.Module:
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    torch.manual_seed(0)
    backbone = VitPoseBackboneConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                     intermediate_size=4 * hidden, image_size=[256, 192], patch_size=[16, 16],
                                     out_indices=[layers])  # fmt: skip
    config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=True, num_labels=17)
    return HeatmapsOf(VitPoseForPoseEstimation(config).eval()).eval()


def vitpose_s() -> nn.Module:
    """transformers ViTPose, hidden 192, 4 layers (2.0M parameters)."""
    return _vitpose(192, 4, 3)


def vitpose_b() -> nn.Module:
    """transformers ViTPose-B's configuration (hidden 768, 12 layers, 86M parameters)."""
    return _vitpose(768, 12, 12)


class HRNet(nn.Module):
    """timm ``hrnet_w18_small_v2`` (stride-4 features) + a 1x1 heatmap conv (5.2M parameters; heatmaps ~5e3)."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        torch.manual_seed(0)
        self.backbone = timm.create_model("hrnet_w18_small_v2", pretrained=False, features_only=True, out_indices=(1,))
        self.head = nn.Conv2d(self.backbone.feature_info.channels()[0], 17, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)[0])


def hrnet() -> nn.Module:
    return HRNet().eval()


class ConvNeXtSimCC(nn.Module):
    """timm ``convnext_atto`` + an RTMPose-style SimCC head (split ratio 2): ``(B, 17, 384)``, ``(B, 17, 512)``."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        torch.manual_seed(0)
        self.backbone = timm.create_model("convnext_atto", pretrained=False, features_only=True, out_indices=(3,))
        self.final = nn.Conv2d(self.backbone.feature_info.channels()[0], 17, 1)
        self.mlp = nn.Linear(8 * 6, 128)
        self.x = nn.Linear(128, 384)
        self.y = nn.Linear(128, 512)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.mlp(self.final(self.backbone(images)[0]).flatten(2))
        return self.x(features), self.y(features)


def convnext_simcc() -> nn.Module:
    return ConvNeXtSimCC().eval()


class Own(nn.Module):
    """A 5.3M parameter conv heatmap network with HRNet's output scale (no normalisation, heatmaps ~5e3)."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 2, 1), nn.ReLU(), nn.Conv2d(64, width, 3, 2, 1), nn.ReLU())
        self.body = nn.Sequential(*(nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.ReLU()) for _ in range(8)))
        self.head = nn.Conv2d(width, 17, 1)
        with torch.no_grad():
            self.head.weight.mul_(3e5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(images)))


def own() -> nn.Module:
    return Own().eval()


#: name -> (factory, decode for heatmaps / SimCC)
MODELS = {"vitpose_s": (vitpose_s, "heatmap"), "vitpose_b": (vitpose_b, "heatmap"), "hrnet": (hrnet, "heatmap"),
          "convnext_simcc": (convnext_simcc, "simcc"), "own": (own, "heatmap")}  # fmt: skip


def available(name: str) -> str | None:
    """``None`` when the model can be built here, else why not."""
    needs = {"vitpose_s": "transformers", "vitpose_b": "transformers", "hrnet": "timm", "convnext_simcc": "timm"}
    module = needs.get(name)
    if module is None:
        return None
    try:
        __import__(module)
    except Exception as exc:  # timm without torchvision raises ModuleNotFoundError for torchvision
        return f"{module} does not import here ({type(exc).__name__}: {exc})"
    return None
