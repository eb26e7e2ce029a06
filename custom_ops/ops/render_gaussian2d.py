"""render_gaussian2d: a Gaussian per (mean, std) sampled on an H x W grid, summing to one.

``mean (*, 2)``, ``std (*, 2)`` (broadcastable; a Python number is used for both
axes) and ``size = (H, W)`` -> ``(*, H, W)``. Value at ``(x, y)``:
``exp(-(x-mx)^2/(2 sx^2) - (y-my)^2/(2 sy^2))`` rescaled to sum to one. The
Gaussian is separable, so each axis is computed and normalised on its own and
the map is one outer product (one full-size write). A Gaussian whose mass on
the grid underflows renders as zeros, never NaN (safe division in float32).

Decisions: ``std`` is a standard deviation (kornia's docstring; kornia < 0.8.3
divided by ``std`` instead of ``std**2``). Unlike kornia 0.9, which normalises each
axis with a softmax so that a far-off Gaussian still lights the nearest edge,
kpx follows docs/spec.md: underflowed mass renders as zeros. ``size`` is static
(an attribute of the ONNX node). ``mean`` and ``std`` are in the chosen
coordinate convention (normalized units span the map, as in kornia).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from custom_ops.conventions import axis_coords
from custom_ops.ops._common import (
    COORDINATE_ATTRIBUTES,
    FLOAT,
    as_sequence,
    compute_dtype,
    is_exporting,
    positive_scalar,
    validate_tensor,
)
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register


def _axis_gaussian(coords: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(n,)`` coordinates, ``(*, 1)`` mean and std -> ``(*, n)`` Gaussian summing to one (or zeros)."""
    d = (coords - mean) / std
    g = torch.exp(-0.5 * d * d)
    total = g.sum(-1, keepdim=True)
    return g / torch.where(total > 0, total, torch.ones_like(total))


def reference(mean: Tensor, std: Tensor, size: list[int], normalized_coordinates: bool, align_corners: bool) -> Tensor:
    """Plain torch definition. ``mean (*, 2)``, ``std (*, 2)`` -> ``(*, H, W)``."""
    height, width = size
    out_dtype = mean.dtype
    dtype = compute_dtype(mean.dtype)
    mean, std = mean.to(dtype), std.to(dtype)
    xs = axis_coords(width, normalized_coordinates, align_corners, device=mean.device, dtype=dtype)
    ys = axis_coords(height, normalized_coordinates, align_corners, device=mean.device, dtype=dtype)
    gx = _axis_gaussian(xs, mean[..., 0:1], std[..., 0:1])
    gy = _axis_gaussian(ys, mean[..., 1:2], std[..., 1:2])
    return (gy.unsqueeze(-1) * gx.unsqueeze(-2)).to(out_dtype)


def _fake(mean: Tensor, std: Tensor, size: list[int], *_) -> Tensor:
    batch = torch.broadcast_shapes(mean.shape[:-1], std.shape[:-1])
    return mean.new_empty(*batch, size[0], size[1])


def render_gaussian2d(
    mean: Tensor,
    std: Tensor | float,
    size: tuple[int, int],
    normalized_coordinates: bool = True,
    *,
    align_corners: bool = True,
) -> Tensor:
    """Renders Gaussians on an ``H x W`` grid, each summing to one.

    Args:
        mean: centres ``(*, 2)`` as ``(x, y)``.
        std: standard deviations ``(*, 2)`` (broadcastable with ``mean``), or a Python number > 0.
        size: ``(H, W)``.
        normalized_coordinates: ``mean``/``std`` in ``[-1, 1]`` units (default) or pixels.
        align_corners: normalized convention; ``True`` kornia, ``False`` dsntnn.

    Returns:
        ``(*, H, W)`` in ``mean``'s dtype.
    """
    validate_tensor(mean, "mean", "(*, 2)")
    if mean.dim() == 0 or mean.shape[-1] != 2:
        raise ValueError(f"mean must have shape (*, 2) holding (x, y); got shape {tuple(mean.shape)}")
    if not isinstance(std, Tensor):
        std = torch.full((2,), positive_scalar(std, "std"), dtype=mean.dtype, device=mean.device)
    validate_tensor(std, "std", "(*, 2)")
    if std.dim() == 0 or std.shape[-1] != 2:
        raise ValueError(f"std must have shape (*, 2) holding (sx, sy); got shape {tuple(std.shape)}")
    try:
        torch.broadcast_shapes(mean.shape, std.shape)
    except RuntimeError:
        raise ValueError(
            f"std of shape {tuple(std.shape)} does not broadcast with mean of shape {tuple(mean.shape)}"
        ) from None
    size = list(as_sequence(size, "size", 2, " (H, W)"))
    normalized_coordinates, align_corners = bool(normalized_coordinates), bool(align_corners)
    if is_exporting():
        return torch.ops.kpx.render_gaussian2d(mean, std.to(mean.dtype), size, normalized_coordinates, align_corners)
    return reference(mean, std, size, normalized_coordinates, align_corners)


