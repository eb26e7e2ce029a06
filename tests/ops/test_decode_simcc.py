"""decode_simcc against docs/spec.md: numpy mmpose/rtmlib SimCC decoding, 1-D DARK, sub-bin accuracy, bad input, ONNX.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank, non-float input, one kpx node per call, opsets 15-21, fp16 exports, OpenVINO, ``.ort``, stock exporters) is
tests/test_op_contract.py and its siblings, for every op from its registry record.

Sizes are RTMPose's at 256x192 (W x H = 192 x 256) with split ratio 2: ``Lx = 384``, ``Ly = 512`` bins, label
sigma ``(4.9, 5.66)`` bins (DARK kernels 29 and 35); K = 17 (COCO body) and 133 (COCO-WholeBody, RTMW/DWPose).
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

from custom_ops import DecodeSimCC, decode_simcc, get_op
from custom_ops.ops.decode_simcc import kernel_size

from ._ort import OrtModel

LENGTHS = (384, 512)  # (Lx, Ly): 192 x 256 input pixels at split ratio 2
SIGMA = (4.9, 5.66)  # RTMPose-t/s/m/l at 256x192: SimCCLabel(sigma=(4.9, 5.66), simcc_split_ratio=2.0)
SPLIT = 2.0
DARK = {"refine": "dark", "sigma": SIGMA}
MEAN = {"score_mode": "mean"}
DYNAMIC = ({0: "B", 1: "K", 2: "Lx"}, {0: "B", 1: "K", 2: "Ly"})
DEPLOYED = [(1, 17), (32, 17), (1, 133), (32, 133)]  # (B, K)


# --- oracles: numpy float64, one row at a time ----------------------------------------------------------------------


def mmpose_maximum(simcc_x, simcc_y, *, score="min"):
    """mmpose's ``get_simcc_maximum`` (``score="min"``) and rtmlib's (``"mean"``, rtmlib since 2023-12): argmax per
    axis, the score from the two row maxima, and bin -1 on both axes where the score is <= 0. ``(B, K, 2)``, ``(B, K)``.
    """
    locs = np.stack([np.argmax(simcc_x, -1), np.argmax(simcc_y, -1)], -1).astype(np.float64)
    mx, my = simcc_x.max(-1), simcc_y.max(-1)
    vals = np.minimum(mx, my) if score == "min" else (mx + my) / 2
    locs[vals <= 0] = -1
    return locs, vals


def opencv_kernel(k):
    """``cv2.getGaussianKernel(k, 0)`` for ``k > 7`` (OpenCV's sigma for the size, sampled, summing to 1)."""
    s = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    d = np.arange(k) - k // 2
    g = np.exp(-(d**2) / (2 * s * s))
    return g / g.sum()


def mmpose_refine_simcc_dark(bins, rows, k):
    """mmpose's ``refine_simcc_dark`` for one axis: ``bins (N,)`` argmax bins, ``rows (N, L)``. Each row is blurred
    with a zero border (``gaussian_blur1d``), rescaled to its original maximum, clipped to [1e-3, 50], logged and
    padded with its edge values; one step ``-dx / dxx`` with ``dxx`` over two bins plus 1e-9, everywhere, no guard."""
    assert k > 7  # OpenCV's fixed small kernels are not reproduced here
    r = k // 2
    out = bins.astype(np.float64).copy()
    for i, (x, v) in enumerate(zip(bins, rows)):
        blurred = np.convolve(np.pad(v, r), opencv_kernel(k), mode="valid")
        blurred = blurred * (v.max() / blurred.max())
        lg = np.pad(np.log(np.clip(blurred, 1e-3, 50.0)), 2, mode="edge")
        p = int(x + 2.5)
        dx = 0.5 * (lg[p + 1] - lg[p - 1])
        dxx = 1e-9 + 0.25 * (lg[p + 2] - 2 * lg[p] + lg[p - 2])
        out[i] = x - dx / dxx
    return out


def kpx_axis(v, k, dark):
    """docs/spec.md's decode of one row, written independently: ``(bin, row maximum)``."""
    clean = np.where(np.isnan(v), -np.inf, v)
    x = int(np.argmax(clean))  # numpy's argmax: the first maximum
    peak = clean[x]
    if not dark or not np.isfinite(peak):
        return float(x), peak
    length, r = len(v), k // 2
    rho = min(r, x - 1, length - 2 - x)  # the common window radius: never past either end
    if rho < 0:
        return float(x), peak
    s = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    g = np.exp(-(np.arange(-rho, rho + 1) ** 2) / (2 * s * s))
    src = np.where(np.isfinite(v), v, 0.0)
    b = np.array([g @ src[c - rho : c + rho + 1] for c in (x - 1, x, x + 1)])
    if not (b > 0).all():
        return float(x), peak
    with np.errstate(all="ignore"):
        lm, lp = np.log(b[0] / b[1]), np.log(b[2] / b[1])
    dx, dxx = 0.5 * (lp - lm), lp + lm
    if not (np.isfinite(dx) and np.isfinite(dxx) and dxx < 0):
        return float(x), peak
    return x + float(np.clip(-dx / dxx, -(rho + 1), rho + 1)), peak


def oracle(simcc_x, simcc_y, *, split_ratio=SPLIT, refine="none", sigma=6.0, score_mode="min"):
    """docs/spec.md's decode, one keypoint at a time: keypoints ``(B, K, 2)`` in pixels, scores ``(B, K)``."""
    sx, sy = (sigma, sigma) if np.isscalar(sigma) else sigma
    kx, ky = kernel_size(sx), kernel_size(sy)
    xs, ys = simcc_x.double().numpy(), simcc_y.double().numpy()
    batch, keys = xs.shape[:2]
    keypoints, scores = np.zeros((batch, keys, 2)), np.zeros((batch, keys))
    for b in range(batch):
        for j in range(keys):
            (px, mx), (py, my) = kpx_axis(xs[b, j], kx, refine == "dark"), kpx_axis(ys[b, j], ky, refine == "dark")
            if mx == -np.inf or my == -np.inf:
                keypoints[b, j], scores[b, j] = np.nan, -np.inf
            else:
                keypoints[b, j] = px / split_ratio, py / split_ratio
                scores[b, j] = min(mx, my) if score_mode == "min" else (mx + my) / 2
    return torch.from_numpy(keypoints), torch.from_numpy(scores)


# --- inputs ---------------------------------------------------------------------------------------------------------


def simcc(batch, keys, *, lengths=LENGTHS, sigma=SIGMA, margin=0.0, seed=0, noise=0.0, centres=None, dtype=None):
    """RTMPose-like SimCC vectors: a Gaussian of the label sigma (bins) at a sub-bin centre per axis, height 0.3..1,
    plus uniform non-negative noise up to ``noise`` times the height. Centres are uniform in ``[margin, L-1-margin]``
    unless given ``(B, K, 2)`` in bins. Returns ``simcc_x (B, K, Lx)``, ``simcc_y (B, K, Ly)``, centres (float64)."""
    g = torch.Generator().manual_seed(seed)
    if centres is None:
        span = torch.tensor([lengths[0] - 1.0 - 2 * margin, lengths[1] - 1.0 - 2 * margin], dtype=torch.float64)
        centres = torch.rand(batch, keys, 2, generator=g, dtype=torch.float64) * span + margin
    heights = 0.3 + 0.7 * torch.rand(batch, keys, 1, generator=g, dtype=torch.float64)
    rows = []
    for axis, (length, s) in enumerate(zip(lengths, sigma)):
        d = torch.arange(length, dtype=torch.float64) - centres[..., axis : axis + 1]
        row = heights * torch.exp(-(d**2) / (2 * s**2))
        rows.append(row + noise * heights * torch.rand(row.shape, generator=g, dtype=torch.float64))
    dtype = dtype or torch.float32
    return rows[0].to(dtype), rows[1].to(dtype), centres


def mean_error(keypoints, centres, split=SPLIT) -> float:
    """Mean distance (bins) between decoded keypoints (pixels) and the true centres (bins)."""
    return float((keypoints.double() * split - centres).norm(dim=-1).mean())


def assert_decoded(out, expected, *, atol=1e-4):
    """Keypoints within ``atol`` px of the oracle (NaN at the same places), scores exactly."""
    keypoints, scores = out
    torch.testing.assert_close(keypoints.double(), expected[0], rtol=0, atol=atol, equal_nan=True)
    torch.testing.assert_close(scores.double(), expected[1].to(scores.dtype).double(), rtol=0, atol=0)


# --- backends: eager torch and one dynamic ORT export per options and emit mode ---------------------------------------


@functools.cache
def ort_decoder(options: tuple, emit: str, dtype=None) -> OrtModel:
    """``DecodeSimCC(**dict(options))`` exported once at a small size with B, K, Lx and Ly dynamic."""
    x, y, _ = simcc(2, 3, lengths=(40, 56), sigma=(2.0, 2.5), seed=99)
    return OrtModel(DecodeSimCC(**dict(options)), (x, y), dynamic_shapes=DYNAMIC, emit=emit, dtype=dtype)


def _key(options: dict) -> tuple:
    return tuple(sorted(options.items()))


@pytest.fixture(scope="module", params=["torch", "ort-function", "ort-inline"])
def run(request):
    """``run(simcc_x, simcc_y, **options)`` -> (keypoints, scores): eagerly or from a dynamic ORT export."""
    if request.param == "torch":
        return decode_simcc
    emit = request.param.removeprefix("ort-")
    return lambda x, y, **options: tuple(ort_decoder(_key(options), emit)(x, y))


# --- agreement with mmpose and rtmlib ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "keys"), DEPLOYED)
def test_none_is_mmpose_get_simcc_maximum(run, batch, keys):
    """Argmax bins / split ratio and the smaller row maximum, exactly (positive peaks: no -1 marking)."""
    x, y, _ = simcc(batch, keys, seed=keys + batch, noise=0.02)
    keypoints, scores = run(x, y)
    locs, vals = mmpose_maximum(x.numpy(), y.numpy())
    assert (vals > 0).all()
    torch.testing.assert_close(keypoints.double(), torch.from_numpy(locs / SPLIT), rtol=0, atol=0)
    torch.testing.assert_close(scores, torch.from_numpy(vals), rtol=0, atol=0)
    assert_decoded((keypoints, scores), oracle(x, y), atol=0)


@pytest.mark.parametrize(("batch", "keys"), [(1, 17), (32, 133)])
def test_mean_score_is_rtmlibs(run, batch, keys):
    """rtmlib (since 2023-12) scores the mean of the two row maxima; its locations are mmpose's."""
    x, y, _ = simcc(batch, keys, seed=7, noise=0.02)
    keypoints, scores = run(x, y, **MEAN)
    locs, vals = mmpose_maximum(x.double().numpy(), y.double().numpy(), score="mean")
    torch.testing.assert_close(keypoints.double(), torch.from_numpy(locs / SPLIT), rtol=0, atol=0)
    torch.testing.assert_close(scores.double(), torch.from_numpy(vals).float().double(), rtol=0, atol=0)


@pytest.mark.parametrize("score_mode", ["min", "mean"])
def test_no_marking_of_scores_at_most_zero_and_how_to_get_mmposes(run, score_mode):
    """docs/spec.md: a score <= 0 is not marked; mmpose/rtmlib set bin -1 there (-1 / split px after the division),
    which one ``torch.where`` on the outputs reproduces."""
    x, y, _ = simcc(2, 17, seed=8, noise=0.02)
    x[0, :5] -= 5.0  # row maxima < 0 on x only
    y[1, 3:9] = -y[1, 3:9] - 3.0  # all-negative y rows
    keypoints, scores = run(x, y, score_mode=score_mode)
    locs, vals = mmpose_maximum(x.double().numpy(), y.double().numpy(), score=score_mode)
    marked = torch.from_numpy(vals <= 0)
    assert marked.sum() >= 11
    plain = torch.stack([x.argmax(-1), y.argmax(-1)], -1).double() / SPLIT
    torch.testing.assert_close(keypoints.double(), plain, rtol=0, atol=0)  # decoded as usual
    as_mmpose = torch.where(scores[..., None] <= 0, -1 / SPLIT, keypoints)
    torch.testing.assert_close(as_mmpose.double(), torch.from_numpy(locs / SPLIT), rtol=0, atol=0)


@pytest.mark.parametrize("noise", [0.0, 0.02])
@pytest.mark.parametrize(("batch", "keys"), DEPLOYED)
def test_dark_matches_the_numpy_definition(run, batch, keys, noise):
    """docs/spec.md's DARK (truncated window at the ends, one-bin stencil, guards, clamp), written independently in
    numpy float64, on deployed sizes with centres anywhere on the rows (ends included): within 1e-4 px."""
    x, y, _ = simcc(batch, keys, seed=batch * keys, noise=noise)
    assert_decoded(run(x, y, **DARK), oracle(x, y, **DARK))


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_dark_matches_mmpose_refine_simcc_dark_in_the_interior(noise, capsys):
    """Where the blur of mmpose's five-bin stencil stays inside the row, the only difference is the stencil (one bin
    for kpx, two for mmpose): measured max 3e-5 px clean, 1.4e-3 px with 2% noise."""
    x, y, centres = simcc(8, 133, seed=11, noise=noise, margin=30)  # >= 30 bins from the ends: kernel radius <= 17
    keypoints, _ = decode_simcc(x.double(), y.double(), **DARK)
    locs, _ = mmpose_maximum(x.double().numpy(), y.double().numpy())
    mm = np.stack(
        [
            mmpose_refine_simcc_dark(locs[..., a].reshape(-1), rows.double().numpy().reshape(-1, rows.shape[-1]), k)
            for a, (rows, k) in enumerate(((x, kernel_size(SIGMA[0])), (y, kernel_size(SIGMA[1]))))
        ],
        -1,
    ).reshape(keypoints.shape)
    mm = torch.from_numpy(mm) / SPLIT
    diff = float((keypoints - mm).abs().max())
    with capsys.disabled():
        print(f"\nkpx vs mmpose DARK, interior, noise {noise}: max |diff| {diff:.2e} px; mean error (bins) "
              f"kpx {mean_error(keypoints, centres):.2e}, mmpose {mean_error(mm, centres):.2e}")  # fmt: skip
    assert diff < (1e-4 if noise == 0 else 5e-3)


def test_dark_recovers_sub_bin_centres(capsys):
    """Mean distance to the true sub-bin centre, RTMPose sizes, centres anywhere: DARK << argmax, clean and noisy."""
    errors = {}
    for noise in (0.0, 0.02):
        x, y, centres = simcc(32, 133, seed=12, noise=noise)
        none = mean_error(decode_simcc(x, y)[0], centres)
        dark = mean_error(decode_simcc(x, y, **DARK)[0], centres)
        locs, _ = mmpose_maximum(x.double().numpy(), y.double().numpy())
        mm = np.stack([mmpose_refine_simcc_dark(locs[..., a].reshape(-1), r.double().numpy().reshape(-1, r.shape[-1]),
                                                kernel_size(SIGMA[a])) for a, r in enumerate((x, y))], -1)  # fmt: skip
        mmpose = float(np.linalg.norm(mm.reshape(centres.shape) - centres.numpy(), axis=-1).mean())
        errors[noise] = (none, dark, mmpose)
    with capsys.disabled():
        for noise, (none, dark, mmpose) in errors.items():
            print(f"\nmean error (bins), 32x133 keypoints, noise {noise}: none {none:.4f}, dark {dark:.2e}, "
                  f"mmpose's dark {mmpose:.3g}")  # fmt: skip
    # uniform sub-bin offsets: ~0.25 bins per axis, ~0.38 in 2-D; DARK's clean error is mostly the centres within half
    # a bin of an end, where the argmax is the first or last bin and no step is made (interior: ~1e-6)
    assert errors[0.0][1] < 2e-3 and 0.3 < errors[0.0][0] < 0.45
    assert errors[0.02][1] < 0.03 and errors[0.02][0] > 0.3


@pytest.mark.parametrize("noise", [0.0, 0.02, 0.05])
def test_dark_is_never_worse_than_the_argmax_near_the_ends(noise, capsys):
    """The border rule: within 20 bins of either end (where the blur is truncated) DARK's mean error is at most the
    argmax's at every distance, clean and noisy; mmpose's zero border is far worse there (printed, x axis)."""
    distances = torch.tensor([-0.5, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0])
    n = len(distances)
    g = torch.Generator().manual_seed(13)
    jitter = torch.rand(n, 2, 64, 2, generator=g, dtype=torch.float64) - 0.5  # sub-bin positions around d
    last = torch.tensor([LENGTHS[0] - 1.0, LENGTHS[1] - 1.0], dtype=torch.float64)
    d = distances.double()[:, None, None, None]
    centres = torch.cat([d + jitter[:, :1], last - d - jitter[:, 1:]], 1).reshape(2 * n, 64, 2)  # first, last end
    x, y, _ = simcc(2 * n, 64, centres=centres, seed=int(noise * 100) + 1, noise=noise)
    err_none = (decode_simcc(x, y)[0].double() * SPLIT - centres).abs().reshape(n, -1).mean(-1)
    err_dark = (decode_simcc(x, y, **DARK)[0].double() * SPLIT - centres).abs().reshape(n, -1).mean(-1)
    locs, _ = mmpose_maximum(x.double().numpy(), y.double().numpy())
    mm = mmpose_refine_simcc_dark(locs[..., 0].reshape(-1), x.double().numpy().reshape(-1, LENGTHS[0]), 29)
    err_mm = np.abs(mm - centres[..., 0].numpy().reshape(-1)).reshape(n, -1).mean(-1)
    lines = [f"d={float(dist):5.2f}: none {a:.3f}, dark {b:.3f}, mmpose (x) {c:.3g}"
             for dist, a, b, c in zip(distances, err_none.tolist(), err_dark.tolist(), err_mm)]  # fmt: skip
    with capsys.disabled():
        print(f"\nmean |error| per axis (bins) at distance d from an end, noise {noise}:\n" + "\n".join(lines))
    assert (err_dark <= err_none + 1e-12).all(), lines
    assert (err_dark[distances >= 1] < err_none[distances >= 1]).all()  # and better from one bin in


def test_dark_makes_no_step_at_the_first_or_last_bin(run):
    x, y, _ = simcc(1, 4, centres=torch.tensor([[[0.0, 511.0], [-3.0, 520.0], [383.0, 0.2], [390.0, -0.3]]]))
    keypoints, _ = run(x, y, **DARK)
    assert keypoints.tolist() == [[[0.0, 255.5], [0.0, 255.5], [191.5, 0.0], [191.5, 0.0]]]


# --- docs/spec.md rules: ties, flat rows, NaN, -inf, +inf, short rows -------------------------------------------------


@pytest.mark.parametrize("options", [{}, DARK], ids=["none", "dark"])
def test_ties_go_to_the_first_index(run, options):
    x, y = torch.zeros(1, 2, 384), torch.zeros(1, 2, 512)
    x[0, 0, [200, 50, 300]] = 1.0  # 50 first
    y[0, 0, [400, 100]] = 1.0  # 100 first
    x[0, 1, 10:13] = 0.5  # a plateau: its first bin
    y[0, 1, 7] = y[0, 1, 8] = 0.75
    keypoints, scores = run(x, y, **options)
    assert scores.tolist() == [[1.0, 0.5]]
    if not options:
        assert keypoints.tolist() == [[[25.0, 50.0], [5.0, 3.5]]]
    assert_decoded((keypoints, scores), oracle(x, y, **options))


@pytest.mark.parametrize("options", [{}, DARK], ids=["none", "dark"])
def test_all_equal_rows_decode_to_the_first_bin(run, options):
    """A flat row: index 0 (the first bin: no DARK step either), score the row's value."""
    x, y = torch.full((2, 3, 384), 0.25), torch.full((2, 3, 512), -1.0)
    keypoints, scores = run(x, y, **options)
    assert (keypoints == 0).all() and (scores == -1.0).all()


@pytest.mark.parametrize("options", [{}, DARK, MEAN], ids=["none", "dark", "mean"])
def test_nan_is_ignored_as_minus_inf(run, options):
    """torch's argmax would pick a NaN; docs/spec.md ignores it (ORT's ArgMax skips it too). Only that keypoint sees
    it, NaN in a DARK window enters the blur as 0."""
    x, y, _ = simcc(2, 17, seed=14, noise=0.02)
    dirty_x, dirty_y = x.clone(), y.clone()
    dirty_x[0, 1, x[0, 1].argmax()] = math.nan  # the maximum itself: the next largest wins
    dirty_y[1, 2, (y[1, 2].argmax() + 3).clamp(max=511)] = math.nan  # inside the DARK window
    dirty_x[1, 16, :100] = math.nan
    out = run(dirty_x, dirty_y, **options)
    assert not out[0].isnan().any() and not out[1].isnan().any()
    assert_decoded(out, oracle(dirty_x, dirty_y, **options))
    clean = run(x, y, **options)
    keep = torch.ones(2, 17, dtype=torch.bool)
    keep[0, 1] = keep[1, 2] = keep[1, 16] = False
    for got, want in zip(out, clean, strict=True):
        torch.testing.assert_close(got[keep], want[keep], rtol=0, atol=0)


@pytest.mark.parametrize("options", [{}, DARK, MEAN], ids=["none", "dark", "mean"])
@pytest.mark.parametrize("fill", [-math.inf, math.nan, "mixed"])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_row_without_a_value_gives_nan_keypoint_and_score_minus_inf(run, options, fill, axis):
    """Both coordinates are NaN even though the other axis has a peak; the score is -inf in both score modes."""
    x, y, _ = simcc(2, 5, seed=15, noise=0.02)
    bad_x, bad_y = x.clone(), y.clone()
    row = bad_x[1, 3] if axis == "x" else bad_y[1, 3]
    if fill == "mixed":
        row[:] = -math.inf
        row[::2] = math.nan
    else:
        row[:] = fill
    keypoints, scores = run(bad_x, bad_y, **options)
    assert keypoints[1, 3].isnan().all() and scores[1, 3] == -math.inf
    ref = run(x, y, **options)
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[1, 3] = False
    torch.testing.assert_close(keypoints[keep], ref[0][keep], rtol=0, atol=0)
    torch.testing.assert_close(scores[keep], ref[1][keep], rtol=0, atol=0)


@pytest.mark.parametrize("options", [{}, DARK, MEAN], ids=["none", "dark", "mean"])
def test_plus_inf_is_a_value_like_any_other(run, options):
    """The first +inf is the argmax (no DARK step on that axis); against a row of -inf the score is still -inf."""
    x, y, _ = simcc(1, 3, seed=16)
    x[0, 0, 100] = x[0, 0, 200] = math.inf
    x[0, 1, 150] = math.inf
    y[0, 1] = -math.inf  # no value on y: NaN keypoint, score -inf (also in mean mode: not -inf + inf = NaN)
    keypoints, scores = run(x, y, **options)
    assert keypoints[0, 0, 0] == 50.0 and keypoints[0, 1].isnan().all() and scores[0, 1] == -math.inf
    assert_decoded((keypoints, scores), oracle(x, y, **options))


@pytest.mark.parametrize("options", [{}, DARK], ids=["none", "dark"])
@pytest.mark.parametrize("lengths", [(1, 1), (1, 512), (2, 3), (3, 2), (5, 7)])
def test_single_bins_and_short_rows(run, options, lengths):
    """L == 1 decodes to 0; DARK needs both neighbours and blurred values > 0, else it makes no step."""
    x, y, _ = simcc(2, 4, lengths=lengths, sigma=(1.0, 1.0), seed=17, noise=0.05)
    keypoints, scores = run(x, y, **options)
    assert torch.isfinite(keypoints).all()
    assert_decoded((keypoints, scores), oracle(x, y, **options))
    if lengths[0] == 1:
        assert (keypoints[..., 0] == 0).all()
    if max(lengths) < 3 or not options:
        assert_decoded((keypoints, scores), oracle(x, y), atol=0)


@pytest.mark.parametrize("options", [{}, DARK, MEAN], ids=["none", "dark", "mean"])
def test_dynamic_sizes_through_one_export(run, options):
    """The export was traced at 2x3x40 / 2x3x56: other B (0 included), K, Lx and Ly (independent) run through it."""
    for batch, keys, lengths, seed in ((1, 17, LENGTHS, 20), (0, 17, LENGTHS, 21), (3, 133, (288, 384), 22),
                                       (2, 5, (576, 768), 23), (4, 1, (7, 300), 24)):  # fmt: skip
        x, y, _ = simcc(batch, keys, lengths=lengths, seed=seed, noise=0.02)
        out = run(x, y, **options)
        assert out[0].shape == (batch, keys, 2) and out[1].shape == (batch, keys)
        assert_decoded(out, oracle(x, y, **options))


@pytest.mark.parametrize("split_ratio", [1.0, 1.5, 3.0])
def test_split_ratio_divides_the_bins(split_ratio):
    x, y, _ = simcc(2, 17, seed=25, noise=0.02)
    model = OrtModel(DecodeSimCC(split_ratio=split_ratio), (x, y), dynamic_shapes=DYNAMIC)
    keypoints, _ = decode_simcc(x, y, split_ratio=split_ratio)
    bins = torch.stack([x.argmax(-1), y.argmax(-1)], -1).float()
    torch.testing.assert_close(keypoints, bins / split_ratio, rtol=0, atol=0)
    torch.testing.assert_close(model(x, y)[0], keypoints, rtol=1e-6, atol=0)  # one float32 division


def test_blur_kernel_follows_the_label_sigma_as_in_mmpose():
    """``floor((20 sigma - 7) / 3)`` made odd downwards (OpenCV's sigma for that size is then ~sigma), at least 1."""
    assert [kernel_size(s) for s in (4.9, 5.66, 6.0, 6.93, 2.0, 1.0, 0.5, 0.4)] == [29, 35, 37, 43, 11, 3, 1, 1]
    x, y, _ = simcc(1, 2, seed=26)
    model = OrtModel(DecodeSimCC(**DARK), (x, y))
    (node,) = [n for n in model.proto.graph.node if n.op_type == "DecodeSimCC"]
    attributes = {a.name: a.i if a.type == a.INT else a.f for a in node.attribute}
    assert attributes["blur_kernel_x"] == 29 and attributes["blur_kernel_y"] == 35 and attributes["refine"] == 1


# --- dtypes ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("options", [{}, DARK, MEAN], ids=["none", "dark", "mean"])
def test_half_precision_is_float32_rounded_once(dtype, options):
    x, y, _ = simcc(32, 17, seed=27, noise=0.02, dtype=dtype)
    x[0, 0] = -math.inf
    y[1, 1, 5] = math.nan
    keypoints, scores = decode_simcc(x, y, **options)
    ref_kp, ref_scores = decode_simcc(x.float(), y.float(), **options)
    assert keypoints.dtype == scores.dtype == dtype
    assert scores[0, 0] == -math.inf and keypoints[0, 0].isnan().all()
    torch.testing.assert_close(keypoints, ref_kp.to(dtype), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(scores, ref_scores.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("options", [{}, DARK, MEAN], ids=["none", "dark", "mean"])
def test_float16_export_matches_float32_pytorch(options):
    """An fp16 export (float32 inside) at deployed sizes against float32 PyTorch on the same half numbers."""
    model = ort_decoder(_key(options), "function", torch.float16)
    x, y, _ = simcc(32, 133, seed=28, noise=0.02, dtype=torch.float16)
    x[2, 1] = -math.inf
    keypoints, scores = model(x, y)
    ref_kp, ref_scores = decode_simcc(x.float(), y.float(), **options)
    assert keypoints.dtype == scores.dtype == torch.float16
    assert scores[2, 1] == -math.inf and keypoints[2, 1].isnan().all()
    # float32 inside, rounded once: at most one float16 ulp apart (ORT's and torch's float32 DARK steps may differ in
    # the last bits and flip the rounding); argmax bins / 2 and min scores are exact, mean scores one rounding
    rtol = torch.finfo(torch.float16).eps if options.get("refine") == "dark" else 0.0
    torch.testing.assert_close(keypoints.float(), ref_kp.half().float(), rtol=rtol, atol=0, equal_nan=True)
    torch.testing.assert_close(scores.float(), ref_scores.half().float(), rtol=0, atol=0)


def test_float64_is_computed_in_float64():
    x, y, _ = simcc(2, 17, seed=29, noise=0.02, dtype=torch.float64)
    keypoints, scores = decode_simcc(x, y, **DARK, score_mode="mean")
    assert keypoints.dtype == scores.dtype == torch.float64
    assert_decoded((keypoints, scores), oracle(x, y, **DARK, score_mode="mean"), atol=1e-10)


def test_mixed_dtypes_compute_in_the_wider_and_return_simcc_xs():
    x, y, _ = simcc(2, 5, seed=30, noise=0.02)
    keypoints, scores = decode_simcc(x.half(), y.double(), **DARK)
    ref = decode_simcc(x.half().double(), y.double(), **DARK)
    assert keypoints.dtype == scores.dtype == torch.float16
    torch.testing.assert_close(keypoints, ref[0].half(), rtol=0, atol=0)


# --- gradients -------------------------------------------------------------------------------------------------------


def test_gradients_of_scores_and_dark_keypoints():
    """Scores (gathered maxima) and the DARK step (blur, log) are differentiable in the vector values; the argmax is
    not. ``"min"`` puts the score's gradient on the smaller row maximum, ``"mean"`` half on each."""
    x, y, _ = simcc(1, 3, lengths=(24, 30), sigma=(2.0, 2.5), margin=4, seed=31, noise=0.05, dtype=torch.float64)
    x, y = x.requires_grad_(), y.requires_grad_()
    for score_mode in ("min", "mean"):
        torch.autograd.gradcheck(lambda a, b, m=score_mode: decode_simcc(a, b, refine="dark", sigma=(2.0, 2.5),
                                                                          score_mode=m), (x, y))  # fmt: skip
    _, scores = decode_simcc(x, y)
    scores.sum().backward()
    smaller_on_x = x.detach().amax(-1) <= y.detach().amax(-1)
    assert torch.equal(x.grad.sum(-1), smaller_on_x.double()) and torch.equal(y.grad.sum(-1), (~smaller_on_x).double())
    x.grad = y.grad = None
    _, scores = decode_simcc(x, y, score_mode="mean")
    scores.sum().backward()
    assert (x.grad.sum(-1) == 0.5).all() and (y.grad.sum(-1) == 0.5).all()


# --- module twin, export structure ------------------------------------------------------------------------------------


def test_module_repr_names_its_options():
    assert "refine='dark'" in repr(DecodeSimCC(**DARK)) and "sigma=(4.9, 5.66)" in repr(DecodeSimCC(**DARK))


class Heads(nn.Module):
    """Three decodes of the same vectors."""

    OPTIONS = ({}, DARK, {"refine": "dark", "sigma": 3.0, "score_mode": "mean", "split_ratio": 3.0})

    def forward(self, simcc_x, simcc_y):
        return tuple(t for o in self.OPTIONS for t in decode_simcc(simcc_x, simcc_y, **o))


def test_inline_export_folds_the_mode_attributes_and_matches_at_another_size():
    """emit="inline" leaves no ``If``: each call's refine and score modes are constants."""
    x, y, _ = simcc(2, 3, lengths=(40, 56), seed=32)
    model = OrtModel(Heads(), (x, y), dynamic_shapes=DYNAMIC, emit="inline")
    assert "If" not in {n.op_type for n in model.proto.graph.node}
    x, y, _ = simcc(3, 17, seed=33, noise=0.02)
    for got, want in zip(model(x, y), Heads()(x, y), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{}, MEAN], ids=["none", "mean"])
def test_adversarial_suite_in_the_other_modes(options):
    """The registry's bad inputs (the generic parity tests run them through the DARK export sample) through argmax-only
    decoders, exactly."""
    spec = get_op("decode_simcc")
    for emit in ("function", "inline"):
        model = ort_decoder(_key(options), emit)
        for name, (x, y) in spec.adversarial().items():
            for got, want in zip(model(x, y), decode_simcc(x, y, **options), strict=True):
                torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=name)


# --- exceptions ------------------------------------------------------------------------------------------------------


def _call(**options):
    x, y, _ = simcc(1, 2, lengths=(8, 9), sigma=(1.0, 1.0))
    return decode_simcc(x, y, **options)


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"refine": "quarter"}, "refine"),
        ({"refine": "Dark"}, "refine"),
        ({"refine": None}, "refine"),
        ({"score_mode": "max"}, "score_mode"),
        ({"score_mode": 0}, "score_mode"),
        ({"split_ratio": 0}, "split_ratio"),
        ({"split_ratio": -2.0}, "split_ratio"),
        ({"split_ratio": math.inf}, "split_ratio"),
        ({"split_ratio": math.nan}, "split_ratio"),
        ({"split_ratio": True}, "split_ratio"),
        ({"split_ratio": "2"}, "split_ratio"),
        ({"split_ratio": torch.tensor(2.0)}, "split_ratio"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": math.nan}, "sigma"),
        ({"sigma": math.inf}, "sigma"),
        ({"sigma": 101.0}, "sigma"),
        ({"sigma": True}, "sigma"),
        ({"sigma": (4.9,)}, "sigma"),
        ({"sigma": (4.9, 5.66, 1.0)}, "sigma"),
        ({"sigma": (4.9, "5")}, "sigma"),
        ({"sigma": torch.tensor(4.9)}, "sigma"),
    ],
)
def test_bad_options_raise_naming_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        _call(**options)
    with pytest.raises(ValueError, match=argument):
        DecodeSimCC(**options)


