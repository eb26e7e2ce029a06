"""decode_heatmaps against docs/spec.md: numpy MSRA/HRNet, DARK and mmpose DARK-UDP references, sub-pixel accuracy
(in the interior and swept to every edge), low-score marking, bad input, ONNX.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank, non-float input, one kpx node per call) is tests/test_op_contract.py, for every op from its registry record.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from custom_ops import DecodeHeatmaps, decode_heatmaps, gaussian_heatmaps, get_op

from ._ort import OrtModel

SIZE = (40, 32)  # (H, W): non-square on purpose
SIGMA, KERNEL = 2.0, 11  # the classic pair (mmpose: k = 11 for sigma 2)
MARGIN = 7  # centres >= 7 px from the edges: the argmax is >= 6 px in, so no stencil pixel's blur meets the border
DYNAMIC = ({0: "B", 1: "K", 2: "H", 3: "W"},)
REFINES = ("none", "quarter", "dark", "dark_udp")
SWEEP = ((1.0, 5), (2.0, 11), (3.0, 17))  # (sigma, blur_kernel): k = 6 sigma - 1 (mmpose: 11 and 17)
F32_EPS = float(np.finfo(np.float32).eps)  # mmpose's eps * I on the DARK-UDP Hessian


# --- oracles: numpy float64, one map at a time ------------------------------------------------------------------


def np_max_preds(m):
    """MSRA/HRNet ``get_max_preds`` for one map ``(H, W)``: argmax of the flattened map, ``(x, y)`` and the max.

    (HRNet then zeroes predictions whose max is <= 0, mmpose marks them -1: kpx does that only when asked.)
    """
    w = m.shape[1]
    i = int(np.argmax(m.reshape(-1)))
    return np.array([i % w, i // w], dtype=np.float64), float(m.reshape(-1)[i])


def msra_quarter(m, xy):
    """HRNet ``get_final_preds`` (no DARK): +-0.25 px towards the larger neighbour on both axes, only when
    ``1 < px < W - 1 and 1 < py < H - 1``."""
    h, w = m.shape
    px, py = math.floor(xy[0] + 0.5), math.floor(xy[1] + 0.5)
    if 1 < px < w - 1 and 1 < py < h - 1:
        diff = np.array([m[py, px + 1] - m[py, px - 1], m[py + 1, px] - m[py - 1, px]])
        return xy + np.sign(diff) * 0.25
    return xy


def per_axis_quarter(m, xy):
    """The rule of docs/spec.md written independently: each axis with both neighbours on the map moves on its own."""
    h, w = m.shape
    x, y = int(xy[0]), int(xy[1])
    out = xy.copy()
    if 0 < x < w - 1:
        out[0] += 0.25 * towards(m[y, x - 1], m[y, x + 1])
    if 0 < y < h - 1:
        out[1] += 0.25 * towards(m[y - 1, x], m[y + 1, x])
    return out


def towards(before, after):
    """+1 if the next neighbour is larger, -1 if the previous one is, 0 if equal (two -inf are equal)."""
    return float(after > before) - float(before > after)


def blur_kernel_1d(k):
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a kernel size
    d = np.arange(k) - (k - 1) // 2
    g = np.exp(-(d**2) / (2 * sigma**2))
    return g / g.sum()


def np_blur(m, k, padding):
    """Separable Gaussian blur of one map. ``padding="zero"``: mmpose/DARK's ``gaussian_blur`` (the map is
    copied into a zero border before ``cv2.GaussianBlur``); ``"reflect"``: numpy's reflect = reflect-101."""
    r = (k - 1) // 2
    g = blur_kernel_1d(k)
    p = np.pad(m, r) if padding == "zero" else np.pad(m, r, mode="reflect")
    rows = np.stack([np.convolve(row, g, mode="valid") for row in p])
    return np.stack([np.convolve(col, g, mode="valid") for col in rows.T]).T


def newton_3x3(L, x, y, w, h, *, per_axis):  # noqa: N803 (L: the log-map, as in the paper)
    """The 3x3 central-difference Newton step of docs/spec.md on a log-map ``L(dx, dy)`` around ``(x, y)``: both
    axes with neighbours: a step only for a negative definite Hessian; ``per_axis``: one axis with neighbours
    makes the 1-D step ``-d / dd`` (``dd < 0``). Clamped to 1 px per axis."""
    inside_x, inside_y = 0 < x < w - 1, 0 < y < h - 1
    step = np.zeros(2)
    if inside_x and inside_y:
        dx, dy = 0.5 * (L(1, 0) - L(-1, 0)), 0.5 * (L(0, 1) - L(0, -1))
        dxx, dyy = L(1, 0) - 2 * L(0, 0) + L(-1, 0), L(0, 1) - 2 * L(0, 0) + L(0, -1)
        dxy = 0.25 * (L(1, 1) - L(1, -1) - L(-1, 1) + L(-1, -1))
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if np.isfinite(hessian).all() and np.isfinite([dx, dy]).all() and dxx < 0 and np.linalg.det(hessian) > 0:
            step = -np.linalg.solve(hessian, [dx, dy])
    elif per_axis and (inside_x or inside_y):
        axis = (1, 0) if inside_x else (0, 1)
        d = 0.5 * (L(*axis) - L(-axis[0], -axis[1]))
        dd = L(*axis) - 2 * L(0, 0) + L(-axis[0], -axis[1])
        if np.isfinite([d, dd]).all() and dd < 0:
            step[0 if inside_x else 1] = -d / dd
    return np.clip(step, -1.0, 1.0)


