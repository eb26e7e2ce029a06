"""spatial_soft_argmax2d: softmax over H*W, then the expected (x, y): one op.

``input (B, N, H, W)`` -> ``(B, N, 2)``; equal to
``spatial_expectation2d(spatial_softmax2d(input, ...), ...)`` but exported as
ONE ``kpx`` node whose body is Softmax + one MatMul with an ``(H*W, 2)``
coordinate grid (the fastest stock ORT form measured, docs/design.md). Eager mode
runs ``torch.softmax`` + ``F.linear`` on blocks of rows (channels) of about
2 MiB, so each block's probabilities are still in cache when they are summed:
the full ``(B, N, H*W)`` softmax is never materialised (measured 2-3x faster
than one full-size softmax at the benchmark sizes; rows are independent, so
blocking does not change the maths).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from custom_ops.ops._common import (
    BOOL,
    COORDINATE_ATTRIBUTES,
    FLOAT,
    TEMPERATURE_ATTRIBUTE,
    TEMPERATURE_MODES,
    compute_dtype,
    expectation_flat,
    is_exporting,
    logits_adversarial,
    mode_code,
    positive_scalar,
    scaled_softmax,
    tracing,
    validate_tensor,
)
from custom_ops.registry import OnnxInput, OpSpec, Sample, register

_BLOCK_ELEMENTS = 1 << 19  # softmax block of 2 MiB float32: fastest of 2^14..2^20 measured on 2 cores


def reference(
    input: Tensor,
    temperature: Tensor | float,
    temperature_divide: bool,
    normalized_coordinates: bool,
    align_corners: bool,
) -> Tensor:
    """Plain torch definition. ``input (B, N, H, W)`` -> ``(B, N, 2)``."""
    batch, channels, height, width = input.shape
    logits = input.to(compute_dtype(input.dtype)).reshape(batch * channels, height * width)
    if tracing():  # sizes may be symbolic: one block, the same maths
        coords = expectation_flat(scaled_softmax(logits, temperature, temperature_divide), height, width,
                                  normalized_coordinates, align_corners)  # fmt: skip
        return coords.reshape(batch, channels, 2).to(input.dtype)
    rows = max(1, _BLOCK_ELEMENTS // max(height * width, 1))
    blocks = [
        expectation_flat(
            scaled_softmax(logits[i : i + rows], temperature, temperature_divide),
            height,
            width,
            normalized_coordinates,
            align_corners,
        )
        for i in range(0, batch * channels, rows)
    ]
    coords = torch.cat(blocks) if blocks else logits.new_empty(0, 2)
    return coords.reshape(batch, channels, 2).to(input.dtype)


def _fake(input: Tensor, *_) -> Tensor:
    return input.new_empty(input.shape[0], input.shape[1], 2)


def spatial_soft_argmax2d(
    input: Tensor,
    temperature: Tensor | float = 1.0,
    normalized_coordinates: bool = True,
    *,
    temperature_mode: str = "multiply",
    align_corners: bool = True,
) -> Tensor:
    """Soft-argmax (DSNT): expected ``(x, y)`` under the spatial softmax of each channel.

    Args:
        input: logits ``(B, N, H, W)``.
        temperature: Python number > 0 or a 0-d tensor (e.g. learned).
        normalized_coordinates: ``True`` for ``[-1, 1]`` coordinates, ``False`` for pixels.
        temperature_mode: ``"multiply"`` (``softmax(x * t)``) or ``"divide"`` (kornia 0.9).
        align_corners: normalized convention; ``True`` kornia, ``False`` dsntnn.

    Returns:
        ``(B, N, 2)`` ``(x, y)`` in ``input``'s dtype.
    """
    validate_tensor(input, "input", "(B, N, H, W)", 4)
    temperature = positive_scalar(temperature, "temperature")
    divide = bool(mode_code(temperature_mode, "temperature_mode", TEMPERATURE_MODES))
    normalized_coordinates, align_corners = bool(normalized_coordinates), bool(align_corners)
    if is_exporting():
        t = torch.as_tensor(temperature, device=input.device).to(torch.float32)
        return torch.ops.kpx.spatial_soft_argmax2d(input, t, divide, normalized_coordinates, align_corners)
    return reference(input, temperature, divide, normalized_coordinates, align_corners)


class SpatialSoftArgmax2d(nn.Module):
    """Module form of :func:`spatial_soft_argmax2d`; ``(B, N, H, W)`` -> ``(B, N, 2)``.

    Pass an ``nn.Parameter`` as ``temperature`` to learn it.
    """

    def __init__(
        self,
        temperature: Tensor | float = 1.0,
        normalized_coordinates: bool = True,
        *,
        temperature_mode: str = "multiply",
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        positive_scalar(temperature, "temperature")
        mode_code(temperature_mode, "temperature_mode", TEMPERATURE_MODES)
        self.temperature = temperature
        self.normalized_coordinates = normalized_coordinates
        self.temperature_mode = temperature_mode
        self.align_corners = align_corners

    def forward(self, input: Tensor) -> Tensor:
        return spatial_soft_argmax2d(
            input,
            self.temperature,
            self.normalized_coordinates,
            temperature_mode=self.temperature_mode,
            align_corners=self.align_corners,
        )


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def SpatialSoftArgmax2d(
        input, temperature, temperature_divide: int = 0, normalized_coordinates: int = 1, align_corners: int = 1
    ):
        t = op.Cast(temperature, to=FLOAT)
        beta = op.Where(op.Cast(temperature_divide, to=BOOL), op.Reciprocal(t), t)
        h = op.Shape(input, start=2, end=3)
        w = op.Shape(input, start=3, end=4)
        hw = op.Mul(h, w)
        logits = op.Reshape(op.Cast(input, to=FLOAT), op.Concat(op.Shape(input, start=0, end=2), hw, axis=0))
        # A constant temperature folds this If away at load time (ORT, onnxscript optimizer),
        # so the default temperature costs no full-size multiply.
        if op.Equal(beta, op.Constant(value_float=1.0)):
            probs = op.Softmax(logits, axis=2)
        else:
            probs = op.Softmax(logits * beta, axis=2)
        # pixel grid (H*W, 2): (k mod W, k div W) of each flat index k (unbroadcast int ops: fastest in ORT)
        k = op.Range(op.Constant(value_int=0), op.Squeeze(hw), op.Constant(value_int=1))
        grid = op.Cast(op.Concat(op.Unsqueeze(op.Mod(k, w), [1]), op.Unsqueeze(op.Div(k, w), [1]), axis=1), to=FLOAT)
        xy = op.MatMul(probs, grid)
        wh = op.Concat(w, h, axis=0)
        # the convention's affine map (i - c) * s, on the (B, N, 2) result: rows of probs sum to one
        n = op.Cast(wh, to=FLOAT)
        nrm = op.Cast(normalized_coordinates, to=BOOL)
        ac = op.Cast(align_corners, to=FLOAT)
        scale = op.Where(nrm, 2.0 / op.Max(n - ac, ac), op.Constant(value_float=1.0))
        centre = op.Where(nrm, (n - 1.0) * 0.5, op.Constant(value_float=0.0))
        return op.CastLike((xy - centre) * scale, input)

    return SpatialSoftArgmax2d


def samples() -> list[Sample]:
    """Logits with peaks, in both temperature modes and every convention."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 6, generator=g) * 4
    dyn = ({0: "B", 1: "N", 2: "H", 3: "W"},)
    return [
        Sample("default", (x,)),
        Sample("pixel_t2", (x, 2.0, False), dynamic=dyn),
        Sample("divide_centres", (x, 0.7, True), {"temperature_mode": "divide", "align_corners": False}, dyn),
        Sample("normalized_dynamic", (x, 1.5, True), dynamic=dyn),
    ]


