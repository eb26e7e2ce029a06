"""simcc_targets against docs/spec.md: mmpose's SimCCLabel(smoothing_type="gaussian") in numpy, bad input, ONNX.

The oracle is a numpy loop over keypoints written here from mmpose's ``SimCCLabel._generate_gaussian`` (mmpose
``main`` 759b39c): centres ``np.around(keypoints * ratio)``, full-axis rows ``exp(-(i - mu)^2 / (2 sigma^2))``
in float64, the 3-sigma rule ``left >= L or right < 0`` with ``right = mu + 3 sigma + 1``, and ``normalize``
dividing by ``sigma * sqrt(2 pi)`` per axis. Where kpx decided otherwise (weights 1/0 instead of a copy of the
visibility, NaN visibility and non-finite coordinates dropped, subnormal results flushed) the oracle follows the
op's docstring and a test names the decision.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank and last axis, one kpx node per call, the export matrix, fp16, OpenVINO and .ort) is in the registry-driven
tests under tests/.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from custom_ops import SimCCTargets, simcc_targets
from custom_ops.ops.simcc_targets import label_lengths
from export_tools import kpx_nodes
from export_tools.exporter import finalize, trace

from ._ort import OrtModel

#: RTMPose configs: (input_size (W, H), sigma (sx, sy) in bins), split_ratio 2.0
CONFIGS = {"192x256": ((192, 256), (4.9, 5.66)), "288x384": ((288, 384), (6.0, 6.93))}
RATIO = 2.0
OPTIONS = [{"normalize": n, "subpixel": s} for n in (False, True) for s in (False, True)]
DYNAMIC = ({0: "B", 1: "K"}, {0: "B", 1: "K"})  # keypoints, visibility
BACKENDS = ("torch", "ort-function", "ort-inline")
FP16 = torch.finfo(torch.float16)


# --- the oracle: mmpose's gaussian SimCC encoding, one keypoint at a time, float64 ----------------------------------


def oracle(keypoints, input_size, sigma, visibility=None, *, split_ratio=RATIO, normalize=False, subpixel=False):
    """``(target_x, target_y, weights)`` as float64 tensors, from a per-keypoint loop.

    mmpose multiplies its float32 keypoints by the ratio in float32 (numpy keeps the array's dtype), rounds half
    to even (``np.around``) and computes the rows in float64 (``x - mu`` with an int64 ``mu``).
    """
    batch, keys = keypoints.shape[:2]
    vis = np.ones((batch, keys)) if visibility is None else visibility.double().numpy()
    sx, sy = (sigma, sigma) if np.isscalar(sigma) else sigma
    w, h = input_size
    lx, ly = int(np.around(w * split_ratio)), int(np.around(h * split_ratio))
    target_x, target_y, weights = np.zeros((batch, keys, lx)), np.zeros((batch, keys, ly)), np.zeros((batch, keys))
    xs, ys = np.arange(lx, dtype=np.float64), np.arange(ly, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        bins = keypoints.float().numpy() * np.float32(split_ratio)  # float32, as numpy does for mmpose's arrays
    for b, k in itertools.product(range(batch), range(keys)):
        if not vis[b, k] >= 0.5:  # mmpose: `< 0.5` skips; NaN is not visible (kpx decision)
            continue
        px, py = float(bins[b, k, 0]), float(bins[b, k, 1])
        if not (math.isfinite(px) and math.isfinite(py)):  # mmpose: int64(NaN/inf) is INT_MIN on x86: dropped
            continue
        mu_x, mu_y = float(np.around(px)), float(np.around(py))  # half to even
        left, top = mu_x - 3 * sx, mu_y - 3 * sy
        right, bottom = mu_x + 3 * sx + 1, mu_y + 3 * sy + 1
        if left >= lx or top >= ly or right < 0 or bottom < 0:
            continue
        cx, cy = (px, py) if subpixel else (mu_x, mu_y)
        target_x[b, k] = np.exp(-((xs - cx) ** 2) / (2 * sx**2))
        target_y[b, k] = np.exp(-((ys - cy) ** 2) / (2 * sy**2))
        weights[b, k] = 1.0
    if normalize:
        target_x /= sx * np.sqrt(2 * np.pi)
        target_y /= sy * np.sqrt(2 * np.pi)
    return torch.from_numpy(target_x), torch.from_numpy(target_y), torch.from_numpy(weights)


# --- inputs and assertions -------------------------------------------------------------------------------------------


def make_keypoints(batch: int, keys: int, input_size, seed: int = 0) -> torch.Tensor:
    """Keypoints in input pixels: 80% within 12 px of the input (on it, or off it by less than the 3-sigma window),
    20% anywhere in 4x the input (mostly dropped); NaN and inf sprinkled in."""
    w, h = input_size
    g = torch.Generator().manual_seed(seed)
    extent = torch.tensor([w, h], dtype=torch.float32)
    near = torch.rand(batch, keys, 2, generator=g) * (extent + 24) - 12
    far = torch.rand(batch, keys, 2, generator=g) * 4 * extent - 1.5 * extent
    pick = torch.rand(batch, keys, 1, generator=g) < 0.8
    kp = torch.where(pick, near, far)
    flat = kp.view(-1, 2)
    flat[5::23, 0] = math.nan
    flat[11::29, 1] = math.inf
    flat[17::31, 0] = -math.inf
    return kp


def make_visibility(batch: int, keys: int, seed: int = 0) -> torch.Tensor:
    """0/1 flags (mmpose's datasets: weights then equal mmpose's copy of them), 15% invisible, some exactly 0.5."""
    g = torch.Generator().manual_seed(seed + 1)
    vis = (torch.rand(batch, keys, generator=g) > 0.15).float()
    vis.view(-1)[3::37] = 0.5  # the threshold itself is visible
    return vis


def assert_targets(out, expected, *, atol: float = 1e-6) -> None:
    """Rows within atol of the oracle (float32 exp of one rounded argument vs float64), weights exactly, no NaN."""
    for got in out:
        assert not got.isnan().any()
    for got, want in zip(out[:2], expected[:2], strict=True):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=atol)
    torch.testing.assert_close(out[2].double(), expected[2], rtol=0, atol=0)


def assert_mixed(weights: torch.Tensor) -> None:
    """The inputs exercise both rendered and dropped keypoints (guards the random inputs, not the op)."""
    if weights.numel():
        assert 0 < int(weights.sum()) < weights.numel()


# --- backends: torch and one trace per RTMPose config, finalized as function and inline ------------------------------


class Heads(nn.Module):
    """One simcc_targets call per entry of OPTIONS: (keypoints, visibility) -> 4 x (target_x, target_y, weights)."""

    def __init__(self, input_size, sigma, split_ratio=RATIO):
        super().__init__()
        self.input_size, self.sigma, self.split_ratio = input_size, sigma, split_ratio

    def forward(self, keypoints, visibility):
        outs = []
        for options in OPTIONS:
            outs += simcc_targets(
                keypoints, self.input_size, self.sigma, split_ratio=self.split_ratio, visibility=visibility, **options
            )
        return tuple(outs)


@functools.cache
def exported(config: str, emit: str, dtype: torch.dtype = torch.float32) -> OrtModel:
    """Heads of ``config`` traced once per dtype at B=2, K=17 (B and K dynamic), finalized in ``emit`` mode."""
    return OrtModel.from_proto(finalize(_traced(config, dtype), opset=18, emit=emit))


@functools.cache
def _traced(config: str, dtype: torch.dtype):
    size, sigma = CONFIGS[config]
    args = (make_keypoints(2, 17, size, seed=99), make_visibility(2, 17, seed=99))
    return trace(Heads(size, sigma), args, dynamic_shapes=DYNAMIC, dtype=dtype)


def runner(backend: str, config: str):
    """``run(keypoints, visibility)`` -> one ``(target_x, target_y, weights)`` per entry of OPTIONS."""
    size, sigma = CONFIGS[config]
    model = Heads(size, sigma) if backend == "torch" else exported(config, backend.removeprefix("ort-"))

    def run(keypoints, visibility):
        with torch.no_grad():
            flat = list(model(keypoints, visibility))
        return [tuple(flat[3 * i : 3 * i + 3]) for i in range(len(OPTIONS))]

    return run


@functools.cache
def expected(config: str, batch: int, keys: int, seed: int, options: tuple) -> tuple:
    size, sigma = CONFIGS[config]
    return oracle(make_keypoints(batch, keys, size, seed), size, sigma, make_visibility(batch, keys, seed),
                  **dict(options))  # fmt: skip


# --- exactness against mmpose, every backend, deployed sizes -------------------------------------------------------


@pytest.mark.parametrize("keys", [17, 133])
@pytest.mark.parametrize("batch", [0, 1, 32])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_mmpose_at_rtmpose_sizes(backend, config, batch, keys):
    """Default (integer-bin) and sub-bin centres, normalize on and off, invisible, off-axis and non-finite keypoints;
    the ONNX models were exported at B=2, K=17 and run here at other B and K."""
    size, _ = CONFIGS[config]
    seed = 7 * batch + keys
    kp, vis = make_keypoints(batch, keys, size, seed), make_visibility(batch, keys, seed)
    outs = runner(backend, config)(kp, vis)
    lx, ly = 2 * size[0], 2 * size[1]
    for options, out in zip(OPTIONS, outs, strict=True):
        want = expected(config, batch, keys, seed, tuple(options.items()))
        assert [tuple(t.shape) for t in out] == [(batch, keys, lx), (batch, keys, ly), (batch, keys)]
        assert all(t.dtype == torch.float32 for t in out)
        assert_mixed(want[2])
        assert_targets(out, want)


@pytest.mark.parametrize("emit", ["function", "inline"])
def test_float16_export_matches_mmpose_and_rounds_once(emit):
    """fp16 keypoints in, fp16 targets out; float32 inside, so the result is the float32 reference on the same
    (half) numbers rounded once: within one half ulp of it, and within fp16 resolution of mmpose."""
    size, sigma = CONFIGS["192x256"]
    model = exported("192x256", emit, torch.float16)
    for batch, keys in [(1, 17), (32, 133)]:
        kp = make_keypoints(batch, keys, size, seed=keys).half()
        vis = make_visibility(batch, keys, seed=keys).half()
        flat = model(kp, vis)
        reference = Heads(size, sigma)(kp.float(), vis.float())
        for i, options in enumerate(OPTIONS):
            got, ref = flat[3 * i : 3 * i + 3], reference[3 * i : 3 * i + 3]
            want = oracle(kp, size, sigma, vis, **options)
            assert_mixed(want[2])
            for g, r, w in zip(got, ref, want, strict=True):
                assert g.dtype == torch.float16 and not g.isnan().any()
                # half an ulp of rounding, doubled for last-bit differences of float32 exp between ORT and torch
                # that can flip it; one subnormal step (2^-24) near 0
                torch.testing.assert_close(g.float(), r, rtol=FP16.eps, atol=FP16.smallest_normal * FP16.eps)
                torch.testing.assert_close(g.double(), w, rtol=FP16.eps, atol=FP16.smallest_normal * FP16.eps)


def test_float16_in_torch_matches_mmpose():
    size, sigma = CONFIGS["288x384"]
    kp = make_keypoints(32, 133, size, seed=3).half()
    vis = make_visibility(32, 133, seed=3)
    for options in OPTIONS:
        out = simcc_targets(kp, size, sigma, visibility=vis, **options)
        want = oracle(kp, size, sigma, vis, **options)
        assert all(t.dtype == torch.float16 for t in out)
        for g, w in zip(out, want, strict=True):
            torch.testing.assert_close(g.double(), w, rtol=FP16.eps, atol=FP16.smallest_normal * FP16.eps)


def test_float64_matches_mmpose_tightly():
    size, sigma = CONFIGS["192x256"]
    kp = make_keypoints(4, 17, size, seed=5).double()
    vis = make_visibility(4, 17, seed=5).double()
    for options in OPTIONS:
        out = simcc_targets(kp, size, sigma, visibility=vis, **options)
        assert all(t.dtype == torch.float64 for t in out)
        # float64 inside: exp(-z^2) with z = d / (sigma sqrt 2) vs exp(-d^2 / (2 sigma^2)): a few ulps
        assert_targets(out, oracle(kp, size, sigma, vis, **options), atol=1e-13)


# --- the definition, point by point (every backend) -------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def run(request):
    """``run(keypoints, visibility)`` at 192x256, sigma (4.9, 5.66), on one backend."""
    return runner(request.param, "192x256")


def test_centres_round_half_to_even(run):
    """mmpose's np.around (and torch.round, ONNX Round): 2p = 20.5 -> 20, 21.5 -> 22, 0.5 -> 0, 2.5 -> 2, -0.5 -> 0.
    gaussian_heatmaps' floor(p + 0.5) would give 21, 22, 1, 3, 0."""
    kp = torch.tensor([[[10.25, 10.75], [0.25, 1.25], [-0.25, 3.0]]])
    (tx, ty, w), *_ = run(kp, torch.ones(1, 3))
    assert w.tolist() == [[1.0, 1.0, 1.0]]
    assert [int(tx[0, k].argmax()) for k in range(3)] == [20, 0, 0]
    assert [int(ty[0, k].argmax()) for k in range(3)] == [22, 2, 6]
    assert tx[0, 0, 20] == 1.0 and ty[0, 0, 22] == 1.0 and ty[0, 1, 2] == 1.0


def test_rows_are_full_axis_gaussians_in_bins(run):
    """Peak 1 at mu, exp(-k^2 / (2 sigma^2)) k bins away, sigma in bins (not scaled by split_ratio), and no 3-sigma
    cut: the row goes on far beyond it."""
    kp = torch.tensor([[[96.0, 128.0]]])  # mu = (192, 256)
    (tx, ty, w), _, (ntx, nty, _), _ = run(kp, torch.ones(1, 1))
    sx, sy = CONFIGS["192x256"][1]
    assert w.item() == 1 and tx[0, 0, 192] == 1.0 and ty[0, 0, 256] == 1.0
    for k in (1, 5, 15, 30):  # 30 bins is 6 sigma: beyond mmpose's 3-sigma rule, still drawn
        assert abs(float(tx[0, 0, 192 + k]) - math.exp(-(k**2) / (2 * sx**2))) <= 1e-6
        assert abs(float(ty[0, 0, 256 - k]) - math.exp(-(k**2) / (2 * sy**2))) <= 1e-6
    assert tx[0, 0, 192 + 30] > 0
    # normalize: each axis divided by its own sigma * sqrt(2 pi)
    assert abs(float(ntx[0, 0, 192]) - 1 / (sx * math.sqrt(2 * math.pi))) <= 1e-7
    assert abs(float(nty[0, 0, 256]) - 1 / (sy * math.sqrt(2 * math.pi))) <= 1e-7


def test_subpixel_centres_the_gaussian_at_p_times_ratio(run):
    kp = torch.tensor([[[20.1, 30.4]]])  # p * 2 = (40.2, 60.8); rounded bins (40, 61)
    outs = run(kp, torch.ones(1, 1))
    (tx, ty, _), (sub_x, sub_y, sub_w) = outs[0], outs[1]
    sx, sy = CONFIGS["192x256"][1]
    assert sub_w.item() == 1 and tx[0, 0, 40] == 1.0 and ty[0, 0, 61] == 1.0
    assert sub_x.max() < 1 and sub_y.max() < 1
    for i in (39, 40, 41, 45):
        assert abs(float(sub_x[0, 0, i]) - math.exp(-((i - 40.2) ** 2) / (2 * sx**2))) <= 1e-6
    for i in (60, 61, 62):
        assert abs(float(sub_y[0, 0, i]) - math.exp(-((i - 60.8) ** 2) / (2 * sy**2))) <= 1e-6


def test_mmpose_window_rule_at_its_edges(run):
    """Dropped iff mu - 3 sigma >= L or mu + 3 sigma + 1 < 0, per axis, in bins (3 sigma = 14.7 for x, 16.98 for y;
    L = 384, 512; mu = round(2 p)). A window that misses the axis by less than a bin is kept (its row is a tail)."""
    cases = [  # (x, y, kept)
        (-7.5, 50.0, True),  # mu_x = -15: window ends at -0.3, no bin >= 0 inside, but -15 + 15.7 >= 0
        (-8.0, 50.0, False),  # mu_x = -16: -16 + 15.7 < 0
        (199.0, 50.0, True),  # mu_x = 398: window starts at 383.3 > 383, but 398 - 14.7 < 384
        (199.5, 50.0, False),  # mu_x = 399: 384.3 >= 384
        (50.0, -8.5, True),  # mu_y = -17: -17 + 17.98 >= 0
        (50.0, -9.0, False),  # mu_y = -18
        (50.0, 264.0, True),  # mu_y = 528: 511.02 < 512
        (50.0, 264.5, False),  # mu_y = 529
        (-8.0, 264.5, False),  # both axes off
    ]
    kp = torch.tensor([[[x, y] for x, y, _ in cases]])
    out, *_ = run(kp, torch.ones(1, len(cases)))
    assert out[2][0].tolist() == [float(kept) for *_, kept in cases]
    sx, _ = CONFIGS["192x256"][1]
    assert abs(float(out[0][0, 0, 0]) - math.exp(-(15**2) / (2 * sx**2))) <= 1e-6  # the tail on bin 0
    assert_targets(out, oracle(kp, *CONFIGS["192x256"]))


def test_window_rule_with_an_integer_radius_is_asymmetric_by_one_bin():
    """sigma 6: 3 sigma = 18. Left: mu + 19 >= 0 keeps mu = -19 (window ends exactly at bin -1); right: mu - 18 < L
    drops mu = L + 18 (window starts exactly at bin L). mmpose's inclusive/exclusive bounds, kept as they are."""
    kp = torch.tensor([[[-9.5, 10.0], [-10.0, 10.0], [200.5, 10.0], [201.0, 10.0]]])  # mu_x -19, -20, 401, 402
    _, _, weights = simcc_targets(kp, (192, 256), 6.0)
    assert weights.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert_targets(simcc_targets(kp, (192, 256), 6.0), oracle(kp, (192, 256), 6.0))


def test_invisible_off_axis_and_non_finite_keypoints_are_dropped(run):
    nan, inf = math.nan, math.inf
    points = [[30.0, 40.0], [nan, 40.0], [30.0, nan], [inf, 40.0], [30.0, -inf], [1e30, 40.0], [30.0, -1e30]]
    points += [[3e38, 3e38], [-500.0, 40.0], [30.0, 900.0], [30.0, 40.0], [30.0, 40.0]]  # 3e38 * 2 overflows
    kp = torch.tensor([points])
    vis = torch.ones(1, 12)
    vis[0, 10] = 0.0
    vis[0, 11] = 0.49
    for out in run(kp, vis):
        assert out[2].tolist() == [[1.0] + [0.0] * 11]
        assert not any(t.isnan().any() for t in out)
        assert not out[0][0, 1:].any() and not out[1][0, 1:].any()


def test_decoder_round_trip_recovers_the_rounded_keypoint(run):
    """argmax of each row divided by split_ratio (what a SimCC decoder does) gives round(2 p) / 2, for every option,
    for rendered keypoints whose bin is on the axis. Exact ties of the sub-bin Gaussian are left out (argmax takes the
    first of two equal bins, np.around the even one)."""
    size, _ = CONFIGS["192x256"]
    kp = make_keypoints(4, 133, size, seed=11)
    vis = make_visibility(4, 133, seed=11)
    mu = torch.round(kp * RATIO)
    on_axis = ((mu >= 0) & (mu < torch.tensor([2.0 * size[0], 2.0 * size[1]]))).all(-1)
    no_tie = ((kp * RATIO - torch.floor(kp * RATIO)) - 0.5).abs().gt(1e-3).all(-1)
    for out in run(kp, vis):
        keep = (out[2] == 1) & on_axis & no_tie
        assert keep.sum() > 200
        decoded = torch.stack([out[0].argmax(-1), out[1].argmax(-1)], -1).float() / RATIO
        torch.testing.assert_close(decoded[keep], (mu / RATIO)[keep], rtol=0, atol=0)


# --- sigma, lengths, visibility -------------------------------------------------------------------------------------


def test_input_size_is_width_first_and_lengths_round_half_to_even():
    kp = torch.tensor([[[3.0, 1.0]]])
    tx, ty, _ = simcc_targets(kp, (10, 4), 1.0)  # W = 10, H = 4
    assert tx.shape[-1] == 20 and ty.shape[-1] == 8
    assert int(tx.argmax()) == 6 and int(ty.argmax()) == 2
    # np.around: 5 * 2.5 = 12.5 -> 12, 7 * 2.5 = 17.5 -> 18
    assert label_lengths((5, 7), 2.5) == (12, 18) == (int(np.around(5 * 2.5)), int(np.around(7 * 2.5)))
    tx, ty, _ = simcc_targets(kp, (5, 7), 1.0, split_ratio=2.5)
    assert (tx.shape[-1], ty.shape[-1]) == (12, 18)


def test_split_ratio_that_float32_cannot_hold_raises_where_it_changes_a_length():
    """round(15 * 2.1) is 32 in float64 (mmpose) but 31 in float32 (an ONNX float attribute): refused, not silently
    one bin short; the same ratio is fine where both agree."""
    with pytest.raises(ValueError, match=r"split_ratio=2\.1.*32 in float64.*31 in float32"):
        simcc_targets(torch.zeros(1, 2, 2), (15, 10), 1.0, split_ratio=2.1)
    assert simcc_targets(torch.zeros(1, 2, 2), (10, 10), 1.0, split_ratio=2.1)[0].shape[-1] == 21


def test_sigma_forms_agree():
    """A number, a pair (tuple or list), a 0-d, (1,) or (2,) tensor: the same targets, bit for bit."""
    size = CONFIGS["192x256"][0]
    kp, vis = make_keypoints(3, 17, size, seed=21), make_visibility(3, 17, seed=21)
    same = simcc_targets(kp, size, 5.0, visibility=vis)
    for sigma in ((5.0, 5.0), [5, 5], torch.tensor(5.0), torch.tensor([5.0]), torch.tensor([5.0, 5.0])):
        for got, want in zip(simcc_targets(kp, size, sigma, visibility=vis), same, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    pair = simcc_targets(kp, size, (4.9, 5.66), visibility=vis, subpixel=True)
    for got, want in zip(simcc_targets(kp, size, torch.tensor([4.9, 5.66]), visibility=vis, subpixel=True), pair,
                         strict=True):  # fmt: skip
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("sigma", [(4.9, 5.66), (6.0, 6.93), (0.3, 2.0), (40.0, 1.0), (1e3, 2.0)])
def test_table_path_equals_general_path(sigma, normalize, dtype):
    """Eagerly, a Python sigma reads integer-bin rows from a table (15x faster at 32 x 133 x 288x384); the same sigma
    as a tensor takes the general path. Bit for bit the same, also where the table is refused (sigma 1e3: too big)."""
    size = CONFIGS["288x384"][0]
    kp, vis = make_keypoints(6, 133, size, seed=51).to(dtype), make_visibility(6, 133, seed=51)
    table = simcc_targets(kp, size, sigma, visibility=vis, normalize=normalize)
    general = simcc_targets(kp, size, torch.tensor(sigma, dtype=dtype), visibility=vis, normalize=normalize)
    assert_mixed(table[2])
    for got, want in zip(table, general, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


class SigmaInput(nn.Module):
    """sigma as a model input (a learned or per-dataset sigma): (keypoints, visibility, sigma)."""

    def forward(self, keypoints, visibility, sigma):
        return simcc_targets(keypoints, (192, 256), sigma, visibility=visibility, normalize=True)


@pytest.fixture(scope="module", params=["torch", "function", "inline"])
def run_sigma(request):
    if request.param == "torch":
        return SigmaInput()
    size = CONFIGS["192x256"][0]
    args = (make_keypoints(2, 5, size), torch.ones(2, 5), torch.tensor([4.9, 5.66]))
    return OrtModel(SigmaInput(), args, dynamic_shapes=(*DYNAMIC, None), emit=request.param)


@pytest.mark.parametrize("sigma", [(4.9, 5.66), (6.0, 6.93), (1.0, 30.0)])
def test_tensor_sigma_input_matches_mmpose(run_sigma, sigma):
    size = CONFIGS["192x256"][0]
    kp, vis = make_keypoints(8, 17, size, seed=31), make_visibility(8, 17, seed=31)
    out = run_sigma(kp, vis, torch.tensor(sigma))
    assert_targets(out, oracle(kp, size, sigma, vis, normalize=True))


@pytest.mark.parametrize("sigma", [(0.0, 5.0), (5.0, -1.0), (math.nan, 5.0), (5.0, math.inf)])
def test_invalid_tensor_sigma_renders_nothing(run_sigma, sigma):
    """A tensor sigma that is not finite and > 0 (on either axis): weight 0 and zero rows for every keypoint."""
    kp = make_keypoints(2, 17, CONFIGS["192x256"][0], seed=32)
    tx, ty, w = run_sigma(kp, torch.ones(2, 17), torch.tensor(sigma))
    assert not w.any() and not tx.any() and not ty.any()


def test_huge_tensor_sigma_gives_flat_rows(run_sigma):
    kp = torch.tensor([[[10.0, 10.0], [-1e4, 1e4]]])  # far off, but a 3e30-bin window covers every axis
    tx, ty, w = run_sigma(kp, torch.ones(1, 2), torch.tensor([1e30, 1e30]))
    assert w.tolist() == [[1.0, 1.0]]
    norm = 1 / (1e30 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(tx.double(), torch.full_like(tx, norm, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(ty.double(), torch.full_like(ty, norm, dtype=torch.float64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("flags", [torch.tensor([[0, 1, 2]]), torch.tensor([[False, True, True]])])
def test_integer_and_bool_visibility(flags):
    """COCO's integer flags (0 unlabeled, 1 occluded, 2 visible) and bools work as they are; the weight is 1, not 2."""
    kp = torch.tensor([[[30.0, 30.0], [50.0, 40.0], [60.0, 20.0]]])
    _, _, weights = simcc_targets(kp, (192, 256), 5.0, visibility=flags)
    assert weights.tolist() == [[0.0, 1.0, 1.0]]


def test_fractional_and_nan_visibility_give_binary_weights():
    """kpx decision: weights are 1/0. mmpose copies the visibility (0.7 -> 0.7; an invisible 0.3 keeps 0.3 with zero
    rows; NaN is rendered with weight NaN); kpx gives 1, 0, 0. With 0/1 flags, as mmpose's datasets give, they agree."""
    kp = torch.tensor([[[30.0, 30.0]] * 5])
    vis = torch.tensor([[0.7, 0.5, 0.3, math.nan, 1.0]])
    tx, _, weights = simcc_targets(kp, (192, 256), 5.0, visibility=vis)
    assert weights.tolist() == [[1.0, 1.0, 0.0, 0.0, 1.0]]
    assert not tx[0, 2:4].any()
    torch.testing.assert_close(tx[0, 0], tx[0, 4], rtol=0, atol=0)


def test_results_below_the_smallest_normal_are_flushed_to_zero():
    """kpx decision: exp results below float32's smallest normal (1.18e-38) are 0 (torch's exp is 7-25x slower
    there); mmpose keeps subnormals. Everything at or above it matches mmpose."""
    kp = torch.tensor([[[96.0, 128.0]]])
    tx, ty, _ = simcc_targets(kp, (192, 256), (4.9, 5.66))
    want_x, want_y, _ = oracle(kp, (192, 256), (4.9, 5.66))
    tiny = torch.finfo(torch.float32).tiny
    for got, want in ((tx, want_x), (ty, want_y)):
        assert ((got == 0) | (got >= tiny)).all()
        assert (got[want < tiny * 0.999] == 0).all() and (got[want > tiny * 1.001] > 0).all()
        assert (want < tiny).any() and (want > 0).any()


# --- module, export structure, gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [*OPTIONS, {"split_ratio": 3.0}])
@pytest.mark.parametrize("sigma", [5.0, (4.9, 5.66), torch.tensor([6.0, 6.93])])
def test_module_equals_functional(options, sigma):
    size = CONFIGS["192x256"][0]
    kp, vis = make_keypoints(2, 5, size, seed=41), make_visibility(2, 5, seed=41)
    module = SimCCTargets(size, sigma, **options)
    for args, kwargs in (((kp, vis), {"visibility": vis}), ((kp,), {})):
        for got, want in zip(module(*args), simcc_targets(kp, size, sigma, **kwargs, **options), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_each_calls_options_reach_its_node():
    proto = exported("288x384", "function").proto
    graph_outputs = [o.name for o in proto.graph.output]
    nodes = kpx_nodes(proto)
    assert [n.op_type for n in nodes] == ["SimCCTargets"] * len(OPTIONS)
    for node, options in zip(nodes, OPTIONS, strict=True):
        assert set(node.output) <= set(graph_outputs)
        attrs = {a.name: a for a in node.attribute}
        assert list(attrs["input_size"].ints) == [288, 384]
        assert attrs["split_ratio"].f == RATIO
        assert attrs["normalize"].i == int(options["normalize"])
        assert attrs["subpixel"].i == int(options["subpixel"])


def test_subpixel_targets_are_differentiable_in_the_keypoints():
    kp = torch.tensor([[[20.3, 30.7], [50.1, 10.2]]], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda k: simcc_targets(k, (48, 32), (2.0, 3.0), subpixel=True)[:2], (kp,))


# --- bad arguments --------------------------------------------------------------------------------------------------


BAD_SIGMAS = [0, 0.0, -1.0, math.nan, math.inf, (1.0, 0.0), (1.0, 2.0, 3.0), (1.0,), True, "6"]
BAD_SIGMAS += [torch.ones(3), torch.ones(2, 1), torch.tensor([1, 2]), (torch.tensor(1.0), 2.0)]


@pytest.mark.parametrize("sigma", BAD_SIGMAS)
def test_bad_sigma_raises(sigma):
    with pytest.raises(ValueError, match="sigma"):
        simcc_targets(torch.zeros(1, 3, 2), (192, 256), sigma)
    with pytest.raises(ValueError, match="sigma"):
        SimCCTargets((192, 256), sigma)(torch.zeros(1, 3, 2))


@pytest.mark.parametrize("split_ratio", [0, 0.0, -2.0, math.nan, math.inf, torch.tensor(2.0), 1e-6])
def test_bad_split_ratio_raises(split_ratio):
    with pytest.raises(ValueError, match="split_ratio"):
        simcc_targets(torch.zeros(1, 3, 2), (192, 256), 5.0, split_ratio=split_ratio)


@pytest.mark.parametrize("input_size", [(0, 256), (192,), (192, 256, 3), "ab", 192])
def test_bad_input_size_raises(input_size):
    with pytest.raises(ValueError, match=r"input_size \(W, H\)"):
        simcc_targets(torch.zeros(1, 3, 2), input_size, 5.0)


@pytest.mark.parametrize("shape", [(2, 4), (2, 5, 1), (10,), (5,)])
def test_mismatched_visibility_raises(shape):
    with pytest.raises(ValueError, match=r"visibility must have shape \(B, K\) = \(2, 5\)"):
        simcc_targets(torch.zeros(2, 5, 2), (192, 256), 5.0, visibility=torch.ones(shape))


def test_integer_and_bool_visibility_weigh_like_float_visibility():
    """COCO's 0/1/2 flags, bool and float visibility give the same targets (visible means >= 0.5)."""
    kp = make_keypoints(2, 17, (192, 256), seed=7)
    flags = torch.randint(0, 3, (2, 17), generator=torch.Generator().manual_seed(7))
    want = simcc_targets(kp, (192, 256), (4.9, 5.66), visibility=(flags > 0).float())
    for vis in (flags, flags.to(torch.int32), flags > 0):
        got = simcc_targets(kp, (192, 256), (4.9, 5.66), visibility=vis)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    assert (want[2][flags == 0] == 0).all() and want[2][flags > 0].sum() > 10  # (some keypoints are off the axes)
