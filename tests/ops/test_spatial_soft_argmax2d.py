"""spatial_soft_argmax2d against docs/spec.md: composition, oracles (kornia 0.9, dsntnn, float64), bad input, ONNX.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank, non-float input, one kpx node per call) is tests/test_op_contract.py, for every op from its registry record.
"""

from __future__ import annotations

import math

import dsntnn
import kornia.geometry.subpix as kornia_subpix
import pytest
import torch
from torch import nn

from custom_ops import SpatialSoftArgmax2d, spatial_expectation2d, spatial_soft_argmax2d, spatial_softmax2d

from ._ort import OrtModel

MODES = ("multiply", "divide")
# (normalized_coordinates, align_corners); align_corners is ignored in pixel mode
CONVENTIONS = {"pixel": (False, True), "corners": (True, True), "centres": (True, False)}
DYNAMIC = ({0: "B", 1: "N", 2: "H", 3: "W"},)


def literal_coord(i: int, n: int, normalized: bool, align_corners: bool) -> float:
    """The coordinate table of docs/spec.md, row by row."""
    if not normalized:
        return float(i)
    if align_corners:
        return 0.0 if n == 1 else -1 + 2 * i / (n - 1)
    return (2 * i + 1) / n - 1


def oracle(x, temperature=1.0, normalized=True, align_corners=True, mode="multiply") -> torch.Tensor:
    """Float64 soft-argmax written out: softmax over H*W (max subtracted), then sum of p * (x, y)."""
    _, _, h, w = x.shape
    z = x.double().flatten(2)
    z = z * temperature if mode == "multiply" else z / temperature
    e = torch.exp(z - z.amax(-1, keepdim=True))
    p = (e / e.sum(-1, keepdim=True)).reshape(x.shape)
    xs = torch.tensor([literal_coord(i, w, normalized, align_corners) for i in range(w)], dtype=torch.float64)
    ys = torch.tensor([literal_coord(j, h, normalized, align_corners) for j in range(h)], dtype=torch.float64)
    return torch.stack([torch.einsum("bnhw,w->bn", p, xs), torch.einsum("bnhw,h->bn", p, ys)], -1)


def logits(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# --- smoke, cardinality, definition ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 4, 1, 9), (3, 1, 6, 1)])
def test_cardinality(shape):
    out = spatial_soft_argmax2d(logits(*shape))
    assert out.shape == (*shape[:2], 2)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_equals_expectation_of_softmax(convention, mode):
    normalized, align_corners = CONVENTIONS[convention]
    x = logits(2, 3, 5, 7, seed=1).double()
    out = spatial_soft_argmax2d(x, 0.6, normalized, temperature_mode=mode, align_corners=align_corners)
    composed = spatial_expectation2d(
        spatial_softmax2d(x, 0.6, temperature_mode=mode), normalized, align_corners=align_corners
    )
    torch.testing.assert_close(out, composed)


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (4, 1), (3, 4)])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_sharp_peak_gives_table_coordinate(size, convention):
    h, w = size
    normalized, align_corners = CONVENTIONS[convention]
    x = torch.eye(h * w, dtype=torch.float64).reshape(1, h * w, h, w) * 1000  # channel k: peak at flat index k
    out = spatial_soft_argmax2d(x, 1.0, normalized, align_corners=align_corners)
    expected = [
        (literal_coord(k % w, w, normalized, align_corners), literal_coord(k // w, h, normalized, align_corners))
        for k in range(h * w)
    ]
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64))


# --- oracles -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_oracle(convention, mode, dtype):
    normalized, align_corners = CONVENTIONS[convention]
    x = logits(2, 3, 5, 7, seed=2).to(dtype)
    out = spatial_soft_argmax2d(x, 1.7, normalized, temperature_mode=mode, align_corners=align_corners)
    torch.testing.assert_close(out, oracle(x, 1.7, normalized, align_corners, mode).to(dtype))


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("temperature", [0.5, 1.0, torch.tensor(2.0)])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 6)])
def test_divide_matches_kornia(normalized, temperature, shape):
    # kornia 0.9 divides by the temperature and uses align_corners=True
    x = logits(*shape, seed=3)
    expected = kornia_subpix.spatial_soft_argmax2d(x, temperature, normalized)
    out = spatial_soft_argmax2d(x, temperature, normalized, temperature_mode="divide", align_corners=True)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_multiply_matches_dsntnn(temperature):
    # dsntnn: flat_softmax(x * beta), then DSNT with pixel-centre (align_corners=False) normalized coordinates
    x = logits(2, 3, 6, 5, seed=4)
    expected = dsntnn.dsnt(dsntnn.flat_softmax(x * temperature))
    torch.testing.assert_close(spatial_soft_argmax2d(x, temperature, True, align_corners=False), expected)


