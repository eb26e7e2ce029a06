"""gaussian_heatmaps against docs/spec.md: the classic MSRA/HRNet window copy, the float64 formula, bad input, ONNX.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank and last axis, non-float input, one kpx node per call) is tests/test_op_contract.py, for every op from its
registry record.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from custom_ops import GaussianHeatmaps, gaussian_heatmaps
from custom_ops.conventions import normalized_to_pixel
from export_tools import kpx_nodes

from ._ort import OrtModel

SIZE = (11, 14)  # (H, W) of the exported models: non-square on purpose
SIGMA = 2.0  # Python sigma of the exported models: integer window radius 6 with truncate 3
DYNAMIC = ({0: "B", 1: "K"}, {0: "B", 1: "K"})  # keypoints, visibility
DYNAMIC_SIGMA_K = (*DYNAMIC, {0: "K"})
DYNAMIC_SIGMA_0D = (*DYNAMIC, None)
DYNAMIC_INSTANCES = ({0: "B", 1: "I", 2: "K"}, {0: "B", 1: "I", 2: "K"})
NON_FINITE = (math.nan, math.inf, -math.inf)


# --- oracles: plain numpy / Python loops, one keypoint at a time ---------------------------------------------


def classic_window_copy(x, y, sigma, truncate, size, visible=1.0):
    """MSRA/HRNet's target for one keypoint: the (2*tmp+1)^2 Gaussian window copied into a zero map.

    Returns ``(map (H, W) float64, weight)``. The weight rule is docs/spec.md's ("a window that misses the map
    entirely": weight 0); MSRA tests ``br < 0`` on an exclusive bound and so keeps ``br == 0`` (see
    ``test_window_ending_one_pixel_before_the_map``).
    """
    h, w = size
    target = np.zeros((h, w))
    tmp = truncate * sigma
    assert tmp == int(tmp), "the classic window copy needs an integer radius truncate*sigma"
    tmp = int(tmp)
    if visible < 0.5 or not (math.isfinite(x) and math.isfinite(y)):
        return target, 0.0
    mu_x, mu_y = math.floor(x + 0.5), math.floor(y + 0.5)  # not int(x + 0.5), which truncates towards 0
    ul = (mu_x - tmp, mu_y - tmp)
    br = (mu_x + tmp + 1, mu_y + tmp + 1)  # exclusive
    if ul[0] >= w or ul[1] >= h or br[0] <= 0 or br[1] <= 0:
        return target, 0.0
    n = 2 * tmp + 1
    xs = np.arange(n, dtype=np.float64)
    ys = xs[:, None]
    x0 = y0 = n // 2
    g = np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma**2))
    g_x = max(0, -ul[0]), min(br[0], w) - ul[0]
    g_y = max(0, -ul[1]), min(br[1], h) - ul[1]
    img_x = max(0, ul[0]), min(br[0], w)
    img_y = max(0, ul[1]), min(br[1], h)
    target[img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[g_y[0] : g_y[1], g_x[0] : g_x[1]]
    return target, 1.0


def spec_formula(x, y, sigma, truncate, size, visible=1.0, *, subpixel=False):
    """The value of docs/spec.md evaluated pixel by pixel in float64 (any truncate*sigma, subpixel or not)."""
    h, w = size
    target = np.zeros((h, w))
    if visible < 0.5 or not (math.isfinite(x) and math.isfinite(y)):
        return target, 0.0
    cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
    gx, gy = (x, y) if subpixel else (cx, cy)
    radius = truncate * sigma
    in_x = [abs(u - cx) <= radius for u in range(w)]
    in_y = [abs(v - cy) <= radius for v in range(h)]
    if not (any(in_x) and any(in_y)):  # the window misses the map entirely
        return target, 0.0
    for v, u in itertools.product(range(h), range(w)):
        if in_x[u] and in_y[v]:
            target[v, u] = math.exp(-((u - gx) ** 2 + (v - gy) ** 2) / (2 * sigma**2))
    return target, 1.0


def oracle(keypoints, size, sigma, visibility=None, truncate=3.0, render=classic_window_copy, **options):
    """Loops over batch, instances and keypoints; instances merged by element-wise max, weight max."""
    kp = keypoints.double().numpy()
    kp = kp if kp.ndim == 4 else kp[:, None]
    batch, instances, keys = kp.shape[:3]
    vis = np.ones((batch, instances, keys)) if visibility is None else visibility.double().numpy()
    vis = vis.reshape(batch, instances, keys)
    sigmas = np.broadcast_to(torch.as_tensor(sigma).double().numpy(), (keys,))
    maps, weights = np.zeros((batch, keys, *size)), np.zeros((batch, keys))
    for b, i, k in itertools.product(range(batch), range(instances), range(keys)):
        x, y = kp[b, i, k]
        m, wt = render(x, y, float(sigmas[k]), truncate, size, vis[b, i, k], **options)
        maps[b, k] = np.maximum(maps[b, k], m)
        weights[b, k] = max(weights[b, k], wt)
    return torch.from_numpy(maps), torch.from_numpy(weights)


# --- inputs and assertions -------------------------------------------------------------------------------------


def uniform(*shape: int, low, high, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * (high - low) + low


def around(*batch: int, size=SIZE, radius: float = 6.0, seed: int = 0) -> torch.Tensor:
    """Keypoints (*batch, 2), each at random either near the map (window on it or partly off: within radius of
    it) or anywhere in [-3r, W + 3r] x [-3r, H + 3r] (often fully off)."""
    h, w = size
    extent = torch.tensor([w - 1.0, h - 1.0])
    near = uniform(*batch, 2, low=0.0, high=1.0, seed=seed) * (extent + 2 * radius) - radius
    wide = uniform(*batch, 2, low=0.0, high=1.0, seed=seed + 1) * (extent + 1 + 6 * radius) - 3 * radius
    pick = uniform(*batch, 1, low=0.0, high=1.0, seed=seed + 2) < 0.5
    return torch.where(pick, near, wide)


def visibility_like(keypoints: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Visibility in [0, 1] with the docs/spec.md threshold 0.5 itself (rendered) sprinkled in."""
    vis = uniform(*keypoints.shape[:-1], low=0.0, high=1.0, seed=seed)
    vis.view(-1)[::5] = 0.5
    return vis


