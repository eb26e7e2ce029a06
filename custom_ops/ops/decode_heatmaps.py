"""decode_heatmaps: heatmaps to keypoints (hard argmax, optional quarter-offset or DARK refinement) and scores.

``heatmaps (B, K, H, W)`` -> ``keypoints (B, K, 2)`` as ``(x, y)`` in heatmap pixels (column, row) and
``scores (B, K)``, the maximum of each channel.

Definition (docs/spec.md):

- Argmax over the ``H*W`` values of each channel, ties to the first index in row-major order (the
  smallest row, then the smallest column). NaN values are ignored (treated as ``-inf``). A channel whose
  maximum is ``-inf`` (every value NaN or ``-inf``, i.e. no value to decode) gives NaN keypoints and score
  ``-inf``. ``+inf`` is a value like any other: the first ``+inf`` is the argmax, with score ``+inf``.
  Unlike MSRA/HRNet's ``get_max_preds`` and mmpose's ``get_heatmap_maximum``, a channel whose maximum is
  ``<= 0`` is *not* masked (to 0 or -1): its argmax is decoded and the score says how good it is.
- ``refine="quarter"``: on each axis separately, where both neighbours along that axis lie inside the map
  (``0 < x < W - 1``, resp. ``0 < y < H - 1``), move 0.25 px towards the larger neighbour; no move when
  they are equal. The neighbours are compared with NaN as ``-inf`` (two ``-inf`` neighbours are equal).
  MSRA/HRNet's ``get_final_preds`` differs: it moves only when the argmax is inside on *both* axes, and
  its test ``1 < px < W - 1 and 1 < py < H - 1`` also leaves column/row 1 unrefined; mmpose's
  ``refine_keypoints`` is per axis but keeps the ``1 <`` bound. Away from the first two and the last
  rows/columns all three agree.
- ``refine="dark"`` (DARK, Zhang et al. 2020): the map, with non-finite values (NaN, ``+-inf``) entering as
  0, is blurred by a separable ``blur_kernel`` x ``blur_kernel`` Gaussian (sigma
  ``0.3 * ((k - 1) / 2 - 1) + 0.8``, the kernel sampled at the integer offsets and normalised to sum 1)
  with reflect-101 borders (ONNX ``Pad`` mode ``reflect``: ``dcb|abcd|cba``); it is rescaled so that its
  maximum equals the channel's score, ``log(max(h, 1e-10))`` is taken (a NaN becomes ``1e-10`` too), and
  one Newton step is made at the argmax with the 3x3 central differences ``dx = (L[x+1] - L[x-1]) / 2``,
  ``dxx = L[x+1] - 2 L[x] + L[x-1]``, ``dxy = (L[x+1,y+1] - L[x-1,y+1] - L[x+1,y-1] + L[x-1,y-1]) / 4``
  (and the same for ``y``); the 2x2 step ``-H^-1 g`` is written out in closed form. The step is applied
  only where the argmax has both neighbours on both axes, the derivatives are finite and the Hessian is
  negative definite (``dxx < 0`` and ``det > 0``); it is clamped to ``[-1, 1]`` px per axis.
  Reference implementations differ in details that kpx fixes as above: DARK's ``taylor`` and mmpose's
  ``refine_keypoints_dark`` take the second derivatives over two pixels (``(L[x+2] - 2 L[x] + L[x-2]) / 4``,
  needing two neighbours each side), zero-pad the map before blurring (kpx: reflect-101, as docs/spec.md
  says), use OpenCV's fixed kernels for ``k <= 7`` (kpx: always the sigma formula), and step without the
  definiteness test or the clamp. On a blurred Gaussian peak the log-map is close to a quadratic, so both
  stencils give nearly the same step: on sigma-2 targets with sub-pixel centres (k = 11) they differ by
  at most 4.3e-4 px, and the 3x3 stencil is the more accurate (mean error 3.5e-5 px against 2.8e-4 px).
  The differences of logs are computed as ``log(v / v_centre)`` (the same value; exact to float32 rounding
  for maps of any magnitude, where ``log(v)`` of values ~1e30 would lose five digits).
- Reflect-101 padding is applied as often as needed (OpenCV's ``BORDER_REFLECT_101``, period ``2 (n - 1)``),
  so a map smaller than the kernel radius is blurred too; an axis of size 1 is constant under the blur.
  ``H == 1`` or ``W == 1``: nothing moves along that axis (no neighbours), and DARK makes no step at all
  (it needs both neighbours on both axes).

fp16/bf16 maps are decoded in float32 (the log clamp too) and cast back once: keypoints are rounded to
the dtype (e.g. 1/32 px at 32..64 px in float16), scores are the map's own values (``-inf`` stays
``-inf``). The ONNX node takes ``refine`` as an int attribute (0 none, 1 quarter, 2 dark; the ``If`` on it
folds away when a runtime loads the model) and ``blur_kernel`` as an int; ``B, K, H, W`` are all dynamic.
The body uses no NonZero, no MaxPool indices, no TopK and no Reduce* op (their ``axes`` moved from attribute
to input at opset 18): maxima are ``ArgMax`` + ``GatherElements``, neighbours are read with
``GatherElements`` on the flat index, and the blur is two fixed-kernel ``Conv`` over ``(B*K, 1, H, W)``
(a ``Reshape`` with ``allowzero=1``, opset >= 14, so that ``B*K == 0`` works) after a ``Gather`` with
reflect-101 indices built by integer ``Range``/``Mod``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from custom_ops.ops._common import FLOAT, compute_dtype, is_exporting, tracing, validate_tensor
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register

_NEG_INF = float("-inf")
_NAN = float("nan")
REFINE_MODES = ("none", "quarter", "dark")
LOG_FLOOR = 1e-10
"""DARK's clamp before the log (float32 even for float16 maps, where 1e-10 is 0)."""


