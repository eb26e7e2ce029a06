"""gaussian_heatmaps against docs/spec.md: the classic MSRA/HRNet window copy, the float64 formula, mmpose's three
target generators (MSRA, UDP, DARK: numpy re-implementations below), bad input, ONNX.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank and last axis, non-float input, one kpx node per call) is tests/test_op_contract.py, for every op from its
registry record.
"""

from __future__ import annotations

import functools
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
from custom_ops.ops.gaussian_heatmaps import WINDOWS
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
    {"window": "mmpose", "visibility_weights": True},
    {"window": "full", "subpixel": True, "truncate": 2.5},
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
        assert attrs["window"].i == WINDOWS.index(options.get("window", "symmetric"))
        flags = (("subpixel", False), ("visibility_weights", False), ("normalized_coordinates", False))
        for flag, default in (*flags, ("align_corners", True)):
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
    window=st.sampled_from(WINDOWS),
    seed=st.integers(0, 2**16),
)
def test_invariants(batch, keys, size, sigma, truncate, subpixel, window, seed):
    h, w = size
    radius = truncate * sigma
    kp = around(batch, keys, size=size, radius=radius, seed=seed)
    vis = visibility_like(kp, seed=seed + 3)
    options = {"truncate": truncate, "subpixel": subpixel, "window": window}
    heatmaps, weights = gaussian_heatmaps(kp, size, sigma, visibility=vis, **options)
    assert ((heatmaps >= 0) & (heatmaps <= 1)).all()
    assert ((weights == 0) | (weights == 1)).all()
    assert (heatmaps[weights == 0] == 0).all()
    assert (heatmaps.flatten(2).amax(-1)[weights == 1] > 0).all()  # a rendered window has a pixel on the map
    centre = torch.floor(kp + 0.5)
    on_map = (centre >= 0).all(-1) & (centre[..., 0] <= w - 1) & (centre[..., 1] <= h - 1) & (vis >= 0.5)
    assert (weights[on_map] == 1).all()
    if not subpixel:
        assert (heatmaps.flatten(2).amax(-1)[on_map] == 1.0).all()
    # visibility as the weight: the same maps; a rendered keypoint weighs its visibility, any other 0 or its own
    by_visibility = gaussian_heatmaps(kp, size, sigma, visibility=vis, visibility_weights=True, **options)
    torch.testing.assert_close(by_visibility[0], heatmaps, rtol=0, atol=0)
    assert (by_visibility[1][weights == 1] == vis[weights == 1]).all()
    assert ((by_visibility[1] == 0) | (by_visibility[1] == vis)).all()


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


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("instances", [False, True])
@pytest.mark.parametrize("sigma", [0.8, 1.5, 2.0, 3.7])
def test_table_path_equals_general_path(sigma, instances, dtype, window):
    """A Python-number sigma (table lookup) and the same sigma as a 0-d tensor (general path) agree bit for bit."""
    g = torch.Generator().manual_seed(70)
    shape = (3, 2, 9, 2) if instances else (3, 9, 2)
    kp = (torch.rand(*shape, generator=g, dtype=torch.float64) * 40 - 10).to(dtype)  # on, near and off a 14x11 map
    kp.view(-1, 2)[::7, 0] = float("nan")
    kp.view(-1, 2)[3::11, 1] = float("inf")
    vis = (torch.rand(shape[:-1], generator=g) > 0.2).to(dtype)
    number = gaussian_heatmaps(kp, (14, 11), sigma, visibility=vis, window=window)
    tensor = gaussian_heatmaps(kp, (14, 11), torch.tensor(sigma, dtype=dtype), visibility=vis, window=window)
    assert number[1].any() and not number[1].all()  # the sample mixes rendered and dropped keypoints
    for a, b in zip(number, tensor, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("instances", [False, True])
def test_table_path_without_options_equals_general_path(window, dtype, instances):
    """The fast path as the benchmark calls it (a number sigma, no visibility, no other option) and the general
    path (the same sigma as a 0-d tensor) agree bit for bit: sizes with a 1-pixel axis, windows from 0 px to
    larger than the map, keypoints on, near and far off the map, NaN, +-inf and huge values."""
    g = torch.Generator().manual_seed(71)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    for (h, w), sigma, truncate in [
        ((14, 11), 2.0, 3.0),
        ((64, 48), 2.0, 3.0),
        ((1, 7), 0.8, 3.0),
        ((5, 1), 3.7, 4.5),
        ((3, 3), 0.1, 3.0),
        ((9, 6), 6.0, 1.0),
        ((4, 5), 1.5, 4.5),
    ]:
        shape = (4, 2, 12, 2) if instances else (4, 12, 2)
        kp = torch.rand(*shape, generator=g, dtype=torch.float64) * torch.tensor([w + 8.0, h + 8.0]) - 4
        kp = kp.to(dtype)
        kp.view(-1, 2)[::7, 0] = float("nan")
        kp.view(-1, 2)[3::11, 1] = float("inf")
        kp.view(-1, 2)[5::13, 0] = float("-inf")
        kp.view(-1, 2)[6::17, 1] = 6e4
        # and every integer centre from beyond the left/top reach of the window to beyond the right/bottom one
        reach = math.ceil(truncate * sigma) + 3
        sweep = torch.arange(-reach, max(h, w) + reach, dtype=torch.float64)
        middle = torch.full_like(sweep, (w - 1) / 2)
        lines = torch.stack([torch.stack([sweep, middle.new_full(sweep.shape, (h - 1) / 2)], -1),
                             torch.stack([middle, sweep], -1)])  # fmt: skip
        lines = lines.unsqueeze(1).expand(2, 2, *sweep.shape, 2) if instances else lines
        options = {"truncate": truncate, "window": window}
        for points in (kp, lines.to(dtype)):
            number = gaussian_heatmaps(points, (h, w), sigma, **options)
            tensor = gaussian_heatmaps(points, (h, w), torch.tensor(sigma, dtype=compute), **options)
            assert number[1].any() and not number[1].all(), (h, w)  # rendered and dropped keypoints in every case
            for a, b in zip(number, tensor, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m, h=h, w=w: f"{h}x{w}: {m}")


@pytest.mark.parametrize("flags", [torch.tensor([[0, 1, 2]]), torch.tensor([[False, True, True]])])
def test_integer_and_bool_visibility(flags):
    """COCO's integer flags (0 unlabeled, 1 occluded, 2 visible) and bools work as they are."""
    kp = torch.tensor([[[3.0, 3.0], [5.0, 4.0], [6.0, 2.0]]])
    _, weights = gaussian_heatmaps(kp, (8, 8), 1.0, visibility=flags)
    assert weights.tolist() == [[0.0, 1.0, 1.0]]


# --- mmpose's three target generators: numpy oracles ---------------------------------------------------------------
# Re-written from their documented behaviour (mmpose/codecs/utils/gaussian_heatmap.py), for one sample: keypoints
# (N, K, 2), visibility (N, K) -> heatmaps (K, H, W) merged by max over the N instances and weights (N, K), a copy of
# the visibility set to 0 where the Gaussian misses the map. A keypoint with visibility < 0.5 is skipped (its weight
# stays the visibility). The radius is 3 sigma.


def _mmpose_axis(p: float, r: float, n: int, faithful: bool) -> tuple[int, int, int, float]:
    """One axis of the MSRA/UDP window copy: (centre, first pixel, end pixel (exclusive), patch index of the peak).

    ``faithful``: mmpose's integer arithmetic, where ``int()`` truncates toward zero (the centre of a coordinate below
    -0.5, the start ``c - r`` of a window within r of the left/top edge, the end ``c + r + 1`` before the map), and
    the patch's peak index ``(2r + 1) // 2``. Otherwise the rules kpx documents: ``floor``, the window ``c - ceil(r)
    .. c + floor(r)``, the peak at ``c``."""
    if faithful:
        c = int(p + 0.5)
        return c, int(c - r), int(c + r + 1), (2 * r + 1) // 2
    c = math.floor(p + 0.5)
    return c, c - math.ceil(r), c + math.floor(r) + 1, float(math.ceil(r))


def mmpose_msra(keypoints, visible, size, sigma, *, udp=False, faithful=False, dtype=np.float64):
    """``generate_gaussian_heatmaps`` (``udp=False``) and ``generate_udp_gaussian_heatmaps`` (``udp=True``).

    The (2r+1)-wide patch starts at the window's first pixel; its Gaussian peaks at the patch's peak index, moved by
    ``p - c`` with UDP. A keypoint is dropped when its window starts at or after the map's end or, ``faithful``, ends
    (exclusive bound) below 0; otherwise (kpx's rule) when it ends at or below 0."""
    h, w = size
    r = 3.0 * sigma
    heatmaps = np.zeros((keypoints.shape[1], h, w), dtype=dtype)
    weights = visible.astype(np.float64).copy()
    for n, k in itertools.product(*map(range, visible.shape)):
        if visible[n, k] < 0.5:
            continue
        x, y = keypoints[n, k]
        cx, x0, x1, px = _mmpose_axis(x, r, w, faithful)
        cy, y0, y1, py = _mmpose_axis(y, r, h, faithful)
        if x0 >= w or y0 >= h or min(x1, y1) < (0 if faithful else 1):
            weights[n, k] = 0.0
            continue
        if udp:
            px, py = px + (x - cx), py + (y - cy)
        cols = np.arange(max(0, x0), min(w, x1))
        rows = np.arange(max(0, y0), min(h, y1))[:, None]
        di, dj = (cols - x0 - px).astype(dtype), (rows - y0 - py).astype(dtype)
        patch = np.exp(-(di**2 + dj**2) / dtype(2 * sigma**2)).astype(dtype)
        region = heatmaps[k, rows, cols]
        heatmaps[k, rows, cols] = np.maximum(region, patch)
    return heatmaps, weights


def mmpose_dark(keypoints, visible, size, sigma, *, dtype=np.float64):
    """``generate_unbiased_gaussian_heatmaps``: the Gaussian at ``p`` itself over the whole map, dropped when the
    span ``[p - r, p + r + 1)`` starts at or after the map's end or ends below 0 (float tests, no rounding)."""
    h, w = size
    r = 3.0 * sigma
    cols = np.arange(w, dtype=dtype)
    rows = np.arange(h, dtype=dtype)[:, None]
    heatmaps = np.zeros((keypoints.shape[1], h, w), dtype=dtype)
    weights = visible.astype(np.float64).copy()
    for n, k in itertools.product(*map(range, visible.shape)):
        if visible[n, k] < 0.5:
            continue
        x, y = keypoints[n, k].astype(dtype)
        if x - r >= w or y - r >= h or x + r + 1 < 0 or y + r + 1 < 0:
            weights[n, k] = 0.0
            continue
        heatmaps[k] = np.maximum(heatmaps[k], np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / dtype(2 * sigma**2)))
    return heatmaps, weights


