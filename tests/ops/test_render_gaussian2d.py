"""render_gaussian2d against docs/spec.md: float64 definition, kornia 0.9, underflow to zeros, bad input, ONNX.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank and last axis, non-float input, one kpx node per call) is tests/test_op_contract.py, for every op from its
registry record.
"""

from __future__ import annotations

import itertools
import math

import kornia.geometry.subpix as kornia_subpix
import pytest
import torch
from torch import nn

from custom_ops import RenderGaussian2d, render_gaussian2d

from ._ort import OrtModel

# (normalized_coordinates, align_corners); align_corners is ignored in pixel mode
CONVENTIONS = {"pixel": (False, True), "corners": (True, True), "centres": (True, False)}
DYNAMIC = ({0: "B", 1: "K"}, {0: "B", 1: "K"})


def literal_coord(i: int, n: int, normalized: bool, align_corners: bool) -> float:
    """The coordinate table of docs/spec.md, row by row."""
    if not normalized:
        return float(i)
    if align_corners:
        return 0.0 if n == 1 else -1 + 2 * i / (n - 1)
    return (2 * i + 1) / n - 1


def oracle(mean, std, size, normalized=True, align_corners=True) -> torch.Tensor:
    """docs/spec.md's PDF in float64, pixel by pixel, rescaled to sum to one (zeros if the sum is 0)."""
    h, w = size
    mean, std = torch.broadcast_tensors(mean.double(), std.double())
    out = torch.empty(*mean.shape[:-1], h, w, dtype=torch.float64)
    for idx in itertools.product(*map(range, mean.shape[:-1])):
        (mx, my), (sx, sy) = mean[idx].tolist(), std[idx].tolist()
        g = torch.tensor(
            [
                [
                    math.exp(
                        -((literal_coord(c, w, normalized, align_corners) - mx) ** 2) / (2 * sx**2)
                        - (literal_coord(r, h, normalized, align_corners) - my) ** 2 / (2 * sy**2)
                    )
                    for c in range(w)
                ]
                for r in range(h)
            ],
            dtype=torch.float64,
        )
        total = g.sum()
        out[idx] = g / total if total > 0 else g * 0  # g * 0 keeps NaN
    return out


