"""spatial_softmax2d: softmax over the H*W values of each channel.

``input (B, N, H, W)`` -> ``(B, N, H, W)``.

Temperature convention (decided, docs/spec.md): ``temperature_mode="multiply"`` is
``softmax(input * temperature)`` (kornia <= 0.8, mmpose's ``beta``);
``"divide"`` is ``softmax(input / temperature)`` (kornia 0.9). The ONNX node
carries the mode as the int attribute ``temperature_divide`` (0 or 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from custom_ops.ops._common import (
    BOOL,
    FLOAT,
    TEMPERATURE_ATTRIBUTE,
    TEMPERATURE_MODES,
    compute_dtype,
    is_exporting,
    logits_adversarial,
    mode_code,
    positive_scalar,
    scaled_softmax,
    validate_tensor,
)
from custom_ops.registry import OnnxInput, OpSpec, Sample, register


def reference(
    input: Tensor,
    temperature: Tensor | float,
    temperature_divide: bool,
) -> Tensor:
    """Plain torch definition. ``input (B, N, H, W)`` -> ``(B, N, H, W)``."""
    batch, channels, height, width = input.shape
    logits = input.to(compute_dtype(input.dtype)).reshape(batch, channels, height * width)
    return scaled_softmax(logits, temperature, temperature_divide).reshape(input.shape).to(input.dtype)


def _fake(input: Tensor, *_) -> Tensor:
    return torch.empty_like(input)


def spatial_softmax2d(
    input: Tensor,
    temperature: Tensor | float = 1.0,
    *,
    temperature_mode: str = "multiply",
) -> Tensor:
    """Softmax over the spatial positions of each channel.

    Args:
        input: logits ``(B, N, H, W)``.
        temperature: Python number > 0 or a 0-d tensor (e.g. a learned parameter).
        temperature_mode: ``"multiply"`` (``softmax(x * t)``) or ``"divide"`` (``softmax(x / t)``).

    Returns:
        ``(B, N, H, W)`` probabilities, each channel summing to one, in ``input``'s dtype.
    """
    validate_tensor(input, "input", "(B, N, H, W)", 4)
    temperature = positive_scalar(temperature, "temperature")
    divide = bool(mode_code(temperature_mode, "temperature_mode", TEMPERATURE_MODES))
    if is_exporting():
        t = torch.as_tensor(temperature, device=input.device).to(torch.float32)
        return torch.ops.kpx.spatial_softmax2d(input, t, divide)
    return reference(input, temperature, divide)


class SpatialSoftmax2d(nn.Module):
    """Module form of :func:`spatial_softmax2d`; ``(B, N, H, W)`` -> ``(B, N, H, W)``."""

    def __init__(self, temperature: Tensor | float = 1.0, *, temperature_mode: str = "multiply") -> None:
        super().__init__()
        positive_scalar(temperature, "temperature")
        mode_code(temperature_mode, "temperature_mode", TEMPERATURE_MODES)
        self.temperature = temperature
        self.temperature_mode = temperature_mode

    def forward(self, input: Tensor) -> Tensor:
        return spatial_softmax2d(input, self.temperature, temperature_mode=self.temperature_mode)


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def SpatialSoftmax2d(input, temperature, temperature_divide: int = 0):
        t = op.Cast(temperature, to=FLOAT)
        beta = op.Where(op.Cast(temperature_divide, to=BOOL), op.Reciprocal(t), t)
        hw = op.Mul(op.Shape(input, start=2, end=3), op.Shape(input, start=3, end=4))
        flat = op.Concat(op.Shape(input, start=0, end=2), hw, axis=0)  # no -1: B or N may be 0
        logits = op.Reshape(op.Cast(input, to=FLOAT), flat)
        # A constant temperature folds this If away at load time (ORT, onnxscript optimizer),
        # so the default temperature costs no full-size multiply.
        if op.Equal(beta, op.Constant(value_float=1.0)):
            p = op.Softmax(logits, axis=2)
        else:
            p = op.Softmax(logits * beta, axis=2)
        return op.CastLike(op.Reshape(p, op.Shape(input)), input)

    return SpatialSoftmax2d


def samples() -> list[Sample]:
    """Representative calls; dynamic samples mark B, N, H, W of ``input`` as dynamic."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g) * 3
    dyn = ({0: "B", 1: "N", 2: "H", 3: "W"},)
    return [
        Sample("multiply", (x, 1.0)),
        Sample("divide_t0.5", (x, 0.5), {"temperature_mode": "divide"}, dynamic=dyn),
        Sample("multiply_t3", (x, 3.0), dynamic=dyn),
    ]


SPEC = register(
    OpSpec(
        name="spatial_softmax2d",
        onnx_op_type="SpatialSoftmax2d",
        description="softmax over the H*W positions of each channel",
        functional=spatial_softmax2d,
        module=SpatialSoftmax2d,
        reference=reference,
        fake=_fake,
        inputs=(
            OnnxInput("input", "logits (B, N, H, W)"),
            OnnxInput("temperature", "0-d float32 temperature", "tensor(float)"),
        ),
        outputs=(OnnxInput("output", "probabilities (B, N, H, W), input dtype"),),
        attributes=(TEMPERATURE_ATTRIBUTE,),
        build_function=build_function,
        samples=samples,
        adversarial=logits_adversarial,
        # fp32: float32 rounding of sums over H*W. fp16: computed in float32, rounded once to half: 2^-11
        # relative, and at most one half ulp (2^-10 relative) from another once-rounded result, so rtol 1e-3;
        # probabilities below 6.1e-5 are subnormal halves, spaced 6e-8 apart: atol 1e-6.
        tolerances={torch.float32: (1e-5, 1e-6), torch.float16: (1e-3, 1e-6), torch.float64: (1e-5, 1e-6)},
        conventions="no coordinates; temperature multiplies by default (temperature_mode)",
    )
)
