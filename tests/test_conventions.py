"""Pixel <-> normalized mapping against the docs/spec.md convention table, written out literally."""

from __future__ import annotations

import pytest
import torch

from custom_ops.conventions import normalized_to_pixel, pixel_to_normalized


def spec_normalized(i: torch.Tensor, n: int, align_corners: bool) -> torch.Tensor:
    if align_corners:
        return torch.zeros_like(i) if n == 1 else -1 + 2 * i / (n - 1)
    return (2 * i + 1) / n - 1


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(3, 5), (1, 4), (7, 1), (64, 48)])
def test_pixel_to_normalized_matches_the_table(size, align_corners):
    height, width = size
    pix = torch.stack(
        [torch.rand(50, dtype=torch.float64) * (width - 1), torch.rand(50, dtype=torch.float64) * (height - 1)], -1
    )
    out = pixel_to_normalized(pix, size, align_corners=align_corners)
    torch.testing.assert_close(out[:, 0], spec_normalized(pix[:, 0], width, align_corners))
    torch.testing.assert_close(out[:, 1], spec_normalized(pix[:, 1], height, align_corners))


@pytest.mark.parametrize("align_corners", [True, False])
def test_round_trip(align_corners):
    pix = torch.rand(2, 9, 2, dtype=torch.float64) * torch.tensor([47.0, 63.0])
    back = normalized_to_pixel(
        pixel_to_normalized(pix, (64, 48), align_corners=align_corners), (64, 48), align_corners=align_corners
    )
    torch.testing.assert_close(back, pix)
