"""decode_heatmaps: heatmaps to keypoints (hard argmax, optional quarter, DARK or DARK-UDP refinement) and scores.

``heatmaps (B, K, H, W)`` -> ``keypoints (B, K, 2)`` as ``(x, y)`` in heatmap pixels (column, row) and
``scores (B, K)``, the maximum of each channel.

Definition (docs/spec.md):

- Argmax over the ``H*W`` values of each channel, ties to the first index in row-major order. NaN values
  are ignored (treated as ``-inf``). A channel whose maximum is ``-inf`` gives NaN keypoints and score
  ``-inf``. ``+inf`` is a value like any other.
- Low scores: by default nothing is masked (the argmax is decoded, the score says how good it is). With
  ``low_score_threshold=t`` a keypoint whose score is ``<= t`` becomes ``(low_score_marker,
  low_score_marker)``; ``t = 0.0`` with marker ``-1.0`` is mmpose's ``get_heatmap_maximum``. Scores are never
  changed; a channel with nothing to decode keeps its NaN keypoint.
- ``refine="quarter"``: per axis, where both neighbours along that axis exist, 0.25 px towards the larger.
  (MSRA's ``get_final_preds`` needs both axes inside and skips column/row 1; mmpose's ``refine_keypoints``
  skips column/row 1. All agree away from the first two and last rows/columns.)
- ``refine="dark"`` (DARK, Zhang et al. 2020), with kpx's border rule: non-finite values enter as 0; only
  the 3x3 blurred values around the argmax are needed. On each axis the blur is the Gaussian of the largest
  radius ``rho = min(k // 2, x - 1, n - 2 - x)`` (clamped at 0) whose windows around ``x - 1``, ``x`` and
  ``x + 1`` all stay on the map, with OpenCV's sigma for size ``2 rho + 1``
  (``0.3 * (rho - 1) + 0.8``): no padding, so no value from outside the map enters, and the blur narrows to
  nothing at the second and the second-to-last pixel. The 3x3 values are rescaled so that the centre is the
  channel's score, ``log(max(v, 1e-10))`` is taken (as ``log(v / v_centre)``, exact for maps of any
  magnitude), and one Newton step with 3x3 central differences is made: 2-D (``-H^-1 g``, closed form)
  where the argmax has both neighbours on both axes, the derivatives are finite and the Hessian is
  negative definite; 1-D on the other axis (``-dx / dxx``, ``dxx < 0``) where the argmax is on the first or
  last row or column; clamped to ``[-1, 1]`` px per axis.
  (decision, by measurement, benchmarks/sweep_dark_border.py: with a reflect-101 or zero-padded blur the
  mirrored or missing mass pulls the estimate towards the edge, by up to 1.5 px at sigma 3; the narrowing
  window is unbiased for a symmetric peak, and at sigma 1, 2 and 3 DARK's mean and max error are no larger
  than ``quarter``'s at every distance from the edge, with the interior unchanged.)
- ``refine="dark_udp"``: mmpose's ``refine_keypoints_dark_udp`` (its ``UDPHeatmap`` decoder, rtmlib's
  ViTPose): the whole map blurred with zero borders, rescaled so that the blurred maximum equals the score,
  clipped to ``[1e-3, 50]``, log; the 3x3 stencil from the edge-padded log map (a neighbour beyond the map
  is the edge pixel); ``dxx = L[x+1] - 2 L[x] + L[x-1]``, ``dxy`` as mmpose groups it; the Hessian plus
  ``eps * I`` (float32's epsilon); the step ``-H^-1 g`` wherever the determinant is non-zero and the step
  finite; no definiteness test, no clamp (as mmpose). kpx always uses the sigma formula for the kernel
  (OpenCV's fixed tables for ``k <= 7`` are not used).

fp16/bf16 maps are decoded in float32 and cast back once. ``refine`` (0 none, 1 quarter, 2 dark,
3 dark_udp), ``blur_kernel``, ``low_score_threshold`` (``-inf``: none) and ``low_score_marker`` are node
attributes (the ``If`` on ``refine`` folds away when a runtime loads the model); ``B, K, H, W`` are all
dynamic. No NonZero, MaxPool indices, TopK or Reduce* op: maxima are ``ArgMax`` + ``GatherElements``;
DARK gathers a ``(k + 2) x (k + 2)`` patch per keypoint and blurs it with two ``MatMul`` by masked taps;
DARK-UDP blurs the map with two ``Conv`` after a zero ``Pad``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from custom_ops.ops._common import FLOAT, blur_sigma, compute_dtype, is_exporting, mode_code, tracing, validate_tensor
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register

_NEG_INF = float("-inf")
_NAN = float("nan")
#: ``refine`` strings and their meaning, in the order of their ONNX attribute codes (0 .. 3)
REFINE_MODES = {
    "none": "hard argmax",
    "quarter": "0.25 px towards the larger neighbour",
    "dark": "DARK: blur, log, one Newton step",
    "dark_udp": "mmpose's UDP variant of DARK",
}
LOG_FLOOR = 1e-10
"""DARK's clamp before the log (float32 even for float16 maps, where 1e-10 is 0)."""
UDP_CLIP = (1e-3, 50.0)
"""``dark_udp``'s clip of the rescaled blurred map before the log (mmpose's ``refine_keypoints_dark_udp``)."""
UDP_EPS = 2.0**-23
"""``dark_udp``'s ``eps * I`` added to the Hessian: float32's machine epsilon, in every dtype (as mmpose)."""