# --- temperature ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_learned_temperature_gets_gradient(mode):
    t = nn.Parameter(torch.tensor(0.8, dtype=torch.float64))
    x = logits(1, 2, 4, 5, seed=6).double()
    spatial_soft_argmax2d(x, t, False, temperature_mode=mode).sum().backward()
    h = 1e-6  # central differences of the float64 oracle
    f = [float(oracle(x, v, False, True, mode).sum()) for v in (0.8 + h, 0.8 - h)]
    assert t.grad is not None
    torch.testing.assert_close(t.grad, torch.tensor((f[0] - f[1]) / (2 * h), dtype=torch.float64))


# --- dtypes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("peak", [12.0, 20.0, 60000.0, -60000.0])
@pytest.mark.parametrize("mode", MODES)
def test_float16_large_logits_finite_and_correct(peak, mode):
    x = logits(2, 2, 4, 5, seed=8).half()
    x[0, 1, 2, 3] = peak
    x[1, 0, 0, 0] = peak
    out = spatial_soft_argmax2d(x, 0.5, False, temperature_mode=mode)
    assert torch.isfinite(out).all()
    # docs/spec.md: float32 inside, rounded once to the output dtype: at most half an ulp (eps/2 relative);
    # rtol=eps leaves a factor 2, atol covers results near 0 (fp16 subnormal spacing 6e-8).
    expected = oracle(x, 0.5, False, True, mode)
    torch.testing.assert_close(out.double(), expected, rtol=torch.finfo(torch.float16).eps, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_huge_logits_in_every_dtype_that_holds_them(dtype, mode):
    x = (logits(2, 2, 4, 5, seed=20, scale=1.0) * 1e30).to(dtype)
    out = spatial_soft_argmax2d(x, 0.5, False, temperature_mode=mode)
    assert torch.isfinite(out).all()
    # one rounding of the exact result to the output dtype (see test_float16_large_logits_finite_and_correct)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), oracle(x, 0.5, False, True, mode), rtol=eps, atol=1e-7)


# --- gradcheck, module twin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_gradcheck(convention, mode):
    normalized, align_corners = CONVENTIONS[convention]
    x = logits(1, 2, 3, 4, seed=9).double().requires_grad_()
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def f(x, t):
        return spatial_soft_argmax2d(x, t, normalized, temperature_mode=mode, align_corners=align_corners)

    assert torch.autograd.gradcheck(f, (x, t))


def test_module_registers_learned_temperature():
    t = nn.Parameter(torch.tensor(1.5))
    module = SpatialSoftArgmax2d(t)
    assert any(p is t for p in module.parameters())
    module(logits(1, 2, 3, 3)).square().sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad)


# --- exceptions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_temperature_number_raises(temperature):
    x = logits(1, 1, 3, 3)
    for mode in MODES:
        with pytest.raises(ValueError, match="temperature"):
            spatial_soft_argmax2d(x, temperature, temperature_mode=mode)
    with pytest.raises(ValueError, match="temperature"):
        SpatialSoftArgmax2d(temperature)


def test_bad_temperature_mode_raises():
    with pytest.raises(ValueError, match="temperature_mode"):
        spatial_soft_argmax2d(logits(1, 1, 3, 3), temperature_mode="power")
    with pytest.raises(ValueError, match="temperature_mode"):
        SpatialSoftArgmax2d(temperature_mode="power")


def test_temperature_tensor_with_several_elements_raises():
    with pytest.raises(ValueError, match="temperature"):
        spatial_soft_argmax2d(logits(1, 1, 3, 3), torch.tensor([1.0, 2.0]))


# --- bad input, in PyTorch and on ONNX Runtime -------------------------------------------------------------

# (temperature, normalized_coordinates, temperature_mode, align_corners) of each call in Heads
HEAD_ARGS = (
    (1.5, False, "multiply", True),
    (0.5, True, "divide", True),
    (2.0, True, "multiply", False),
    (0.8, True, "divide", True),  # the learned temperature
)