@pytest.mark.parametrize(
    ("shape_x", "shape_y", "message"),
    [
        ((2, 17, 384), (1, 17, 512), r"same B and K; got shapes \(2, 17, 384\) and \(1, 17, 512\)"),
        ((1, 17, 384), (1, 133, 512), r"same B and K"),
        ((1, 17, 0), (1, 17, 512), r"simcc_x must have shape \(B, K, Lx\) with a last axis >= 1"),
        ((1, 17, 384), (1, 17, 0), r"simcc_y must have shape \(B, K, Ly\) with a last axis >= 1"),
    ],
)
def test_shapes_that_do_not_fit_raise(shape_x, shape_y, message):
    """(Wrong ranks and non-float inputs: tests/test_op_contract.py.)"""
    with pytest.raises(ValueError, match=message):
        decode_simcc(torch.rand(shape_x), torch.rand(shape_y))


# --- invariants (property test) --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    batch=st.integers(0, 2),
    keys=st.integers(0, 3),
    lengths=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    sigma=st.sampled_from([0.4, 1.0, 2.0, 4.9]),
    refine=st.sampled_from(["none", "dark"]),
    score_mode=st.sampled_from(["min", "mean"]),
    holes=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_invariants(batch, keys, lengths, sigma, refine, score_mode, holes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, keys, lengths[0], generator=g, dtype=torch.float64)  # float64: the oracle's decisions
    y = torch.randn(batch, keys, lengths[1], generator=g, dtype=torch.float64)
    for t in (x, y):
        t[torch.rand(t.shape, generator=g) < holes] = math.nan
        t[torch.rand(t.shape, generator=g) < holes / 2] = -math.inf
    options = {"refine": refine, "sigma": sigma, "score_mode": score_mode, "split_ratio": 2.0}
    keypoints, scores = decode_simcc(x, y, **options)
    assert keypoints.shape == (batch, keys, 2) and scores.shape == (batch, keys)
    empty = scores == -math.inf
    assert keypoints[empty].isnan().all() and torch.isfinite(keypoints[~empty]).all()
    bins = keypoints[~empty] * 2.0
    assert (bins[:, 0] >= 0).all() and (bins[:, 0] <= lengths[0] - 1).all()  # DARK never leaves the row
    assert (bins[:, 1] >= 0).all() and (bins[:, 1] <= lengths[1] - 1).all()
    assert_decoded((keypoints, scores), oracle(x, y, **options), atol=1e-9)