def check_blur_kernel(blur_kernel: int) -> int:
    """``blur_kernel`` must be an odd int >= 1 (the DARK blur is ``blur_kernel`` x ``blur_kernel``)."""
    if isinstance(blur_kernel, bool) or not isinstance(blur_kernel, int) or blur_kernel < 1 or blur_kernel % 2 == 0:
        raise ValueError(
            f"blur_kernel must be an odd int >= 1 (e.g. 11 for sigma 2 heatmaps, 17 for sigma 3); got {blur_kernel!r}"
        )
    return blur_kernel


def check_low_scores(low_score_threshold: float | None, low_score_marker: float) -> tuple[float, float]:
    """The node attributes ``(threshold, marker)``; ``None`` (no marking) becomes ``-inf``, which marks nothing."""
    if low_score_threshold is None:
        threshold = _NEG_INF
    elif (
        isinstance(low_score_threshold, bool)
        or not isinstance(low_score_threshold, (int, float))
        or math.isnan(low_score_threshold)
    ):
        raise ValueError(
            f"low_score_threshold must be a Python number (keypoints whose score is <= it are set to "
            f"low_score_marker; 0.0 is mmpose's rule) or None (no marking); got {low_score_threshold!r}"
        )
    else:
        threshold = float(low_score_threshold)
    if isinstance(low_score_marker, bool) or not isinstance(low_score_marker, (int, float)):
        raise ValueError(
            f"low_score_marker must be a Python number (the (x, y) written for low-score keypoints; mmpose "
            f"writes -1.0); got {low_score_marker!r}"
        )
    return threshold, float(low_score_marker)