#: mmpose generator -> (numpy oracle, the kpx options that reproduce it)
GENERATORS = {
    "msra": (mmpose_msra, {"window": "mmpose", "visibility_weights": True}),
    "udp": (
        functools.partial(mmpose_msra, udp=True),
        {"window": "mmpose", "subpixel": True, "visibility_weights": True},
    ),
    "dark": (mmpose_dark, {"window": "full", "subpixel": True, "visibility_weights": True}),
}
MMPOSE_SIGMAS = (1.5, 2.0, 2.5, 3.0)  # 1.5 and 2.5: mmpose's face configs, radius 4.5 and 7.5 (not whole)
MMPOSE_SIZES = ((64, 48), (256, 192))  # (H, W) of the 256x192 input's heatmap and of a 256x192 heatmap
MMPOSE_KEYS = (17, 68, 98, 133)  # COCO body, 300W face, WFLW face, COCO-WholeBody


def mmpose_targets(generator, keypoints, visibility, size, sigma, keypoint_weights=None, **options):
    """The oracle over a batch: ``keypoints (B, K, 2)`` (one instance each) or ``(B, N, K, 2)``; weights max over N
    (kpx merges instances), times ``keypoint_weights`` (mmpose's ``dataset_keypoint_weights``)."""
    render = GENERATORS[generator][0]
    kp = keypoints.double().numpy()
    kp = kp if kp.ndim == 4 else kp[:, None]
    vis = visibility.double().numpy().reshape(kp.shape[:3])
    outs = [render(kp[b], vis[b], size, sigma, **options) for b in range(kp.shape[0])]
    maps = torch.from_numpy(np.stack([m for m, _ in outs])).double()
    weights = torch.from_numpy(np.stack([w.max(0) for _, w in outs]))
    if keypoint_weights is not None:
        weights = weights * keypoint_weights.double()
    return maps, weights