def _numpy_visibility(x: np.ndarray, y: np.ndarray, sigma: tuple[float, float], beta: float) -> np.ndarray:
    """mmpose's ``decode_visibility``, written from its description: per axis the largest probability of
    ``softmax(row * beta * sigma_axis)`` (max-subtracted), the keypoint's the smaller of the two. float64."""

    def top(rows: np.ndarray, scale: float) -> np.ndarray:
        z = rows.astype(np.float64) * scale
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).max(-1)

    return np.minimum(top(x, beta * sigma[0]), top(y, beta * sigma[1]))


@pytest.mark.parametrize(("batch", "keys", "sigma"), [(1, 17, (4.9, 5.66)), (32, 133, (6.0, 6.93)), (0, 17, 6.0)])
def test_simcc_visibility_is_mmposes_decode_visibility(batch, keys, sigma):
    """Against the numpy definition above at RTMPose's sizes, and exported with standard ONNX ops next to
    ``decode_simcc`` (no kpx node), through ONNX Runtime."""
    from custom_ops import simcc_visibility

    x, y, _ = simcc(batch, keys, lengths=LENGTHS, seed=31, noise=0.02)
    pair = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    got = simcc_visibility(x, y, sigma=sigma)
    assert got.shape == (batch, keys) and got.dtype == x.dtype
    # float32: the logits are the row values times beta * sigma ~ 1000, so one rounding of a logit is ~6e-5
    # absolute (2^-24 * 1000), and a probability moves by up to a few times that relative to itself
    want = _numpy_visibility(x.numpy(), y.numpy(), pair, 150.0)
    np.testing.assert_allclose(got.double().numpy(), want, atol=2e-4)

    class Head(nn.Module):
        def forward(self, sx, sy):
            keypoints, scores = decode_simcc(sx, sy, sigma=sigma)
            return keypoints, scores, simcc_visibility(sx, sy, sigma=sigma)

    if batch == 0:
        return
    model = OrtModel(Head(), (x, y))
    assert {n.domain for n in model.proto.graph.node if n.op_type == "Softmax"} <= {""}  # a standard Softmax
    out = model(x, y)
    np.testing.assert_allclose(out[2].numpy(), got.numpy(), atol=2e-6)


def test_simcc_visibility_bad_arguments_name_them():
    from custom_ops import simcc_visibility

    x, y, _ = simcc(1, 2, lengths=(20, 30), seed=1)
    with pytest.raises(ValueError, match="beta"):
        simcc_visibility(x, y, beta=0.0)
    with pytest.raises(ValueError, match="sigma"):
        simcc_visibility(x, y, sigma=-1.0)
    with pytest.raises(ValueError, match="simcc_y"):
        simcc_visibility(x, y[:, :1], sigma=6.0)
