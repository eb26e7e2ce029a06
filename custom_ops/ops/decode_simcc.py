"""decode_simcc: SimCC x/y classification vectors to keypoints (argmax, optional 1-D DARK) and scores.

RTMPose, DWPose and RTMW heads output two 1-D vectors per keypoint: ``simcc_x (B, K, Lx)`` over the crop's
columns and ``simcc_y (B, K, Ly)`` over its rows, each ``split_ratio`` bins per input pixel. This op maps them
to ``keypoints (B, K, 2)`` as ``(x, y)`` in input pixels of the crop and ``scores (B, K)``.

Definition (docs/spec.md):

- Per axis, the argmax of the row, ties to the first index; NaN values are ignored (treated as ``-inf``).
  The keypoint is ``bin / split_ratio`` per axis (bin centre ``i`` is pixel ``i / split_ratio``, no half-pixel
  shift: mmpose's ``SimCCLabel.decode`` and rtmlib's ``RTMPose.postprocess``).
- ``score_mode="min"`` (default): the score is the smaller of the two row maxima (mmpose's
  ``get_simcc_maximum``). ``score_mode="mean"``: their mean, what rtmlib computes since December 2023
  (its ``get_simcc_maximum`` replaced the minimum by ``0.5 * (max_x + max_y)``). The minimum is the row values
  themselves, in the input dtype; the mean is computed in float32 (float64 for float64) and rounded once.
- A row whose maximum is ``-inf`` (nothing but NaN and ``-inf``: no value to decode) gives NaN for *both*
  coordinates of that keypoint and score ``-inf`` (also with ``"mean"``, where ``-inf + inf`` would be NaN).
  ``+inf`` is a value like any other (as in decode_heatmaps): the first ``+inf`` is the argmax.
- (decision: a score ``<= 0`` is not marked. mmpose and rtmlib set the bin to ``-1`` where the score is
  ``<= 0``, which becomes ``-1 / split_ratio`` px (-0.5 px at split 2) after the division; kpx decodes the
  argmax and lets the score tell how good it is. ``torch.where(scores[..., None] <= 0, -1 / split_ratio, kp)``
  reproduces mmpose's marking.)
- (decision: mmpose's ``decode_visibility`` output, the minimum over the axes of the largest softmax
  probability of ``simcc * decode_beta * sigma``, is not an output of this op: an ONNX node has a fixed
  list of outputs, and that value depends on two training-time constants (``decode_beta`` = 150 and the label
  sigma) that the vectors do not carry. It is a softmax and a max over the same rows, left to the model.)

``refine="dark"``: mmpose's ``refine_simcc_dark`` (``SimCCLabel(use_dark=True)``) on each axis, with the
border rule below. Per axis, at the argmax bin ``x`` of a row ``v`` of length ``L``:

1. Kernel size from the label sigma (in SimCC bins, the codec's ``sigma``, e.g. ``(4.9, 5.66)`` for RTMPose at
   256x192 with split 2), as mmpose's decoder derives it: ``k = floor((20 sigma - 7) / 3)``, minus 1 when even
   (29 for 4.9, 35 for 5.66, 37 for 6.0, 43 for 6.93); the split ratio does not enter. This ``k`` inverts
   OpenCV's sigma rule, and the blur uses OpenCV's sigma for ``k``: ``s = 0.3 ((k - 1) / 2 - 1) + 0.8``
   (4.7 for k = 29), weights ``exp(-j^2 / (2 s^2))`` at the integer offsets ``|j| <= r = k // 2``.
   (decision: never OpenCV's fixed tables for ``k <= 7``, as in decode_heatmaps; they apply to sigma < 1.55
   only. A sigma below 0.5 would give ``k <= 0``: kpx uses ``k = 1``, no blur.)
2. Non-finite values (NaN, ``+-inf``) enter the blur as 0. Only the three blurred values at ``x - 1``, ``x``,
   ``x + 1`` are needed, and they use one common window radius ``rho = min(r, x - 1, L - 2 - x)``: the full
   kernel in the interior, a kernel truncated symmetrically near the ends so that it never reads past them
   (at ``x = 1`` or ``x = L - 2`` the values are not blurred at all).
   (decision, the border rule: mmpose pads the row with zeros before blurring, which pulls the blurred peak
   inwards, then pads the log with its edge values and takes second differences over two bins with a 1e-9
   regulariser; near the ends its step measured 2 to 1300 bins wrong, while the truncated window is unbiased
   for a symmetric peak. The kernel is not normalised: the step uses only ratios of the three values.)
3. ``dx = (l+ - l-) / 2`` and ``dxx = l+ + l-``, with ``l+- = log(b(x +- 1) / b(x))``: central differences over
   one bin (mmpose: ``(L[x+2] - 2 L[x] + L[x-2]) / 4``, over two bins; on blurred Gaussian rows both give the
   same step to within 1e-3 bins, and the one-bin stencil needs only one neighbour each side). The ratio form
   is the difference of logs, exact for rows of any magnitude (mmpose clips to [1e-3, 50] before the log).
4. One Newton step ``-dx / dxx`` is added to ``x`` where: ``x`` has both neighbours (``0 < x < L - 1``), the row
   maximum is finite, the three blurred values are ``> 0`` (the log needs them: rows whose maximum is ``<= 0``
   make no step, as mmpose's clip makes none), ``dx`` and ``dxx`` are finite and ``dxx < 0`` (a maximum, not a
   minimum or a flat top). The step is clamped to ``[-(rho + 1), rho + 1]``: the refined bin stays among the
   bins the step read, hence inside the row.
   (decision: at the first or last bin there is no step, the peak's other side is not in the row; mmpose
   steps there, outwards. No clamp to 1 bin as in decode_heatmaps: on noisy rows the argmax is often 1-3 bins
   off and the step is what brings it back.)

Measured with this reference (2026-12, torch 2.13 CPU, float64, Gaussian rows of the label sigma at uniform
sub-bin centres, Lx = 384 at sigma 4.9): mean error to the centre 0.25 bins without refinement, < 1e-3 with
DARK in the interior; with 2% uniform noise 0.30 and 0.012 bins. Within 0 to 20 bins of either end DARK's mean
error was at most the argmax's at every distance, clean and noisy (tests/ops/test_decode_simcc.py).

fp16/bf16 rows are decoded in float32 and the keypoints rounded once (1/64 px at 128-256 px in float16); with
``"min"`` the scores are the rows' own values. ``Lx`` and ``Ly`` are independent; ``B``, ``K``, ``Lx``, ``Ly``
are all dynamic in ONNX. The body uses ``ArgMax(select_last_index=0)`` + ``GatherElements`` for the maxima,
``GatherElements`` of a window of ``3 (2R + 1)`` values around each argmax (``R = max(rx, ry)``, offsets from an
integer ``Range``) and one batched ``MatMul`` with the masked kernel for the blur: no NonZero, TopK, Pad, Conv
or Reduce* op. ``refine`` and ``score_mode`` are int attributes whose ``If`` folds away at load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from custom_ops.ops._common import (
    FLOAT,
    blur_sigma,
    check_split_ratio,
    compute_dtype,
    is_exporting,
    mode_code,
    validate_tensor,
)
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register

_NEG_INF = float("-inf")
_NAN = float("nan")
#: ``refine`` and ``score_mode`` strings and their meaning, in the order of their ONNX attribute codes
REFINE_MODES = {"none": "argmax bin", "dark": "mmpose's refine_simcc_dark: 1-D blur, log, one Newton step"}
SCORE_MODES = {"min": "the smaller row maximum, mmpose", "mean": "their mean, rtmlib"}
MAX_SIGMA = 100.0
"""Largest label sigma (a blur kernel of 663 bins); RTMPose, DWPose and RTMW use 4.9 to 6.93."""


# --- arguments ---------------------------------------------------------------------------------------------
def _one_sigma(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= MAX_SIGMA):
        raise ValueError(
            f"sigma must be a number or a pair (sigma_x, sigma_y) of numbers in (0, {MAX_SIGMA:g}], in SimCC bins "
            f"(the codec's sigma, e.g. (4.9, 5.66) for RTMPose at 256x192); got {value!r}"
        )
    return float(value)


def kernel_size(sigma: float) -> int:
    """mmpose's SimCC DARK kernel for a label sigma: ``floor((20 sigma - 7) / 3)``, made odd downwards, >= 1."""
    k = int((sigma * 20 - 7) // 3)
    k -= int(k % 2 == 0)
    return max(k, 1)


def blur_kernels(sigma: float | Sequence[float]) -> tuple[int, int]:
    """Validates ``sigma`` (one number or ``(sigma_x, sigma_y)``); the blur kernel size per axis."""
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        sx = sy = _one_sigma(sigma)
    elif isinstance(sigma, (tuple, list)) and len(sigma) == 2:
        sx, sy = _one_sigma(sigma[0]), _one_sigma(sigma[1])
    else:
        _one_sigma(sigma)  # raises, naming sigma
        raise AssertionError  # pragma: no cover
    return kernel_size(sx), kernel_size(sy)


# --- reference ---------------------------------------------------------------------------------------------
def _dark_step(row: Tensor, index: Tensor, peak: Tensor, kernel: int) -> Tensor:
    """The 1-D DARK step at the argmax of each row (module docstring, steps 1-4). ``(B, K, L)`` -> ``(B, K, 1)``."""
    length = row.shape[-1]
    radius = kernel // 2
    source = torch.where(torch.isfinite(row), row, 0.0)
    j = torch.arange(-radius, radius + 1, device=row.device)  # (n,) kernel offsets
    offsets = (torch.arange(-1, 2, device=row.device).unsqueeze(-1) + j).reshape(-1)  # (3n,): x-1, x, x+1 windows
    window = source.gather(2, (index + offsets).clamp(0, length - 1))  # (B, K, 3n)
    rho = torch.minimum(index - 1, (length - 2) - index).clamp(max=radius)  # (B, K, 1); < 0: no neighbours
    sigma = blur_sigma(kernel)
    g = torch.exp(-(j * j).to(row.dtype) / (2.0 * sigma * sigma))  # (n,)
    weights = torch.where(j.abs() <= rho, g, 0.0)  # (B, K, n): the kernel truncated to the common radius
    blurred = torch.matmul(window.unflatten(-1, (3, 2 * radius + 1)), weights.unsqueeze(-1)).squeeze(-1)  # (B, K, 3)
    ok = (rho >= 0) & (blurred > 0).all(-1, keepdim=True) & (peak - peak == 0)  # finite maximum
    safe = torch.where(ok, blurred, 1.0)  # no log of <= 0, not even in a branch where() discards (gradients)
    logs = torch.log(safe / safe[..., 1:2])  # (l-, 0, l+)
    dx = 0.5 * (logs[..., 2:] - logs[..., :1])
    dxx = logs[..., 2:] + logs[..., :1]
    total = dx + dxx
    ok = ok & (total - total == 0) & (dxx < 0)  # finite, and a maximum
    step = -dx / torch.where(ok, dxx, -1.0)
    bound = (rho + 1).to(row.dtype)
    return torch.where(ok, torch.minimum(torch.maximum(step, -bound), bound), 0.0)


def _axis(row: Tensor, kernel: int, refine: int) -> tuple[Tensor, Tensor]:
    """One axis: ``(B, K, L)`` -> the decoded bin ``(B, K, 1)`` (float) and the row maximum ``(B, K, 1)``."""
    clean = torch.where(torch.isnan(row), _NEG_INF, row)
    index = clean.argmax(-1, keepdim=True)  # (B, K, 1): the first maximum
    peak = clean.gather(2, index)
    position = index.to(row.dtype)
    if refine == 1:
        position = position + _dark_step(row, index, peak, kernel)
    return position, peak


def reference(
    simcc_x: Tensor,
    simcc_y: Tensor,
    split_ratio: float,
    refine: int,
    blur_kernel_x: int,
    blur_kernel_y: int,
    score_mode: int,
) -> tuple[Tensor, Tensor]:
    """Plain torch definition. ``(B, K, Lx)``, ``(B, K, Ly)`` -> ``keypoints (B, K, 2)``, ``scores (B, K)``.

    ``refine`` 0 none / 1 dark; ``score_mode`` 0 min / 1 mean. Differentiable where it is sensible: the scores
    (gathered maxima) and the DARK step (through the blur and the log) carry gradients; the argmax does not.
    """
    dtype = torch.promote_types(compute_dtype(simcc_x.dtype), compute_dtype(simcc_y.dtype))
    px, sx = _axis(simcc_x.to(dtype), blur_kernel_x, refine)
    py, sy = _axis(simcc_y.to(dtype), blur_kernel_y, refine)
    empty = (sx == _NEG_INF) | (sy == _NEG_INF)  # (B, K, 1): a row with no value to decode
    keypoints = torch.cat([px, py], -1) / split_ratio
    keypoints = torch.where(empty, _NAN, keypoints)
    scores = torch.where(empty, _NEG_INF, 0.5 * (sx + sy)) if score_mode == 1 else torch.minimum(sx, sy)
    return keypoints.to(simcc_x.dtype), scores.squeeze(-1).to(simcc_x.dtype)


def _fake(simcc_x: Tensor, *_) -> tuple[Tensor, Tensor]:
    batch, keys = simcc_x.shape[0], simcc_x.shape[1]
    return simcc_x.new_empty(batch, keys, 2), simcc_x.new_empty(batch, keys)


# --- public API --------------------------------------------------------------------------------------------
def _check_inputs(simcc_x: Tensor, simcc_y: Tensor) -> None:
    validate_tensor(simcc_x, "simcc_x", "(B, K, Lx)", 3)
    validate_tensor(simcc_y, "simcc_y", "(B, K, Ly)", 3)
    if simcc_x.shape[:2] != simcc_y.shape[:2]:
        raise ValueError(
            f"simcc_x (B, K, Lx) and simcc_y (B, K, Ly) must have the same B and K; got shapes "
            f"{tuple(simcc_x.shape)} and {tuple(simcc_y.shape)}"
        )
    for name, t, legend in (("simcc_x", simcc_x, "(B, K, Lx)"), ("simcc_y", simcc_y, "(B, K, Ly)")):
        if t.shape[2] == 0:
            raise ValueError(
                f"{name} must have shape {legend} with a last axis >= 1 (nothing to decode in an empty row); "
                f"got shape {tuple(t.shape)}"
            )


def decode_simcc(
    simcc_x: Tensor,
    simcc_y: Tensor,
    *,
    split_ratio: float = 2.0,
    refine: str = "none",
    sigma: float | tuple[float, float] = 6.0,
    score_mode: str = "min",
) -> tuple[Tensor, Tensor]:
    """Decodes SimCC vectors to keypoints in input pixels of the crop, and scores.

    Args:
        simcc_x: ``(B, K, Lx)``, the x (column) classification vector of each keypoint.
        simcc_y: ``(B, K, Ly)``, the y (row) vector; same ``B`` and ``K``, any ``Ly``.
        split_ratio: SimCC bins per input pixel (mmpose's ``simcc_split_ratio``; 2.0 for RTMPose, DWPose, RTMW).
        refine: ``"none"`` (argmax bin) or ``"dark"`` (mmpose's ``refine_simcc_dark`` per axis, with kpx's
            border rule, see the module docstring).
        sigma: the SimCC label sigma in bins, one number or ``(sigma_x, sigma_y)`` (the codec's ``sigma``, e.g.
            ``(4.9, 5.66)`` for RTMPose at 256x192); it sets DARK's blur kernel and is unused otherwise.
            Default 6.0, mmpose's ``SimCCLabel`` default.
        score_mode: ``"min"`` (the smaller of the two row maxima, mmpose) or ``"mean"`` (their mean, rtmlib).

    Returns:
        ``keypoints (B, K, 2)`` as ``(x, y)`` in input pixels (NaN where a row holds nothing but NaN and ``-inf``)
        and ``scores (B, K)`` (``-inf`` there), both in ``simcc_x``'s dtype.
    """
    _check_inputs(simcc_x, simcc_y)
    split = check_split_ratio(split_ratio)
    code = mode_code(refine, "refine", REFINE_MODES)
    kx, ky = blur_kernels(sigma)
    mode = mode_code(score_mode, "score_mode", SCORE_MODES)
    if is_exporting():
        return torch.ops.kpx.decode_simcc(simcc_x, simcc_y, split, code, kx, ky, mode)
    return reference(simcc_x, simcc_y, split, code, kx, ky, mode)


def simcc_visibility(
    simcc_x: Tensor, simcc_y: Tensor, *, sigma: float | tuple[float, float] = 6.0, beta: float = 150.0
) -> Tensor:
    """mmpose's SimCC visibility (``SimCCLabel(decode_visibility=True)``): ``(B, K, Lx), (B, K, Ly)`` -> ``(B, K)``.

    Per axis, the largest softmax probability of the row scaled by ``beta * sigma_axis``; the keypoint's
    visibility is the smaller of the two. Plain torch (``Mul``, ``Softmax``, ``ReduceMax``, ``Min`` once
    exported), not a kpx node: it depends on two training-time constants that the vectors do not carry, so it
    is a separate output the model computes next to :func:`decode_simcc`. NaN in a row makes that row's
    probabilities NaN (a softmax over it), as in mmpose; computed in float32 for fp16/bf16 rows.

    Args:
        simcc_x, simcc_y: the SimCC vectors, as for :func:`decode_simcc`.
        sigma: the label sigma in bins, one number or ``(sigma_x, sigma_y)`` (the codec's ``sigma``).
        beta: mmpose's ``decode_beta`` (150.0).
    """
    _check_inputs(simcc_x, simcc_y)
    blur_kernels(sigma)  # validates sigma
    sx, sy = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else (float(sigma[0]), float(sigma[1]))
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 < beta < math.inf):
        raise ValueError(f"beta must be a finite number > 0 (mmpose's decode_beta, 150.0); got {beta!r}")
    dtype = compute_dtype(simcc_x.dtype)
    vx = torch.softmax(simcc_x.to(dtype) * (beta * sx), -1).amax(-1)
    vy = torch.softmax(simcc_y.to(dtype) * (beta * sy), -1).amax(-1)
    return torch.minimum(vx, vy).to(simcc_x.dtype)


