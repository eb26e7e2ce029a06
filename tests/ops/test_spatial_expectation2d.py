"""spatial_expectation2d against docs/spec.md: golden value, coordinate table, oracles (kornia, dsntnn, float64), ONNX.

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

from custom_ops import spatial_expectation2d
from custom_ops.conventions import axis_coords, coordinate_grid

from ._ort import OrtModel

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


def oracle(p: torch.Tensor, normalized: bool, align_corners: bool) -> torch.Tensor:
    """Float64 expectation with the literal coordinates: sum over pixels of p * (x, y)."""
    _, _, h, w = p.shape
    xs = torch.tensor([literal_coord(i, w, normalized, align_corners) for i in range(w)], dtype=torch.float64)
    ys = torch.tensor([literal_coord(j, h, normalized, align_corners) for j in range(h)], dtype=torch.float64)
    p = p.double()
    return torch.stack([torch.einsum("bnhw,w->bn", p, xs), torch.einsum("bnhw,h->bn", p, ys)], -1)


def probs(*shape: int, seed: int = 0) -> torch.Tensor:
    p = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
    return p / p.sum((2, 3), keepdim=True)


# --- golden value, coordinate table ------------------------------------------------------------------


def test_golden_value():
    p = torch.zeros(1, 1, 3, 3)
    p[0, 0, 2, 1] = 1.0
    torch.testing.assert_close(spatial_expectation2d(p, False), torch.tensor([[[1.0, 2.0]]]), rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_axis_coords_follow_table(n, convention):
    normalized, align_corners = CONVENTIONS[convention]
    got = axis_coords(n, normalized, align_corners, dtype=torch.float64)
    expected = torch.tensor([literal_coord(i, n, normalized, align_corners) for i in range(n)], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("size", [(1, 1), (1, 4), (3, 1), (4, 5)])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_coordinate_grid_follows_table(size, convention):
    h, w = size
    normalized, align_corners = CONVENTIONS[convention]
    grid = coordinate_grid(h, w, normalized, align_corners, dtype=torch.float64)
    expected = [
        (literal_coord(c, w, normalized, align_corners), literal_coord(r, h, normalized, align_corners))
        for r in range(h)
        for c in range(w)
    ]  # row-major (x, y)
    torch.testing.assert_close(grid, torch.tensor(expected, dtype=torch.float64).T)


@pytest.mark.parametrize("size", [(1, 1), (1, 4), (3, 1), (3, 4)])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_one_hot_maps_give_table_coordinates(size, convention):
    h, w = size
    normalized, align_corners = CONVENTIONS[convention]
    p = torch.eye(h * w, dtype=torch.float64).reshape(1, h * w, h, w)  # channel k: a 1 at flat index k
    out = spatial_expectation2d(p, normalized, align_corners=align_corners)
    expected = [
        (literal_coord(k % w, w, normalized, align_corners), literal_coord(k // w, h, normalized, align_corners))
        for k in range(h * w)
    ]
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64))


# --- cardinality, oracles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 4, 1, 9)])
def test_cardinality(shape):
    out = spatial_expectation2d(probs(*shape))
    assert out.shape == (*shape[:2], 2)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_oracle(convention, dtype):
    normalized, align_corners = CONVENTIONS[convention]
    p = probs(2, 3, 5, 7, seed=1).to(dtype)
    out = spatial_expectation2d(p, normalized, align_corners=align_corners)
    torch.testing.assert_close(out, oracle(p, normalized, align_corners).to(dtype))


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 6), (1, 2, 4, 1), (1, 1, 1, 1)])
def test_matches_kornia(normalized, shape):
    # kornia's normalized grid is align_corners=True; for n == 1 it gives 0 as well (checked, same as kpx)
    p = probs(*shape, seed=2)
    torch.testing.assert_close(
        spatial_expectation2d(p, normalized, align_corners=True), kornia_subpix.spatial_expectation2d(p, normalized)
    )


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 6)])
def test_matches_dsntnn(shape):
    # dsntnn: pixel centres, i.e. align_corners=False, normalized; and plain indices when not normalized
    p = probs(*shape, seed=3)
    torch.testing.assert_close(spatial_expectation2d(p, True, align_corners=False), dsntnn.dsnt(p))
    torch.testing.assert_close(spatial_expectation2d(p, False), dsntnn.dsnt(p, normalized_coordinates=False))


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_not_renormalised(convention):
    normalized, align_corners = CONVENTIONS[convention]
    p = probs(2, 2, 4, 6, seed=4).double()
    one = spatial_expectation2d(p, normalized, align_corners=align_corners)
    torch.testing.assert_close(spatial_expectation2d(2.5 * p, normalized, align_corners=align_corners), 2.5 * one)


# --- gradcheck -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_gradcheck(convention):
    normalized, align_corners = CONVENTIONS[convention]
    p = probs(1, 2, 3, 4, seed=6).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: spatial_expectation2d(p, normalized, align_corners=align_corners), (p,))


# --- bad input, in PyTorch and on ONNX Runtime -------------------------------------------------------------


class Heads(nn.Module):
    """One call per coordinate convention."""

    def forward(self, p):
        return tuple(spatial_expectation2d(p, nrm, align_corners=ac) for nrm, ac in CONVENTIONS.values())


@pytest.fixture(scope="module")
def ort_heads():
    return OrtModel(Heads(), (probs(2, 3, 5, 7),), dynamic_shapes=DYNAMIC)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def run(request):
    """``run(p)`` -> one output per convention, eagerly or from one dynamic ORT session."""
    if request.param == "torch":
        return Heads()
    return request.getfixturevalue("ort_heads")


def test_backend_matches_oracle(run):
    p = probs(3, 2, 6, 9, seed=9)
    for out, (nrm, ac) in zip(run(p), CONVENTIONS.values(), strict=True):
        torch.testing.assert_close(out, oracle(p, nrm, ac).float())


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_bad_channel_is_isolated(run, bad):
    p = probs(2, 3, 5, 7, seed=10)
    if math.isnan(bad):
        p[1, 1, 2, 3] = bad
    else:
        p[1, 1] = bad
    outs = run(p)
    for out in outs:
        assert out[1, 1].isnan().all()
    for b in range(2):
        for n in range(3):
            if (b, n) != (1, 1):
                for out, alone in zip(outs, run(p[b : b + 1, n : n + 1]), strict=True):
                    torch.testing.assert_close(out[b, n], alone[0, 0])


def test_huge_values_finite_and_correct(run):
    scale = 1e30
    p = probs(2, 3, 5, 7, seed=11) * scale
    for out, (nrm, ac) in zip(run(p), CONVENTIONS.values(), strict=True):
        assert torch.isfinite(out).all()
        # terms of size ~1e30 with both signs cancel in a float32 sum, so the error is relative to the terms,
        # not to the (possibly near-zero) result: compare in units of the scale, default float32 tolerances
        torch.testing.assert_close(out / scale, (oracle(p, nrm, ac) / scale).float())


@pytest.mark.parametrize("size", [(1, 7), (5, 1), (1, 1)])
def test_single_row_or_column(run, size):
    h, w = size
    p = torch.eye(h * w).reshape(1, h * w, h, w)  # every one-hot position, one per channel
    for out, (nrm, ac) in zip(run(p), CONVENTIONS.values(), strict=True):
        assert torch.isfinite(out).all()
        expected = [(literal_coord(k % w, w, nrm, ac), literal_coord(k // w, h, nrm, ac)) for k in range(h * w)]
        torch.testing.assert_close(out[0], torch.tensor(expected))
    p = probs(2, 3, h, w, seed=12)
    for out, (nrm, ac) in zip(run(p), CONVENTIONS.values(), strict=True):
        torch.testing.assert_close(out, oracle(p, nrm, ac).float())
