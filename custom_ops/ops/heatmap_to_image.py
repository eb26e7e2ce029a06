"""heatmap_to_image: keypoints in heatmap pixels to image pixels, through each sample's crop box (top-down pose).

``keypoints (B, K, 2)`` as ``(x, y)`` in heatmap pixels (e.g. from :func:`decode_heatmaps`),
``boxes (B, 4)``, ``heatmap_size = (H, W)`` -> ``(B, K, 2)`` in image pixels.

Definition, per axis (``x`` shown; ``y`` uses ``y0``, ``h`` and ``H``)::

    x_img = x0 + x_hm * w / W          scale_mode="msra"
    x_img = x0 + x_hm * w / (W - 1)    scale_mode="udp"

where ``(x0, y0)`` is the top-left corner and ``(w, h)`` the size of the crop box, in image pixels:

- ``box_format="xywh"``: ``(x0, y0, w, h)``;
- ``box_format="xyxy"``: ``(x0, y0, x1, y1)``, ``w = x1 - x0``;
- ``box_format="cs"``: ``(cx, cy, sw, sh)``, mmpose's ``bbox_center`` and ``bbox_scale`` in pixels
  (mmpose 1.x; multiply mmpose 0.x's ``scale`` by its ``pixel_std`` 200): ``x0 = cx - sw / 2``, ``w = sw``.

The box is the region that was actually warped to the network input, i.e. *after* mmpose's padding
(``bbox_xyxy2cs(..., padding=1.25)``) and aspect-ratio fix (``TopdownAffine``), not the detector's box.
No rotation (test-time crops are axis-aligned).

Sources. ``"msra"``: MSRA/HRNet's and mmpose 0.x's ``transform_preds`` (``scale_x = scale[0] / W``,
``x_img = x_hm * scale_x + center[0] - scale[0] * 0.5``; HRNet's inverse affine transform is the same map
without rotation), and mmpose 1.x ``MSRAHeatmap.decode`` (``keypoints * input_size / heatmap_size``)
followed by ``TopdownPoseEstimator.add_pred_to_datasample`` (``keypoints / input_size * bbox_scale +
bbox_center - 0.5 * bbox_scale``); the input size cancels. ``"udp"`` (Huang et al., CVPR 2020: pixel
centres at integer coordinates, so the ``W`` heatmap pixels span ``W - 1`` intervals): mmpose 0.x
``transform_preds(..., use_udp=True)`` (``scale_x = scale[0] / (W - 1.0)``) and mmpose 1.x
``UDPHeatmap.decode`` (``keypoints / [W - 1, H - 1] * input_size``) followed by the same
``add_pred_to_datasample``. (UDP's encoder scales by ``(input - 1) / (heatmap - 1)``; its decoder, and so
kpx, maps back with ``box / (heatmap - 1)``.)

Decisions: ``heatmap_size`` is static, a node attribute (like ``gaussian_heatmaps``' ``size``): the heatmap
size is fixed by the model's head, the node does not need the heatmaps tensor (keypoints may come from a
regression head), and the scale folds into constants. ``"udp"`` needs ``H, W >= 2`` (``W - 1`` divides);
``"msra"`` takes any size >= 1. Keypoints and boxes are computed in float32 for fp16/bf16 keypoints (boxes
in any float dtype; the ONNX node takes them as float32) and the result is cast to the keypoints' dtype
once: image coordinates in float16 are only exact to 0.5 px at 1024-2048 px. Non-finite values propagate
(a NaN keypoint stays NaN). Differentiable in keypoints and boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from custom_ops.ops._common import (
    BOX_FORMAT_CHOICES,
    FLOAT,
    as_sequence,
    compute_dtype,
    is_exporting,
    mode_code,
    validate_tensor,
)
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register

#: ``scale_mode`` strings and their meaning, in the order of their ONNX attribute codes (0, 1)
SCALE_MODES = {"msra": "box / heatmap size", "udp": "box / (heatmap size - 1)"}


def box_origin_extent(boxes: Tensor, box_format: int) -> tuple[Tensor, Tensor]:
    """``(x0, y0)`` and ``(w, h)`` of ``boxes (B, 4)`` in the given format code, each ``(B, 2)``."""
    first, second = boxes[:, :2], boxes[:, 2:]
    if box_format == 1:  # xyxy
        return first, second - first
    if box_format == 2:  # cs
        return first - 0.5 * second, second
    return first, second


def reference(keypoints: Tensor, boxes: Tensor, heatmap_size: list[int], box_format: int, scale_mode: int) -> Tensor:
    """Plain torch definition. ``(B, K, 2)``, ``(B, 4)`` -> ``(B, K, 2)``; codes as the ONNX attributes."""
    dtype = compute_dtype(keypoints.dtype)
    p = keypoints.to(dtype)
    origin, extent = box_origin_extent(boxes.to(device=p.device, dtype=dtype), box_format)
    height, width = heatmap_size
    intervals = p.new_tensor([width, height]) - scale_mode  # (W, H), or (W - 1, H - 1) for udp
    scale = extent / intervals
    return (origin.unsqueeze(1) + p * scale.unsqueeze(1)).to(keypoints.dtype)


def _fake(keypoints: Tensor, *_) -> Tensor:
    return torch.empty_like(keypoints)


def _check_inputs(keypoints: Tensor, boxes: Tensor) -> None:
    validate_tensor(keypoints, "keypoints", "(B, K, 2)", 3)
    if keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (B, K, 2); got shape {tuple(keypoints.shape)}")
    validate_tensor(boxes, "boxes", "(B, 4)", 2)
    if boxes.shape != (keypoints.shape[0], 4):
        raise ValueError(
            f"boxes must have shape (B, 4) = ({keypoints.shape[0]}, 4), one box per sample of keypoints; "
            f"got shape {tuple(boxes.shape)}"
        )


def heatmap_to_image(
    keypoints: Tensor,
    boxes: Tensor,
    heatmap_size: Sequence[int],
    *,
    box_format: str = "xywh",
    scale_mode: str = "msra",
) -> Tensor:
    """Maps keypoints from heatmap pixels to image pixels through each sample's crop box.

    Args:
        keypoints: ``(B, K, 2)`` as ``(x, y)`` in heatmap pixels.
        boxes: ``(B, 4)`` crop boxes in image pixels, in ``box_format``.
        heatmap_size: ``(H, W)`` of the heatmaps the keypoints were decoded from (static).
        box_format: ``"xywh"`` (x0, y0, w, h), ``"xyxy"`` (x0, y0, x1, y1) or ``"cs"`` (mmpose's
            ``bbox_center`` and ``bbox_scale``, in pixels).
        scale_mode: ``"msra"`` (``x0 + x * w / W``) or ``"udp"`` (``x0 + x * w / (W - 1)``).

    Returns:
        ``(B, K, 2)`` ``(x, y)`` in image pixels, in ``keypoints``' dtype.
    """
    _check_inputs(keypoints, boxes)
    size = list(as_sequence(heatmap_size, "heatmap_size", 2, " (H, W)"))
    fmt = mode_code(box_format, "box_format", BOX_FORMAT_CHOICES)
    mode = mode_code(scale_mode, "scale_mode", SCALE_MODES)
    if mode == 1 and min(size) < 2:
        raise ValueError(f"heatmap_size must be >= 2 on both axes for scale_mode='udp' (w / (W - 1)); got {size}")
    if is_exporting():
        return torch.ops.kpx.heatmap_to_image(keypoints, boxes.to(torch.float32), size, fmt, mode)
    return reference(keypoints, boxes, size, fmt, mode)


class HeatmapToImage(nn.Module):
    """Module form of :func:`heatmap_to_image`; ``(keypoints (B, K, 2), boxes (B, 4))`` -> ``(B, K, 2)``."""

    def __init__(self, heatmap_size: Sequence[int], *, box_format: str = "xywh", scale_mode: str = "msra") -> None:
        super().__init__()
        self.heatmap_size = as_sequence(heatmap_size, "heatmap_size", 2, " (H, W)")
        mode_code(box_format, "box_format", BOX_FORMAT_CHOICES)
        if mode_code(scale_mode, "scale_mode", SCALE_MODES) == 1 and min(self.heatmap_size) < 2:
            raise ValueError(f"heatmap_size must be >= 2 on both axes for scale_mode='udp'; got {heatmap_size}")
        self.box_format = box_format
        self.scale_mode = scale_mode

    def forward(self, keypoints: Tensor, boxes: Tensor) -> Tensor:
        return heatmap_to_image(
            keypoints, boxes, self.heatmap_size, box_format=self.box_format, scale_mode=self.scale_mode
        )

    def extra_repr(self) -> str:
        return f"heatmap_size={self.heatmap_size}, box_format={self.box_format!r}, scale_mode={self.scale_mode!r}"


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def HeatmapToImage(keypoints, boxes, heatmap_size: list[int], box_format: int = 0, scale_mode: int = 0):
        p = op.Cast(keypoints, to=FLOAT)  # (B, K, 2)
        b = op.Cast(boxes, to=FLOAT)  # (B, 4)
        first = op.Slice(b, [0], [2], [1])
        second = op.Slice(b, [2], [4], [1])
        fmt = op.Constant(value_int=box_format)
        # the format is an attribute: these Wheres fold to one branch at load time
        origin = op.Where(op.Equal(fmt, op.Constant(value_int=2)), op.Sub(first, op.Mul(second, 0.5)), first)
        extent = op.Where(op.Equal(fmt, op.Constant(value_int=1)), op.Sub(second, first), second)
        hw = op.Constant(value_ints=heatmap_size)
        wh = op.Concat(op.Slice(hw, [1], [2]), op.Slice(hw, [0], [1]), axis=0)
        intervals = op.Cast(op.Sub(wh, op.Constant(value_int=scale_mode)), to=FLOAT)  # (W, H) or (W - 1, H - 1)
        scale = op.Div(extent, intervals)
        out = op.Add(op.Unsqueeze(origin, [1]), op.Mul(p, op.Unsqueeze(scale, [1])))
        return op.CastLike(out, keypoints)

    return HeatmapToImage


def samples() -> list[Sample]:
    """Keypoints on and off a 16x12 heatmap, boxes in each format, both scale modes; B and K dynamic."""
    g = torch.Generator().manual_seed(12)
    kp = torch.rand(3, 5, 2, generator=g) * torch.tensor([13.0, 17.0]) - 0.5
    kp[1, 2] = torch.tensor([float("nan"), 4.0])
    xywh = torch.cat([torch.rand(3, 2, generator=g) * 600, torch.rand(3, 2, generator=g) * 300 + 20], 1)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    cs = torch.cat([xywh[:, :2] + 0.5 * xywh[:, 2:], xywh[:, 2:]], 1)
    dyn = ({0: "B", 1: "K"}, {0: "B"})
    return [
        Sample("xywh_msra_dynamic", (kp, xywh, (16, 12)), dynamic=dyn),
        Sample("cs_udp_dynamic", (kp, cs, (16, 12)), {"box_format": "cs", "scale_mode": "udp"}, dynamic=dyn),
        Sample("xyxy_udp", (kp, xyxy, (16, 12)), {"box_format": "xyxy", "scale_mode": "udp"}),
        Sample("cs_msra", (kp, cs, (64, 48)), {"box_format": "cs"}),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for ``keypoints (B, K, 2)``, ``boxes (B, 4)`` (B, K dynamic in the export sample)."""
    kp = torch.tensor([[[3.0, 4.0], [float("nan"), 2.0], [float("inf"), 1.0], [-2.0, 20.0]]])
    boxes = torch.tensor([[10.0, 20.0, 0.0, 1e6]])  # zero width, huge height
    return {
        "nan_inf_zero_huge": (kp, boxes),
        "empty_batch": (torch.zeros(0, 4, 2), torch.zeros(0, 4)),
        "no_keypoints": (torch.zeros(2, 0, 2), torch.ones(2, 4)),
    }