class DecodeSimCC(nn.Module):
    """Module form of :func:`decode_simcc`; ``(B, K, Lx), (B, K, Ly)`` -> ``(keypoints (B, K, 2), scores (B, K))``."""

    def __init__(
        self,
        *,
        split_ratio: float = 2.0,
        refine: str = "none",
        sigma: float | tuple[float, float] = 6.0,
        score_mode: str = "min",
    ) -> None:
        super().__init__()
        self.split_ratio = check_split_ratio(split_ratio)
        mode_code(refine, "refine", REFINE_MODES)
        blur_kernels(sigma)
        mode_code(score_mode, "score_mode", SCORE_MODES)
        self.refine, self.sigma, self.score_mode = refine, sigma, score_mode

    def forward(self, simcc_x: Tensor, simcc_y: Tensor) -> tuple[Tensor, Tensor]:
        return decode_simcc(
            simcc_x, simcc_y, split_ratio=self.split_ratio, refine=self.refine, sigma=self.sigma,
            score_mode=self.score_mode,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"split_ratio={self.split_ratio}, refine={self.refine!r}, sigma={self.sigma}, "
            f"score_mode={self.score_mode!r}"
        )


# --- ONNX --------------------------------------------------------------------------------------------------
def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``.

    Per axis only the argmax, its maximum and the gathered window; the DARK arithmetic runs on both axes at
    once, stacked as ``(B, K, 2, ...)`` with the larger of the two kernel radii (taps beyond an axis's own
    radius get weight 0). Uses only ops whose signatures are the same from opset 13 to 21 (no Reduce*).
    """
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def DecodeSimCC(
        simcc_x,
        simcc_y,
        split_ratio: float = 2.0,
        refine: int = 0,
        blur_kernel_x: int = 37,
        blur_kernel_y: int = 37,
        score_mode: int = 0,
    ):
        vx = op.Cast(simcc_x, to=FLOAT)
        vy = op.Cast(simcc_y, to=FLOAT)
        neg_inf = op.Constant(value_float=_NEG_INF)
        zero = op.Constant(value_float=0.0)
        zero_i = op.Constant(value_int=0)
        one_i = op.Constant(value_int=1)
        cx = op.Where(op.IsNaN(vx), neg_inf, vx)
        cy = op.Where(op.IsNaN(vy), neg_inf, vy)
        ix = op.ArgMax(cx, axis=2, keepdims=1, select_last_index=0)  # (B, K, 1): the first maximum
        iy = op.ArgMax(cy, axis=2, keepdims=1, select_last_index=0)
        sx = op.GatherElements(cx, ix, axis=2)
        sy = op.GatherElements(cy, iy, axis=2)
        bins = op.Cast(op.Concat(ix, iy, axis=2), to=FLOAT)  # (B, K, 2)
        code = op.Constant(value_int=refine)
        # `refine` and `score_mode` are attributes: runtimes fold these Ifs away when they load the model
        if op.Equal(code, one_i):
            lx = op.Shape(vx, start=2, end=3)
            ly = op.Shape(vy, start=2, end=3)
            kernels = op.Concat(
                op.Unsqueeze(op.Constant(value_int=blur_kernel_x), [0]),
                op.Unsqueeze(op.Constant(value_int=blur_kernel_y), [0]),
                axis=0,
            )
            radius = op.Div(kernels, op.Constant(value_int=2))  # (2,): rx, ry
            big = op.Max(op.Slice(radius, [0], [1]), op.Slice(radius, [1], [2]))  # (1,): R
            n = op.Add(op.Mul(big, op.Constant(value_int=2)), one_i)  # (1,): 2R + 1
            j = op.Range(op.Neg(op.Squeeze(big)), op.Add(op.Squeeze(big), one_i), one_i)  # (n,) kernel offsets
            offsets = op.Reshape(
                op.Add(op.Unsqueeze(op.Constant(value_ints=[-1, 0, 1]), [1]), op.Unsqueeze(j, [0])),
                op.Constant(value_ints=[-1]),
            )  # (3n,): the windows of x - 1, x, x + 1
            # non-finite values enter the blur as 0 (v - v == 0 only for finite v)
            srcx = op.Where(op.Equal(op.Sub(vx, vx), zero), vx, zero)
            srcy = op.Where(op.Equal(op.Sub(vy, vy), zero), vy, zero)
            wx = op.GatherElements(srcx, op.Min(op.Max(op.Add(ix, offsets), zero_i), op.Sub(lx, one_i)), axis=2)
            wy = op.GatherElements(srcy, op.Min(op.Max(op.Add(iy, offsets), zero_i), op.Sub(ly, one_i)), axis=2)
            # (B, K, 2, 3, n); allowzero: B or K may be 0 (a 0 would otherwise copy the input's dim)
            shape = op.Concat(op.Shape(vx, start=0, end=2), op.Constant(value_ints=[2, 3]), n, axis=0)
            window = op.Reshape(op.Concat(op.Unsqueeze(wx, [2]), op.Unsqueeze(wy, [2]), axis=2), shape, allowzero=1)
            index = op.Concat(ix, iy, axis=2)  # (B, K, 2)
            lengths = op.Concat(lx, ly, axis=0)  # (2,)
            rho = op.Min(op.Min(op.Sub(index, one_i), op.Sub(op.Sub(lengths, op.Constant(value_int=2)), index)), radius)
            mask = op.LessOrEqual(op.Abs(j), op.Unsqueeze(rho, [3]))  # (B, K, 2, n)
            s = op.Add(op.Mul(op.Sub(op.Cast(radius, to=FLOAT), 1.0), 0.3), 0.8)  # (2,): OpenCV's sigma per axis
            jf = op.Cast(j, to=FLOAT)
            g = op.Exp(op.Div(op.Neg(op.Unsqueeze(op.Mul(jf, jf), [0])), op.Unsqueeze(op.Mul(op.Mul(s, s), 2.0), [1])))
            weights = op.Where(mask, g, zero)  # (B, K, 2, n)
            blurred = op.Squeeze(op.MatMul(window, op.Unsqueeze(weights, [4])), [4])  # (B, K, 2, 3)
            bm = op.Squeeze(op.Slice(blurred, [0], [1], [3]), [3])  # (B, K, 2)
            b0 = op.Squeeze(op.Slice(blurred, [1], [2], [3]), [3])
            bp = op.Squeeze(op.Slice(blurred, [2], [3], [3]), [3])
            peak = op.Concat(sx, sy, axis=2)
            ok = op.And(op.GreaterOrEqual(rho, zero_i), op.Equal(op.Sub(peak, peak), zero))  # neighbours, finite max
            ok = op.And(ok, op.And(op.And(op.Greater(bm, zero), op.Greater(b0, zero)), op.Greater(bp, zero)))
            lm = op.Log(op.Div(bm, b0))
            lp = op.Log(op.Div(bp, b0))
            dx = op.Mul(op.Sub(lp, lm), 0.5)
            dxx = op.Add(lp, lm)
            total = op.Add(dx, dxx)
            ok = op.And(ok, op.And(op.Equal(op.Sub(total, total), zero), op.Less(dxx, zero)))
            step = op.Div(op.Neg(dx), dxx)
            bound = op.Cast(op.Add(rho, one_i), to=FLOAT)
            refined = op.Add(bins, op.Where(ok, op.Min(op.Max(step, op.Neg(bound)), bound), zero))
        else:
            refined = op.Identity(bins)
        empty = op.Or(op.Equal(sx, neg_inf), op.Equal(sy, neg_inf))  # (B, K, 1): a row with no value to decode
        keypoints = op.Div(refined, op.Constant(value_float=split_ratio))
        keypoints = op.Where(empty, op.Constant(value_float=_NAN), keypoints)
        mode = op.Constant(value_int=score_mode)
        if op.Equal(mode, one_i):  # noqa: SIM108 (onnxscript turns this statement into an If node)
            scores = op.Where(empty, neg_inf, op.Mul(op.Add(sx, sy), 0.5))
        else:
            scores = op.Min(sx, sy)
        return op.CastLike(keypoints, simcc_x), op.CastLike(op.Squeeze(scores, [2]), simcc_x)

    return DecodeSimCC


# --- samples and bad inputs --------------------------------------------------------------------------------
def _rows(batch: int, keys: int, length: int, sigma: float, seed: int, noise: float = 0.01) -> Tensor:
    """Gaussian peaks of the label sigma (bins) at uniform sub-bin centres on the row, heights 0.3..1, plus a
    little non-negative noise: the shape of RTMPose's SimCC outputs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, keys, 1, generator=g) * (length - 1)
    heights = 0.3 + 0.7 * torch.rand(batch, keys, 1, generator=g)
    rows = heights * torch.exp(-((torch.arange(length) - centres) ** 2) / (2 * sigma**2))
    return rows + noise * torch.rand(rows.shape, generator=g)