def gaussian_kernel(blur_kernel: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """The normalised 1-D blur kernel ``(k,)``: ``exp(-d^2 / (2 sigma^2))`` at ``d = -r .. r``, summing to 1."""
    radius = blur_kernel // 2
    d = torch.arange(blur_kernel, device=device, dtype=dtype) - radius
    sigma = torch.tensor(blur_sigma(blur_kernel), device=device, dtype=dtype)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return g / g.sum()


_STENCIL_X = (0, -1, 1, 0, 0, -1, 1, -1, 1)
_STENCIL_Y = (0, 0, 0, -1, 1, -1, -1, 1, 1)


def _stencil_offsets(width: int, device: torch.device) -> Tensor:
    """Flat-index offsets of the 3x3 stencil: centre, x-1, x+1, y-1, y+1, then the corners
    (x-1,y-1), (x+1,y-1), (x-1,y+1), (x+1,y+1). Memoised eagerly; built from ``width`` in a trace."""
    if tracing():
        dx = torch.tensor(_STENCIL_X, device=device)
        return dx + torch.tensor(_STENCIL_Y, device=device) * width
    return _stencil(width, device)


@functools.lru_cache(maxsize=64)
def _stencil(width: int, device: torch.device) -> Tensor:
    """:func:`_stencil_offsets` for eager calls, memoised; do not modify it."""
    with torch.inference_mode(False):
        return torch.tensor([x + y * width for x, y in zip(_STENCIL_X, _STENCIL_Y)], device=device)


def _quarter_offset(clean: Tensor, index: Tensor, col: Tensor, row: Tensor, height: int, width: int) -> Tensor:
    """0.25 px towards the larger neighbour, per axis where both neighbours exist. ``(B, K, 2)``."""
    hw = height * width
    near = clean.gather(2, (index + _stencil_offsets(width, clean.device)[1:5]).clamp(0, hw - 1))
    left, right, up, down = near.unbind(-1)
    sx = (right > left).to(clean.dtype) - (left > right).to(clean.dtype)
    sy = (down > up).to(clean.dtype) - (up > down).to(clean.dtype)
    inside_x = (col > 0) & (col < width - 1)
    inside_y = (row > 0) & (row < height - 1)
    return torch.stack([torch.where(inside_x, 0.25 * sx, 0.0), torch.where(inside_y, 0.25 * sy, 0.0)], -1)


def _axis_radius(position: Tensor, size: int, radius: int) -> Tensor:
    """Per keypoint ``(B, K)``: the largest blur radius ``<= radius`` whose windows around ``position - 1``,
    ``position`` and ``position + 1`` all stay on an axis of ``size`` pixels (0: no blur on that axis)."""
    return torch.minimum(position - 1, (size - 2) - position).clamp(0, radius)


def _blur_taps(offsets: Tensor, radius: Tensor) -> Tensor:
    """``offsets (3, P)`` (patch pixel minus stencil pixel), ``radius (B, K)`` -> taps ``(B, K, 3, P)``: the
    Gaussian of size ``2 radius + 1`` (its own OpenCV sigma) where ``|offset| <= radius``, else 0. Unnormalised:
    the stencil's values are only ever used as ratios, where the kernel's sum cancels."""
    r = radius[..., None, None]
    sigma = 0.3 * (r.to(offsets.dtype) - 1.0) + 0.8
    taps = torch.exp(-(offsets * offsets) / (2.0 * sigma * sigma))
    return torch.where(offsets.abs() <= r, taps, 0.0)


def _dark_stencil(source: Tensor, col: Tensor, row: Tensor, height: int, width: int, blur_kernel: int) -> Tensor:
    """The blurred map at the 3x3 pixels around the argmax, ``(B, K, 9)`` in row-major order ((x-1, y-1) first).

    Each axis is blurred with the largest kernel (``<= blur_kernel``) whose window stays on the map for all three
    stencil pixels (:func:`_axis_radius`), so no value from outside the map (no padding) enters. Computed on a
    ``(k + 2) x (k + 2)`` patch per keypoint, never on the full map.
    """
    radius = blur_kernel // 2
    size = 2 * radius + 3
    a = torch.arange(-radius - 1, radius + 2, device=source.device)  # (P,): patch offsets around the argmax
    offsets = (a - torch.arange(-1, 2, device=source.device)[:, None]).to(source.dtype)  # (3, P)
    taps_x = _blur_taps(offsets, _axis_radius(col, width, radius))
    taps_y = _blur_taps(offsets, _axis_radius(row, height, radius))
    cx = (col[..., None] + a).clamp(0, width - 1)  # (B, K, P); clamped pixels get zero taps
    cy = (row[..., None] + a).clamp(0, height - 1)
    patch = source.gather(2, (cy[..., :, None] * width + cx[..., None, :]).flatten(2)).unflatten(2, (size, size))
    return (taps_y @ patch @ taps_x.transpose(-1, -2)).flatten(2)


def _finite(t: Tensor) -> Tensor:
    return t - t == 0


def _dark_offset(
    flat: Tensor, score: Tensor, col: Tensor, row: Tensor, height: int, width: int, blur_kernel: int
) -> Tensor:
    """DARK's Newton step at the argmax, per axis at the edges (see the module docstring). ``(B, K, 2)``."""
    source = torch.where(torch.isfinite(flat), flat, 0.0)
    v = _dark_stencil(source, col, row, height, width, blur_kernel)
    v = v * (score / v[..., 4:5])  # the centre -> the channel's score
    v = torch.where(v > LOG_FLOOR, v, LOG_FLOOR)  # log(max(v, 1e-10)); NaN -> the floor too
    # The derivatives only need differences of logs: log(v / v_centre) keeps them exact to float32 rounding
    # for any magnitude of the map (log(v) itself is ~69 for values ~1e30 and would lose ~5 digits).
    mm, ym, pm, xm, _, xp, mp, yp, pp = torch.log(v / v[..., 4:5]).unbind(-1)
    dx, dy = 0.5 * (xp - xm), 0.5 * (yp - ym)
    dxx, dyy = xp + xm, yp + ym
    dxy = 0.25 * (pp - mp - pm + mm)
    det = dxx * dyy - dxy * dxy
    inside_x = (col > 0) & (col < width - 1)
    inside_y = (row > 0) & (row < height - 1)
    ok_x = inside_x & _finite(dx + dxx) & (dxx < 0)
    ok_y = inside_y & _finite(dy + dyy) & (dyy < 0)
    ok = ok_x & ok_y & _finite(dxy) & (det > 0)  # both axes: a negative definite Hessian
    only_x, only_y = ok_x & ~inside_y, ok_y & ~inside_x  # one axis without neighbours: a 1-D step on the other
    det = torch.where(ok, det, 1.0)  # (safe divisors: no inf in the branch not taken, nor in its gradient)
    step_x = torch.where(
        ok, (dxy * dy - dyy * dx) / det, torch.where(only_x, -dx / torch.where(only_x, dxx, -1.0), 0.0)
    )
    step_y = torch.where(
        ok, (dxy * dx - dxx * dy) / det, torch.where(only_y, -dy / torch.where(only_y, dyy, -1.0), 0.0)
    )
    return torch.stack([step_x, step_y], -1).clamp(-1.0, 1.0)


_UDP_X = (0, -1, 1, 0, 0, -1, 1)
_UDP_Y = (0, 0, 0, -1, 1, -1, 1)


def _dark_udp_offset(
    flat: Tensor, score: Tensor, col: Tensor, row: Tensor, height: int, width: int, blur_kernel: int
) -> Tensor:
    """mmpose's ``refine_keypoints_dark_udp`` at the argmax (see the module docstring). ``(B, K, 2)``."""
    batch, keys, hw = flat.shape
    radius = blur_kernel // 2
    source = torch.where(torch.isfinite(flat), flat, 0.0).reshape(batch * keys, 1, height, width)
    g = gaussian_kernel(blur_kernel, device=flat.device, dtype=flat.dtype)
    blurred = F.conv2d(source, g.view(1, 1, 1, -1), padding=(0, radius))  # zero borders
    blurred = F.conv2d(blurred, g.view(1, 1, -1, 1), padding=(radius, 0)).reshape(batch, keys, hw)
    scale = score / blurred.amax(-1, keepdim=True)  # (B, K, 1): blurred max -> the original max
    # edge padding: a neighbour beyond the map is the pixel at the edge
    cx = (col[..., None] + torch.tensor(_UDP_X, device=flat.device)).clamp(0, width - 1)
    cy = (row[..., None] + torch.tensor(_UDP_Y, device=flat.device)).clamp(0, height - 1)
    v = blurred.gather(2, cy * width + cx) * scale
    v = torch.where(v > UDP_CLIP[0], v, UDP_CLIP[0]).clamp(max=UDP_CLIP[1])  # clip; NaN -> the floor
    c, xm, xp, ym, yp, mm, pp = torch.log(v).unbind(-1)
    dx, dy = 0.5 * (xp - xm), 0.5 * (yp - ym)
    dxx = xp - 2.0 * c + xm + UDP_EPS
    dyy = yp - 2.0 * c + ym + UDP_EPS
    dxy = 0.5 * ((pp - xp) - (yp - c) + (c - xm) - (ym - mm))  # grouped: exactly 0 on a size-1 axis
    det = dxx * dyy - dxy * dxy
    ok = det != 0
    step = torch.stack([dxy * dy - dyy * dx, dxy * dx - dxx * dy], -1) / torch.where(ok, det, 1.0).unsqueeze(-1)
    ok = ok & _finite(step.sum(-1))  # (a det ~1e-45 overflows the step)
    return torch.where(ok.unsqueeze(-1), step, 0.0)


def reference(
    heatmaps: Tensor, refine: int, blur_kernel: int, low_score_threshold: float, low_score_marker: float
) -> tuple[Tensor, Tensor]:
    """Plain torch definition. ``(B, K, H, W)`` -> ``keypoints (B, K, 2)``, ``scores (B, K)``; ``refine`` 0..3,
    ``low_score_threshold`` ``-inf`` for no marking.

    Differentiable where it is sensible: the scores (the gathered maxima) and the DARK steps (through the blur
    and the log) carry gradients to the heatmaps; the integer argmax itself does not.
    """
    batch, keys, height, width = heatmaps.shape
    dtype = compute_dtype(heatmaps.dtype)
    flat = heatmaps.to(dtype).reshape(batch, keys, height * width)
    clean = torch.where(torch.isnan(flat), _NEG_INF, flat)
    index = clean.argmax(-1, keepdim=True)  # (B, K, 1): the first maximum
    score = clean.gather(2, index)
    row = torch.div(index, width, rounding_mode="floor")  # (not %: the ONNX exporter cannot take a symbolic width)
    col, row = (index - row * width).squeeze(-1), row.squeeze(-1)
    xy = torch.stack([col, row], -1).to(dtype)
    if refine == 1:
        xy = xy + _quarter_offset(clean, index, col, row, height, width)
    elif refine == 2:
        xy = xy + _dark_offset(flat, score, col, row, height, width, blur_kernel)
    elif refine == 3:
        xy = xy + _dark_udp_offset(flat, score, col, row, height, width, blur_kernel)
    xy = torch.where(score == _NEG_INF, _NAN, xy)  # no value to decode
    if low_score_threshold != _NEG_INF:  # (a node attribute: a constant in every trace)
        xy = torch.where((score <= low_score_threshold) & (score != _NEG_INF), low_score_marker, xy)
    return xy.to(heatmaps.dtype), score.squeeze(-1).to(heatmaps.dtype)


def _fake(heatmaps: Tensor, *_) -> tuple[Tensor, Tensor]:
    batch, keys = heatmaps.shape[0], heatmaps.shape[1]
    return heatmaps.new_empty(batch, keys, 2), heatmaps.new_empty(batch, keys)


def _check_heatmaps(heatmaps: Tensor) -> None:
    validate_tensor(heatmaps, "heatmaps", "(B, K, H, W)", 4)
    if heatmaps.shape[2] == 0 or heatmaps.shape[3] == 0:
        raise ValueError(
            f"heatmaps must have shape (B, K, H, W) with H, W >= 1 (nothing to decode in an empty map); "
            f"got shape {tuple(heatmaps.shape)}"
        )


def decode_heatmaps(
    heatmaps: Tensor,
    *,
    refine: str = "none",
    blur_kernel: int = 11,
    low_score_threshold: float | None = None,
    low_score_marker: float = -1.0,
) -> tuple[Tensor, Tensor]:
    """Decodes each heatmap to its maximum: hard argmax, optionally refined to sub-pixel.

    Args:
        heatmaps: ``(B, K, H, W)``, one map per keypoint (any real values; DARK assumes non-negative maps).
        refine: ``"none"`` (argmax pixel), ``"quarter"`` (MSRA/HRNet's 0.25 px towards the larger neighbour,
            per axis), ``"dark"`` (DARK: Gaussian blur, log, one Newton step, clamped to 1 px; the blur narrows
            near the edges) or ``"dark_udp"`` (mmpose's ``refine_keypoints_dark_udp``, as in its ``UDPHeatmap``
            and rtmlib's ViTPose: zero-padded blur, clip to ``[1e-3, 50]``, log, edge-padded stencil).
        blur_kernel: odd size of the DARK blur (11 for heatmaps of sigma 2, 17 for sigma 3).
        low_score_threshold: ``None`` (default): no marking. A number: keypoints whose score is ``<=`` it get
            ``(low_score_marker, low_score_marker)`` (mmpose's ``get_heatmap_maximum``: 0.0 and -1.0).
        low_score_marker: the coordinate written for low-score keypoints.

    Returns:
        ``keypoints (B, K, 2)`` as ``(x, y)`` in heatmap pixels (NaN for a channel with nothing but NaN and
        ``-inf``) and ``scores (B, K)``, each channel's maximum (NaN ignored; never marked), both in
        ``heatmaps``' dtype.
    """
    _check_heatmaps(heatmaps)
    code = mode_code(refine, "refine", REFINE_MODES)
    blur_kernel = check_blur_kernel(blur_kernel)
    threshold, marker = check_low_scores(low_score_threshold, low_score_marker)
    if is_exporting():
        return torch.ops.kpx.decode_heatmaps(heatmaps, code, blur_kernel, threshold, marker)
    return reference(heatmaps, code, blur_kernel, threshold, marker)


class DecodeHeatmaps(nn.Module):
    """Module form of :func:`decode_heatmaps`; ``(B, K, H, W)`` -> ``(keypoints (B, K, 2), scores (B, K))``."""

    def __init__(
        self,
        *,
        refine: str = "none",
        blur_kernel: int = 11,
        low_score_threshold: float | None = None,
        low_score_marker: float = -1.0,
    ) -> None:
        super().__init__()
        mode_code(refine, "refine", REFINE_MODES)
        check_low_scores(low_score_threshold, low_score_marker)
        self.refine = refine
        self.blur_kernel = check_blur_kernel(blur_kernel)
        self.low_score_threshold = low_score_threshold
        self.low_score_marker = low_score_marker

    def forward(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        return decode_heatmaps(
            heatmaps,
            refine=self.refine,
            blur_kernel=self.blur_kernel,
            low_score_threshold=self.low_score_threshold,
            low_score_marker=self.low_score_marker,
        )

    def extra_repr(self) -> str:
        text = f"refine={self.refine!r}, blur_kernel={self.blur_kernel}"
        if self.low_score_threshold is not None:
            text += f", low_score_threshold={self.low_score_threshold}, low_score_marker={self.low_score_marker}"
        return text


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``.

    Uses only ops whose signatures are the same from opset 13 to 21 (no ReduceMax/ReduceMin/ReduceMean,
    whose ``axes`` moved from attribute to input at 18): maxima are ``ArgMax`` + ``GatherElements``.
    """
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def DecodeHeatmaps(
        heatmaps,
        refine: int = 0,
        blur_kernel: int = 11,
        low_score_threshold: float = -math.inf,
        low_score_marker: float = -1.0,
    ):
        h = op.Cast(heatmaps, to=FLOAT)
        bk = op.Shape(h, start=0, end=2)
        height = op.Shape(h, start=2, end=3)
        width = op.Shape(h, start=3, end=4)
        hw = op.Mul(height, width)
        flat = op.Reshape(h, op.Concat(bk, hw, axis=0))  # (B, K, H*W); no -1: B or K may be 0
        neg_inf = op.Constant(value_float=_NEG_INF)
        clean = op.Where(op.IsNaN(flat), neg_inf, flat)
        index = op.ArgMax(clean, axis=2, keepdims=1, select_last_index=0)  # (B, K, 1): the first maximum
        score = op.GatherElements(clean, index, axis=2)
        col = op.Mod(index, width)
        row = op.Div(index, width)
        xy = op.Cast(op.Concat(col, row, axis=2), to=FLOAT)
        zero_i = op.Constant(value_int=0)
        one_i = op.Constant(value_int=1)
        two_i = op.Constant(value_int=2)
        last = op.Sub(hw, one_i)
        last_x = op.Sub(width, one_i)
        last_y = op.Sub(height, one_i)
        inside_x = op.And(op.Greater(col, zero_i), op.Less(col, last_x))  # (B, K, 1): both x neighbours exist
        inside_y = op.And(op.Greater(row, zero_i), op.Less(row, last_y))
        zero = op.Constant(value_float=0.0)
        code = op.Constant(value_int=refine)
        k = op.Constant(value_int=blur_kernel)
        radius = op.Div(k, two_i)
        # `refine` is an attribute: runtimes fold these Ifs away when they load the model
        if op.Equal(code, two_i):
            # DARK. Non-finite values enter the blur as 0.
            source = op.Where(op.Equal(op.Sub(flat, flat), zero), flat, zero)
            # per axis, the largest radius <= k // 2 whose windows around the three stencil pixels stay on the map
            rx = op.Max(op.Min(op.Min(op.Sub(col, one_i), op.Sub(op.Sub(width, two_i), col)), radius), zero_i)
            ry = op.Max(op.Min(op.Min(op.Sub(row, one_i), op.Sub(op.Sub(height, two_i), row)), radius), zero_i)
            reach = op.Add(radius, one_i)
            size = op.Reshape(op.Add(op.Mul(reach, two_i), one_i), op.Constant(value_ints=[1]))  # (1,): k + 2
            a = op.Range(op.Neg(reach), op.Add(reach, one_i), one_i)  # (P,) patch offsets around the argmax
            offsets = op.Sub(op.Unsqueeze(a, [0]), op.Unsqueeze(op.Constant(value_ints=[-1, 0, 1]), [1]))  # (3, P)
            square = op.Neg(op.Mul(op.Cast(offsets, to=FLOAT), op.Cast(offsets, to=FLOAT)))
            distance = op.Abs(offsets)
            rx4 = op.Unsqueeze(rx, [3])  # (B, K, 1, 1)
            ry4 = op.Unsqueeze(ry, [3])
            sigma_x = op.Add(op.Mul(op.Sub(op.Cast(rx4, to=FLOAT), 1.0), 0.3), 0.8)
            sigma_y = op.Add(op.Mul(op.Sub(op.Cast(ry4, to=FLOAT), 1.0), 0.3), 0.8)
            # unnormalised taps (B, K, 3, P): the values are only used as ratios, where the sums cancel
            taps_x = op.Where(
                op.LessOrEqual(distance, rx4), op.Exp(op.Div(square, op.Mul(op.Mul(sigma_x, sigma_x), 2.0))), zero
            )
            taps_y = op.Where(
                op.LessOrEqual(distance, ry4), op.Exp(op.Div(square, op.Mul(op.Mul(sigma_y, sigma_y), 2.0))), zero
            )
            cx = op.Min(op.Max(op.Add(col, a), zero_i), last_x)  # (B, K, P); clamped pixels get zero taps
            cy = op.Min(op.Max(op.Add(row, a), zero_i), last_y)
            pixels = op.Add(op.Mul(op.Unsqueeze(cy, [3]), width), op.Unsqueeze(cx, [2]))  # (B, K, P, P)
            # allowzero: B or K may be 0 (a 0 would otherwise copy the input's dim)
            pixels = op.Reshape(pixels, op.Concat(bk, op.Mul(size, size), axis=0), allowzero=1)
            patch = op.Reshape(
                op.GatherElements(source, pixels, axis=2), op.Concat(bk, size, size, axis=0), allowzero=1
            )
            blurred = op.MatMul(op.MatMul(taps_y, patch), op.Transpose(taps_x, perm=[0, 1, 3, 2]))  # (B, K, 3, 3)
            v = op.Reshape(blurred, op.Concat(bk, op.Constant(value_ints=[9]), axis=0), allowzero=1)
            v = op.Mul(v, op.Div(score, op.Slice(v, [4], [5], [2])))  # the centre -> the channel's score
            floor = op.Constant(value_float=LOG_FLOOR)
            v = op.Where(op.Greater(v, floor), v, floor)  # log(max(v, 1e-10)); NaN -> the floor too
            log = op.Log(op.Div(v, op.Slice(v, [4], [5], [2])))  # log(v / v_centre): see the reference
            mm = op.Slice(log, [0], [1], [2])
            ym = op.Slice(log, [1], [2], [2])
            pm = op.Slice(log, [2], [3], [2])
            xm = op.Slice(log, [3], [4], [2])
            xp = op.Slice(log, [5], [6], [2])
            mp = op.Slice(log, [6], [7], [2])
            yp = op.Slice(log, [7], [8], [2])
            pp = op.Slice(log, [8], [9], [2])
            dx = op.Mul(op.Sub(xp, xm), 0.5)
            dy = op.Mul(op.Sub(yp, ym), 0.5)
            dxx = op.Add(xp, xm)
            dyy = op.Add(yp, ym)
            dxy = op.Mul(op.Add(op.Sub(op.Sub(pp, mp), pm), mm), 0.25)
            det = op.Sub(op.Mul(dxx, dyy), op.Mul(dxy, dxy))
            sum_x = op.Add(dx, dxx)
            sum_y = op.Add(dy, dyy)
            ok_x = op.And(op.And(inside_x, op.Equal(op.Sub(sum_x, sum_x), zero)), op.Less(dxx, zero))
            ok_y = op.And(op.And(inside_y, op.Equal(op.Sub(sum_y, sum_y), zero)), op.Less(dyy, zero))
            ok = op.And(op.And(ok_x, ok_y), op.And(op.Equal(op.Sub(dxy, dxy), zero), op.Greater(det, zero)))
            only_x = op.And(ok_x, op.Not(inside_y))  # one axis without neighbours: a 1-D step on the other
            only_y = op.And(ok_y, op.Not(inside_x))
            step_x = op.Where(
                ok,
                op.Div(op.Sub(op.Mul(dxy, dy), op.Mul(dyy, dx)), det),
                op.Where(only_x, op.Div(op.Neg(dx), dxx), zero),
            )
            step_y = op.Where(
                ok,
                op.Div(op.Sub(op.Mul(dxy, dx), op.Mul(dxx, dy)), det),
                op.Where(only_y, op.Div(op.Neg(dy), dyy), zero),
            )
            lo = op.Constant(value_float=-1.0)
            hi = op.Constant(value_float=1.0)
            refined = op.Add(xy, op.Min(op.Max(op.Concat(step_x, step_y, axis=2), lo), hi))
        else:
            if op.Equal(code, op.Constant(value_int=3)):
                # dark_udp: zero-padded blur of the whole map, rescaled to the score, clipped, edge-padded stencil
                source = op.Where(op.Equal(op.Sub(flat, flat), zero), flat, zero)
                n = op.Mul(op.Shape(h, start=0, end=1), op.Shape(h, start=1, end=2))
                image = op.Reshape(
                    source, op.Concat(n, op.Constant(value_ints=[1]), height, width, axis=0), allowzero=1
                )
                radius_f = op.Cast(radius, to=FLOAT)
                sigma = op.Add(op.Mul(op.Sub(radius_f, 1.0), 0.3), 0.8)
                d = op.Sub(op.Cast(op.Range(zero_i, k, one_i), to=FLOAT), radius_f)
                g = op.Exp(op.Div(op.Neg(op.Mul(d, d)), op.Mul(op.Mul(sigma, sigma), 2.0)))
                g = op.Div(g, op.ReduceSum(g, keepdims=1))
                r1 = op.Reshape(radius, op.Constant(value_ints=[1]))
                pair = op.Constant(value_ints=[0, 0])
                padded = op.Pad(image, op.Concat(pair, r1, r1, pair, r1, r1, axis=0))  # zeros
                kernel_x = op.Reshape(g, op.Constant(value_ints=[1, 1, 1, -1]))
                kernel_y = op.Reshape(g, op.Constant(value_ints=[1, 1, -1, 1]))
                blurred = op.Reshape(
                    op.Conv(op.Conv(padded, kernel_x), kernel_y), op.Concat(bk, hw, axis=0), allowzero=1
                )
                peak = op.GatherElements(blurred, op.ArgMax(blurred, axis=2, keepdims=1), axis=2)
                ux = op.Min(op.Max(op.Add(col, op.Constant(value_ints=[0, -1, 1, 0, 0, -1, 1])), zero_i), last_x)
                uy = op.Min(op.Max(op.Add(row, op.Constant(value_ints=[0, 0, 0, -1, 1, -1, 1])), zero_i), last_y)
                v = op.Mul(op.GatherElements(blurred, op.Add(op.Mul(uy, width), ux), axis=2), op.Div(score, peak))
                clip_lo = op.Constant(value_float=UDP_CLIP[0])
                clip_hi = op.Constant(value_float=UDP_CLIP[1])
                log = op.Log(op.Min(op.Where(op.Greater(v, clip_lo), v, clip_lo), clip_hi))  # NaN -> the floor
                c = op.Slice(log, [0], [1], [2])
                xm = op.Slice(log, [1], [2], [2])
                xp = op.Slice(log, [2], [3], [2])
                ym = op.Slice(log, [3], [4], [2])
                yp = op.Slice(log, [4], [5], [2])
                mm = op.Slice(log, [5], [6], [2])
                pp = op.Slice(log, [6], [7], [2])
                c2 = op.Add(c, c)
                eps = op.Constant(value_float=UDP_EPS)
                dx = op.Mul(op.Sub(xp, xm), 0.5)
                dy = op.Mul(op.Sub(yp, ym), 0.5)
                dxx = op.Add(op.Add(op.Sub(xp, c2), xm), eps)
                dyy = op.Add(op.Add(op.Sub(yp, c2), ym), eps)
                # mmpose's pp - xp - yp + 2c - xm - ym + mm, grouped: exactly 0 on a size-1 axis
                dxy = op.Sub(op.Add(op.Sub(op.Sub(pp, xp), op.Sub(yp, c)), op.Sub(c, xm)), op.Sub(ym, mm))
                dxy = op.Mul(dxy, 0.5)
                det = op.Sub(op.Mul(dxx, dyy), op.Mul(dxy, dxy))
                step = op.Div(
                    op.Concat(
                        op.Sub(op.Mul(dxy, dy), op.Mul(dyy, dx)), op.Sub(op.Mul(dxy, dx), op.Mul(dxx, dy)), axis=2
                    ),
                    det,
                )
                total = op.Add(op.Slice(step, [0], [1], [2]), op.Slice(step, [1], [2], [2]))
                ok = op.And(op.Not(op.Equal(det, zero)), op.Equal(op.Sub(total, total), zero))
                refined = op.Add(xy, op.Where(ok, step, zero))
            else:
                if op.Equal(code, one_i):
                    near = op.Concat(op.Constant(value_ints=[-1, 1]), op.Neg(width), width, axis=0)
                    values = op.GatherElements(clean, op.Min(op.Max(op.Add(index, near), zero_i), last), axis=2)
                    left = op.Slice(values, [0], [1], [2])
                    right = op.Slice(values, [1], [2], [2])
                    up = op.Slice(values, [2], [3], [2])
                    down = op.Slice(values, [3], [4], [2])
                    sx = op.Sub(op.Cast(op.Greater(right, left), to=FLOAT), op.Cast(op.Greater(left, right), to=FLOAT))
                    sy = op.Sub(op.Cast(op.Greater(down, up), to=FLOAT), op.Cast(op.Greater(up, down), to=FLOAT))
                    move = op.Concat(
                        op.Where(inside_x, op.Mul(sx, 0.25), zero), op.Where(inside_y, op.Mul(sy, 0.25), zero), axis=2
                    )
                    refined = op.Add(xy, move)
                else:
                    refined = op.Identity(xy)
        keypoints = op.Where(op.Equal(score, neg_inf), op.Constant(value_float=_NAN), refined)
        # low scores: score <= threshold (the default -inf marks nothing: -inf scores keep their NaN keypoints)
        threshold = op.Constant(value_float=low_score_threshold)
        low = op.And(op.LessOrEqual(score, threshold), op.Greater(score, neg_inf))
        keypoints = op.Where(low, op.Constant(value_float=low_score_marker), keypoints)
        return op.CastLike(keypoints, heatmaps), op.CastLike(op.Squeeze(score, [2]), heatmaps)

    return DecodeHeatmaps


def _peaks(batch: int, keys: int, size: tuple[int, int], sigma: float, seed: int) -> Tensor:
    """Gaussian peaks (subpixel centres on the map, peak 1) plus a little non-negative noise."""
    g = torch.Generator().manual_seed(seed)
    height, width = size
    centres = torch.rand(batch, keys, 2, generator=g) * torch.tensor([width - 1.0, height - 1.0])
    dx = torch.arange(width) - centres[..., 0, None, None]  # (B, K, 1, W)
    dy = torch.arange(height)[:, None] - centres[..., 1, None, None]  # (B, K, H, 1)
    maps = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    return maps + 0.01 * torch.rand(maps.shape, generator=g)


def samples() -> list[Sample]:
    """Gaussian peaks (some at the border) in every refine mode, and mmpose's low-score marking; the first, DARK,
    is the parity and export sample."""
    x = _peaks(2, 5, (16, 12), 2.0, seed=6)
    dyn = ({0: "B", 1: "K", 2: "H", 3: "W"},)
    low = _peaks(2, 4, (10, 9), 1.5, seed=12)
    low[0, 1] -= 1.5  # maxima <= 0: marked (mmpose's rule), the rest decoded
    low[1, 3] -= low[1, 3].amax()  # maximum exactly 0: marked too (score <= threshold)
    return [
        Sample("dark_dynamic", (x,), {"refine": "dark"}, dynamic=dyn),
        Sample("quarter_dynamic", (x,), {"refine": "quarter"}, dynamic=dyn),
        Sample("none_dynamic", (x,), dynamic=dyn),
        Sample("dark_k5", (_peaks(1, 3, (9, 13), 1.0, seed=7),), {"refine": "dark", "blur_kernel": 5}),
        # peaks at other sizes too: on noise dark_udp (no clamp and no definiteness test, as mmpose) divides by
        # near-singular Hessians and steps up to ~100 px, amplifying the blur's float32 rounding past any tolerance
        Sample(
            "dark_udp",
            (x,),
            {"refine": "dark_udp"},
            dynamic=dyn,
            make_inputs=lambda shapes: (_peaks(shapes[0][0], shapes[0][1], shapes[0][2:], 2.0, seed=13),),
        ),
        Sample(
            "low_scores_marked", (low,), {"refine": "quarter", "low_score_threshold": 0.0, "low_score_marker": -1.0}
        ),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for heatmaps ``(B, K, H, W)`` (all four dims dynamic in the export sample)."""
    x = _peaks(2, 3, (9, 7), 1.5, seed=8)
    ties = torch.zeros(2, 3, 9, 7)
    ties[:, :, 2, 5] = ties[:, :, 4, 1] = ties[:, :, 4, 3] = 1.0  # first in row-major order: (5, 2)
    nan = x.clone()
    nan[0, 1, 3, 3] = nan[1, 0, 0, 0] = float("nan")
    nan[1, 2] = float("nan")  # all NaN
    inf = x.clone()
    inf[0, 0] = float("-inf")  # all -inf
    inf[0, 1, 4, 4] = float("inf")
    inf[1, 1, 2, 2] = float("-inf")
    return {
        "peaks": (x,),
        "ties": (ties,),
        "flat": (torch.zeros(2, 3, 9, 7),),
        "nan": (nan,),
        "inf": (inf,),
        "huge": (x * 1e30,),
        "negative_logits": (x - 5.0,),
        "fp16_range": (x * 60000.0,),
        "empty_batch": (torch.rand(0, 3, 9, 7),),
        "no_keypoints": (torch.rand(2, 0, 9, 7),),
        "single_row": (_peaks(2, 3, (1, 9), 1.5, seed=9),),
        "single_column": (_peaks(2, 3, (9, 1), 1.5, seed=10),),
        "single_pixel": (torch.rand(2, 3, 1, 1),),
        "smaller_than_kernel": (_peaks(2, 3, (3, 4), 1.0, seed=11),),
    }


SPEC = register(
    OpSpec(
        name="decode_heatmaps",
        onnx_op_type="DecodeHeatmaps",
        description="heatmaps to (x, y) at the maximum (argmax, quarter offset, DARK or DARK-UDP) and scores",
        functional=decode_heatmaps,
        module=DecodeHeatmaps,
        reference=reference,
        fake=_fake,
        inputs=(OnnxInput("heatmaps", "(B, K, H, W)"),),
        outputs=(
            OnnxInput("keypoints", "(x, y) (B, K, 2) in heatmap pixels, heatmaps' dtype"),
            OnnxInput("scores", "(B, K) maxima (NaN ignored), heatmaps' dtype"),
        ),
        attributes=(
            OnnxAttribute("refine", "int", 0, "0: argmax; 1: quarter offset (per axis); 2: DARK; 3: mmpose's DARK-UDP"),
            OnnxAttribute("blur_kernel", "int", 11, "odd size of DARK's Gaussian blur"),
            OnnxAttribute(
                "low_score_threshold", "float", _NEG_INF, "keypoints with score <= it become the marker (-inf: none)"
            ),
            OnnxAttribute("low_score_marker", "float", -1.0, "(x, y) of low-score keypoints"),
        ),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: argmax, scores and quarter offsets are exact; DARK's step moves by the float32 rounding of the
        # blur (MatMul and Conv summation order differ between runtimes) over the Hessian: ORT CPU vs torch measured
        # <= 4e-6 px on Gaussian peaks, <= 4e-5 px on pure-noise maps (ill-conditioned Hessians; 1/3 of this).
        # dark_udp: the same on peaks (no clamp, as mmpose: on peak-free maps its steps amplify rounding, see samples).
        # fp16: the float32 result rounded once to half (eps 9.8e-4; one rounding flip is one ulp).
        tolerances={torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.float64: (1e-5, 1e-5)},
        conventions="keypoints out (x, y) in heatmap pixels: column, row of the argmax plus the refinement",
    )
)