def assert_heatmaps(out, expected, *, atol: float = 1e-6):
    """Heatmaps within atol 1e-6 of the oracle (the issue's requirement), weights exactly, never NaN."""
    heatmaps, weights = out
    assert not heatmaps.isnan().any() and not weights.isnan().any()
    torch.testing.assert_close(heatmaps.double(), expected[0], rtol=0, atol=atol)
    torch.testing.assert_close(weights.double(), expected[1], rtol=0, atol=0)


def assert_value(value: torch.Tensor, expected: float):
    """One pixel against a float64 value, within the issue's atol 1e-6."""
    assert abs(float(value) - expected) <= 1e-6, (float(value), expected)


def assert_mixed(weights: torch.Tensor):
    """The sample exercises both rendered and dropped keypoints (guards the random inputs, not the op)."""
    assert 0 < int(weights.sum()) < weights.numel()


def assert_dropped(out, b: int, k: int):
    heatmaps, weights = out
    assert weights[b, k] == 0
    assert (heatmaps[b, k] == 0).all()


def assert_same_elsewhere(out, ref, b: int, k: int):
    """Every (batch, keypoint) other than (b, k) is bit-identical in ``out`` and ``ref``."""
    keep = torch.ones(out[1].shape, dtype=torch.bool)
    keep[b, k] = False
    for got, want in zip(out, ref, strict=True):
        torch.testing.assert_close(got[keep], want[keep], rtol=0, atol=0)


# --- exactness: the classic window copy, torch ---------------------------------------------------------------


@pytest.mark.parametrize(("sigma", "truncate"), [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0), (1.5, 2.0)])
@pytest.mark.parametrize("size", [(11, 14), (16, 9)])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("with_visibility", [False, True])
def test_matches_classic_window_copy(sigma, truncate, size, batch, with_visibility):
    kp = around(batch, 12, size=size, radius=truncate * sigma, seed=batch)
    vis = visibility_like(kp, seed=7) if with_visibility else None
    expected = oracle(kp, size, sigma, vis, truncate)
    assert_mixed(expected[1])
    assert_heatmaps(gaussian_heatmaps(kp, size, sigma, visibility=vis, truncate=truncate), expected)


def test_float64_matches_classic_window_copy_tightly():
    kp = around(2, 12, seed=3).double()
    expected = oracle(kp, SIZE, SIGMA)
    out = gaussian_heatmaps(kp, SIZE, SIGMA)
    assert out[0].dtype == out[1].dtype == torch.float64
    # float64 inside: separable exp(a)*exp(b) vs exp(a+b) differ by a few float64 ulps only
    assert_heatmaps(out, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("sigmas", "truncate"), [([1.0, 2.0, 3.0, 1.0, 3.0, 2.0], 3.0), ([0.5, 1.5, 2.5, 1.0, 2.0, 1.5], 2.0)]
)
def test_per_keypoint_sigma_matches_classic_window_copy(sigmas, truncate):
    sigma = torch.tensor(sigmas)
    kp = around(3, len(sigmas), radius=6.0, seed=11)
    vis = visibility_like(kp, seed=12)
    expected = oracle(kp, SIZE, sigma, vis, truncate)
    assert_mixed(expected[1])
    assert_heatmaps(gaussian_heatmaps(kp, SIZE, sigma, visibility=vis, truncate=truncate), expected)