def refine_code(refine: str) -> int:
    """Validates ``refine``; its ONNX attribute value (0 none, 1 quarter, 2 dark)."""
    if refine not in REFINE_MODES:
        raise ValueError(
            f"refine must be 'none' (hard argmax), 'quarter' (0.25 px towards the larger neighbour) or "
            f"'dark' (DARK: blur, log, one Newton step); got {refine!r}"
        )
    return REFINE_MODES.index(refine)


def check_blur_kernel(blur_kernel: int) -> int:
    """``blur_kernel`` must be an odd int >= 1 (the DARK blur is ``blur_kernel`` x ``blur_kernel``)."""
    if isinstance(blur_kernel, bool) or not isinstance(blur_kernel, int) or blur_kernel < 1 or blur_kernel % 2 == 0:
        raise ValueError(
            f"blur_kernel must be an odd int >= 1 (e.g. 11 for sigma 2 heatmaps, 17 for sigma 3); got {blur_kernel!r}"
        )
    return blur_kernel


def blur_sigma(blur_kernel: int) -> float:
    """OpenCV's sigma for a kernel size: ``0.3 * ((k - 1) / 2 - 1) + 0.8`` (2.0 for k = 11)."""
    return 0.3 * ((blur_kernel - 1) * 0.5 - 1) + 0.8