def uniform(*shape: int, low: float, high: float, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * (high - low) + low


def inside(*batch: int, normalized: bool, size=(6, 9), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Means well inside the map, stds of a few pixels (normalized: a fraction of the map)."""
    h, w = size
    if normalized:
        return uniform(*batch, 2, low=-0.5, high=0.5, seed=seed), uniform(*batch, 2, low=0.2, high=0.5, seed=seed + 1)
    mean = uniform(*batch, 2, low=0.3, high=0.7, seed=seed) * torch.tensor([w - 1.0, h - 1.0])
    return mean, uniform(*batch, 2, low=0.7, high=1.5, seed=seed + 1)


# --- smoke, cardinality ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean_shape", "std_shape", "out_batch"),
    [((2,), (2,), ()), ((3, 2), (3, 2), (3,)), ((2, 3, 2), (2,), (2, 3)), ((3, 2), (4, 1, 2), (4, 3))],
)
def test_cardinality(mean_shape, std_shape, out_batch):
    mean = uniform(*mean_shape, low=-0.5, high=0.5)
    std = uniform(*std_shape, low=0.2, high=0.5)
    out = render_gaussian2d(mean, std, (6, 9))
    assert out.shape == (*out_batch, 6, 9)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.sum((-2, -1)), torch.ones(out_batch))


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_peak_on_a_pixel(convention):
    normalized, align_corners = CONVENTIONS[convention]
    h, w = 5, 7
    r, c = 3, 2
    mean = torch.tensor(
        [literal_coord(c, w, normalized, align_corners), literal_coord(r, h, normalized, align_corners)]
    )
    out = render_gaussian2d(mean, 0.3 if normalized else 1.0, (h, w), normalized, align_corners=align_corners)
    assert divmod(int(out.argmax()), w) == (r, c)


# --- definition, oracles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(6, 9), (1, 7), (5, 1), (1, 1)])
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_definition(size, convention, dtype):
    normalized, align_corners = CONVENTIONS[convention]
    mean, std = inside(2, 3, normalized=normalized, size=size, seed=1)
    mean, std = mean.to(dtype), std.to(dtype)
    out = render_gaussian2d(mean, std, size, normalized, align_corners=align_corners)
    torch.testing.assert_close(out, oracle(mean, std, size, normalized, align_corners).to(dtype))


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("size", [(6, 9), (8, 8)])
def test_matches_kornia_inside_the_map(normalized, size):
    # kornia 0.9 normalises each axis with a softmax; equal to kpx while no mass underflows.
    # Its normalized grid is align_corners=True.
    mean, std = inside(2, 3, normalized=normalized, size=size, seed=2)
    expected = kornia_subpix.render_gaussian2d(mean, std, size, normalized)
    torch.testing.assert_close(render_gaussian2d(mean, std, size, normalized, align_corners=True), expected)


def test_std_number_equals_std_tensor():
    mean, _ = inside(2, 3, normalized=True, seed=3)
    expected = render_gaussian2d(mean, torch.full((2, 3, 2), 0.4), (6, 9))
    torch.testing.assert_close(render_gaussian2d(mean, 0.4, (6, 9)), expected, rtol=0, atol=0)


def test_std_broadcasts():
    mean, _ = inside(2, 3, normalized=True, seed=4)
    std = torch.tensor([0.3, 0.45])
    expected = render_gaussian2d(mean, std.expand(2, 3, 2).contiguous(), (6, 9))
    torch.testing.assert_close(render_gaussian2d(mean, std, (6, 9)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_far_off_mean_renders_zeros(dtype):
    # docs/spec.md: a Gaussian whose mass on the grid underflows renders as all zeros, never NaN, in every dtype
    mean = torch.tensor([[1e4, 1e4], [3.0, 2.0], [-1e4, 2.0]], dtype=dtype)
    std = torch.ones(3, 2, dtype=dtype)
    out = render_gaussian2d(mean, std, (6, 9), False)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all() and (out[2] == 0).all()
    torch.testing.assert_close(out[1], render_gaussian2d(mean[1], std[1], (6, 9), False), rtol=0, atol=0)


# --- gradcheck, module twin -----------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_gradcheck(convention):
    normalized, align_corners = CONVENTIONS[convention]
    mean, std = inside(1, 2, normalized=normalized, size=(4, 5), seed=6)
    mean = mean.double().requires_grad_()
    std = std.double().requires_grad_()

    def f(mean, std):
        return render_gaussian2d(mean, std, (4, 5), normalized, align_corners=align_corners)

    assert torch.autograd.gradcheck(f, (mean, std))


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("size", [(6, 9), (1, 4)])
def test_module_equals_functional(convention, size):
    """Beyond the samples of tests/test_op_contract.py: a one-row map and a Python-number std given to forward."""
    normalized, align_corners = CONVENTIONS[convention]
    mean, std = inside(2, 3, normalized=normalized, size=size, seed=7)
    module = RenderGaussian2d(size, normalized, align_corners=align_corners)
    expected = render_gaussian2d(mean, std, size, normalized, align_corners=align_corners)
    torch.testing.assert_close(module(mean, std), expected, rtol=0, atol=0)
    torch.testing.assert_close(
        module(mean, 0.5), render_gaussian2d(mean, 0.5, size, normalized, align_corners=align_corners)
    )


# --- exceptions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("std", [0, 0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_std_number_raises(std):
    with pytest.raises(ValueError, match="std"):
        render_gaussian2d(torch.zeros(3, 2), std, (6, 9))
    with pytest.raises(ValueError, match="std"):
        RenderGaussian2d((6, 9))(torch.zeros(3, 2), std)


def test_std_not_broadcastable_raises():
    with pytest.raises(ValueError, match=r"broadcast.*mean of shape \(2, 3, 2\)"):
        render_gaussian2d(torch.zeros(2, 3, 2), torch.ones(4, 2), (6, 9))


@pytest.mark.parametrize("size", [(0, 5), (5, -1), (3,), (2, 3, 4), "ab"])
def test_bad_size_raises(size):
    with pytest.raises(ValueError, match="size"):
        render_gaussian2d(torch.zeros(3, 2), torch.ones(2), size)
    with pytest.raises(ValueError, match="size"):
        RenderGaussian2d(size)


# --- bad input, in PyTorch and on ONNX Runtime ---------------------------------------------------------------

# (size, normalized_coordinates, align_corners) of each call in Heads
HEAD_ARGS = (
    ((6, 9), False, True),
    ((6, 9), True, True),
    ((6, 9), True, False),
    ((1, 7), True, True),
    ((5, 1), False, True),
    ((1, 1), True, False),
)


class Heads(nn.Module):
    """One call per convention, and maps with a single row and/or column."""

    def forward(self, mean, std):
        return tuple(render_gaussian2d(mean, std, size, nrm, align_corners=ac) for size, nrm, ac in HEAD_ARGS)


def head_oracles(mean, std) -> list[torch.Tensor]:
    return [oracle(mean, std, size, nrm, ac) for size, nrm, ac in HEAD_ARGS]


def example(b: int = 3, k: int = 4, seed: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Means in [0, 2], stds in [0.5, 1.5]: on the grid in pixels, around it in normalized units."""
    return uniform(b, k, 2, low=0.0, high=2.0, seed=seed), uniform(b, k, 2, low=0.5, high=1.5, seed=seed + 1)


@pytest.fixture(scope="module")
def ort_heads():
    return OrtModel(Heads(), example(), dynamic_shapes=DYNAMIC)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run(request):
    """``run(mean, std)`` -> the outputs of :class:`Heads`, eagerly or from one dynamic ORT session."""
    if request.param == "torch":
        return Heads()
    return request.getfixturevalue("ort_heads")


def test_backend_matches_oracle(run):
    mean, std = example(2, 5, seed=11)
    for out, expected in zip(run(mean, std), head_oracles(mean, std), strict=True):
        torch.testing.assert_close(out, expected.float())


@pytest.mark.parametrize("arg", ["mean", "std"])
def test_nan_keypoint_is_isolated(run, arg):
    mean, std = example(2, 3, seed=12)
    (mean if arg == "mean" else std)[1, 1, 0] = math.nan
    outs = run(mean, std)
    for out in outs:
        assert out[1, 1].isnan().all()
    for b in range(2):
        for k in range(3):
            if (b, k) != (1, 1):
                alone = run(mean[b : b + 1, k : k + 1], std[b : b + 1, k : k + 1])
                for out, ref in zip(outs, alone, strict=True):
                    torch.testing.assert_close(out[b, k], ref[0, 0])


@pytest.mark.parametrize("far", [1e4, -1e4, 1e30, -1e30])
def test_far_off_mean_renders_zeros_on_every_backend(run, far):
    mean, std = example(2, 3, seed=13)
    mean[0, 1] = far
    mean[1, 2, 1] = far
    outs = run(mean, std)
    for out, expected in zip(outs, head_oracles(mean, std), strict=True):
        assert torch.isfinite(out).all()
        assert (out[0, 1] == 0).all() and (out[1, 2] == 0).all()
        torch.testing.assert_close(out, expected.float())


def test_huge_std_renders_uniform(run):
    mean, std = example(2, 3, seed=14)
    std[0, 0] = 1e30
    mean[1, 1] = 1e30
    std[1, 1] = 1e30  # mean and std both huge: (x - 1e30)/1e30 = -1 everywhere, still uniform
    for out, (size, _, _) in zip(run(mean, std), HEAD_ARGS, strict=True):
        assert torch.isfinite(out).all()
        for b, k in ((0, 0), (1, 1)):
            torch.testing.assert_close(out[b, k], torch.full(size, 1.0 / (size[0] * size[1])))


def test_single_row_or_column(run):
    mean, std = example(2, 3, seed=15)
    for out, expected, (size, _, _) in zip(run(mean, std), head_oracles(mean, std), HEAD_ARGS, strict=True):
        if 1 in size:
            assert torch.isfinite(out).all()
            torch.testing.assert_close(out, expected.float())
            torch.testing.assert_close(out.sum((-2, -1)), torch.ones(2, 3))


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run16(request):
    """Like ``run`` with float16 inputs."""
    if request.param == "torch":
        return Heads()
    return OrtModel(Heads(), example(), dynamic_shapes=DYNAMIC, dtype="float16")


@pytest.mark.parametrize("far", [1e4, -1e4])
def test_float16_far_off_mean_renders_zeros_on_every_backend(run16, far):
    # docs/spec.md: in fp16 an eps like 1e-32 is 0, so the normalisation must be float32: zeros, never NaN
    mean, std = (t.half() for t in example(2, 3, seed=18))
    mean[0, 1] = far
    for out, expected in zip(run16(mean, std), head_oracles(mean, std), strict=True):
        assert out.dtype == torch.float16
        assert torch.isfinite(out).all()
        assert (out[0, 1] == 0).all()
        # docs/spec.md: float32 inside, rounded once to float16: at most half an ulp (eps/2 relative); rtol=eps leaves
        # a factor 2, atol covers tiny tail values (fp16 subnormal spacing 6e-8)
        torch.testing.assert_close(out.double(), expected, rtol=torch.finfo(torch.float16).eps, atol=1e-7)