@pytest.mark.parametrize(("sigma", "truncate"), [(1.0, 3.0), (2.0, 3.0), (1.5, 2.0)])
def test_instances_match_max_of_classic_window_copies(sigma, truncate):
    kp = around(2, 3, 6, radius=truncate * sigma, seed=21)
    vis = visibility_like(kp, seed=22)
    vis[0, :, 0] = 0  # a keypoint invisible in every instance and one off the map in every instance: weight 0
    kp[1, :, 1] = -5 * truncate * sigma
    expected = oracle(kp, SIZE, sigma, vis, truncate)
    assert_mixed(expected[1])
    assert_heatmaps(gaussian_heatmaps(kp, SIZE, sigma, visibility=vis, truncate=truncate), expected)


def test_negative_coordinate_rounds_down_not_towards_zero():
    # x = -0.7: floor(-0.2) = -1 puts the centre off the map (int(-0.2) = 0 would draw the peak at column 0)
    kp = torch.tensor([[[-0.7, 5.0], [4.0, -0.7]]])
    heatmaps, weights = gaussian_heatmaps(kp, SIZE, SIGMA)
    off_by_one = math.exp(-1 / (2 * SIGMA**2))
    assert weights.tolist() == [[1.0, 1.0]]
    assert_value(heatmaps[0, 0, 5, 0], off_by_one)
    assert_value(heatmaps[0, 1, 0, 4], off_by_one)
    assert heatmaps.amax() < 1
    assert_heatmaps((heatmaps, weights), oracle(kp, SIZE, SIGMA))


# --- docs/spec.md formula: subpixel and non-integer windows, torch ---------------------------------------------


@pytest.mark.parametrize(
    ("sigma", "truncate"), [(2.0, 3.0), (1.0, 3.0), (1.3, 3.0), (0.7, 2.5), (2.2, 3.0)]
)  # radii 6, 3 and, not integers, 3.9, 1.75, 6.6
@pytest.mark.parametrize("subpixel", [False, True])
def test_matches_spec_formula(sigma, truncate, subpixel):
    kp = around(2, 8, radius=truncate * sigma, seed=31)
    vis = visibility_like(kp, seed=32)
    expected = oracle(kp, SIZE, sigma, vis, truncate, render=spec_formula, subpixel=subpixel)
    assert_mixed(expected[1])
    out = gaussian_heatmaps(kp, SIZE, sigma, visibility=vis, truncate=truncate, subpixel=subpixel)
    assert_heatmaps(out, expected)


def test_subpixel_peak_is_at_p_not_at_the_rounded_centre():
    kp = torch.tensor([[[5.3, 4.0], [6.0, 3.6]]])  # centres (5, 4) and (6, 4)
    heatmaps, _ = gaussian_heatmaps(kp, SIZE, 1.0, subpixel=True)
    rows, cols = heatmaps[0, 0, 4], heatmaps[0, 1, :, 6]
    # the pixels next to p follow the docs/spec.md formula centred at p itself, so no pixel reaches 1
    assert_value(rows[5], math.exp(-(0.3**2) / 2))
    assert_value(rows[6], math.exp(-(0.7**2) / 2))
    assert_value(cols[4], math.exp(-(0.4**2) / 2))
    assert heatmaps.amax() < 1


def test_subpixel_window_stays_around_the_rounded_centre():
    # p = 6.4, radius 3: the window is columns 3..9 around c = 6, not 3.4..9.4 around p
    kp = torch.tensor([[[6.4, 5.0]]])
    heatmaps, _ = gaussian_heatmaps(kp, SIZE, 1.0, subpixel=True)
    row = heatmaps[0, 0, 5]
    assert (row[3:10] > 0).all()
    assert (row[:3] == 0).all() and (row[10:] == 0).all()


# --- both backends: oracle and the docs/spec.md bad-input table ---------------------------------------------------


class Render(nn.Module):
    """A tiny model calling the functional with a Python sigma: (keypoints, visibility) -> (heatmaps, weights)."""

    def __init__(self, size=SIZE, sigma=SIGMA, **options):
        super().__init__()
        self.size, self.sigma, self.options = size, sigma, options

    def forward(self, keypoints, visibility):
        return gaussian_heatmaps(keypoints, self.size, self.sigma, visibility=visibility, **self.options)


