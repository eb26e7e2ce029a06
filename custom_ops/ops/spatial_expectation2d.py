"""spatial_expectation2d: expected (x, y) under each channel's probability map.

``input (B, N, H, W)`` -> ``(B, N, 2)``. The map is used as given (not
renormalised). Coordinates follow :mod:`custom_ops.conventions`: pixel, or
normalized with ``align_corners=True`` (kornia, default) or ``False`` (dsntnn).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from custom_ops.ops._common import (
    COORDINATE_ATTRIBUTES,
    FLOAT,
    compute_dtype,
    expectation_flat,
    is_exporting,
    validate_tensor,
)
from custom_ops.registry import OnnxInput, OpSpec, Sample, register


def reference(input: Tensor, normalized_coordinates: bool, align_corners: bool) -> Tensor:
    """Plain torch definition. ``input (B, N, H, W)`` -> ``(B, N, 2)``."""
    batch, channels, height, width = input.shape
    # contiguous first: a channels-last map would reshape to a strided view and sum in another order
    probs = input.to(compute_dtype(input.dtype)).contiguous().reshape(batch, channels, height * width)
    return expectation_flat(probs, height, width, normalized_coordinates, align_corners).to(input.dtype)


def _fake(input: Tensor, *_) -> Tensor:
    return input.new_empty(input.shape[0], input.shape[1], 2)


def spatial_expectation2d(
    input: Tensor,
    normalized_coordinates: bool = True,
    *,
    align_corners: bool = True,
) -> Tensor:
    """Expected ``(x, y)`` of each channel's map.

    Args:
        input: probabilities ``(B, N, H, W)`` (used as given, not renormalised).
        normalized_coordinates: ``True`` for ``[-1, 1]`` coordinates, ``False`` for pixels.
        align_corners: with normalized coordinates, ``True`` puts -1/1 at the corner
            pixels' centres (kornia); ``False`` at their outer edges (dsntnn).

    Returns:
        ``(B, N, 2)`` expected ``(x, y)`` in ``input``'s dtype.
    """
    validate_tensor(input, "input", "(B, N, H, W)", 4)
    normalized_coordinates, align_corners = bool(normalized_coordinates), bool(align_corners)
    if is_exporting():
        return torch.ops.kpx.spatial_expectation2d(input, normalized_coordinates, align_corners)
    return reference(input, normalized_coordinates, align_corners)


class SpatialExpectation2d(nn.Module):
    """Module form of :func:`spatial_expectation2d`; ``(B, N, H, W)`` -> ``(B, N, 2)``."""

    def __init__(self, normalized_coordinates: bool = True, *, align_corners: bool = True) -> None:
        super().__init__()
        self.normalized_coordinates = normalized_coordinates
        self.align_corners = align_corners

    def forward(self, input: Tensor) -> Tensor:
        return spatial_expectation2d(input, self.normalized_coordinates, align_corners=self.align_corners)


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def SpatialExpectation2d(input, normalized_coordinates: int = 1, align_corners: int = 1):
        h = op.Shape(input, start=2, end=3)
        w = op.Shape(input, start=3, end=4)
        hw = op.Mul(h, w)
        probs = op.Reshape(op.Cast(input, to=FLOAT), op.Concat(op.Shape(input, start=0, end=2), hw, axis=0))
        # grid (H*W, 2): (column, row) of each flat index, then (i - c) * s per axis
        k = op.Range(op.Constant(value_int=0), op.Squeeze(hw), op.Constant(value_int=1))
        idx = op.Cast(op.Concat(op.Unsqueeze(op.Mod(k, w), [1]), op.Unsqueeze(op.Div(k, w), [1]), axis=1), to=FLOAT)
        n = op.Cast(op.Concat(w, h, axis=0), to=FLOAT)
        nrm = op.Cast(normalized_coordinates, to=FLOAT)
        ac = op.Cast(align_corners, to=FLOAT)
        scale = nrm * (ac * (2.0 / op.Max(n - 1.0, 1.0)) + (1.0 - ac) * (2.0 / n)) + (1.0 - nrm)
        grid = (idx - nrm * (n - 1.0) * 0.5) * scale
        return op.CastLike(op.MatMul(probs, grid), input)

    return SpatialExpectation2d


def samples() -> list[Sample]:
    """Normalised random maps in every coordinate convention."""
    g = torch.Generator().manual_seed(1)
    p = torch.rand(2, 3, 6, 5, generator=g)
    p = p / p.sum((2, 3), keepdim=True)
    dyn = ({0: "B", 1: "N", 2: "H", 3: "W"},)
    return [
        Sample("pixel", (p, False)),
        Sample("normalized_ac", (p, True), {"align_corners": True}, dynamic=dyn),
        Sample("normalized_centres", (p, True), {"align_corners": False}, dynamic=dyn),
        Sample("pixel_dynamic", (p, False), dynamic=dyn),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for probability maps ``(B, N, H, W)`` (all four dims dynamic in the export)."""
    peaked = torch.zeros(2, 3, 5, 7)
    peaked[:, :, 4, 6] = 1.0
    nan = torch.full((2, 3, 5, 7), 1.0 / 35)
    nan[0, 1, 2, 2] = float("nan")
    return {
        "peaked_corner": (peaked,),
        "flat": (torch.full((2, 3, 5, 7), 1.0 / 35),),
        "nan_channel": (nan,),
        "empty_batch": (torch.rand(0, 3, 5, 7),),
        "no_channels": (torch.rand(2, 0, 5, 7),),
        "single_row": (torch.full((2, 3, 1, 7), 1.0 / 7),),
    }


SPEC = register(
    OpSpec(
        name="spatial_expectation2d",
        onnx_op_type="SpatialExpectation2d",
        description="expected (x, y) under each channel's probability map (DSNT)",
        functional=spatial_expectation2d,
        module=SpatialExpectation2d,
        reference=reference,
        fake=_fake,
        inputs=(OnnxInput("input", "probabilities (B, N, H, W)"),),
        outputs=(OnnxInput("output", "expected (x, y) (B, N, 2), input dtype"),),
        attributes=COORDINATE_ATTRIBUTES,
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: float32 rounding of sums over H*W. fp16: computed in float32, rounded once to half: 2^-11
        # relative, at most one half ulp (2^-10) from another once-rounded result: rtol 1e-3; near coordinate 0
        # the float32 sum's own cancellation error stays, so atol is the float32 one.
        tolerances={torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-5), torch.float64: (1e-5, 1e-5)},
        conventions="output (x, y): pixel, or normalized with align_corners True (kornia) / False (dsntnn)",
    )
)
