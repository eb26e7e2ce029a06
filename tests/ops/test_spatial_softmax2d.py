"""spatial_softmax2d against docs/spec.md: golden values, oracles (kornia 0.9, dsntnn, float64), bad input, ONNX.

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

from custom_ops import SpatialSoftmax2d, spatial_softmax2d

from ._ort import OrtModel

MODES = ("multiply", "divide")
DYNAMIC = ({0: "B", 1: "N", 2: "H", 3: "W"},)


def oracle(x: torch.Tensor, temperature: float = 1.0, mode: str = "multiply") -> torch.Tensor:
    """Float64 softmax over H*W written out: exp(z - max z) / sum, z = x*t or x/t."""
    z = x.double().flatten(2)
    z = z * temperature if mode == "multiply" else z / temperature
    e = torch.exp(z - z.amax(-1, keepdim=True))
    return (e / e.sum(-1, keepdim=True)).reshape(x.shape)


def logits(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# --- smoke, golden values, cardinality -------------------------------------------------------------


def test_golden_values():
    x = torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0]]]])
    out = spatial_softmax2d(x)
    expected = torch.full((1, 1, 3, 3), 0.0585)
    expected[0, 0, 2, 1] = 0.1589
    expected[0, 0, 2, 2] = 0.4319
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)  # docs/spec.md gives 4 decimals


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 4, 1, 9), (3, 1, 6, 1)])
def test_cardinality_and_sums_to_one(shape):
    out = spatial_softmax2d(logits(*shape))
    assert out.shape == shape
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.sum((2, 3)), torch.ones(shape[:2]))
    assert (out >= 0).all()


# --- oracles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_oracle(mode, temperature, dtype):
    x = logits(2, 3, 5, 7).to(dtype)
    out = spatial_softmax2d(x, temperature, temperature_mode=mode)
    torch.testing.assert_close(out, oracle(x, temperature, mode).to(dtype))


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_divide_matches_kornia(temperature):
    x = logits(2, 3, 5, 7, seed=1)
    expected = kornia_subpix.spatial_softmax2d(x, temperature)  # kornia 0.9 divides by the temperature
    torch.testing.assert_close(spatial_softmax2d(x, temperature, temperature_mode="divide"), expected)
    t = torch.tensor(temperature)
    torch.testing.assert_close(
        spatial_softmax2d(x, t, temperature_mode="divide"), kornia_subpix.spatial_softmax2d(x, t)
    )


def test_matches_dsntnn_flat_softmax():
    x = logits(2, 3, 6, 4, seed=2)
    torch.testing.assert_close(spatial_softmax2d(x), dsntnn.flat_softmax(x))
    torch.testing.assert_close(spatial_softmax2d(x, 1.7), dsntnn.flat_softmax(x * 1.7))


@pytest.mark.parametrize("temperature", [0.25, 4.0])
def test_multiply_is_divide_by_reciprocal(temperature):
    x = logits(2, 2, 4, 5, seed=3).double()
    torch.testing.assert_close(
        spatial_softmax2d(x, temperature),
        spatial_softmax2d(x, 1.0 / temperature, temperature_mode="divide"),
    )


# --- temperature: a learned tensor -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_learned_temperature_gets_gradient(mode):
    t = nn.Parameter(torch.tensor(0.8, dtype=torch.float64))
    x = logits(1, 2, 4, 4, seed=5).double()
    w = logits(1, 2, 4, 4, seed=6).double()
    (spatial_softmax2d(x, t, temperature_mode=mode) * w).sum().backward()
    # the same loss as a function of a plain number, differentiated by central differences
    h = 1e-6
    f = [float((oracle(x, v, mode) * w).sum()) for v in (0.8 + h, 0.8 - h)]
    assert t.grad is not None
    torch.testing.assert_close(t.grad, torch.tensor((f[0] - f[1]) / (2 * h), dtype=torch.float64))


# --- dtypes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("peak", [12.0, 20.0, 60000.0, -60000.0])
@pytest.mark.parametrize("mode", MODES)
def test_float16_large_logits_finite_and_correct(peak, mode):
    x = logits(2, 2, 4, 5, seed=8).half()
    x[0, 1, 2, 3] = peak
    x[1, 0, 0, 0] = peak
    out = spatial_softmax2d(x, 0.5, temperature_mode=mode)
    assert torch.isfinite(out).all()
    # docs/spec.md: computed in float32 and rounded once to the output dtype, so the error is at most half an ulp
    # (eps/2 relative); rtol=eps leaves a factor 2. atol covers fp16 subnormals (spacing 6e-8).
    torch.testing.assert_close(out.double(), oracle(x, 0.5, mode), rtol=torch.finfo(torch.float16).eps, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_huge_logits_in_every_dtype_that_holds_them(dtype, mode):
    x = (logits(2, 2, 4, 5, seed=19, scale=1.0) * 1e30).to(dtype)
    out = spatial_softmax2d(x, 0.5, temperature_mode=mode)
    assert torch.isfinite(out).all()
    # one rounding of the exact result to the output dtype (see test_float16_large_logits_finite_and_correct)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), oracle(x, 0.5, mode), rtol=eps, atol=1e-7)


# --- gradcheck, module twin ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    x = logits(1, 2, 3, 4, seed=9).double().requires_grad_()
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: spatial_softmax2d(x, t, temperature_mode=mode), (x, t))
    assert torch.autograd.gradcheck(lambda x: spatial_softmax2d(x, 1.3, temperature_mode=mode), (x,))


def test_module_registers_learned_temperature():
    t = nn.Parameter(torch.tensor(1.5))
    module = SpatialSoftmax2d(t)
    assert any(p is t for p in module.parameters())
    module(logits(1, 2, 3, 3)).square().sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad)


# --- exceptions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_temperature_number_raises(temperature):
    x = logits(1, 1, 3, 3)
    for mode in MODES:
        with pytest.raises(ValueError, match="temperature"):
            spatial_softmax2d(x, temperature, temperature_mode=mode)
    with pytest.raises(ValueError, match="temperature"):
        SpatialSoftmax2d(temperature)


def test_temperature_tensor_with_several_elements_raises():
    with pytest.raises(ValueError, match="temperature"):
        spatial_softmax2d(logits(1, 1, 3, 3), torch.tensor([1.0, 2.0]))


def test_bad_temperature_mode_raises():
    with pytest.raises(ValueError, match="temperature_mode"):
        spatial_softmax2d(logits(1, 1, 3, 3), temperature_mode="power")
    with pytest.raises(ValueError, match="temperature_mode"):
        SpatialSoftmax2d(temperature_mode="power")


# --- bad input, in PyTorch and on ONNX Runtime -------------------------------------------------------


class Heads(nn.Module):
    """One call per temperature form: multiply, divide, and a learned (parameter) temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.tensor(0.8))

    def forward(self, x):
        return (
            spatial_softmax2d(x, 1.5),
            spatial_softmax2d(x, 0.5, temperature_mode="divide"),
            spatial_softmax2d(x, self.t, temperature_mode="divide"),
        )


