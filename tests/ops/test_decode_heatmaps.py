"""decode_heatmaps against docs/spec.md: numpy MSRA/HRNet and DARK references, sub-pixel accuracy, bad input, ONNX.

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
REFINES = ("none", "quarter", "dark")


# --- oracles: numpy float64, one map at a time ------------------------------------------------------------------


def np_max_preds(m):
    """MSRA/HRNet ``get_max_preds`` for one map ``(H, W)``: argmax of the flattened map, ``(x, y)`` and the max.

    (HRNet then zeroes predictions whose max is <= 0; kpx keeps them, so the inputs here have positive peaks.)
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


def dark(m, xy, score, k, *, stencil="3x3", padding="reflect"):
    """DARK refinement of one argmax ``xy``: blur, rescale to the original max, log, one Newton step.

    ``stencil="taylor"``: DARK's ``taylor`` / mmpose's ``refine_keypoints_dark``: second derivatives over two
    pixels, needs ``1 < x < W - 2``, steps whenever ``det != 0``. ``"3x3"``: docs/spec.md's central differences over
    one pixel, needs both neighbours, steps only when the Hessian is negative definite, clamped to 1 px.
    The blurred map (non-finite values as 0) is rescaled to ``score``, the map's maximum with NaN ignored.
    """
    h, w = m.shape
    x, y = int(xy[0]), int(xy[1])
    b = np_blur(np.where(np.isfinite(m), m, 0.0), k, padding)
    with np.errstate(all="ignore"):  # degenerate maps (all zero, +inf peaks) give NaN: no step below
        b = b * (score / np.max(b))
        L = np.log(np.maximum(b, 1e-10))
    if np.isnan(L).any() or np.isinf(L).any():
        return xy
    dx = 0.5 * (L[y, x + 1] - L[y, x - 1]) if 0 < x < w - 1 else 0.0
    dy = 0.5 * (L[y + 1, x] - L[y - 1, x]) if 0 < y < h - 1 else 0.0
    if stencil == "taylor":
        if not (1 < x < w - 2 and 1 < y < h - 2):
            return xy
        dxx = 0.25 * (L[y, x + 2] - 2 * L[y, x] + L[y, x - 2])
        dyy = 0.25 * (L[y + 2, x] - 2 * L[y, x] + L[y - 2, x])
    else:
        if not (0 < x < w - 1 and 0 < y < h - 1):
            return xy
        dxx = L[y, x + 1] - 2 * L[y, x] + L[y, x - 1]
        dyy = L[y + 1, x] - 2 * L[y, x] + L[y - 1, x]
    dxy = 0.25 * (L[y + 1, x + 1] - L[y - 1, x + 1] - L[y + 1, x - 1] + L[y - 1, x - 1])
    hessian = np.array([[dxx, dxy], [dxy, dyy]])
    det = np.linalg.det(hessian)
    if stencil == "taylor":
        return xy - np.linalg.inv(hessian) @ np.array([dx, dy]) if det != 0 else xy
    if not (dxx < 0 and det > 0):
        return xy
    return xy + np.clip(-np.linalg.solve(hessian, [dx, dy]), -1.0, 1.0)


def oracle(heatmaps, refine="none", k=KERNEL, *, quarter=per_axis_quarter, **dark_options):
    """Loops over channels: argmax (NaN as -inf), then the refinement; keypoints (B, K, 2), scores (B, K)."""
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
                xy = dark(maps[b, j], xy, score, k, **dark_options)
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


def mean_error(keypoints, centres) -> float:
    return float((keypoints.double() - centres).norm(dim=-1).mean())


def assert_decoded(out, expected, *, atol=1e-4):
    """Keypoints within ``atol`` px of the oracle (NaN at the same places), scores exactly."""
    keypoints, scores = out
    torch.testing.assert_close(keypoints.double(), expected[0], rtol=0, atol=atol, equal_nan=True)
    torch.testing.assert_close(scores.double(), expected[1], rtol=0, atol=0)


# --- backends: eager torch and one dynamic ORT export per (refine, emit) -----------------------------------------


@functools.cache
def ort_decoder(refine: str, emit: str, blur_kernel: int = KERNEL, dtype=None) -> OrtModel:
    example = peaks(2, 3, size=(16, 12), margin=0)[0]
    module = DecodeHeatmaps(refine=refine, blur_kernel=blur_kernel)
    return OrtModel(module, (example,), dynamic_shapes=DYNAMIC, emit=emit, dtype=dtype)