def samples() -> list[Sample]:
    """Short rows (most peaks within a kernel radius of an end) and RTMPose-sized rows; the first, DARK, is the
    parity and export sample."""
    x, y = _rows(2, 5, 40, 2.0, seed=1), _rows(2, 5, 56, 2.5, seed=2)
    dyn = ({0: "B", 1: "K", 2: "Lx"}, {0: "B", 1: "K", 2: "Ly"})
    dark = {"refine": "dark", "sigma": (2.0, 2.5)}
    rtm_x, rtm_y = _rows(1, 17, 384, 4.9, seed=3), _rows(1, 17, 512, 5.66, seed=4)
    return [
        Sample("dark_dynamic", (x, y), dark, dynamic=dyn),
        Sample("none_dynamic", (x, y), dynamic=dyn),
        Sample("dark_rtmpose_mean", (rtm_x, rtm_y), {"refine": "dark", "sigma": (4.9, 5.66), "score_mode": "mean"}),
        Sample("none_split3", (x, y), {"split_ratio": 3.0}),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for the export sample (``B, K, Lx, Ly`` dynamic, DARK with sigma (2, 2.5))."""
    x, y = _rows(2, 3, 30, 2.0, seed=5), _rows(2, 3, 45, 2.5, seed=6)
    ties_x, ties_y = torch.zeros(2, 3, 30), torch.zeros(2, 3, 45)
    ties_x[:, :, 7] = ties_x[:, :, 12] = ties_x[:, :, 20] = 1.0  # the first, 7
    ties_y[:, :, 40] = ties_y[:, :, 3] = 0.5  # the first, 3
    nan_x, nan_y = x.clone(), y.clone()
    nan_x[0, 0, 5] = nan_x[1, 2, :3] = float("nan")
    nan_x[0, 0, x[0, 0].argmax()] = float("nan")  # the maximum itself
    nan_y[1, 1] = float("nan")  # all NaN: that keypoint has no value
    inf_x, inf_y = x.clone(), y.clone()
    inf_x[0, 1] = float("-inf")  # all -inf
    inf_y[1, 0] = float("-inf")
    inf_y[1, 0, ::3] = float("nan")  # NaN and -inf only
    inf_x[1, 1, 9] = float("inf")
    inf_y[0, 2, 20] = float("-inf")
    return {
        "peaks": (x, y),
        "ties": (ties_x, ties_y),
        "flat": (torch.full((2, 3, 30), 0.25), torch.zeros(2, 3, 45)),
        "nan": (nan_x, nan_y),
        "inf": (inf_x, inf_y),
        "huge": (x * 1e30, y * 1e30),
        "max_not_positive": (x - 5.0, -y),
        "fp16_range": (x * 60000.0, y * 60000.0),
        "empty_batch": (torch.rand(0, 3, 30), torch.rand(0, 3, 45)),
        "no_keypoints": (torch.rand(2, 0, 30), torch.rand(2, 0, 45)),
        "single_bin": (torch.rand(2, 3, 1), torch.rand(2, 3, 1)),
        "short_rows": (_rows(2, 3, 2, 1.0, seed=7), _rows(2, 3, 3, 1.0, seed=8)),
        "lengths_apart": (_rows(2, 3, 5, 1.0, seed=9), _rows(2, 3, 200, 6.0, seed=10)),
    }


SPEC = register(
    OpSpec(
        name="decode_simcc",
        onnx_op_type="DecodeSimCC",
        description="SimCC x/y vectors to (x, y) in crop pixels (argmax, optional 1-D DARK) and scores",
        functional=decode_simcc,
        module=DecodeSimCC,
        reference=reference,
        fake=_fake,
        inputs=(
            OnnxInput("simcc_x", "(B, K, Lx) x classification vectors, split_ratio bins per input pixel"),
            OnnxInput("simcc_y", "(B, K, Ly) y classification vectors, split_ratio bins per input pixel"),
        ),
        outputs=(
            OnnxInput("keypoints", "(x, y) (B, K, 2) in input pixels of the crop, simcc_x's dtype"),
            OnnxInput("scores", "(B, K) the smaller (or mean) of the two row maxima (NaN ignored), simcc_x's dtype"),
        ),
        attributes=(
            OnnxAttribute("split_ratio", "float", 2.0, "SimCC bins per input pixel"),
            OnnxAttribute("refine", "int", 0, "0: argmax; 1: DARK (per axis)"),
            OnnxAttribute("blur_kernel_x", "int", 37, "odd size of DARK's blur along x (from the label sigma)"),
            OnnxAttribute("blur_kernel_y", "int", 37, "odd size of DARK's blur along y (from the label sigma)"),
            OnnxAttribute("score_mode", "int", 0, "0: min of the two row maxima (mmpose); 1: their mean (rtmlib)"),
        ),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: argmax, scores and the division by split_ratio are exact or one rounding; DARK's step moves by the
        # float32 rounding of the blur (MatMul summation order differs between runtimes) over the log-curvature.
        # fp16: the float32 result rounded once to half (eps 9.8e-4; one rounding flip is one ulp).
        tolerances={torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.float64: (1e-5, 1e-5)},
        conventions="keypoints out (x, y) in input pixels of the crop: SimCC bin / split_ratio, bin centres",
    )
)