HEAD_ARGS = ((1.5, "multiply"), (0.5, "divide"), (0.8, "divide"))


@pytest.fixture(scope="module")
def ort_heads():
    """:class:`Heads` exported once with dynamic B, N, H, W."""
    return OrtModel(Heads(), (logits(2, 3, 5, 7),), dynamic_shapes=DYNAMIC)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run(request):
    """``run(x)`` -> the three outputs of :class:`Heads`, eagerly or from one dynamic ORT session."""
    if request.param == "torch":
        model = Heads()
        return lambda x: [o.detach() for o in model(x)]
    return request.getfixturevalue("ort_heads")


def test_backend_matches_oracle(run):
    x = logits(3, 2, 6, 9, seed=11)
    for out, (t, mode) in zip(run(x), HEAD_ARGS, strict=True):
        torch.testing.assert_close(out, oracle(x, t, mode).float())


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_bad_channel_is_isolated(run, bad):
    x = logits(2, 3, 5, 7, seed=12)
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
    x = logits(2, 3, 5, 7, seed=13, scale=1.0) * scale
    x[0, 0, 1, 1] = 3e30  # also one clear winner far above the rest
    for out, (t, mode) in zip(run(x), HEAD_ARGS, strict=True):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, oracle(x, t, mode).float())


@pytest.mark.parametrize("shape", [(2, 3, 1, 7), (2, 3, 5, 1), (2, 3, 1, 1)])
def test_single_row_or_column(run, shape):
    x = logits(*shape, seed=14)
    for out, (t, mode) in zip(run(x), HEAD_ARGS, strict=True):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, oracle(x, t, mode).float())


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run16(request):
    """Like ``run`` with a float16 model and float16 inputs."""
    if request.param == "torch":
        model = Heads().half()
        return lambda x: [o.detach() for o in model(x)]
    return OrtModel(Heads(), (logits(2, 3, 5, 7),), dynamic_shapes=DYNAMIC, dtype="float16")


@pytest.mark.parametrize("peak", [12.0, 20.0, 60000.0])
def test_float16_large_logits_on_every_backend(run16, peak):
    x = logits(2, 3, 5, 7, seed=18).half()
    x[:, 1, 3, 2] = peak
    # the learned temperature is a float16 parameter in a float16 model
    args = (*HEAD_ARGS[:2], (float(torch.tensor(HEAD_ARGS[2][0]).half()), HEAD_ARGS[2][1]))
    for out, (t, mode) in zip(run16(x), args, strict=True):
        assert out.dtype == torch.float16
        assert torch.isfinite(out).all()
        # float32 inside, one rounding to float16 (see test_float16_large_logits_finite_and_correct)
        torch.testing.assert_close(out.double(), oracle(x, t, mode), rtol=torch.finfo(torch.float16).eps, atol=1e-7)
