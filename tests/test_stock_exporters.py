"""kpx modules under the tools users already call: stock ``torch.onnx.export`` (dynamo and TorchScript),
``torch.jit.trace`` and ``torch.compile``, with no kpx call.

Decided behaviour (README, "Exporting"): outside kpx's own exporter a kpx op traces its plain PyTorch
reference, so the stock exporters write standard ONNX that computes the same numbers, also at sizes other
than the export's. kpx's exporter instead writes one ``kpx`` node per call with its body (or inlines it),
opsets 15-21, checks, fp16, atomic files and the traps of ``export_tools/traps.py``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings

import numpy as np
import onnx
import pytest
import torch

import custom_ops
from custom_ops import get_op, list_ops
from export_tools.graph import kpx_nodes
from export_tools.models import OpModel
from tests.conftest import ort_session, run_ort
from tests.test_export_matrix import _resized

CASES = [(spec.name, i) for spec in list_ops() for i, s in enumerate(spec.samples()) if s.dynamic]
IDS = [f"{op}-{get_op(op).samples()[i].name}" for op, i in CASES]


def _model(op: str, index: int) -> tuple[OpModel, object]:
    spec = get_op(op)
    sample = spec.samples()[index]
    return OpModel(spec, sample), sample


def _export(model: OpModel, sample, dynamo: bool) -> onnx.ModelProto:
    inputs = model.example_inputs()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            return torch.onnx.export(model, inputs, dynamo=True, dynamic_shapes=model.dynamic_shapes(sample),
                                     input_names=model.input_names()).model_proto  # fmt: skip
        axes = {name: dict(dims) for name, dims in zip(model.input_names(), sample.dynamic) if dims}
        buffer = io.BytesIO()
        torch.onnx.export(model, inputs, buffer, dynamo=False, input_names=model.input_names(), dynamic_axes=axes,
                          opset_version=17)  # fmt: skip
        return onnx.load_from_string(buffer.getvalue())


def _assert_same(model: OpModel, sample, outputs_of, rtol: float, atol: float) -> None:
    """``outputs_of(inputs)`` equals eager PyTorch at the export size and at bigger and smaller ones."""
    inputs = model.example_inputs()
    for feed in [inputs, *_resized(inputs, sample.dynamic, sample.make_inputs)]:
        expected = model(*feed)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = outputs_of(feed)
        assert len(actual) == len(expected)
        for got, want in zip(actual, expected):
            got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
            assert got.shape == tuple(want.shape)
            np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize(("op", "index"), CASES, ids=IDS)
def test_stock_torch_onnx_export_writes_standard_onnx_with_the_same_numbers(op, index, dynamo):
    """What every tutorial says: ``torch.onnx.export(model, args, dynamo=True)``, no kpx call. It used to fail
    ('No ONNX function found for kpx.spatial_softmax2d')."""
    model, sample = _model(op, index)
    proto = _export(model, sample, dynamo)
    assert not kpx_nodes(proto) and all(o.domain in ("", "ai.onnx") for o in proto.opset_import)
    session = ort_session(proto)
    rtol, atol = get_op(op).tolerances[torch.float32]
    _assert_same(model, sample, lambda feed: run_ort(session, *feed), rtol, atol)


@pytest.mark.parametrize(("op", "index"), CASES, ids=IDS)
def test_torch_jit_trace_is_correct_at_other_sizes(op, index):
    model, sample = _model(op, index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python values in the inputs
        traced = torch.jit.trace(model, model.example_inputs(), check_trace=False)
    rtol, atol = get_op(op).tolerances[torch.float32]
    _assert_same(model, sample, lambda feed: _flat(traced(*feed)), rtol, atol)


def _flat(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


class _AllOps(torch.nn.Module):
    """Every kpx op once: one compile covers them all (inductor compiles C++ on the CPU: seconds per graph)."""

    def forward(self, logits, keypoints, boxes):
        probs = custom_ops.spatial_softmax2d(logits, 2.0)
        coords = custom_ops.spatial_soft_argmax2d(logits, 0.5, False)
        expected = custom_ops.spatial_expectation2d(probs)
        rendered = custom_ops.render_gaussian2d(coords, torch.ones_like(coords), (8, 6), False)
        targets, weights = custom_ops.gaussian_heatmaps(keypoints, (8, 6), 1.5, subpixel=True)
        decoded, scores = custom_ops.decode_heatmaps(targets, refine="dark", blur_kernel=5)
        frame = custom_ops.heatmap_to_image(decoded, boxes, (8, 6), scale_mode="udp")
        return probs, coords, expected, rendered, targets, weights, frame, scores


@functools.cache
def _all_ops_inputs():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(2, 5, 8, 6, generator=g) * 3, torch.rand(2, 5, 2, generator=g) * 5,
            torch.rand(2, 4, generator=g) * 100 + 1)  # fmt: skip


def test_torch_compile_inductor_fullgraph_equals_eager():
    model = _AllOps()
    compiled = torch.compile(model, backend="inductor", fullgraph=True)
    for actual, expected in zip(compiled(*_all_ops_inputs()), model(*_all_ops_inputs()), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_a_real_head_through_the_stock_dynamo_exporter():
    """examples/dsnt_head.py's network (convolutions, a learned temperature, two kpx ops) at two sizes."""
    import runpy
    from pathlib import Path

    head = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "dsnt_head.py"),
                          run_name="kpx_example")["DSNTHead"]().eval()  # fmt: skip
    x = torch.randn(2, 3, 128, 96)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(head, (x,), dynamo=True, dynamic_shapes=({0: "B", 2: "H", 3: "W"},)).model_proto
    session = ort_session(proto)
    for feed in (x, torch.randn(3, 3, 96, 64)):
        for got, want in zip(run_ort(session, feed), head(feed)):
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_torch_jit_script_is_not_supported_and_says_so():
    """The functionals take keyword-only options, which TorchScript cannot compile (README: not supported)."""
    with pytest.raises(Exception, match=r"(?i)keyword|kwonly|script"):
        torch.jit.script(custom_ops.SpatialSoftArgmax2d())