@functools.cache
def mmpose_case(generator: str, keys: int, size: tuple[int, int], sigma: float, instances: int = 0):
    """Inputs (keypoints on, near and off the map: within 3 sigma of it or anywhere within 9 sigma; visibility in
    [0, 1] with 0, 0.5 and 1 sprinkled in; dataset weights) and the float64 oracle's targets."""
    seed = keys + size[0] + int(10 * sigma) + instances
    kp = around(2, *((instances,) if instances else ()), keys, size=size, radius=3 * sigma, seed=seed)
    vis = visibility_like(kp, seed=seed + 1)
    vis.view(-1)[1::7] = 0.0
    vis.view(-1)[2::7] = 1.0
    dataset = uniform(keys, low=0.5, high=2.0, seed=seed + 2)
    return kp, vis, dataset, mmpose_targets(generator, kp, vis, size, sigma, dataset)


def assert_mmpose(out, expected):
    """Maps within atol 1e-6 (float32 exp of each axis, multiplied, vs float64 exp of the sum: a few float32 ulps);
    weights within one float32 rounding of the float64 product visibility x dataset weight (rtol 2^-23 ~ 1.2e-7)."""
    heatmaps, weights = out
    assert not heatmaps.isnan().any() and not weights.isnan().any()
    torch.testing.assert_close(heatmaps.double(), expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(weights.double(), expected[1], rtol=2**-23, atol=0)


# --- mmpose's generators: torch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", MMPOSE_SIGMAS)
@pytest.mark.parametrize("size", MMPOSE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("keys", MMPOSE_KEYS)
@pytest.mark.parametrize("generator", GENERATORS)
def test_matches_mmpose_generators(generator, keys, size, sigma):
    kp, vis, dataset, expected = mmpose_case(generator, keys, size, sigma)
    assert_mixed(expected[1] > 0)
    options = GENERATORS[generator][1]
    assert_mmpose(gaussian_heatmaps(kp, size, sigma, visibility=vis, keypoint_weights=dataset, **options), expected)


@pytest.mark.parametrize("sigma", [1.5, 2.0])
@pytest.mark.parametrize("generator", GENERATORS)
def test_matches_mmpose_generators_with_instances(generator, sigma):
    """Several instances per sample (mmpose's N, bottom-up): maps merged by max, weights by max over N."""
    size = MMPOSE_SIZES[0]
    kp, vis, dataset, expected = mmpose_case(generator, 17, size, sigma, instances=3)
    options = GENERATORS[generator][1]
    assert_mmpose(gaussian_heatmaps(kp, size, sigma, visibility=vis, keypoint_weights=dataset, **options), expected)


@pytest.mark.parametrize("sigma", [1.5, 2.5])
def test_per_keypoint_sigma_tensor_matches_mmpose(sigma):
    """The general path (a tensor sigma) on the mmpose window as well, not only the table."""
    size = MMPOSE_SIZES[0]
    kp, vis, dataset, expected = mmpose_case("msra", 68, size, sigma)
    options = {"visibility": vis, "keypoint_weights": dataset, "window": "mmpose", "visibility_weights": True}
    out = gaussian_heatmaps(kp, size, torch.full((68,), sigma), **options)
    assert_mmpose(out, expected)


@pytest.mark.parametrize("generator", ["msra", "udp"])
@pytest.mark.parametrize("sigma", MMPOSE_SIGMAS)
def test_mmpose_as_written_differs_only_where_documented(generator, sigma):
    """mmpose's own integer arithmetic (``faithful``) against kpx: a keypoint differs only where the op's docstring
    says it does: its centre rounds differently (coordinate < -0.5), its window starts within r of the left/top edge
    with r not whole (mmpose then shifts the whole Gaussian 1 px right/down), or its window ends before the map
    (mmpose keeps the weight of an empty map)."""
    size = MMPOSE_SIZES[0]
    kp, vis, dataset, expected = mmpose_case(generator, 133, size, sigma)
    as_written = mmpose_targets(generator, kp, vis, size, sigma, dataset, faithful=True)
    r = 3 * sigma
    c = torch.floor(kp.double() + 0.5)
    extent = torch.tensor([size[1], size[0]], dtype=torch.float64)
    rounding = (kp < -0.5).any(-1)
    edge_shift = ((c >= 0) & (c < r) & (c < extent)).any(-1) & (r != math.floor(r))
    ends_before = ((c + math.floor(r) + 1 <= 0) & (torch.trunc(c + r + 1) >= 0)).any(-1)  # kpx drops, mmpose keeps
    documented = (rounding | edge_shift | ends_before) & (vis >= 0.5)
    same = ((as_written[0] - expected[0]).abs().flatten(2).amax(-1) < 1e-12) & (as_written[1] == expected[1])
    assert (same | documented).all()
    if r != math.floor(r):  # the edge shift happens in this sample, and every shifted map really differs
        assert edge_shift.any() and not same[edge_shift & (vis >= 0.5) & (expected[1] > 0)].any()
    for b, k in (edge_shift & (vis >= 0.5) & (expected[1] > 0) & ~rounding).nonzero().tolist():
        row, col = divmod(int(expected[0][b, k].argmax()), size[1])
        row_m, col_m = divmod(int(as_written[0][b, k].argmax()), size[1])
        assert (row_m - row, col_m - col) in ((0, 1), (1, 0), (1, 1))  # the 1-px shift right and/or down


def test_mmpose_peak_for_radius_fraction_below_half():
    """sigma 1.1 (r = 3.3): mmpose's patch peaks at index floor(r + 0.5) = 3 while its window starts ceil(r) = 4
    before c, so its peak lands 1 px left/up of the keypoint everywhere; kpx keeps it at c (docstring)."""
    kp = torch.tensor([[[20.0, 30.0]]])
    vis = torch.ones(1, 1)
    heatmaps, _ = gaussian_heatmaps(kp, (64, 48), 1.1, visibility=vis, window="mmpose")
    as_written, _ = mmpose_targets("msra", kp, vis, (64, 48), 1.1, faithful=True)
    assert divmod(int(heatmaps[0, 0].argmax()), 48) == (30, 20)
    assert divmod(int(as_written[0, 0].argmax()), 48) == (29, 19)
    # the window itself is mmpose's: columns 16 .. 23 (c - 4 .. c + 3)
    assert heatmaps[0, 0, 30].nonzero().flatten().tolist() == list(range(16, 24))
    assert as_written[0, 0, 29].nonzero().flatten().tolist() == list(range(16, 24))


@pytest.mark.parametrize("sigma", MMPOSE_SIGMAS)
def test_mmpose_window_against_symmetric(sigma):
    """The same maps for a whole radius (sigma 2, 3); one more column on the left and one more row on the top when
    it is not (sigma 1.5, 2.5), with the same values elsewhere."""
    kp = around(2, 17, size=(64, 48), radius=3 * sigma, seed=91)
    vis = visibility_like(kp, seed=92)
    symmetric = gaussian_heatmaps(kp, (64, 48), sigma, visibility=vis)
    mmpose = gaussian_heatmaps(kp, (64, 48), sigma, visibility=vis, window="mmpose")
    r = 3 * sigma
    if r == math.floor(r):
        for got, want in zip(mmpose, symmetric, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        return
    extra = mmpose[0] != symmetric[0]
    assert (symmetric[0][extra] == 0).all()
    c = torch.floor(kp + 0.5).long()
    assert extra.any()
    for b, k in (mmpose[1] == 1).nonzero().tolist():
        first_col, first_row = int(c[b, k, 0]) - math.ceil(r), int(c[b, k, 1]) - math.ceil(r)
        for row, col in extra[b, k].nonzero().tolist():
            assert row == first_row or col == first_col
    # a keypoint whose only pixel on the map is the extra column: dropped by "symmetric", rendered by "mmpose"
    edge = torch.tensor([[[48.0 - 1 + math.ceil(r), 30.0]]])
    assert gaussian_heatmaps(edge, (64, 48), sigma)[1].item() == 0
    heatmaps, weights = gaussian_heatmaps(edge, (64, 48), sigma, window="mmpose")
    assert weights.item() == 1 and heatmaps[0, 0, :, :-1].eq(0).all() and heatmaps[0, 0, 30, -1] > 0


# --- mmpose's generators: ONNX Runtime, function and inline --------------------------------------------------------


class Mmpose(nn.Module):
    """(keypoints, visibility, sigma, keypoint_weights) -> (heatmaps, weights) with one generator's options."""

    def __init__(self, size, **options):
        super().__init__()
        self.size, self.options = size, options

    def forward(self, keypoints, visibility, sigma, keypoint_weights):
        return gaussian_heatmaps(keypoints, self.size, sigma, visibility=visibility, keypoint_weights=keypoint_weights,
                                 **self.options)  # fmt: skip


@functools.cache
def ort_mmpose(generator: str, size: tuple[int, int], emit: str) -> OrtModel:
    """One export per generator, size and emit mode: sigma a 0-d input, B and K dynamic."""
    kp = around(2, 5, size=size)
    example = (kp, torch.ones(2, 5), torch.tensor(2.0), torch.ones(5))
    dynamic = (*DYNAMIC, None, {0: "K"})
    return OrtModel(Mmpose(size, **GENERATORS[generator][1]), example, dynamic_shapes=dynamic, emit=emit)


@pytest.mark.parametrize("emit", ["function", "inline"])
@pytest.mark.parametrize("size", MMPOSE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("generator", GENERATORS)
def test_ort_matches_mmpose_generators(generator, size, emit):
    model = ort_mmpose(generator, size, emit)
    for keys, sigma in itertools.product(MMPOSE_KEYS, MMPOSE_SIGMAS):
        kp, vis, dataset, expected = mmpose_case(generator, keys, size, sigma)
        assert_mmpose(model(kp, vis, torch.tensor(sigma), dataset), expected)


@pytest.mark.parametrize("emit", ["function", "inline"])
def test_dark_validity_band_on_every_backend(emit):
    """``window="full"`` keeps ``-(r + 1) <= p < n + r`` (mmpose's DARK test), per axis, exactly at its ends."""
    size, sigma = (16, 12), 1.5  # r = 4.5: kept for -5.5 <= x < 16.5 and -5.5 <= y < 20.5
    below = float(np.nextafter(np.float32(-5.5), np.float32(-np.inf)))
    above = float(np.nextafter(np.float32(16.5), np.float32(0)))
    xs = [-5.5, below, above, 16.5, 5.0, 5.0, 5.0, 5.0]
    ys = [3.0, 3.0, 3.0, 3.0, -5.5, below, float(np.nextafter(np.float32(20.5), np.float32(0))), 20.5]
    kp = torch.tensor([list(zip(xs, ys))])
    vis = torch.ones(1, 8)
    expected = mmpose_targets("dark", kp, vis, size, sigma)
    assert expected[1].tolist() == [[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]]
    options = GENERATORS["dark"][1]
    ort = ort_mmpose("dark", size, emit)
    for out in (
        gaussian_heatmaps(kp, size, sigma, visibility=vis, **options),
        ort(kp, vis, torch.tensor(sigma), torch.ones(8)),
    ):
        assert_mmpose(out, expected)
        assert (out[0][0, [0, 2, 4, 6]].flatten(1).amax(-1) > 0).all()  # the full Gaussian reaches the map


# --- visibility as the weight, dataset keypoint weights --------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS)
def test_visibility_weights_follow_mmpose(run_options, window):
    """mmpose copies the visibility into the weight: a keypoint below 0.5 is not rendered and keeps its visibility as
    the weight, wherever it is (also off the map or not finite); one >= 0.5 that is not rendered (off the map, not
    finite) weighs 0; a visibility that is not > 0 (negative, NaN) weighs 0 (kpx never outputs NaN or a negative
    weight)."""
    kp = torch.tensor([[[5.0, 5.0], [6.0, 4.0], [7.0, 3.0], [-40.0, 5.0], [math.nan, 2.0], [3.0, 3.0], [4.0, 8.0]]])
    kp = torch.cat([kp, torch.tensor([[[-40.0, 5.0], [1.0, math.inf]]])], 1)
    vis = torch.tensor([[0.7, 0.3, 0.5, 0.9, 1.0, -0.5, math.nan, 0.2, 0.4]])
    heatmaps, weights = run_options(kp, vis, window=window, visibility_weights=True)
    expected = torch.tensor([[0.7, 0.3, 0.5, 0.0, 0.0, 0.0, 0.0, 0.2, 0.4]])
    torch.testing.assert_close(weights, expected, rtol=0, atol=0)
    rendered = heatmaps.flatten(2).amax(-1) > 0
    assert rendered.tolist() == [[True, False, True, False, False, False, False, False, False]]
    binary = run_options(kp, vis, window=window)
    torch.testing.assert_close(heatmaps, binary[0], rtol=0, atol=0)
    assert binary[1].tolist() == [[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]


def test_visibility_weights_of_bool_and_integer_visibility():
    """Bools and 0/1 give the 0/1 weights of the default mode; COCO's flag 2 would weigh 2 (mmpose's datasets pass
    min(1, v)); the default mode ignores the visibility's value above 0.5."""
    kp = torch.tensor([[[3.0, 3.0], [5.0, 4.0], [6.0, 2.0]]])
    for flags in (torch.tensor([[False, True, True]]), torch.tensor([[0, 1, 1]]), torch.tensor([[0.0, 1.0, 1.0]])):
        assert gaussian_heatmaps(kp, (8, 8), 1.0, visibility=flags, visibility_weights=True)[1].tolist() == [[0, 1, 1]]
    coco = torch.tensor([[0, 1, 2]])
    assert gaussian_heatmaps(kp, (8, 8), 1.0, visibility=coco, visibility_weights=True)[1].tolist() == [[0, 1, 2]]
    assert gaussian_heatmaps(kp, (8, 8), 1.0, visibility=coco)[1].tolist() == [[0, 1, 1]]
    floats = torch.tensor([[0.2, 0.7, 0.9]])
    assert gaussian_heatmaps(kp, (8, 8), 1.0, visibility=floats)[1].tolist() == [[0, 1, 1]]


def test_visibility_weights_without_visibility_are_the_default_weights():
    kp = around(2, 9, seed=121)
    by_visibility, default = (
        gaussian_heatmaps(kp, SIZE, SIGMA, visibility_weights=True),
        gaussian_heatmaps(kp, SIZE, SIGMA),
    )
    for got, want in zip(by_visibility, default, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_visibility_weights_merge_instances_by_max():
    kp = torch.tensor([[[[5.0, 5.0], [-50.0, 5.0]], [[6.0, 6.0], [4.0, 4.0]], [[-50.0, 2.0], [3.0, 3.0]]]])  # B, I, K
    vis = torch.tensor([[[0.4, 0.9], [0.8, 0.2], [1.0, 0.6]]])
    heatmaps, weights = gaussian_heatmaps(kp, SIZE, 1.0, visibility=vis, visibility_weights=True)
    torch.testing.assert_close(weights, torch.tensor([[0.8, 0.6]]), rtol=0, atol=0)  # 1.0 and 0.9 are off the map
    torch.testing.assert_close(heatmaps, gaussian_heatmaps(kp, SIZE, 1.0, visibility=vis)[0], rtol=0, atol=0)


@pytest.mark.parametrize("visibility_weights", [False, True])
def test_keypoint_weights_multiply_the_weights_only(run_options, visibility_weights):
    kp = around(3, 4, seed=122)
    vis = visibility_like(kp, seed=123)
    dataset = torch.tensor([1.0, 1.2, 1.5, 0.5])
    plain = run_options(kp, vis, visibility_weights=visibility_weights)
    out = run_options(kp, vis, keypoint_weights=dataset, visibility_weights=visibility_weights)
    assert_mixed(plain[0].flatten(2).amax(-1) > 0)
    torch.testing.assert_close(out[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1], plain[1] * dataset, rtol=0, atol=0)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run_options(request):
    """``run_options(keypoints, visibility, **options)`` at SIZE, SIGMA, eagerly or on ORT (one export per options)."""
    if request.param == "torch":
        return lambda kp, vis, keypoint_weights=None, **o: Mmpose(SIZE, **o)(kp, vis, SIGMA, keypoint_weights)
    sessions = {}

    def run(kp, vis, keypoint_weights=None, **options):
        key = (tuple(sorted(options.items())), keypoint_weights is None)
        if key not in sessions:
            example = (around(2, 5), torch.ones(2, 5), *(() if keypoint_weights is None else (torch.ones(5),)))
            dynamic = (*DYNAMIC, *(() if keypoint_weights is None else ({0: "K"},)))
            module = Render(**options) if keypoint_weights is None else Weighted(**options)
            sessions[key] = OrtModel(module, example, dynamic_shapes=dynamic)
        return sessions[key](kp, vis, *(() if keypoint_weights is None else (keypoint_weights,)))

    return run


class Weighted(Render):
    """(keypoints, visibility, keypoint_weights) -> (heatmaps, weights) at SIZE, SIGMA."""

    def forward(self, keypoints, visibility, keypoint_weights):
        return gaussian_heatmaps(keypoints, self.size, self.sigma, visibility=visibility,
                                 keypoint_weights=keypoint_weights, **self.options)  # fmt: skip


def test_module_keypoint_weights_are_a_buffer():
    dataset = torch.tensor([1.0, 2.0, 0.5])
    module = GaussianHeatmaps(SIZE, SIGMA, keypoint_weights=dataset, window="mmpose", visibility_weights=True)
    assert "keypoint_weights" in dict(module.named_buffers()) and "keypoint_weights" not in module.state_dict()
    kp = around(2, 3, seed=124)
    vis = visibility_like(kp, seed=125)
    want = gaussian_heatmaps(kp, SIZE, SIGMA, visibility=vis, keypoint_weights=dataset, window="mmpose",
                             visibility_weights=True)  # fmt: skip
    for got, w in zip(module.double()(kp.double(), vis), want, strict=True):
        torch.testing.assert_close(got, w.double(), rtol=0, atol=1e-6)  # float32 vs float64 inside


# --- new options: exceptions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["Symmetric", "mmpose_exact", "", None, 1])
def test_bad_window_raises(window):
    with pytest.raises(ValueError, match="window must be 'symmetric'"):
        gaussian_heatmaps(torch.zeros(1, 3, 2), SIZE, SIGMA, window=window)
    with pytest.raises(ValueError, match="window"):
        GaussianHeatmaps(SIZE, SIGMA, window=window)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (torch.ones(4), r"keypoint_weights must have shape \(K,\) = \(3,\)"),
        (torch.ones(1, 3), r"keypoint_weights must have shape \(K,\) = \(3,\)"),
        (torch.ones(3, dtype=torch.int64), "keypoint_weights must be a floating tensor"),
        ([1.0, 1.0, 1.0], "keypoint_weights must be a torch.Tensor"),
    ],
)
def test_bad_keypoint_weights_raise(value, match):
    with pytest.raises(ValueError, match=match):
        gaussian_heatmaps(torch.zeros(2, 3, 2), SIZE, SIGMA, keypoint_weights=value)
