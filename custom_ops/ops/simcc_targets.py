"""simcc_targets: keypoints to SimCC (RTMPose) training targets, mmpose's ``SimCCLabel(smoothing_type="gaussian")``.

``keypoints (B, K, 2)`` as ``(x, y)`` in input-image pixels, ``input_size = (W, H)``, ``sigma`` ->
``target_x (B, K, Lx)``, ``target_y (B, K, Ly)``, ``weights (B, K)``, with ``Lx = round(W * split_ratio)`` and
``Ly = round(H * split_ratio)`` bins.

Definition (docs/spec.md), per keypoint and axis, ``s = split_ratio``, ``L`` the axis' bins, ``sigma`` that axis'::

    mu      = round_half_even(p * s)                      # mmpose: np.around(keypoints * ratio).astype(int64)
    valid   = mu - 3 sigma < L  and  mu + 3 sigma + 1 >= 0 # mmpose: left >= W or right < 0 drops the keypoint
    row[i]  = exp(-(i - c)^2 / (2 sigma^2)),  i = 0 .. L-1, c = mu (default) or p * s (subpixel=True)
    row    /= sigma * sqrt(2 pi)                           # normalize=True only

A keypoint is rendered (weight 1, both rows as above) when it is visible (visibility >= 0.5), both
coordinates are finite, both axes are valid, and (tensor sigma) both sigmas are finite and > 0;
otherwise its weight is 0 and both rows are all zero. The output never contains NaN.

Decisions where the team's contract was silent or mmpose had to be checked (measured against mmpose
``main`` at 759b39c, ``mmpose/codecs/simcc_label.py``):

- ``input_size`` is ``(W, H)``, mmpose's order (``SimCCLabel(input_size=(w, h))``, RTMPose configs
  ``input_size=(192, 256)``). kpx's other ops take ``size = (H, W)``: this one follows mmpose on purpose,
  because it is copied from mmpose configs.
- ``sigma`` is in **bins** (SimCC label units, ``1 / split_ratio`` input pixels) and is **not** scaled by
  ``split_ratio``: mmpose uses it as given (RTMPose's configs: ``sigma=(4.9, 5.66)`` at 192x256 and
  ``(6.0, 6.93)`` at 288x384, split 2.0). A number means the same sigma on both axes, as mmpose's
  ``np.array([sigma, sigma])``.
- Centres round half to even (``np.around``; ``torch.round`` and ONNX ``Round`` do the same). This differs
  from ``gaussian_heatmaps``' ``floor(p + 0.5)``: with split 2.0 a tie is ``p = k + 0.25`` or ``k + 0.75``.
- The rows are full-axis Gaussians with peak 1 (not cut to a 3-sigma window, as in mmpose); the 3-sigma
  rule only decides the weight. mmpose drops a keypoint when ``mu - 3 sigma >= L`` or ``mu + 3 sigma + 1 < 0``,
  so a window ``[mu - 3 sigma, mu + 3 sigma]`` that misses the axis by less than one bin (on the left also by
  exactly one bin) keeps weight 1, and its row is the Gaussian's tail. kpx keeps that rule exactly.
- ``subpixel=True`` centres the Gaussian at the exact ``p * split_ratio``; the weight rule still uses the
  rounded ``mu``, so weights do not depend on ``subpixel``.
- Weights are 1 or 0 (the kpx convention of ``gaussian_heatmaps``). mmpose copies the visibility value
  itself (0.7 gives 0.7, an invisible 0.3 gives 0.3, COCO's flag 2 would give 2); with 0/1 visibility, as
  mmpose's datasets produce, the two agree. A NaN visibility is "not visible" (mmpose would render it with
  weight NaN).
- Non-finite coordinates give weight 0 and zero rows (mmpose on x86 gets the same through the int64
  overflow of NaN/inf, with a RuntimeWarning).
- ``normalize`` defaults to False, as RTMPose's configs pass it; mmpose's class default is True. It divides
  each axis by its own ``sigma * sqrt(2 pi)``, as mmpose does per axis.
- ``Lx, Ly`` are ``round_half_even(W * split_ratio)`` (mmpose: ``np.around(w * ratio)``, float64). ONNX float
  attributes are float32, so the body evaluates it in float32; a ``split_ratio`` for which the two differ
  (never for a float32-exact ratio such as 2.0, 1.5 or 3.0) is a ``ValueError`` rather than a silent
  one-bin difference. Centres use ``float32(split_ratio)``, as numpy does for mmpose's float32 keypoints.
- Values below the compute dtype's smallest normal number (``exp(-87.3) = 1.2e-38`` in float32) are written
  as 0: torch's ``exp`` is 7-25x slower where its result is subnormal or zero, and these are most bins of a
  row. mmpose keeps float32 subnormals (down to 1.4e-45); no loss can see the difference.
- A tensor ``sigma`` that is not finite and > 0 renders nothing (weight 0); a Python sigma <= 0 raises.

``input_size``, ``split_ratio``, ``normalize`` and ``subpixel`` are static (node attributes); B and K may be
dynamic. No Python loop over keypoints; the two rows are computed by broadcasting.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from custom_ops.ops._common import (
    BOOL,
    FLOAT,
    as_sequence,
    check_split_ratio,
    compute_dtype,
    is_exporting,
    positive_scalar,
    tracing,
    validate_tensor,
)
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register

#: ``log`` of a value just above the smallest normal number, per compute dtype: ``exp`` below it is flushed to 0.
#: The float32 value is the literal of the ONNX body (-87.33654 as float32: exp gives 1.1754998e-38 >= 1.1754944e-38).
_EXP_FLOOR = {torch.float32: -87.33654, torch.float64: -708.3964}


def _float32(value: float) -> float:
    """``value`` rounded to float32 (what an ONNX float attribute holds); OverflowError beyond its range."""
    return struct.unpack("f", struct.pack("f", value))[0]


def label_lengths(input_size: Sequence[int], split_ratio: float) -> tuple[int, int]:
    """``(Lx, Ly) = round_half_even((W, H) * split_ratio)``, mmpose's label lengths.

    Raises ValueError when the float32 evaluation of the ONNX body would give another length (see the module
    docstring) or when a length is < 1.
    """
    lengths = []
    for name, n in zip(("W", "H"), input_size):
        exact = round(n * split_ratio)  # Python's round is half to even, like np.around; float64 like mmpose
        try:
            single = round(_float32(_float32(float(n)) * _float32(split_ratio)))
        except OverflowError:
            single = None
        if single != exact:
            raise ValueError(
                f"split_ratio={split_ratio!r}: round({name} * split_ratio) is {exact} in float64 (mmpose) but "
                f"{single} in float32 (ONNX float attributes are float32); pick a split_ratio that float32 holds "
                "exactly, such as 2.0, 1.5 or 3.0"
            )
        if exact < 1:
            raise ValueError(
                f"input_size * split_ratio must give at least one bin per axis; got {name}={n}, "
                f"split_ratio={split_ratio!r}: round({n * split_ratio!r}) = {exact}"
            )
        lengths.append(exact)
    return lengths[0], lengths[1]


def _gaussian(d: Tensor, scale: Tensor, norm: Tensor | None, floor: float) -> Tensor:
    """``exp(-d^2 / (2 sigma^2))`` as ``exp(-z^2)``, ``z = d * scale``, ``scale = 1 / (sigma sqrt 2)`` (no overflow of
    ``d^2`` for a huge sigma); results below the smallest normal are 0 (``exp`` is 7-25x slower there); divided by
    ``norm`` when given. The one formula of both paths: the table path is bit-identical to the general one."""
    z = d * scale
    arg = -(z * z)
    g = torch.where(arg >= floor, torch.exp(arg.clamp(min=floor)), 0.0)
    return g if norm is None else g / norm


def _sigma_terms(s: Tensor) -> tuple[Tensor, Tensor]:
    """``scale = 1 / (sigma sqrt 2)`` (clamped finite) and ``norm = sigma sqrt(2 pi)``, in ``s``'s dtype."""
    return (1.0 / (s * math.sqrt(2.0))).clamp(max=torch.finfo(s.dtype).max), s * math.sqrt(2.0 * math.pi)