class RenderSigma(Render):
    """Sigma as a tensor input (0-d or per-keypoint (K,)): (keypoints, visibility, sigma)."""

    def forward(self, keypoints, visibility, sigma):
        return gaussian_heatmaps(keypoints, self.size, sigma, visibility=visibility, **self.options)


@pytest.fixture(scope="module")
def ort_render():
    return OrtModel(Render(), (around(2, 5), torch.ones(2, 5)), dynamic_shapes=DYNAMIC)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run(request):
    """``run(keypoints, visibility)`` -> (heatmaps, weights) at SIZE, SIGMA: eagerly or from one ORT session."""
    if request.param == "torch":
        return Render()
    return request.getfixturevalue("ort_render")


def test_window_ending_one_pixel_before_the_map(run):
    """docs/spec.md: a window that misses the map gets weight 0. MSRA tests ``br[0] < 0`` with the exclusive
    ``br = mu + tmp + 1``: for a window whose last column is -1, ``br[0] == 0`` and it keeps weight 1 with an
    empty map. kpx (docstring decision) gives weight 0. The neighbours on both sides pin the bound."""
    h, w = SIZE
    r = 6  # SIGMA * 3
    kp = torch.tensor(
        [
            [
                [-r - 1.0, 5.0],  # columns -13..-1: misses
                [5.0, -r - 1.0],  # rows -13..-1: misses
                [-r - 1.4, 5.0],  # centre floor(-6.9) = -7: misses
                [-r * 1.0, 5.0],  # last column 0: rendered
                [w - 1.0 + r + 1, 5.0],  # first column W: misses (MSRA: ul >= W, weight 0 too)
                [w - 1.0 + r, 5.0],  # first column W - 1: rendered
                [5.0, h - 1.0 + r + 1],  # first row H: misses
            ]
        ]
    )
    out = run(kp, torch.ones(1, 7))
    for k in (0, 1, 2, 4, 6):
        assert_dropped(out, 0, k)
    edge = math.exp(-(r**2) / (2 * SIGMA**2))
    assert out[1][0, 3] == 1 and out[1][0, 5] == 1
    assert_value(out[0][0, 3, 5, 0], edge)
    assert_value(out[0][0, 5, 5, w - 1], edge)
    assert_heatmaps(out, oracle(kp, SIZE, SIGMA))


def test_backend_matches_classic_window_copy(run):
    kp = around(3, 10, seed=41)
    vis = visibility_like(kp, seed=42)
    expected = oracle(kp, SIZE, SIGMA, vis)
    assert_mixed(expected[1])
    out = run(kp, vis)
    assert out[0].dtype == out[1].dtype == torch.float32
    assert_heatmaps(out, expected)


def test_half_pixel_coordinates_round_up(run):
    # c = floor(p + 0.5): ties go up (2.5 -> 3, -0.5 -> 0), not to even as torch.round / ONNX Round would do
    kp = torch.tensor([[[2.5, 4.5], [-0.5, 0.5], [5.5, -0.5], [12.5, 9.5]]])
    out = run(kp, torch.ones(1, 4))
    centres = [(5, 3), (1, 0), (0, 6), (10, 13)]  # (row, column)
    for k, (row, col) in enumerate(centres):
        assert out[0][0, k, row, col] == 1.0
        assert divmod(int(out[0][0, k].argmax()), SIZE[1]) == (row, col)
    assert_heatmaps(out, oracle(kp, SIZE, SIGMA))


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize("axis", [0, 1])
def test_non_finite_coordinate_is_isolated(run, bad, axis):
    kp = around(2, 4, radius=1.0, seed=43)  # every window on the map
    vis = torch.ones(2, 4)
    ref = run(kp, vis)
    assert (ref[1] == 1).all()
    kp[1, 2, axis] = bad
    out = run(kp, vis)
    assert_dropped(out, 1, 2)
    assert not out[0].isnan().any() and not out[1].isnan().any()
    assert_same_elsewhere(out, ref, 1, 2)


@pytest.mark.parametrize("value", [0.0, 0.49, -1.0])
def test_invisible_keypoint_is_dropped(run, value):
    kp = around(2, 4, radius=1.0, seed=44)
    vis = torch.ones(2, 4)
    ref = run(kp, vis)
    vis[0, 3] = value
    out = run(kp, vis)
    assert_dropped(out, 0, 3)
    assert_same_elsewhere(out, ref, 0, 3)


@pytest.mark.parametrize("value", [0.5, 0.75, 7.0])
def test_visibility_at_or_above_half_renders(run, value):
    kp = around(1, 3, radius=1.0, seed=45)
    out = run(kp, torch.full((1, 3), value))
    assert (out[1] == 1).all()
    assert_heatmaps(out, oracle(kp, SIZE, SIGMA))