def dark(m, xy, score, k):
    """kpx's DARK (docs/spec.md): each axis blurred by the widest kernel (<= k) whose window stays on the map for
    all three stencil pixels (radius ``min(k // 2, x - 1, W - 2 - x)``, its own OpenCV sigma), the stencil rescaled
    so that its centre is ``score``, ``log(max(v, 1e-10))``, :func:`newton_3x3` per axis."""
    h, w = m.shape
    x, y = int(xy[0]), int(xy[1])
    src = np.where(np.isfinite(m), m, 0.0)
    r = k // 2
    rx, ry = max(0, min(r, x - 1, w - 2 - x)), max(0, min(r, y - 1, h - 2 - y))
    gx, gy = blur_kernel_1d(2 * rx + 1), blur_kernel_1d(2 * ry + 1)

    def blurred(dx, dy):  # only called for pixels on the map, whose window is then on the map too
        px, py = x + dx, y + dy
        return gy @ src[py - ry : py + ry + 1, px - rx : px + rx + 1] @ gx

    with np.errstate(all="ignore"):  # degenerate maps (all zero, +inf peaks) give NaN: no step below
        scale = score / blurred(0, 0)
        centre = max(blurred(0, 0) * scale, 1e-10) if not np.isnan(blurred(0, 0) * scale) else 1e-10

        def log_ratio(dx, dy):
            v = blurred(dx, dy) * scale
            return np.log((v if v > 1e-10 else 1e-10) / centre)

        return xy + newton_3x3(log_ratio, x, y, w, h, per_axis=True)


def classic_dark(m, xy, score, k, *, padding, stencil="3x3"):
    """DARK on the fully blurred map (``padding`` "zero" as mmpose, or "reflect"), rescaled to ``score``.
    ``stencil="taylor"``: DARK's ``taylor`` / mmpose's ``refine_keypoints_dark``: second derivatives over two pixels,
    needs ``1 < x < W - 2``, steps whenever ``det != 0``. ``"3x3"``: :func:`newton_3x3`, both axes only.
    Away from the edges kpx's DARK equals the 3x3 one with either padding."""
    h, w = m.shape
    x, y = int(xy[0]), int(xy[1])
    b = np_blur(np.where(np.isfinite(m), m, 0.0), k, padding)
    with np.errstate(all="ignore"):
        L = np.log(np.maximum(b * (score / np.max(b)), 1e-10))
    if not np.isfinite(L).all():
        return xy
    if stencil == "3x3":
        return xy + newton_3x3(lambda dx, dy: L[y + dy, x + dx], x, y, w, h, per_axis=False)
    if not (1 < x < w - 2 and 1 < y < h - 2):
        return xy
    dx, dy = 0.5 * (L[y, x + 1] - L[y, x - 1]), 0.5 * (L[y + 1, x] - L[y - 1, x])
    dxx = 0.25 * (L[y, x + 2] - 2 * L[y, x] + L[y, x - 2])
    dyy = 0.25 * (L[y + 2, x] - 2 * L[y, x] + L[y - 2, x])
    dxy = 0.25 * (L[y + 1, x + 1] - L[y - 1, x + 1] - L[y + 1, x - 1] + L[y - 1, x - 1])
    hessian = np.array([[dxx, dxy], [dxy, dyy]])
    return xy - np.linalg.inv(hessian) @ np.array([dx, dy]) if np.linalg.det(hessian) != 0 else xy


def dark_udp(m, xy, score, k):
    """mmpose's ``refine_keypoints_dark_udp`` for one keypoint, from its description: mmpose's ``gaussian_blur``
    (zero border, rescaled to the maximum), clip to ``[1e-3, 50]`` (kpx: NaN to 1e-3), log, the log-map padded by
    one pixel of its edge values, central first and second differences, the cross term
    ``(L[x+1,y+1] - L[x+1,y] - L[x,y+1] + 2 L - L[x-1,y] - L[x,y-1] + L[x-1,y-1]) / 2``, then
    ``xy - inv(H + eps I) g`` with float32's eps, unclamped (kpx: no step where it is not finite)."""
    x, y = int(xy[0]), int(xy[1])
    b = np_blur(np.where(np.isfinite(m), m, 0.0), k, "zero")
    with np.errstate(all="ignore"):
        b = b * (score / np.max(b))
    b = np.minimum(np.where(b > 1e-3, b, 1e-3), 50.0)
    P = np.pad(np.log(b), 1, mode="edge")

    def L(dx, dy):
        return P[y + 1 + dy, x + 1 + dx]

    dx, dy = 0.5 * (L(1, 0) - L(-1, 0)), 0.5 * (L(0, 1) - L(0, -1))
    dxx, dyy = L(1, 0) - 2 * L(0, 0) + L(-1, 0), L(0, 1) - 2 * L(0, 0) + L(0, -1)
    dxy = 0.5 * (L(1, 1) - L(1, 0) - L(0, 1) + 2 * L(0, 0) - L(-1, 0) - L(0, -1) + L(-1, -1))
    try:
        offset = np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]]) + F32_EPS * np.eye(2)) @ np.array([dx, dy])
    except np.linalg.LinAlgError:
        return xy
    return xy - offset if np.isfinite(offset).all() else xy


def oracle(heatmaps, refine="none", k=KERNEL, *, quarter=per_axis_quarter, low=None, marker=-1.0, **dark_options):
    """Loops over channels: argmax (NaN as -inf), then the refinement, then ``low``-score marking; keypoints
    (B, K, 2), scores (B, K). ``dark_options`` (``padding``, ``stencil``) select :func:`classic_dark`."""
    maps = heatmaps.double().numpy()
    batch, keys = maps.shape[:2]
    keypoints, scores = np.zeros((batch, keys, 2)), np.zeros((batch, keys))
    for b in range(batch):
        for j in range(keys):
            m = np.where(np.isnan(maps[b, j]), -np.inf, maps[b, j])
            xy, score = np_max_preds(m)
            if score == -np.inf:
                xy = np.array([np.nan, np.nan])
            elif refine == "quarter":
                xy = quarter(m, xy)
            elif refine == "dark":
                xy = classic_dark(maps[b, j], xy, score, k, **dark_options) if dark_options else dark(m, xy, score, k)
            elif refine == "dark_udp":
                xy = dark_udp(maps[b, j], xy, score, k)
            if low is not None and -np.inf < score <= low:
                xy = np.array([marker, marker])
            keypoints[b, j], scores[b, j] = xy, score
    return torch.from_numpy(keypoints), torch.from_numpy(scores)


