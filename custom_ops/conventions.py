"""Coordinate conventions shared by every op (docs/spec.md, "Coordinate conventions").

| mode                                   | coordinate of column ``i`` on an axis of size ``n`` |
|----------------------------------------|------------------------------------------------------|
| pixel (``normalized_coordinates=False``)| ``i``                                                |
| normalized, ``align_corners=True``     | ``-1 + 2i/(n-1)``; ``0`` when ``n == 1`` (kornia)    |
| normalized, ``align_corners=False``    | ``(2i + 1)/n - 1``, pixel centres (dsntnn)           |

All three are one affine map ``(i - c) * s``: pixel ``c = 0, s = 1``;
``align_corners=True`` ``c = (n-1)/2, s = 2/max(n-1, 1)``; ``align_corners=False``
``c = (n-1)/2, s = 2/n``. The ONNX function bodies compute the same map from the
runtime shape, so no size is baked into an exported graph.

Boxes (``heatmap_to_image``, ``topdown_crop``, ``kpx export --boxes``): :data:`BOX_FORMATS`.
"""

from __future__ import annotations

import functools

import torch

#: how the four numbers of a box are read (``box_format=``), in the order of their ONNX attribute codes (0, 1, 2)
BOX_FORMAT_CHOICES = {
    "xywh": "x0, y0, w, h",
    "xyxy": "x0, y0, x1, y1",
    "cs": "centre x, centre y, width, height in pixels: mmpose's bbox_center/bbox_scale",
}
BOX_FORMATS = tuple(BOX_FORMAT_CHOICES)
"""The ``box_format`` names; the index is the ONNX attribute code."""


def axis_affine(n: int, normalized: bool, align_corners: bool) -> tuple[float, float]:
    """``(c, s)`` such that the coordinate of index ``i`` is ``(i - c) * s``."""
    if not normalized:
        return 0.0, 1.0
    scale = 2.0 / max(n - 1, 1) if align_corners else 2.0 / n
    return (n - 1) / 2.0, scale


def axis_coords(
    n: int,
    normalized: bool,
    align_corners: bool,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Coordinates of the ``n`` pixels of one axis. Returns ``(n,)``."""
    centre, scale = axis_affine(n, normalized, align_corners)
    return (torch.arange(n, device=device, dtype=dtype) - centre) * scale


def coordinate_grid(
    height: int,
    width: int,
    normalized: bool,
    align_corners: bool,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(x, y)`` of every pixel in row-major order. Returns ``(2, H*W)``."""
    xs = axis_coords(width, normalized, align_corners, device=device, dtype=dtype)
    ys = axis_coords(height, normalized, align_corners, device=device, dtype=dtype)
    # broadcasts, not repeat/repeat_interleave: traced with symbolic sizes they stay symbolic
    return torch.stack([xs.expand(height, width).reshape(-1), ys.unsqueeze(1).expand(height, width).reshape(-1)])


@functools.lru_cache(maxsize=64)
def cached_coordinate_grid(
    height: int, width: int, normalized: bool, align_corners: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`coordinate_grid`, memoised for eager calls (building it costs ~0.1 ms). Do not modify it.

    Built outside inference mode so that a grid first made under
    ``torch.inference_mode()`` can still be used in autograd later.
    """
    with torch.inference_mode(False):
        return coordinate_grid(height, width, normalized, align_corners, device=device, dtype=dtype)


def _affine_xy(coords: torch.Tensor, size: tuple[int, int], align_corners: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized-mode ``(c, s)`` for the x and y axes of a map of ``size=(H, W)``, as ``(2,)`` tensors."""
    height, width = size
    (cx, sx), (cy, sy) = axis_affine(width, True, align_corners), axis_affine(height, True, align_corners)
    return coords.new_tensor([cx, cy]), coords.new_tensor([sx, sy])


def pixel_to_normalized(coords: torch.Tensor, size: tuple[int, int], *, align_corners: bool = True) -> torch.Tensor:
    """Maps ``(x, y)`` pixel coordinates ``(*, 2)`` to normalized ones on a map of ``size=(H, W)``."""
    centre, scale = _affine_xy(coords, size, align_corners)
    return (coords - centre) * scale


def normalized_to_pixel(coords: torch.Tensor, size: tuple[int, int], *, align_corners: bool = True) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized` (an axis of size 1 maps its only pixel, 0, to 0)."""
    centre, scale = _affine_xy(coords, size, align_corners)
    return coords / scale + centre