@pytest.mark.parametrize("far", [-7.0, 21.0, 1e4, -1e4, 1e30, -1e30])
@pytest.mark.parametrize("axis", [0, 1])
def test_window_fully_off_the_map_is_dropped(run, far, axis):
    kp = around(2, 3, radius=1.0, seed=46)
    vis = torch.ones(2, 3)
    ref = run(kp, vis)
    kp[0, 1, axis] = far  # -7 and 21 (> W - 1 + 6 = 19; rows: > 16) are just off
    out = run(kp, vis)
    assert_dropped(out, 0, 1)
    assert not out[0].isnan().any()
    assert_same_elsewhere(out, ref, 0, 1)


# --- tensor sigma, both backends ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run_sigma(request):
    """``run_sigma(keypoints, visibility, sigma)`` with sigma a 0-d or (K,) tensor (one ORT export per rank)."""
    if request.param == "torch":
        return RenderSigma()
    example = (around(2, 5), torch.ones(2, 5))
    per_keypoint = OrtModel(RenderSigma(), (*example, torch.ones(5)), dynamic_shapes=DYNAMIC_SIGMA_K)
    scalar = OrtModel(RenderSigma(), (*example, torch.tensor(1.0)), dynamic_shapes=DYNAMIC_SIGMA_0D)
    return lambda kp, vis, sigma: (per_keypoint if sigma.dim() else scalar)(kp, vis, sigma)


def test_per_keypoint_sigma_on_every_backend(run_sigma):
    sigma = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0, 3.0])
    kp = around(3, 6, radius=9.0, seed=51)
    vis = visibility_like(kp, seed=52)
    expected = oracle(kp, SIZE, sigma, vis)
    assert_mixed(expected[1])
    assert_heatmaps(run_sigma(kp, vis, sigma), expected)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_scalar_tensor_sigma_on_every_backend(run_sigma, sigma):
    kp = around(2, 6, radius=3 * sigma, seed=53)
    vis = visibility_like(kp, seed=54)
    expected = oracle(kp, SIZE, sigma, vis)
    assert_heatmaps(run_sigma(kp, vis, torch.tensor(sigma)), expected)


@pytest.mark.parametrize("bad", [0.0, -1.0, -math.inf, math.nan])
def test_per_keypoint_sigma_not_positive_is_dropped(run_sigma, bad):
    # documented decision: a tensor sigma that is not > 0 (here also NaN) renders zeros with weight 0, never NaN
    kp = around(2, 4, radius=1.0, seed=55)
    vis = torch.ones(2, 4)
    sigma = torch.tensor([1.0, 2.0, 1.5, 3.0])
    ref = run_sigma(kp, vis, sigma)
    sigma[2] = bad
    out = run_sigma(kp, vis, sigma)
    assert not out[0].isnan().any() and not out[1].isnan().any()
    for b in range(2):
        assert_dropped(out, b, 2)
    keep = torch.tensor([0, 1, 3])
    for got, want in zip(out, ref, strict=True):
        torch.testing.assert_close(got[:, keep], want[:, keep], rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0.0, -2.0, math.nan])
def test_scalar_tensor_sigma_not_positive_is_dropped(run_sigma, bad):
    kp = around(2, 4, radius=1.0, seed=56)
    heatmaps, weights = run_sigma(kp, torch.ones(2, 4), torch.tensor(bad))
    assert (weights == 0).all()
    assert (heatmaps == 0).all()


@pytest.mark.parametrize(("batch", "keys"), [(0, 3), (2, 0), (0, 0)])
def test_empty_with_per_keypoint_sigma(run_sigma, batch, keys):
    heatmaps, weights = run_sigma(torch.zeros(batch, keys, 2), torch.ones(batch, keys), torch.ones(keys))
    assert heatmaps.shape == (batch, keys, *SIZE)
    assert weights.shape == (batch, keys)


def assert_all_ones(out, on_map: torch.Tensor):
    """A window of radius 3e30 covers the whole map, and exp(-d^2 / 2e60) is 1 at any finite d."""
    heatmaps, weights = out
    assert torch.isfinite(heatmaps).all() and torch.isfinite(weights).all()
    assert (weights[on_map] == 1).all()
    torch.testing.assert_close(heatmaps[on_map], torch.ones_like(heatmaps[on_map]), rtol=0, atol=1e-6)