# --- inputs ------------------------------------------------------------------------------------------------------


def peaks(batch, keys, *, size=SIZE, sigma=SIGMA, margin=MARGIN, seed=0, noise=0.0, dtype=torch.float32):
    """Heatmaps rendered by kpx's gaussian_heatmaps around uniform sub-pixel centres (subpixel=True, UDP)
    at least ``margin`` px from the edges; returns ``(heatmaps (B, K, H, W), centres (B, K, 2) float64)``."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    span = torch.tensor([w - 1.0 - 2 * margin, h - 1.0 - 2 * margin], dtype=torch.float64)
    centres = torch.rand(batch, keys, 2, generator=g, dtype=torch.float64) * span + margin
    maps, _ = gaussian_heatmaps(centres.to(dtype), size, sigma, subpixel=True)
    if noise:
        maps = maps + noise * torch.rand(maps.shape, generator=g, dtype=maps.dtype)
    return maps, centres


def edge_sweep(sigma, k, *, size=(64, 48), keypoints=8, seed=0):
    """Noise-free targets at ``d = 0, 0.25, ..., 1.5 k`` px from each of the four edges (``x = d``, ``W - 1 - d``,
    ``y = d``, ``H - 1 - d``), the other coordinate uniform and ``k // 2 + 2`` px from the other edges:
    ``(maps (D, 4 keypoints, H, W) float32, centres (D, 4 keypoints, 2) float64, distances (D,))``."""
    h, w = size
    g = torch.Generator().manual_seed(seed)
    distances = torch.arange(0, 1.5 * k + 1e-9, 0.25, dtype=torch.float64)
    margin = k // 2 + 2
    groups = []
    for fixed, extent, x_fixed in ((distances, h, True), (w - 1 - distances, h, True),
                                   (distances, w, False), (h - 1 - distances, w, False)):  # fmt: skip
        along = torch.rand(len(distances), keypoints, generator=g, dtype=torch.float64) * (extent - 1 - 2 * margin)
        fixed = fixed[:, None].expand(-1, keypoints)
        xy = (fixed, along + margin) if x_fixed else (along + margin, fixed)
        groups.append(torch.stack(xy, -1))
    centres = torch.cat(groups, 1).float()
    maps, _ = gaussian_heatmaps(centres, size, sigma, subpixel=True)
    return maps, centres.double(), distances


def mean_error(keypoints, centres) -> float:
    return float((keypoints.double() - centres).norm(dim=-1).mean())


def assert_decoded(out, expected, *, atol=1e-4, rtol=0.0):
    """Keypoints within ``atol`` px of the oracle (NaN at the same places), scores exactly."""
    keypoints, scores = out
    torch.testing.assert_close(keypoints.double(), expected[0], rtol=rtol, atol=atol, equal_nan=True)
    torch.testing.assert_close(scores.double(), expected[1], rtol=0, atol=0)


# --- backends: eager torch and one dynamic ORT export per (options, emit) --------------------------------------


@functools.cache
def ort_decoder(refine: str, emit: str, blur_kernel: int = KERNEL, dtype=None, low=None, marker=-1.0) -> OrtModel:
    example = peaks(2, 3, size=(16, 12), margin=0)[0]
    module = DecodeHeatmaps(refine=refine, blur_kernel=blur_kernel, low_score_threshold=low, low_score_marker=marker)
    return OrtModel(module, (example,), dynamic_shapes=DYNAMIC, emit=emit, dtype=dtype)


@pytest.fixture(scope="module", params=["torch", "ort-function", "ort-inline"])
def run(request):
    """``run(heatmaps, refine, blur_kernel=11, low=None, marker=-1.0)`` -> (keypoints, scores): eagerly or from a
    dynamic ORT export."""
    if request.param == "torch":
        return lambda x, refine, blur_kernel=KERNEL, low=None, marker=-1.0: decode_heatmaps(
            x, refine=refine, blur_kernel=blur_kernel, low_score_threshold=low, low_score_marker=marker
        )
    emit = request.param.removeprefix("ort-")
    return lambda x, refine, blur_kernel=KERNEL, low=None, marker=-1.0: tuple(
        ort_decoder(refine, emit, blur_kernel, None, low, marker)(x)
    )


# --- agreement with the numpy references -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_none_is_msra_get_max_preds(run, seed):
    x, _ = peaks(3, 17, seed=seed, margin=0)
    assert_decoded(run(x, "none"), oracle(x, "none"), atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_quarter_matches_msra_get_final_preds_inside(run, seed):
    """Away from the first two and last rows/columns MSRA's rule and kpx's per-axis rule coincide."""
    x, _ = peaks(3, 17, seed=seed, margin=2)
    expected = oracle(x, "quarter", quarter=msra_quarter)
    assert_decoded(run(x, "quarter"), expected, atol=0)
    assert ((expected[0] - expected[0].round()).abs() == 0.25).all()  # every keypoint moved on both axes


@pytest.mark.parametrize(("sigma", "k"), [(2.0, 11), (1.0, 5), (3.0, 17), (1.5, 7)])
def test_dark_matches_numpy_reference(run, sigma, k):
    """DARK as docs/spec.md defines it (3x3 central differences), written independently in numpy: kpx's rule
    everywhere, and away from the edges (where the blur of the stencil stays inside) the classic full-map blur with
    mmpose's zero border or with reflect-101, which the rule equals there. Within 1e-4 px (measured ~2e-6 px in
    float32: the Conv/MatMul summation order)."""
    x, _ = peaks(2, 17, sigma=sigma, seed=int(sigma * 10), margin=k // 2 + 2)  # the blur of the stencil stays inside
    out = run(x, "dark", k)
    assert_decoded(out, oracle(x, "dark", k))
    assert_decoded(out, oracle(x, "dark", k, stencil="3x3", padding="zero"))
    assert_decoded(out, oracle(x, "dark", k, stencil="3x3", padding="reflect"))
    anywhere, _ = peaks(2, 17, sigma=sigma, seed=int(sigma * 10) + 1, margin=0)
    assert_decoded(run(anywhere, "dark", k), oracle(anywhere, "dark", k))


def test_dark_is_close_to_the_taylor_stencil_and_at_least_as_accurate():
    """DARK's ``taylor`` (and mmpose's ``refine_keypoints_dark``) takes second derivatives over two pixels. On
    rendered Gaussians both stencils land within 1e-3 px of each other (measured max 4.3e-4 px at sigma 2,
    k 11); the 3x3 stencil of docs/spec.md is the more accurate of the two."""
    x, centres = peaks(4, 17, seed=3, dtype=torch.float64)
    keypoints, _ = decode_heatmaps(x, refine="dark", blur_kernel=KERNEL)
    taylor, _ = oracle(x, "dark", stencil="taylor", padding="zero")
    assert (keypoints - taylor).abs().max() < 1e-3
    assert mean_error(keypoints, centres) <= mean_error(taylor, centres)


@pytest.mark.parametrize("size", [(9, 7), (3, 4), (1, 6), (6, 1), (2, 2), (5, 40)])
def test_dark_narrows_the_blur_near_the_edges(run, size):
    """Near the edges, and on maps smaller than the kernel, each axis is blurred by the widest kernel whose window
    stays on the map around the three stencil pixels; an axis without both neighbours does not move, the other
    makes its 1-D step."""
    x, _ = peaks(2, 6, size=size, sigma=1.0, margin=0, seed=4, noise=0.05)
    assert_decoded(run(x, "dark"), oracle(x, "dark"))


def test_dark_recovers_subpixel_centres_best(capsys):
    """Mean distance to the true sub-pixel centre: DARK << quarter << none (sigma 2, k 11, 40x32 maps). The border
    rule does not touch the interior: the accuracy of the full-map blur is kept (measured before the rule:
    3.54e-5 px clean, 0.005526 px with 2% noise)."""
    x, centres = peaks(8, 17, seed=5)
    errors = {r: mean_error(decode_heatmaps(x, refine=r)[0], centres) for r in REFINES}
    noisy, _ = peaks(8, 17, seed=5, noise=0.02)  # + uniform noise up to 2% of the peak
    noisy_errors = {r: mean_error(decode_heatmaps(noisy, refine=r)[0], centres) for r in REFINES}
    with capsys.disabled():
        print(f"\nmean error (px), clean: {errors}\nmean error (px), 2% noise: {noisy_errors}")
    assert errors["dark"] < 0.01 < errors["quarter"] < errors["none"]
    assert noisy_errors["dark"] < noisy_errors["quarter"] < noisy_errors["none"]
    assert 0.3 < errors["none"] < 0.45 and 0.15 < errors["quarter"] < 0.25  # ~0.38 and ~0.19 for uniform offsets
    # kept to the float32 rounding of the blur (MatMul instead of Conv: ~1e-7 px per keypoint)
    assert errors["dark"] < 3.6e-5 and noisy_errors["dark"] < 0.00553
    assert errors["dark_udp"] < 0.01 and noisy_errors["dark_udp"] < noisy_errors["quarter"]


@pytest.mark.parametrize(("sigma", "k"), SWEEP)
def test_dark_is_never_worse_than_quarter_at_any_distance_from_an_edge(sigma, k):
    """docs/spec.md's border target (issue 13): noise-free targets swept from 0 to 1.5 k px from each of the four
    edges in steps of 0.25 px (64x48 maps, 32 keypoints per distance): DARK's mean and max error are no worse
    than quarter's at every distance. Reflect-101 borders failed this up to 3 px in (sigma 2; 1.44 px error).
    (The full table, with dark_udp and mmpose's zero-padded DARK: benchmarks/sweep_dark_border.py.)"""
    maps, centres, distances = edge_sweep(sigma, k)
    err = {r: (decode_heatmaps(maps, refine=r, blur_kernel=k)[0].double() - centres).norm(dim=-1)
           for r in ("quarter", "dark")}  # fmt: skip
    worse = (err["dark"].mean(1) > err["quarter"].mean(1)) | (err["dark"].amax(1) > err["quarter"].amax(1))
    assert not worse.any(), f"dark worse than quarter at d = {distances[worse].tolist()}"
    # where the argmax has both neighbours on both axes DARK is exact to ~1e-3 px (measured <= 1.1e-3 px at sigma 1)
    far = distances >= 0.75
    assert float(err["dark"][far].mean(1).max()) < 2e-3
    assert float(err["dark"][-1].mean()) < 5e-4  # the interior (sigma 1: 3.8e-4 px, 2: 2.3e-5, 3: 5.8e-6)


@pytest.mark.parametrize(("sigma", "k"), [(2.0, 11), (3.0, 17), (1.5, 7), (1.0, 5)])
def test_dark_udp_matches_numpy_mmpose_reimplementation(run, sigma, k, capsys):
    """refine="dark_udp" is mmpose's ``refine_keypoints_dark_udp`` (UDPHeatmap, rtmlib's ViTPose): within 1e-4 px
    of the numpy reimplementation in the interior; with the edges in the sweep too (edge padding, zero border)."""
    x, _ = peaks(2, 17, sigma=sigma, seed=int(sigma * 10) + 2, margin=k // 2 + 2)
    out = run(x, "dark_udp", k)
    expected = oracle(x, "dark_udp", k)
    assert_decoded(out, expected)
    anywhere, _ = peaks(2, 17, sigma=sigma, seed=int(sigma * 10) + 3, margin=0)
    everywhere = oracle(anywhere, "dark_udp", k)
    assert_decoded(run(anywhere, "dark_udp", k), everywhere)
    with capsys.disabled():
        diff = max(float((out[0].double() - expected[0]).abs().max()),
                   float((run(anywhere, "dark_udp", k)[0].double() - everywhere[0]).abs().max()))  # fmt: skip
        print(f"\ndark_udp sigma {sigma} k {k}: max |kpx - numpy| {diff:.2e} px")


def test_dark_udp_steps_at_the_edges_as_mmpose():
    """mmpose pads the log-map with its edge values: on column 0 the left neighbour is the pixel itself, so
    ``dxx = L[1] - L[0] = 2 dx`` and DARK-UDP always steps -0.5 px, out of the map, wherever the right neighbour is
    lower (DARK instead makes no x step there, as quarter). The border sweep measures it (0.5 px at d = 0, 0.75 px
    at d = 0.25; benchmarks/sweep_dark_border.py)."""
    centres = torch.tensor([[[0.25, 20.3], [0.0, 20.0], [31.0, 9.6]]])
    x, _ = gaussian_heatmaps(centres, (40, 32), 1.0, subpixel=True)
    keypoints, scores = decode_heatmaps(x, refine="dark_udp", blur_kernel=5)
    assert_decoded((keypoints, scores), oracle(x, "dark_udp", 5))
    torch.testing.assert_close(keypoints[0, :, 0], torch.tensor([-0.5, -0.5, 31.5]), rtol=0, atol=1e-5)
    torch.testing.assert_close(keypoints[0, :, 1], centres[0, :, 1], rtol=0, atol=1e-3)  # y: inside, accurate


# --- low scores: mmpose's get_heatmap_maximum marking ------------------------------------------------------------


@pytest.mark.parametrize("refine", REFINES)
def test_low_scores_are_marked_like_mmpose(run, refine):
    """mmpose's ``get_heatmap_maximum`` sets ``locs[vals <= 0] = -1``: both coordinates of a keypoint whose score is
    <= 0 become -1; the scores are not touched. kpx marks after the refinement, so the marker is exact (mmpose's
    UDP decoder refines the -1 keypoints afterwards). A channel with no value keeps NaN and -inf."""
    x, _ = peaks(2, 5, size=(12, 10), sigma=1.5, margin=2, seed=20)
    x[0, 1] -= 2.0  # negative maximum
    x[1, 2] -= x[1, 2].amax()  # maximum exactly 0 (<= 0: marked)
    x[1, 3] = -math.inf  # no value: NaN, score -inf
    keypoints, scores = run(x, refine, low=0.0)
    plain = run(x, refine)
    marked = torch.zeros(2, 5, dtype=torch.bool)
    marked[0, 1] = marked[1, 2] = True
    assert (keypoints[marked] == -1).all()
    assert keypoints[1, 3].isnan().all() and scores[1, 3] == -math.inf
    keep = ~marked
    torch.testing.assert_close(keypoints[keep], plain[0][keep], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(scores, plain[1], rtol=0, atol=0)
    assert_decoded((keypoints, scores), oracle(x, refine, low=0.0))


def test_low_score_threshold_and_marker_are_options(run):
    """Any threshold (score <= it) and any marker; the default (None) marks nothing, -inf neither."""
    x, _ = peaks(1, 6, size=(12, 10), sigma=1.5, margin=2, seed=21)
    x = x * torch.linspace(0.1, 1.0, 6)[:, None, None]  # maxima 0.1 .. 1.0
    keypoints, scores = run(x, "quarter", low=0.5, marker=-7.5)
    assert ((keypoints == -7.5).all(-1) == (scores <= 0.5)).all() and (scores <= 0.5).sum() == 3
    assert_decoded((keypoints, scores), oracle(x, "quarter", low=0.5, marker=-7.5), atol=0)
    assert torch.equal(run(x, "quarter", low=-math.inf)[0], run(x, "quarter")[0])
    assert torch.equal(decode_heatmaps(x, low_score_threshold=None)[0], decode_heatmaps(x)[0])


def test_low_score_marker_in_half_precision():
    x, _ = peaks(2, 3, size=(12, 10), sigma=1.5, margin=2, seed=22)
    x[0, 0] -= 2.0
    keypoints, _ = decode_heatmaps(x.half(), refine="dark", low_score_threshold=0.0)
    assert keypoints.dtype == torch.float16 and (keypoints[0, 0] == -1).all()
    model = ort_decoder("dark", "function", KERNEL, torch.float16, 0.0, -1.0)
    torch.testing.assert_close(model(x.half())[0], keypoints, rtol=torch.finfo(torch.float16).eps, atol=0)


# --- docs/spec.md rules: ties, NaN, -inf, edges, tiny maps ----------------------------------------------------------


@pytest.mark.parametrize("refine", REFINES)
def test_ties_go_to_the_first_index_in_row_major_order(run, refine):
    x = torch.zeros(1, 3, 5, 6)
    x[0, 0, 3, 1] = x[0, 0, 1, 4] = x[0, 0, 1, 5] = 1.0  # (4, 1) comes first: row 1 before row 3
    x[0, 1, 2, 2] = x[0, 1, 2, 3] = 1.0  # same row: the smaller column
    x[0, 2] = 0.5  # a flat map: index 0
    keypoints, scores = run(x, refine)
    assert scores.tolist() == [[1.0, 1.0, 0.5]]
    if refine == "none":
        assert keypoints.tolist() == [[[4.0, 1.0], [2.0, 2.0], [0.0, 0.0]]]
    if refine == "quarter":  # towards the larger neighbour (the other tied peak); vertical neighbours equal
        assert keypoints.tolist() == [[[4.25, 1.0], [2.25, 2.0], [0.0, 0.0]]]
    assert_decoded((keypoints, scores), oracle(x, refine))


@pytest.mark.parametrize("refine", REFINES)
def test_nan_is_ignored_as_minus_inf(run, refine):
    """torch's argmax would pick a NaN; docs/spec.md ignores it (ORT's ArgMax skips it too). Only that channel
    sees it."""
    x, _ = peaks(2, 4, size=(12, 10), sigma=1.5, margin=3, seed=6)
    dirty = x.clone()
    dirty[0, 1, 0, 0] = dirty[1, 2, 5, 5] = math.nan
    dirty[1, 3, 11, 9] = math.nan
    out = run(dirty, refine)
    expected = oracle(dirty, refine)
    assert not out[0].isnan().any() and not out[1].isnan().any()
    assert_decoded(out, expected, atol=1e-4 if refine.startswith("dark") else 0)
    clean = run(x, refine)
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 2] = keep[1, 3] = False
    for got, want in zip(out, clean, strict=True):
        torch.testing.assert_close(got[keep], want[keep], rtol=0, atol=0)


def test_nan_neighbour_counts_as_minus_inf_for_the_quarter_rule(run):
    x = torch.zeros(1, 2, 5, 5)
    x[0, :, 2, 2] = 1.0
    x[0, 0, 2, 1] = math.nan  # left is NaN (-inf), right is 0: move right
    x[0, 1, 1, 2] = x[0, 1, 3, 2] = math.nan  # both vertical neighbours NaN: equal, no move
    keypoints, _ = run(x, "quarter")
    assert keypoints.tolist() == [[[2.25, 2.0], [2.0, 2.0]]]


@pytest.mark.parametrize("refine", REFINES)
@pytest.mark.parametrize("fill", [-math.inf, math.nan, "mixed"])
def test_channel_without_a_value_decodes_to_nan_with_score_minus_inf(run, refine, fill):
    x, _ = peaks(2, 3, size=(9, 8), sigma=1.0, margin=2, seed=7)
    bad = x.clone()
    if fill == "mixed":
        bad[1, 1] = -math.inf
        bad[1, 1, ::2] = math.nan
    else:
        bad[1, 1] = fill
    keypoints, scores = run(bad, refine)
    assert keypoints[1, 1].isnan().all() and scores[1, 1] == -math.inf
    ref = run(x, refine)
    keep = torch.ones(2, 3, dtype=torch.bool)
    keep[1, 1] = False
    torch.testing.assert_close(keypoints[keep], ref[0][keep], rtol=0, atol=0)
    torch.testing.assert_close(scores[keep], ref[1][keep], rtol=0, atol=0)


@pytest.mark.parametrize("refine", REFINES)
def test_plus_inf_is_a_value_like_any_other(run, refine):
    x = torch.zeros(1, 2, 6, 6)
    x[0, 0, 3, 2] = math.inf
    x[0, 1] = math.inf  # every value +inf: the first one, score +inf
    keypoints, scores = run(x, refine)
    assert scores.tolist() == [[math.inf, math.inf]]
    assert keypoints.tolist() == [[[2.0, 3.0], [0.0, 0.0]]]  # equal neighbours (0 or +inf): no move, no DARK step


def test_quarter_is_per_axis_at_the_edges_where_msra_does_not_move(run):
    """docs/spec.md: each axis with both neighbours moves on its own. MSRA moves only when ``1 < px < W - 1`` and
    ``1 < py < H - 1``: at column/row 0 or 1 and at the last ones it leaves both axes alone."""
    h, w = 7, 8
    cells = [(0, 3), (1, 3), (3, 0), (3, 1), (w - 1, 3), (3, h - 1), (1, 1), (0, 0), (4, 3)]  # (x, y) of the peak
    x = torch.zeros(1, len(cells), h, w)
    for j, (cx, cy) in enumerate(cells):
        x[0, j, cy, cx] = 1.0
        if cx + 1 < w:
            x[0, j, cy, cx + 1] = 0.5  # the right neighbour is larger than the left one (0)
        if cy + 1 < h:
            x[0, j, cy + 1, cx] = 0.5  # the lower neighbour is larger than the upper one (0)
    keypoints, scores = run(x, "quarter")
    assert_decoded((keypoints, scores), oracle(x, "quarter"), atol=0)  # the per-axis oracle
    msra = oracle(x, "quarter", quarter=msra_quarter)
    want = {  # per axis: x moves iff 0 < x < W - 1, y iff 0 < y < H - 1
        (0, 3): (0.0, 3.25), (1, 3): (1.25, 3.25), (3, 0): (3.25, 0.0), (3, 1): (3.25, 1.25),
        (w - 1, 3): (w - 1.0, 3.25), (3, h - 1): (3.25, h - 1.0), (1, 1): (1.25, 1.25), (0, 0): (0.0, 0.0),
        (4, 3): (4.25, 3.25),
    }  # fmt: skip
    assert [tuple(p) for p in keypoints[0].tolist()] == [want[c] for c in cells]
    moved_by_msra = [not torch.equal(m, m.round()) for m in msra[0][0]]
    assert moved_by_msra == [c == (4, 3) for c in cells]  # MSRA: only the interior peak


def test_dark_is_per_axis_at_the_edges():
    """An argmax on the first/last column (row) cannot step along x (y), as with quarter, but steps along the other
    axis (before issue 13 DARK made no step at all there, and lost up to 0.5 px on the other axis to quarter)."""
    centres = torch.tensor([[[0.0, 10.3], [31.0, 20.7], [15.4, 0.0], [12.6, 39.0], [0.0, 0.0]]])
    x, _ = gaussian_heatmaps(centres, SIZE, SIGMA, subpixel=True)
    keypoints, _ = decode_heatmaps(x, refine="dark")
    torch.testing.assert_close(keypoints.double(), centres.double(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("refine", REFINES)
@pytest.mark.parametrize("size", [(1, 9), (9, 1), (1, 1)])
def test_single_row_or_column(run, refine, size):
    """A size-1 axis decodes to 0 on it; the other axis follows the rule: DARK and DARK-UDP make their 1-D step
    along it (DARK: the per-axis rule; DARK-UDP: mmpose's edge padding makes the size-1 axis flat)."""
    x = torch.rand(2, 4, *size, generator=torch.Generator().manual_seed(8))
    keypoints, scores = run(x, refine)
    assert torch.isfinite(keypoints).all()
    axis = 1 if size[0] == 1 else 0  # the coordinate of the size-1 axis
    if size != (1, 1):
        assert (keypoints[..., axis] == 0).all()
    # dark_udp: unclamped Newton steps on noise are ill-conditioned: float32 rounding is relative to the step
    assert_decoded((keypoints, scores), oracle(x, refine), atol=0 if refine in ("none", "quarter") else 1e-4,
                   rtol=1e-4 if refine == "dark_udp" else 0)  # fmt: skip


@pytest.mark.parametrize("refine", REFINES)
def test_dynamic_sizes_through_one_export(run, refine):
    """The export was traced at 2x3x16x12: other B, K, H and W run through the same graph."""
    for shape, seed in (((1, 2, 33, 21), 10), ((3, 5, 8, 9), 11), ((4, 1, 64, 48), 12)):
        x, _ = peaks(*shape[:2], size=shape[2:], sigma=1.5, margin=1, seed=seed, noise=0.01)
        assert_decoded(run(x, refine), oracle(x, refine))


# --- dtypes ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("refine", REFINES)
def test_half_precision_is_float32_rounded_once(dtype, refine):
    x, _ = peaks(3, 6, margin=2, seed=13)
    x = x.to(dtype)
    x[0, 0] = -math.inf
    x[1, 1, 3, 3] = math.nan
    keypoints, scores = decode_heatmaps(x, refine=refine)
    ref_kp, ref_scores = decode_heatmaps(x.float(), refine=refine)
    assert keypoints.dtype == scores.dtype == dtype
    assert scores[0, 0] == -math.inf and keypoints[0, 0].isnan().all()
    torch.testing.assert_close(keypoints, ref_kp.to(dtype), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(scores, ref_scores.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("refine", REFINES)
def test_float16_export_matches_float32_pytorch(refine):
    model = ort_decoder(refine, "function", KERNEL, torch.float16)
    x, _ = peaks(3, 6, size=(20, 18), margin=2, seed=14)
    x = x.half()
    x[2, 1] = -math.inf
    keypoints, scores = model(x)
    ref_kp, ref_scores = decode_heatmaps(x.float(), refine=refine)
    assert keypoints.dtype == scores.dtype == torch.float16
    assert scores[2, 1] == -math.inf and keypoints[2, 1].isnan().all()
    # float32 inside, rounded once: at most one float16 ulp apart (ORT's and torch's float32 DARK steps can differ
    # in the last bits and flip that rounding); argmax, quarter offsets and scores are exact
    rtol = torch.finfo(torch.float16).eps if refine.startswith("dark") else 0.0
    torch.testing.assert_close(keypoints.float(), ref_kp.half().float(), rtol=rtol, atol=0, equal_nan=True)
    torch.testing.assert_close(scores.float(), ref_scores, rtol=0, atol=0)


@pytest.mark.parametrize("refine", ["dark", "dark_udp"])
def test_float64_is_computed_in_float64(refine):
    x, _ = peaks(2, 8, dtype=torch.float64, seed=15)
    keypoints, scores = decode_heatmaps(x, refine=refine)
    assert keypoints.dtype == scores.dtype == torch.float64
    assert_decoded((keypoints, scores), oracle(x, refine), atol=1e-10)


# --- gradients --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [3, 0])
def test_gradients_of_scores_and_dark_keypoints(margin):
    """Scores (the gathered maxima) and the DARK steps are differentiable in the heatmap values (margin 0: the
    narrowed blur and the per-axis steps at the edges)."""
    x, _ = peaks(1, 2, size=(9, 8), sigma=1.5, margin=margin, seed=16, dtype=torch.float64)
    x = (x + 0.05).requires_grad_()
    torch.autograd.gradcheck(lambda t: decode_heatmaps(t, refine="dark", blur_kernel=5), (x,))
    torch.autograd.gradcheck(lambda t: decode_heatmaps(t, refine="dark_udp", blur_kernel=5), (x,))
    keypoints, scores = decode_heatmaps(x, refine="none")
    (scores.sum() + keypoints.sum()).backward()
    assert x.grad.sum() == 2  # one 1 per channel, at the argmax; the integer keypoints carry no gradient


# --- module twin, export structure --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"refine": "quarter"}, {"refine": "dark", "blur_kernel": 7}, {"refine": "dark_udp", "low_score_threshold": 0}],
)
def test_module_repr_names_the_options(options):
    """(The module equals the functional for every sample: tests/test_op_contract.py.)"""
    text = repr(DecodeHeatmaps(**options))
    assert "refine" in text and ("low_score_threshold" in text) == ("low_score_threshold" in options)


class Heads(nn.Module):
    """Five decodes of the same heatmaps."""

    OPTIONS = (
        {},
        {"refine": "quarter"},
        {"refine": "dark", "blur_kernel": 7},
        {"refine": "dark_udp"},
        {"refine": "quarter", "low_score_threshold": 0.3, "low_score_marker": -2.0},
    )

    def forward(self, heatmaps):
        return tuple(t for o in self.OPTIONS for t in decode_heatmaps(heatmaps, **o))


def test_inline_export_folds_the_refine_attribute_and_matches_at_another_size():
    """emit="inline" leaves no ``If``: each call's refine mode is a constant. (One kpx node per call, the body
    attached once, no kpx node when inlined and ORT parity at the export size: tests/test_op_contract.py.)"""
    x, _ = peaks(2, 3, size=(16, 12), margin=2, seed=18)
    model = OrtModel(Heads(), (x,), dynamic_shapes=DYNAMIC, emit="inline")
    assert "If" not in {n.op_type for n in model.proto.graph.node}
    y, _ = peaks(3, 4, size=(21, 17), margin=2, seed=19, noise=0.01)
    y = y * torch.linspace(0.1, 1.0, 4)[:, None, None]  # some maxima below the 0.3 threshold
    for got, want in zip(model(y), Heads()(y), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("refine", "low"), [("none", None), ("quarter", None), ("dark_udp", None), ("quarter", 0.0), ("dark", 0.5)]
)
def test_adversarial_suite_in_every_refine_mode(refine, low):
    """The registry's bad inputs (the generic parity test runs them through DARK only), through the other modes
    and with low-score marking: argmax, quarter and the marker exactly; DARK-UDP within the float32 tolerance."""
    spec = get_op("decode_heatmaps")
    model = ort_decoder(refine, "function", KERNEL, None, low)
    rtol, atol = spec.tolerances[torch.float32] if refine.startswith("dark") else (0.0, 0.0)
    for name, (x,) in spec.adversarial().items():
        want = decode_heatmaps(x, refine=refine, low_score_threshold=low)
        for got, w in zip(model(x), want, strict=True):
            torch.testing.assert_close(got, w, rtol=rtol, atol=atol, equal_nan=True, msg=name)


# --- exceptions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("refine", ["", "Dark", "taylor", "udp", "DARK_UDP", None, 2])
def test_bad_refine_raises(refine):
    with pytest.raises(ValueError, match="refine"):
        decode_heatmaps(torch.rand(1, 2, 5, 5), refine=refine)
    with pytest.raises(ValueError, match="refine"):
        DecodeHeatmaps(refine=refine)


@pytest.mark.parametrize("blur_kernel", [0, -3, 4, 10, 11.0, True, "11", None])
def test_bad_blur_kernel_raises(blur_kernel):
    with pytest.raises(ValueError, match="blur_kernel"):
        decode_heatmaps(torch.rand(1, 2, 5, 5), refine="dark", blur_kernel=blur_kernel)
    with pytest.raises(ValueError, match="blur_kernel"):
        DecodeHeatmaps(refine="dark", blur_kernel=blur_kernel)


@pytest.mark.parametrize(
    ("option", "value"),
    [("low_score_threshold", math.nan), ("low_score_threshold", True), ("low_score_threshold", "0"),
     ("low_score_threshold", torch.tensor(0.0)), ("low_score_marker", None), ("low_score_marker", False),
     ("low_score_marker", "-1")],
)  # fmt: skip
def test_bad_low_score_options_raise(option, value):
    with pytest.raises(ValueError, match=option):
        decode_heatmaps(torch.rand(1, 2, 5, 5), **{option: value})
    with pytest.raises(ValueError, match=option):
        DecodeHeatmaps(**{option: value})


@pytest.mark.parametrize("shape", [(1, 2, 0, 5), (1, 2, 5, 0)])
def test_empty_map_raises(shape):
    """docs/spec.md: H == 0 or W == 0 is a ValueError (nothing to decode); wrong ranks: tests/test_op_contract.py."""
    with pytest.raises(ValueError, match=r"heatmaps must have shape \(B, K, H, W\)"):
        decode_heatmaps(torch.rand(shape))


# --- invariants (property test) -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    batch=st.integers(0, 2),
    keys=st.integers(0, 3),
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    refine=st.sampled_from(REFINES),
    blur_kernel=st.sampled_from([1, 3, 5, 11]),
    holes=st.floats(0.0, 0.5),
    low=st.sampled_from([None, 0.0, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_invariants(batch, keys, size, refine, blur_kernel, holes, low, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    x = torch.randn(batch, keys, h, w, generator=g, dtype=torch.float64)  # float64: the oracle's decisions exactly
    x[torch.rand(x.shape, generator=g) < holes] = math.nan
    x[torch.rand(x.shape, generator=g) < holes / 2] = -math.inf
    keypoints, scores = decode_heatmaps(x, refine=refine, blur_kernel=blur_kernel, low_score_threshold=low)
    assert keypoints.shape == (batch, keys, 2) and scores.shape == (batch, keys)
    clean = torch.where(x.isnan(), -math.inf, x).flatten(2)
    assert torch.equal(scores, clean.amax(-1))
    empty = scores == -math.inf
    assert keypoints[empty].isnan().all() and torch.isfinite(keypoints[~empty]).all()
    marked = ~empty & (scores <= (low if low is not None else -math.inf))
    assert (keypoints[marked] == -1).all()
    index = clean.argmax(-1)
    pixel = torch.stack([index % w, index // w], -1).double()
    decoded = ~empty & ~marked
    offset = (keypoints - pixel)[decoded]
    bound = {"none": 0.0, "quarter": 0.25, "dark": 1.0, "dark_udp": math.inf}[refine]  # dark_udp: unclamped
    assert (offset.abs() <= bound).all()
    if refine == "quarter":
        assert ((offset == 0) | (offset.abs() == 0.25)).all()
    if refine in ("quarter", "dark"):  # no move along an axis without both neighbours
        kp = keypoints[decoded]
        assert (
            (kp[:, 0] >= 0).all() and (kp[:, 0] <= w - 1).all() and (kp[:, 1] >= 0).all() and (kp[:, 1] <= h - 1).all()
        )
    # dark_udp: unclamped steps on noise (near-singular Hessians): float64 rounding relative to the step
    assert_decoded((keypoints, scores), oracle(x, refine, blur_kernel, low=low), atol=1e-9,
                   rtol=1e-9 if refine == "dark_udp" else 0)  # fmt: skip