SPEC = register(
    OpSpec(
        name="heatmap_to_image",
        onnx_op_type="HeatmapToImage",
        description="keypoints in heatmap pixels to image pixels through each sample's crop box (msra / udp)",
        functional=heatmap_to_image,
        module=HeatmapToImage,
        reference=reference,
        fake=_fake,
        inputs=(
            OnnxInput("keypoints", "(B, K, 2) as (x, y) in heatmap pixels"),
            OnnxInput("boxes", "(B, 4) float32 crop boxes in image pixels", "tensor(float)"),
        ),
        outputs=(OnnxInput("image_keypoints", "(B, K, 2) as (x, y) in image pixels, keypoints' dtype"),),
        attributes=(
            OnnxAttribute("heatmap_size", "ints", None, "(H, W) of the heatmaps"),
            OnnxAttribute("box_format", "int", 0, "0: (x0, y0, w, h); 1: (x0, y0, x1, y1); 2: (cx, cy, sw, sh)"),
            OnnxAttribute("scale_mode", "int", 0, "0: msra, w / W; 1: udp, w / (W - 1)"),
        ),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: a multiply-add of float32 values (image coordinates up to ~1e3: a few ulps); fp16: the float32
        # result rounded once to half (eps 9.8e-4)
        tolerances={torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.float64: (1e-5, 1e-5)},
        conventions="keypoints in heatmap pixels in, image pixels out; msra w / W or udp w / (W - 1) per axis",
    )
)