def test_huge_per_keypoint_sigma_covers_the_map(run_sigma):
    kp = around(2, 3, seed=57)
    kp[1, 1] = torch.tensor([1e4, -1e4])  # far off, but a window of radius 3e30 still covers the map
    sigma = torch.tensor([1.0, 1e30, 2.0])
    out = run_sigma(kp, torch.ones(2, 3), sigma)
    assert_all_ones(out, torch.tensor([[False, True, False], [False, True, False]]))
    expected = oracle(kp[:, [0, 2]], SIZE, sigma[[0, 2]])
    assert_heatmaps((out[0][:, [0, 2]], out[1][:, [0, 2]]), expected)


def test_huge_scalar_tensor_sigma_covers_the_map(run_sigma):
    kp = around(2, 3, seed=58)
    assert_all_ones(run_sigma(kp, torch.ones(2, 3), torch.tensor(1e30)), torch.ones(2, 3, dtype=torch.bool))


def test_huge_python_sigma_covers_the_map():
    kp = around(2, 3, seed=59)
    assert_all_ones(gaussian_heatmaps(kp, SIZE, 1e30), torch.ones(2, 3, dtype=torch.bool))


def test_sigma_number_tensor_and_per_keypoint_agree():
    kp = around(2, 5, seed=60)
    vis = visibility_like(kp, seed=61)
    expected = gaussian_heatmaps(kp, SIZE, 1.5, visibility=vis)
    for sigma in (torch.tensor(1.5), torch.full((5,), 1.5)):
        for got, want in zip(gaussian_heatmaps(kp, SIZE, sigma, visibility=vis), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_visibility_none_equals_all_visible():
    kp = around(2, 5, seed=62)
    for got, want in zip(
        gaussian_heatmaps(kp, SIZE, SIGMA), gaussian_heatmaps(kp, SIZE, SIGMA, visibility=torch.ones(2, 5)), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# --- instances, both backends -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run_instances(request):
    if request.param == "torch":
        return Render()
    return OrtModel(Render(), (around(2, 3, 5), torch.ones(2, 3, 5)), dynamic_shapes=DYNAMIC_INSTANCES)


def test_instances_on_every_backend(run_instances):
    kp = around(3, 2, 6, seed=71)
    vis = visibility_like(kp, seed=72)
    kp[0, 0, 1, 0] = math.nan  # one instance non-finite: the other one still renders
    kp[1, 1, 2, 1] = math.inf
    expected = oracle(kp, SIZE, SIGMA, vis)
    assert_mixed(expected[1])
    assert_heatmaps(run_instances(kp, vis), expected)


# --- normalized coordinates, torch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("subpixel", [False, True])
@pytest.mark.parametrize("size", [SIZE, (1, 9), (8, 1)])
def test_normalized_equals_pixel_mode_of_mapped_keypoints(align_corners, subpixel, size):
    kp = uniform(3, 6, 2, low=-1.3, high=1.3, seed=81)
    vis = visibility_like(kp, seed=82)
    out = gaussian_heatmaps(
        kp, size, 1.5, visibility=vis, subpixel=subpixel, normalized_coordinates=True, align_corners=align_corners
    )
    pixels = normalized_to_pixel(kp, size, align_corners=align_corners)
    expected = gaussian_heatmaps(pixels, size, 1.5, visibility=vis, subpixel=subpixel)
    assert torch.isfinite(out[0]).all()
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_normalized_align_corners_false_is_the_int_half_x_plus_one_times_w_mapping():
    # docs/spec.md: int(0.5 * (x + 1) * W) for x in (-1, 1) is align_corners=False plus the centre rounding
    h, w = SIZE
    kp = uniform(4, 16, 2, low=-0.999, high=0.999, seed=83)
    scaled = 0.5 * (kp.double() + 1) * torch.tensor([w, h], dtype=torch.float64)
    away = ((scaled - scaled.round()).abs() > 1e-3).all(-1)  # not at a rounding boundary (float32 vs float64)
    kp = kp[away].reshape(1, -1, 2)
    heatmaps, weights = gaussian_heatmaps(kp, SIZE, 1.0, normalized_coordinates=True, align_corners=False)
    assert (weights == 1).all()
    for k, (x, y) in enumerate(kp[0].double().tolist()):
        row, col = int(0.5 * (y + 1) * h), int(0.5 * (x + 1) * w)
        assert heatmaps[0, k, row, col] == 1.0
        assert divmod(int(heatmaps[0, k].argmax()), w) == (row, col)


# --- dtypes ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort_render16():
    return OrtModel(Render(), (around(2, 5), torch.ones(2, 5)), dynamic_shapes=DYNAMIC, dtype=torch.float16)


def test_float16_export_matches_float32_pytorch(ort_render16):
    kp = around(3, 8, seed=94).half()
    vis = visibility_like(kp, seed=95).half()
    kp[2, 1, 0] = math.nan
    heatmaps, weights = ort_render16(kp, vis)
    ref_maps, ref_weights = gaussian_heatmaps(kp.float(), SIZE, SIGMA, visibility=vis.float())
    assert_mixed(ref_weights)
    assert heatmaps.dtype == weights.dtype == torch.float16
    assert not heatmaps.isnan().any()
    fp16 = torch.finfo(torch.float16)
    # float32 inside, rounded once to float16: half an ulp, doubled for the last-bit differences between ORT's and
    # torch's float32 exp that can flip that rounding; one subnormal step (2**-24) near 0
    torch.testing.assert_close(heatmaps.float(), ref_maps, rtol=fp16.eps, atol=fp16.smallest_normal * fp16.eps)
    torch.testing.assert_close(weights.float(), ref_weights, rtol=0, atol=0)


# --- module twin, export structure --------------------------------------------------------------------------------

OPTIONS = (
    {},
    {"truncate": 2.0, "subpixel": True},
    {"normalized_coordinates": True},
    {"normalized_coordinates": True, "align_corners": False, "subpixel": True},
)


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("sigma", [1.5, torch.tensor(2.0), torch.tensor([1.0, 2.0, 3.0, 1.5])])
def test_module_equals_functional(options, sigma):
    """Beyond the samples of tests/test_op_contract.py: truncate, every sigma form, visibility given to forward."""
    kp = uniform(2, 4, 2, low=-1.2, high=1.2, seed=101) * (1 if options.get("normalized_coordinates") else 8)
    vis = visibility_like(kp, seed=102)
    module = GaussianHeatmaps(SIZE, sigma, **options)
    for args, kwargs in (((kp, vis), {"visibility": vis}), ((kp,), {})):
        for got, want in zip(module(*args), gaussian_heatmaps(kp, SIZE, sigma, **kwargs, **options), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


class Heads(nn.Module):
    """One gaussian_heatmaps call per entry of OPTIONS."""

    def forward(self, keypoints, visibility):
        outs = [gaussian_heatmaps(keypoints, SIZE, 1.5, visibility=visibility, **o) for o in OPTIONS]
        return tuple(t for pair in outs for t in pair)


@pytest.fixture(scope="module")
def ort_heads():
    return OrtModel(Heads(), (uniform(2, 5, 2, low=-1, high=1), torch.ones(2, 5)), dynamic_shapes=DYNAMIC)


def test_each_calls_options_reach_its_node(ort_heads):
    """Each call's options as its node's attributes, and the node's outputs are the graph's (one node per call and
    the body attached once are checked for every op in tests/test_op_contract.py; truncate=2.0 is in no sample)."""
    proto = ort_heads.proto
    graph_outputs = [o.name for o in proto.graph.output]
    for node, options in zip(kpx_nodes(proto), OPTIONS, strict=True):
        assert set(node.output) <= set(graph_outputs)
        attrs = {a.name: a for a in node.attribute}
        assert list(attrs["size"].ints) == list(SIZE)
        assert attrs["truncate"].f == options.get("truncate", 3.0)
        for flag, default in (("subpixel", False), ("normalized_coordinates", False), ("align_corners", True)):
            assert attrs[flag].i == int(options.get(flag, default))


def test_every_head_matches_pytorch_on_ort(ort_heads):
    kp = uniform(3, 6, 2, low=-1.3, high=1.3, seed=103)
    kp[:, :3] *= 8  # the pixel heads: some keypoints inside a pixel map
    vis = visibility_like(kp, seed=104)
    outs = ort_heads(kp, vis)
    for got, want in zip(outs, Heads()(kp, vis), strict=True):
        assert not got.isnan().any()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


# --- exceptions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0, 0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_sigma_number_raises(sigma):
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(torch.zeros(1, 3, 2), SIZE, sigma)
    with pytest.raises(ValueError, match="sigma"):
        GaussianHeatmaps(SIZE, sigma)(torch.zeros(1, 3, 2))


@pytest.mark.parametrize("truncate", [0, 0.0, -1.0])
def test_bad_truncate_raises(truncate):
    with pytest.raises(ValueError, match="truncate"):
        gaussian_heatmaps(torch.zeros(1, 3, 2), SIZE, SIGMA, truncate=truncate)
    with pytest.raises(ValueError, match="truncate"):
        GaussianHeatmaps(SIZE, SIGMA, truncate=truncate)(torch.zeros(1, 3, 2))


@pytest.mark.parametrize(
    ("kp_shape", "vis_shape"), [((2, 5, 2), (2, 4)), ((2, 5, 2), (2, 5, 1)), ((2, 5, 2), (10,)), ((2, 3, 5, 2), (2, 5))]
)
def test_mismatched_visibility_raises(kp_shape, vis_shape):
    with pytest.raises(ValueError, match="visibility"):
        gaussian_heatmaps(torch.zeros(kp_shape), SIZE, SIGMA, visibility=torch.ones(vis_shape))


@pytest.mark.parametrize("shape", [(4,), (6,), (1, 5), (5, 1)])
def test_wrong_sigma_shape_raises(shape):
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(torch.zeros(2, 5, 2), SIZE, torch.ones(shape))


# --- invariants (property test) -----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    batch=st.integers(1, 3),
    keys=st.integers(1, 5),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    sigma=st.sampled_from([0.5, 1.0, 1.3, 2.0, 3.5]),
    truncate=st.sampled_from([1.0, 2.0, 3.0]),
    subpixel=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_invariants(batch, keys, size, sigma, truncate, subpixel, seed):
    h, w = size
    radius = truncate * sigma
    kp = around(batch, keys, size=size, radius=radius, seed=seed)
    vis = visibility_like(kp, seed=seed + 3)
    heatmaps, weights = gaussian_heatmaps(kp, size, sigma, visibility=vis, truncate=truncate, subpixel=subpixel)
    assert ((heatmaps >= 0) & (heatmaps <= 1)).all()
    assert ((weights == 0) | (weights == 1)).all()
    assert (heatmaps[weights == 0] == 0).all()
    assert (heatmaps.flatten(2).amax(-1)[weights == 1] > 0).all()  # a rendered window has a pixel on the map
    centre = torch.floor(kp + 0.5)
    on_map = (centre >= 0).all(-1) & (centre[..., 0] <= w - 1) & (centre[..., 1] <= h - 1) & (vis >= 0.5)
    assert (weights[on_map] == 1).all()
    if not subpixel:
        assert (heatmaps.flatten(2).amax(-1)[on_map] == 1.0).all()


def test_zero_instances_render_zero_maps_in_torch_and_ort():
    """(B, 0, K, 2): nothing to merge; zero maps and weight 0 (decision in the op's docstring), never -inf."""
    kp = torch.zeros(2, 0, 3, 2)
    heatmaps, weights = gaussian_heatmaps(kp, (5, 4), 1.0)
    assert heatmaps.shape == (2, 3, 5, 4) and weights.shape == (2, 3)
    assert not heatmaps.any() and not weights.any()

    class Instances(torch.nn.Module):
        def forward(self, keypoints):
            return gaussian_heatmaps(keypoints, (5, 4), 1.0)

    model = OrtModel(Instances(), (torch.rand(2, 2, 3, 2) * 4,), dynamic_shapes=({0: "B", 1: "I", 2: "K"},))
    ort_heatmaps, ort_weights = model(kp)
    assert ort_heatmaps.shape == (2, 3, 5, 4) and ort_weights.shape == (2, 3)
    assert torch.equal(ort_heatmaps, heatmaps) and torch.equal(ort_weights, weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("instances", [False, True])
@pytest.mark.parametrize("sigma", [0.8, 2.0, 3.7])
def test_table_path_equals_general_path(sigma, instances, dtype):
    """A Python-number sigma (table lookup) and the same sigma as a 0-d tensor (general path) agree bit for bit."""
    g = torch.Generator().manual_seed(70)
    shape = (3, 2, 9, 2) if instances else (3, 9, 2)
    kp = (torch.rand(*shape, generator=g, dtype=torch.float64) * 40 - 10).to(dtype)  # on, near and off a 14x11 map
    kp.view(-1, 2)[::7, 0] = float("nan")
    kp.view(-1, 2)[3::11, 1] = float("inf")
    vis = (torch.rand(shape[:-1], generator=g) > 0.2).to(dtype)
    number = gaussian_heatmaps(kp, (14, 11), sigma, visibility=vis)
    tensor = gaussian_heatmaps(kp, (14, 11), torch.tensor(sigma, dtype=dtype), visibility=vis)
    assert number[1].any() and not number[1].all()  # the sample mixes rendered and dropped keypoints
    for a, b in zip(number, tensor, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("flags", [torch.tensor([[0, 1, 2]]), torch.tensor([[False, True, True]])])
def test_integer_and_bool_visibility(flags):
    """COCO's integer flags (0 unlabeled, 1 occluded, 2 visible) and bools work as they are."""
    kp = torch.tensor([[[3.0, 3.0], [5.0, 4.0], [6.0, 2.0]]])
    _, weights = gaussian_heatmaps(kp, (8, 8), 1.0, visibility=flags)
    assert weights.tolist() == [[0.0, 1.0, 1.0]]