class Heads(nn.Module):
    """One call per convention, both temperature modes, and a learned (parameter) temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.tensor(HEAD_ARGS[-1][0]))

    def forward(self, x):
        outs = [
            spatial_soft_argmax2d(x, t, nrm, temperature_mode=mode, align_corners=ac)
            for t, nrm, mode, ac in HEAD_ARGS[:-1]
        ]
        _, nrm, mode, ac = HEAD_ARGS[-1]
        return (*outs, spatial_soft_argmax2d(x, self.t, nrm, temperature_mode=mode, align_corners=ac))


def head_oracles(x: torch.Tensor, args=HEAD_ARGS) -> list[torch.Tensor]:
    return [oracle(x, t, nrm, ac, mode) for t, nrm, mode, ac in args]


@pytest.fixture(scope="module")
def ort_heads():
    return OrtModel(Heads(), (logits(2, 3, 5, 7),), dynamic_shapes=DYNAMIC)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run(request):
    """``run(x)`` -> the outputs of :class:`Heads`, eagerly or from one dynamic ORT session."""
    if request.param == "torch":
        model = Heads()
        return lambda x: [o.detach() for o in model(x)]
    return request.getfixturevalue("ort_heads")


def test_backend_matches_oracle(run):
    x = logits(3, 2, 6, 9, seed=12)
    for out, expected in zip(run(x), head_oracles(x), strict=True):
        torch.testing.assert_close(out, expected.float())


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_bad_channel_is_isolated(run, bad):
    x = logits(2, 3, 5, 7, seed=13)
    if math.isnan(bad):
        x[1, 1, 2, 3] = bad  # one NaN
    else:
        x[1, 1] = bad  # the whole channel -inf
    outs = run(x)
    for out in outs:
        assert out[1, 1].isnan().all()
    for b in range(2):
        for n in range(3):
            if (b, n) != (1, 1):
                for out, alone in zip(outs, run(x[b : b + 1, n : n + 1]), strict=True):
                    torch.testing.assert_close(out[b, n], alone[0, 0])


@pytest.mark.parametrize("scale", [1e30, -1e30])
def test_huge_logits_finite_and_correct(run, scale):
    x = logits(2, 3, 5, 7, seed=14, scale=1.0) * scale
    x[0, 0, 1, 1] = 3e30
    for out, expected in zip(run(x), head_oracles(x), strict=True):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, expected.float())


@pytest.mark.parametrize("shape", [(2, 3, 1, 7), (2, 3, 5, 1), (2, 3, 1, 1)])
def test_single_row_or_column(run, shape):
    x = logits(*shape, seed=15)
    for out, expected in zip(run(x), head_oracles(x), strict=True):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, expected.float())
    # a sharp peak lands on the table's coordinate, also on an axis of size 1
    h, w = shape[2:]
    peaks = torch.eye(h * w).reshape(1, h * w, h, w) * 1000
    for out, (_, nrm, _, ac) in zip(run(peaks), HEAD_ARGS, strict=True):
        expected = [(literal_coord(k % w, w, nrm, ac), literal_coord(k // w, h, nrm, ac)) for k in range(h * w)]
        torch.testing.assert_close(out[0], torch.tensor(expected))


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run16(request):
    """Like ``run`` with a float16 model and float16 inputs."""
    if request.param == "torch":
        model = Heads().half()
        return lambda x: [o.detach() for o in model(x)]
    return OrtModel(Heads(), (logits(2, 3, 5, 7),), dynamic_shapes=DYNAMIC, dtype="float16")


@pytest.mark.parametrize("peak", [12.0, 20.0, 60000.0])
def test_float16_large_logits_on_every_backend(run16, peak):
    x = logits(2, 3, 5, 7, seed=19).half()
    x[:, 1, 3, 2] = peak
    # the learned temperature is a float16 parameter in a float16 model
    t16 = float(torch.tensor(HEAD_ARGS[-1][0]).half())
    args = (*HEAD_ARGS[:-1], (t16, *HEAD_ARGS[-1][1:]))
    for out, expected in zip(run16(x), head_oracles(x, args), strict=True):
        assert out.dtype == torch.float16
        assert torch.isfinite(out).all()
        # float32 inside, one rounding to float16 (see test_float16_large_logits_finite_and_correct)
        torch.testing.assert_close(out.double(), expected, rtol=torch.finfo(torch.float16).eps, atol=1e-7)
