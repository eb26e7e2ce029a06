"""gaussian_heatmaps: keypoints to MSRA/HRNet/mmpose-style training-target heatmaps, vectorised.

``keypoints (B, K, 2)`` or ``(B, I, K, 2)`` (instances, merged by element-wise
max), ``size = (H, W)``, ``sigma`` -> ``heatmaps (B, K, H, W)``, ``weights (B, K)``.

Definition (docs/spec.md): centre ``c = floor(p + 0.5)`` per axis; the Gaussian is
centred at ``g = c`` (or at ``g = p`` itself with ``subpixel=True``, UDP), has peak 1,
and is non-zero only on its window, with ``r = truncate * sigma``:

- ``window="symmetric"`` (default): pixels with ``|u - cx| <= r`` and ``|v - cy| <= r``.
  With integer ``3*sigma`` this is exactly the classic per-keypoint window copy.
- ``window="mmpose"``: offsets ``u - cx`` (and ``v - cy``) in ``[-ceil(r), floor(r)]``, mmpose's
  ``generate_gaussian_heatmaps`` / ``generate_udp_gaussian_heatmaps`` window (an array of
  ``ceil(2r + 1)`` pixels starting at ``c - ceil(r)``); one pixel wider on the left/top than
  ``"symmetric"`` when ``r`` is not a whole number (sigma 1.5, 2.5), the same otherwise.
- ``window="full"``: every pixel of the map (no truncation). The keypoint is kept when
  ``-(r + 1) <= g < n + r`` on both axes (``n`` = W or H): mmpose's test in
  ``generate_unbiased_gaussian_heatmaps`` (DARK), where the span ``[g - r, g + r + 1)`` is tested
  against ``[0, n)``. With ``subpixel=True`` this is DARK's target.

The windowed modes keep a keypoint when its window has a pixel on the map.

Weights: 1 for a rendered keypoint, else 0 (default). With ``visibility_weights=True`` a keypoint's
weight is its visibility, as mmpose copies ``keypoints_visible`` into ``keypoint_weights``, and 0 where
a visibility >= 0.5 is not rendered (not finite, off the map, bad tensor sigma). A visibility below 0.5 is
not rendered but keeps its weight wherever the keypoint is (mmpose skips it before any other test); a
visibility that is not > 0 (negative, NaN) weighs 0. Bool or 0/1 visibility: the same 0/1 weights in both modes.
``keypoint_weights (K,)`` (mmpose's ``dataset_keypoint_weights``) multiplies the merged weights; it does
not change what is rendered. It is not part of the kpx node: the exporter writes one ``Mul`` (float32)
after it, as mmpose's ``GenerateTarget`` multiplies after its encoder.

The value ``exp(-((u-gx)^2 + (v-gy)^2) / (2 sigma^2))`` on a rectangular window is
separable, so each map is the outer product of two masked per-axis vectors: one
full-size write, no loop over keypoints, no per-keypoint host synchronisation.

Decisions: zero instances ``(B, 0, K, 2)`` render zero maps with weight 0. A
keypoint gets an all-zero map (and weight 0, but see ``visibility_weights`` above) when its
visibility is < 0.5, a coordinate is not finite, its window misses the map entirely (``"full"``: the
test above), or its sigma (as a tensor) is not finite and > 0 (a Python sigma <= 0 raises). The classic
code keeps weight 1 for a window that ends exactly one pixel before the map (it tests ``br < 0`` on an
exclusive bound); kpx gives it weight 0, as nothing is drawn. Where mmpose's windowed generators differ
from ``window="mmpose"``, kpx does not follow them (docs/spec.md): they round with ``int(p + 0.5)``
(toward zero) instead of ``floor``; they start the window at ``int(c - r)``, which truncates toward zero
when ``c < r``, so for non-whole ``r`` the whole Gaussian lands 1 px right of (below) its centre for keypoints
within ``r`` of the left (top) edge (a bug); for ``r`` with a fractional part in ``(0, 0.5)`` (e.g. sigma
1.1) their peak lands 1 px left/up of ``c`` everywhere (``x0 = floor(r + 0.5)`` vs the window's
``ceil(r)``); and they keep the weight of windows ending 1 or 2 px before the map (``br < 0`` after
truncation). kpx always centres the Gaussian at ``g``.
``size`` is static (a node attribute); B, I and K may be dynamic.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from custom_ops.conventions import normalized_to_pixel
from custom_ops.ops._common import (
    BOOL,
    COORDINATE_ATTRIBUTES,
    FLOAT,
    as_sequence,
    compute_dtype,
    is_exporting,
    mode_code,
    positive_scalar,
    tracing,
    validate_tensor,
)
from custom_ops.registry import OnnxAttribute, OnnxInput, OpSpec, Sample, register


def _axes(height: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Per-size constants: pixel index ``u`` of the x axis then the y axis ``(W + H,)``, and the
    last pixel ``(W - 1, H - 1)``."""
    u = torch.cat([torch.arange(width, device=device), torch.arange(height, device=device)]).to(dtype)
    return u, torch.tensor([width - 1, height - 1], device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _cached_axes(height: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """:func:`_axes`, memoised for eager calls (outside inference mode, like the coordinate grids; no
    host-to-device copy per call on CUDA); do not modify the tensors."""
    with torch.inference_mode(False):
        return _axes(height, width, device, dtype)


def _per_pixel(xy: Tensor, width: int, height: int) -> Tensor:
    """``(..., 2)`` -> ``(..., W + H)``: x repeated W times, then y repeated H times."""
    shape = xy.shape[:-1]
    return torch.cat([xy[..., :1].expand(*shape, width), xy[..., 1:].expand(*shape, height)], -1)


#: ``window`` strings and their meaning, in the order of their ONNX attribute codes (0, 1, 2)
WINDOW_CHOICES = {
    "symmetric": "|u - c| <= truncate*sigma, the classic window",
    "mmpose": "offsets -ceil(r) .. floor(r), mmpose's MSRA/UDP window",
    "full": "the whole map, mmpose's DARK test",
}
WINDOWS = tuple(WINDOW_CHOICES)
SYMMETRIC, MMPOSE, FULL = range(len(WINDOWS))


def _window_terms(sigma: Tensor, truncate: float) -> tuple[Tensor, Tensor]:
    """``radius = truncate * sigma`` and ``scale = 1 / (sigma sqrt 2)`` (clamped finite), in sigma's dtype."""
    return truncate * sigma, (1.0 / (sigma * math.sqrt(2.0))).clamp(max=torch.finfo(sigma.dtype).max)


@functools.lru_cache(maxsize=256)
def _number_terms(sigma: float, truncate: float, dtype: torch.dtype) -> tuple[float, float]:
    """:func:`_window_terms` of a Python-number sigma, in the same float arithmetic (same bits) on a
    CPU scalar: no device op. Memoised: a training loop calls it with the same values every step."""
    radius, scale = _window_terms(torch.tensor(sigma, dtype=dtype), truncate)
    return radius.item(), scale.item()


def _mmpose_terms(radius: Tensor | float) -> tuple[Tensor | float, Tensor | float]:
    """``window="mmpose"`` as a centred test: the integer offsets ``d`` in ``[-ceil(r), floor(r)]`` are those with
    ``|d + shift| <= half``, ``shift = (ceil(r) - floor(r)) / 2`` (0 or 0.5), ``half = floor(r) + shift``."""
    if isinstance(radius, Tensor):
        shift = (torch.ceil(radius) != torch.floor(radius)).to(radius.dtype) * 0.5  # 0 for inf: never NaN
        return shift, torch.floor(radius) + shift
    if not math.isfinite(radius):  # a Python sigma near the float maximum, times truncate
        return 0.0, radius
    shift = 0.5 if radius != math.floor(radius) else 0.0
    return shift, math.floor(radius) + shift


@functools.lru_cache(maxsize=64)
def _window_rows(
    before: int,
    after: int,
    origin: int,
    pad_after: int,
    scale: float,
    height: int,
    width: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """The window of an integer centre, ``g(d) = exp(-(d * scale)^2)`` for ``d = -before .. after``, in a table of
    zeros where offset ``d`` is entry ``origin + d``, seen as rows of ``W`` (x axis) and of ``H`` (y axis)
    consecutive entries: row ``origin - c`` of an axis is the axis' Gaussian of a centre ``c``.

    Same arithmetic as the general path, so values are bit-identical. The rows are overlapping views of the one
    table (its memory only: ~2 max(H, W) + the window, not rows x width; gathering from them measured as fast as
    from a contiguous copy). Memoised; do not modify them.
    """
    with torch.inference_mode(False):
        z = torch.arange(-before, after + 1, device=device, dtype=dtype) * scale
        table = torch.nn.functional.pad(torch.exp(-(z * z)), (origin - before, pad_after))
        return table.unfold(0, width, 1), table.unfold(0, height, 1)


def _integer_spans(radius: float, window: int, height: int, width: int) -> tuple[int, int, int, int]:
    """For an integer centre ``c`` and a finite ``radius``: the drawn offsets ``u - c`` are ``-before .. after``,
    and the keypoint is kept iff ``c + reach_after >= 0`` and ``c - reach_before <= n - 1`` on both axes."""
    low, high = math.ceil(radius), math.floor(radius)
    if window == FULL:  # every pixel; kept iff -(r + 1) <= c < n + r, i.e. c >= -floor(r) - 1, c <= n - 1 + ceil(r)
        span = max(height, width) + low
        return span, span, low, high + 1
    if window == MMPOSE:
        return low, high, low, high
    return high, high, high, high


def _integer_centre_maps(
    p: Tensor, valid: Tensor | None, radius: float, scale: float, window: int, height: int, width: int, maps: Tensor
) -> tuple[Tensor, Tensor]:
    """Fast path for a Python-number sigma without ``subpixel``: a table lookup per keypoint and axis, no exp.

    The offset ``d = u - c`` of a pixel from an integer centre is an integer, so the window is the integer
    range ``-before <= d <= after`` (``|d| <= radius`` is ``|d| <= floor(radius)``) and each axis of a
    keypoint's Gaussian is one row of :func:`_window_rows`: two row gathers, then the outer product. The
    table is zero-padded out to every offset that a kept keypoint, or the off-map stand-in of a dropped one,
    has on this map, so no index needs a clamp. ``valid`` (``None``: all) is what else must hold to render; a
    non-finite keypoint fails the window test itself (NaN compares false), so no finiteness test is needed.
    Returns the maps and whether each keypoint's window meets the map.
    """
    before, after, reach_before, reach_after = _integer_spans(radius, window, height, width)
    n = max(height, width)
    origin = max(n - 1 + reach_before, before)  # offsets go down to -(n - 1 + reach_before)
    pad_after = max(n - 1 + reach_after - after, n)  # and up to n - 1 + reach_after (the stand-in's: n + after)
    rows_x, rows_y = _window_rows(before, after, origin, pad_after, scale, height, width, p.device, p.dtype)
    last = _cached_axes(height, width, p.device, p.dtype)[1]
    centre = torch.floor(p + 0.5)
    meets = ((centre >= -reach_after) & (centre <= last + reach_before)).all(-1)
    keep = meets if valid is None else meets & valid
    # the row of centre c is origin - c; a dropped keypoint takes the stand-in c = -(after + 1): a row of zeros
    row = torch.where(keep.unsqueeze(-1), origin - centre, origin + after + 1.0).long()  # (..., 2)
    gx = rows_x.index_select(0, row[..., 0].flatten()).view(*row.shape[:-1], width)
    gy = rows_y.index_select(0, row[..., 1].flatten()).view(*row.shape[:-1], height)
    return torch.mul(gy.unsqueeze(-1), gx.unsqueeze(-2), out=maps), meets


def _general_maps(
    p: Tensor,
    valid: Tensor,
    radius: Tensor | float,
    scale: Tensor | float,
    subpixel: bool,
    window: int,
    height: int,
    width: int,
    maps: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Any sigma, any options, and every trace: exp of the per-axis offsets inside the window.

    Returns the maps and whether each keypoint's window meets the map (``"full"``: the DARK test).
    """
    traced = maps is None
    centre = torch.floor(p + 0.5)
    u, last = _axes(height, width, p.device, p.dtype) if traced else _cached_axes(height, width, p.device, p.dtype)
    shift, half = _mmpose_terms(radius) if window == MMPOSE else (0.0, radius)
    if window == FULL:  # mmpose's DARK test of the span [g - r, g + r + 1) against [0, n)
        g = p if subpixel else centre
        meets = ((g + radius + 1.0 >= 0) & (g - radius < last + 1.0)).all(-1)
    elif window == MMPOSE:  # offsets -ceil(r) .. floor(r) on the map: c + floor(r) >= 0, c - ceil(r) <= n - 1
        meets = ((centre - shift + half >= 0) & (centre - shift - half <= last)).all(-1)
    else:  # the window [c - r, c + r] meets [0, n - 1] iff the map pixel nearest to c is within r of it
        nearest = torch.minimum(centre.clamp(min=0), last)
        meets = ((nearest - centre).abs() <= radius).all(-1)
    valid = valid & meets
    keep = valid.unsqueeze(-1)  # invalid keypoints: finite stand-ins and an empty window
    centre = torch.where(keep, centre, 0.0)
    c = _per_pixel(centre, width, height)  # (..., W + H): each pixel's own axis
    d = u - (_per_pixel(torch.where(keep, p, 0.0), width, height) if subpixel else c)
    if window == FULL:
        mask = keep.to(p.dtype)
    else:
        extent = torch.where(valid, half.squeeze(-1) if isinstance(half, Tensor) and half.dim() else half, -1.0)
        mask = ((u - c + shift).abs() if window == MMPOSE else (u - c).abs()) <= extent.unsqueeze(-1)
        mask = mask.to(p.dtype)
    # exp(-d^2 / (2 sigma^2)) as exp(-z^2), z = d / (sigma sqrt 2): no d^2 overflow for huge sigma.
    # z is 0 outside the window, so exp never sees the large negative arguments it is 10-30x slower on.
    z = d * mask * scale
    g = torch.exp(-(z * z)) * mask
    heatmaps = torch.mul(
        g[..., width:].unsqueeze(-1), g[..., :width].unsqueeze(-2), **({} if traced else {"out": maps})
    )
    return heatmaps, meets


def reference(
    keypoints: Tensor,
    sigma: Tensor | float,
    visibility: Tensor | None,
    size: list[int],
    truncate: float,
    subpixel: bool,
    window: int,
    visibility_weights: bool,
    normalized_coordinates: bool,
    align_corners: bool,
    instances: bool,
    keypoint_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Plain torch definition. ``(B, [I,] K, 2)`` -> ``(B, K, H, W)``, ``(B, K)``; ``instances`` iff rank 4.

    ``window`` is the index of its name in :data:`WINDOWS`. ``keypoint_weights (K,)`` is not an argument
    of the torch op (the exporter multiplies it after the node); here it multiplies the merged weights in
    the compute dtype, before the one rounding to the output dtype.

    Few, small ops (at the benchmark sizes the call is otherwise bound by per-op overhead), then one outer
    product writes the maps. A Python-number sigma without ``subpixel`` takes :func:`_integer_centre_maps`
    (one gathered table row per keypoint and axis, bit-identical values; tests compare it with
    :func:`_general_maps`, which computes both axes at once on a ``(..., W + H)`` axis). In a trace (stock
    ``torch.onnx``, ``torch.export``, ``torch.jit.trace``) the general path runs without caches or output buffers.
    """
    height, width = size
    dtype = compute_dtype(keypoints.dtype)
    traced = tracing()
    # The full-size output is allocated before any temporary, so that it can reuse the block
    # freed by the previous call; allocated after them it lands in fresh pages (page faults
    # made the whole call 3-6x slower in the benchmark).
    maps = None if traced else torch.empty(*keypoints.shape[:-1], height, width, dtype=dtype, device=keypoints.device)
    p = keypoints.to(dtype)
    if normalized_coordinates:
        p = normalized_to_pixel(p, (height, width), align_corners=align_corners)
    valid = None  # what must hold to render besides finite keypoints whose window meets the map (None: nothing)
    if isinstance(sigma, Tensor):  # () or (K,); a value that is not finite and > 0 renders nothing
        sigma = sigma.to(device=p.device, dtype=dtype)
        valid = (sigma > 0) & torch.isfinite(sigma)
        sigma = torch.where(valid, sigma, 1.0).unsqueeze(-1)  # (1,) or (K, 1): per keypoint, then per pixel
        radius, scale = _window_terms(sigma, truncate)
    elif traced:  # the same float arithmetic as _number_terms, on tensors the tracer records as constants
        radius, scale = _window_terms(torch.tensor(float(sigma), dtype=dtype, device=p.device), truncate)
    else:
        radius, scale = _number_terms(float(sigma), truncate, dtype)
    if visibility is not None:
        visibility = visibility.to(device=p.device, dtype=dtype)
        valid = visibility >= 0.5 if valid is None else valid & (visibility >= 0.5)
    if not (traced or subpixel or isinstance(sigma, Tensor)) and radius <= 2 * (height + width):  # table stays small
        heatmaps, meets = _integer_centre_maps(p, valid, radius, scale, window, height, width, maps)
        rendered = meets if valid is None else valid & meets  # (meets is False for non-finite keypoints)
    else:
        finite = torch.isfinite(p).all(-1)
        valid = finite if valid is None else finite & valid
        heatmaps, meets = _general_maps(p, valid, radius, scale, subpixel, window, height, width, maps)
        rendered = valid & meets
    if visibility_weights and visibility is not None:  # mmpose: the visibility, unless >= 0.5 and not rendered
        weights = torch.where((rendered | (visibility < 0.5)) & (visibility > 0), visibility, 0.0)
    else:
        weights = rendered.to(dtype)
    return _merge_instances(heatmaps, weights, instances, keypoints.dtype, keypoint_weights)


def _merge_instances(
    heatmaps: Tensor, weights: Tensor, instances: bool, dtype: torch.dtype, keypoint_weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Element-wise max over the instance axis (zero instances: nothing rendered), the per-keypoint weights, then
    the output dtype."""
    if instances and not tracing() and heatmaps.shape[1] == 0:
        heatmaps = heatmaps.new_zeros(heatmaps.shape[:1] + heatmaps.shape[2:])
        weights = weights.new_zeros(weights.shape[:1] + weights.shape[2:])
    elif instances:
        heatmaps, weights = heatmaps.amax(1), weights.amax(1)
    if keypoint_weights is not None:
        weights = weights * keypoint_weights.to(device=weights.device, dtype=weights.dtype)
    return heatmaps.to(dtype), weights.to(dtype)


def _fake(keypoints: Tensor, sigma: Tensor, visibility: Tensor, size: list[int], *_) -> tuple[Tensor, Tensor]:
    batch, keys = keypoints.shape[0], keypoints.shape[-2]
    return keypoints.new_empty(batch, keys, size[0], size[1]), keypoints.new_empty(batch, keys)


def _check_inputs(
    keypoints: Tensor, sigma: Tensor | float, visibility: Tensor | None, keypoint_weights: Tensor | None
) -> Tensor | float:
    validate_tensor(keypoints, "keypoints", "(B, K, 2) or (B, I, K, 2)")
    if keypoints.dim() not in (3, 4) or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (B, K, 2) or (B, I, K, 2); got shape {tuple(keypoints.shape)}")
    keys = keypoints.shape[-2]
    if isinstance(sigma, Tensor) and sigma.dim() == 1:
        if sigma.shape[0] != keys:
            raise ValueError(f"sigma must be a number, a 0-d tensor or (K,) = ({keys},); got {tuple(sigma.shape)}")
        validate_tensor(sigma, "sigma", "(K,)")
    else:
        sigma = positive_scalar(sigma, "sigma")
    if visibility is not None:  # any numeric or bool dtype (COCO's 0/1/2 flags work as they are)
        if not isinstance(visibility, Tensor):
            raise ValueError(f"visibility must be a tensor of shape {tuple(keypoints.shape[:-1])}; got {visibility!r}")
        if visibility.shape != keypoints.shape[:-1]:
            raise ValueError(
                f"visibility must have the keypoints' shape without the last axis, "
                f"{tuple(keypoints.shape[:-1])}; got {tuple(visibility.shape)}"
            )
    if keypoint_weights is not None:
        validate_tensor(keypoint_weights, "keypoint_weights", f"(K,) = ({keys},)")
        if keypoint_weights.shape != (keys,):
            raise ValueError(
                f"keypoint_weights must have shape (K,) = ({keys},), one weight per keypoint (mmpose's "
                f"dataset_keypoint_weights); got shape {tuple(keypoint_weights.shape)}"
            )
    return sigma


def gaussian_heatmaps(
    keypoints: Tensor,
    size: tuple[int, int],
    sigma: Tensor | float,
    *,
    visibility: Tensor | None = None,
    keypoint_weights: Tensor | None = None,
    truncate: float = 3.0,
    subpixel: bool = False,
    window: str = "symmetric",
    visibility_weights: bool = False,
    normalized_coordinates: bool = False,
    align_corners: bool = True,
) -> tuple[Tensor, Tensor]:
    """Renders Gaussian target heatmaps for keypoints, all at once.

    Args:
        keypoints: ``(B, K, 2)`` or ``(B, I, K, 2)`` as ``(x, y)``; pixels by default.
        size: ``(H, W)`` of the heatmaps.
        sigma: Python number > 0, 0-d tensor, or per-keypoint ``(K,)`` tensor, in pixels.
        visibility: ``(B, K)`` or ``(B, I, K)``; keypoints with visibility < 0.5 are not rendered.
        keypoint_weights: ``(K,)`` float tensor multiplied into the weights (mmpose's dataset keypoint weights).
        truncate: window half-width ``r = truncate * sigma`` in sigmas (3 is the classic 3-sigma window).
        subpixel: centre the Gaussian at ``p`` (UDP, DARK) instead of ``floor(p + 0.5)``.
        window: ``"symmetric"`` (``|u - c| <= r``), ``"mmpose"`` (``u - c`` in ``[-ceil(r), floor(r)]``, mmpose's
            MSRA/UDP window) or ``"full"`` (no truncation; kept iff ``-(r + 1) <= g < n + r``, mmpose's DARK).
        visibility_weights: weight = visibility (mmpose) instead of 1 for a kept keypoint; see the module doc.
        normalized_coordinates: keypoints in ``[-1, 1]`` (mapped to pixels by ``align_corners``).
        align_corners: normalized convention; ``True`` kornia, ``False`` pixel-centre (dsntnn).

    Returns:
        ``heatmaps (B, K, H, W)`` with peak 1 (max over instances) and ``weights (B, K)`` (1 rendered, 0 not;
        or the visibility; times ``keypoint_weights``), both in ``keypoints``' dtype.
    """
    sigma = _check_inputs(keypoints, sigma, visibility, keypoint_weights)
    size = list(as_sequence(size, "size", 2, " (H, W)"))
    truncate = float(positive_scalar(truncate, "truncate"))
    flags = (
        bool(subpixel),
        mode_code(window, "window", WINDOW_CHOICES),
        bool(visibility_weights),
        bool(normalized_coordinates),
        bool(align_corners),
        keypoints.dim() == 4,
    )
    if is_exporting():
        s = torch.as_tensor(sigma, device=keypoints.device).to(torch.float32)
        if visibility is None:
            visibility = torch.ones(keypoints.shape[:-1], device=keypoints.device)
        heatmaps, weights = torch.ops.kpx.gaussian_heatmaps(
            keypoints, s, visibility.to(torch.float32), size, truncate, *flags
        )
        if keypoint_weights is not None:  # one Mul after the node, in float32 (fp16 models: no Mul on half)
            compute = compute_dtype(weights.dtype)
            weights = (weights.to(compute) * keypoint_weights.to(compute)).to(weights.dtype)
        return heatmaps, weights
    return reference(keypoints, sigma, visibility, size, truncate, *flags, keypoint_weights=keypoint_weights)


class GaussianHeatmaps(nn.Module):
    """Module form of :func:`gaussian_heatmaps`; ``(keypoints, [visibility])`` -> ``(heatmaps, weights)``.

    ``keypoint_weights (K,)``, a dataset constant, is a non-persistent buffer (it follows ``.to(device)``).
    """

    def __init__(
        self,
        size: tuple[int, int],
        sigma: Tensor | float,
        *,
        keypoint_weights: Tensor | None = None,
        truncate: float = 3.0,
        subpixel: bool = False,
        window: str = "symmetric",
        visibility_weights: bool = False,
        normalized_coordinates: bool = False,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.size = as_sequence(size, "size", 2, " (H, W)")
        self.sigma = sigma
        self.register_buffer("keypoint_weights", keypoint_weights, persistent=False)
        mode_code(window, "window", WINDOW_CHOICES)  # fail at construction, not at the first call
        self.options = {
            "truncate": truncate,
            "subpixel": subpixel,
            "window": window,
            "visibility_weights": visibility_weights,
            "normalized_coordinates": normalized_coordinates,
            "align_corners": align_corners,
        }

    def forward(self, keypoints: Tensor, visibility: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return gaussian_heatmaps(
            keypoints,
            self.size,
            self.sigma,
            visibility=visibility,
            keypoint_weights=self.keypoint_weights,
            **self.options,
        )


def build_function(kpx, op):
    """The ONNX function body (onnxscript script mode) at the default opset ``op``."""
    import onnxscript

    @onnxscript.script(kpx, default_opset=op)
    def GaussianHeatmaps(
        keypoints,
        sigma,
        visibility,
        size: list[int],
        truncate: float = 3.0,
        subpixel: int = 0,
        window: int = 0,
        visibility_weights: int = 0,
        normalized_coordinates: int = 0,
        align_corners: int = 1,
        instances: int = 0,
    ):
        # one rank for both layouts, so that shape inference (and the graph tools built on it) sees the
        # output rank: keypoints (B, I', K, 2) and visibility (B, I', K), I' = 1 without instances
        inst = op.Cast(instances, to=BOOL)
        one = op.Constant(value_ints=[1])
        i_dim = op.Where(inst, op.Shape(keypoints, start=1, end=2), one)
        p_shape = op.Concat(op.Shape(keypoints, start=0, end=1), i_dim, op.Shape(keypoints, start=-2), axis=0)
        v_shape = op.Concat(op.Shape(visibility, start=0, end=1), i_dim, op.Shape(visibility, start=-1), axis=0)
        p = op.Reshape(op.Cast(keypoints, to=FLOAT), p_shape, allowzero=1)  # B or K may be 0
        vis = op.Reshape(op.Cast(visibility, to=FLOAT), v_shape, allowzero=1)
        s = op.Cast(sigma, to=FLOAT)  # () or (K,)
        hw = op.Constant(value_ints=size)
        h = op.Slice(hw, [0], [1])
        w = op.Slice(hw, [1], [2])
        n = op.Cast(op.Concat(w, h, axis=0), to=FLOAT)  # (W, H), per (x, y)
        ac = op.Cast(align_corners, to=FLOAT)
        p = op.Where(op.Cast(normalized_coordinates, to=BOOL), p / (2.0 / op.Max(n - ac, ac)) + (n - 1.0) * 0.5, p)
        centre = op.Floor(p + 0.5)
        mu = op.Where(op.Cast(subpixel, to=BOOL), p, centre)
        radius = op.Unsqueeze(op.Constant(value_float=truncate) * s, [-1])  # (1,) or (K, 1)
        # exp(-d^2 / (2 sigma^2)) as exp(-z^2) with z = d * scale: no overflow of d^2 for huge sigma
        big = op.Constant(value_float=3.4028235e38)
        scale = op.Unsqueeze(op.Min(op.Reciprocal(s * 1.4142135), big), [-1])
        # the window as |d + shift| <= half around the centre: symmetric shift 0, half r; mmpose (offsets -ceil(r)
        # .. floor(r)) shift 0.5, half floor(r) + 0.5 when r is not whole; full: every pixel (half = float max)
        mode = op.Cast(window, to=FLOAT)
        is_mmpose = op.Equal(mode, 1.0)
        is_full = op.Equal(mode, 2.0)
        r_floor = op.Floor(radius)
        zero = op.Constant(value_float=0.0)
        point_five = op.Constant(value_float=0.5)
        shift = op.Where(op.And(is_mmpose, op.Not(op.Equal(op.Ceil(radius), r_floor))), point_five, zero)
        half = op.Where(is_full, big, op.Where(is_mmpose, r_floor + shift, radius))
        start = centre - shift  # (B, I', K, 2): the window's centre
        # kept: finite (p - p == 0) and the window meets the map; full: DARK's -(r + 1) <= g < n + r instead (a
        # whole-map window meets the map wherever the centre is finite). Choices on attributes are If nodes, which
        # runtimes fold at load time (a Where on a constant condition still computes both sides: +14 nodes measured)
        if is_full:
            meets = op.And(mu + radius + 1.0 >= 0.0, mu - radius < n)
        else:
            meets = op.And(start + half >= 0.0, start - half <= n - 1.0)
        ok = op.And(op.Equal(p - p, 0.0), meets)
        kept = op.Squeeze(op.And(op.Slice(ok, [0], [1], [-1]), op.Slice(ok, [1], [2], [-1])), [-1])  # (B, I', K)
        kept = op.And(kept, s > 0.0)
        rendered = op.And(kept, vis >= 0.5)
        valid = op.Unsqueeze(rendered, [-1])  # (B, I', K, 1)
        u = op.Cast(op.Range(0, op.Squeeze(w), 1), to=FLOAT)
        dx = (u - op.Slice(mu, [0], [1], [-1])) * scale
        inside_x = op.Abs(u - op.Slice(start, [0], [1], [-1])) <= half
        gx = op.Where(op.And(inside_x, valid), op.Exp(-(dx * dx)), zero)  # (B, I', K, W)
        v = op.Cast(op.Range(0, op.Squeeze(h), 1), to=FLOAT)
        dy = (v - op.Slice(mu, [1], [2], [-1])) * scale
        inside_y = op.Abs(v - op.Slice(start, [1], [2], [-1])) <= half
        gy = op.Where(op.And(inside_y, valid), op.Exp(-(dy * dy)), zero)  # (B, I', K, H)
        # weights: 1/0, or (visibility_weights, mmpose) the visibility unless it is >= 0.5 and nothing is drawn
        if op.Cast(visibility_weights, to=BOOL):
            weight = op.Where(op.And(op.Or(rendered, vis < 0.5), vis > 0.0), vis, zero)
        else:
            weight = op.Cast(rendered, to=FLOAT)
        weights = op.CastLike(weight, keypoints)  # (B, I', K)
        # The per-axis vectors are cast to the output dtype before the outer product: a full-size
        # Cast after it is not removed by ORT even for float32 (it measured 2x the MatMul itself).
        col = op.Unsqueeze(op.CastLike(gy, keypoints), [-1])
        row = op.Unsqueeze(op.CastLike(gx, keypoints), [-2])
        maps = op.MatMul(col, row)  # (B, I', K, H, W)
        # instances: element-wise max over axis 1 (a non-negative axis: empty inputs stay safe); without,
        # the axis of size 1 is squeezed away (free). The condition is an attribute, so runtimes fold this
        # If away at load time; both branches have the same rank, so shape inference follows it. Max(., 0)
        # maps the -inf of a max over zero instances to 0 and changes nothing else (every value is >= 0).
        # axes by keyword: onnxscript makes it an input at opset >= 18 and the attribute below 18.
        if inst:
            out_maps = op.Max(op.ReduceMax(maps, axes=[1], keepdims=0), op.CastLike(zero, keypoints))
            out_weights = op.Max(op.ReduceMax(weights, axes=[1], keepdims=0), op.CastLike(zero, weights))
        else:
            out_maps = op.Squeeze(maps, [1])
            out_weights = op.Squeeze(weights, [1])
        return out_maps, out_weights

    return GaussianHeatmaps


def samples() -> list[Sample]:
    """Pixel keypoints on, near and off the map (NaN, inf), instances, normalized, subpixel, per-keypoint sigma;
    then mmpose's targets: its MSRA/UDP window at sigma 1.5/2.5, visibility as weight, dataset keypoint weights,
    DARK's full-map Gaussian with instances."""
    g = torch.Generator().manual_seed(4)
    kp = torch.rand(2, 6, 2, generator=g) * torch.tensor([30.0, 24.0]) - 3.0
    kp[0, 1] = torch.tensor([-7.0, 5.0])  # window partly off the map (sigma 2: radius 6)
    kp[0, 2] = torch.tensor([50.0, 5.0])  # fully off the map
    kp[1, 0] = torch.tensor([float("nan"), 3.0])
    kp[1, 1] = torch.tensor([4.0, float("inf")])
    vis = (torch.rand(2, 6, generator=g) > 0.2).float()
    inst = torch.rand(2, 3, 5, 2, generator=g) * 2.2 - 1.1  # normalized, some just off the map
    inst_vis = torch.ones(2, 3, 5)
    per_kp_sigma = torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0, 0.7])
    dyn = ({0: "B", 1: "K"}, {0: "B", 1: "K"})  # keypoints, visibility
    # mmpose-style: sigma 2.5 (radius 7.5: the mmpose window is one pixel wider on the left/top), near the edges
    face = torch.rand(2, 7, 2, generator=g) * torch.tensor([34.0, 38.0]) - 7.0
    face[0, 0] = torch.tensor([2.0, 3.0])  # within r of the left/top edge (where mmpose itself shifts by 1 px)
    face[0, 1] = torch.tensor([-8.0, 6.0])  # mmpose window: last column -1, dropped; -7.0 would draw column 0
    face[0, 2] = torch.tensor([27.0, 10.0])  # first column 27 - 8 = 19 = W - 1: drawn
    face[1, 3] = torch.tensor([float("nan"), 2.0])
    face_vis = torch.rand(2, 7, generator=g)
    face_vis[:, :3] = torch.tensor([1.0, 0.3, 0.5])  # 0.3: not rendered, weight 0.3 with visibility_weights
    dataset_weights = torch.tensor([1.0, 1.2, 1.5, 1.0, 0.5, 2.0, 1.0])
    # DARK: full-map Gaussians at sub-pixel centres; kept iff -(r + 1) <= p < n + r (r = 6, W = 12, H = 16)
    dark = torch.rand(2, 3, 5, 2, generator=g) * torch.tensor([30.0, 34.0]) - 9.0
    dark[0, 0, :3] = torch.tensor([[-6.5, 4.0], [17.9, 3.0], [-7.2, 8.0]])  # kept, kept, dropped
    dark_vis = torch.rand(2, 3, 5, generator=g)
    return [
        Sample("pixel_sigma2", (kp, (24, 20), 2.0)),
        Sample("pixel_visibility_dynamic", (kp, (24, 20), 2.0), {"visibility": vis}, dynamic=dyn),
        Sample("pixel_dynamic_no_visibility", (kp, (24, 20), 2.5), dynamic=dyn[:1]),
        Sample("subpixel_per_keypoint_sigma", (kp, (24, 20), per_kp_sigma), {"subpixel": True}),
        Sample(
            "instances_normalized_dynamic",
            (inst, (16, 12), 1.5),
            {"visibility": inst_vis, "normalized_coordinates": True, "align_corners": False},
            dynamic=({0: "B", 1: "I", 2: "K"}, {0: "B", 1: "I", 2: "K"}),
        ),
        Sample(
            "mmpose_window_visibility_weights_dynamic",
            (face, (24, 20), 2.5),
            {"visibility": face_vis, "window": "mmpose", "visibility_weights": True},
            dynamic=dyn,
        ),
        Sample(  # static: generic tests grow dim 0 of every dynamic input as a batch, and K is dim 0 here
            "mmpose_window_udp_keypoint_weights",
            (face, (24, 20), torch.tensor([1.5, 2.5, 1.1, 2.0, 3.0, 0.7, 1.5])),
            {
                "visibility": face_vis,
                "keypoint_weights": dataset_weights,
                "subpixel": True,
                "window": "mmpose",
                "visibility_weights": True,
            },
        ),
        Sample("full_window_pixel_sigma1.5", (kp, (24, 20), 1.5), {"window": "full", "visibility": vis}),
        Sample(
            "dark_full_window_instances_dynamic",
            (dark, (16, 12), 2.0),
            {"visibility": dark_vis, "subpixel": True, "window": "full", "visibility_weights": True},
            dynamic=({0: "B", 1: "I", 2: "K"}, {0: "B", 1: "I", 2: "K"}),
        ),
    ]


def adversarial() -> dict[str, tuple]:
    """docs/spec.md's bad inputs for ``keypoints (B, K, 2)`` and ``visibility (B, K)`` (B, K dynamic in the export)."""
    kp = torch.tensor([[[3.0, 4.0], [-100.0, 5.0], [5.0, 1e30], [float("nan"), 2.0], [float("inf"), 2.0], [8.0, 8.0]]])
    vis = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    return {
        "off_map_nan_inf_invisible": (kp, vis),
        "window_edges": (torch.tensor([[[-6.0, 0.0], [-7.0, 0.0], [25.0, 23.0], [26.0, 30.0]]]), torch.ones(1, 4)),
        "empty_batch": (torch.zeros(0, 6, 2), torch.ones(0, 6)),
        "no_keypoints": (torch.zeros(2, 0, 2), torch.ones(2, 0)),
    }


SPEC = register(
    OpSpec(
        name="gaussian_heatmaps",
        onnx_op_type="GaussianHeatmaps",
        description="keypoints to MSRA/HRNet training-target heatmaps (truncated Gaussians, peak 1) and weights",
        functional=gaussian_heatmaps,
        module=GaussianHeatmaps,
        reference=reference,
        fake=_fake,
        inputs=(
            OnnxInput("keypoints", "(B, K, 2) or (B, I, K, 2) as (x, y)"),
            OnnxInput("sigma", "0-d or (K,) float32 sigma in pixels", "tensor(float)"),
            OnnxInput("visibility", "(B, K) or (B, I, K) float32; < 0.5 is not rendered", "tensor(float)"),
        ),
        outputs=(
            OnnxInput("heatmaps", "(B, K, H, W), peak 1, keypoints' dtype"),
            OnnxInput("weights", "(B, K): 1 rendered, 0 not (or the visibility), keypoints' dtype"),
        ),
        attributes=(
            OnnxAttribute("size", "ints", None, "(H, W)"),
            OnnxAttribute("truncate", "float", 3.0, "window half-width in sigmas"),
            OnnxAttribute("subpixel", "bool", 0, "1: centre at p (UDP); 0: at floor(p + 0.5)"),
            OnnxAttribute(
                "window", "int", 0, "0: |u - c| <= r; 1: mmpose, u - c in [-ceil(r), floor(r)]; 2: full map (DARK)"
            ),
            OnnxAttribute("visibility_weights", "bool", 0, "1: weight = visibility (mmpose); 0: 1 rendered, 0 not"),
            OnnxAttribute("normalized_coordinates", "bool", 0, "1: keypoints in [-1, 1]; 0: pixels"),
            COORDINATE_ATTRIBUTES[1],
            OnnxAttribute("instances", "bool", 0, "1: keypoints are (B, I, K, 2), merged by max; 0: (B, K, 2)"),
        ),
        build_function=build_function,
        samples=samples,
        adversarial=adversarial,
        # fp32: float32 exp of the same arguments (no sums). fp16: the ONNX body rounds the two float32
        # per-axis factors to half and multiplies them in half (no full-size Cast, see build_function):
        # three roundings, <= 3 * 2^-11 = 1.5e-3 relative from exact, <= 2e-3 from the once-rounded PyTorch
        # result: rtol 2.5e-3; values below 6.1e-5 are subnormal halves, 6e-8 apart: atol 1e-6. The weights
        # times keypoint_weights (a Mul after the node) round twice: <= 2 * 2^-11 = 1e-3 relative.
        tolerances={torch.float32: (1e-6, 1e-6), torch.float16: (2.5e-3, 1e-6), torch.float64: (1e-6, 1e-6)},
        conventions="keypoints in pixels by default; normalized input mapped by align_corners; centre floor(p + 0.5)",
    )
)