SPEC = register(
    OpSpec(
        name="spatial_soft_argmax2d",
        onnx_op_type="SpatialSoftArgmax2d",
        description="soft-argmax / DSNT: expected (x, y) under the spatial softmax of each channel",
        functional=spatial_soft_argmax2d,
        module=SpatialSoftArgmax2d,
        reference=reference,
        fake=_fake,
        inputs=(
            OnnxInput("input", "logits (B, N, H, W)"),
            OnnxInput("temperature", "0-d float32 temperature", "tensor(float)"),
        ),
        outputs=(OnnxInput("output", "expected (x, y) (B, N, 2), input dtype"),),
        attributes=(
            TEMPERATURE_ATTRIBUTE,
            *COORDINATE_ATTRIBUTES,
        ),
        build_function=build_function,
        samples=samples,
        adversarial=logits_adversarial,  # the same logits suite as spatial_softmax2d
        # fp32: float32 rounding of sums over H*W. fp16: computed in float32, rounded once to half: 2^-11
        # relative, at most one half ulp (2^-10) from another once-rounded result: rtol 1e-3; near coordinate 0
        # the float32 sum's own cancellation error stays, so atol is the float32 one.
        tolerances={torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-5), torch.float64: (1e-5, 1e-5)},
        conventions="output (x, y): pixel, or normalized with align_corners True (kornia) / False (dsntnn)",
    )
)