@pytest.fixture(scope="module", params=["torch", "ort-function", "ort-inline"])
def run(request):
    """``run(heatmaps, refine, blur_kernel=11)`` -> (keypoints, scores): eagerly or from a dynamic ORT export."""
    if request.param == "torch":
        return lambda x, refine, blur_kernel=KERNEL: decode_heatmaps(x, refine=refine, blur_kernel=blur_kernel)
    emit = request.param.removeprefix("ort-")
    return lambda x, refine, blur_kernel=KERNEL: tuple(ort_decoder(refine, emit, blur_kernel)(x))


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
    """DARK as docs/spec.md defines it (3x3 central differences), written independently in numpy with mmpose's
    zero-bordered blur: equal within 1e-4 px where the border cannot matter (measured ~2e-6 px in float32)."""
    x, _ = peaks(2, 17, sigma=sigma, seed=int(sigma * 10), margin=k // 2 + 2)  # the blur of the stencil stays inside
    assert_decoded(run(x, "dark", k), oracle(x, "dark", k, stencil="3x3", padding="zero"))
    assert_decoded(run(x, "dark", k), oracle(x, "dark", k, stencil="3x3", padding="reflect"))


def test_dark_is_close_to_the_taylor_stencil_and_at_least_as_accurate():
    """DARK's ``taylor`` (and mmpose's ``refine_keypoints_dark``) takes second derivatives over two pixels. On
    rendered Gaussians both stencils land within 1e-3 px of each other (measured max 4.3e-4 px at sigma 2,
    k 11); the 3x3 stencil of docs/spec.md is the more accurate of the two."""
    x, centres = peaks(4, 17, seed=3, dtype=torch.float64)
    keypoints, _ = decode_heatmaps(x, refine="dark", blur_kernel=KERNEL)
    taylor, _ = oracle(x, "dark", stencil="taylor", padding="zero")
    assert (keypoints - taylor).abs().max() < 1e-3
    assert mean_error(keypoints, centres) <= mean_error(taylor, centres)


@pytest.mark.parametrize("size", [(9, 7), (3, 4), (1, 6), (6, 1), (2, 2)])
def test_dark_reflect_101_border_matches_numpy_pad_reflect(run, size):
    """Near the edges and on maps smaller than the kernel radius the blur's border is reflect-101, repeated as
    often as needed: numpy's ``np.pad(mode="reflect")``."""
    x, _ = peaks(2, 6, size=size, sigma=1.0, margin=0, seed=4, noise=0.05)
    assert_decoded(run(x, "dark"), oracle(x, "dark"))


def test_dark_recovers_subpixel_centres_best(capsys):
    """Mean distance to the true sub-pixel centre: DARK << quarter << none (sigma 2, k 11, 40x32 maps)."""
    x, centres = peaks(8, 17, seed=5)
    errors = {r: mean_error(decode_heatmaps(x, refine=r)[0], centres) for r in REFINES}
    noisy, _ = peaks(8, 17, seed=5, noise=0.02)  # + uniform noise up to 2% of the peak
    noisy_errors = {r: mean_error(decode_heatmaps(noisy, refine=r)[0], centres) for r in REFINES}
    with capsys.disabled():
        print(f"\nmean error (px), clean: {errors}\nmean error (px), 2% noise: {noisy_errors}")
    assert errors["dark"] < 0.01 < errors["quarter"] < errors["none"]
    assert noisy_errors["dark"] < noisy_errors["quarter"] < noisy_errors["none"]
    assert 0.3 < errors["none"] < 0.45 and 0.15 < errors["quarter"] < 0.25  # ~0.38 and ~0.19 for uniform offsets


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
    assert_decoded(out, expected, atol=1e-4 if refine == "dark" else 0)
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


@pytest.mark.parametrize("refine", REFINES)
@pytest.mark.parametrize("size", [(1, 9), (9, 1), (1, 1)])
def test_single_row_or_column(run, refine, size):
    """A size-1 axis decodes to 0 on it; the other axis follows the rule; DARK makes no step (no neighbours on
    the size-1 axis), so it equals the hard argmax."""
    x = torch.rand(2, 4, *size, generator=torch.Generator().manual_seed(8))
    keypoints, scores = run(x, refine)
    assert torch.isfinite(keypoints).all()
    axis = 1 if size[0] == 1 else 0  # the coordinate of the size-1 axis
    if size != (1, 1):
        assert (keypoints[..., axis] == 0).all()
    assert_decoded((keypoints, scores), oracle(x, refine), atol=0)
    if refine == "dark":
        assert_decoded((keypoints, scores), oracle(x, "none"), atol=0)


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
    rtol = torch.finfo(torch.float16).eps if refine == "dark" else 0.0
    torch.testing.assert_close(keypoints.float(), ref_kp.half().float(), rtol=rtol, atol=0, equal_nan=True)
    torch.testing.assert_close(scores.float(), ref_scores, rtol=0, atol=0)


def test_float64_is_computed_in_float64():
    x, _ = peaks(2, 8, dtype=torch.float64, seed=15)
    keypoints, scores = decode_heatmaps(x, refine="dark")
    assert keypoints.dtype == scores.dtype == torch.float64
    assert_decoded((keypoints, scores), oracle(x, "dark"), atol=1e-10)


# --- gradients --------------------------------------------------------------------------------------------------------


def test_gradients_of_scores_and_dark_keypoints():
    """Scores (the gathered maxima) and DARK's Newton step are differentiable in the heatmap values."""
    x, _ = peaks(1, 2, size=(9, 8), sigma=1.5, margin=3, seed=16, dtype=torch.float64)
    x = (x + 0.05).requires_grad_()
    torch.autograd.gradcheck(lambda t: decode_heatmaps(t, refine="dark", blur_kernel=5), (x,))
    keypoints, scores = decode_heatmaps(x, refine="none")
    (scores.sum() + keypoints.sum()).backward()
    assert x.grad.sum() == 2  # one 1 per channel, at the argmax; the integer keypoints carry no gradient


# --- module twin, export structure --------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"refine": "quarter"}, {"refine": "dark", "blur_kernel": 7}])
def test_module_repr_names_the_refine_mode(options):
    """(The module equals the functional for every sample: tests/test_op_contract.py.)"""
    assert "refine" in repr(DecodeHeatmaps(**options))


class Heads(nn.Module):
    """Three decodes of the same heatmaps."""

    OPTIONS = ({}, {"refine": "quarter"}, {"refine": "dark", "blur_kernel": 7})

    def forward(self, heatmaps):
        return tuple(t for o in self.OPTIONS for t in decode_heatmaps(heatmaps, **o))


def test_inline_export_folds_the_refine_attribute_and_matches_at_another_size():
    """emit="inline" leaves no ``If``: each call's refine mode is a constant. (One kpx node per call, the body
    attached once, no kpx node when inlined and ORT parity at the export size: tests/test_op_contract.py.)"""
    x, _ = peaks(2, 3, size=(16, 12), margin=2, seed=18)
    model = OrtModel(Heads(), (x,), dynamic_shapes=DYNAMIC, emit="inline")
    assert "If" not in {n.op_type for n in model.proto.graph.node}
    y, _ = peaks(3, 4, size=(21, 17), margin=2, seed=19, noise=0.01)
    for got, want in zip(model(y), Heads()(y), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_adversarial_suite_in_every_refine_mode():
    """The registry's bad inputs (the generic parity test runs them through DARK only), through quarter and none."""
    spec = get_op("decode_heatmaps")
    for refine in ("none", "quarter"):
        model = ort_decoder(refine, "function")
        for name, (x,) in spec.adversarial().items():
            for got, want in zip(model(x), decode_heatmaps(x, refine=refine), strict=True):
                torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=name)


# --- exceptions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("refine", ["", "Dark", "taylor", None, 2])
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
    seed=st.integers(0, 2**16),
)
def test_invariants(batch, keys, size, refine, blur_kernel, holes, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    x = torch.randn(batch, keys, h, w, generator=g, dtype=torch.float64)  # float64: the oracle's decisions exactly
    x[torch.rand(x.shape, generator=g) < holes] = math.nan
    x[torch.rand(x.shape, generator=g) < holes / 2] = -math.inf
    keypoints, scores = decode_heatmaps(x, refine=refine, blur_kernel=blur_kernel)
    assert keypoints.shape == (batch, keys, 2) and scores.shape == (batch, keys)
    clean = torch.where(x.isnan(), -math.inf, x).flatten(2)
    assert torch.equal(scores, clean.amax(-1))
    empty = scores == -math.inf
    assert keypoints[empty].isnan().all() and torch.isfinite(keypoints[~empty]).all()
    index = clean.argmax(-1)
    pixel = torch.stack([index % w, index // w], -1).double()
    offset = (keypoints - pixel)[~empty]
    bound = {"none": 0.0, "quarter": 0.25, "dark": 1.0}[refine]
    assert (offset.abs() <= bound).all()
    if refine == "quarter":
        assert ((offset == 0) | (offset.abs() == 0.25)).all()
    if refine != "none":  # no move along an axis without both neighbours
        kp = keypoints[~empty]
        assert (
            (kp[:, 0] >= 0).all() and (kp[:, 0] <= w - 1).all() and (kp[:, 1] >= 0).all() and (kp[:, 1] <= h - 1).all()
        )
    assert_decoded((keypoints, scores), oracle(x, refine, blur_kernel), atol=1e-9)