@functools.lru_cache(maxsize=64)
def _row_table(
    length: int, margin: int, sigma: float, normalize: bool, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Every row a centre ``mu`` in ``[-margin, length + margin)`` can have, then an all-zero row: a
    ``(2 length + 2 margin, length)`` view (``unfold``) whose row ``length + margin - 1 - mu`` is ``mu``'s row and
    whose last row is zeros. Eager only (memoised per size; do not modify it)."""
    with torch.inference_mode(False):
        s = torch.tensor(sigma, dtype=dtype, device=device)
        scale, norm = _sigma_terms(s)
        d = torch.arange(-(length + margin - 1), length + margin, device=device, dtype=dtype)  # every offset i - mu
        g = _gaussian(d, scale, norm if normalize else None, _EXP_FLOOR[dtype])
        return torch.cat([g, g.new_zeros(length)]).unfold(0, length, 1)


def reference(
    keypoints: Tensor,
    sigma: Tensor | tuple[float, float],
    visibility: Tensor | None,
    input_size: list[int],
    split_ratio: float,
    normalize: bool,
    subpixel: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Plain torch definition. ``(B, K, 2)`` -> ``(B, K, Lx)``, ``(B, K, Ly)``, ``(B, K)``.

    ``sigma`` is a ``(sx, sy)`` pair of Python numbers, or a tensor of one or two elements. Eagerly, with a
    Python sigma and integer-bin centres, every row is read from a table of the rows of all possible centres
    (:func:`_row_table`: one gather per output element, bit-identical values; tests compare both paths).
    In a trace (stock ``torch.onnx``, ``torch.export``, ``torch.jit.trace``) the general path runs.
    """
    lengths = label_lengths(input_size, split_ratio)
    dtype = compute_dtype(keypoints.dtype)
    device = keypoints.device
    p = keypoints.to(dtype) * split_ratio  # (B, K, 2) in bins; float32(split_ratio), as numpy does
    mu = torch.round(p)  # half to even, as np.around
    if isinstance(sigma, Tensor):  # one or two elements; a value that is not finite and > 0 renders nothing
        s = sigma.to(device=device, dtype=dtype).reshape(-1).expand(2)
        s_ok = (s > 0) & torch.isfinite(s)
        s = torch.where(s_ok, s, 1.0)
        sigma_ok: Tensor | None = s_ok[0] & s_ok[1]
    else:
        s = torch.tensor([float(sigma[0]), float(sigma[1])], dtype=dtype, device=device)
        sigma_ok = None
    radius = 3.0 * s
    n = torch.tensor(lengths, dtype=dtype, device=device)
    # mmpose: left = mu - radius, right = mu + radius + 1; dropped if left >= L or right < 0 (NaN: dropped too)
    ok = torch.isfinite(p) & (mu - radius < n) & (mu + radius + 1.0 >= 0.0)  # (B, K, 2)
    valid = ok[..., 0] & ok[..., 1]  # (B, K)
    if sigma_ok is not None:
        valid = valid & sigma_ok
    if visibility is not None:  # any numeric or bool dtype; NaN is not visible
        valid = valid & (visibility.to(device=device, dtype=dtype) >= 0.5)
    keep = valid.unsqueeze(-1)
    rows = []
    if not (tracing() or subpixel or isinstance(sigma, Tensor)):
        margins = [math.ceil(3.0 * float(v)) + 2 for v in sigma]  # valid centres lie in [-margin, L + margin)
        if all(m <= 4 * n for m, n in zip(margins, lengths)):  # the table stays small
            for axis, (length, margin) in enumerate(zip(lengths, margins)):
                table = _row_table(length, margin, float(sigma[axis]), normalize, device, dtype)
                index = torch.where(valid, (length + margin - 1) - mu[..., axis], float(table.shape[0] - 1))
                g = table.index_select(0, index.long().reshape(-1)).view(*index.shape, length)
                rows.append(g.to(keypoints.dtype))
            return rows[0], rows[1], valid.to(keypoints.dtype)
    centre = torch.where(keep, p if subpixel else mu, 0.0)  # invalid keypoints: a finite stand-in
    scale, norm = _sigma_terms(s)
    for axis in range(2):  # x then y: two broadcasts, not a loop over keypoints
        u = torch.arange(lengths[axis], device=device, dtype=dtype)
        d = u - centre[..., axis : axis + 1]  # (B, K, L)
        g = _gaussian(d, scale[axis], norm[axis] if normalize else None, _EXP_FLOOR[dtype])
        rows.append(torch.where(keep, g, 0.0).to(keypoints.dtype))
    return rows[0], rows[1], valid.to(keypoints.dtype)


def _fake(
    keypoints: Tensor, sigma: Tensor, visibility: Tensor, input_size: list[int], split_ratio: float, *_
) -> tuple[Tensor, Tensor, Tensor]:
    lx, ly = label_lengths(input_size, split_ratio)
    batch, keys = keypoints.shape[0], keypoints.shape[1]
    return keypoints.new_empty(batch, keys, lx), keypoints.new_empty(batch, keys, ly), keypoints.new_empty(batch, keys)


def _check_sigma(sigma: object) -> Tensor | tuple[float, float]:
    """A positive number, a pair ``(sx, sy)`` of them, or a float tensor of one or two elements."""
    if isinstance(sigma, Tensor):
        if sigma.numel() not in (1, 2) or sigma.dim() > 1:
            raise ValueError(
                f"sigma must be a number, a (sx, sy) pair, a 0-d tensor or a (2,) tensor; got a tensor of shape "
                f"{tuple(sigma.shape)}"
            )
        return validate_tensor(sigma, "sigma", "() or (2,)")
    if isinstance(sigma, (tuple, list)):
        if len(sigma) != 2:
            raise ValueError(f"sigma must be a number or a (sx, sy) pair of numbers, in bins; got {sigma!r}")
        sx, sy = (positive_scalar(v, "sigma") for v in sigma)
        if isinstance(sx, Tensor) or isinstance(sy, Tensor):
            raise ValueError(f"sigma as a pair must hold Python numbers (or pass a (2,) tensor); got {sigma!r}")
        return sx, sy
    value = positive_scalar(sigma, "sigma")
    return value if isinstance(value, Tensor) else (value, value)


def _check_inputs(keypoints: Tensor, visibility: Tensor | None) -> None:
    validate_tensor(keypoints, "keypoints", "(B, K, 2)", ndim=3)
    if keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (B, K, 2); got shape {tuple(keypoints.shape)}")
    if visibility is not None:  # any numeric or bool dtype (COCO's 0/1/2 flags work as they are)
        if not isinstance(visibility, Tensor):
            raise ValueError(f"visibility must be a tensor of shape {tuple(keypoints.shape[:-1])}; got {visibility!r}")
        if visibility.shape != keypoints.shape[:-1]:
            raise ValueError(
                f"visibility must have shape (B, K) = {tuple(keypoints.shape[:-1])}, the keypoints' without the "
                f"last axis; got {tuple(visibility.shape)}"
            )


def simcc_targets(
    keypoints: Tensor,
    input_size: tuple[int, int],
    sigma: Tensor | float | tuple[float, float],
    *,
    split_ratio: float = 2.0,
    visibility: Tensor | None = None,
    normalize: bool = False,
    subpixel: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """SimCC training targets for all keypoints at once, as mmpose's ``SimCCLabel(smoothing_type="gaussian")``.

    Args:
        keypoints: ``(B, K, 2)`` as ``(x, y)`` in input-image pixels.
        input_size: ``(W, H)`` of the network input, **width first** as in mmpose configs (not kpx's ``(H, W)``).
        sigma: in bins (not scaled by ``split_ratio``, as mmpose): a number > 0, a ``(sx, sy)`` pair, a 0-d or a
            ``(2,)`` tensor.
        split_ratio: bins per input pixel; ``Lx = round(W * split_ratio)``, ``Ly = round(H * split_ratio)``.
        visibility: ``(B, K)``, any numeric or bool dtype; keypoints with visibility < 0.5 are not rendered.
        normalize: divide each axis' row by its ``sigma * sqrt(2 pi)`` (mmpose's ``normalize``).
        subpixel: centre the Gaussian at the exact ``p * split_ratio`` instead of the rounded bin.

    Returns:
        ``target_x (B, K, Lx)``, ``target_y (B, K, Ly)`` (peak 1 unless ``normalize``) and ``weights (B, K)``
        (1 rendered, 0 not), all in ``keypoints``' dtype.
    """
    _check_inputs(keypoints, visibility)
    sigma = _check_sigma(sigma)
    size = list(as_sequence(input_size, "input_size (W, H)", 2))
    ratio = check_split_ratio(split_ratio)
    label_lengths(size, ratio)  # validates before any work
    if is_exporting():
        if isinstance(sigma, Tensor):
            s = sigma.to(device=keypoints.device, dtype=torch.float32).reshape(-1).expand(2)
        else:
            s = torch.tensor(sigma, device=keypoints.device, dtype=torch.float32)
        if visibility is None:
            visibility = torch.ones(keypoints.shape[:-1], device=keypoints.device)
        vis = visibility.to(torch.float32)
        return torch.ops.kpx.simcc_targets(keypoints, s, vis, size, ratio, bool(normalize), bool(subpixel))
    return reference(keypoints, sigma, visibility, size, ratio, bool(normalize), bool(subpixel))


class SimCCTargets(nn.Module):
    """Module form of :func:`simcc_targets`; ``(keypoints, [visibility])`` -> ``(target_x, target_y, weights)``."""

    def __init__(
        self,
        input_size: tuple[int, int],
        sigma: Tensor | float | tuple[float, float],
        *,
        split_ratio: float = 2.0,
        normalize: bool = False,
        subpixel: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = as_sequence(input_size, "input_size (W, H)", 2)
        self.sigma = sigma
        self.options = {"split_ratio": split_ratio, "normalize": normalize, "subpixel": subpixel}

    def forward(self, keypoints: Tensor, visibility: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        return simcc_targets(keypoints, self.input_size, self.sigma, visibility=visibility, **self.options)


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def SimCCTargets(
        keypoints,
        sigma,
        visibility,
        input_size: list[int],
        split_ratio: float = 2.0,
        normalize: int = 0,
        subpixel: int = 0,
    ):
        ratio = op.Constant(value_float=split_ratio)
        wh = op.Constant(value_ints=input_size)  # (W, H), int64
        n = op.CastLike(op.Round(op.Cast(wh, to=FLOAT) * ratio), wh)  # (Lx, Ly): static, folded at load
        nf = op.Cast(n, to=FLOAT)
        p = op.Cast(keypoints, to=FLOAT) * ratio  # (B, K, 2) in bins
        mu = op.Round(p)  # half to even, as np.around
        s = op.Expand(op.Cast(sigma, to=FLOAT), op.Constant(value_ints=[2]))  # (sx, sy)
        s_ok = op.And(s > 0.0, op.Equal(s - s, 0.0))  # finite and > 0
        s = op.Where(s_ok, s, op.Constant(value_float=1.0))
        radius = s * 3.0
        # finite (p - p == 0); mmpose's window rule: dropped when mu - 3 sigma >= L or mu + 3 sigma + 1 < 0
        ok = op.And(op.Equal(p - p, 0.0), op.And(mu - radius < nf, mu + radius + 1.0 >= 0.0))
        ok = op.And(ok, s_ok)  # (B, K, 2)
        valid = op.And(op.Slice(ok, [0], [1], [-1]), op.Slice(ok, [1], [2], [-1]))
        vis = op.Cast(visibility, to=FLOAT)
        # NaN is not visible; the IsNaN guard because OpenVINO 2026.4's CPU plugin on AVX-512 says NaN >= 0.5
        visible = op.And(vis >= 0.5, op.Not(op.IsNaN(vis)))
        valid = op.And(valid, op.Unsqueeze(visible, [-1]))  # (B, K, 1)
        zero = op.Constant(value_float=0.0)
        centre = op.Where(valid, op.Where(op.Cast(subpixel, to=BOOL), p, mu), zero)  # finite stand-ins
        scale = op.Min(op.Reciprocal(s * 1.4142135), op.Constant(value_float=3.4028235e38))  # 1 / (sigma sqrt 2)
        one = op.Constant(value_float=1.0)
        norm = op.Where(op.Cast(normalize, to=BOOL), s * 2.5066283, op.Expand(one, op.Constant(value_ints=[2])))
        floor = op.Constant(value_float=-87.33654)  # exp of anything below is subnormal: flushed to 0
        u = op.Cast(op.Range(0, op.Squeeze(op.Slice(n, [0], [1]), [0]), 1), to=FLOAT)  # (Lx,)
        zx = (u - op.Slice(centre, [0], [1], [-1])) * op.Slice(scale, [0], [1])
        ax = -(zx * zx)
        gx = op.Where(op.And(valid, ax >= floor), op.Exp(op.Max(ax, floor)), zero) / op.Slice(norm, [0], [1])
        v = op.Cast(op.Range(0, op.Squeeze(op.Slice(n, [1], [2]), [0]), 1), to=FLOAT)  # (Ly,)
        zy = (v - op.Slice(centre, [1], [2], [-1])) * op.Slice(scale, [1], [2])
        ay = -(zy * zy)
        gy = op.Where(op.And(valid, ay >= floor), op.Exp(op.Max(ay, floor)), zero) / op.Slice(norm, [1], [2])
        target_x = op.CastLike(gx, keypoints)
        target_y = op.CastLike(gy, keypoints)
        weights = op.CastLike(op.Squeeze(valid, [2]), keypoints)  # a non-negative axis: empty inputs stay safe
        return target_x, target_y, weights

    return SimCCTargets


#: RTMPose-s/m/l 256x192 (COCO): ``input_size=(192, 256)``, ``sigma=(4.9, 5.66)``, ``simcc_split_ratio=2.0``
RTMPOSE_SIZE, RTMPOSE_SIGMA = (192, 256), (4.9, 5.66)


def _keypoints(batch: int, keys: int, seed: int) -> Tensor:
    """Keypoints around and off a 192x256 input: most on it, some up to 20 px beyond each side."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, keys, 2, generator=g) * torch.tensor([232.0, 296.0]) - 20.0


def samples() -> list[Sample]:
    """RTMPose sizes; on, near and off the input (NaN, inf, a window just inside/outside); every option.

    sigma is a Python number or pair here: the generic tests require every tensor argument's ``.tolist()`` to
    be refused, and a sigma list is a valid pair. Tensor sigmas (0-d, ``(2,)``, invalid values) are exercised
    as ONNX model inputs in tests/ops/test_simcc_targets.py.
    """
    kp = _keypoints(2, 17, seed=8)
    # mmpose's rule at 192x256, 3 sigma_x = 14.7 bins, L = 384: dropped iff mu - 14.7 >= 384 or mu + 15.7 < 0
    kp[0, 1] = torch.tensor([-14.0, 100.0])  # mu = -28: dropped
    kp[0, 2] = torch.tensor([-7.0, 100.0])  # mu = -14: rendered (the row is the Gaussian's tail)
    kp[0, 3] = torch.tensor([199.0, 40.0])  # mu = 398: 383.3 < 384, rendered
    kp[0, 4] = torch.tensor([250.0, 40.0])  # mu = 500: dropped
    kp[1, 0] = torch.tensor([float("nan"), 3.0])
    kp[1, 1] = torch.tensor([4.0, float("inf")])
    kp[1, 2] = torch.tensor([10.25, 20.75])  # ties: 20.5 -> 20, 41.5 -> 42 (half to even)
    vis = (torch.rand(2, 17, generator=torch.Generator().manual_seed(9)) > 0.2).float()
    dyn = ({0: "B", 1: "K"}, {0: "B", 1: "K"})  # keypoints, visibility
    return [
        Sample("rtmpose_pair_sigma", (kp, RTMPOSE_SIZE, RTMPOSE_SIGMA)),
        Sample("visibility_dynamic", (kp, RTMPOSE_SIZE, RTMPOSE_SIGMA), {"visibility": vis}, dynamic=dyn),
        Sample("number_sigma_normalize", (kp, RTMPOSE_SIZE, 6.0), {"visibility": vis, "normalize": True}),
        Sample("rtmpose_288x384_subpixel_dynamic", (kp, (288, 384), (6.0, 6.93)), {"subpixel": True}, dynamic=dyn[:1]),
        Sample(
            "split3_normalize_subpixel",
            (kp * 0.25, (48, 64), 2.0),
            {"split_ratio": 3.0, "normalize": True, "subpixel": True, "visibility": vis},
        ),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for ``keypoints (B, K, 2)`` and ``visibility (B, K)`` (B, K dynamic in the export)."""
    nan, inf = float("nan"), float("inf")
    kp = torch.tensor(
        [[[30.0, 40.0], [nan, 20.0], [20.0, nan], [inf, 20.0], [20.0, -inf], [1e30, 20.0], [20.0, -1e30], [50.0, 60.0]]]
    )
    vis = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    # around mmpose's rule at 192x256, sigma (4.9, 5.66): 3 sigma = 14.7 / 16.98 bins; mu = 2p
    edges = torch.tensor([[[-7.0, 50.0], [-8.0, 50.0], [199.0, 50.0], [200.0, 50.0], [50.0, -8.5], [50.0, 264.0],
                           [50.0, 265.0], [-300.0, 900.0]]])  # fmt: skip
    return {
        "nan_inf_huge_invisible": (kp, vis),
        "window_edges": (edges, torch.ones(1, 8)),
        "nan_visibility": (kp[:, :1].repeat(2, 3, 1), torch.tensor([[nan, 0.5, 0.49], [1.0, -1.0, 2.0]])),
        "empty_batch": (torch.zeros(0, 17, 2), torch.ones(0, 17)),
        "no_keypoints": (torch.zeros(2, 0, 2), torch.ones(2, 0)),
    }


SPEC = register(
    OpSpec(
        name="simcc_targets",
        onnx_op_type="SimCCTargets",
        description="keypoints to SimCC/RTMPose training targets (per-axis Gaussian rows over bins) and weights",
        functional=simcc_targets,
        module=SimCCTargets,
        reference=reference,
        fake=_fake,
        inputs=(
            OnnxInput("keypoints", "(B, K, 2) as (x, y) in input-image pixels"),
            OnnxInput("sigma", "(2,) float32 (sx, sy) in bins (or a 0-d one for both axes)", "tensor(float)"),
            OnnxInput("visibility", "(B, K) float32; < 0.5 is not rendered", "tensor(float)"),
        ),
        outputs=(
            OnnxInput("target_x", "(B, K, Lx), Lx = round(W * split_ratio); peak 1 unless normalize"),
            OnnxInput("target_y", "(B, K, Ly), Ly = round(H * split_ratio); peak 1 unless normalize"),
            OnnxInput("weights", "(B, K): 1 rendered, 0 not, keypoints' dtype"),
        ),
        attributes=(
            OnnxAttribute("input_size", "ints", None, "(W, H) of the network input, width first as in mmpose"),
            OnnxAttribute("split_ratio", "float", 2.0, "bins per input pixel"),
            OnnxAttribute("normalize", "bool", 0, "1: divide each row by sigma * sqrt(2 pi)"),
            OnnxAttribute("subpixel", "bool", 0, "1: Gaussian centred at p * split_ratio; 0: at the rounded bin"),
        ),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: the same float32 arguments in both (products, Round, one Reciprocal), no sums; only exp differs
        # between runtimes by an ulp or two: rtol 1e-5 holds it with room; rows at 1e-38 and below differ in
        # absolute terms only (atol 1e-6). fp16: float32 inside, one rounding to half at the end (2^-11 = 4.9e-4
        # relative): rtol 1e-3; values below 6.1e-5 are subnormal halves 6e-8 apart: atol 1e-6.
        tolerances={torch.float32: (1e-5, 1e-6), torch.float16: (1e-3, 1e-6), torch.float64: (1e-5, 1e-6)},
        conventions="keypoints in input-image pixels; input_size (W, H) as mmpose; bins = pixels * split_ratio",
    )
)
