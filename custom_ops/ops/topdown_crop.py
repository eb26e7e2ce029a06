"""topdown_crop: detector boxes to network inputs, as mmpose 1.3.2's top-down pipeline crops them.

``images (F, C, H, W)``, ``boxes (N, 4)``, ``batch_index (N,)`` -> ``crops (N, C, h, w)`` and
``boxes_cs (N, 4)``, for ``input_size = (w, h)``. ``F``: frames; ``N``: boxes, i.e. crops (the network's batch).

Definition (float32, per box; ``a = w / h`` of the input size):

1. centre and size, ``padding`` applied in every format (``GetBBoxCenterScale``: mmpose's ``bbox_xyxy2cs``)::

       "xyxy" (x0, y0, x1, y1): c = (p0 + p1) * 0.5,  s = (p1 - p0) * padding
       "xywh" (x0, y0, w, h):    c = p0 + size * 0.5, s = size * padding
       "cs"   (cx, cy, sw, sh):  c = (cx, cy),        s = (sw, sh) * padding

2. aspect fix (``TopdownAffine._fix_aspect_ratio``): ``s = (sw, sw / a) if sw > sh * a else (sh * a, sh)``.
   ``boxes_cs = (c, s)``: mmpose's ``bbox_center``/``bbox_scale`` after ``TopdownAffine``.
3. crop pixel ``(i, j)`` samples the frame at (``udp=False``: ``get_warp_matrix``; ``udp=True``:
   ``get_udp_warp_matrix``; rotation 0)::

       x = (cx - 0.5 * sw) + j * (sw / w)          y = (cy - 0.5 * sh) + i * (sh / h)            MSRA
       x = (cx - 0.5 * sw) + j * (sw / (w - 1))    y = (cy - 0.5 * sh) + i * (sh / (h - 1))      UDP

   which is the inverse of ``cv2.warpAffine(frame, M, (w, h), flags=INTER_LINEAR)``'s matrix (pixel centres at
   integer coordinates), written so that it is the same float32 expression as
   ``heatmap_to_image(kp, boxes_cs, (h, w), box_format="cs", scale_mode="msra" | "udp")``: frame -> crop -> frame
   round-trips exactly. (mmpose's MSRA matrix scales y by ``w / sw``; after the aspect fix ``sh / h`` is the same
   number up to float32 rounding.)
4. bilinear with a constant-0 border, as OpenCV: the four pixels around ``(x, y)``, those outside the frame (or of
   a frame index outside ``[0, F)``) read as 0, weights ``1 - fx, fx`` and ``1 - fy, fy``.
5. ``(crop - mean) / std`` per channel when given (the 0 border becomes ``-mean / std``, as in mmpose/rtmlib).

Decisions:

- ``input_size`` is ``(w, h)``, mmpose's codec ``input_size`` order (``(192, 256)`` for a 256x192 model), so a
  config value can be copied; the crops are ``(N, C, h, w)``. It is static (node attribute), like ``padding``,
  ``box_format`` and ``udp``. ``udp=True`` needs ``w, h >= 2``.
- ``padding`` applies to ``"cs"`` boxes too: the format only says how a box is written. Pass mmpose's
  ``bbox_center``/``bbox_scale`` (already padded) with ``padding=1.0``; ``boxes_cs`` fed back that way gives the
  same crops (the aspect fix is idempotent).
- Degenerate boxes (zero or negative size) follow the formulas, NaN-free: a zero-size box gives a constant crop,
  the bilinear value at its centre (mmpose's ``getAffineTransform`` is singular there and OpenCV then samples
  the frame's corner). Negative sizes are not reordered: like mmpose, the crop comes out mirrored.
  Non-finite boxes give NaN crops; a NaN pixel makes NaN every output pixel whose 2x2 cell holds it.
- dtypes: ``images`` float32/float16/bfloat16/float64 or uint8 (a frame as decoded), ``boxes`` any float,
  ``batch_index`` int64/int32. Computed in float32 (float64 too); the outputs have the images' float dtype, float32
  for uint8 frames (kpx's rule: outputs follow the main input). The ``kpx`` node reads uint8 and float32 frames as
  they are (other floats are cast to float32 before it) and returns float32; the cast to the images' dtype and the
  normalisation are standard ops after it.
- ``channels_last=True``: ``images`` is ``(F, H, W, C)`` (OpenCV's layout, stacked); the crops are ``(N, C, h, w)``
  and equal those of the same frames as ``(F, C, H, W)``, bit for bit. The node reads the frames in place: no
  whole-frame transpose in the file or before it.
- ``mean``/``std`` are applied after the node, as standard ``Sub``/``Div`` on float32 constants: the registry's
  node attributes are ints, floats or int lists (no float lists), and so the crop node stays the same for any
  normalisation.
- ``batch_index`` outside ``[0, F)``: eagerly a ``ValueError``; in an exported graph (no data-dependent checks)
  that box reads no frame, so its crop is the border value (0, then ``-mean / std``) on every runtime.
  ``batch_index=None``: every box is from frame 0.

ONNX body: a gather-based bilinear (standard ops, opsets 15-21, the same body at every opset), channel-planar in
its output so that no crop-sized tensor is broadcast over an inner axis of ``C`` values:

- per axis, on ``(N, w)`` and ``(N, h)`` only: ``x0 = floor(x)``, the weight ``x - x0``, and the first neighbour's
  index in the frame zero-padded by 1 pixel before and 2 after: ``x0 + 1``, or ``W + 1`` (two zeros) when neither
  ``x0`` nor ``x0 + 1`` is in ``[0, W)`` (NaN included); a box whose frame index is outside ``[0, F)`` gets row
  ``H + 1`` of frame 0 everywhere (zeros; ``F = 0`` is padded to one zero frame);
- one table: the frames in their own dtype and layout, ``Pad``-ded by 1 before and 2 after on H and W, flat;
  strides of frame, channel, row and column in it follow ``channels_last``;
- the top-left neighbour's flat index ``(N, C, h, w)`` in int32: the pixel part ``(N, 1, h, w)`` (row + column)
  plus the frame-and-channel part ``(N, C, 1, 1)``, each made in int64 on its small tensor and cast; the other
  three are it plus one column, one row or both (a one-value ``Add`` each); four ``GatherElements`` on the one
  table, each cast to float32 (a uint8 frame is read one byte per value). int32 halves the bytes of the
  crop-sized index passes (measured against int64, crop alone: 0.87 -> 0.62 ms at 8 boxes, 3.63 -> 2.95 at 32,
  docs/spec.md); it addresses a table of at most 2^31 - 1 values (``INDEX_LIMIT``: e.g. 343 frames of 1080x1920x3
  per call). Past it every index is 0 and every weight NaN, so every crop is NaN, never read through wrapped
  indices; eagerly it is a ``ValueError`` (both measured at the limit: 26751 and 26752 px square frames,
  tests/ops/test_topdown_crop.py);
- the blend in ``(N, C, h, w)`` with ``wx`` and ``wy`` expanded to ``(N, 1, h, w)`` planes (ORT CPU broadcasts a
  plane over ``C`` in long runs, a ``(N, 1, 1, w)`` row in runs of ``w``; with the one-value corner shifts,
  measured: ~7% faster at 8 boxes, ~2% at 32, docs/spec.md), the reference's
  float32 expression op for op (``top = v00 (1 - wx) + v01 wx``, ``bottom`` alike, ``top (1 - wy) + bottom wy``): ORT's
  crops equal the reference's and a bounds-checked float32 bilinear bit for bit (tests/ops/test_topdown_crop.py);
- the aspect fix's ``sw > sh * a`` is and-ed with "neither size is NaN": OpenVINO 2026.4's CPU plugin on an
  AVX-512 CPU evaluates ``Greater(NaN, x)`` as true (measured), IEEE and the reference as false.

The measurements behind these choices (the earlier four padded tables, the pad-free bodies, ``GridSample``,
``RoiAlign``, ``If``; speed against OpenCV) are in docs/spec.md, topdown_crop, and docs/benchmarks.md (issue 14).
ORT CPU runs the body as ~20 crop-sized passes, the four ``GatherElements`` on one thread: per crop it is 6-49x
slower than ``cv2.warpAffine`` (``python benchmarks/bench_topdown_crop.py``, 1-32 boxes, 64x48 and 256x192).

Alternatives measured against (tests/ops/test_topdown_crop.py, ``test_onnx_alternatives``):

- ``GridSample`` (opset 16+, ``align_corners=1``, ``padding_mode="zeros"``): bilinear with the same zero border,
  but it samples one image per grid, so the frames must first be gathered per box (``N`` full frames copied), it
  needs normalized coordinates (``2 x / (W - 1) - 1``: a rounding step, and ``W = 1`` divides by zero), its mode
  is ``"bilinear"`` before opset 20 and ``"linear"`` from 20, and opset 15 would need this body anyway.
- ``RoiAlign`` (``sampling_ratio=1``, one sample per bin) expresses an axis-aligned affine, but it replicates the
  frame's edge instead of blending with 0 in the 1-pixel band outside the frame, and below opset 16
  (``output_half_pixel``) it widens boxes under 1 px.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from custom_ops.ops._common import (
    BOX_FORMAT_CHOICES,
    FLOAT,
    INT32,
    INT64,
    as_sequence,
    is_exporting,
    mode_code,
    tracing,
)
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register

IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8)
INDEX_DTYPES = (torch.int64, torch.int32)
INDEX_LIMIT = 2**31 - 1  # table values the ONNX body's int32 indices address


def check_input_size(input_size: Sequence[int], udp: bool) -> list[int]:
    """Validates ``input_size = (w, h)``: two ints >= 1 (>= 2 with ``udp``)."""
    fix = " (w, h), e.g. input_size=(192, 256) for a 256x192 (h x w) model, mmpose's codec order"
    values = list(as_sequence(input_size, "input_size", 2, fix))
    if udp and min(values) < 2:
        raise ValueError(f"input_size must be >= 2 on both axes with udp=True (w / (w - 1)); got {input_size!r}")
    return values


def check_padding(padding: float) -> float:
    """``padding`` must be a finite Python number > 0."""
    if isinstance(padding, bool) or not isinstance(padding, (int, float)) or not (0 < padding < math.inf):
        raise ValueError(f"padding must be a finite number > 0 (mmpose's default is 1.25); got {padding!r}")
    return float(padding)


def check_channel_values(values: Sequence[float] | None, arg: str, channels: int, positive: bool) -> list | None:
    """``mean``/``std``: None or ``channels`` finite floats (``std`` > 0)."""
    if values is None:
        return None
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{arg} must be a sequence of {channels} floats, one per channel; got {values!r}") from None
    if len(out) != channels:
        raise ValueError(f"{arg} must have one value per channel, {channels}; got {len(out)}: {values!r}")
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        raise ValueError(f"{arg} must be finite{' and > 0' if positive else ''}; got {values!r}")
    return out


def _crop_geometry(boxes: Tensor, input_size: list[int], padding: float, box_format: int, udp: int):
    """float32 ``boxes (N, 4)`` -> ``boxes_cs (N, 4)``, crop origins and pixel steps ``(N, 2)`` each."""
    first, second = boxes[:, :2], boxes[:, 2:]
    if box_format == 1:  # xyxy
        centre, extent = (first + second) * 0.5, second - first
    elif box_format == 0:  # xywh
        centre, extent = first + second * 0.5, second
    else:  # cs
        centre, extent = first, second
    scale = extent * boxes.new_tensor(padding)
    size = boxes.new_tensor(input_size)  # (w, h)
    ratio = size[0] / size[1]
    sw, sh = scale[:, :1], scale[:, 1:]
    fixed = torch.where(sw > sh * ratio, torch.cat([sw, sw / ratio], 1), torch.cat([sh * ratio, sh], 1))
    origin = centre - fixed * 0.5
    step = fixed / (size - udp)
    return torch.cat([centre, fixed], 1), origin, step


def _axis(origin: Tensor, step: Tensor, n: int, limit: int, valid: Tensor) -> tuple[Tensor, Tensor]:
    """One axis, ``(N, n)`` each: the index of the first of the two neighbours in the frame padded with one zero
    pixel before it and two after it, and the weight of the second one.

    Neighbours ``(low, low + 1)`` are ``(low + 1, low + 2)`` padded; when neither is in ``[0, limit)`` (or ``low``
    is NaN, or the box's ``valid`` is false) the first is ``limit + 1``, so that both read the two trailing
    zeros."""
    pos = origin.unsqueeze(1) + torch.arange(n, device=origin.device, dtype=origin.dtype) * step.unsqueeze(1)
    low = torch.floor(pos)
    frac = pos - low
    either = (low >= -1) & (low < limit) & valid
    first = torch.where(either, low + 1, torch.full((), limit + 1, dtype=low.dtype, device=low.device))
    return first.to(torch.int64), frac


def reference(
    images: Tensor,
    boxes: Tensor,
    batch_index: Tensor,
    input_size: list[int],
    padding: float,
    box_format: int,
    udp: int,
    channels_last: int = 0,
) -> tuple[Tensor, Tensor]:
    """Plain torch definition, float32 out: ``(F, C, H, W)``, ``(N, 4)``, ``(N,)`` -> ``(N, C, h, w)``, ``(N, 4)``.

    Codes as the ONNX attributes; a ``batch_index`` outside ``[0, F)`` reads zeros (the graph's behaviour);
    ``channels_last``: ``images`` is ``(F, H, W, C)``, the same frames."""
    frames = (images.permute(0, 3, 1, 2) if channels_last else images).to(torch.float32)
    n_frames, channels, height, width = frames.shape
    out_w, out_h = input_size
    boxes_cs, origin, step = _crop_geometry(
        boxes.to(device=frames.device, dtype=torch.float32), input_size, padding, box_format, udp
    )
    index = batch_index.to(device=frames.device, dtype=torch.int64)
    valid_frame = (index >= 0) & (index < n_frames)
    true = torch.ones((), dtype=torch.bool, device=frames.device)
    x0, fx = _axis(origin[:, 0], step[:, 0], out_w, width, true)  # (N, w)
    y0, fy = _axis(origin[:, 1], step[:, 1], out_h, height, valid_frame.view(-1, 1))  # (N, h)
    # the frames padded with zeros, 1 before and 2 after on each axis (and one zero frame when F = 0, so that there
    # is something to read), flat: max(F, 1) * C * (H + 3) * (W + 3) values; a box whose frame index is not in
    # [0, F) reads the two zero rows after the last of frame 0
    table = nn.functional.pad(frames, (1, 2, 1, 2, 0, 0, 0, int(n_frames == 0))).reshape(-1)
    row_len = width + 3
    plane = (height + 3) * row_len
    frame = torch.where(valid_frame, index, 0)
    starts = frame.view(-1, 1) * (channels * plane) + torch.arange(channels, device=frames.device) * plane  # (N, C)
    rows = starts.unsqueeze(2) + y0.unsqueeze(1) * row_len  # (N, C, h)
    flat = (rows.unsqueeze(3) + x0.view(-1, 1, 1, out_w)).view(-1)  # (N, C, h, w) flat: the top-left neighbours
    # the other three neighbours are the same indices into the table shifted by 1, W + 3 and W + 4
    # (index_select: the fastest gather of torch 2.13 on CPU, twice take's speed)
    v00, v01, v10, v11 = (
        table[shift:].index_select(0, flat).view(-1, channels, out_h, out_w) for shift in (0, 1, row_len, row_len + 1)
    )
    wx, wy = fx[:, None, None, :], fy[:, None, :, None]
    top = v00 * (1 - wx) + v01 * wx
    bottom = v10 * (1 - wx) + v11 * wx
    crops = top * (1 - wy) + bottom * wy
    return crops, boxes_cs


def _torch_impl(*args: Any) -> tuple[Tensor, Tensor]:
    """The reference with contiguous crops (the torch op's schema comes from the OpSpec)."""
    crops, boxes_cs = reference(*args)
    return crops.contiguous(), boxes_cs


def _fake(
    images: Tensor, boxes: Tensor, _batch_index: Tensor, input_size: list[int], *attrs: Any
) -> tuple[Tensor, Tensor]:
    channels_last = attrs[-1]
    n, (out_w, out_h) = boxes.shape[0], input_size
    crops = images.new_empty((n, images.shape[3 if channels_last else 1], out_h, out_w), dtype=torch.float32)
    return crops, boxes.new_empty((n, 4), dtype=torch.float32)


def _check_inputs(images: Tensor, boxes: Tensor, batch_index: Tensor | None, channels_last: bool) -> None:
    legend = "(F, H, W, C) (channels_last=True)" if channels_last else "(F, C, H, W)"
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape {legend}; got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape {legend}, frames first; got shape {tuple(images.shape)}")
    if images.dtype not in IMAGE_DTYPES:
        raise ValueError(f"images must be float32/float16/bfloat16/float64 or uint8; got {images.dtype}")
    if not isinstance(boxes, Tensor):
        raise ValueError(f"boxes must be a torch.Tensor of shape (N, 4); got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), one box per row; got shape {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating tensor (float16/bfloat16/float32/float64); got {boxes.dtype}")
    if not tracing():
        if channels_last:
            frames, height, width, channels = images.shape
        else:
            frames, channels, height, width = images.shape
        padded = max(frames, 1) * channels * (height + 3) * (width + 3)
        if padded > INDEX_LIMIT:
            per_call = INDEX_LIMIT // (channels * (height + 3) * (width + 3))
            fix = f"pass at most {per_call} such frames per call" if per_call else "crop from a downscaled frame"
            raise ValueError(
                f"images too large for one call: {frames} frame(s) of {channels}x{height}x{width} are {padded} "
                f"values zero-padded, over the {INDEX_LIMIT} (2^31 - 1) that the exported crop's int32 indices "
                f"address; {fix}"
            )
    if batch_index is None:
        return
    if not isinstance(batch_index, Tensor):
        raise ValueError(f"batch_index must be None or an int64 tensor (N,); got {type(batch_index).__name__}")
    if batch_index.dtype not in INDEX_DTYPES:
        raise ValueError(f"batch_index must be an int64 (or int32) tensor, frame of each box; got {batch_index.dtype}")
    if batch_index.shape != (boxes.shape[0],):
        raise ValueError(
            f"batch_index must have shape (N,) = ({boxes.shape[0]},), one frame index per box; "
            f"got shape {tuple(batch_index.shape)}"
        )
    if not tracing() and batch_index.numel():
        low, high = int(batch_index.min()), int(batch_index.max())
        if low < 0 or high >= images.shape[0]:
            raise ValueError(
                f"batch_index must be in [0, F) = [0, {images.shape[0]}), the frames of images; got values from "
                f"{low} to {high}"
            )


def topdown_crop(
    images: Tensor,
    boxes: Tensor,
    batch_index: Tensor | None = None,
    *,
    input_size: Sequence[int],
    padding: float = 1.25,
    box_format: str = "xyxy",
    udp: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_last: bool = False,
) -> tuple[Tensor, Tensor]:
    """Crops each box from its frame to the network input, as mmpose's top-down pipeline does.

    Args:
        images: ``(F, C, H, W)`` frames, float or uint8; ``(F, H, W, C)`` with ``channels_last`` (frames as
            OpenCV decodes them, stacked).
        boxes: ``(N, 4)`` boxes in frame pixels, in ``box_format``.
        batch_index: ``(N,)`` int64 frame of each box; None: every box is from frame 0.
        input_size: ``(w, h)`` of the network input (mmpose's codec order; static).
        padding: box scale factor (mmpose's ``bbox_padding``, 1.25), in every box format.
        box_format: ``"xyxy"``, ``"xywh"`` or ``"cs"`` (centre x, centre y, width, height).
        udp: ``get_udp_warp_matrix`` (pixel steps ``s / (w - 1)``) instead of ``get_warp_matrix`` (``s / w``).
        mean, std: per-channel normalisation ``(crop - mean) / std`` (``C`` floats each), or None.
        channels_last: ``images`` is ``(F, H, W, C)``; the crops are ``(N, C, h, w)`` either way.

    Returns:
        ``crops (N, C, h, w)`` and ``boxes_cs (N, 4)`` = (centre x, centre y, scale w, scale h) in frame pixels
        after padding and the aspect fix; in the images' dtype (float32 for uint8 images).
    """
    _check_inputs(images, boxes, batch_index, bool(channels_last))
    size = check_input_size(input_size, bool(udp))
    pad, fmt = check_padding(padding), mode_code(box_format, "box_format", BOX_FORMAT_CHOICES)
    last = int(bool(channels_last))
    channels = images.shape[3 if last else 1]
    mean_values = check_channel_values(mean, "mean", channels, positive=False)
    std_values = check_channel_values(std, "std", channels, positive=True)
    if batch_index is None:
        batch_index = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    batch_index = batch_index.to(torch.int64)
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    if is_exporting():
        # the node reads uint8 and float32 frames as they are (its table keeps their dtype: a quarter of the
        # memory traffic for uint8); other float frames are cast to float32 first
        frames = images if images.dtype in (torch.uint8, torch.float32) else images.to(torch.float32)
        crops, boxes_cs = torch.ops.kpx.topdown_crop(
            frames, boxes.to(torch.float32), batch_index, size, pad, fmt, int(bool(udp)), last
        )
    else:
        crops, boxes_cs = reference(images, boxes, batch_index, size, pad, fmt, int(bool(udp)), last)
    if mean_values is not None:
        crops = crops - crops.new_tensor(mean_values).view(-1, 1, 1)
    if std_values is not None:
        crops = crops / crops.new_tensor(std_values).view(-1, 1, 1)
    return crops.to(out_dtype), boxes_cs.to(out_dtype)


class TopdownCrop(nn.Module):
    """Module form of :func:`topdown_crop`; ``(images, boxes, batch_index=None)`` -> ``(crops, boxes_cs)``."""

    def __init__(
        self,
        *,
        input_size: Sequence[int],
        padding: float = 1.25,
        box_format: str = "xyxy",
        udp: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = tuple(check_input_size(input_size, bool(udp)))
        self.channels_last = bool(channels_last)
        self.padding = check_padding(padding)
        mode_code(box_format, "box_format", BOX_FORMAT_CHOICES)
        self.box_format = box_format
        self.udp = bool(udp)
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    def forward(self, images: Tensor, boxes: Tensor, batch_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return topdown_crop(
            images,
            boxes,
            batch_index,
            input_size=self.input_size,
            padding=self.padding,
            box_format=self.box_format,
            udp=self.udp,
            mean=self.mean,
            std=self.std,
            channels_last=self.channels_last,
        )

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, padding={self.padding}, box_format={self.box_format!r}, udp={self.udp}, "
            f"mean={self.mean}, std={self.std}, channels_last={self.channels_last}"
        )


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``: the same ops at 15-21."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def TopdownCrop(
        images,
        boxes,
        batch_index,
        input_size: list[int],
        padding: float = 1.25,
        box_format: int = 1,
        udp: int = 0,
        channels_last: int = 0,
    ):
        b = op.Cast(boxes, to=FLOAT)  # (N, 4)
        index = op.Cast(batch_index, to=INT64)  # (N,)
        first = op.Slice(b, [0], [2], [1])
        second = op.Slice(b, [2], [4], [1])
        fmt = op.Constant(value_int=box_format)
        # the format is an attribute: these Wheres fold to one branch at load time
        is_xyxy = op.Equal(fmt, op.Constant(value_int=1))
        xywh_centre = op.Add(first, op.Mul(second, 0.5))
        other_centre = op.Where(op.Equal(fmt, op.Constant(value_int=0)), xywh_centre, first)
        centre = op.Where(is_xyxy, op.Mul(op.Add(first, second), 0.5), other_centre)
        extent = op.Where(is_xyxy, op.Sub(second, first), second)
        scale = op.Mul(extent, op.Constant(value_float=padding))
        size_int = op.Constant(value_ints=input_size)  # (w, h)
        size = op.Cast(size_int, to=FLOAT)
        ratio = op.Div(op.Slice(size, [0], [1]), op.Slice(size, [1], [2]))
        sw = op.Slice(scale, [0], [1], [1])
        sh = op.Slice(scale, [1], [2], [1])
        # NaN guard: IEEE's NaN > x is false (the reference), but OpenVINO 2026.4's CPU plugin on AVX-512 says
        # true (measured: Where(Greater(NaN, 3), NaN, 5) gives NaN), so a NaN size must not reach the compare
        finite = op.Not(op.Or(op.IsNaN(sw), op.IsNaN(sh)))
        wider = op.And(op.Greater(sw, op.Mul(sh, ratio)), finite)
        fixed = op.Where(wider, op.Concat(sw, op.Div(sw, ratio), axis=1), op.Concat(op.Mul(sh, ratio), sh, axis=1))
        origin = op.Sub(centre, op.Mul(fixed, 0.5))
        step = op.Div(fixed, op.Cast(op.Sub(size_int, op.Constant(value_int=udp)), to=FLOAT))

        # the frames' dims: (F, C, H, W), or (F, H, W, C) with channels_last (an attribute: folds at load time)
        last = op.Equal(op.Constant(value_int=channels_last), op.Constant(value_int=1))
        shape = op.Shape(images)
        dims = op.Gather(shape, op.Where(last, op.Constant(value_ints=[0, 3, 1, 2]), [0, 1, 2, 3]))  # F, C, H, W
        n_frames = op.Slice(dims, [0], [1])
        channels = op.Slice(dims, [1], [2])
        height = op.Slice(dims, [2], [3])
        width = op.Slice(dims, [3], [4])
        one = op.Constant(value_float=1.0)

        # per axis, (N, w) and (N, h): the first neighbour's index in the frame padded by 1 before and 2 after, or
        # size + 1 (two zeros) when neither neighbour is in the frame (reference's _axis)
        minus_one = op.Constant(value_float=-1.0)
        cols = op.Cast(op.Range(op.Constant(value_int=0), op.Squeeze(op.Slice(size_int, [0], [1])), 1), to=FLOAT)
        x = op.Add(op.Slice(origin, [0], [1], [1]), op.Mul(op.Unsqueeze(cols, [0]), op.Slice(step, [0], [1], [1])))
        x0 = op.Floor(x)
        fx = op.Sub(x, x0)  # (N, w)
        width_f = op.Cast(width, to=FLOAT)
        x_either = op.And(op.GreaterOrEqual(x0, minus_one), op.Less(x0, width_f))
        xi = op.Cast(op.Where(x_either, op.Add(x0, one), op.Add(width_f, one)), to=INT64)

        rows = op.Cast(op.Range(op.Constant(value_int=0), op.Squeeze(op.Slice(size_int, [1], [2])), 1), to=FLOAT)
        y = op.Add(op.Slice(origin, [1], [2], [1]), op.Mul(op.Unsqueeze(rows, [0]), op.Slice(step, [1], [2], [1])))
        y0 = op.Floor(y)
        fy = op.Sub(y, y0)  # (N, h)
        height_f = op.Cast(height, to=FLOAT)
        valid_frame = op.And(op.GreaterOrEqual(index, op.Constant(value_int=0)), op.Less(index, n_frames))
        y_either = op.And(op.GreaterOrEqual(y0, minus_one), op.Less(y0, height_f))
        y_either = op.And(y_either, op.Unsqueeze(valid_frame, [1]))  # a box without a frame reads zero rows
        yi = op.Cast(op.Where(y_either, op.Add(y0, one), op.Add(height_f, one)), to=INT64)

        # one table: the frames in their own dtype and layout, zero-padded by 1 before and 2 after on H and W (and
        # one zero frame when F = 0), flat. Strides of frame, channel, row and column in it:
        padded_w = op.Add(width, op.Constant(value_ints=[3]))
        plane = op.Mul(op.Add(height, op.Constant(value_ints=[3])), padded_w)
        unit = op.Constant(value_ints=[1])
        channel_stride = op.Where(last, unit, plane)
        column_stride = op.Where(last, channels, unit)
        row_stride = op.Mul(padded_w, column_stride)
        no_frames = op.Cast(op.Equal(n_frames, op.Constant(value_ints=[0])), to=INT64)  # (1,): pads F by 1 if 0
        zero = op.Constant(value_ints=[0])
        begin = op.Where(last, op.Constant(value_ints=[0, 1, 1, 0]), [0, 0, 1, 1])
        end = op.Where(last, op.Constant(value_ints=[2, 2, 0]), [0, 2, 2])
        table = op.Reshape(op.Pad(images, op.Concat(begin, no_frames, end, axis=0)), [-1])

        # int32 indices: the crop-sized index arithmetic and the GatherElements read half the bytes of int64
        # (measured: the crop takes 29% less time at 8 boxes, 19% at 32, docs/spec.md). They address up to
        # 2^31 - 1 table values: beyond that (eagerly a ValueError) every index part is 0 and every weight NaN,
        # so every crop is NaN
        table_size = op.Mul(op.Mul(op.Max(n_frames, unit), channels), plane)  # (1,)
        fits = op.LessOrEqual(table_size, op.Constant(value_ints=[2147483647]))  # INDEX_LIMIT

        # the top-left neighbour's flat index, (N, C, h, w); the other three are it shifted by one column, one row,
        # or both (the reference's views): one-value Adds. Parts on (N, C), (N, h), (N, w) in int64, then int32
        frame = op.Where(valid_frame, index, zero)
        channel_starts = op.Mul(op.Range(op.Constant(value_int=0), op.Squeeze(channels), 1), channel_stride)  # (C,)
        starts = op.Add(op.Unsqueeze(op.Mul(frame, op.Mul(channels, plane)), [1]), channel_starts)  # (N, C)
        starts = op.Cast(op.Where(fits, starts, zero), to=INT32)
        row_part = op.Cast(op.Where(fits, op.Mul(yi, row_stride), zero), to=INT32)  # (N, h)
        column_part = op.Cast(op.Where(fits, op.Mul(xi, column_stride), zero), to=INT32)  # (N, w)
        row_step = op.Cast(op.Where(fits, row_stride, zero), to=INT32)
        column_step = op.Cast(op.Where(fits, column_stride, zero), to=INT32)
        pixel = op.Add(op.Unsqueeze(row_part, [2]), op.Unsqueeze(column_part, [1]))  # (N, h, w)
        top_left = op.Add(op.Unsqueeze(starts, [2, 3]), op.Unsqueeze(pixel, [1]))  # (N, C, h, w)
        top_right = op.Add(top_left, column_step)
        bottom_left = op.Add(top_left, row_step)
        bottom_right = op.Add(bottom_left, column_step)
        v00 = op.Cast(op.GatherElements(table, op.Reshape(top_left, [-1]), axis=0), to=FLOAT)
        v01 = op.Cast(op.GatherElements(table, op.Reshape(top_right, [-1]), axis=0), to=FLOAT)
        v10 = op.Cast(op.GatherElements(table, op.Reshape(bottom_left, [-1]), axis=0), to=FLOAT)
        v11 = op.Cast(op.GatherElements(table, op.Reshape(bottom_right, [-1]), axis=0), to=FLOAT)
        shape_out = op.Concat(op.Shape(index), channels, op.Shape(yi, start=1), op.Shape(xi, start=1), axis=0)

        # the weights as (N, 1, h, w) planes: broadcast over C in runs of h * w (ORT CPU)
        plane_shape = op.Concat(op.Shape(index), unit, op.Shape(yi, start=1), op.Shape(xi, start=1), axis=0)
        fx = op.Where(fits, fx, op.Constant(value_float=math.nan))  # frames over the int32 limit: NaN crops
        wx = op.Expand(op.Unsqueeze(fx, [1, 2]), plane_shape)  # (N, 1, h, w)
        wy = op.Expand(op.Unsqueeze(fy, [1, 3]), plane_shape)
        left_weight = op.Sub(one, wx)
        top = op.Add(op.Mul(op.Reshape(v00, shape_out), left_weight), op.Mul(op.Reshape(v01, shape_out), wx))
        bottom = op.Add(op.Mul(op.Reshape(v10, shape_out), left_weight), op.Mul(op.Reshape(v11, shape_out), wx))
        crops = op.Add(op.Mul(top, op.Sub(one, wy)), op.Mul(bottom, wy))
        boxes_cs = op.Concat(centre, fixed, axis=1)
        return crops, boxes_cs

    return TopdownCrop


def _frames(n: int, height: int, width: int, seed: int) -> Tensor:
    """Smooth random frames in [0, 255] (a few blobs and gradients), ``(n, 3, height, width)``."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(1, 1, -1, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, 1, -1)
    phase = torch.rand(n, 3, 1, 1, generator=g) * 6.28
    wave = torch.sin(xs * 9 + phase) * torch.cos(ys * 7 - phase)
    noise = torch.rand(n, 3, height, width, generator=g)
    return (127.5 + 100 * wave + 27 * noise).clamp(0, 255)


IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def samples() -> list[Sample]:
    """One frame with dynamic F, H, W, N (export sample); a 2-frame batch with boxes in both frames and one
    outside; UDP with ImageNet normalisation; cs boxes; xywh on uint8-valued frames; (F, H, W, C) frames. Input
    sizes are (w, h)."""
    one = _frames(1, 72, 96, 1)
    boxes_one = torch.tensor([[10.0, 8.0, 50.0, 70.0], [60.5, 20.25, 90.0, 40.0], [-20.0, -10.0, 15.0, 30.0]])
    two = _frames(2, 120, 160, 2)
    boxes_two = torch.tensor(
        [
            [20.0, 10.0, 80.0, 110.0],  # frame 0
            [100.3, 30.7, 150.2, 100.9],  # frame 1
            [140.0, 90.0, 200.0, 150.0],  # frame 1, partly outside
            [300.0, 200.0, 360.0, 280.0],  # frame 0, wholly outside: zeros
            [50.0, 50.0, 50.0, 50.0],  # frame 1, zero size: a constant crop
        ]
    )
    index_two = torch.tensor([0, 1, 1, 0, 1])
    cs = torch.tensor([[48.0, 36.0, 40.0, 50.0], [20.0, 60.0, 16.0, 8.0]])
    xywh = torch.tensor([[5.0, 6.0, 30.0, 50.0], [40.0, 10.0, 50.0, 20.0]])
    dyn = ({0: "F", 2: "H", 3: "W"}, {0: "N"})
    return [
        Sample("one_frame_dynamic", (one, boxes_one), {"input_size": (24, 32)}, dynamic=dyn),
        Sample("two_frames", (two, boxes_two, index_two), {"input_size": (48, 64)}),
        Sample(
            "udp_normalised",
            (two, boxes_two, index_two),
            {"input_size": (48, 64), "udp": True, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        ),
        Sample("cs_no_padding", (one, cs), {"input_size": (16, 16), "box_format": "cs", "padding": 1.0}),
        Sample("xywh_integer_valued", (one.round(), xywh), {"input_size": (12, 20), "box_format": "xywh"}),
        Sample(
            "channels_last",
            (one.permute(0, 2, 3, 1).contiguous(), boxes_one),
            {"input_size": (24, 32), "channels_last": True, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        ),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for ``images (F, C, H, W)``, ``boxes (N, 4)`` (F, H, W, N dynamic)."""
    frames = _frames(1, 20, 30, 3)
    box = torch.tensor([[4.0, 3.0, 20.0, 17.0]])
    nan = frames.clone()
    nan[0, 1, 9, 12] = float("nan")
    inf = frames.clone()
    inf[0, 2, 5, 5] = float("inf")
    odd = torch.tensor([[1e30, 5.0, 2e30, 10.0], [float("nan"), 1.0, 5.0, 5.0], [8.0, 8.0, 8.0, 8.0]])
    return {
        "nan_pixel": (nan, box),
        "inf_pixel": (inf, box),
        "huge_nan_and_zero_size_boxes": (frames, odd),
        "box_outside": (frames, torch.tensor([[-50.0, -40.0, -20.0, -10.0], [25.0, 15.0, 90.0, 80.0]])),
        "no_boxes": (frames, torch.zeros(0, 4)),
        "one_pixel_frame": (frames[:, :, :1, :1].contiguous(), box),
        "two_frames_box_from_first": (torch.cat([frames, frames.flip(-1)]), box),
    }


SPEC = register(
    OpSpec(
        name="topdown_crop",
        onnx_op_type="TopdownCrop",
        description="boxes to network inputs: mmpose's padding, aspect fix and affine crop (bilinear, 0 border)",
        functional=topdown_crop,
        module=TopdownCrop,
        reference=reference,
        fake=_fake,
        torch_impl=_torch_impl,
        inputs=(
            OnnxInput("images", "(F, C, H, W) frames, or (F, H, W, C) with channels_last; float32 or uint8"),
            OnnxInput("boxes", "(N, 4) float32 boxes in frame pixels", "tensor(float)"),
            OnnxInput("batch_index", "(N,) int64 frame of each box", "tensor(int64)"),
        ),
        outputs=(
            OnnxInput("crops", "(N, C, h, w) float32 crops", "tensor(float)"),
            OnnxInput("boxes_cs", "(N, 4) float32 (centre x, centre y, scale w, scale h)", "tensor(float)"),
        ),
        attributes=(
            OnnxAttribute("input_size", "ints", None, "(w, h) of the crops"),
            OnnxAttribute("padding", "float", 1.25, "box scale factor"),
            OnnxAttribute("box_format", "int", 1, "0: (x0, y0, w, h); 1: (x0, y0, x1, y1); 2: (cx, cy, sw, sh)"),
            OnnxAttribute("udp", "int", 0, "0: get_warp_matrix, s / w; 1: get_udp_warp_matrix, s / (w - 1)"),
            OnnxAttribute("channels_last", "int", 0, "0: images (F, C, H, W); 1: images (F, H, W, C)"),
        ),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: the body is the reference's float32 expression op for op (ORT CPU: bit for bit, measured in
        # tests/ops/test_topdown_crop.py); the tolerance leaves a few ulps of values up to 255 and coordinates up to
        # ~1e3 px to runtimes that fuse or reorder; fp16: one rounding of the float32 result to half (relative
        # 4.9e-4), normalised values near 0 need the atol
        extra_types=("tensor(uint8)",),  # frames as decoded: the node reads them without a cast
        tolerances={torch.float32: (1e-5, 1e-4), torch.float16: (1e-3, 1e-3), torch.float64: (1e-5, 1e-4)},
        conventions="boxes in frame pixels in; crop pixel (i, j) samples x0 + j * sw / w (udp: / (w - 1)), "
        "the map heatmap_to_image inverts",
    )
)