def gaussian_kernel(blur_kernel: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """The normalised 1-D blur kernel ``(k,)``: ``exp(-d^2 / (2 sigma^2))`` at ``d = -r .. r``, summing to 1."""
    radius = blur_kernel // 2
    d = torch.arange(blur_kernel, device=device, dtype=dtype) - radius
    sigma = torch.tensor(blur_sigma(blur_kernel), device=device, dtype=dtype)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return g / g.sum()


def reflect101_index(n: int, radius: int, *, device: torch.device | None = None) -> Tensor:
    """Source index of each of the ``n + 2 radius`` pixels of an axis padded by ``radius`` (reflect-101).

    Repeats the reflection as often as needed (period ``2 (n - 1)``; an axis of size 1 repeats its pixel).
    Tensor arithmetic only, so that a trace with a symbolic ``n`` stays correct at every size.
    """
    i = torch.arange(-radius, n + radius, device=device)
    period = (torch.ones((), dtype=i.dtype, device=device) * (2 * n - 2)).clamp(min=1)
    m = torch.remainder(i, period)
    return torch.where(m < n, m, period - m)


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


def _blur(maps: Tensor, blur_kernel: int) -> Tensor:
    """Separable Gaussian blur of ``(N, 1, H, W)`` maps with reflect-101 borders: x first, then y."""
    height, width = maps.shape[-2:]
    radius = blur_kernel // 2
    g = gaussian_kernel(blur_kernel, device=maps.device, dtype=maps.dtype)
    padded = maps.index_select(2, reflect101_index(height, radius, device=maps.device))
    padded = padded.index_select(3, reflect101_index(width, radius, device=maps.device))
    return F.conv2d(F.conv2d(padded, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))


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


def _dark_offset(
    flat: Tensor, score: Tensor, index: Tensor, col: Tensor, row: Tensor, height: int, width: int, blur_kernel: int
) -> Tensor:
    """DARK's Newton step at the argmax (see the module docstring). ``(B, K, 2)``."""
    batch, keys, hw = flat.shape
    source = torch.where(torch.isfinite(flat), flat, 0.0)
    blurred = _blur(source.reshape(batch * keys, 1, height, width), blur_kernel).reshape(batch, keys, hw)
    scale = score / blurred.amax(-1, keepdim=True)  # (B, K, 1): blurred max -> the original max
    v = blurred.gather(2, (index + _stencil_offsets(width, flat.device)).clamp(0, hw - 1)) * scale
    v = torch.where(v > LOG_FLOOR, v, LOG_FLOOR)  # log(max(v, 1e-10)); NaN -> the floor too
    # The derivatives only need differences of logs: log(v / v_centre) keeps them exact to float32 rounding
    # for any magnitude of the map (log(v) itself is ~69 for values ~1e30 and would lose ~5 digits).
    _, xm, xp, ym, yp, mm, pm, mp, pp = torch.log(v / v[..., :1]).unbind(-1)
    dx, dy = 0.5 * (xp - xm), 0.5 * (yp - ym)
    dxx, dyy = xp + xm, yp + ym
    dxy = 0.25 * (pp - mp - pm + mm)
    det = dxx * dyy - dxy * dxy
    total = dx + dy + dxx + dyy + dxy
    ok = (col > 0) & (col < width - 1) & (row > 0) & (row < height - 1)
    ok = ok & (total - total == 0) & (dxx < 0) & (det > 0)  # finite derivatives, negative definite Hessian
    step = torch.stack([dxy * dy - dyy * dx, dxy * dx - dxx * dy], -1) / det.unsqueeze(-1)
    return torch.where(ok.unsqueeze(-1), step.clamp(-1.0, 1.0), 0.0)


def reference(heatmaps: Tensor, refine: int, blur_kernel: int) -> tuple[Tensor, Tensor]:
    """Plain torch definition. ``(B, K, H, W)`` -> ``keypoints (B, K, 2)``, ``scores (B, K)``; ``refine`` 0/1/2.

    Differentiable where it is sensible: the scores (the gathered maxima) and the DARK step (through the blur
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
        xy = xy + _dark_offset(flat, score, index, col, row, height, width, blur_kernel)
    xy = torch.where(score == _NEG_INF, _NAN, xy)  # no value to decode
    return xy.to(heatmaps.dtype), score.squeeze(-1).to(heatmaps.dtype)


@torch.library.custom_op("kpx::decode_heatmaps", mutates_args=())
def _torch_op(heatmaps: Tensor, refine: int, blur_kernel: int) -> tuple[Tensor, Tensor]:
    return reference(heatmaps, refine, blur_kernel)


@_torch_op.register_fake
def _(heatmaps, refine, blur_kernel):
    batch, keys = heatmaps.shape[0], heatmaps.shape[1]
    return heatmaps.new_empty(batch, keys, 2), heatmaps.new_empty(batch, keys)


def _check_heatmaps(heatmaps: Tensor) -> None:
    validate_tensor(heatmaps, "heatmaps", "(B, K, H, W)", 4)
    if heatmaps.shape[2] == 0 or heatmaps.shape[3] == 0:
        raise ValueError(
            f"heatmaps must have shape (B, K, H, W) with H, W >= 1 (nothing to decode in an empty map); "
            f"got shape {tuple(heatmaps.shape)}"
        )


def decode_heatmaps(heatmaps: Tensor, *, refine: str = "none", blur_kernel: int = 11) -> tuple[Tensor, Tensor]:
    """Decodes each heatmap to its maximum: hard argmax, optionally refined to sub-pixel.

    Args:
        heatmaps: ``(B, K, H, W)``, one map per keypoint (any real values; DARK assumes non-negative maps).
        refine: ``"none"`` (argmax pixel), ``"quarter"`` (MSRA/HRNet's 0.25 px towards the larger neighbour,
            per axis) or ``"dark"`` (DARK: Gaussian blur, log, one Newton step, clamped to 1 px).
        blur_kernel: odd size of DARK's Gaussian blur (11 for heatmaps of sigma 2, 17 for sigma 3).

    Returns:
        ``keypoints (B, K, 2)`` as ``(x, y)`` in heatmap pixels (NaN for a channel with nothing but NaN and
        ``-inf``) and ``scores (B, K)``, each channel's maximum (NaN ignored), both in ``heatmaps``' dtype.
    """
    _check_heatmaps(heatmaps)
    code = refine_code(refine)
    blur_kernel = check_blur_kernel(blur_kernel)
    if is_exporting():
        return torch.ops.kpx.decode_heatmaps(heatmaps, code, blur_kernel)
    return reference(heatmaps, code, blur_kernel)


class DecodeHeatmaps(nn.Module):
    """Module form of :func:`decode_heatmaps`; ``(B, K, H, W)`` -> ``(keypoints (B, K, 2), scores (B, K))``."""

    def __init__(self, *, refine: str = "none", blur_kernel: int = 11) -> None:
        super().__init__()
        refine_code(refine)
        self.refine = refine
        self.blur_kernel = check_blur_kernel(blur_kernel)

    def forward(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        return decode_heatmaps(heatmaps, refine=self.refine, blur_kernel=self.blur_kernel)

    def extra_repr(self) -> str:
        return f"refine={self.refine!r}, blur_kernel={self.blur_kernel}"


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``.

    Uses only ops whose signatures are the same from opset 13 to 21 (no ReduceMax/ReduceMin/ReduceMean,
    whose ``axes`` moved from attribute to input at 18): maxima are ``ArgMax`` + ``GatherElements``.
    """
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def DecodeHeatmaps(heatmaps, refine: int = 0, blur_kernel: int = 11):
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
        last = op.Sub(hw, one_i)
        zero = op.Constant(value_float=0.0)
        code = op.Constant(value_int=refine)
        # `refine` is an attribute: runtimes fold these Ifs away when they load the model
        if op.Equal(code, op.Constant(value_int=2)):
            # DARK. Non-finite values enter the blur as 0.
            source = op.Where(op.Equal(op.Sub(flat, flat), zero), flat, zero)
            # (B*K, 1, H, W); allowzero: B*K may be 0 (a 0 would otherwise copy the input's dim)
            n = op.Mul(op.Shape(h, start=0, end=1), op.Shape(h, start=1, end=2))
            image = op.Reshape(source, op.Concat(n, op.Constant(value_ints=[1]), height, width, axis=0), allowzero=1)
            k = op.Constant(value_int=blur_kernel)
            radius = op.Div(k, op.Constant(value_int=2))
            radius_f = op.Cast(radius, to=FLOAT)
            sigma = op.Add(op.Mul(op.Sub(radius_f, 1.0), 0.3), 0.8)
            d = op.Sub(op.Cast(op.Range(zero_i, k, one_i), to=FLOAT), radius_f)
            g = op.Exp(op.Div(op.Neg(op.Mul(d, d)), op.Mul(op.Mul(sigma, sigma), 2.0)))
            g = op.Div(g, op.ReduceSum(g, keepdims=1))
            # reflect-101 source index of each padded pixel, repeated as often as needed (period 2 (n - 1))
            h_scalar = op.Squeeze(height)
            period_y = op.Max(op.Mul(op.Sub(height, one_i), op.Constant(value_int=2)), one_i)
            my = op.Mod(op.Range(op.Neg(radius), op.Add(h_scalar, radius), one_i), period_y)  # fmod=0: >= 0
            ry = op.Where(op.Less(my, height), my, op.Sub(period_y, my))
            w_scalar = op.Squeeze(width)
            period_x = op.Max(op.Mul(op.Sub(width, one_i), op.Constant(value_int=2)), one_i)
            mx = op.Mod(op.Range(op.Neg(radius), op.Add(w_scalar, radius), one_i), period_x)
            rx = op.Where(op.Less(mx, width), mx, op.Sub(period_x, mx))
            padded = op.Gather(op.Gather(image, ry, axis=2), rx, axis=3)
            kernel_x = op.Reshape(g, op.Constant(value_ints=[1, 1, 1, -1]))
            kernel_y = op.Reshape(g, op.Constant(value_ints=[1, 1, -1, 1]))
            blurred = op.Conv(op.Conv(padded, kernel_x), kernel_y)
            blurred = op.Reshape(blurred, op.Concat(bk, hw, axis=0), allowzero=1)  # (B, K, H*W)
            peak = op.GatherElements(blurred, op.ArgMax(blurred, axis=2, keepdims=1), axis=2)
            scale = op.Div(score, peak)  # blurred max -> the original max
            offsets = op.Concat(
                op.Constant(value_ints=[0, -1, 1]), op.Neg(width), width, op.Sub(op.Neg(width), one_i),
                op.Add(op.Neg(width), one_i), op.Sub(width, one_i), op.Add(width, one_i), axis=0,
            )  # fmt: skip
            stencil = op.Min(op.Max(op.Add(index, offsets), zero_i), last)  # (B, K, 9)
            v = op.Mul(op.GatherElements(blurred, stencil, axis=2), scale)
            floor = op.Constant(value_float=LOG_FLOOR)
            v = op.Where(op.Greater(v, floor), v, floor)  # log(max(v, 1e-10)); NaN -> the floor too
            log = op.Log(op.Div(v, op.Slice(v, [0], [1], [2])))  # log(v / v_centre): see the reference
            xm = op.Slice(log, [1], [2], [2])
            xp = op.Slice(log, [2], [3], [2])
            ym = op.Slice(log, [3], [4], [2])
            yp = op.Slice(log, [4], [5], [2])
            mm = op.Slice(log, [5], [6], [2])
            pm = op.Slice(log, [6], [7], [2])
            mp = op.Slice(log, [7], [8], [2])
            pp = op.Slice(log, [8], [9], [2])
            dx = op.Mul(op.Sub(xp, xm), 0.5)
            dy = op.Mul(op.Sub(yp, ym), 0.5)
            dxx = op.Add(xp, xm)
            dyy = op.Add(yp, ym)
            dxy = op.Mul(op.Add(op.Sub(op.Sub(pp, mp), pm), mm), 0.25)
            det = op.Sub(op.Mul(dxx, dyy), op.Mul(dxy, dxy))
            total = op.Add(op.Add(op.Add(op.Add(dx, dy), dxx), dyy), dxy)
            inside_x = op.And(op.Greater(col, zero_i), op.Less(col, op.Sub(width, one_i)))
            inside_y = op.And(op.Greater(row, zero_i), op.Less(row, op.Sub(height, one_i)))
            ok = op.And(op.And(inside_x, inside_y), op.Equal(op.Sub(total, total), zero))
            ok = op.And(ok, op.And(op.Less(dxx, zero), op.Greater(det, zero)))
            step = op.Div(
                op.Concat(op.Sub(op.Mul(dxy, dy), op.Mul(dyy, dx)), op.Sub(op.Mul(dxy, dx), op.Mul(dxx, dy)), axis=2),
                det,
            )
            lo = op.Constant(value_float=-1.0)
            hi = op.Constant(value_float=1.0)
            refined = op.Add(xy, op.Where(ok, op.Min(op.Max(step, lo), hi), zero))
        else:
            if op.Equal(code, one_i):
                near = op.Concat(op.Constant(value_ints=[-1, 1]), op.Neg(width), width, axis=0)
                values = op.GatherElements(clean, op.Min(op.Max(op.Add(index, near), zero_i), last), axis=2)
                left = op.Slice(values, [0], [1], [2])
                right = op.Slice(values, [1], [2], [2])
                up = op.Slice(values, [2], [3], [2])
                down = op.Slice(values, [3], [4], [2])
                inside_x = op.And(op.Greater(col, zero_i), op.Less(col, op.Sub(width, one_i)))
                inside_y = op.And(op.Greater(row, zero_i), op.Less(row, op.Sub(height, one_i)))
                sx = op.Sub(op.Cast(op.Greater(right, left), to=FLOAT), op.Cast(op.Greater(left, right), to=FLOAT))
                sy = op.Sub(op.Cast(op.Greater(down, up), to=FLOAT), op.Cast(op.Greater(up, down), to=FLOAT))
                move = op.Concat(
                    op.Where(inside_x, op.Mul(sx, 0.25), zero), op.Where(inside_y, op.Mul(sy, 0.25), zero), axis=2
                )
                refined = op.Add(xy, move)
            else:
                refined = op.Identity(xy)
        keypoints = op.Where(op.Equal(score, neg_inf), op.Constant(value_float=_NAN), refined)
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
    """Gaussian peaks (some at the border) in every refine mode; the first, DARK, is the parity and export sample."""
    x = _peaks(2, 5, (16, 12), 2.0, seed=6)
    dyn = ({0: "B", 1: "K", 2: "H", 3: "W"},)
    return [
        Sample("dark_dynamic", (x,), {"refine": "dark"}, dynamic=dyn),
        Sample("quarter_dynamic", (x,), {"refine": "quarter"}, dynamic=dyn),
        Sample("none_dynamic", (x,), dynamic=dyn),
        Sample("dark_k5", (_peaks(1, 3, (9, 13), 1.0, seed=7),), {"refine": "dark", "blur_kernel": 5}),
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
        description="heatmaps to (x, y) at the maximum (argmax, quarter offset or DARK refinement) and scores",
        functional=decode_heatmaps,
        module=DecodeHeatmaps,
        reference=reference,
        torch_op=torch.ops.kpx.decode_heatmaps,
        inputs=(OnnxInput("heatmaps", "(B, K, H, W)"),),
        outputs=(
            OnnxInput("keypoints", "(x, y) (B, K, 2) in heatmap pixels, heatmaps' dtype"),
            OnnxInput("scores", "(B, K) maxima (NaN ignored), heatmaps' dtype"),
        ),
        attributes=(
            OnnxAttribute("refine", "int", 0, "0: argmax; 1: quarter offset (per axis); 2: DARK"),
            OnnxAttribute("blur_kernel", "int", 11, "odd size of DARK's Gaussian blur"),
        ),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: argmax, scores and quarter offsets are exact; DARK's step moves by the float32 rounding of the
        # blur (Conv summation order differs between runtimes) over the Hessian: ORT CPU vs torch measured
        # <= 4e-6 px on Gaussian peaks, <= 4e-5 px on pure-noise maps (ill-conditioned Hessians; 1/3 of this).
        # fp16: the float32 result rounded once to half (eps 9.8e-4; one rounding flip is one ulp).
        tolerances={torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.float64: (1e-5, 1e-5)},
        conventions="keypoints out (x, y) in heatmap pixels: column, row of the argmax plus the refinement",
    )
)