class RenderGaussian2d(nn.Module):
    """Module form of :func:`render_gaussian2d`; ``(mean (*, 2), std (*, 2))`` -> ``(*, H, W)``."""

    def __init__(self, size: tuple[int, int], normalized_coordinates: bool = True, *, align_corners: bool = True):
        super().__init__()
        self.size = as_sequence(size, "size", 2, " (H, W)")
        self.normalized_coordinates = normalized_coordinates
        self.align_corners = align_corners

    def forward(self, mean: Tensor, std: Tensor | float) -> Tensor:
        return render_gaussian2d(mean, std, self.size, self.normalized_coordinates, align_corners=self.align_corners)


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def RenderGaussian2d(mean, std, size: list[int], normalized_coordinates: int = 1, align_corners: int = 1):
        m = op.Cast(mean, to=FLOAT)
        s = op.Cast(std, to=FLOAT)
        hw = op.Constant(value_ints=size)
        n = op.Cast(hw, to=FLOAT)  # (H, W)
        nrm = op.Cast(normalized_coordinates, to=FLOAT)
        ac = op.Cast(align_corners, to=FLOAT)
        scale = nrm * (ac * (2.0 / op.Max(n - 1.0, 1.0)) + (1.0 - ac) * (2.0 / n)) + (1.0 - nrm)
        centre = nrm * (n - 1.0) * 0.5
        one = op.Constant(value_ints=[1])
        # per axis: coordinates, Gaussian, sum (MatMul with ones: no negative reduce axis), safe divide
        ys = op.Cast(op.Range(0, op.Squeeze(op.Slice(hw, [0], [1])), 1), to=FLOAT) - op.Slice(centre, [0], [1])
        ys = ys * op.Slice(scale, [0], [1])
        xs = op.Cast(op.Range(0, op.Squeeze(op.Slice(hw, [1], [2])), 1), to=FLOAT) - op.Slice(centre, [1], [2])
        xs = xs * op.Slice(scale, [1], [2])
        dx = (xs - op.Slice(m, [0], [1], [-1])) / op.Slice(s, [0], [1], [-1])
        dy = (ys - op.Slice(m, [1], [2], [-1])) / op.Slice(s, [1], [2], [-1])
        gx = op.Exp(dx * dx * -0.5)
        gy = op.Exp(dy * dy * -0.5)
        sx = op.MatMul(gx, op.Expand(op.Constant(value_float=1.0), op.Concat(op.Slice(hw, [1], [2]), one, axis=0)))
        sy = op.MatMul(gy, op.Expand(op.Constant(value_float=1.0), op.Concat(op.Slice(hw, [0], [1]), one, axis=0)))
        gx = gx / op.Where(sx > 0.0, sx, 1.0)
        gy = gy / op.Where(sy > 0.0, sy, 1.0)
        out = op.MatMul(op.Unsqueeze(gy, [-1]), op.Unsqueeze(gx, [-2]))
        return op.CastLike(out, mean)

    return RenderGaussian2d


def samples() -> list[Sample]:
    """Batched means and stds, normalized and pixel, one far off the grid."""
    g = torch.Generator().manual_seed(3)
    mean = torch.rand(2, 3, 2, generator=g) * 1.6 - 0.8
    std = torch.rand(2, 3, 2, generator=g) * 0.3 + 0.1
    pix_mean = torch.tensor([[[3.0, 4.0], [0.5, 6.2], [-40.0, 2.0]]])
    pix_std = torch.tensor([[[1.5, 2.0], [0.7, 0.7], [1.0, 1.0]]])
    dyn = ({0: "B", 1: "K"}, {0: "B", 1: "K"})
    return [
        Sample("normalized", (mean, std, (9, 7))),
        Sample("centres_dynamic", (mean, std, (8, 11), True), {"align_corners": False}, dynamic=dyn),
        Sample("pixel_offmap", (pix_mean, pix_std, (10, 8), False), dynamic=dyn),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for ``mean (B, K, 2)``, ``std (B, K, 2)`` (B and K dynamic in the export)."""
    mean = torch.tensor([[[0.0, 0.0], [30.0, -30.0], [float("nan"), 0.2]]])
    std = torch.tensor([[[0.2, 0.2], [0.1, 0.1], [0.3, 0.3]]])
    return {
        "far_off_and_nan": (mean, std),
        "huge_std": (mean[:, :1], torch.full((1, 1, 2), 1e30)),
        "tiny_std": (mean[:, :1] + 0.013, torch.full((1, 1, 2), 1e-3)),
        "empty_batch": (torch.zeros(0, 3, 2), torch.ones(0, 3, 2)),
        "no_keypoints": (torch.zeros(2, 0, 2), torch.ones(2, 0, 2)),
    }


SPEC = register(
    OpSpec(
        name="render_gaussian2d",
        onnx_op_type="RenderGaussian2d",
        description="Gaussians (mean, std) sampled on an H x W grid, each summing to one",
        functional=render_gaussian2d,
        module=RenderGaussian2d,
        reference=reference,
        fake=_fake,
        inputs=(
            OnnxInput("mean", "centres (*, 2) as (x, y)"),
            OnnxInput("std", "standard deviations (*, 2), broadcastable with mean"),
        ),
        outputs=(OnnxInput("output", "maps (*, H, W) summing to one (or zeros), mean's dtype"),),
        attributes=(OnnxAttribute("size", "ints", None, "(H, W)"), *COORDINATE_ATTRIBUTES),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: float32 rounding of the per-axis sums. fp16: computed in float32 (sums and safe division
        # included), rounded once to half: 2^-11 relative, at most one half ulp (2^-10) from another
        # once-rounded result: rtol 1e-3; values below 6.1e-5 are subnormal halves, 6e-8 apart: atol 1e-6.
        tolerances={torch.float32: (1e-5, 1e-6), torch.float16: (1e-3, 1e-6), torch.float64: (1e-5, 1e-6)},
        conventions="mean/std in pixels or normalized units (align_corners True: kornia / False: dsntnn)",
    )
)
